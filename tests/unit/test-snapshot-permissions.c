/* Snapshot create-volume permissions (registry/snapshot-permissions.h) on
 * an in-memory registry: add is idempotent, remove of an absent one is
 * success, bad values are -EINVAL, an unknown snapshot -ENOENT, the list
 * has users then the group, check sees user and public, clear empties it,
 * and deleting the snapshot deletes its permissions. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry/registry.h"
#include "registry/snapshot-permissions.h"
#include "tap.h"

#define SNAP "snap-0123456789abcdef0"
#define OTHER "snap-0123456789abcdef1"
#define OWNER "111111111111"
#define BOB "222222222222"
#define CAROL "333333333333"

static int insert_snapshot(struct registry *reg, const char *id)
{
    struct registry_snapshot s;

    memset(&s, 0, sizeof(s));
    snprintf(s.id, sizeof(s.id), "%s", id);
    snprintf(s.owner, sizeof(s.owner), "%s", OWNER);
    s.state = SNAPSHOT_PENDING;
    s.volume_size = 1 << 20;
    s.volume_size_gib = 1;
    s.start_time = 1000;
    return registry_snapshot_insert(reg, &s);
}

int main(void)
{
    struct registry *reg = NULL;
    struct registry_permission *p = NULL;
    size_t n = 99;
    bool user = true, pub = true;

    ok(registry_open(":memory:", &reg) == 0, "open an in-memory registry");
    if (!reg)
        return done_testing();
    ok(registry_schema_version(reg) >= 3, "schema version 3 or later");
    is_int(insert_snapshot(reg, SNAP), 0, "insert a snapshot");
    is_int(insert_snapshot(reg, OTHER), 0, "insert another");

    is_int(registry_snapshot_permission_add(reg, SNAP, REGISTRY_PERMISSION_USER, BOB), 0,
           "share with bob");
    is_int(registry_snapshot_permission_add(reg, SNAP, REGISTRY_PERMISSION_USER, BOB), 0,
           "sharing again is success");
    is_int(registry_snapshot_permission_add(reg, SNAP, REGISTRY_PERMISSION_GROUP, "all"), 0,
           "make it public");
    is_int(registry_snapshot_permission_add(reg, SNAP, REGISTRY_PERMISSION_USER, "12"), -EINVAL,
           "a short account id is -EINVAL");
    is_int(registry_snapshot_permission_add(reg, SNAP, REGISTRY_PERMISSION_GROUP, "admins"),
           -EINVAL, "a group other than all is -EINVAL");
    is_int(registry_snapshot_permission_add(reg, "snap-x", REGISTRY_PERMISSION_USER, BOB), -EINVAL,
           "a malformed snapshot id is -EINVAL");
    is_int(registry_snapshot_permission_add(reg, "snap-0000000000000000f", REGISTRY_PERMISSION_USER,
                                            BOB),
           -ENOENT, "an unknown snapshot is -ENOENT");
    is_int(registry_snapshot_permission_remove(reg, SNAP, REGISTRY_PERMISSION_USER, CAROL), 0,
           "removing an absent permission is success");

    is_int(registry_snapshot_permission_list(reg, SNAP, &p, &n), 0, "list");
    is_int(n, 2, "two permissions");
    if (n == 2) {
        ok(p[0].kind == REGISTRY_PERMISSION_USER && strcmp(p[0].value, BOB) == 0, "the user first");
        ok(p[1].kind == REGISTRY_PERMISSION_GROUP && strcmp(p[1].value, "all") == 0,
           "then the group");
    }
    free(p);

    is_int(registry_snapshot_permission_check(reg, SNAP, BOB, &user, &pub), 0, "check bob");
    ok(user && pub, "bob has a user permission and the snapshot is public");
    is_int(registry_snapshot_permission_check(reg, SNAP, CAROL, &user, &pub), 0, "check carol");
    ok(!user && pub, "carol has only the public permission");
    is_int(registry_snapshot_permission_check(reg, OTHER, BOB, &user, &pub), 0, "check other");
    ok(!user && !pub, "the other snapshot is shared with nobody");

    is_int(registry_snapshot_permission_remove(reg, SNAP, REGISTRY_PERMISSION_GROUP, "all"), 0,
           "make it private");
    is_int(registry_snapshot_permission_check(reg, SNAP, CAROL, &user, &pub), 0, "check carol");
    ok(!user && !pub, "carol has no permission left");

    is_int(registry_snapshot_permission_add(reg, OTHER, REGISTRY_PERMISSION_USER, CAROL), 0,
           "share the other with carol");
    is_int(registry_snapshot_permission_clear(reg, OTHER), 0, "reset the other");
    is_int(registry_snapshot_permission_list(reg, OTHER, &p, &n), 0, "list the other");
    is_int(n, 0, "no permissions after reset");
    free(p);
    is_int(registry_snapshot_permission_clear(reg, "snap-0000000000000000f"), -ENOENT,
           "resetting an unknown snapshot is -ENOENT");

    is_int(registry_snapshot_delete(reg, SNAP), 0, "delete the shared snapshot");
    is_int(registry_snapshot_permission_list(reg, SNAP, &p, &n), 0, "list after delete");
    is_int(n, 0, "its permissions went with it");
    free(p);
    is_int(insert_snapshot(reg, SNAP), 0, "a new row with the same id");
    is_int(registry_snapshot_permission_check(reg, SNAP, BOB, &user, &pub), 0, "check bob");
    ok(!user && !pub, "does not inherit the old permissions");

    registry_free(reg);
    return done_testing();
}
