/* Unit tests for src/registry/images.c: image rows with their block
 * devices, launch permissions and tags; name uniqueness per owner; field
 * validation; the DescribeImages query (ids, owners, executable-by, name
 * wildcards, states, tags, deprecated and disabled images); pagination;
 * and the snapshot-in-use count.  Everything runs on ":memory:".
 */
#include <errno.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "registry/images.h"
#include "registry/registry.h"
#include "tap.h"

#define OWNER_A "111111111111"
#define OWNER_B "222222222222"
#define OWNER_C "333333333333"
#define SNAP_1 "snap-00000000000000001"
#define SNAP_2 "snap-00000000000000002"

static bool message_style_ok(void)
{
    const char *m = error_message();
    size_t n;

    if (!m || !m[0])
        return false;
    n = strlen(m);
    return !(m[0] >= 'A' && m[0] <= 'Z') && m[n - 1] != '.';
}

static void make_id(char *buf, unsigned n)
{
    snprintf(buf, ID_MAX_SIZE, "ami-%017x", n);
}

/* A minimal valid image; strings point at constants (insert copies). */
static struct registry_image base_image(unsigned n, const char *owner, const char *name,
                                        int64_t created)
{
    struct registry_image img = {0};

    make_id(img.id, n);
    snprintf(img.owner, sizeof(img.owner), "%s", owner);
    img.name = (char *)name;
    img.architecture = (char *)"x86_64";
    img.root_device_name = (char *)"/dev/xvda";
    img.root_device_type = (char *)"ebs";
    img.virtualization_type = (char *)"hvm";
    img.state = IMAGE_AVAILABLE;
    img.creation_date = created;
    return img;
}

static int insert(struct registry *reg, unsigned n, const char *owner, const char *name,
                  int64_t created)
{
    struct registry_image img = base_image(n, owner, name, created);

    return registry_image_insert(reg, &img, NULL, 0);
}

static struct registry *open_mem(void)
{
    struct registry *reg = NULL;

    if (registry_open(":memory:", &reg) < 0)
        printf("# registry_open: %s\n", error_message() ? error_message() : "");
    return reg;
}

/* Run a query; return the number of images (or -errno) and the ids
 * joined by spaces in `ids`. */
static int run(struct registry *reg, const struct image_query *q, char *ids, size_t size)
{
    struct registry_image **list = NULL;
    char *next = NULL;
    size_t n = 0, off = 0;
    int r;

    ids[0] = '\0';
    r = registry_image_list(reg, q, &list, &n, &next);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++)
        off += (size_t)snprintf(ids + off, size - off, "%s%s", i ? " " : "",
                                list[i]->id + 4 + 13); /* the last 4 hex digits */
    registry_image_list_free(list, n);
    free(next);
    return (int)n;
}

