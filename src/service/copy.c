/* Copies between regions: CopySnapshot and CopyImage, accepted at once and
 * run as jobs.  Regions share nothing on disk (docs/architecture.md), so a
 * copy moves chunks from one region's store into the other's, and
 * registers new rows with new ids.
 *
 * Design notes:
 *
 * - Two steps, as EC2: _start registers the new rows `pending` and a job
 *   (registry/jobs.h) in one destination transaction and returns the new
 *   id; service_job_run() copies the data and, in one transaction, turns
 *   the snapshots `completed`, the image `available` and deletes the job.
 *   A copy that fails turns them `error` and `failed` (with the reason)
 *   and deletes the job too: nothing is ever `available` half copied.
 *
 * - The job records each source snapshot's block map id as it was when
 *   the copy was accepted, and reads that map, not the source row: the
 *   source may be deleted or deregistered while the copy is pending, and
 *   gc in the source region keeps the map and its chunks as long as a job
 *   names them (service_job_roots(), called by gc).  _start holds the
 *   source store's lock shared from reading the source rows until the job
 *   is committed, so a gc cannot run between the two and miss both roots.
 *
 * - Only what the destination lacks moves: each extent's chunk is looked
 *   up in the destination (store_has) and, when absent, read from the
 *   source (store_chunk_get verifies its digest: a corrupt source chunk
 *   fails the copy naming it) and written.  A second copy of the same
 *   image writes no chunk, and so does a job resumed after an interruption
 *   for the chunks it had written: resuming is running the job again.
 *
 * - Ordering is the import's: chunks, store_sync(), the block maps
 *   (fsynced by store_map_put), then the registry transaction.  The
 *   destination store's lock is held shared from the first store_has()
 *   until that transaction commits, so a gc in the destination cannot
 *   sweep a chunk between "present, reuse it" and the row that uses it.
 *
 * - The copied map has no parent: the source's parent is a snapshot of
 *   the source region, which the destination may not have.  So the new map
 *   (and its id) may differ from the source's; its extents do not.
 *
 * - Interruption: `stop` is polled between chunks and while waiting for
 *   the destination's lock; a stopped job leaves its rows pending and its
 *   job row in place, and the next run starts over (finding the chunks
 *   already copied present).
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/digest-map.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "registry/images.h"
#include "registry/jobs.h"
#include "registry/snapshot-permissions.h"
#include "service/internal.h"

/* How long _start waits for a gc running in the source region, and a job
 * for one in the destination (in slices, to notice `stop`). */
#define LOCK_TIMEOUT_MS (10 * 60 * 1000)
#define LOCK_SLICE_MS 200

/* Load the row of source snapshot `id`: it must be completed. */
static int load_source(struct region *src, const char *id, struct registry_snapshot **ret)
{
    struct registry_snapshot *row = NULL;
    int e = service_snapshot_get(src, id, &row, NULL);

    if (e < 0)
        return e;
    if (row->state != SNAPSHOT_COMPLETED || !row->has_map) {
        e = error_set(EINVAL, "snapshot '%s' is %s, not completed", id,
                      snapshot_state_to_string(row->state));
        registry_snapshot_free(row);
        return e;
    }
    *ret = row;
    return 0;
}

/* Whether `account` may read the storage of snapshot s: it owns it, or a
 * createVolumePermission names it or the group "all".  A launch
 * permission on an image is not enough to copy it: EC2 refuses such a
 * copy ("You do not have permission to access the storage of this ami"),
 * and the copy would hand the caller snapshots the owner never shared. */
static int check_storage_readable(struct region *src, const struct registry_snapshot *s,
                                  const char *account, const char *image_id)
{
    bool user = false, all = false;
    int e;

    if (strcmp(s->owner, account) == 0)
        return 0;
    e = registry_snapshot_permission_check(src->reg, s->id, account, &user, &all);
    if (e < 0)
        return e;
    if (!user && !all)
        return error_set(EACCES, "You do not have permission to access the storage of this "
                                 "ami: image '%s' maps snapshot '%s', which is not shared with "
                                 "account %s",
                         image_id, s->id, account);
    return 0;
}

/* The pending row of a copy of `from`, and its job item. */
static int new_pending(const struct registry_snapshot *from, const char *owner,
                       const char *description, struct registry_snapshot *row,
                       struct registry_job_item *item)
{
    int e = id_generate("snap", row->id, sizeof(row->id));

