/* Jobs (`jobs`, `job_items`) and client tokens (`client_tokens`): typed
 * queries over migration 4 (docs/formats.md).  Values are checked before
 * they are bound (-EINVAL naming the field) and rows are checked again when
 * read back (-EBADMSG), as in snapshots.c.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "registry/internal.h"
#include "registry/jobs.h"

static const char *const kind_names[] = {
    [JOB_COPY_IMAGE] = "copy-image",
    [JOB_COPY_SNAPSHOT] = "copy-snapshot",
    [JOB_VOLUME_SNAPSHOT] = "volume-snapshot",
};

const char *registry_job_kind_to_string(enum registry_job_kind k)
{
    if ((unsigned)k >= ARRAY_SIZE(kind_names))
        return NULL;
    return kind_names[k];
}

static int kind_from_string(const char *s, enum registry_job_kind *ret)
{
    for (size_t i = 0; i < ARRAY_SIZE(kind_names); i++)
        if (s && strcmp(s, kind_names[i]) == 0) {
            *ret = (enum registry_job_kind)i;
            return 0;
        }
    return -EINVAL;
}

void registry_job_free(struct registry_job *j)
{
    if (!j)
        return;
    free(j->items);
    free(j);
}

void registry_job_list_free(struct registry_job **list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++)
        registry_job_free(list[i]);
    free(list);
}

DEFINE_CLEANUP_FREE(struct registry_job, registry_job_free)

/* ---- validation ------------------------------------------------------ */

static bool field_ok(const char *field, size_t size)
{
    return memchr(field, '\0', size) != NULL;
}

static bool region_ok(const char *s, size_t size)
{
    size_t len;

    if (!field_ok(s, size))
        return false;
    len = strlen(s);
    return len >= 1 && len <= JOB_REGION_SIZE - 1;
}

/* Everything but the items. */
static int validate_header(const struct registry_job *j)
{
    const char *prefix = j->kind == JOB_COPY_IMAGE ? "ami" : "snap";
    const char *source = j->kind == JOB_VOLUME_SNAPSHOT ? "vol" : prefix;

    if (!registry_job_kind_to_string(j->kind))
        return error_set(EINVAL, "job has an invalid kind %d", (int)j->kind);
    if (!field_ok(j->id, sizeof(j->id)) || !id_is_valid(prefix, j->id))
        return error_set(EINVAL, "malformed %s job id '%.*s'", kind_names[j->kind],
                         (int)sizeof(j->id) - 1, j->id);
    if (!field_ok(j->owner, sizeof(j->owner)) || !reg_account_is_valid(j->owner))
        return error_set(EINVAL, "job '%s' has a malformed owner", j->id);
    if (!region_ok(j->source_region, sizeof(j->source_region)))
        return error_set(EINVAL, "job '%s' has a malformed source region", j->id);
    if (!field_ok(j->source_id, sizeof(j->source_id)) || !id_is_valid(source, j->source_id))
        return error_set(EINVAL, "job '%s' has a malformed source id", j->id);
    if (j->created < 0)
        return error_set(EINVAL, "job '%s' has a negative creation time", j->id);
    return 0;
}

static int validate(const struct registry_job *j)
{
    int r = validate_header(j);

    if (r < 0)
        return r;
    if (j->n_items < 1 || j->n_items > JOB_ITEMS_MAX)
        return error_set(EINVAL, "job '%s' has %zu items (1 to %d)", j->id, j->n_items,
                         JOB_ITEMS_MAX);
    for (size_t i = 0; i < j->n_items; i++) {
        const struct registry_job_item *it = &j->items[i];
        if (!field_ok(it->source_snapshot_id, sizeof(it->source_snapshot_id)) ||
            !id_is_valid("snap", it->source_snapshot_id) ||
            !field_ok(it->target_snapshot_id, sizeof(it->target_snapshot_id)) ||
            !id_is_valid("snap", it->target_snapshot_id))
            return error_set(EINVAL, "job '%s' item %zu has a malformed snapshot id", j->id, i);
    }
    return 0;
}

/* ---- jobs ---------------------------------------------------------------- */

static int insert_rows(struct registry *reg, const struct registry_job *j)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    r = reg_prepare(reg,
                    "INSERT INTO jobs (id, kind, owner, source_region, source_id, created)"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, j->id);
    reg_bind_text(st, 2, kind_names[j->kind]);
    reg_bind_text(st, 3, j->owner);
    reg_bind_text(st, 4, j->source_region);
    reg_bind_text(st, 5, j->source_id);
    sqlite3_bind_int64(st, 6, j->created);
    r = reg_step_done(reg, st, "cannot insert job '%s'", j->id);
    if (r < 0)
        return r;
    for (size_t i = 0; i < j->n_items; i++) {
        _cleanup_stmt_ sqlite3_stmt *it = NULL;
        char hex[DIGEST_HEX_SIZE];

        r = reg_prepare(reg,
                        "INSERT INTO job_items (job_id, position, source_snapshot_id,"
                        " source_map_id, target_snapshot_id) VALUES (?1, ?2, ?3, ?4, ?5)",
                        &it);
        if (r < 0)
            return r;
        reg_bind_text(it, 1, j->id);
        sqlite3_bind_int64(it, 2, (int64_t)i);
        reg_bind_text(it, 3, j->items[i].source_snapshot_id);
        sqlite3_bind_text(it, 4, digest_to_hex(&j->items[i].source_map_id, hex), -1,
                          SQLITE_STATIC);
        reg_bind_text(it, 5, j->items[i].target_snapshot_id);
        r = reg_step_done(reg, it, "cannot insert item %zu of job '%s'", i, j->id);
        if (r < 0)
            return r;
    }
    return 0;
}