static void test_round_trip(void)
{
    struct registry *reg = open_mem();
    struct registry_image img = base_image(1, OWNER_A, "web (prod) [v1] 2024.05/a-b'c@d_e", 1000);
    struct registry_image_device devs[3] = {0};
    struct registry_permission perms[2] = {0};
    struct registry_tag tags[2] = {{(char *)"Name", (char *)"web"},
                                   {(char *)"Env", (char *)"prod"}};
    struct registry_image *got = NULL;
    int r;

    img.description = (char *)"a web server";
    img.architecture = (char *)"arm64";
    img.boot_mode = (char *)"uefi";
    img.ena_support = true;
    img.sriov_net_support = (char *)"simple";
    img.imds_support = (char *)"v2.0";
    img.tpm_support = (char *)"v2.0";
    snprintf(img.kernel_id, sizeof(img.kernel_id), "aki-0123456789abcdef0");
    snprintf(img.ramdisk_id, sizeof(img.ramdisk_id), "ari-0123456789abcdef0");
    img.state = IMAGE_PENDING;
    img.state_reason_code = (char *)"Client.Error";
    img.state_reason_message = (char *)"still copying";
    img.deprecation_time = 5000000;
    img.deregistration_protection = true;
    img.deregistration_cooldown = true;
    img.deregistration_blocked_until = 7000;
    snprintf(img.source_image_id, sizeof(img.source_image_id), "ami-0000000000000abcd");
    img.source_region = (char *)"us-west-2";
    img.last_launched_time = 9000;

    devs[0].device_name = (char *)"/dev/xvda";
    snprintf(devs[0].snapshot_id, sizeof(devs[0].snapshot_id), SNAP_1);
    devs[0].volume_size_gib = 8;
    devs[0].volume_type = (char *)"gp3";
    devs[0].delete_on_termination = true;
    devs[0].encrypted = true;
    devs[0].iops = 3000;
    devs[0].throughput = 125;
    devs[1].device_name = (char *)"/dev/sdb";
    devs[1].virtual_name = (char *)"ephemeral0";
    devs[2].device_name = (char *)"/dev/sdc";
    devs[2].no_device = true;
    img.devices = devs;
    img.n_devices = 3;
    perms[0].kind = REGISTRY_PERMISSION_USER;
    snprintf(perms[0].value, sizeof(perms[0].value), OWNER_B);
    perms[1].kind = REGISTRY_PERMISSION_GROUP;
    snprintf(perms[1].value, sizeof(perms[1].value), "all");
    img.permissions = perms;
    img.n_permissions = 2;

    ok(reg != NULL, "open an in-memory registry");
    is_int(registry_schema_version(reg), registry_schema_latest(),
           "the registry is at the latest schema version");
    r = registry_image_insert(reg, &img, tags, 2);
    is_int(r, 0, "insert an image with every field, 3 devices, 2 permissions, 2 tags");
    if (r < 0)
        printf("# %s\n", error_message());
    r = registry_image_get(reg, img.id, &got);
    is_int(r, 0, "get it back");
    if (r < 0) {
        registry_free(reg);
        return;
    }
    is_str(got->id, img.id, "id");
    is_str(got->owner, OWNER_A, "owner");
    is_str(got->name, img.name, "name");
    is_str(got->description, "a web server", "description");
    is_str(got->architecture, "arm64", "architecture");
    is_str(got->boot_mode, "uefi", "boot mode");
    is_str(got->root_device_name, "/dev/xvda", "root device name");
    is_str(got->root_device_type, "ebs", "root device type");
    is_str(got->virtualization_type, "hvm", "virtualization type");
    ok(got->ena_support, "ena support");
    is_str(got->sriov_net_support, "simple", "sriov net support");
    is_str(got->imds_support, "v2.0", "imds support");
    is_str(got->tpm_support, "v2.0", "tpm support");
    is_str(got->kernel_id, "aki-0123456789abcdef0", "kernel id");
    is_str(got->ramdisk_id, "ari-0123456789abcdef0", "ramdisk id");
    is_int(got->state, IMAGE_PENDING, "state");
    is_str(got->state_reason_code, "Client.Error", "state reason code");
    is_str(got->state_reason_message, "still copying", "state reason message");
    is_int(got->creation_date, 1000, "creation date");
    is_int(got->deprecation_time, 5000000, "deprecation time");
    ok(got->deregistration_protection && got->deregistration_cooldown,
       "deregistration protection with cooldown");
    is_int(got->deregistration_blocked_until, 7000, "deregistration blocked until");
    is_str(got->source_image_id, "ami-0000000000000abcd", "source image id");
    is_str(got->source_region, "us-west-2", "source region");
    is_int(got->last_launched_time, 9000, "last launched time");
    ok(got->is_public, "public: it has the group 'all' permission");

    is_int(got->n_devices, 3, "three devices");
    if (got->n_devices == 3) {
        struct registry_image_device *d = got->devices;
        is_str(d[0].device_name, "/dev/xvda", "device 0 name");
        is_str(d[0].snapshot_id, SNAP_1, "device 0 snapshot");
        is_int(d[0].volume_size_gib, 8, "device 0 size");
        is_str(d[0].volume_type, "gp3", "device 0 type");
        ok(d[0].delete_on_termination && d[0].encrypted, "device 0 flags");
        is_int(d[0].iops, 3000, "device 0 iops");
        is_int(d[0].throughput, 125, "device 0 throughput");
        ok(!d[0].virtual_name && !d[0].no_device, "device 0 is EBS");
        is_str(d[1].device_name, "/dev/sdb", "device 1 name (order kept)");
        is_str(d[1].virtual_name, "ephemeral0", "device 1 virtual name");
        ok(!d[1].snapshot_id[0] && !d[1].volume_type && d[1].volume_size_gib == 0,
           "device 1 has no EBS fields");
        is_str(d[2].device_name, "/dev/sdc", "device 2 name");
        ok(d[2].no_device, "device 2 is no-device");
    }
    is_int(got->n_permissions, 2, "two permissions");
    if (got->n_permissions == 2) {
        ok(got->permissions[0].kind == REGISTRY_PERMISSION_USER &&
               strcmp(got->permissions[0].value, OWNER_B) == 0,
           "user permission first");
        ok(got->permissions[1].kind == REGISTRY_PERMISSION_GROUP &&
               strcmp(got->permissions[1].value, "all") == 0,
           "then group all");
    }
    is_int(got->n_tags, 2, "two tags");
    if (got->n_tags == 2) {
        is_str(got->tags[0].key, "Env", "tags ordered by key");
        is_str(got->tags[1].value, "web", "tag value");
    }
    registry_image_free(got);

    /* A minimal image reads back with empty optionals. */
    is_int(insert(reg, 2, OWNER_A, "minimal", 2000), 0, "insert a minimal image");
    got = NULL;
    is_int(registry_image_get(reg, "ami-00000000000000002", &got), 0, "get the minimal image");
    if (got) {
        ok(!got->description && !got->boot_mode && !got->imds_support && !got->source_region &&
               !got->kernel_id[0] && !got->source_image_id[0] && got->deprecation_time == 0 &&
               !got->is_public && got->n_devices == 0 && got->n_permissions == 0 &&
               got->n_tags == 0,
           "optional fields are empty");
        registry_image_free(got);
    }

    error_clear();
    is_int(registry_image_get(reg, "ami-0000000000000ffff", &got), -ENOENT,
           "an absent image is -ENOENT");
    ok(message_style_ok() && strstr(error_message(), "ami-0000000000000ffff"),
       "the message names it: %s", error_message());
    is_int(registry_image_get(reg, "ami-123", &got), -EINVAL, "a malformed id is -EINVAL");
    is_int(registry_image_insert(reg, &img, NULL, 0), -EEXIST, "the same id again is -EEXIST");
    ok(strstr(error_message(), "already exists") != NULL, "saying so: %s", error_message());
    registry_free(reg);
}