    if (e < 0)
        return e;
    snprintf(row->owner, sizeof(row->owner), "%s", owner);
    row->state = SNAPSHOT_PENDING;
    row->progress = 0;
    row->volume_size = from->volume_size;
    row->volume_size_gib = from->volume_size_gib;
    row->description = (char *)description;
    row->start_time = wall_clock_ms();
    memcpy(item->source_snapshot_id, from->id, ID_MAX_SIZE);
    item->source_map_id = from->map_id;
    memcpy(item->target_snapshot_id, row->id, ID_MAX_SIZE);
    return 0;
}

static int insert_snapshot(struct region *dst, const struct registry_snapshot *row,
                           const struct registry_tag *tags, size_t n_tags)
{
    int e = registry_snapshot_insert(dst->reg, row);

    for (size_t k = 0; e >= 0 && k < n_tags; k++)
        e = registry_tag_set(dst->reg, row->id, tags[k].key, tags[k].value);
    return e;
}

static int record_token(struct region *dst, const struct service_client_token *t,
                        const char *resource_id)
{
    struct registry_client_token rec = { .params = t->params, .created = wall_clock_ms() };
    int e;

    snprintf(rec.action, sizeof(rec.action), "%s", t->action);
    snprintf(rec.resource_id, sizeof(rec.resource_id), "%s", resource_id);
    e = registry_client_token_insert(dst->reg, t->account, t->token, &rec);
    if (e == -EEXIST)
        return error_set(EALREADY, "client token '%s' was used by a concurrent request",
                         t->token);
    return e;
}

int service_snapshot_copy_start(struct region *src, const char *snap_id, struct region *dst,
                                const struct service_snapshot_copy_options *opts,
                                char ret_id[ID_MAX_SIZE])
{
    struct registry_snapshot *from = NULL;
    struct registry_snapshot row = { 0 };
    struct registry_job_item item = { 0 };
    struct registry_job job = { .kind = JOB_COPY_SNAPSHOT, .items = &item, .n_items = 1 };
    int e;

    if (dst->read_only)
        return error_set(EROFS, "region '%s' is open read-only", dst->name);
    e = store_lock(src->store, false, LOCK_TIMEOUT_MS);
    if (e < 0)
        return e;
    e = load_source(src, snap_id, &from);
    if (e < 0)
        goto out;
    e = new_pending(from, opts->owner, opts->description, &row, &item);
    if (e < 0)
        goto out;
    memcpy(job.id, row.id, ID_MAX_SIZE);
    snprintf(job.owner, sizeof(job.owner), "%s", opts->owner);
    snprintf(job.source_region, sizeof(job.source_region), "%s", src->name);
    snprintf(job.source_id, sizeof(job.source_id), "%s", from->id);
    job.created = row.start_time;

    e = registry_begin(dst->reg);
    if (e < 0)
        goto out;
    e = insert_snapshot(dst, &row, opts->tags, opts->n_tags);
    if (e >= 0)
        e = registry_job_insert(dst->reg, &job);
    if (e >= 0)
        e = registry_commit(dst->reg);
    if (e < 0) {
        registry_rollback(dst->reg);
        goto out;
    }
    memcpy(ret_id, row.id, ID_MAX_SIZE);
    e = 0;
out:
    store_unlock(src->store);
    registry_snapshot_free(from);
    return e;
}

