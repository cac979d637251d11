/* The permission tables: one implementation of add, remove, clear, list and
 * check for `image_launch_permissions` (images.c) and `snapshot_permissions`
 * (snapshot-permissions.c).  The tables have the same shape, (resource id,
 * kind, value) with the same CHECK constraints, and differ only in their
 * names and in the table that holds the resource itself, so each is
 * described once by a `struct reg_permission_table` of constant SQL (table
 * names cannot be bound; the statement cache wants string constants).
 *
 * Values are checked here before they are bound (-EINVAL naming them); the
 * CHECK constraints are the second line.  Rows read back are checked again
 * (-EBADMSG). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/ids.h"
#include "common/util.h"
#include "registry/internal.h"
#include "registry/permissions.h"

const struct reg_permission_table reg_image_permissions = {
    .what = "image",
    .id_prefix = "ami",
    .noun = "launch permission",
    .sql_exists = "SELECT 1 FROM images WHERE id = ?1",
    .sql_add = "INSERT INTO image_launch_permissions (image_id, kind, value)"
               " VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
    .sql_remove = "DELETE FROM image_launch_permissions"
                  " WHERE image_id = ?1 AND kind = ?2 AND value = ?3",
    .sql_clear = "DELETE FROM image_launch_permissions WHERE image_id = ?1",
    /* 'group' sorts after 'user' descending: users first, as EC2 lists. */
    .sql_list = "SELECT kind, value FROM image_launch_permissions WHERE image_id = ?1"
                " ORDER BY kind DESC, value",
    .sql_check = "SELECT kind FROM image_launch_permissions WHERE image_id = ?1"
                 " AND ((kind = 'user' AND value = ?2) OR (kind = 'group' AND value = 'all'))",
};

const struct reg_permission_table reg_snapshot_permissions = {
    .what = "snapshot",
    .id_prefix = "snap",
    .noun = "create-volume permission",
    .sql_exists = "SELECT 1 FROM snapshots WHERE id = ?1",
    .sql_add = "INSERT INTO snapshot_permissions (snapshot_id, kind, value)"
               " VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
    .sql_remove = "DELETE FROM snapshot_permissions"
                  " WHERE snapshot_id = ?1 AND kind = ?2 AND value = ?3",
    .sql_clear = "DELETE FROM snapshot_permissions WHERE snapshot_id = ?1",
    .sql_list = "SELECT kind, value FROM snapshot_permissions WHERE snapshot_id = ?1"
                " ORDER BY kind DESC, value",
    .sql_check = "SELECT kind FROM snapshot_permissions WHERE snapshot_id = ?1"
                 " AND ((kind = 'user' AND value = ?2) OR (kind = 'group' AND value = 'all'))",
};

static const char *kind_name(enum registry_permission_kind kind)
{
    switch (kind) {
    case REGISTRY_PERMISSION_USER: return "user";
    case REGISTRY_PERMISSION_GROUP: return "group";
    }
    return NULL;
}

int reg_permission_id_check(const struct reg_permission_table *t, const char *id)
{
    if (!id || !id_is_valid(t->id_prefix, id))
        return error_set(EINVAL, "malformed %s id '%.40s'", t->what, id ? id : "");
    return 0;
}

int reg_permission_validate(const struct reg_permission_table *t, const char *id,
                            enum registry_permission_kind kind, const char *value)
{
    if (!kind_name(kind))
        return error_set(EINVAL, "%s '%s': invalid %s kind %d", t->what, id, t->noun, (int)kind);
    if (kind == REGISTRY_PERMISSION_GROUP && (!value || strcmp(value, "all") != 0))
        return error_set(EINVAL, "%s '%s': invalid %s group '%.40s'", t->what, id, t->noun,
                         value ? value : "");
    if (kind == REGISTRY_PERMISSION_USER && (!value || !reg_account_is_valid(value)))
        return error_set(EINVAL, "%s '%s': invalid %s account '%.40s'", t->what, id, t->noun,
                         value ? value : "");
    return 0;
}

static int resource_exists(struct registry *reg, const struct reg_permission_table *t,
                           const char *id)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    r = reg_prepare(reg, t->sql_exists, &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    r = sqlite3_step(st);
    if (r == SQLITE_DONE)
        return error_set(ENOENT, "%s '%s' not found", t->what, id);
    if (r != SQLITE_ROW)
        return reg_fail(reg, r, "cannot read %s '%s'", t->what, id);
    return 0;
}