static void test_names(void)
{
    struct registry *reg = open_mem();
    struct registry_image_update u = {.set = IMAGE_SET_STATE, .state = IMAGE_DEREGISTERED};
    int r;

    is_int(insert(reg, 1, OWNER_A, "golden", 1), 0, "insert 'golden' for A");
    error_clear();
    r = insert(reg, 2, OWNER_A, "golden", 2);
    is_int(r, -EEXIST, "a second 'golden' for A is -EEXIST");
    ok(message_style_ok() && strstr(error_message(), "golden") && strstr(error_message(), OWNER_A),
       "the message names the name and owner: %s", error_message());
    is_int(insert(reg, 3, OWNER_B, "golden", 3), 0, "'golden' for B is allowed");
    is_int(registry_image_update(reg, "ami-00000000000000001", &u), 0, "deregister A's 'golden'");
    is_int(insert(reg, 4, OWNER_A, "golden", 4), 0, "now A may use 'golden' again");
    u.state = IMAGE_AVAILABLE;
    is_int(registry_image_update(reg, "ami-00000000000000001", &u), -EEXIST,
           "reviving the deregistered image while the name is taken is -EEXIST");
    registry_free(reg);
}

static void test_invalid(void)
{
    struct registry *reg = open_mem();
    struct registry_image img;
    struct registry_image_device dev = {0};
    struct registry_permission perm = {0};
    struct registry_tag tag = {(char *)"", (char *)"x"};
    struct registry_image *got = NULL;

#define BAD(setup, what, needle)                                                                   \
    do {                                                                                           \
        img = base_image(9, OWNER_A, "valid-name", 1);                                             \
        setup;                                                                                     \
        error_clear();                                                                             \
        is_int(registry_image_insert(reg, &img, NULL, 0), -EINVAL, "%s is -EINVAL", what);         \
        ok(message_style_ok() && strstr(error_message(), needle), "message: %s",                   \
           error_message() ? error_message() : "(none)");                                          \
    } while (0)

    BAD(snprintf(img.id, sizeof(img.id), "ami-XYZ"), "a malformed id", "malformed image id");
    BAD(snprintf(img.owner, sizeof(img.owner), "12345"), "a malformed owner", "owner");
    BAD(img.name = (char *)"ab", "a 2-character name", "invalid name");
    BAD(img.name = (char *)"bad!name", "a name with '!'", "invalid name");
    BAD(img.name = NULL, "no name", "invalid name");
    BAD(img.description = (char *)"x\ny", "a description with a control character", "description");
    BAD(img.architecture = (char *)"mips", "an unknown architecture", "architecture 'mips'");
    BAD(img.boot_mode = (char *)"bios", "an unknown boot mode", "boot mode");
    BAD(img.root_device_type = (char *)"instance-store", "instance-store", "root device type");
    BAD(img.virtualization_type = (char *)"xen", "an unknown virtualization", "virtualization");
    BAD(img.imds_support = (char *)"v1.0", "imds v1.0", "imds");
    BAD(snprintf(img.kernel_id, sizeof(img.kernel_id), "ami-00000000000000001"),
        "a kernel id with the wrong prefix", "kernel");
    BAD(img.state = (enum image_state)42, "an unknown state", "state");
    BAD(img.deregistration_cooldown = true, "a cooldown without protection", "cooldown");
    dev.device_name = (char *)"/dev/xvda";
    dev.volume_type = (char *)"gp9";
    BAD((img.devices = &dev, img.n_devices = 1), "an unknown volume type", "volume type 'gp9'");
    dev.volume_type = NULL;
    dev.virtual_name = (char *)"ephemeral24";
    BAD((img.devices = &dev, img.n_devices = 1), "ephemeral24", "virtual name");
    dev.virtual_name = NULL;
    snprintf(dev.snapshot_id, sizeof(dev.snapshot_id), "snap-1");
    BAD((img.devices = &dev, img.n_devices = 1), "a malformed snapshot id", "snapshot id");
    dev.snapshot_id[0] = '\0';
    perm.kind = REGISTRY_PERMISSION_GROUP;
    snprintf(perm.value, sizeof(perm.value), "everyone");
    BAD((img.permissions = &perm, img.n_permissions = 1), "a group other than all",
        "launch permission group");
    perm.kind = REGISTRY_PERMISSION_USER;
    snprintf(perm.value, sizeof(perm.value), "abc");
    BAD((img.permissions = &perm, img.n_permissions = 1), "a bad account", "account 'abc'");
#undef BAD

    img = base_image(9, OWNER_A, "valid-name", 1);
    is_int(registry_image_insert(reg, &img, &tag, 1), -EINVAL, "an empty tag key is -EINVAL");
    is_int(registry_image_get(reg, img.id, &got), -ENOENT, "no failed insert left a row");
    is_int(registry_image_insert(reg, &img, NULL, 0), 0, "the valid image inserts");
    registry_free(reg);
}

