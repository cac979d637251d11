/* Volumes of a region: create (from a snapshot or blank), delete, grow,
 * open for the NBD server, snapshot incrementally, and the gc roots they
 * hold.
 *
 * Layout: DATA/regions/<r>/volumes/<vol-id>/ holds the volume's files
 * (src/volume/volume.h, docs/formats.md); the registry row holds its
 * metadata, including the block map id of the snapshot it was created from.
 *
 * Design notes:
 *   - Creating a volume copies nothing: an empty directory, then one row
 *     (the volume reads its snapshot lazily).  The row is inserted while
 *     the store's lock is held shared, so a gc running at the same time
 *     sees either the snapshot or the volume as the root of the map.
 *   - Delete removes the row (the volume is gone for every reader), then
 *     the directory; a crash in between leaves a directory without a row,
 *     which gc removes.  A volume attached to an instance, or open by
 *     another process (its directory lock), is refused with -EBUSY.
 *   - CreateSnapshot, synchronous (service_volume_snapshot(), the CLI): a
 *     pending row, then (store lock shared) the volume's new chunks,
 *     store_sync(), its block map, and the row completed with the map, as
 *     one update.  On failure the pending row is deleted: nothing refers
 *     to what was written, and gc reclaims it.
 *   - CreateSnapshot as EC2 answers it (service_volume_snapshot_start(),
 *     the API): the capture is the same work, done at request time so the
 *     snapshot is the volume at that moment; instead of completing the row
 *     it commits the row `pending` and a JOB_VOLUME_SNAPSHOT job naming
 *     the captured map, in one transaction under the store's lock (so gc
 *     sees the job, which is a root through registry_job_source_maps(),
 *     or nothing of it at all).  The job runner then reads back every
 *     chunk the map added over its parent, checking each digest, and
 *     completes the row and deletes the job in one transaction, under the
 *     store's lock shared (gc sees the job or the completed row).  A
 *     stopped or killed serve leaves the job; the next start runs it again
 *     (reading back is idempotent).  A missing or corrupt chunk turns the
 *     row `error` with the reason: never `completed` unverified, never
 *     pending forever.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/digest-map.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "registry/jobs.h"
#include "service/internal.h"
#include "volume/volume.h"

#define LOCK_TIMEOUT_MS (10 * 60 * 1000)
#define GiB (1ULL << 30)

char *service_volume_dir(struct region *r, const char *id)
{
    return xasprintf("%s/volumes/%s", r->dir, id);
}

int service_volume_get(struct region *r, const char *id, struct registry_volume **ret)
{
    int e = registry_volume_get(r->reg, id, ret);
    if (e == -ENOENT)
        return error_set(ENOENT, "volume '%s' does not exist in region '%s'", id, r->name);
    return e;
}

static int volume_insert(struct registry *reg, const void *row)
{
    return registry_volume_insert(reg, row);
}

static int snapshot_insert(struct registry *reg, const void *row)
{
    return registry_snapshot_insert(reg, row);
}

/* Insert a row and its tags in one transaction: a resource that exists
 * carries its tags from its first moment (a bake's janitor finds what a
 * killed build made through them). */
static int insert_tagged(struct region *r, const char *id, const struct registry_tag *tags,
                         size_t n_tags, int (*insert)(struct registry *, const void *),
                         const void *row)
{
    int e;

    if (n_tags == 0)
        return insert(r->reg, row);
    e = registry_begin(r->reg);
    if (e < 0)
        return e;
    e = insert(r->reg, row);
    for (size_t i = 0; i < n_tags && e >= 0; i++)
        e = registry_tag_set(r->reg, id, tags[i].key, tags[i].value);
    if (e >= 0)
        e = registry_commit(r->reg);
    if (e < 0)
        registry_rollback(r->reg);
    return e;
}