int registry_job_insert(struct registry *reg, const struct registry_job *j)
{
    int r = validate(j);

    if (r < 0)
        return r;
    r = registry_begin(reg);
    if (r < 0)
        return r;
    r = insert_rows(reg, j);
    if (r >= 0)
        r = registry_commit(reg);
    if (r < 0)
        registry_rollback(reg);
    return r < 0 ? r : 0;
}

/* Copy column `col` into a fixed array; false when absent or too long. */
static bool copy_column(sqlite3_stmt *st, int col, char *buf, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    int len = sqlite3_column_bytes(st, col);

    if (!t || (size_t)len >= size || memchr(t, '\0', (size_t)len))
        return false;
    memcpy(buf, t, (size_t)len + 1);
    return true;
}

static int load_items(struct registry *reg, struct registry_job *j)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    r = reg_prepare(reg,
                    "SELECT source_snapshot_id, source_map_id, target_snapshot_id"
                    " FROM job_items WHERE job_id = ?1 ORDER BY position",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, j->id);
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        struct registry_job_item it = { 0 };
        const char *map = (const char *)sqlite3_column_text(st, 1);

        if (j->n_items == JOB_ITEMS_MAX ||
            !copy_column(st, 0, it.source_snapshot_id, sizeof(it.source_snapshot_id)) ||
            !id_is_valid("snap", it.source_snapshot_id) || !map ||
            digest_from_hex(map, &it.source_map_id) < 0 ||
            !copy_column(st, 2, it.target_snapshot_id, sizeof(it.target_snapshot_id)) ||
            !id_is_valid("snap", it.target_snapshot_id))
            return error_set(EBADMSG, "job '%s' has a malformed item in registry '%s'", j->id,
                             reg->path);
        j->items = xrealloc(j->items, (j->n_items + 1) * sizeof(*j->items));
        j->items[j->n_items++] = it;
    }
    if (r != SQLITE_DONE)
        return reg_fail(reg, r, "cannot read the items of job '%s'", j->id);
    if (j->n_items == 0)
        return error_set(EBADMSG, "job '%s' has no items in registry '%s'", j->id, reg->path);
    return 0;
}

#define JOB_COLUMNS "id, kind, owner, source_region, source_id, created"

static int read_job(struct registry *reg, sqlite3_stmt *st, struct registry_job **ret)
{
    _cleanup_(registry_job_freep) struct registry_job *j = xcalloc(1, sizeof(*j));

    if (!copy_column(st, 0, j->id, sizeof(j->id)) ||
        kind_from_string((const char *)sqlite3_column_text(st, 1), &j->kind) < 0 ||
        !copy_column(st, 2, j->owner, sizeof(j->owner)) ||
        !copy_column(st, 3, j->source_region, sizeof(j->source_region)) ||
        !copy_column(st, 4, j->source_id, sizeof(j->source_id)))
        return error_set(EBADMSG, "registry '%s' holds a malformed job", reg->path);
    j->created = sqlite3_column_int64(st, 5);
    if (validate_header(j) < 0)
        return error_set(EBADMSG, "job '%s' is malformed in registry '%s'", j->id, reg->path);
    *ret = TAKE_PTR(j);
    return 0;
}

int registry_job_get(struct registry *reg, const char *id, struct registry_job **ret)
{
    _cleanup_(registry_job_freep) struct registry_job *j = NULL;
    int r;

    {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        r = reg_prepare(reg, "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1", &st);
        if (r < 0)
            return r;
        reg_bind_text(st, 1, id);
        r = sqlite3_step(st);
        if (r == SQLITE_DONE)
            return error_set(ENOENT, "no job '%s'", id);
        if (r != SQLITE_ROW)
            return reg_fail(reg, r, "cannot read job '%s'", id);
        r = read_job(reg, st, &j);
        if (r < 0)
            return r;
    }
    r = load_items(reg, j);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(j);
    return 0;
}