static void test_list(void)
{
    struct registry *reg = open_mem();
    struct registry_image img;
    struct registry_image_device dev = {0};
    struct registry_tag tags[2] = {{(char *)"Env", (char *)"prod"},
                                   {(char *)"Team", (char *)"web*"}};
    struct registry_image_update u = {0};
    struct image_query q;
    char ids[512];
    const char *v[4];
    enum image_state states[2];
    struct image_tag_filter tf[2];
    size_t count = 99;

    /* 1: A, "web-server-1", tags Env=prod Team=web*, snapshot 1
     * 2: A, "web-server-2", public
     * 3: B, "db [main]", shared with C
     * 4: B, "db-other", deprecated
     * 5: C, "cache?", disabled
     * 6: C, "web-x", pending */
    img = base_image(1, OWNER_A, "web-server-1", 10);
    dev.device_name = (char *)"/dev/xvda";
    snprintf(dev.snapshot_id, sizeof(dev.snapshot_id), SNAP_1);
    img.devices = &dev;
    img.n_devices = 1;
    is_int(registry_image_insert(reg, &img, tags, 2), 0, "insert image 1");
    img = base_image(2, OWNER_A, "web-server-2", 20);
    img.is_public = true;
    img.devices = &dev;
    img.n_devices = 1;
    is_int(registry_image_insert(reg, &img, NULL, 0), 0, "insert image 2 (public)");
    is_int(insert(reg, 3, OWNER_B, "db [main]", 30), 0, "insert image 3");
    is_int(
        registry_image_permission_add(reg, "ami-00000000000000003", REGISTRY_PERMISSION_USER, OWNER_C),
        0, "share image 3 with C");
    is_int(insert(reg, 4, OWNER_B, "db-other", 40), 0, "insert image 4");
    u.set = IMAGE_SET_DEPRECATION;
    u.deprecation_time = 50;
    is_int(registry_image_update(reg, "ami-00000000000000004", &u), 0, "deprecate image 4");
    is_int(insert(reg, 5, OWNER_C, "cache?", 0), -EINVAL, "'?' is not allowed in a name");
    is_int(insert(reg, 5, OWNER_C, "cache", 50), 0, "insert image 5");
    u = (struct registry_image_update){.set = IMAGE_SET_STATE, .state = IMAGE_DISABLED};
    is_int(registry_image_update(reg, "ami-00000000000000005", &u), 0, "disable image 5");
    img = base_image(6, OWNER_C, "web-x", 60);
    img.state = IMAGE_PENDING;
    is_int(registry_image_insert(reg, &img, NULL, 0), 0, "insert image 6 (pending)");

#define Q(...) (q = (struct image_query){.now = 1000, __VA_ARGS__})
    Q();
    is_int(run(reg, &q, ids, sizeof(ids)), 4, "everything: not deprecated 4, not disabled 5");
    is_str(ids, "0001 0002 0003 0006", "in creation order");
    Q(.include_deprecated = true, .include_disabled = true);
    is_int(run(reg, &q, ids, sizeof(ids)), 6, "with deprecated and disabled: all six");
    Q(.caller = OWNER_B);
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0001 0002 0003 0004 0006", "the owner sees its deprecated image");
    Q(.include_disabled = true);
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0001 0002 0003 0005 0006", "include_disabled shows the disabled one");
    q = (struct image_query){.now = 45};
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0001 0002 0003 0004 0006", "not yet deprecated before its time");

    v[0] = "ami-00000000000000004";
    v[1] = "ami-00000000000000001";
    Q(.ids = v, .n_ids = 2);
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0001 0004", "by ids: explicit ids show deprecated images");
    v[0] = "ami-bad";
    Q(.ids = v, .n_ids = 1);
    is_int(run(reg, &q, ids, sizeof(ids)), -EINVAL, "a malformed id in the query is -EINVAL");

    v[0] = OWNER_B;
    v[1] = OWNER_C;
    Q(.owners = v, .n_owners = 2, .include_deprecated = true);
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0003 0004 0006", "by owners B and C");
    v[0] = "self";
    Q(.owners = v, .n_owners = 1);
    is_int(run(reg, &q, ids, sizeof(ids)), -EINVAL, "'self' must be resolved by the caller");

    v[0] = OWNER_C;
    Q(.executable_by = v, .n_executable_by = 1);
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0002 0003 0006", "executable by C: public, shared with C, owned by C");
    v[0] = "all";
    Q(.executable_by = v, .n_executable_by = 1);
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0002", "executable by all: the public one");
    v[0] = OWNER_A;
    Q(.executable_by = v, .n_executable_by = 1);
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0001 0002", "executable by A: its own");
    v[0] = OWNER_A;
    v[1] = OWNER_C;
    Q(.executable_by = v, .n_executable_by = 2, .owners = v + 1, .n_owners = 1);
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0006", "owners and executable-by are ANDed");

    v[0] = "web-*";
    Q(.names = v, .n_names = 1);
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0001 0002 0006", "name 'web-*'");
    v[0] = "web-server-?";
    v[1] = "db*";
    Q(.names = v, .n_names = 2);
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0001 0002 0003", "names ORed: 'web-server-?' or 'db*'");
    v[0] = "db [main]";
    Q(.names = v, .n_names = 1);
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0003", "brackets in a name are literal, not a GLOB class");
    v[0] = "db [mai?]";
    Q(.names = v, .n_names = 1);
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0003", "brackets and a wildcard");
    v[0] = "WEB-*";
    Q(.names = v, .n_names = 1);
    is_int(run(reg, &q, ids, sizeof(ids)), 0, "names match case-sensitively");
    v[0] = "web\\*";
    Q(.names = v, .n_names = 1);
    is_int(run(reg, &q, ids, sizeof(ids)), 0, "an escaped '*' is literal");

    states[0] = IMAGE_PENDING;
    Q(.states = states, .n_states = 1);
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0006", "state pending");
    states[1] = IMAGE_DISABLED;
    Q(.states = states, .n_states = 2);
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0006", "state disabled still needs include_disabled");
    Q(.states = states, .n_states = 2, .include_disabled = true);
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0005 0006", "states ORed with include_disabled");

    v[0] = "pr*";
    tf[0] = (struct image_tag_filter){.key = "Env", .values = v, .n_values = 1};
    Q(.tags = tf, .n_tags = 1);
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0001", "tag:Env=pr*");
    v[1] = "web\\*";
    tf[1] = (struct image_tag_filter){.key = "Team", .values = v + 1, .n_values = 1};
    Q(.tags = tf, .n_tags = 2);
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0001", "tag filters ANDed; an escaped '*' matches a literal '*'");
    v[2] = "dev";
    tf[0] = (struct image_tag_filter){.key = "Env", .values = v + 2, .n_values = 1};
    Q(.tags = tf, .n_tags = 1);
    is_int(run(reg, &q, ids, sizeof(ids)), 0, "tag:Env=dev matches nothing");
    v[3] = "T*";
    tf[0] = (struct image_tag_filter){.key = NULL, .values = v + 3, .n_values = 1};
    Q(.tags = tf, .n_tags = 1);
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0001", "tag-key T*");

    /* Permissions. */
    is_int(
        registry_image_permission_add(reg, "ami-00000000000000001", REGISTRY_PERMISSION_USER, OWNER_B),
        0, "share image 1 with B");
    is_int(
        registry_image_permission_add(reg, "ami-00000000000000001", REGISTRY_PERMISSION_USER, OWNER_B),
        0, "sharing twice is success");
    v[0] = OWNER_B;
    Q(.executable_by = v, .n_executable_by = 1, .include_deprecated = true);
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0001 0002 0003 0004", "B now sees image 1");
    is_int(registry_image_permission_remove(reg, "ami-00000000000000001", REGISTRY_PERMISSION_USER,
                                            OWNER_B),
           0, "unshare image 1 from B");
    is_int(registry_image_permission_remove(reg, "ami-00000000000000001", REGISTRY_PERMISSION_USER,
                                            OWNER_B),
           0, "removing an absent permission is success");
    run(reg, &q, ids, sizeof(ids));
    is_str(ids, "0002 0003 0004", "B no longer sees image 1");
    is_int(
        registry_image_permission_add(reg, "ami-0000000000000ffff", REGISTRY_PERMISSION_USER, OWNER_B),
        -ENOENT, "permission on an absent image is -ENOENT");
    is_int(registry_image_permission_add(reg, "ami-00000000000000001", REGISTRY_PERMISSION_GROUP,
                                         "nobody"),
           -EINVAL, "a bad group is -EINVAL");
    u = (struct registry_image_update){.set = IMAGE_SET_PUBLIC, .is_public = false};
    is_int(registry_image_update(reg, "ami-00000000000000002", &u), 0, "make image 2 private");
    v[0] = "all";
    Q(.executable_by = v, .n_executable_by = 1);
    is_int(run(reg, &q, ids, sizeof(ids)), 0, "nothing is public now");
    {
        struct registry_image *got = NULL;

        u = (struct registry_image_update){.set = IMAGE_SET_STATE, .state = IMAGE_DISABLED};
        registry_image_update(reg, "ami-00000000000000003", &u);
        registry_image_get(reg, "ami-00000000000000003", &got);
        ok(got && got->n_permissions == 0 && got->state == IMAGE_DISABLED,
           "disabling an image removes its launch permissions");
        registry_image_free(got);
    }

    /* Snapshot in use. */
    is_int(registry_snapshot_in_use_by_images(reg, SNAP_1, &count), 0, "count users of snap 1");
    is_int(count, 2, "two images use snapshot 1");
    u = (struct registry_image_update){.set = IMAGE_SET_STATE, .state = IMAGE_DEREGISTERED};
    registry_image_update(reg, "ami-00000000000000001", &u);
    registry_snapshot_in_use_by_images(reg, SNAP_1, &count);
    is_int(count, 1, "a deregistered image does not count");
    u.state = IMAGE_DISABLED;
    registry_image_update(reg, "ami-00000000000000002", &u);
    registry_snapshot_in_use_by_images(reg, SNAP_1, &count);
    is_int(count, 1, "a disabled image still counts");
    registry_snapshot_in_use_by_images(reg, SNAP_2, &count);
    is_int(count, 0, "nothing uses snapshot 2");
    is_int(registry_snapshot_in_use_by_images(reg, "snap-x", &count), -EINVAL,
           "a malformed snapshot id is -EINVAL");
    is_int(registry_image_delete(reg, "ami-00000000000000002"), 0, "delete image 2");
    registry_snapshot_in_use_by_images(reg, SNAP_1, &count);
    is_int(count, 0, "its devices went with it");
    is_int(registry_image_delete(reg, "ami-00000000000000002"), -ENOENT,
           "deleting it again is -ENOENT");
    {
        struct registry_tag *t = NULL;
        size_t nt = 9;

        registry_image_delete(reg, "ami-00000000000000001");
        registry_tag_list(reg, "ami-00000000000000001", &t, &nt);
        is_int(nt, 0, "deleting an image deletes its tags");
        registry_tag_list_free(t, nt);
    }
#undef Q
    registry_free(reg);
}

