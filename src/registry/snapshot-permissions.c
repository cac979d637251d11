/* Snapshot create-volume permissions: typed add, remove, clear, list and
 * check over the `snapshot_permissions` table (schema version 3,
 * docs/formats.md).  Values are checked here before they are bound, so a
 * bad one is -EINVAL naming it; the table's CHECK constraints are the
 * second line.  Rows read back are checked again (-EBADMSG). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/ids.h"
#include "common/util.h"
#include "registry/internal.h"
#include "registry/snapshot-permissions.h"

static const char *kind_name(enum snapshot_permission_kind kind)
{
    switch (kind) {
    case SNAPSHOT_PERMISSION_USER: return "user";
    case SNAPSHOT_PERMISSION_GROUP: return "group";
    }
    return NULL;
}

static int check_id(const char *id)
{
    if (!id || !id_is_valid("snap", id))
        return error_set(EINVAL, "malformed snapshot id '%.40s'", id ? id : "");
    return 0;
}

static int check_permission(const char *id, enum snapshot_permission_kind kind, const char *value)
{
    if (!kind_name(kind))
        return error_set(EINVAL, "snapshot '%s': unknown permission kind %d", id, (int)kind);
    if (kind == SNAPSHOT_PERMISSION_GROUP && (!value || strcmp(value, "all") != 0))
        return error_set(EINVAL, "snapshot '%s': unknown group '%.40s'", id, value ? value : "");
    if (kind == SNAPSHOT_PERMISSION_USER && (!value || !reg_account_is_valid(value)))
        return error_set(EINVAL, "snapshot '%s': malformed account id '%.40s'", id,
                         value ? value : "");
    return 0;
}

static int snapshot_exists(struct registry *reg, const char *id)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    r = reg_prepare(reg, "SELECT 1 FROM snapshots WHERE id = ?1", &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    r = sqlite3_step(st);
    if (r == SQLITE_DONE)
        return error_set(ENOENT, "snapshot '%s' not found", id);
    if (r != SQLITE_ROW)
        return reg_fail(reg, r, "cannot read snapshot '%s'", id);
    return 0;
}

static int write_permission(struct registry *reg, const char *id,
                            enum snapshot_permission_kind kind, const char *value, bool add)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    r = reg_prepare(reg,
                    add ? "INSERT OR IGNORE INTO snapshot_permissions (snapshot_id, kind, value)"
                          " VALUES (?1, ?2, ?3)"
                        : "DELETE FROM snapshot_permissions"
                          " WHERE snapshot_id = ?1 AND kind = ?2 AND value = ?3",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    reg_bind_text(st, 2, kind_name(kind));
    reg_bind_text(st, 3, value);
    r = reg_step_done(reg, st, "cannot %s permission %s '%s' of snapshot '%s'",
                      add ? "add" : "remove", kind_name(kind), value, id);
    return r < 0 ? r : 0;
}

static int change(struct registry *reg, const char *id, enum snapshot_permission_kind kind,
                  const char *value, bool add)
{
    int r = check_id(id);

    if (r == 0)
        r = check_permission(id, kind, value);
    if (r < 0)
        return r;
    r = registry_begin(reg);
    if (r < 0)
        return r;
    r = snapshot_exists(reg, id);
    if (r >= 0)
        r = write_permission(reg, id, kind, value, add);
    if (r >= 0)
        r = registry_commit(reg);
    if (r < 0) {
        registry_rollback(reg);
        return r;
    }
    return 0;
}

int registry_snapshot_permission_add(struct registry *reg, const char *id,
                                     enum snapshot_permission_kind kind, const char *value)
{
    return change(reg, id, kind, value, true);
}

int registry_snapshot_permission_remove(struct registry *reg, const char *id,
                                        enum snapshot_permission_kind kind, const char *value)
{
    return change(reg, id, kind, value, false);
}

int registry_snapshot_permission_clear(struct registry *reg, const char *id)
{
    int r = check_id(id);

    if (r < 0)
        return r;
    r = registry_begin(reg);
    if (r < 0)
        return r;
    r = snapshot_exists(reg, id);
    if (r >= 0)
        r = reg_snapshot_permissions_delete(reg, id);
    if (r >= 0)
        r = registry_commit(reg);
    if (r < 0) {
        registry_rollback(reg);
        return r;
    }
    return 0;
}

int reg_snapshot_permissions_delete(struct registry *reg, const char *id)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    r = reg_prepare(reg, "DELETE FROM snapshot_permissions WHERE snapshot_id = ?1", &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    r = reg_step_done(reg, st, "cannot remove the permissions of snapshot '%s'", id);
    return r < 0 ? r : 0;
}

int registry_snapshot_permission_list(struct registry *reg, const char *id,
                                      struct registry_snapshot_permission **ret, size_t *ret_n)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    _cleanup_free_ struct registry_snapshot_permission *list = NULL;
    size_t n = 0, cap = 0;
    int r, rc;

    r = check_id(id);
    if (r < 0)
        return r;
    /* 'group' sorts after 'user' descending: users first, as EC2 lists. */
    r = reg_prepare(reg,
                    "SELECT kind, value FROM snapshot_permissions WHERE snapshot_id = ?1"
                    " ORDER BY kind DESC, value",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *kind = (const char *)sqlite3_column_text(st, 0);
        const char *value = (const char *)sqlite3_column_text(st, 1);
        struct registry_snapshot_permission *p;

        if (n == cap) {
            cap = cap ? 2 * cap : 4;
            list = xrealloc(list, cap * sizeof(*list));
        }
        p = &list[n];
        if (kind && strcmp(kind, "user") == 0)
            p->kind = SNAPSHOT_PERMISSION_USER;
        else if (kind && strcmp(kind, "group") == 0)
            p->kind = SNAPSHOT_PERMISSION_GROUP;
        else
            return error_set(EBADMSG, "snapshot '%s' has a permission of unknown kind", id);
        if (!value || check_permission(id, p->kind, value) < 0)
            return error_set(EBADMSG, "snapshot '%s' has a malformed %s permission", id, kind);
        snprintf(p->value, sizeof(p->value), "%s", value);
        n++;
    }
    if (rc != SQLITE_DONE)
        return reg_fail(reg, rc, "cannot list the permissions of snapshot '%s'", id);
    *ret = list ? TAKE_PTR(list) : xcalloc(1, sizeof(**ret));
    *ret_n = n;
    return 0;
}

int registry_snapshot_permission_check(struct registry *reg, const char *id, const char *account,
                                       bool *ret_user, bool *ret_public)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    bool user = false, pub = false;
    int r, rc;

    r = check_id(id);
    if (r < 0)
        return r;
    r = reg_prepare(reg,
                    "SELECT kind FROM snapshot_permissions WHERE snapshot_id = ?1"
                    " AND ((kind = 'user' AND value = ?2) OR (kind = 'group' AND value = 'all'))",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    reg_bind_text(st, 2, account ? account : "");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *kind = (const char *)sqlite3_column_text(st, 0);
        if (kind && strcmp(kind, "group") == 0)
            pub = true;
        else
            user = true;
    }
    if (rc != SQLITE_DONE)
        return reg_fail(reg, rc, "cannot read the permissions of snapshot '%s'", id);
    if (ret_user)
        *ret_user = user;
    if (ret_public)
        *ret_public = pub;
    return 0;
}
