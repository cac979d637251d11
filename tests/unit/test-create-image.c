/* CreateImage's service function (service_image_create()) over a real
 * region in a temporary data directory, without a VM: an image imported,
 * a volume created from it as an instance's root volume, written to, then
 * captured
 *   - through the open handle (a running instance: no agent socket, and an
 *     agent socket nobody answers on, both fall back to a crash-consistent
 *     capture),
 *   - closed (a stopped instance),
 * and checked: the image is available with the source image's attributes,
 * one root mapping to the new snapshot with the volume's size, the tags;
 * the snapshot's parent is the volume's snapshot, it reads back what was
 * written, and stores only the changed chunks.  Refusals and failures
 * (bad name, a duplicate name, a volume another handle holds, a failure
 * after the capture) leave no image and no snapshot. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"
#include "registry/images.h"
#include "service/create-image.h"
#include "service/service.h"
#include "volume/volume.h"
#include "service-util.h"
#include "tap.h"

#define OWNER "123456789012"
#define MiB (1024 * 1024ULL)
#define DISK_SIZE (8 * MiB)
#define WRITE_OFF (3 * MiB + 4096)
#define WRITE_LEN (256 * 1024)

static char tmpdir[] = "/tmp/kiln-test-create-image.XXXXXX";

static size_t count_images(struct region *r)
{
    struct image_query q = {.include_deprecated = true, .include_disabled = true};
    struct registry_image **list = NULL;
    char *next = NULL;
    size_t n = 0;
    if (registry_image_list(r->reg, &q, &list, &n, &next) < 0)
        return (size_t)-1;
    registry_image_list_free(list, n);
    free(next);
    return n;
}

/* The snapshot's content equals `want` (DISK_SIZE bytes). */
static bool snapshot_reads(struct region *r, const char *snap, const uint8_t *want)
{
    struct volume *v = NULL;
    uint8_t *buf = malloc(DISK_SIZE);
    bool same = buf && service_volume_open_snapshot(r, snap, &v) == 0 &&
                volume_read(v, buf, DISK_SIZE, 0) == 0 && memcmp(buf, want, DISK_SIZE) == 0;
    if (v)
        volume_close(v);
    free(buf);
    return same;
}

static bool has_tag(struct region *r, const char *id, const char *key, const char *value)
{
    struct registry_tag *tags = NULL;
    size_t n = 0;
    bool found = false;
    if (registry_tag_list(r->reg, id, &tags, &n) < 0)
        return false;
    for (size_t i = 0; i < n; i++)
        found |= strcmp(tags[i].key, key) == 0 && strcmp(tags[i].value, value) == 0;
    registry_tag_list_free(tags, n);
    return found;
}

/* Check the image CreateImage registered for `res`. */
static void check_image(struct region *r, const struct service_image_create_result *res,
                        const char *name, const struct registry_snapshot *base,
                        const uint8_t *want)
{
    struct registry_image *img = NULL;
    struct registry_snapshot *s = NULL;

    is_int(registry_image_get(r->reg, res->image_id, &img), 0, "%s: the image is registered",
           name);
    ok(img && img->state == IMAGE_AVAILABLE && strcmp(img->name, name) == 0 &&
           strcmp(img->owner, OWNER) == 0,
       "%s: available, its name, the instance's owner", name);
    ok(img && strcmp(img->architecture, "x86_64") == 0 && img->boot_mode &&
           strcmp(img->boot_mode, "uefi") == 0 && strcmp(img->virtualization_type, "hvm") == 0 &&
           img->ena_support && strcmp(img->root_device_name, "/dev/xvda") == 0 &&
           strcmp(img->root_device_type, "ebs") == 0,
       "%s: the source image's architecture, boot mode, virtualization, ENA, root device",
       name);
    ok(img && img->n_devices == 1 && strcmp(img->devices[0].device_name, "/dev/xvda") == 0 &&
           strcmp(img->devices[0].snapshot_id, res->snapshot_id) == 0 &&
           img->devices[0].volume_size_gib == 1 && img->devices[0].delete_on_termination,
       "%s: one root mapping to the new snapshot, the volume's size", name);
    is_int(registry_snapshot_get(r->reg, res->snapshot_id, &s), 0, "%s: the snapshot exists",
           name);
    ok(s && s->state == SNAPSHOT_COMPLETED && strcmp(s->parent_id, base->id) == 0 &&
           strcmp(s->owner, OWNER) == 0 && s->description &&
           strstr(s->description, res->image_id) && strstr(s->description, "i-0123456789abcdef0"),
       "%s: completed, its parent is the volume's snapshot, described as CreateImage's", name);
    ok(snapshot_reads(r, res->snapshot_id, want), "%s: the snapshot holds what was written",
       name);
    ok(res->bytes_new < DISK_SIZE / 2,
       "%s: only changed chunks were stored (%llu new bytes of %llu)", name,
       (unsigned long long)res->bytes_new, (unsigned long long)DISK_SIZE);
    registry_snapshot_free(s);
    registry_image_free(img);
}

