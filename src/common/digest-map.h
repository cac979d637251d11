/* A hash table keyed by digest with two 64-bit values per entry, for the
 * walks over every chunk of a store (gc marking, fsck, du).  Open addressing
 * with linear probing; the digest's own bytes are the hash.  Entries stay
 * valid until the next insertion. */
#ifndef KILN_COMMON_DIGEST_MAP_H
#define KILN_COMMON_DIGEST_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/hash.h"

struct digest_map_entry {
    struct digest key;
    uint64_t a, b; /* caller-defined; zero on insertion */
    bool used;
};

struct digest_map {
    struct digest_map_entry *slots;
    size_t cap; /* a power of two */
    size_t n;
};

void digest_map_init(struct digest_map *m);
void digest_map_release(struct digest_map *m);

/* Find or insert key; *ret_created tells which (may be NULL). */
struct digest_map_entry *digest_map_insert(struct digest_map *m, const struct digest *key,
                                           bool *ret_created);
/* NULL if absent. */
struct digest_map_entry *digest_map_find(const struct digest_map *m, const struct digest *key);

/* Iterate: for (i = 0; (e = digest_map_next(m, &i)); ) ... */
struct digest_map_entry *digest_map_next(const struct digest_map *m, size_t *iter);

#endif
