/* gc: mark and sweep.
 *
 * Mark: every chunk and map reachable from a registered snapshot.  Sweep:
 * every other object whose modification time is older than the grace
 * period, and temporaries older than it.  gc holds the store's lock
 * exclusively for the whole run, so no import is between "chunk present,
 * reuse it" and registering the snapshot that reuses it; the grace period
 * additionally spares objects written moments ago by writers that do not
 * take the lock.
 *
 * A snapshot whose map cannot be read stops gc: its chunks cannot be marked,
 * and sweeping them would turn damage into loss.
 *
 * Pending copies are roots too: a copy job (in any region's registry)
 * reads the source block map it recorded when it was accepted, whether or
 * not the source snapshot is still registered, so those maps and their
 * chunks are marked (service_job_roots(), copy.c).  A job is committed
 * while its creator holds this store's lock shared, so gc sees either the
 * source snapshot or the job.  Likewise the parent map of a pending EBS
 * upload (service_ebs_roots(), ebs.c), recorded by StartSnapshot under the
 * same shared lock: its completion imports over it even if the parent
 * snapshot is deleted meanwhile.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "common/digest-map.h"
#include "common/error.h"
#include "common/util.h"
#include "service/internal.h"

#define GC_LOCK_TIMEOUT_MS (10 * 60 * 1000)

struct sweep_ctx {
    struct store *store;
    enum store_kind kind;
    struct digest_map *live;
    time_t cutoff;
    bool dry_run;
    uint64_t kept, freed, bytes;
    int error;
};

static int sweep_one(const struct store_object_info *info, void *userdata)
{
    struct sweep_ctx *c = userdata;

    if (digest_map_find(c->live, &info->id) || info->mtime > c->cutoff) {
        c->kept++;
        return 0;
    }
    if (!c->dry_run) {
        int e = store_remove(c->store, c->kind, &info->id);
        if (e < 0 && e != -ENOENT) {
            c->error = e;
            return e;
        }
    }
    c->freed++;
    c->bytes += info->stored_size;
    return 0;
}

int service_gc(struct region *r, bool dry_run, time_t grace, struct gc_report *ret)
{
    struct gc_report rep = { 0 };
    struct snapshot_set set;
    struct digest_map live;
    struct sweep_ctx c;
    int e;

    if (r->read_only)
        return -EROFS;
    e = store_lock(r->store, true, GC_LOCK_TIMEOUT_MS);
    if (e < 0)
        return e;
    e = snapshot_set_load(r, &set);
    if (e < 0)
        goto out_unlock;

    digest_map_init(&live);
    for (size_t s = 0; s < set.n; s++) {
        if (!set.rows[s]->has_map)
            continue;
        if (!set.maps[s]) {
            e = error_set(EBADMSG,
                          "cannot mark the chunks of snapshot '%s': its block map is "
                          "unreadable; run 'kiln fsck'",
                          set.rows[s]->id);
            goto out;
        }
        digest_map_insert(&live, &set.rows[s]->map_id, NULL);
        for (size_t i = 0; i < set.maps[s]->n; i++)
            digest_map_insert(&live, &set.maps[s]->ext[i].id, NULL);
    }
    e = service_job_roots(r, &live);
    if (e < 0)
        goto out;
    /* An EBS upload's parent map, read at its completion (ebs.c). */
    e = service_ebs_roots(r, &live);
    if (e < 0)
        goto out;
    /* Volumes read their snapshot's map lazily, even after the snapshot
     * is deleted (service_volume_roots(), volumes.c). */
    e = service_volume_roots(r, &live);
    if (e < 0)
        goto out;

    c = (struct sweep_ctx){
        .store = r->store, .kind = STORE_CHUNK, .live = &live,
        .cutoff = time(NULL) - grace, .dry_run = dry_run,
    };
    e = store_list(r->store, STORE_CHUNK, sweep_one, &c);
    if (e < 0)
        goto out;
    rep.chunks_kept = c.kept;
    rep.chunks_freed = c.freed;
    rep.bytes_freed = c.bytes;

    c.kind = STORE_MAP;
    c.kept = c.freed = c.bytes = 0;
    e = store_list(r->store, STORE_MAP, sweep_one, &c);
    if (e < 0)
        goto out;
    rep.maps_freed = c.freed;
    rep.bytes_freed += c.bytes;

    e = service_volume_sweep_orphans(r, dry_run, &rep.volume_dirs_freed);
    if (e < 0)
        goto out;
    e = store_sweep_temporaries(r->store, grace, dry_run, &rep.temporaries_freed,
                                &rep.temporary_bytes_freed);
    if (e == 0 && !dry_run)
        e = store_sync(r->store);
out:
    digest_map_release(&live);
    snapshot_set_release(&set);
out_unlock:
    store_unlock(r->store);
    if (e < 0)
        return e;
    if (ret)
        *ret = rep;
    return 0;
}