int registry_job_list(struct registry *reg, struct registry_job ***ret, size_t *ret_n)
{
    struct registry_job **list = NULL;
    size_t n = 0;
    int r;

    {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        r = reg_prepare(reg, "SELECT " JOB_COLUMNS " FROM jobs ORDER BY created, id", &st);
        if (r < 0)
            return r;
        while ((r = sqlite3_step(st)) == SQLITE_ROW) {
            struct registry_job *j = NULL;
            int e = read_job(reg, st, &j);
            if (e < 0) {
                registry_job_list_free(list, n);
                return e;
            }
            list = xrealloc(list, (n + 1) * sizeof(*list));
            list[n++] = j;
        }
        if (r != SQLITE_DONE) {
            r = reg_fail(reg, r, "cannot list the jobs");
            registry_job_list_free(list, n);
            return r;
        }
    }
    for (size_t i = 0; i < n; i++) {
        r = load_items(reg, list[i]);
        if (r < 0) {
            registry_job_list_free(list, n);
            return r;
        }
    }
    *ret = list;
    *ret_n = n;
    return 0;
}

int registry_job_delete(struct registry *reg, const char *id)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    r = reg_prepare(reg, "DELETE FROM jobs WHERE id = ?1", &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    r = reg_step_done(reg, st, "cannot delete job '%s'", id);
    if (r == 0)
        return error_set(ENOENT, "no job '%s'", id);
    return r < 0 ? r : 0;
}

int registry_job_source_maps(struct registry *reg, const char *source_region,
                             struct digest **ret, size_t *ret_n)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    struct digest *maps = NULL;
    size_t n = 0;
    int r;

    r = reg_prepare(reg,
                    "SELECT DISTINCT i.source_map_id FROM job_items i"
                    " JOIN jobs j ON j.id = i.job_id WHERE j.source_region = ?1",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, source_region);
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        const char *hex = (const char *)sqlite3_column_text(st, 0);
        struct digest d;
        if (!hex || digest_from_hex(hex, &d) < 0) {
            free(maps);
            return error_set(EBADMSG, "registry '%s' holds a malformed job block map id",
                             reg->path);
        }
        maps = xrealloc(maps, (n + 1) * sizeof(*maps));
        maps[n++] = d;
    }
    if (r != SQLITE_DONE) {
        free(maps);
        return reg_fail(reg, r, "cannot list the block maps jobs read from region '%s'",
                        source_region);
    }
    *ret = maps;
    *ret_n = n;
    return 0;
}

/* ---- client tokens ------------------------------------------------------ */

bool client_token_is_valid(const char *token)
{
    size_t len = 0;

    for (; token[len]; len++)
        if (token[len] < 0x20 || token[len] > 0x7e || len >= CLIENT_TOKEN_MAX)
            return false;
    return len >= 1;
}

static int check_key(const char *account, const char *token)
{
    if (!reg_account_is_valid(account))
        return error_set(EINVAL, "malformed account id '%.20s'", account);
    if (!client_token_is_valid(token))
        return error_set(EINVAL, "malformed client token (1 to %d printable ASCII characters)",
                         CLIENT_TOKEN_MAX);
    return 0;
}

int registry_client_token_get(struct registry *reg, const char *account, const char *token,
                              struct registry_client_token *ret)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    struct registry_client_token t = { 0 };
    const char *params;
    int r;

    r = check_key(account, token);
    if (r < 0)
        return r;
    r = reg_prepare(reg,
                    "SELECT action, params, resource_id, created FROM client_tokens"
                    " WHERE account = ?1 AND token = ?2",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, account);
    reg_bind_text(st, 2, token);
    r = sqlite3_step(st);
    if (r == SQLITE_DONE)
        return -ENOENT; /* a new token: not an error worth a message */
    if (r != SQLITE_ROW)
        return reg_fail(reg, r, "cannot read a client token of account %s", account);
    params = (const char *)sqlite3_column_text(st, 1);
    if (!copy_column(st, 0, t.action, sizeof(t.action)) || !params ||
        digest_from_hex(params, &t.params) < 0 ||
        !copy_column(st, 2, t.resource_id, sizeof(t.resource_id)))
        return error_set(EBADMSG, "registry '%s' holds a malformed client token", reg->path);
    t.created = sqlite3_column_int64(st, 3);
    *ret = t;
    return 0;
}

int registry_client_token_insert(struct registry *reg, const char *account, const char *token,
                                 const struct registry_client_token *t)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    char hex[DIGEST_HEX_SIZE];
    int r;

    r = check_key(account, token);
    if (r < 0)
        return r;
    if (!field_ok(t->action, sizeof(t->action)) || !t->action[0] ||
        !field_ok(t->resource_id, sizeof(t->resource_id)) || !t->resource_id[0] ||
        t->created < 0)
        return error_set(EINVAL, "malformed client token record");
    r = reg_prepare(reg,
                    "INSERT INTO client_tokens (account, token, action, params, resource_id,"
                    " created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, account);
    reg_bind_text(st, 2, token);
    reg_bind_text(st, 3, t->action);
    sqlite3_bind_text(st, 4, digest_to_hex(&t->params, hex), -1, SQLITE_STATIC);
    reg_bind_text(st, 5, t->resource_id);
    sqlite3_bind_int64(st, 6, t->created);
    r = reg_step_done(reg, st, "cannot record a client token of account %s", account);
    return r < 0 ? r : 0;
}