static void test_update(void)
{
    struct registry *reg = open_mem();
    struct registry_image_update u = {0};
    struct registry_image *got = NULL;
    const char *id = "ami-00000000000000001";

    insert(reg, 1, OWNER_A, "upd", 1);
    u.set = IMAGE_SET_DESCRIPTION | IMAGE_SET_IMDS_SUPPORT | IMAGE_SET_DEREGISTRATION_PROTECTION |
            IMAGE_SET_LAST_LAUNCHED | IMAGE_SET_STATE;
    u.description = "new";
    u.imds_support = "v2.0";
    u.deregistration_protection = true;
    u.last_launched_time = 77;
    u.state = IMAGE_FAILED;
    u.state_reason_code = "Client.Failed";
    is_int(registry_image_update(reg, id, &u), 0, "update several attributes");
    registry_image_get(reg, id, &got);
    ok(got && strcmp(got->description, "new") == 0 && got->imds_support &&
           got->deregistration_protection && !got->deregistration_cooldown &&
           got->last_launched_time == 77 && got->state == IMAGE_FAILED &&
           strcmp(got->state_reason_code, "Client.Failed") == 0 && strcmp(got->name, "upd") == 0,
       "they read back, the rest unchanged");
    registry_image_free(got);
    u = (struct registry_image_update){.set = IMAGE_SET_IMDS_SUPPORT, .imds_support = NULL};
    is_int(registry_image_update(reg, id, &u), -EROFS, "imds v2.0 cannot be undone");
    u = (struct registry_image_update){.set = IMAGE_SET_DESCRIPTION};
    is_int(registry_image_update(reg, id, &u), 0, "clear the description");
    got = NULL;
    registry_image_get(reg, id, &got);
    ok(got && !got->description, "the description is gone");
    registry_image_free(got);
    u = (struct registry_image_update){.set = IMAGE_SET_STATE, .state = 99};
    is_int(registry_image_update(reg, id, &u), -EINVAL, "an invalid state is -EINVAL");
    u.state = IMAGE_AVAILABLE;
    is_int(registry_image_update(reg, "ami-0000000000000ffff", &u), -ENOENT,
           "updating an absent image is -ENOENT");
    registry_free(reg);
}