int service_image_copy_start(struct region *src, const char *image_id, struct region *dst,
                             const struct service_image_copy_options *opts,
                             char ret_id[ID_MAX_SIZE])
{
    struct registry_image *from = NULL;
    struct registry_image img;
    struct registry_image_device *devs = NULL;
    struct registry_snapshot **srcs = NULL;
    struct registry_snapshot *rows = NULL;
    struct registry_job job = { .kind = JOB_COPY_IMAGE };
    size_t n = 0;
    int e;

    if (dst->read_only)
        return error_set(EROFS, "region '%s' is open read-only", dst->name);
    if (!image_name_is_valid(opts->name))
        return error_set(EINVAL, "invalid image name '%s'", opts->name);
    e = store_lock(src->store, false, LOCK_TIMEOUT_MS);
    if (e < 0)
        return e;
    e = registry_image_get(src->reg, image_id, &from);
    if (e == -ENOENT)
        e = error_set(ENOENT, "image '%s' does not exist in region '%s'", image_id, src->name);
    if (e < 0)
        goto out;
    if (from->state != IMAGE_AVAILABLE) {
        e = error_set(EINVAL, "image '%s' is %s, not available", image_id,
                      image_state_to_string(from->state));
        goto out;
    }
    e = image_name_check_free(dst, opts->owner, opts->name);
    if (e < 0)
        goto out;

    /* The new image: the source's attributes, new id, name, owner,
     * description and mappings; no launch permissions (a copy is
     * private to its owner). */
    img = *from;
    snprintf(img.owner, sizeof(img.owner), "%s", opts->owner);
    img.name = (char *)opts->name;
    img.description = (char *)opts->description;
    img.state = IMAGE_PENDING;
    img.state_reason_code = img.state_reason_message = NULL;
    img.deprecation_time = 0;
    img.deregistration_protection = img.deregistration_cooldown = false;
    img.deregistration_blocked_until = 0;
    img.last_launched_time = 0;
    snprintf(img.source_image_id, sizeof(img.source_image_id), "%s", from->id);
    img.source_region = src->name;
    img.permissions = NULL;
    img.n_permissions = 0;
    img.is_public = false;
    img.tags = NULL;
    img.n_tags = 0;
    img.creation_date = wall_clock_ms();
    e = id_generate("ami", img.id, sizeof(img.id));
    if (e < 0)
        goto out;
    devs = xcalloc(from->n_devices + 1, sizeof(*devs));
    memcpy(devs, from->devices, from->n_devices * sizeof(*devs));
    img.devices = devs;
    srcs = xcalloc(from->n_devices + 1, sizeof(*srcs));
    rows = xcalloc(from->n_devices + 1, sizeof(*rows));
    job.items = xcalloc(from->n_devices + 1, sizeof(*job.items));

    /* Every distinct mapped snapshot: a missing or incomplete one fails
     * the request before anything is registered. */
    for (size_t i = 0; i < from->n_devices; i++) {
        const char *sid = from->devices[i].snapshot_id;
        size_t k;
        if (!sid[0])
            continue;
        for (k = 0; k < n; k++)
            if (strcmp(srcs[k]->id, sid) == 0)
                break;
        if (k == n) {
            e = load_source(src, sid, &srcs[n]);
            if (e >= 0)
                e = check_storage_readable(src, srcs[n], opts->owner, image_id);
            if (e >= 0)
                e = new_pending(srcs[n], opts->owner, srcs[n]->description, &rows[n],
                                &job.items[n]);
            if (e < 0) {
                registry_snapshot_free(srcs[n]);
                srcs[n] = NULL;
                goto out;
            }
            n++;
        }
        memcpy(devs[i].snapshot_id, rows[k].id, ID_MAX_SIZE);
    }
    if (n == 0) {
        e = error_set(EINVAL, "image '%s' maps no snapshot: nothing to copy", image_id);
        goto out;
    }
    memcpy(job.id, img.id, ID_MAX_SIZE);
    snprintf(job.owner, sizeof(job.owner), "%s", opts->owner);
    snprintf(job.source_region, sizeof(job.source_region), "%s", src->name);
    snprintf(job.source_id, sizeof(job.source_id), "%s", from->id);
    job.created = img.creation_date;
    job.n_items = n;

    e = registry_begin(dst->reg);
    if (e < 0)
        goto out;
    for (size_t k = 0; k < n && e >= 0; k++)
        e = insert_snapshot(dst, &rows[k], opts->snapshot_tags, opts->n_snapshot_tags);
    if (e >= 0)
        e = registry_image_insert(dst->reg, &img, opts->image_tags, opts->n_image_tags);
    if (e >= 0)
        e = registry_job_insert(dst->reg, &job);
    if (e >= 0 && opts->token)
        e = record_token(dst, opts->token, img.id);
    if (e >= 0)
        e = registry_commit(dst->reg);
    if (e < 0) {
        registry_rollback(dst->reg);
        goto out;
    }
    memcpy(ret_id, img.id, ID_MAX_SIZE);
    e = 0;
out:
    store_unlock(src->store);
    for (size_t k = 0; k < n; k++)
        registry_snapshot_free(srcs[k]);
    free(srcs);
    free(rows);
    free(job.items);
    free(devs);
    registry_image_free(from);
    return e;
}

/* ---- running a job ---- */

