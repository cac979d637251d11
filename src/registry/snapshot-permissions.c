/* Snapshot create-volume permissions: the `snapshot_permissions` table
 * (schema version 3, docs/formats.md) through the shared permission-table
 * code (permissions.c), which checks values before binding them and rows
 * when reading them back. */
#include "registry/internal.h"
#include "registry/snapshot-permissions.h"

int registry_snapshot_permission_add(struct registry *reg, const char *id,
                                     enum registry_permission_kind kind, const char *value)
{
    return reg_permission_add(reg, &reg_snapshot_permissions, id, kind, value);
}

int registry_snapshot_permission_remove(struct registry *reg, const char *id,
                                        enum registry_permission_kind kind, const char *value)
{
    return reg_permission_remove(reg, &reg_snapshot_permissions, id, kind, value);
}

int registry_snapshot_permission_clear(struct registry *reg, const char *id)
{
    return reg_permission_clear(reg, &reg_snapshot_permissions, id);
}

int reg_snapshot_permissions_delete(struct registry *reg, const char *id)
{
    return reg_permission_delete_all(reg, &reg_snapshot_permissions, id);
}

int registry_snapshot_permission_list(struct registry *reg, const char *id,
                                      struct registry_permission **ret, size_t *ret_n)
{
    return reg_permission_list(reg, &reg_snapshot_permissions, id, ret, ret_n);
}

int registry_snapshot_permission_check(struct registry *reg, const char *id, const char *account,
                                       bool *ret_user, bool *ret_public)
{
    return reg_permission_check(reg, &reg_snapshot_permissions, id, account, ret_user, ret_public);
}