static void test_pagination(void)
{
    struct registry *reg = open_mem();
    struct image_query q = {.max_results = 10, .now = 1};
    char *tokens[4] = {0};
    int seen[26] = {0};
    size_t pages = 0, total = 0;
    bool all_once = true, ordered = true;
    int64_t last = -1;
    int r = 0;

    for (unsigned i = 1; i <= 25; i++) {
        char name[32];

        snprintf(name, sizeof(name), "page-%02u", i);
        /* Creation dates collide in threes: the id breaks the ties. */
        r |= insert(reg, (i * 7919) % 64 + 100 * i, OWNER_A, name, (int64_t)(i / 3));
    }
    is_int(r, 0, "insert 25 images");

    for (;;) {
        struct registry_image **list = NULL;
        char *next = NULL;
        size_t n = 0;

        r = registry_image_list(reg, &q, &list, &n, &next);
        if (r < 0 || pages >= 4)
            break;
        for (size_t i = 0; i < n; i++) {
            unsigned k = 0;

            sscanf(list[i]->name, "page-%u", &k);
            if (k < 1 || k > 25 || seen[k]++)
                all_once = false;
            if (list[i]->creation_date < last)
                ordered = false;
            last = list[i]->creation_date;
        }
        total += n;
        registry_image_list_free(list, n);
        tokens[pages++] = next;
        if (!next)
            break;
        q.next_token = next;
    }
    is_int(r, 0, "every page is success");
    is_int(pages, 3, "25 images in pages of 10: 3 pages");
    is_int(total, 25, "25 images in all");
    ok(all_once, "every image exactly once");
    ok(ordered, "in creation order");
    ok(tokens[0] && tokens[1] && !tokens[2], "two tokens, none on the last page");
    ok(tokens[0] && tokens[1] && strcmp(tokens[0], tokens[1]) != 0, "the tokens differ");
    for (size_t i = 0; i < 4; i++)
        free(tokens[i]);

    {
        struct registry_image **list = NULL;
        char *next = (char *)"untouched";
        size_t n = 0;

        q.next_token = "bogus";
        error_clear();
        is_int(registry_image_list(reg, &q, &list, &n, &next), -EINVAL, "a bogus token is -EINVAL");
        ok(message_style_ok() && strstr(error_message(), "token"), "saying so: %s",
           error_message());
        ok(list == NULL && strcmp(next, "untouched") == 0, "nothing written on failure");
        q.next_token = "12_ami-zz";
        is_int(registry_image_list(reg, &q, &list, &n, &next), -EINVAL,
               "a token with a bad id is -EINVAL");
        q.next_token = NULL;
        q.max_results = 25;
        next = NULL;
        is_int(registry_image_list(reg, &q, &list, &n, &next), 0, "max results 25");
        ok(n == 25 && next == NULL, "exactly one full page and no token");
        registry_image_list_free(list, n);
        q.max_results = IMAGE_LIST_MAX_RESULTS + 1;
        is_int(registry_image_list(reg, &q, &list, &n, &next), -EINVAL,
               "max results above the limit is -EINVAL");
    }
    registry_free(reg);
}

