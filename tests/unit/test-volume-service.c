/* Volumes through the service layer over a real region in a temporary
 * data directory: create from a snapshot (nothing copied) and blank,
 * grow, open, CreateSnapshot (incremental, parent, pending then completed,
 * the same work on a 2 GiB and a 20 GiB volume), gc keeping a deleted
 * snapshot's chunks while a volume reads them, delete (refused while the
 * volume is open elsewhere), orphan directories swept by gc, and bad
 * requests refused with nothing created. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"
#include "registry/jobs.h"
#include "service/service.h"
#include "volume/volume.h"
#include "service-util.h"
#include "tap.h"

#define OWNER "123456789012"
#define MiB (1024 * 1024ULL)
#define GiB (1024 * MiB)
#define DISK_SIZE (6 * MiB)

static char tmpdir[] = "/tmp/kiln-test-volume-service.XXXXXX";

static size_t count_volumes(struct region *r)
{
    struct registry_volume **list = NULL;
    size_t n = 0;
    if (registry_volume_list(r->reg, &list, &n) < 0)
        return (size_t)-1;
    registry_volume_list_free(list, n);
    return n;
}

static bool dir_exists(struct region *r, const char *id)
{
    char *d = service_volume_dir(r, id);
    struct stat st;
    bool there = stat(d, &st) == 0;
    free(d);
    return there;
}

/* Write the same pattern into a volume and snapshot it. */
static int write_and_snapshot(struct region *r, const char *vol, const uint8_t *pattern,
                              struct volume_snapshot_stats *st, char snap[ID_MAX_SIZE])
{
    struct volume *v = NULL;
    int e = service_volume_open(r, vol, 0, &v);
    for (int i = 0; e == 0 && i < 16; i++)
        e = volume_write(v, pattern + i * 65536, 65536, (uint64_t)i * 3 * MiB + 4096, false);
    if (e == 0)
        e = volume_close(v);
    else
        volume_close(v);
    if (e == 0)
        e = service_volume_snapshot(r, vol, NULL, snap, st);
    return e;
}