/* One item of a running job: the destination row it completes and the
 * source map it copies. */
struct run_item {
    const struct registry_job_item *it;
    struct registry_snapshot *row; /* the pending destination row, NULL: gone */
    struct blockmap *map;
    uint64_t bytes;    /* of its extents */
    int last_progress; /* last progress written */
    struct digest new_map;
};

struct run {
    struct region *src, *dst;
    const struct registry_job *job;
    const atomic_bool *stop;
    unsigned delay_us;
    struct copy_stats st;
};

static bool stopping(const struct run *r)
{
    return r->stop && atomic_load(r->stop);
}

/* Take the destination's lock shared, noticing `stop` while a gc holds it. */
static int lock_dst(struct run *r)
{
    for (int waited = 0;; waited += LOCK_SLICE_MS) {
        int e = store_lock(r->dst->store, false, LOCK_SLICE_MS);
        if (e != -EBUSY)
            return e;
        if (stopping(r))
            return -ECANCELED;
        if (waited >= LOCK_TIMEOUT_MS)
            return error_set(EBUSY, "region '%s' has been locked by gc for %d minutes",
                             r->dst->name, LOCK_TIMEOUT_MS / 60000);
    }
}

/* Write the item's progress when it moved by 10 points or more (about ten
 * registry writes a snapshot).  Failing to record progress does not fail
 * the copy. */
static void note_progress(struct run *r, struct run_item *ri, uint64_t done)
{
    int p = ri->bytes ? (int)(done * 100 / ri->bytes) : 100;

    if (p > 99)
        p = 99; /* 100 comes with `completed` */
    if (p < ri->last_progress + 10)
        return;
    ri->row->progress = p;
    if (registry_snapshot_update(r->dst->reg, ri->row) == 0)
        ri->last_progress = p;
    error_clear();
}

/* Copy the chunks of ri->map that dst lacks, then write its map
 * (parentless) into ri->new_map.  The caller holds dst's store lock. */
static int copy_data(struct run *r, struct run_item *ri)
{
    _cleanup_free_ uint8_t *buf = xmalloc(STORE_CHUNK_MAX);
    struct blockmap *m = ri->map;
    char hex[DIGEST_HEX_SIZE];
    uint64_t done = 0;
    int e;

    for (size_t i = 0; i < m->n; i++) {
        const struct blockmap_extent *x = &m->ext[i];
        uint64_t len = (uint64_t)x->count << BLOCK_SHIFT;
        ssize_t got;

        if (stopping(r))
            return -ECANCELED;
        done += len;
        e = store_has(r->dst->store, STORE_CHUNK, &x->id);
        if (e < 0)
            return error_set(e, "cannot look up chunk %s in region '%s': %s",
                             digest_to_hex(&x->id, hex), r->dst->name, strerror(-e));
        if (e > 0) {
            r->st.chunks_present++;
            r->st.bytes_present += len;
            continue;
        }
        got = store_chunk_get(r->src->store, &x->id, buf, STORE_CHUNK_MAX);
        if (got < 0)
            return error_set((int)got, "cannot copy snapshot '%s': chunk %s in region '%s' %s",
                             ri->it->source_snapshot_id, digest_to_hex(&x->id, hex),
                             r->src->name,
                             got == -EBADMSG  ? "is corrupt (digest mismatch)"
                             : got == -ENOENT ? "is missing"
                                              : strerror((int)-got));
        e = store_chunk_put(r->dst->store, &x->id, buf, (size_t)got, NULL);
        if (e < 0)
            return error_set(e, "cannot write chunk %s to region '%s': %s",
                             digest_to_hex(&x->id, hex), r->dst->name, strerror(-e));
        if (e > 0) {
            r->st.chunks_copied++;
            r->st.bytes_copied += (uint64_t)got;
        } else {
            r->st.chunks_present++;
            r->st.bytes_present += (uint64_t)got;
        }
        if (r->delay_us)
            usleep(r->delay_us);
        note_progress(r, ri, done);
    }
    e = store_sync(r->dst->store);
    if (e < 0)
        return error_set(e, "cannot sync the store of region '%s': %s", r->dst->name,
                         strerror(-e));
    memset(&m->parent, 0, sizeof(m->parent));
    return blockmap_save(r->dst->store, m, &ri->new_map);
}