int reg_permission_write(struct registry *reg, const struct reg_permission_table *t,
                         const char *id, enum registry_permission_kind kind, const char *value,
                         bool add)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    r = reg_prepare(reg, add ? t->sql_add : t->sql_remove, &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    reg_bind_text(st, 2, kind_name(kind));
    reg_bind_text(st, 3, value);
    r = reg_step_done(reg, st, "cannot %s %s %s '%s' of %s '%s'", add ? "add" : "remove", t->noun,
                      kind_name(kind), value, t->what, id);
    return r < 0 ? r : 0;
}

int reg_permission_delete_all(struct registry *reg, const struct reg_permission_table *t,
                              const char *id)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    r = reg_prepare(reg, t->sql_clear, &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    r = reg_step_done(reg, st, "cannot remove the %ss of %s '%s'", t->noun, t->what, id);
    return r < 0 ? r : 0;
}

/* Run one change (add: 1, remove: 0, clear: -1) of resource `id` in a
 * transaction of its own (a savepoint inside the caller's) that also
 * checks that the resource exists. */
static int change(struct registry *reg, const struct reg_permission_table *t, const char *id,
                  enum registry_permission_kind kind, const char *value, int op)
{
    int r = reg_permission_id_check(t, id);

    if (r == 0 && op >= 0)
        r = reg_permission_validate(t, id, kind, value);
    if (r < 0)
        return r;
    r = registry_begin(reg);
    if (r < 0)
        return r;
    r = resource_exists(reg, t, id);
    if (r >= 0)
        r = op >= 0 ? reg_permission_write(reg, t, id, kind, value, op == 1)
                    : reg_permission_delete_all(reg, t, id);
    r = registry_end(reg, r);
    return r < 0 ? r : 0;
}

int reg_permission_add(struct registry *reg, const struct reg_permission_table *t, const char *id,
                       enum registry_permission_kind kind, const char *value)
{
    return change(reg, t, id, kind, value, 1);
}

int reg_permission_remove(struct registry *reg, const struct reg_permission_table *t,
                          const char *id, enum registry_permission_kind kind, const char *value)
{
    return change(reg, t, id, kind, value, 0);
}

int reg_permission_clear(struct registry *reg, const struct reg_permission_table *t,
                         const char *id)
{
    return change(reg, t, id, REGISTRY_PERMISSION_USER, NULL, -1);
}

struct permission_of {
    const struct reg_permission_table *t;
    const char *id;
};

static int read_permission(struct registry *reg, sqlite3_stmt *st, void *slot, void *data)
{
    const struct permission_of *of = data;
    const char *kind = (const char *)sqlite3_column_text(st, 0);
    const char *value = (const char *)sqlite3_column_text(st, 1);
    struct registry_permission *p = slot;

    if (kind && strcmp(kind, "user") == 0)
        p->kind = REGISTRY_PERMISSION_USER;
    else if (kind && strcmp(kind, "group") == 0)
        p->kind = REGISTRY_PERMISSION_GROUP;
    else
        return error_set(EBADMSG, "%s '%s' has a %s of unknown kind in registry '%s'",
                         of->t->what, of->id, of->t->noun, reg->path);
    if (!value || reg_permission_validate(of->t, of->id, p->kind, value) < 0)
        return error_set(EBADMSG, "%s '%s' has a malformed %s in registry '%s'", of->t->what,
                         of->id, of->t->noun, reg->path);
    snprintf(p->value, sizeof(p->value), "%s", value);
    return 0;
}

int reg_permission_list(struct registry *reg, const struct reg_permission_table *t,
                        const char *id, struct registry_permission **ret, size_t *ret_n)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    _cleanup_free_ char *what = NULL;
    struct permission_of of = { t, id };
    void *list;
    int r;

    r = reg_permission_id_check(t, id);
    if (r < 0)
        return r;
    r = reg_prepare(reg, t->sql_list, &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    what = xasprintf("the %ss of %s '%s'", t->noun, t->what, id);
    const struct reg_collector c = {
        .size = sizeof(struct registry_permission),
        .read = read_permission,
        .release = reg_collect_release_free,
        .what = what,
    };
    r = reg_collect(reg, st, &c, &of, &list, ret_n);
    if (r < 0)
        return r;
    *ret = list;
    return 0;
}

int reg_permission_check(struct registry *reg, const struct reg_permission_table *t,
                         const char *id, const char *account, bool *ret_user, bool *ret_public)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    bool user = false, pub = false;
    int r, rc;

    r = reg_permission_id_check(t, id);
    if (r < 0)
        return r;
    r = reg_prepare(reg, t->sql_check, &st);
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
        return reg_fail(reg, rc, "cannot read the %ss of %s '%s'", t->noun, t->what, id);
    if (ret_user)
        *ret_user = user;
    if (ret_public)
        *ret_public = pub;
    return 0;
}