int service_volume_create(struct region *r, const struct service_volume_create_options *o,
                          char ret_id[ID_MAX_SIZE])
{
    struct registry_volume row = {
        .state = VOLUME_AVAILABLE,
        .iops = o->iops ? o->iops : 3000,
        .throughput = o->throughput ? o->throughput : 125,
    };
    _cleanup_free_ char *zone = xasprintf("%sa", r->name);
    _cleanup_free_ char *vols = xasprintf("%s/volumes", r->dir);
    _cleanup_free_ char *dir = NULL;
    struct registry_snapshot *snap = NULL;
    uint32_t size_gib = o->size_gib;
    int e;

    if (r->read_only)
        return error_set(EROFS, "region '%s' is open read-only", r->name);
    if (o->availability_zone && strcmp(o->availability_zone, zone) != 0)
        return error_set(EINVAL, "availability zone '%s' does not exist in region '%s' (it has '%s')",
                         o->availability_zone, r->name, zone);
    snprintf(row.availability_zone, sizeof(row.availability_zone), "%s", zone);
    if (o->volume_type && strcmp(o->volume_type, "gp3") != 0)
        return error_set(EINVAL, "volume type '%s' is not supported (only gp3)", o->volume_type);
    snprintf(row.volume_type, sizeof(row.volume_type), "gp3");
    if (o->iops < 0 || o->throughput < 0)
        return error_set(EINVAL, "iops and throughput cannot be negative");
    if (!o->snapshot_id && size_gib == 0)
        return error_set(EINVAL, "a blank volume needs a size");
    if (size_gib > VOLUME_SIZE_GIB_MAX)
        return error_set(EINVAL, "a volume of %u GiB is larger than the largest (%d GiB)",
                         size_gib, VOLUME_SIZE_GIB_MAX);
    if (o->owner)
        snprintf(row.owner, sizeof(row.owner), "%s", o->owner);
    else if ((e = service_default_account(r->data_dir, row.owner)) < 0)
        return e;
    e = id_generate("vol", row.id, sizeof(row.id));
    if (e < 0)
        return e;
    row.create_time = wall_clock_ms();

    e = mkdir_p(vols);
    if (e < 0)
        return error_set(e, "cannot create '%s': %s", vols, strerror(-e));
    dir = service_volume_dir(r, row.id);

    /* From the directory to the row: gc (exclusive) sweeps directories
     * without a row, and must not see this one in between. */
    e = store_lock(r->store, false, LOCK_TIMEOUT_MS);
    if (e < 0)
        return e;
    if (mkdir(dir, 0755) < 0) {
        e = error_set(errno, "cannot create volume directory '%s': %m", dir);
        store_unlock(r->store);
        return e;
    }
    /* Not fsynced: the row is the commit point, and opening a volume
     * creates its directory again if a crash lost it. */
    if (o->snapshot_id) {
        e = service_snapshot_get(r, o->snapshot_id, &snap, NULL);
        if (e == 0 && (snap->state != SNAPSHOT_COMPLETED || !snap->has_map))
            e = error_set(EINVAL, "snapshot '%s' is %s, not completed", o->snapshot_id,
                          snapshot_state_to_string(snap->state));
        if (e == 0) {
            uint32_t snap_gib = (uint32_t)DIV_ROUND_UP(snap->volume_size, GiB);
            if (snap_gib == 0)
                snap_gib = 1;
            if (size_gib == 0)
                size_gib = snap_gib;
            else if (size_gib < snap_gib)
                e = error_set(EINVAL,
                              "volume size %u GiB is smaller than snapshot '%s' (%u GiB)",
                              size_gib, o->snapshot_id, snap_gib);
            snprintf(row.snapshot_id, sizeof(row.snapshot_id), "%s", snap->id);
            row.has_base = true;
            row.base_map_id = snap->map_id;
        }
        registry_snapshot_free(snap);
    }
    row.size_gib = size_gib;
    if (e == 0)
        e = insert_tagged(r, row.id, o->tags, o->n_tags, volume_insert, &row);
    if (e < 0)
        rmdir(dir);
    store_unlock(r->store);
    if (e < 0)
        return e;
    memcpy(ret_id, row.id, ID_MAX_SIZE);
    return 0;
}

