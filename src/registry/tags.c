/* Tags: key/value pairs on any resource id, in the `tags` table
 * (docs/registry-schema.md).  The registry stores what it is given; the
 * EC2 rules on keys and values (length, the reserved "aws:" prefix, the
 * limit of 50 per resource) are checked by the API before it calls here.
 */
#include <errno.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "registry/internal.h"

void registry_tag_list_free(struct registry_tag *tags, size_t n)
{
    if (!tags)
        return;
    for (size_t i = 0; i < n; i++) {
        free(tags[i].key);
        free(tags[i].value);
    }
    free(tags);
}

static int check_args(const char *resource_id, const char *key, const char *what)
{
    if (!resource_id || !resource_id[0])
        return error_set(EINVAL, "cannot %s tag: no resource id", what);
    if (key && !key[0])
        return error_set(EINVAL, "cannot %s tag on '%s': empty key", what, resource_id);
    return 0;
}

int registry_tag_set(struct registry *reg, const char *resource_id, const char *key,
                     const char *value)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    r = check_args(resource_id, key ? key : "", "set");
    if (r < 0)
        return r;
    r = reg_prepare(reg,
                    "INSERT INTO tags (resource_id, key, value) VALUES (?1, ?2, ?3)"
                    " ON CONFLICT (resource_id, key) DO UPDATE SET value = excluded.value",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, resource_id);
    reg_bind_text(st, 2, key);
    reg_bind_text(st, 3, value ? value : "");
    r = reg_step_done(reg, st, "cannot set tag '%s' on '%s'", key, resource_id);
    return r < 0 ? r : 0;
}

int registry_tag_delete(struct registry *reg, const char *resource_id, const char *key,
                        const char *value)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    r = check_args(resource_id, key ? key : "", "delete");
    if (r < 0)
        return r;
    r = reg_prepare(reg,
                    "DELETE FROM tags WHERE resource_id = ?1 AND key = ?2"
                    " AND (?3 IS NULL OR value = ?3)",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, resource_id);
    reg_bind_text(st, 2, key);
    reg_bind_text(st, 3, value);
    r = reg_step_done(reg, st, "cannot delete tag '%s' from '%s'", key, resource_id);
    return r < 0 ? r : 0;
}

int registry_tag_list(struct registry *reg, const char *resource_id, struct registry_tag **ret,
                      size_t *ret_n)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    struct registry_tag *tags = NULL;
    size_t n = 0, cap = 0;
    int r, rc;

    r = check_args(resource_id, NULL, "list");
    if (r < 0)
        return r;
    r = reg_prepare(reg, "SELECT key, value FROM tags WHERE resource_id = ?1 ORDER BY key",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, resource_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            tags = xrealloc(tags, cap * sizeof(*tags));
        }
        tags[n].key = reg_column_strdup(st, 0);
        tags[n].value = reg_column_strdup(st, 1);
        if (!tags[n].key || !tags[n].value) {
            /* NOT NULL columns: only a damaged file gets here. */
            free(tags[n].key);
            free(tags[n].value);
            registry_tag_list_free(tags, n);
            return error_set(EBADMSG, "tag on '%s' has a NULL key or value", resource_id);
        }
        n++;
    }
    if (rc != SQLITE_DONE) {
        r = reg_fail(reg, rc, "cannot list the tags of '%s'", resource_id);
        registry_tag_list_free(tags, n);
        return r;
    }
    *ret = tags ? tags : xcalloc(1, sizeof(*tags));
    *ret_n = n;
    return 0;
}
