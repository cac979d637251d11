/* The chunk store: immutable, content-addressed objects.
 *
 * Two kinds of object live in a store: chunks (runs of disk blocks) and block
 * maps.  Both are named by the SHA-256 of their plaintext and stored encoded
 * (a small header and, usually, a zstd frame; docs/formats.md has the bytes).
 * Reading an object recomputes its digest: a mismatch is -EBADMSG, never
 * data.  All-zero blocks are never stored: block maps record them as holes.
 *
 * Where the bytes live is a backend's business (struct store_backend in
 * internal.h); `dir` keeps one file per object in fanned-out directories.
 *
 * Durability (design notes):
 *   - An object appears under its final name only complete: it is written to
 *     an anonymous (O_TMPFILE) or exclusive temporary file and linked or
 *     renamed into place; an object already present is success.
 *   - Objects are not fsynced one by one (a disk flush per chunk would cost
 *     more than the whole import): store_sync() makes every object
 *     written so far durable, and callers call it before they publish
 *     anything that refers to those objects (the block map, then the
 *     registry row).  Block maps are fsynced on their own when written.
 *   - A writer holds the store's lock shared for as long as it writes and
 *     until what it wrote is referenced; gc takes it exclusive, so gc never
 *     runs between "this chunk is present, reuse it" and the block map that
 *     reuses it being published.
 *   - A writer leaves an intent file in tmp/ from its first write until its
 *     store_sync(); if the machine loses power in between, objects linked in
 *     that window may be torn.  store_recover() (run by fsck and on the next
 *     write session) finds stale intent files and verifies, and deletes if
 *     damaged, every object modified since the oldest of them.
 *
 * Thread safety: the object calls may be made from several threads at once
 * on one store.  Open, close, lock and sync are for one thread.
 */
#ifndef KILN_STORE_STORE_H
#define KILN_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/hash.h"

/* The largest chunk (plaintext) the store accepts.  Block maps may be larger
 * (STORE_MAP_MAX). */
#define STORE_CHUNK_MAX (1U << 20)
#define STORE_MAP_MAX (1U << 30)

enum store_kind {
    STORE_CHUNK,
    STORE_MAP,
};

struct store;

struct store_options {
    int compression_level; /* zstd level; 0 means the default */
    bool read_only;        /* no writes; no lock needed */
};

/* Open the store rooted at `dir` (created if missing unless read_only).
 * `opts` may be NULL. */
int store_open(const char *dir, const struct store_options *opts, struct store **ret);
void store_free(struct store *s);

/* Put a chunk whose SHA-256 is `id`.  The caller computes the digest (it
 * needs it for the block map anyway) and must get it right: hashing again
 * here would cost a fifth of an import.  A wrong id is caught on every read
 * (-EBADMSG), never served.  Compresses the chunk.
 * Returns 1 if the chunk was written, 0 if it was already present, -errno.
 * *ret_stored (may be NULL) receives the encoded size when written. */
int store_chunk_put(struct store *s, const struct digest *id, const void *data, size_t len,
                    size_t *ret_stored);

/* Read a chunk into buf (size bufsize >= its plaintext length), verify its
 * digest and return its length, or -ENOENT, -EBADMSG (corrupt, digest
 * mismatch), -EFBIG (larger than bufsize), -errno. */
ssize_t store_chunk_get(struct store *s, const struct digest *id, void *buf, size_t bufsize);

/* 1 if present, 0 if not, -errno. */
int store_has(struct store *s, enum store_kind kind, const struct digest *id);

/* Put and get a block map: like chunks, but fsynced on put and up to
 * STORE_MAP_MAX bytes.  map_get allocates *ret (owned by the caller). */
int store_map_put(struct store *s, const void *data, size_t len, struct digest *ret_id);
int store_map_get(struct store *s, const struct digest *id, void **ret, size_t *ret_len);

/* Remove an object (gc only).  Removing an absent object is -ENOENT. */
int store_remove(struct store *s, enum store_kind kind, const struct digest *id);

struct store_object_info {
    struct digest id;
    uint64_t stored_size; /* bytes on the backend */
    time_t mtime;
};

/* Call fn for every object of `kind`, in no particular order; a negative
 * return from fn stops the walk and is returned. */
typedef int (*store_list_fn)(const struct store_object_info *info, void *userdata);
int store_list(struct store *s, enum store_kind kind, store_list_fn fn, void *userdata);

/* Read an object's encoded header: plaintext length and stored size without
 * reading the payload. */
int store_stat(struct store *s, enum store_kind kind, const struct digest *id,
               uint32_t *ret_plain_len, uint64_t *ret_stored_size);

/* Make every object written through this handle durable. */
int store_sync(struct store *s);

/* Take the store's writer lock shared (writers) or exclusive (gc), waiting
 * up to `timeout_ms`.  Released by store_unlock() or store_free(). */
int store_lock(struct store *s, bool exclusive, int timeout_ms);
void store_unlock(struct store *s);

/* Temporary files older than `grace` seconds left by writers that died:
 * remove them, and return how many (and their bytes) were removed. */
int store_sweep_temporaries(struct store *s, time_t grace, bool dry_run, uint64_t *ret_files,
                            uint64_t *ret_bytes);

/* Verify objects written by writers that died before store_sync() (see the
 * design notes above).  Returns the number of damaged objects removed. */
int store_recover(struct store *s);

#endif