/* The job's image, if it is still pending (NULL otherwise). */
static int pending_image(struct run *r, struct registry_image **ret)
{
    struct registry_image *img = NULL;
    int e;

    *ret = NULL;
    if (r->job->kind != JOB_COPY_IMAGE)
        return 0;
    e = registry_image_get(r->dst->reg, r->job->id, &img);
    if (e == -ENOENT)
        return 0;
    if (e < 0)
        return e;
    if (img->state == IMAGE_PENDING)
        *ret = img;
    else
        registry_image_free(img);
    return 0;
}

/* One transaction: the items' rows completed (or error with `why`), the
 * image available (or failed), the job deleted. */
static int finish(struct run *r, struct run_item *items, size_t n, int err, const char *why)
{
    struct registry_image *img = NULL;
    int64_t now = wall_clock_ms();
    int e;

    e = registry_begin(r->dst->reg);
    if (e < 0)
        return e;
    for (size_t k = 0; k < n && e >= 0; k++) {
        struct registry_snapshot *row = items[k].row;
        if (!row)
            continue;
        if (err == 0) {
            row->state = SNAPSHOT_COMPLETED;
            row->progress = 100;
            row->has_map = true;
            row->map_id = items[k].new_map;
            row->completion_time = now;
        } else {
            row->state = SNAPSHOT_ERROR;
            free(row->state_message);
            row->state_message = xstrdup(why);
        }
        e = registry_snapshot_update(r->dst->reg, row);
        if (e == -ENOENT) /* deleted while we copied */
            e = 0;
    }
    if (e >= 0)
        e = pending_image(r, &img);
    if (e >= 0 && img) {
        struct registry_image_update u = { .set = IMAGE_SET_STATE };
        if (err == 0) {
            u.state = IMAGE_AVAILABLE;
        } else {
            u.state = IMAGE_FAILED;
            u.state_reason_code = err == -ENOENT ? "Client.InvalidSnapshot.NotFound"
                                                 : "Server.InternalError";
            u.state_reason_message = why;
        }
        e = registry_image_update(r->dst->reg, r->job->id, &u);
    }
    if (e >= 0)
        e = registry_job_delete(r->dst->reg, r->job->id);
    if (e >= 0)
        e = registry_commit(r->dst->reg);
    if (e < 0)
        registry_rollback(r->dst->reg);
    registry_image_free(img);
    return e;
}

/* Load the pending rows.  Rows that are gone or no longer pending are
 * left out (row NULL). */
static int load_rows(struct run *r, struct run_item *items, size_t *ret_live)
{
    size_t live = 0;
    int e;

    for (size_t k = 0; k < r->job->n_items; k++) {
        struct run_item *ri = &items[k];
        ri->it = &r->job->items[k];
        e = registry_snapshot_get(r->dst->reg, ri->it->target_snapshot_id, &ri->row);
        if (e == -ENOENT) {
            error_clear();
            continue;
        }
        if (e < 0)
            return e;
        if (ri->row->state != SNAPSHOT_PENDING) {
            registry_snapshot_free(ri->row);
            ri->row = NULL;
            continue;
        }
        live++;
    }
    *ret_live = live;
    return 0;
}

/* Load the source maps of the live items. */
static int load_maps(struct run *r, struct run_item *items)
{
    char hex[DIGEST_HEX_SIZE];
    int e;

    for (size_t k = 0; k < r->job->n_items; k++) {
        struct run_item *ri = &items[k];
        if (!ri->row)
            continue;
        e = blockmap_load(r->src->store, &ri->it->source_map_id, &ri->map);
        if (e < 0)
            return error_set(e, "cannot read the block map %s of source snapshot '%s' in "
                                "region '%s': %s",
                             digest_to_hex(&ri->it->source_map_id, hex),
                             ri->it->source_snapshot_id, r->src->name,
                             e == -ENOENT ? "it is gone" : strerror(-e));
        for (size_t i = 0; i < ri->map->n; i++)
            ri->bytes += (uint64_t)ri->map->ext[i].count << BLOCK_SHIFT;
    }
    return 0;
}

