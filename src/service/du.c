/* du: logical and stored bytes, bytes unique to each snapshot, and the
 * store's dedup and compression ratios.
 *
 * Each chunk is counted once per snapshot that uses it; a chunk used by
 * exactly one snapshot is what deleting that snapshot (and running gc) would
 * free.
 */
#include <string.h>

#include "common/cleanup.h"
#include "common/digest-map.h"
#include "common/util.h"
#include "service/internal.h"

/* digest_map entry fields: a = snapshots using the chunk (low 32 bits) and
 * the index + 1 of the last one counted (high 32 bits); b = stored bytes. */

static int add_stored(const struct store_object_info *info, void *userdata)
{
    *(uint64_t *)userdata += info->stored_size;
    return 0;
}

int service_du(struct region *r, struct du_report *ret)
{
    struct du_report rep = { 0 };
    struct snapshot_set set;
    struct digest_map chunks;
    struct digest_map_entry *c;
    uint64_t chunk_stored = 0;
    size_t iter = 0;
    int e;

    e = snapshot_set_load(r, &set);
    if (e < 0)
        return e;
    rep.n = set.n;
    rep.snaps = xcalloc(set.n ? set.n : 1, sizeof(*rep.snaps));
    digest_map_init(&chunks);
    for (size_t s = 0; s < set.n; s++) {
        const struct blockmap *m = set.maps[s];
        rep.logical_bytes += set.rows[s]->volume_size;
        if (!m)
            continue;
        rep.snaps[s].data_bytes = blockmap_data_bytes(m);
        rep.data_bytes += rep.snaps[s].data_bytes;
        for (size_t i = 0; i < m->n; i++) {
            bool created;
            c = digest_map_insert(&chunks, &m->ext[i].id, &created);
            if (created) {
                store_stat(r->store, STORE_CHUNK, &m->ext[i].id, NULL, &c->b);
                rep.unique_plain += (uint64_t)m->ext[i].count * BLOCK_SIZE;
                chunk_stored += c->b;
            }
            /* A chunk used twice by one snapshot counts once for it. */
            if ((c->a >> 32) != s + 1)
                c->a = (uint64_t)(s + 1) << 32 | ((c->a & 0xffffffffu) + 1);
        }
    }
    rep.chunks = chunks.n;
    /* A chunk with one user is what deleting that snapshot would free. */
    while ((c = digest_map_next(&chunks, &iter)))
        if ((c->a & 0xffffffffu) == 1)
            rep.snaps[(c->a >> 32) - 1].unique_bytes += c->b;
    /* So is its block map, unless another snapshot has the same one. */
    for (size_t s = 0; s < set.n; s++) {
        uint64_t stored = 0;
        bool shared = false;
        if (!set.maps[s])
            continue;
        for (size_t t = 0; t < set.n && !shared; t++)
            shared = t != s && set.maps[t] && digest_equal(&set.rows[t]->map_id,
                                                           &set.rows[s]->map_id);
        if (!shared && store_stat(r->store, STORE_MAP, &set.rows[s]->map_id, NULL, &stored) == 0)
            rep.snaps[s].unique_bytes += stored;
    }

    for (size_t s = 0; s < set.n; s++)
        rep.snaps[s].row = TAKE_PTR(set.rows[s]);
    store_list(r->store, STORE_CHUNK, add_stored, &rep.stored_bytes);
    store_list(r->store, STORE_MAP, add_stored, &rep.stored_bytes);
    rep.dedup_ratio = rep.unique_plain ? (double)rep.data_bytes / (double)rep.unique_plain : 1;
    rep.compression_ratio = chunk_stored ? (double)rep.unique_plain / (double)chunk_stored : 1;

    digest_map_release(&chunks);
    snapshot_set_release(&set);
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
