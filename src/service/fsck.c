/* fsck: reread and verify every block map and every chunk, and name every
 * snapshot and block that damage affects.
 *
 * Every object in the store is verified once, in parallel (digest of the
 * decoded plaintext against its name), whether or not a snapshot uses it: a
 * damaged chunk nobody uses today would be reused by the next import that
 * produces the same content, so it is damage too.  Then every snapshot's
 * extents are checked against the results.
 */
#include <errno.h>

#include "common/cleanup.h"
#include "common/digest-map.h"
#include "common/util.h"
#include "service/internal.h"

/* digest_map entry fields: a = status (0 ok, else -errno), b = referenced */

#define FSCK_LOCK_TIMEOUT_MS (10 * 60 * 1000)

static int fsck_locked(struct region *r, bool repair, bool progress, fsck_damage_fn fn,
                       void *userdata, struct fsck_report *ret);

int service_fsck(struct region *r, bool repair, bool progress, fsck_damage_fn fn,
                 void *userdata, struct fsck_report *ret)
{
    int e;

    /* Shared: no gc sweeps between listing and verifying.  Exclusive for
     * repair: no import reuses a chunk that repair is about to remove. */
    e = store_lock(r->store, repair, FSCK_LOCK_TIMEOUT_MS);
    if (e < 0)
        return e;
    e = fsck_locked(r, repair, progress, fn, userdata, ret);
    store_unlock(r->store);
    return e;
}

static int fsck_locked(struct region *r, bool repair, bool progress, fsck_damage_fn fn,
                       void *userdata, struct fsck_report *ret)
{
    struct fsck_report rep = { 0 };
    struct snapshot_set set;
    struct digest_map chunks;
    _cleanup_free_ struct digest *ids = NULL, *map_ids = NULL;
    _cleanup_free_ int *status = NULL, *map_status = NULL;
    size_t n, nmaps;
    int e;

    if (!r->read_only) {
        e = store_recover(r->store);
        if (e < 0)
            return e;
    }
    e = snapshot_set_load(r, &set);
    if (e < 0)
        return e;
    e = verify_all(r->store, STORE_CHUNK, progress, &ids, &status, &n, &rep.bytes);
    if (e == 0)
        e = verify_all(r->store, STORE_MAP, false, &map_ids, &map_status, &nmaps, NULL);
    if (e < 0) {
        snapshot_set_release(&set);
        return e;
    }
    rep.chunks = n;
    rep.maps = nmaps;
    rep.snapshots = set.n;

    digest_map_init(&chunks);
    /* An object listed and then gone was removed meanwhile (gc), not
     * damaged: leave it out, as if it had not been listed. */
    for (size_t i = 0; i < n; i++)
        if (status[i] != -ENOENT)
            digest_map_insert(&chunks, &ids[i], NULL)->a = (uint64_t)(int64_t)status[i];

    for (size_t s = 0; s < set.n; s++) {
        const struct registry_snapshot *row = set.rows[s];
        const struct blockmap *m = set.maps[s];
        bool damaged = false;

        if (!row->has_map)
            continue;
        if (!m) {
            struct fsck_damage d = {
                .problem = set.map_error[s] == -ENOENT ? FSCK_MAP_MISSING : FSCK_MAP_CORRUPT,
                .snapshot_id = row->id,
                .object = row->map_id,
                .length = row->volume_size,
            };
            fn(&d, userdata);
            rep.damaged_snapshots++;
            continue;
        }
        for (size_t i = 0; i < m->n; i++) {
            const struct blockmap_extent *x = &m->ext[i];
            struct digest_map_entry *c = digest_map_find(&chunks, &x->id);
            if (c && c->a == 0) {
                c->b = 1;
                continue;
            }
            struct fsck_damage d = {
                .problem = c ? FSCK_CHUNK_CORRUPT : FSCK_CHUNK_MISSING,
                .snapshot_id = row->id,
                .object = x->id,
                .offset = x->block * BLOCK_SIZE,
                .length = (uint64_t)x->count * BLOCK_SIZE,
            };
            if (c)
                c->b = 1;
            fn(&d, userdata);
            damaged = true;
        }
        if (damaged)
            rep.damaged_snapshots++;
    }

    /* Damaged objects, used or not; with repair, remove them. */
    for (size_t i = 0; i < n; i++) {
        if (status[i] == 0 || status[i] == -ENOENT)
            continue;
        rep.damaged_objects++;
        struct digest_map_entry *c = digest_map_find(&chunks, &ids[i]);
        if (!c->b) {
            struct fsck_damage d = { .problem = FSCK_ORPHAN_CORRUPT, .object = ids[i] };
            fn(&d, userdata);
        }
        if (repair && !r->read_only && store_remove(r->store, STORE_CHUNK, &ids[i]) == 0)
            rep.removed++;
    }
    for (size_t i = 0; i < nmaps; i++) {
        bool used = false;
        if (map_status[i] == 0 || map_status[i] == -ENOENT)
            continue;
        rep.damaged_objects++;
        for (size_t s = 0; s < set.n && !used; s++)
            used = set.rows[s]->has_map && digest_equal(&set.rows[s]->map_id, &map_ids[i]);
        if (!used) {
            struct fsck_damage d = { .problem = FSCK_ORPHAN_MAP_CORRUPT, .object = map_ids[i] };
            fn(&d, userdata);
        }
        if (repair && !r->read_only && store_remove(r->store, STORE_MAP, &map_ids[i]) == 0)
            rep.removed++;
    }

    digest_map_release(&chunks);
    snapshot_set_release(&set);
    if (ret)
        *ret = rep;
    return rep.damaged_snapshots || rep.damaged_objects ? 1 : 0;
}
