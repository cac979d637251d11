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

static int read_tag(struct registry *reg, sqlite3_stmt *st, void *slot, void *data)
{
    struct registry_tag *tag = slot;

    (void)reg;
    tag->key = reg_column_strdup(st, 0);
    tag->value = reg_column_strdup(st, 1);
    if (!tag->key || !tag->value) /* NOT NULL columns: only a damaged file gets here */
        return error_set(EBADMSG, "tag on '%s' has a NULL key or value", (const char *)data);
    return 0;
}

static void release_tags(void *list, size_t n)
{
    registry_tag_list_free(list, n);
}

int registry_tag_list(struct registry *reg, const char *resource_id, struct registry_tag **ret,
                      size_t *ret_n)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    _cleanup_free_ char *what = NULL;
    void *tags;
    int r;

    r = check_args(resource_id, NULL, "list");
    if (r < 0)
        return r;
    what = xasprintf("the tags of '%s'", resource_id);
    const struct reg_collector c = {
        .size = sizeof(struct registry_tag),
        .read = read_tag,
        .release = release_tags,
        .what = what,
    };
    r = reg_prepare(reg, "SELECT key, value FROM tags WHERE resource_id = ?1 ORDER BY key",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, resource_id);
    r = reg_collect(reg, st, &c, (void *)resource_id, &tags, ret_n);
    if (r < 0)
        return r;
    *ret = tags;
    return 0;
}

static int read_resource_id(struct registry *reg, sqlite3_stmt *st, void *slot, void *data)
{
    char **id = slot;

    (void)reg, (void)data;
    *id = reg_column_strdup(st, 0);
    if (!*id)
        return error_set(EBADMSG, "a tag row has a NULL resource id");
    return 0;
}

static void release_ids(void *list, size_t n)
{
    char **ids = list;

    for (size_t i = 0; ids && i < n; i++)
        free(ids[i]);
    free(ids);
}

int registry_tag_find(struct registry *reg, const char *key, const char *value,
                      const char *prefix, char ***ret, size_t *ret_n)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    _cleanup_free_ char *what = NULL, *like = NULL;
    void *ids;
    int r;

    if (!key || !key[0] || !value || !prefix || !prefix[0] || strpbrk(prefix, "%_\\"))
        return error_set(EINVAL, "cannot find tagged resources: empty key or bad prefix");
    what = xasprintf("the %s- resources tagged %s=%s", prefix, key, value);
    like = xasprintf("%s-%%", prefix);
    const struct reg_collector c = {
        .size = sizeof(char *),
        .read = read_resource_id,
        .release = release_ids,
        .what = what,
    };
    r = reg_prepare(reg,
                    "SELECT resource_id FROM tags WHERE key = ?1 AND value = ?2"
                    " AND resource_id LIKE ?3 ORDER BY resource_id",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, key);
    reg_bind_text(st, 2, value);
    reg_bind_text(st, 3, like);
    r = reg_collect(reg, st, &c, NULL, &ids, ret_n);
    if (r < 0)
        return r;
    *ret = ids;
    return 0;
}
