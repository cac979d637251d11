/* du: logical and stored bytes, bytes unique to each snapshot, and the
 * store's dedup and compression ratios.
 *
 * Each chunk is counted once per snapshot that uses it; a chunk used by
 * exactly one snapshot is what deleting that snapshot (and running gc) would
 * free.
 */
#include <string.h>

#include "common/digest-map.h"
#include "common/util.h"
#include "service/internal.h"

/* digest_map entry fields: a = users (low 32 bits) and last user index + 1
 * (high 32 bits); b = stored size << 24 | plaintext blocks. */

struct stored_ctx {
    uint64_t bytes;
};

static int add_stored(const struct store_object_info *info, void *userdata)
{
    ((struct stored_ctx *)userdata)->bytes += info->stored_size;
    return 0;
}

int service_du(struct region *r, struct du_report *ret)
{
    struct du_report rep = { 0 };
    struct snapshot_set set;
    struct digest_map chunks;
    struct stored_ctx sc = { 0 };
    uint64_t chunk_stored = 0;
    int e;

    e = snapshot_set_load(r, &set);
    if (e < 0)
        return e;
    digest_map_init(&chunks);
    for (size_t s = 0; s < set.n; s++) {
        const struct blockmap *m = set.maps[s];
        rep.logical_bytes += set.rows[s]->volume_size;
        if (!m)
            continue;
        rep.data_bytes += blockmap_data_bytes(m);
        for (size_t i = 0; i < m->n; i++) {
            bool created;
            struct digest_map_entry *c = digest_map_insert(&chunks, &m->ext[i].id, &created);
            if (created) {
                uint64_t stored = 0;
                store_stat(r->store, STORE_CHUNK, &m->ext[i].id, NULL, &stored);
                c->b = stored << 24 | m->ext[i].count;
                rep.unique_plain += (uint64_t)m->ext[i].count * BLOCK_SIZE;
                chunk_stored += stored;
            }
            if ((c->a >> 32) != s + 1)
                c->a = (uint64_t)(s + 1) << 32 | ((c->a & 0xffffffffu) + 1);
        }
    }
    rep.chunks = chunks.n;

    rep.n = set.n;
    rep.snaps = xcalloc(set.n ? set.n : 1, sizeof(*rep.snaps));
    for (size_t s = 0; s < set.n; s++) {
        const struct blockmap *m = set.maps[s];
        rep.snaps[s].row = set.rows[s];
        set.rows[s] = NULL;
        if (!m)
            continue;
        rep.snaps[s].data_bytes = blockmap_data_bytes(m);
        for (size_t i = 0; i < m->n; i++) {
            struct digest_map_entry *c = digest_map_find(&chunks, &m->ext[i].id);
            /* Count a chunk used twice by the same snapshot once. */
            if ((c->a & 0xffffffffu) == 1 && !(c->b & (1ULL << 23))) {
                rep.snaps[s].unique_bytes += c->b >> 24;
                c->b |= 1ULL << 23;
            }
        }
    }

    store_list(r->store, STORE_CHUNK, add_stored, &sc);
    store_list(r->store, STORE_MAP, add_stored, &sc);
    rep.stored_bytes = sc.bytes;
    rep.dedup_ratio = rep.unique_plain ? (double)rep.data_bytes / (double)rep.unique_plain : 1;
    rep.compression_ratio = chunk_stored ? (double)rep.unique_plain / (double)chunk_stored : 1;

    digest_map_release(&chunks);
    for (size_t s = 0; s < set.n; s++)
        registry_snapshot_free(set.rows[s]);
    set.n = 0;
    free(set.rows);
    set.rows = NULL;
    for (size_t s = 0; s < rep.n; s++)
        blockmap_free(set.maps[s]);
    free(set.maps);
    free(set.map_error);
    *ret = rep;
    return 0;
}

void du_report_release(struct du_report *d)
{
    for (size_t i = 0; i < d->n; i++)
        registry_snapshot_free(d->snaps[i].row);
    free(d->snaps);
    memset(d, 0, sizeof(*d));
}