int main(void)
{
    struct region *r = NULL;
    struct service_image_import_options io = {
        .name = "source image", .owner = OWNER, .boot_mode = "uefi", .format = IMAGE_FORMAT_RAW};
    struct service_volume_create_options co = {.owner = OWNER};
    struct registry_instance in = {.state = INSTANCE_RUNNING, .http_hop_limit = 1};
    struct registry_snapshot *base = NULL;
    struct registry_tag itags[] = {{(char *)"Name", (char *)"captured"}};
    struct registry_tag stags[] = {{(char *)"made-by", (char *)"create-image"}};
    struct service_image_create_options o = {
        .name = "captured running", .description = "a test capture",
        .image_tags = itags, .n_image_tags = 1, .snapshot_tags = stags, .n_snapshot_tags = 1,
        .agent_hello_ms = 500};
    struct service_image_create_result res = {{0}}, res2 = {{0}}, res3 = {{0}};
    struct volume *v = NULL;
    char path[512], ami[ID_MAX_SIZE], sid[ID_MAX_SIZE], vid[ID_MAX_SIZE], sock[600], cmd[600];
    uint8_t *data = malloc(DISK_SIZE), *pattern = malloc(WRITE_LEN);
    size_t snaps, images;
    int lfd;

    if (!mkdtemp(tmpdir) || !data || !pattern) {
        perror("setup");
        return 1;
    }
    for (size_t i = 0; i < WRITE_LEN; i++)
        pattern[i] = (uint8_t)(i * 13 + i / 4096);
    snprintf(path, sizeof(path), "%s/disk.raw", tmpdir);
    test_fill(data, DISK_SIZE, 5);
    ok(test_disk_write(path, data, DISK_SIZE) == 0, "wrote a test disk");
    is_int(region_open(tmpdir, "us-east-1", false, &r), 0, "opened a region");
    is_int(service_image_import(r, path, &io, ami, sid), 0, "imported an image (uefi)");
    is_int(registry_snapshot_get(r->reg, sid, &base), 0, "its snapshot");
    co.snapshot_id = sid;
    is_int(service_volume_create(r, &co, vid), 0, "created the instance's root volume");

    snprintf(in.id, sizeof(in.id), "i-0123456789abcdef0");
    snprintf(in.owner, sizeof(in.owner), OWNER);
    snprintf(in.image_id, sizeof(in.image_id), "%s", ami);
    snprintf(in.root_device_name, sizeof(in.root_device_name), "/dev/xvda");
    snprintf(in.root_volume_id, sizeof(in.root_volume_id), "%s", vid);

    /* ---- running: through the open handle ---- */
    is_int(service_volume_open(r, vid, 0, &v), 0, "opened the volume for writing (the manager)");
    ok(v && volume_write(v, pattern, WRITE_LEN, WRITE_OFF, false) == 0,
       "the instance wrote 256 KiB");
    memcpy(data + WRITE_OFF, pattern, WRITE_LEN);
    is_int(service_image_create(r, &in, v, NULL, &o, &res), 0,
           "CreateImage through the open handle (no agent)");
    ok(!res.frozen, "no agent: not frozen");
    ok(res.bytes_new >= WRITE_LEN, "the written blocks were stored (%llu bytes)",
       (unsigned long long)res.bytes_new);
    check_image(r, &res, "captured running", base, data);
    ok(has_tag(r, res.image_id, "Name", "captured"), "the image has its tag");
    ok(has_tag(r, res.snapshot_id, "made-by", "create-image"), "the snapshot has its tag");

    /* An agent socket on which nobody answers: the capture goes on. */
    snprintf(sock, sizeof(sock), "%s/agent.sock", tmpdir);
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(sock) < sizeof(sa.sun_path))
            memcpy(sa.sun_path, sock, strlen(sock) + 1);
        ok(lfd >= 0 && bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(lfd, 4) == 0,
           "a socket where no agent answers");
    }
    pattern[0] ^= 0xff;
    ok(volume_write(v, pattern, 4096, WRITE_OFF, false) == 0, "the instance wrote again");
    memcpy(data + WRITE_OFF, pattern, 4096);
    o.name = "captured silent agent";
    is_int(service_image_create(r, &in, v, sock, &o, &res2), 0,
           "CreateImage with an agent that does not answer");
    ok(!res2.frozen, "not frozen");
    check_image(r, &res2, "captured silent agent", base, data);
    close(lfd);

    /* ---- refusals and failures leave nothing ---- */
    snaps = test_count_snapshots(r);
    images = count_images(r);
    o.name = "captured running";
    is_int(service_image_create(r, &in, v, NULL, &o, &res3), -EEXIST, "a duplicate name: EEXIST");
    o.name = "no";
    is_int(service_image_create(r, &in, v, NULL, &o, &res3), -EINVAL, "a bad name: EINVAL");
    o.name = "bad tag";
    struct registry_tag empty[] = {{(char *)"", (char *)"x"}};
    o.image_tags = empty;
    is_int(service_image_create(r, &in, v, NULL, &o, &res3), -EINVAL,
           "an image tag the registry refuses (after the capture): EINVAL");
    o.image_tags = itags;
    o.snapshot_tags = empty;
    is_int(service_image_create(r, &in, v, NULL, &o, &res3), -EINVAL,
           "a snapshot tag the registry refuses (after the capture): EINVAL");
    o.snapshot_tags = stags;
    struct registry_instance none = in;
    none.root_volume_id[0] = 0;
    o.name = "no root";
    is_int(service_image_create(r, &none, NULL, NULL, &o, &res3), -EINVAL,
           "an instance without a root volume: EINVAL");
    /* Stopped, but the volume is open for writing elsewhere. */
    o.name = "held elsewhere";
    is_int(service_image_create(r, &in, NULL, NULL, &o, &res3), -EBUSY,
           "the closed path while another handle writes: EBUSY");
    is_int(test_count_snapshots(r), snaps, "no snapshot left by the failures");
    is_int(count_images(r), images, "no image left by the failures");

    /* ---- stopped: the closed volume ---- */
    is_int(volume_close(v), 0, "the instance stopped (volume closed)");
    v = NULL;
    in.state = INSTANCE_STOPPED;
    o.name = "captured stopped";
    is_int(service_image_create(r, &in, NULL, NULL, &o, &res3), 0,
           "CreateImage of the stopped instance");
    check_image(r, &res3, "captured stopped", base, data);

    /* A source image that is gone: an imported image's defaults. */
    is_int(registry_image_delete(r->reg, ami), 0, "the source image row is removed");
    o.name = "orphan";
    memset(&res3, 0, sizeof(res3));
    is_int(service_image_create(r, &in, NULL, NULL, &o, &res3), 0,
           "CreateImage whose source image is gone");
    {
        struct registry_image *img = NULL;
        is_int(registry_image_get(r->reg, res3.image_id, &img), 0, "registered");
        ok(img && !img->boot_mode && strcmp(img->architecture, "x86_64") == 0,
           "defaults: x86_64, no boot mode");
        registry_image_free(img);
    }

    /* The read-only region refuses. */
    struct region *ro = NULL;
    is_int(region_open(tmpdir, "us-east-1", true, &ro), 0, "the region read-only");
    o.name = "read only";
    is_int(service_image_create(ro, &in, NULL, NULL, &o, &res3), -EROFS, "read-only: EROFS");
    region_free(ro);

    registry_snapshot_free(base);
    region_free(r);
    free(data);
    free(pattern);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "# could not remove %s\n", tmpdir);
    return done_testing();
}