int main(void)
{
    struct region *r = NULL;
    struct service_import_options io = {.owner = OWNER, .format = IMAGE_FORMAT_RAW};
    struct service_volume_create_options co = {.owner = OWNER};
    struct import_stats ist;
    struct registry_volume *row = NULL;
    struct registry_snapshot *srow = NULL;
    struct volume *v = NULL, *v2 = NULL;
    struct volume_snapshot_stats st, st2;
    struct blockmap *m = NULL;
    struct gc_report gr;
    char path[512], sid[ID_MAX_SIZE], vid[ID_MAX_SIZE], vid2[ID_MAX_SIZE], snap[ID_MAX_SIZE];
    char snap2[ID_MAX_SIZE], blank[ID_MAX_SIZE], cmd[600];
    uint8_t *data = malloc(DISK_SIZE), *buf = malloc(DISK_SIZE), *pattern = malloc(16 * 65536);
    int e;

    if (!mkdtemp(tmpdir) || !data || !buf || !pattern) {
        perror("setup");
        return 1;
    }
    for (size_t i = 0; i < 16 * 65536; i++)
        pattern[i] = (uint8_t)(i * 7 + i / 4096);
    snprintf(path, sizeof(path), "%s/disk.raw", tmpdir);
    test_fill(data, DISK_SIZE, 11);
    ok(test_disk_write(path, data, DISK_SIZE) == 0, "wrote a test disk");
    is_int(region_open(tmpdir, "us-east-1", false, &r), 0, "opened a region");
    is_int(service_snapshot_import(r, path, &io, sid, &ist), 0, "imported a snapshot");

    /* ---- create ---- */
    co.snapshot_id = sid;
    is_int(service_volume_create(r, &co, vid), 0, "created a volume from the snapshot");
    is_int(service_volume_get(r, vid, &row), 0, "its row");
    ok(row && row->size_gib == 1 && row->state == VOLUME_AVAILABLE &&
           strcmp(row->snapshot_id, sid) == 0 && strcmp(row->availability_zone, "us-east-1a") == 0 &&
           row->iops == 3000 && row->throughput == 125 && strcmp(row->volume_type, "gp3") == 0,
       "1 GiB (the snapshot's size rounded up), available, gp3 defaults, zone us-east-1a");
    registry_volume_free(row);
    row = NULL;
    ok(dir_exists(r, vid), "its directory exists");
    is_int(service_volume_open(r, vid, 0, &v), 0, "opened it");
    struct volume_stats vs;
    volume_stats(v, &vs);
    is_int(vs.bytes_fetched, 0, "opening fetched nothing");
    ok(volume_read(v, buf, DISK_SIZE, 0) == 0 && memcmp(buf, data, DISK_SIZE) == 0,
       "it reads the snapshot");
    is_int(service_volume_delete(r, vid), -EBUSY, "delete while it is open: EBUSY");
    is_int(service_volume_snapshot(r, vid, NULL, snap, &st), -EBUSY,
           "snapshot through another handle while it is open: EBUSY");
    volume_close(v);
    v = NULL;

    /* Refusals create nothing. */
    size_t before = count_volumes(r);
    struct service_volume_create_options bad = co;
    bad.size_gib = 16385;
    is_int(service_volume_create(r, &bad, vid2), -EINVAL, "16385 GiB: EINVAL");
    bad = co;
    bad.availability_zone = "us-west-2a";
    is_int(service_volume_create(r, &bad, vid2), -EINVAL, "another region's zone: EINVAL");
    bad = co;
    bad.snapshot_id = "snap-0123456789abcdef0";
    is_int(service_volume_create(r, &bad, vid2), -ENOENT, "an unknown snapshot: ENOENT");
    bad = co;
    bad.snapshot_id = NULL;
    is_int(service_volume_create(r, &bad, vid2), -EINVAL, "a blank volume without a size: EINVAL");
    bad = co;
    bad.volume_type = "io2";
    is_int(service_volume_create(r, &bad, vid2), -EINVAL, "io2: EINVAL");
    is_int(count_volumes(r), before, "no row was created");

    /* ---- grow ---- */
    is_int(service_volume_grow(r, vid, 2), 0, "grew it to 2 GiB");
    is_int(service_volume_grow(r, vid, 1), -EINVAL, "shrinking: EINVAL");
    is_int(service_volume_open(r, vid, 0, &v), 0, "reopened");
    is_int(volume_size(v), 2 * GiB, "it is 2 GiB");
    ok(volume_read(v, buf, 65536, 2 * GiB - 65536) == 0 && buf_is_zero(buf, 65536),
       "its new end reads zeros");
    volume_close(v);
    v = NULL;

    /* ---- CreateSnapshot: the same work at 2 GiB and at 20 GiB ---- */
    co.size_gib = 20;
    is_int(service_volume_create(r, &co, vid2), 0, "a 20 GiB volume of the same snapshot");
    e = write_and_snapshot(r, vid, pattern, &st, snap);
    is_int(e, 0, "wrote 1 MiB to the 2 GiB volume and snapshotted it");
    e = write_and_snapshot(r, vid2, pattern, &st2, snap2);
    is_int(e, 0, "the same to the 20 GiB volume");
    ok(st.bytes_read == st2.bytes_read && st.chunks == st2.chunks &&
           st.chunks_shared == st2.chunks_shared && st.blocks_dirty == st2.blocks_dirty,
       "the same work: %llu bytes read, %llu extents, %llu shared on both",
       (unsigned long long)st.bytes_read, (unsigned long long)st.chunks,
       (unsigned long long)st.chunks_shared);
    ok(st.bytes_read < 4 * MiB, "only what was written and the chunks it split were read");
    is_int(service_snapshot_get(r, snap, &srow, &m), 0, "the snapshot is registered");
    ok(srow && srow->state == SNAPSHOT_COMPLETED && srow->progress == 100 &&
           strcmp(srow->parent_id, sid) == 0 && srow->volume_size == 2 * GiB &&
           srow->volume_size_gib == 2 && strcmp(srow->owner, OWNER) == 0,
       "completed, 100%%, parent is the volume's snapshot, 2 GiB");
    registry_snapshot_free(srow);
    srow = NULL;
    memcpy(buf, data, DISK_SIZE);
    for (int i = 0; i < 16; i++)
        if ((uint64_t)i * 3 * MiB + 4096 + 65536 <= DISK_SIZE)
            memcpy(buf + i * 3 * MiB + 4096, pattern + i * 65536, 65536);
    uint8_t *back = malloc(DISK_SIZE);
    ok(back && m && snapshot_read(r->store, m, back, DISK_SIZE, 0) == 0 &&
           memcmp(back, buf, DISK_SIZE) == 0,
       "snapshot_read() of it shows the writes over the snapshot");
    ok(m && snapshot_read(r->store, m, back, 65536, 15 * 3 * MiB + 4096) == 0 &&
           memcmp(back, pattern + 15 * 65536, 65536) == 0,
       "including past the snapshot's end");
    blockmap_free(m);
    m = NULL;

    /* A snapshot view serves the new snapshot. */
    is_int(service_volume_open_snapshot(r, snap, &v), 0, "a view of the new snapshot");
    ok(v && volume_size(v) == 2 * GiB && volume_read(v, back, DISK_SIZE, 0) == 0 &&
           memcmp(back, buf, DISK_SIZE) == 0,
       "reads the same");
    volume_close(v);
    v = NULL;

    /* ---- gc keeps what volumes read ---- */
    is_int(service_snapshot_delete(r, sid), 0, "deleted the volumes' snapshot");
    ok(service_snapshot_delete(r, snap) == 0 && service_snapshot_delete(r, snap2) == 0,
       "and the two snapshots that share its chunks");
    is_int(service_gc(r, false, 0, &gr), 0, "gc with no grace period");
    is_int(service_volume_open(r, vid2, 0, &v), 0, "the 20 GiB volume opens");
    ok(v && volume_read(v, back, DISK_SIZE, 0) == 0, "and reads");
    volume_close(v);
    v = NULL;
    /* The cache may have served that read: ask the store itself. */
    is_int(service_volume_get(r, vid2, &row), 0, "the volume's row");
    size_t missing = 0;
    ok(row && blockmap_load(r->store, &row->base_map_id, &m) == 0, "its base map survived gc");
    for (size_t i = 0; m && i < m->n; i++)
        if (store_has(r->store, STORE_CHUNK, &m->ext[i].id) != 1)
            missing++;
    ok(m && m->n > 0 && missing == 0, "and every one of its %zu chunks", m ? m->n : 0);
    blockmap_free(m);
    m = NULL;
    registry_volume_free(row);
    row = NULL;

    /* ---- blank volumes, delete, orphans ---- */
    struct service_volume_create_options bo = {.owner = OWNER, .size_gib = 1};
    is_int(service_volume_create(r, &bo, blank), 0, "a blank 1 GiB volume");
    is_int(service_volume_open(r, blank, 0, &v), 0, "opened");
    ok(volume_read(v, back, 65536, 0) == 0 && buf_is_zero(back, 65536), "reads zeros");
    is_int(volume_write(v, pattern, 8192, 4096, true), 0, "a write with fua");
    volume_close(v);
    v = NULL;
    is_int(service_volume_snapshot(r, blank, NULL, snap, &st), 0, "snapshot of the blank volume");
    ok(st.chunks == st.chunks_new || st.chunks >= 1, "its chunks are what was written");
    is_int(service_snapshot_get(r, snap, &srow, NULL), 0, "registered");
    ok(srow && srow->parent_id[0] == '\0', "without a parent");
    registry_snapshot_free(srow);

    is_int(service_volume_delete(r, blank), 0, "deleted the blank volume");
    ok(!dir_exists(r, blank), "its directory is gone");
    is_int(service_volume_delete(r, blank), -ENOENT, "again: ENOENT");
    snprintf(cmd, sizeof(cmd), "mkdir -p %s/regions/us-east-1/volumes/vol-00000000000000000", tmpdir);
    ok(system(cmd) == 0, "a directory without a row (an interrupted delete)");
    memset(&gr, 0, sizeof(gr));
    is_int(service_gc(r, false, 0, &gr), 0, "gc");
    is_int(gr.volume_dirs_freed, 1, "removed it");
    ok(!dir_exists(r, "vol-00000000000000000"), "it is gone");
    ok(dir_exists(r, vid) && dir_exists(r, vid2), "the volumes' directories are not");

    /* ---- CreateSnapshot as a job (service_volume_snapshot_start()) ---- */
    {
        struct service_volume_create_options jo = {.owner = OWNER, .size_gib = 1};
        struct registry_job *job = NULL;
        struct blockmap *jm = NULL;
        struct volume *view = NULL;
        char jv[ID_MAX_SIZE], js[ID_MAX_SIZE], js2[ID_MAX_SIZE];
        atomic_bool stop = true;
        uint8_t *ee = malloc(16 * 65536);

        memset(ee, 0xee, 16 * 65536);
        is_int(service_volume_create(r, &jo, jv), 0, "a volume for snapshot jobs");
        is_int(service_volume_open(r, jv, 0, &v), 0, "opened it");
        is_int(volume_write(v, pattern, 16 * 65536, 0, false), 0, "wrote 1 MiB");
        volume_close(v);
        v = NULL;
        is_int(service_volume_snapshot_start(r, jv, NULL, js), 0, "CreateSnapshot as a job");
        is_int(service_snapshot_get(r, js, &srow, NULL), 0, "its row");
        ok(srow && srow->state == SNAPSHOT_PENDING && !srow->has_map && srow->progress == 0 &&
               strcmp(srow->volume_id, jv) == 0,
           "pending, no map yet, progress 0, the volume's id recorded");
        registry_snapshot_free(srow);
        srow = NULL;
        is_int(registry_job_get(r->reg, js, &job), 0, "its job");
        ok(job && job->kind == JOB_VOLUME_SNAPSHOT && strcmp(job->source_id, jv) == 0 &&
               job->n_items == 1 && strcmp(job->items[0].target_snapshot_id, js) == 0,
           "a volume-snapshot job of that volume");

        /* Writes after the call are not in the snapshot. */
        is_int(service_volume_open(r, jv, 0, &v), 0, "opened the volume again");
        is_int(volume_write(v, ee, 16 * 65536, 0, false), 0, "overwrote the 1 MiB");
        volume_close(v);
        v = NULL;
        memset(&gr, 0, sizeof(gr));
        is_int(service_gc(r, false, 0, &gr), 0, "gc with no grace while the job is pending");
        is_int(service_job_run(r, js, &stop, 0, NULL), -ECANCELED, "a stopped run: ECANCELED");
        is_int(service_snapshot_get(r, js, &srow, NULL), 0, "the row after the stopped run");
        ok(srow && srow->state == SNAPSHOT_PENDING, "still pending");
        registry_snapshot_free(srow);
        srow = NULL;
        is_int(service_job_run(r, js, NULL, 0, NULL), 0, "the job runs to the end");
        is_int(service_snapshot_get(r, js, &srow, NULL), 0, "the row after the job");
        ok(srow && srow->state == SNAPSHOT_COMPLETED && srow->has_map && srow->progress == 100 &&
               srow->completion_time > 0,
           "completed, with its map");
        registry_snapshot_free(srow);
        srow = NULL;
        registry_job_free(job);
        job = NULL;
        is_int(registry_job_get(r->reg, js, &job), -ENOENT, "the job is gone");
        is_int(service_volume_open_snapshot(r, js, &view), 0, "opened the snapshot");
        ok(view && volume_read(view, buf, 16 * 65536, 0) == 0 &&
               memcmp(buf, pattern, 16 * 65536) == 0,
           "it holds the data of the moment of the call, not the later write");
        volume_close(view);

        /* A chunk gone before the job runs: the snapshot is `error`. */
        is_int(service_volume_snapshot_start(r, jv, NULL, js2), 0, "a second snapshot job");
        is_int(registry_job_get(r->reg, js2, &job), 0, "its job");
        is_int(job ? blockmap_load(r->store, &job->items[0].source_map_id, &jm) : -1, 0,
               "its captured map");
        ok(jm && jm->n >= 1 && jm->ext[0].block == 0 &&
               store_remove(r->store, STORE_CHUNK, &jm->ext[0].id) == 0,
           "removed the chunk of the 0xee data");
        is_int(service_job_run(r, js2, NULL, 0, NULL), 1, "the job fails (1: recorded)");
        is_int(service_snapshot_get(r, js2, &srow, NULL), 0, "the failed row");
        ok(srow && srow->state == SNAPSHOT_ERROR && srow->state_message &&
               strstr(srow->state_message, "missing") && strstr(srow->state_message, jv),
           "error, with a StateMessage naming the missing chunk's volume");
        registry_snapshot_free(srow);
        srow = NULL;
        registry_job_free(job);
        job = NULL;
        is_int(registry_job_get(r->reg, js2, &job), -ENOENT, "its job is gone too");
        blockmap_free(jm);
        free(ee);
    }

    (void)v2;
    region_free(r);
    free(data);
    free(buf);
    free(back);
    free(pattern);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        return 1;
    return done_testing();
}
