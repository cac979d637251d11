/* Copies between regions of a temporary data directory, accepted by
 * service_*_copy_start() and run by service_job_run() as `kiln serve`'s job
 * runner does: the rows are pending until the job runs; the copy reads
 * back identical; a second copy writes no chunk; a stopped job stays
 * pending and resumes; the source may be deleted (and gc run) while a copy
 * is pending; a corrupt source chunk or a vanished source region fails the
 * copy visibly (snapshot `error`, image `failed` with a reason) and leaves
 * no job behind. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "registry/images.h"
#include "registry/jobs.h"
#include "service/service.h"
#include "service-util.h"
#include "tap.h"

#define OWNER "123456789012"
#define DISK_SIZE (3u << 20)

static char tmpdir[] = "/tmp/kiln-test-copy.XXXXXX";

static int write_disk(const char *path, uint8_t *data)
{
    test_fill(data, DISK_SIZE, 7);
    memset(data + DISK_SIZE / 2, 0, 64 * 1024); /* a hole */
    return test_disk_write(path, data, DISK_SIZE);
}

/* Accept a copy and run its job. */
static int copy_snapshot(struct region *src, const char *sid, struct region *dst,
                         const char *desc, char id[ID_MAX_SIZE], struct copy_stats *st)
{
    struct service_snapshot_copy_options o = {.owner = OWNER, .description = desc};
    int e = service_snapshot_copy_start(src, sid, dst, &o, id);

    memset(st, 0, sizeof(*st));
    return e < 0 ? e : service_job_run(dst, id, NULL, 0, st);
}

static int copy_image(struct region *src, const char *iid, struct region *dst,
                      const struct service_image_copy_options *o, char id[ID_MAX_SIZE],
                      struct copy_stats *st)
{
    int e = service_image_copy_start(src, iid, dst, o, id);

    memset(st, 0, sizeof(*st));
    return e < 0 ? e : service_job_run(dst, id, NULL, 0, st);
}

static bool job_exists(struct region *r, const char *id)
{
    struct registry_job *j = NULL;
    int e = registry_job_get(r->reg, id, &j);

    registry_job_free(j);
    return e == 0;
}

static int snapshot_state(struct region *r, const char *id)
{
    struct registry_snapshot *row = NULL;
    int e = registry_snapshot_get(r->reg, id, &row);

    if (e == 0)
        e = (int)row->state;
    registry_snapshot_free(row);
    return e;
}

/* Register an available one-device image `id` named `name` (x86_64, hvm,
 * ebs) whose root device `device` maps snapshot `sid`, owned by OWNER. */
static int register_image(struct region *r, const char *id, const char *name, const char *device,
                          const char *sid)
{
    struct registry_image_device dev = {.device_name = (char *)device};
    struct registry_image img = {
        .owner = OWNER,
        .name = (char *)name,
        .architecture = (char *)"x86_64",
        .root_device_name = (char *)device,
        .root_device_type = (char *)"ebs",
        .virtualization_type = (char *)"hvm",
        .state = IMAGE_AVAILABLE,
        .creation_date = 1,
        .devices = &dev,
        .n_devices = 1,
    };

    snprintf(img.id, sizeof(img.id), "%s", id);
    snprintf(dev.snapshot_id, sizeof(dev.snapshot_id), "%s", sid);
    return registry_image_insert(r->reg, &img, NULL, 0);
}

