/* service_snapshot_copy() and service_image_copy() between two regions of a
 * temporary data directory: the copy reads back identical, a second copy
 * writes no chunk, a corrupt source chunk fails the copy with -EBADMSG and
 * registers nothing. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "registry/images.h"
#include "service/service.h"
#include "tap.h"

#define OWNER "123456789012"
#define DISK_SIZE (3u << 20)

static char tmpdir[] = "/tmp/kiln-test-copy.XXXXXX";

static int write_disk(const char *path, uint8_t *data)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    unsigned seed = 7;

    for (size_t i = 0; i < DISK_SIZE; i++) {
        seed = seed * 1103515245u + 12345u;
        data[i] = (uint8_t)(seed >> 16);
    }
    memset(data + DISK_SIZE / 2, 0, 64 * 1024); /* a hole */
    if (fd < 0 || write(fd, data, DISK_SIZE) != (ssize_t)DISK_SIZE)
        return -1;
    return close(fd);
}

static size_t count_snapshots(struct region *r)
{
    struct registry_snapshot **list = NULL;
    size_t n = 0;

    if (registry_snapshot_list(r->reg, &list, &n) < 0)
        return (size_t)-1;
    registry_snapshot_list_free(list, n);
    return n;
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
    e = service_snapshot_copy(east, sid, west, OWNER, "copied", copy, &st);
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
    e = service_snapshot_copy(east, sid, west, OWNER, NULL, copy2, &st);
    is_int(e, 0, "copied again");
    is_int(st.chunks_copied, 0, "no chunk copied the second time");
    ok(st.chunks_present > 0, "every chunk was present");

    /* An image copy maps a new snapshot and records its source. */
    {
        struct registry_image_device dev = {.device_name = (char *)"/dev/xvda"};
        struct registry_image src = {
            .owner = OWNER,
            .name = (char *)"source-image",
            .architecture = (char *)"x86_64",
            .root_device_name = (char *)"/dev/xvda",
            .root_device_type = (char *)"ebs",
            .virtualization_type = (char *)"hvm",
            .state = IMAGE_AVAILABLE,
            .creation_date = 1,
            .devices = &dev,
            .n_devices = 1,
        };
        struct service_image_copy_options o = {.owner = OWNER, .name = "copied-image"};
        snprintf(src.id, sizeof(src.id), "ami-0123456789abcdef0");
        snprintf(dev.snapshot_id, sizeof(dev.snapshot_id), "%s", sid);
        is_int(registry_image_insert(east->reg, &src, NULL, 0), 0, "registered a source image");
        e = service_image_copy(east, src.id, west, &o, ami, &st);
        is_int(e, 0, "copied the image");
        is_int(st.chunks_copied, 0, "the image copy wrote no chunk");
        e = registry_image_get(west->reg, ami, &img);
        is_int(e, 0, "the image copy is registered");
        if (e == 0) {
            is_str(img->source_image_id, src.id, "source image id recorded");
            is_str(img->source_region, "us-east-1", "source region recorded");
            is_int(img->state, IMAGE_AVAILABLE, "available");
            ok(img->n_devices == 1 && strcmp(img->devices[0].snapshot_id, sid) != 0 &&
                   service_snapshot_get(west, img->devices[0].snapshot_id, NULL, NULL) == 0,
               "maps a new snapshot of us-west-2");
        }
        registry_image_free(img);
        e = service_image_copy(east, src.id, west, &o, ami, &st);
        is_int(e, -EEXIST, "the same name again is -EEXIST");
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
        e = service_snapshot_copy(east, sid, north, OWNER, NULL, copy, &st);
        is_int(e, -EBADMSG, "copying a corrupt chunk fails with -EBADMSG");
        ok(error_message() && strstr(error_message(), "corrupt") && strstr(error_message(), hex),
           "the message names the chunk: %s", error_message() ? error_message() : "");
        is_int(count_snapshots(north), 0, "nothing registered in eu-north-1");
        /* us-west-2 already has every chunk: its copy does not read them. */
        e = service_snapshot_copy(east, sid, west, OWNER, NULL, copy, &st);
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
