/* Digest-keyed hash table; see digest-map.h. */
#include "common/digest-map.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"

static size_t slot_of(const struct digest *key, size_t cap)
{
    uint64_t h;

    memcpy(&h, key->b, sizeof(h)); /* SHA-256 output is uniform */
    return (size_t)h & (cap - 1);
}

void digest_map_init(struct digest_map *m)
{
    memset(m, 0, sizeof(*m));
}

void digest_map_release(struct digest_map *m)
{
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

static void grow(struct digest_map *m)
{
    struct digest_map old = *m;

    m->cap = old.cap ? old.cap * 2 : 1024;
    m->slots = xcalloc(m->cap, sizeof(*m->slots));
    m->n = 0;
    for (size_t i = 0; i < old.cap; i++) {
        if (!old.slots[i].used)
            continue;
        size_t j = slot_of(&old.slots[i].key, m->cap);
        while (m->slots[j].used)
            j = (j + 1) & (m->cap - 1);
        m->slots[j] = old.slots[i];
        m->n++;
    }
    free(old.slots);
}

struct digest_map_entry *digest_map_find(const struct digest_map *m, const struct digest *key)
{
    if (!m->cap)
        return NULL;
    for (size_t j = slot_of(key, m->cap);; j = (j + 1) & (m->cap - 1)) {
        if (!m->slots[j].used)
            return NULL;
        if (digest_equal(&m->slots[j].key, key))
            return &m->slots[j];
    }
}

struct digest_map_entry *digest_map_insert(struct digest_map *m, const struct digest *key,
                                           bool *ret_created)
{
    struct digest_map_entry *e = digest_map_find(m, key);

    if (e) {
        if (ret_created)
            *ret_created = false;
        return e;
    }
    if ((m->n + 1) * 4 > m->cap * 3)
        grow(m);
    size_t j = slot_of(key, m->cap);
    while (m->slots[j].used)
        j = (j + 1) & (m->cap - 1);
    e = &m->slots[j];
    e->key = *key;
    e->a = e->b = 0;
    e->used = true;
    m->n++;
    if (ret_created)
        *ret_created = true;
    return e;
}

struct digest_map_entry *digest_map_next(const struct digest_map *m, size_t *iter)
{
    while (*iter < m->cap) {
        struct digest_map_entry *e = &m->slots[(*iter)++];
        if (e->used)
            return e;
    }
    return NULL;
}