/* A registry at schema version 1 (as an older kiln left it) upgrades to the
 * latest version and keeps its rows. */
static void test_upgrade(void)
{
    char dir[] = "/tmp/test-images-XXXXXX", path[128], p2[160];
    struct registry *reg = NULL;
    sqlite3 *db = NULL;
    int rc;

    ok(mkdtemp(dir) != NULL, "make a temporary directory");
    snprintf(path, sizeof(path), "%s/registry.db", dir);
    ok(registry_open(path, &reg) == 0, "create a registry file");
    registry_tag_set(reg, "snap-00000000000000001", "k", "v");
    registry_free(reg);
    reg = NULL;
    rc = sqlite3_open(path, &db);
    /* Drop what every later migration created (children before parents:
     * the newest first), whatever their number now. */
    while (rc == SQLITE_OK) {
        sqlite3_stmt *st = NULL;
        char sql[160] = "";

        rc = sqlite3_prepare_v2(db,
                                "SELECT name FROM sqlite_master WHERE type = 'table'"
                                " AND name NOT IN ('settings', 'snapshots', 'tags')"
                                " AND name NOT LIKE 'sqlite_%' ORDER BY rowid DESC LIMIT 1",
                                -1, &st, NULL);
        if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
            snprintf(sql, sizeof(sql), "DROP TABLE \"%s\"",
                     (const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        if (rc != SQLITE_OK || !sql[0])
            break;
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    }
    /* And the columns later migrations added to version 1's tables. */
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "ALTER TABLE snapshots DROP COLUMN volume_id", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "PRAGMA user_version = 1", NULL, NULL, NULL);
    sqlite3_close(db);
    is_int(rc, SQLITE_OK, "turn it back into a version 1 registry");
    is_int(registry_open(path, &reg), 0, "open it: every later migration applies");
    if (reg) {
        struct registry_tag *t = NULL;
        size_t nt = 0;

        is_int(registry_schema_version(reg), registry_schema_latest(), "it is at the latest version");
        is_int(insert(reg, 1, OWNER_A, "after-upgrade", 1), 0, "images can be inserted");
        registry_tag_list(reg, "snap-00000000000000001", &t, &nt);
        is_int(nt, 1, "the old rows are kept");
        registry_tag_list_free(t, nt);
        registry_free(reg);
    }
    unlink(path);
    snprintf(p2, sizeof(p2), "%s-wal", path);
    unlink(p2);
    snprintf(p2, sizeof(p2), "%s-shm", path);
    unlink(p2);
    rmdir(dir);
}

/* A list inside the caller's transaction sees the caller's writes. */
static void test_list_in_transaction(void)
{
    struct registry *reg = open_mem();
    struct image_query q = {.now = 1};
    char ids[64];

    is_int(registry_begin(reg), 0, "begin a transaction");
    insert(reg, 1, OWNER_A, "in-tx", 1);
    is_int(run(reg, &q, ids, sizeof(ids)), 1, "the list inside it sees the new image");
    is_int(registry_rollback(reg), 0, "roll back");
    is_int(run(reg, &q, ids, sizeof(ids)), 0, "and then it is gone");
    registry_free(reg);
}

/* The handle keeps the last list statement and reuses it for a query of
 * the same shape: every call must still see its own values, a change of
 * shape in between must not confuse it, and a write made between two calls
 * must show in the second. */
static void test_list_statement_reuse(void)
{
    struct registry *reg = open_mem();
    const char *web[] = {"web-*"}, *db[] = {"db-*"}, *none[] = {"none-*"};
    const char *v_web[] = {"web"}, *v_db[] = {"db"}, *keys[] = {"Ro*"};
    struct image_tag_filter t_web = {"Role", v_web, 1}, t_db = {"Role", v_db, 1};
    struct image_tag_filter t_key = {NULL, keys, 1};
    char ids[256];

    insert(reg, 1, OWNER_A, "web-1", 1000);
    insert(reg, 2, OWNER_A, "db-1", 2000);
    insert(reg, 3, OWNER_A, "web-2", 3000);
    registry_tag_set(reg, "ami-00000000000000001", "Role", "web");
    registry_tag_set(reg, "ami-00000000000000002", "Role", "db");

    for (int pass = 0; pass < 2; pass++) {
        struct image_query q = {.names = web, .n_names = 1};
        is_int(run(reg, &q, ids, sizeof(ids)), 2, "names web-* (pass %d)", pass);
        is_str(ids, "0001 0003", "the web images, by creation date");
        q.names = db;
        is_int(run(reg, &q, ids, sizeof(ids)), 1, "same shape, other value: db-*");
        is_str(ids, "0002", "the db image");
        q.names = none;
        is_int(run(reg, &q, ids, sizeof(ids)), 0, "same shape, no match");
        q = (struct image_query){.tags = &t_web, .n_tags = 1};
        is_int(run(reg, &q, ids, sizeof(ids)), 1, "another shape: tag Role=web");
        is_str(ids, "0001", "the tagged web image");
        q.tags = &t_db;
        is_int(run(reg, &q, ids, sizeof(ids)), 1, "tag Role=db");
        is_str(ids, "0002", "the tagged db image");
        q.tags = &t_key;
        is_int(run(reg, &q, ids, sizeof(ids)), 2, "tag-key Ro*");
        is_str(ids, "0001 0002", "both tagged images");
    }
    /* A write between two calls of one shape. */
    {
        struct image_query q = {.tags = &t_web, .n_tags = 1};
        is_int(run(reg, &q, ids, sizeof(ids)), 1, "before tagging web-2");
        registry_tag_set(reg, "ami-00000000000000003", "Role", "web");
        is_int(run(reg, &q, ids, sizeof(ids)), 2, "after tagging web-2");
        is_str(ids, "0001 0003", "both web images");
    }
    registry_free(reg);
}

int main(void)
{
    test_upgrade();
    test_list_in_transaction();
    test_round_trip();
    test_names();
    test_invalid();
    test_list();
    test_update();
    test_pagination();
    test_list_statement_reuse();
    return done_testing();
}