int service_job_run(struct region *dst, const char *job_id, const atomic_bool *stop,
                    unsigned chunk_delay_us, struct copy_stats *ret)
{
    struct registry_job *job = NULL;
    struct run r = { .dst = dst, .stop = stop, .delay_us = chunk_delay_us };
    struct run_item *items = NULL;
    bool locked = false;
    size_t live = 0;
    char why[512];
    int e, f;

    if (dst->read_only)
        return error_set(EROFS, "region '%s' is open read-only", dst->name);
    e = registry_job_get(dst->reg, job_id, &job);
    if (e < 0)
        return e;
    if (job->kind == JOB_VOLUME_SNAPSHOT) { /* not a copy: volumes.c */
        e = service_volume_snapshot_job_run(dst, job, stop, chunk_delay_us);
        registry_job_free(job);
        return e;
    }
    r.job = job;
    items = xcalloc(job->n_items, sizeof(*items));

    e = load_rows(&r, items, &live);
    if (e < 0)
        goto out; /* the registry: try again later */
    if (live == 0) {
        /* Everything the job was to make is gone: nothing to copy. */
        e = finish(&r, items, job->n_items, 0, NULL);
        goto out;
    }
    e = region_open(dst->data_dir, job->source_region, true, &r.src);
    if (e == -ENOENT)
        e = error_set(ENOENT, "the source region '%s' is gone", job->source_region);
    if (e >= 0)
        e = load_maps(&r, items);
    if (e >= 0) {
        e = lock_dst(&r);
        locked = e >= 0;
    }
    for (size_t k = 0; k < job->n_items && e >= 0; k++)
        if (items[k].row)
            e = copy_data(&r, &items[k]);
    if (e >= 0) {
        e = finish(&r, items, job->n_items, 0, NULL);
        if (e >= 0 && ret)
            *ret = r.st;
        goto out;
    }
    if (e == -ECANCELED || e == -EBUSY)
        goto out; /* stopped, or a gc or writer held on too long: later */

    /* The copy failed: say so in the rows, keep nothing available. */
    snprintf(why, sizeof(why), "%s", error_message() ? error_message() : strerror(-e));
    f = finish(&r, items, job->n_items, e, why);
    e = f < 0 ? f : 1;
    if (f >= 0)
        error_set(EIO, "%s", why); /* for the caller's log */
out:
    if (locked)
        store_unlock(dst->store);
    for (size_t k = 0; k < job->n_items; k++) {
        registry_snapshot_free(items[k].row);
        blockmap_free(items[k].map);
    }
    free(items);
    region_free(r.src);
    registry_job_free(job);
    return e;
}

/* ---- gc roots ---- */

/* Add the maps that the jobs of registry `path` read from region r. */
static int roots_from(struct region *r, const char *path, struct digest_map *live)
{
    struct registry *reg = NULL;
    struct digest *maps = NULL;
    size_t n = 0;
    char hex[DIGEST_HEX_SIZE];
    int e;

    e = registry_open(path, &reg);
    if (e >= 0)
        e = registry_job_source_maps(reg, r->name, &maps, &n);
    registry_free(reg);
    for (size_t i = 0; i < n && e >= 0; i++) {
        struct blockmap *m = NULL;
        e = blockmap_load(r->store, &maps[i], &m);
        if (e == -ENOENT) { /* gone already: that job will fail */
            error_clear();
            e = 0;
            continue;
        }
        if (e < 0) {
            e = error_set(EBADMSG,
                          "cannot mark the chunks of block map %s, which a pending copy "
                          "reads: it is unreadable; run 'kiln fsck'",
                          digest_to_hex(&maps[i], hex));
            break;
        }
        digest_map_insert(live, &maps[i], NULL);
        for (size_t k = 0; k < m->n; k++)
            digest_map_insert(live, &m->ext[k].id, NULL);
        blockmap_free(m);
    }
    free(maps);
    return e;
}

int service_job_roots(struct region *r, struct digest_map *live)
{
    _cleanup_free_ char *dir = xasprintf("%s/regions", r->data_dir);
    DIR *d = opendir(dir);
    struct dirent *de;
    int e = 0;

    if (!d)
        return errno == ENOENT ? 0 : error_set(errno, "cannot list '%s': %m", dir);
    while (e >= 0 && (de = readdir(d))) {
        _cleanup_free_ char *path = NULL;
        if (de->d_name[0] == '.' || !region_name_is_valid(de->d_name))
            continue;
        path = xasprintf("%s/%s/registry.db", dir, de->d_name);
        if (access(path, F_OK) < 0)
            continue;
        e = roots_from(r, path, live);
    }
    closedir(d);
    return e;
}
