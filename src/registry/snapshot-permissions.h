/* Snapshot sharing: the `snapshot_permissions` table of schema version 3
 * (docs/formats.md), EC2's createVolumePermission.  A snapshot is shared
 * with an account by a user permission and made public by the group
 * permission "all"; its owner needs none.
 *
 * The functions follow registry.h's contract: >= 0 or -errno recorded
 * through error_set() (EINVAL a malformed id, kind or value, ENOENT no such
 * snapshot).  Each write runs in its own transaction, or in the caller's
 * (as a savepoint) when one is open.  Deleting a snapshot row deletes its
 * permissions (registry_snapshot_delete()). */
#ifndef KILN_REGISTRY_SNAPSHOT_PERMISSIONS_H
#define KILN_REGISTRY_SNAPSHOT_PERMISSIONS_H

#include <stdbool.h>
#include <stddef.h>

#include "registry/permissions.h"
#include "registry/registry.h"

/* Add or remove one permission of snapshot `id`.  Adding one that exists
 * and removing one that does not are success (as ModifySnapshotAttribute).
 * -EINVAL bad id, kind or value; -ENOENT no such snapshot. */
int registry_snapshot_permission_add(struct registry *reg, const char *id,
                                     enum registry_permission_kind kind, const char *value);
int registry_snapshot_permission_remove(struct registry *reg, const char *id,
                                        enum registry_permission_kind kind, const char *value);

/* Remove every permission of snapshot `id` (ResetSnapshotAttribute).
 * -ENOENT no such snapshot. */
int registry_snapshot_permission_clear(struct registry *reg, const char *id);

/* The permissions of snapshot `id`, users (by account id) then the group;
 * an empty list for a snapshot with none or that does not exist.  *ret is
 * an array the caller frees with free(). */
int registry_snapshot_permission_list(struct registry *reg, const char *id,
                                      struct registry_permission **ret, size_t *ret_n);

/* The permissions that concern account `account` on snapshot `id`:
 * *ret_user whether a user permission names it, *ret_public whether the
 * group "all" is there (ownership is the caller's check; a snapshot that
 * does not exist has neither).  Either out-parameter may be NULL. */
int registry_snapshot_permission_check(struct registry *reg, const char *id, const char *account,
                                       bool *ret_user, bool *ret_public);

#endif