int main(void)
{
    struct region *east = NULL, *west = NULL, *north = NULL;
    struct service_import_options io = {.owner = OWNER, .format = IMAGE_FORMAT_RAW};
    struct import_stats ist;
    struct copy_stats st;
    struct blockmap *m = NULL, *m2 = NULL;
    struct registry_snapshot *row = NULL;
    struct registry_image *img = NULL;
    char path[512], sid[ID_MAX_SIZE], copy[ID_MAX_SIZE], copy2[ID_MAX_SIZE];
    char ami[ID_MAX_SIZE], hex[DIGEST_HEX_SIZE], cmd[600];
    uint8_t *data = malloc(DISK_SIZE), *back = malloc(DISK_SIZE);
    int e;

    if (!mkdtemp(tmpdir) || !data || !back) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/disk.raw", tmpdir);
    ok(write_disk(path, data) == 0, "wrote a test disk");
    ok(region_open(tmpdir, "us-east-1", false, &east) == 0, "opened us-east-1");
    ok(region_open(tmpdir, "us-west-2", false, &west) == 0, "opened us-west-2");
    ok(region_open(tmpdir, "eu-north-1", false, &north) == 0, "opened eu-north-1");
    e = service_snapshot_import(east, path, &io, sid, &ist);
    is_int(e, 0, "imported a snapshot into us-east-1");

    /* Snapshot copy: everything moves the first time. */
    e = copy_snapshot(east, sid, west, "copied", copy, &st);
    is_int(e, 0, "copied the snapshot to us-west-2");
    ok(strcmp(copy, sid) != 0, "the copy has a new id");
    ok(st.chunks_copied > 0 && st.chunks_copied == ist.chunks_new, "every chunk was copied (%llu)",
       (unsigned long long)st.chunks_copied);
    is_int(st.chunks_present, 0, "none was present");
    e = service_snapshot_get(west, copy, &row, &m);
    is_int(e, 0, "the copy is registered with its map");
    if (e == 0) {
        is_int(row->state, SNAPSHOT_COMPLETED, "completed");
        is_int(row->volume_size, DISK_SIZE, "same volume size");
        is_str(row->description, "copied", "description set");
        is_str(row->parent_id, "", "no parent");
        is_int(snapshot_read(west->store, m, back, DISK_SIZE, 0), 0, "read the copy back");
        ok(memcmp(back, data, DISK_SIZE) == 0, "the copy reads back identical");
    }
    registry_snapshot_free(row);
    blockmap_free(m);

    /* A second copy writes nothing. */
    e = copy_snapshot(east, sid, west, NULL, copy2, &st);
    is_int(e, 0, "copied again");
    is_int(st.chunks_copied, 0, "no chunk copied the second time");
    ok(st.chunks_present > 0, "every chunk was present");

    /* An image copy maps a new snapshot and records its source. */
    {
        const char *src_id = "ami-0123456789abcdef0";
        struct service_image_copy_options o = {.owner = OWNER, .name = "copied-image"};
        is_int(register_image(east, src_id, "source-image", "/dev/xvda", sid), 0,
               "registered a source image");
        e = service_image_copy_start(east, src_id, west, &o, ami);
        is_int(e, 0, "accepted the image copy");
        e = copy_image(east, src_id, west, &o, copy, &st);
        is_int(e, -EEXIST, "a second copy under the same name is -EEXIST at once");
        e = registry_image_get(west->reg, ami, &img);
        ok(e == 0 && img->state == IMAGE_PENDING && img->n_devices == 1 &&
               snapshot_state(west, img->devices[0].snapshot_id) == SNAPSHOT_PENDING,
           "the image and its snapshot are pending until the job runs");
        registry_image_free(img);
        img = NULL;
        ok(job_exists(west, ami), "a job is recorded");
        e = service_job_run(west, ami, NULL, 0, &st);
        is_int(e, 0, "ran the image copy job");
        ok(!job_exists(west, ami), "the job is gone once done");
        is_int(st.chunks_copied, 0, "the image copy wrote no chunk");
        e = registry_image_get(west->reg, ami, &img);
        is_int(e, 0, "the image copy is registered");
        if (e == 0) {
            is_str(img->source_image_id, src_id, "source image id recorded");
            is_str(img->source_region, "us-east-1", "source region recorded");
            is_int(img->state, IMAGE_AVAILABLE, "available");
            ok(img->n_devices == 1 && strcmp(img->devices[0].snapshot_id, sid) != 0 &&
                   service_snapshot_get(west, img->devices[0].snapshot_id, NULL, NULL) == 0,
               "maps a new snapshot of us-west-2");
        }
        registry_image_free(img);
        e = service_image_copy_start(east, src_id, west, &o, copy);
        is_int(e, -EEXIST, "the same name again is -EEXIST");

        /* A stopped job stays pending with its job row, and resumes. */
        {
            atomic_bool stop;
            struct service_image_copy_options o2 = {.owner = OWNER, .name = "stopped-copy"};
            atomic_init(&stop, true);
            e = service_image_copy_start(east, src_id, north, &o2, ami);
            is_int(e, 0, "accepted a copy into eu-north-1");
            e = service_job_run(north, ami, &stop, 0, &st);
            is_int(e, -ECANCELED, "a stopped job returns -ECANCELED");
            e = registry_image_get(north->reg, ami, &img);
            ok(e == 0 && img->state == IMAGE_PENDING && job_exists(north, ami),
               "it stays pending with its job");
            registry_image_free(img);
            img = NULL;
            e = service_job_run(north, ami, NULL, 0, &st);
            is_int(e, 0, "the job runs again");
            e = registry_image_get(north->reg, ami, &img);
            ok(e == 0 && img->state == IMAGE_AVAILABLE && !job_exists(north, ami),
               "and the image is available");
            registry_image_free(img);
            img = NULL;
        }
    }

    /* The source may be deleted while a copy is pending: the job reads the
     * map it recorded, and gc in the source region keeps that map and its
     * chunks (job roots) until the job is done. */
    {
        struct region *sa = NULL, *ca = NULL;
        struct gc_report rep;
        char sa_sid[ID_MAX_SIZE], ca_sid[ID_MAX_SIZE];
        ok(region_open(tmpdir, "sa-east-1", false, &sa) == 0 &&
               region_open(tmpdir, "ca-central-1", false, &ca) == 0,
           "opened sa-east-1 and ca-central-1");
        e = service_snapshot_import(sa, path, &io, sa_sid, &ist);
        is_int(e, 0, "imported a snapshot into sa-east-1");
        {
            struct service_snapshot_copy_options o = {.owner = OWNER};
            e = service_snapshot_copy_start(sa, sa_sid, ca, &o, ca_sid);
        }
        is_int(e, 0, "accepted a copy to ca-central-1");
        is_int(snapshot_state(ca, ca_sid), SNAPSHOT_PENDING, "the copy is pending");
        is_int(service_snapshot_delete(sa, sa_sid), 0, "deleted the source snapshot");
        e = service_gc(sa, false, 0, &rep);
        is_int(e, 0, "gc in the source region");
        is_int(rep.chunks_freed, 0, "gc kept the chunks the pending copy reads");
        e = service_job_run(ca, ca_sid, NULL, 0, &st);
        is_int(e, 0, "the copy of a deleted source completes");
        ok(st.chunks_copied > 0, "its chunks came from the source (%llu)",
           (unsigned long long)st.chunks_copied);
        e = service_snapshot_get(ca, ca_sid, &row, &m);
        ok(e == 0 && row->state == SNAPSHOT_COMPLETED &&
               snapshot_read(ca->store, m, back, DISK_SIZE, 0) == 0 &&
               memcmp(back, data, DISK_SIZE) == 0,
           "and reads back identical");
        registry_snapshot_free(row);
        row = NULL;
        blockmap_free(m);
        m = NULL;
        e = service_gc(sa, false, 0, &rep);
        ok(e == 0 && rep.chunks_freed > 0, "with the job done, gc frees the source's chunks");

        /* A source region that vanished fails the copy cleanly. */
        e = service_snapshot_import(sa, path, &io, sa_sid, &ist);
        is_int(e, 0, "imported again into sa-east-1");
        {
            const char *src2_id = "ami-00000000000000aa1";
            struct service_image_copy_options o = {.owner = OWNER, .name = "of-vanishing"};
            is_int(register_image(sa, src2_id, "vanishing", "/dev/sda1", sa_sid), 0,
                   "registered an image");
            e = service_image_copy_start(sa, src2_id, ca, &o, ami);
            is_int(e, 0, "accepted its copy");
        }
        region_free(sa);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s/regions/sa-east-1'", tmpdir);
        ok(system(cmd) == 0, "removed the source region");
        e = service_job_run(ca, ami, NULL, 0, &st);
        is_int(e, 1, "the copy fails");
        e = registry_image_get(ca->reg, ami, &img);
        ok(e == 0 && img->state == IMAGE_FAILED && img->state_reason_code &&
               img->state_reason_message && strstr(img->state_reason_message, "sa-east-1"),
           "the image is failed with a reason: %s: %s",
           img && img->state_reason_code ? img->state_reason_code : "",
           img && img->state_reason_message ? img->state_reason_message : "");
        if (e == 0)
            is_int(snapshot_state(ca, img->devices[0].snapshot_id), SNAPSHOT_ERROR,
                   "its snapshot is in error");
        registry_image_free(img);
        img = NULL;
        ok(!job_exists(ca, ami), "no job left behind");
        region_free(ca);
    }

    /* Corrupt a source chunk: a copy into a region lacking it fails. */
    e = service_snapshot_get(east, sid, NULL, &m2);
    is_int(e, 0, "loaded the source map");
    if (e == 0 && m2->n > 0) {
        int fd;
        digest_to_hex(&m2->ext[0].id, hex);
        snprintf(cmd, sizeof(cmd), "%s/regions/us-east-1/store/chunks/%.2s/%s", tmpdir, hex, hex);
        fd = open(cmd, O_WRONLY);
        ok(fd >= 0 && pwrite(fd, "garbage!", 8, 40) == 8 && close(fd) == 0, "damaged chunk %.12s",
           hex);
        {
            struct region *fresh = NULL;
            struct registry_snapshot *bad = NULL;
            ok(region_open(tmpdir, "ap-south-1", false, &fresh) == 0, "opened ap-south-1");
            e = copy_snapshot(east, sid, fresh, NULL, copy, &st);
            is_int(e, 1, "copying a corrupt chunk fails the job");
            e = registry_snapshot_get(fresh->reg, copy, &bad);
            ok(e == 0 && bad->state == SNAPSHOT_ERROR && !bad->has_map && bad->state_message &&
                   strstr(bad->state_message, "corrupt") && strstr(bad->state_message, hex),
               "the copy is in error, its message names the chunk: %s",
               bad && bad->state_message ? bad->state_message : "");
            ok(!job_exists(fresh, copy), "no job left behind");
            is_int(test_count_snapshots(fresh), 1, "one snapshot registered, in error");
            registry_snapshot_free(bad);
            region_free(fresh);
        }
        /* us-west-2 already has every chunk: its copy does not read them. */
        e = copy_snapshot(east, sid, west, NULL, copy, &st);
        is_int(e, 0, "a destination that has the chunks still copies");
    }
    blockmap_free(m2);

    region_free(east);
    region_free(west);
    region_free(north);
    free(data);
    free(back);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        return 1;
    return done_testing();
}