/* Remove a volume's directory and the files kiln keeps in it. */
static int remove_volume_dir(const char *dir)
{
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d;
    struct dirent *de;

    if (dfd < 0)
        return errno == ENOENT ? 0 : -errno;
    d = fdopendir(dup(dfd));
    if (!d)
        return -errno;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            unlinkat(dfd, de->d_name, 0);
    closedir(d);
    if (rmdir(dir) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

int service_volume_delete(struct region *r, const char *id)
{
    _cleanup_(registry_volume_freep) struct registry_volume *row = NULL;
    _cleanup_free_ char *dir = NULL, *lock = NULL;
    _cleanup_close_ int fd = -1;
    int e;

    if (r->read_only)
        return error_set(EROFS, "region '%s' is open read-only", r->name);
    e = service_volume_get(r, id, &row);
    if (e < 0)
        return e;
    if (row->instance_id[0] || row->state == VOLUME_IN_USE)
        return error_set(EBUSY, "volume '%s' is attached to instance '%s'", id,
                         row->instance_id[0] ? row->instance_id : "(unknown)");
    dir = service_volume_dir(r, id);
    lock = xasprintf("%s/lock", dir);
    /* Held until the directory is gone: nobody opens it meanwhile. */
    fd = open(lock, O_RDWR | O_CLOEXEC);
    if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0)
        return error_set(EBUSY, "volume '%s' is in use (open by another process)", id);
    e = registry_volume_delete(r->reg, id);
    if (e < 0)
        return e;
    e = remove_volume_dir(dir);
    if (e < 0)
        log_warning("volume '%s' deleted, but its directory '%s' was not removed: %s "
                    "(gc removes it)", id, dir, strerror(-e));
    return 0;
}

int service_volume_grow(struct region *r, const char *id, uint32_t size_gib)
{
    _cleanup_(registry_volume_freep) struct registry_volume *row = NULL;
    int e;

    if (r->read_only)
        return error_set(EROFS, "region '%s' is open read-only", r->name);
    e = service_volume_get(r, id, &row);
    if (e < 0)
        return e;
    if (size_gib > VOLUME_SIZE_GIB_MAX)
        return error_set(EINVAL, "a volume of %u GiB is larger than the largest (%d GiB)",
                         size_gib, VOLUME_SIZE_GIB_MAX);
    if (size_gib < row->size_gib)
        return error_set(EINVAL, "volume '%s' cannot shrink from %u to %u GiB", id,
                         row->size_gib, size_gib);
    if (size_gib == row->size_gib)
        return 0;
    row->size_gib = size_gib;
    return registry_volume_update(r->reg, row);
}

static int open_row(struct region *r, const struct registry_volume *row, unsigned flags,
                    struct volume **ret)
{
    _cleanup_free_ char *dir = service_volume_dir(r, row->id);
    struct blockmap *base = NULL;
    int e;

    if (row->state != VOLUME_AVAILABLE && row->state != VOLUME_IN_USE)
        return error_set(EINVAL, "volume '%s' is %s", row->id,
                         volume_state_to_string(row->state));
    if (row->has_base) {
        e = blockmap_load(r->store, &row->base_map_id, &base);
        if (e < 0) {
            char why[256]; /* error_set() reuses error_message()'s buffer */
            snprintf(why, sizeof(why), "%s", error_message() ? error_message() : strerror(-e));
            return error_set(e, "volume '%s': cannot load the block map of snapshot '%s': %s",
                             row->id, row->snapshot_id, why);
        }
    }
    if (!(flags & VOLUME_OPEN_READ_ONLY))
        flags |= VOLUME_OPEN_CREATE;
    else if (!r->read_only && mkdir(dir, 0755) < 0 && errno != EEXIST)
        return error_set(errno, "cannot create volume directory '%s': %m", dir);
    return volume_open(r->store, dir, base, row->has_base ? &row->base_map_id : NULL,
                       (uint64_t)row->size_gib * GiB, flags, ret);
}

int service_volume_open(struct region *r, const char *id, unsigned flags, struct volume **ret)
{
    _cleanup_(registry_volume_freep) struct registry_volume *row = NULL;
    int e;

    if (r->read_only)
        flags |= VOLUME_OPEN_READ_ONLY;
    e = service_volume_get(r, id, &row);
    if (e < 0)
        return e;
    return open_row(r, row, flags, ret);
}

int service_volume_open_snapshot(struct region *r, const char *snap_id, struct volume **ret)
{
    struct registry_snapshot *row = NULL;
    struct blockmap *map = NULL;
    int e;

    e = service_snapshot_get(r, snap_id, &row, &map);
    if (e < 0)
        return e;
    if (row->state != SNAPSHOT_COMPLETED) {
        e = error_set(EINVAL, "snapshot '%s' is %s, not completed", snap_id,
                      snapshot_state_to_string(row->state));
        blockmap_free(map);
    } else {
        e = volume_open_snapshot(r->store, r->dir, map, &row->map_id, ret);
    }
    registry_snapshot_free(row);
    return e;
}

struct snap_progress {
    struct region *r;
    struct registry_snapshot *row;
};

/* The pending row's progress, in steps of 10% or more (0 to 90: 100 is
 * for the completed row). */
static int update_progress(void *userdata, uint64_t done, uint64_t total)
{
    struct snap_progress *p = userdata;
    int pct = total ? (int)(done * 100 / total) : 100;

    if (pct > 90)
        pct = 90;
    if (pct < p->row->progress + 10)
        return 0;
    p->row->progress = pct;
    return registry_snapshot_update(p->r->reg, p->row);
}

/* The registry row of a new snapshot of volume `vol` (open as `v`): a
 * fresh id, its owner (o->owner, else the volume's), the volume's snapshot
 * as parent, its size, o->description, started now. */
static int pending_snapshot_row(const struct registry_volume *vol, const struct volume *v,
                                const struct service_volume_snapshot_options *o,
                                struct registry_snapshot *row)
{
    int e = id_generate("snap", row->id, sizeof(row->id));
    if (e < 0)
        return e;
    if (o && o->owner)
        snprintf(row->owner, sizeof(row->owner), "%s", o->owner);
    else
        memcpy(row->owner, vol->owner, sizeof(row->owner));
    snprintf(row->parent_id, sizeof(row->parent_id), "%s", vol->snapshot_id);
    snprintf(row->volume_id, sizeof(row->volume_id), "%s", vol->id);
    row->volume_size = volume_size(v);
    row->volume_size_gib = vol->size_gib;
    row->description = o ? (char *)o->description : NULL;
    row->start_time = wall_clock_ms();
    return 0;
}

int service_volume_snapshot_open(struct region *r, struct volume *v, const char *vol_id,
                                 const struct service_volume_snapshot_options *o,
                                 char ret_id[ID_MAX_SIZE], struct volume_snapshot_stats *ret)
{
    _cleanup_(registry_volume_freep) struct registry_volume *vol = NULL;
    struct registry_snapshot row = { .state = SNAPSHOT_PENDING };
    struct volume_snapshot_stats st;
    int e;

    if (r->read_only)
        return error_set(EROFS, "region '%s' is open read-only", r->name);
    e = service_volume_get(r, vol_id, &vol);
    if (e < 0)
        return e;
    e = pending_snapshot_row(vol, v, o, &row);
    if (e < 0)
        return e;

    e = store_lock(r->store, false, LOCK_TIMEOUT_MS);
    if (e < 0)
        return e;
    e = insert_tagged(r, row.id, o ? o->tags : NULL, o ? o->n_tags : 0, snapshot_insert, &row);
    if (e < 0)
        goto out;
    struct snap_progress prog = { .r = r, .row = &row };
    e = volume_snapshot_progress(v, update_progress, &prog, &row.map_id, NULL, &st);
    if (e == 0) {
        row.has_map = true;
        row.state = SNAPSHOT_COMPLETED;
        row.progress = 100;
        row.completion_time = wall_clock_ms();
        e = registry_snapshot_update(r->reg, &row);
    }
    if (e < 0) {
        char why[512];
        snprintf(why, sizeof(why), "%s", error_message() ? error_message() : "");
        registry_snapshot_delete(r->reg, row.id);
        error_set(e, "%s", why);
    }
out:
    store_unlock(r->store);
    if (e < 0)
        return e;
    memcpy(ret_id, row.id, ID_MAX_SIZE);
    if (ret)
        *ret = st;
    return 0;
}

int service_volume_snapshot(struct region *r, const char *vol_id,
                            const struct service_volume_snapshot_options *o,
                            char ret_id[ID_MAX_SIZE], struct volume_snapshot_stats *ret)
{
    _cleanup_(volume_closep) struct volume *v = NULL;
    int e;

    /* Read-only: takes the directory lock shared, so a volume that another
     * process has open for writing is refused (-EBUSY). */
    e = service_volume_open(r, vol_id, VOLUME_OPEN_READ_ONLY, &v);
    if (e < 0)
        return e;
    return service_volume_snapshot_open(r, v, vol_id, o, ret_id, ret);
}

int service_volume_snapshot_start(struct region *r, const char *vol_id,
                                  const struct service_volume_snapshot_options *o,
                                  char ret_id[ID_MAX_SIZE])
{
    _cleanup_(volume_closep) struct volume *v = NULL;
    _cleanup_(registry_volume_freep) struct registry_volume *vol = NULL;
    struct registry_snapshot row = { .state = SNAPSHOT_PENDING };
    struct registry_job_item it = { { 0 } };
    struct registry_job job = { .kind = JOB_VOLUME_SNAPSHOT, .items = &it, .n_items = 1 };
    int e;

    if (r->read_only)
        return error_set(EROFS, "region '%s' is open read-only", r->name);
    e = service_volume_get(r, vol_id, &vol);
    if (e < 0)
        return e;
    /* Read-only: the directory lock shared, so a volume that another
     * process has open for writing is refused (-EBUSY) and none can open
     * it for writing until the capture is done. */
    e = open_row(r, vol, VOLUME_OPEN_READ_ONLY, &v);
    if (e < 0)
        return e;
    e = pending_snapshot_row(vol, v, o, &row);
    if (e < 0)
        return e;

    memcpy(job.id, row.id, sizeof(job.id));
    memcpy(job.owner, row.owner, sizeof(job.owner));
    snprintf(job.source_region, sizeof(job.source_region), "%s", r->name);
    snprintf(job.source_id, sizeof(job.source_id), "%s", vol->id);
    job.created = row.start_time;
    memcpy(it.source_snapshot_id, row.id, sizeof(it.source_snapshot_id));
    memcpy(it.target_snapshot_id, row.id, sizeof(it.target_snapshot_id));

    e = store_lock(r->store, false, LOCK_TIMEOUT_MS);
    if (e < 0)
        return e;
    /* The capture: chunks, store_sync(), the map. */
    e = volume_snapshot(v, &it.source_map_id, NULL, NULL);
    if (e >= 0)
        e = registry_begin(r->reg);
    if (e >= 0) {
        e = registry_snapshot_insert(r->reg, &row);
        if (e >= 0)
            e = registry_job_insert(r->reg, &job);
        if (e >= 0)
            e = registry_commit(r->reg);
        if (e < 0)
            registry_rollback(r->reg);
    }
    store_unlock(r->store);
    if (e < 0)
        return e;
    service_jobs_notify();
    memcpy(ret_id, row.id, ID_MAX_SIZE);
    return 0;
}

/* One transaction: the row completed with `map_id` (err 0) or `error`
 * with `why`, and the job deleted.  row may be NULL (gone meanwhile). */
static int job_finish(struct region *r, const struct registry_job *job,
                      struct registry_snapshot *row, const struct digest *map_id, int err,
                      const char *why)
{
    int e = registry_begin(r->reg);

    if (e < 0)
        return e;
    if (row) {
        if (err == 0) {
            row->state = SNAPSHOT_COMPLETED;
            row->progress = 100;
            row->has_map = true;
            row->map_id = *map_id;
            row->completion_time = wall_clock_ms();
        } else {
            row->state = SNAPSHOT_ERROR;
            free(row->state_message);
            row->state_message = xstrdup(why);
        }
        e = registry_snapshot_update(r->reg, row);
        if (e == -ENOENT) /* deleted meanwhile */
            e = 0;
    }
    if (e >= 0)
        e = registry_job_delete(r->reg, job->id);
    if (e >= 0)
        e = registry_commit(r->reg);
    if (e < 0)
        registry_rollback(r->reg);
    return e;
}

/* Read back every chunk of `map` that its parent does not have. */
static int verify_new_chunks(struct region *r, const struct registry_job *job,
                             struct registry_snapshot *row, const struct blockmap *map,
                             const atomic_bool *stop, unsigned delay_us)
{
    struct digest_map old;
    struct blockmap *parent = NULL;
    _cleanup_free_ uint8_t *buf = NULL;
    size_t bufsize = 0, total = 0, done = 0;
    char hex[DIGEST_HEX_SIZE];
    int e = 0;

    digest_map_init(&old);
    /* The parent is only a shortcut: without it every chunk is read. */
    if (!digest_is_null(&map->parent) && blockmap_load(r->store, &map->parent, &parent) == 0) {
        for (size_t i = 0; i < parent->n; i++)
            digest_map_insert(&old, &parent->ext[i].id, NULL);
        blockmap_free(parent);
    }
    error_clear();
    for (size_t i = 0; i < map->n; i++)
        if (!digest_map_find(&old, &map->ext[i].id))
            total++;
    for (size_t i = 0; i < map->n && e >= 0; i++) {
        const struct blockmap_extent *x = &map->ext[i];
        size_t need = (size_t)x->count << BLOCK_SHIFT;
        ssize_t got;

        if (digest_map_find(&old, &x->id))
            continue;
        if (stop && atomic_load(stop)) {
            e = -ECANCELED;
            break;
        }
        if (need > bufsize) {
            free(buf);
            buf = xmalloc(need);
            bufsize = need;
        }
        got = store_chunk_get(r->store, &x->id, buf, bufsize);
        if (got < 0) {
            e = error_set((int)-got, "chunk %s of snapshot '%s' (block %llu), captured from "
                                     "volume '%s', is %s",
                          digest_to_hex(&x->id, hex), job->id, (unsigned long long)x->block,
                          job->source_id,
                          got == -ENOENT ? "missing" : got == -EBADMSG ? "corrupt"
                                                                        : strerror((int)-got));
            break;
        }
        if (delay_us)
            usleep(delay_us);
        done++;
        int pct = (int)(done * 90 / total);
        if (pct >= row->progress + 10) {
            row->progress = pct;
            e = registry_snapshot_update(r->reg, row);
            if (e == -ENOENT) { /* deleted meanwhile: stop reading */
                error_clear();
                e = 0;
                break;
            }
        }
    }
    digest_map_release(&old);
    return e;
}

int service_volume_snapshot_job_run(struct region *r, const struct registry_job *job,
                                    const atomic_bool *stop, unsigned chunk_delay_us)
{
    struct registry_snapshot *row = NULL;
    struct blockmap *map = NULL;
    const struct digest *map_id;
    char why[512], hex[DIGEST_HEX_SIZE];
    int e, f;

    if (r->read_only)
        return error_set(EROFS, "region '%s' is open read-only", r->name);
    if (job->kind != JOB_VOLUME_SNAPSHOT || job->n_items != 1)
        return error_set(EINVAL, "job '%s' is not a volume snapshot", job->id);
    map_id = &job->items[0].source_map_id;
    e = registry_snapshot_get(r->reg, job->id, &row);
    if (e == -ENOENT) {
        error_clear();
        e = 0;
    } else if (e < 0) {
        return e;
    } else if (row->state != SNAPSHOT_PENDING) {
        registry_snapshot_free(row);
        row = NULL;
    }
    if (!row) /* deleted, or finished by someone else: nothing to do */
        return job_finish(r, job, NULL, NULL, 0, NULL);

    e = blockmap_load(r->store, map_id, &map);
    if (e < 0) {
        snprintf(why, sizeof(why), "%s", error_message() ? error_message() : strerror(-e));
        e = error_set(e, "cannot read the block map %s captured from volume '%s': %s",
                      digest_to_hex(map_id, hex), job->source_id, why);
    }
    if (e >= 0)
        e = verify_new_chunks(r, job, row, map, stop, chunk_delay_us);
    if (e >= 0) {
        e = store_lock(r->store, false, LOCK_TIMEOUT_MS);
        if (e >= 0) {
            e = job_finish(r, job, row, map_id, 0, NULL);
            store_unlock(r->store);
        }
        goto out; /* done, or the registry or a gc: try again later */
    }
    if (e == -ECANCELED || e == -EBUSY)
        goto out;
    snprintf(why, sizeof(why), "%s", error_message() ? error_message() : strerror(-e));
    f = job_finish(r, job, row, NULL, e, why);
    e = f < 0 ? f : 1;
    if (f >= 0)
        error_set(EIO, "%s", why); /* for the caller's log */
out:
    blockmap_free(map);
    registry_snapshot_free(row);
    return e;
}

int service_volume_roots(struct region *r, struct digest_map *live)
{
    struct registry_volume **list = NULL;
    size_t n = 0;
    int e;

    e = registry_volume_list(r->reg, &list, &n);
    if (e < 0)
        return e;
    for (size_t i = 0; i < n && e == 0; i++) {
        struct blockmap *m = NULL;
        if (!list[i]->has_base || digest_map_find(live, &list[i]->base_map_id))
            continue;
        e = blockmap_load(r->store, &list[i]->base_map_id, &m);
        if (e < 0) {
            e = error_set(EBADMSG,
                          "cannot mark the chunks of volume '%s': the block map of its "
                          "snapshot is unreadable; run 'kiln fsck'",
                          list[i]->id);
            break;
        }
        digest_map_insert(live, &list[i]->base_map_id, NULL);
        for (size_t j = 0; j < m->n; j++)
            digest_map_insert(live, &m->ext[j].id, NULL);
        blockmap_free(m);
    }
    registry_volume_list_free(list, n);
    return e;
}

int service_volume_sweep_orphans(struct region *r, bool dry_run, uint64_t *ret_removed)
{
    _cleanup_free_ char *vols = xasprintf("%s/volumes", r->dir);
    DIR *d = opendir(vols);
    struct dirent *de;
    uint64_t removed = 0;
    int e = 0;

    if (!d)
        return errno == ENOENT ? 0 : error_set(errno, "cannot list '%s': %m", vols);
    while ((de = readdir(d))) {
        struct registry_volume *row = NULL;
        if (!id_is_valid("vol", de->d_name))
            continue;
        e = registry_volume_get(r->reg, de->d_name, &row);
        registry_volume_free(row);
        if (e == 0)
            continue;
        if (e != -ENOENT)
            break;
        e = 0;
        removed++;
        if (!dry_run) {
            _cleanup_free_ char *dir = service_volume_dir(r, de->d_name);
            remove_volume_dir(dir);
        }
    }
    closedir(d);
    if (e == 0 && ret_removed)
        *ret_removed = removed;
    return e;
}
