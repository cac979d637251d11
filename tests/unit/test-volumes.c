/* The volumes table (src/registry/volumes.c) on an in-memory registry:
 * insert, get, list, update (grow, attachment), delete with tags, and the
 * refusals: malformed fields, duplicates, shrinking, absent rows. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "registry/volumes.h"
#include "tap.h"

static struct registry_volume make(const char *id)
{
    struct registry_volume v = {.size_gib = 8, .state = VOLUME_AVAILABLE,
                                .create_time = 1700000000000, .iops = 3000,
                                .throughput = 125};
    snprintf(v.id, sizeof(v.id), "%s", id);
    snprintf(v.owner, sizeof(v.owner), "123456789012");
    snprintf(v.availability_zone, sizeof(v.availability_zone), "us-east-1a");
    snprintf(v.volume_type, sizeof(v.volume_type), "gp3");
    return v;
}

int main(void)
{
    struct registry *reg = NULL;
    struct registry_volume *got = NULL, **list = NULL;
    size_t n = 0;
    const char *a = "vol-0123456789abcdef0", *b = "vol-0123456789abcdef1";

    is_int(registry_open(":memory:", &reg), 0, "opened an in-memory registry");

    struct registry_volume v = make(a);
    snprintf(v.snapshot_id, sizeof(v.snapshot_id), "snap-0123456789abcdef0");
    v.has_base = true;
    memset(v.base_map_id.b, 0xab, DIGEST_SIZE);
    is_int(registry_volume_insert(reg, &v), 0, "inserted a volume from a snapshot");
    is_int(registry_volume_insert(reg, &v), -EEXIST, "again: EEXIST");
    struct registry_volume blank = make(b);
    blank.create_time++;
    is_int(registry_volume_insert(reg, &blank), 0, "inserted a blank volume");

    is_int(registry_volume_get(reg, a, &got), 0, "read it back");
    ok(got && strcmp(got->snapshot_id, v.snapshot_id) == 0 && got->has_base &&
           digest_equal(&got->base_map_id, &v.base_map_id) && got->size_gib == 8 &&
           got->state == VOLUME_AVAILABLE && got->iops == 3000 && got->throughput == 125 &&
           strcmp(got->availability_zone, "us-east-1a") == 0 && !got->instance_id[0],
       "every field survives");
    registry_volume_free(got);
    got = NULL;

    is_int(registry_volume_list(reg, &list, &n), 0, "listed");
    ok(n == 2 && strcmp(list[0]->id, a) == 0 && strcmp(list[1]->id, b) == 0,
       "two rows, by create time");
    registry_volume_list_free(list, n);

    /* Grow, attach, refuse a shrink. */
    v.size_gib = 20;
    v.state = VOLUME_IN_USE;
    snprintf(v.instance_id, sizeof(v.instance_id), "i-0123456789abcdef0");
    snprintf(v.device, sizeof(v.device), "/dev/xvda");
    v.attach_time = 1700000001000;
    is_int(registry_volume_update(reg, &v), 0, "grew and attached");
    registry_volume_get(reg, a, &got);
    ok(got && got->size_gib == 20 && got->state == VOLUME_IN_USE &&
           strcmp(got->device, "/dev/xvda") == 0 && got->attach_time == 1700000001000,
       "the update is stored");
    registry_volume_free(got);
    got = NULL;
    v.size_gib = 10;
    is_int(registry_volume_update(reg, &v), -EINVAL, "a shrink: EINVAL");
    ok(error_message() && strstr(error_message(), "shrink"), "says why");
    registry_volume_get(reg, a, &got);
    ok(got && got->size_gib == 20, "the size is unchanged");
    registry_volume_free(got);
    got = NULL;

    /* Refusals. */
    struct registry_volume bad = make("vol-XYZ");
    is_int(registry_volume_insert(reg, &bad), -EINVAL, "a malformed id: EINVAL");
    bad = make("vol-0123456789abcdef2");
    bad.size_gib = 16385;
    is_int(registry_volume_insert(reg, &bad), -EINVAL, "16385 GiB: EINVAL");
    bad.size_gib = 0;
    is_int(registry_volume_insert(reg, &bad), -EINVAL, "0 GiB: EINVAL");
    bad = make("vol-0123456789abcdef2");
    snprintf(bad.snapshot_id, sizeof(bad.snapshot_id), "snap-0123456789abcdef0");
    is_int(registry_volume_insert(reg, &bad), -EINVAL, "a snapshot without its map: EINVAL");
    bad = make("vol-0123456789abcdef2");
    snprintf(bad.device, sizeof(bad.device), "/dev/xvdb");
    is_int(registry_volume_insert(reg, &bad), -EINVAL, "a device without an instance: EINVAL");
    bad = make("vol-0123456789abcdef2");
    snprintf(bad.volume_type, sizeof(bad.volume_type), "io2");
    is_int(registry_volume_insert(reg, &bad), -EINVAL, "another volume type: EINVAL");
    is_int(registry_volume_get(reg, "vol-0123456789abcdef9", &got), -ENOENT, "absent: ENOENT");
    is_int(registry_volume_get(reg, "snap-0123456789abcdef0", &got), -EINVAL,
           "a snapshot id: EINVAL");
    struct registry_volume absent = make("vol-0123456789abcdef9");
    is_int(registry_volume_update(reg, &absent), -ENOENT, "updating an absent row: ENOENT");

    /* Delete takes the tags along. */
    is_int(registry_tag_set(reg, b, "Name", "data"), 0, "tagged the blank volume");
    is_int(registry_volume_delete(reg, b), 0, "deleted it");
    struct registry_tag *tags = NULL;
    size_t nt = 9;
    registry_tag_list(reg, b, &tags, &nt);
    is_int(nt, 0, "its tags went with it");
    registry_tag_list_free(tags, nt);
    is_int(registry_volume_delete(reg, b), -ENOENT, "again: ENOENT");

    registry_free(reg);
    return done_testing();
}
