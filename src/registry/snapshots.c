/* Snapshot rows: typed insert, get, update, delete and list over the
 * `snapshots` table (docs/registry-schema.md).
 *
 * Every value is checked here before it is bound, so that a bad value is
 * -EINVAL with a message naming the field; the table's CHECK constraints
 * are the second line, for rows written by anything else.  A row read back
 * is checked again (-EBADMSG): a registry edited by hand must not hand a
 * malformed id or digest to the layers above.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "registry/internal.h"

#define SNAPSHOT_COLUMNS                                                                         \
    "id, owner, state, progress, volume_size, volume_size_gib, description, start_time, "       \
    "completion_time, map_id, parent_id, state_message, volume_id"

static const char *const state_names[] = {
    [SNAPSHOT_PENDING] = "pending",
    [SNAPSHOT_COMPLETED] = "completed",
    [SNAPSHOT_ERROR] = "error",
};

const char *snapshot_state_to_string(enum snapshot_state s)
{
    if ((unsigned)s >= ARRAY_SIZE(state_names))
        return NULL;
    return state_names[s];
}

int snapshot_state_from_string(const char *s, enum snapshot_state *ret)
{
    for (size_t i = 0; i < ARRAY_SIZE(state_names); i++)
        if (s && strcmp(s, state_names[i]) == 0) {
            *ret = (enum snapshot_state)i;
            return 0;
        }
    return error_set(EINVAL, "unknown snapshot state '%s'", s ? s : "");
}

void registry_snapshot_free(struct registry_snapshot *s)
{
    if (!s)
        return;
    free(s->description);
    free(s->state_message);
    free(s);
}

void registry_snapshot_list_free(struct registry_snapshot **list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++)
        registry_snapshot_free(list[i]);
    free(list);
}


/* ---- validation ------------------------------------------------------ */

/* The id is bounded by its array: a string that fills it without a NUL
 * is malformed, not read past. */
static bool id_field_is_valid(const char *field, size_t size)
{
    return memchr(field, '\0', size) && id_is_valid("snap", field);
}

/* The fields registry_snapshot_update() writes. */
static int validate_mutable(const struct registry_snapshot *s)
{
    if (!snapshot_state_to_string(s->state))
        return error_set(EINVAL, "snapshot '%s' has an invalid state %d", s->id, (int)s->state);
    if (s->progress < 0 || s->progress > 100)
        return error_set(EINVAL, "snapshot '%s' has progress %d, outside 0..100", s->id,
                         s->progress);
    if (s->state == SNAPSHOT_COMPLETED && !s->has_map)
        return error_set(EINVAL, "snapshot '%s' is completed but has no block map", s->id);
    if (s->completion_time < 0)
        return error_set(EINVAL, "snapshot '%s' has a negative completion time", s->id);
    return 0;
}

static int validate_all(const struct registry_snapshot *s)
{
    if (!id_field_is_valid(s->id, sizeof(s->id)))
        return error_set(EINVAL, "malformed snapshot id '%.*s'", (int)sizeof(s->id) - 1, s->id);
    if (!memchr(s->owner, '\0', sizeof(s->owner)) || !reg_account_is_valid(s->owner))
        return error_set(EINVAL, "snapshot '%s' has a malformed owner '%.*s'", s->id,
                         (int)sizeof(s->owner) - 1, s->owner);
    if (!memchr(s->parent_id, '\0', sizeof(s->parent_id)) ||
        (s->parent_id[0] && !id_is_valid("snap", s->parent_id)))
        return error_set(EINVAL, "snapshot '%s' has a malformed parent '%.*s'", s->id,
                         (int)sizeof(s->parent_id) - 1, s->parent_id);
    if (strcmp(s->parent_id, s->id) == 0)
        return error_set(EINVAL, "snapshot '%s' cannot be its own parent", s->id);
    if (!memchr(s->volume_id, '\0', sizeof(s->volume_id)) ||
        (s->volume_id[0] && !id_is_valid("vol", s->volume_id)))
        return error_set(EINVAL, "snapshot '%s' has a malformed volume id '%.*s'", s->id,
                         (int)sizeof(s->volume_id) - 1, s->volume_id);
    if (s->volume_size > (uint64_t)INT64_MAX)
        return error_set(EINVAL, "snapshot '%s' has a volume size too large", s->id);
    return validate_mutable(s);
}

static bool id_arg_is_valid(const char *id)
{
    return id && id_is_valid("snap", id);
}

/* ---- binding and reading rows ---------------------------------------- */

static void bind_map(sqlite3_stmt *st, int idx, const struct registry_snapshot *s,
                     char hex[DIGEST_HEX_SIZE])
{
    if (s->has_map)
        sqlite3_bind_text(st, idx, digest_to_hex(&s->map_id, hex), -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, idx);
}

/* Build a snapshot from a row of SNAPSHOT_COLUMNS. */
/* The current row of `st` into *(struct registry_snapshot **)slot: a reg_collector
 * reader (data unused), and the get's. */
static int read_row(struct registry *reg, sqlite3_stmt *st, void *slot, void *data)
{
    struct registry_snapshot **ret = slot;
    _cleanup_(registry_snapshot_freep) struct registry_snapshot *s = xcalloc(1, sizeof(*s));
    const char *state, *map;
    int64_t size;

    if (!reg_column_copy(st, 0, s->id, sizeof(s->id)) || !id_is_valid("snap", s->id))
        return error_set(EBADMSG, "registry '%s' holds a malformed snapshot id", reg->path);
    if (!reg_column_copy(st, 1, s->owner, sizeof(s->owner)) || !reg_account_is_valid(s->owner))
        return error_set(EBADMSG, "snapshot '%s' has a malformed owner in registry '%s'", s->id,
                         reg->path);
    state = (const char *)sqlite3_column_text(st, 2);
    if (snapshot_state_from_string(state, &s->state) < 0)
        return error_set(EBADMSG, "snapshot '%s' has an unknown state '%s' in registry '%s'",
                         s->id, state ? state : "", reg->path);
    s->progress = sqlite3_column_int(st, 3);
    size = sqlite3_column_int64(st, 4);
    if (size < 0 || s->progress < 0 || s->progress > 100)
        return error_set(EBADMSG, "snapshot '%s' has an out-of-range field in registry '%s'",
                         s->id, reg->path);
    s->volume_size = (uint64_t)size;
    s->volume_size_gib = (uint32_t)sqlite3_column_int64(st, 5);
    s->description = reg_column_strdup(st, 6);
    s->start_time = sqlite3_column_int64(st, 7);
    s->completion_time = sqlite3_column_int64(st, 8); /* NULL reads as 0 */
    map = (const char *)sqlite3_column_text(st, 9);
    if (map) {
        if (digest_from_hex(map, &s->map_id) < 0)
            return error_set(EBADMSG, "snapshot '%s' has a malformed block map id in registry '%s'",
                             s->id, reg->path);
        s->has_map = true;
    }
    if (!reg_column_copy(st, 10, s->parent_id, sizeof(s->parent_id)) ||
        (s->parent_id[0] && !id_is_valid("snap", s->parent_id)))
        return error_set(EBADMSG, "snapshot '%s' has a malformed parent in registry '%s'", s->id,
                         reg->path);
    s->state_message = reg_column_strdup(st, 11);
    if (!reg_column_copy(st, 12, s->volume_id, sizeof(s->volume_id)) ||
        (s->volume_id[0] && !id_is_valid("vol", s->volume_id)))
        return error_set(EBADMSG, "snapshot '%s' has a malformed volume id in registry '%s'",
                         s->id, reg->path);
    *ret = TAKE_PTR(s);
    return 0;
}

/* ---- queries ----------------------------------------------------------- */

int registry_snapshot_insert(struct registry *reg, const struct registry_snapshot *s)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    char hex[DIGEST_HEX_SIZE];
    int r;

    r = validate_all(s);
    if (r < 0)
        return r;
    r = reg_prepare(reg,
                    "INSERT INTO snapshots (" SNAPSHOT_COLUMNS ")"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, s->id);
    reg_bind_text(st, 2, s->owner);
    reg_bind_text(st, 3, snapshot_state_to_string(s->state));
    sqlite3_bind_int(st, 4, s->progress);
    sqlite3_bind_int64(st, 5, (int64_t)s->volume_size);
    sqlite3_bind_int64(st, 6, s->volume_size_gib);
    reg_bind_text(st, 7, s->description);
    sqlite3_bind_int64(st, 8, s->start_time);
    reg_bind_positive(st, 9, s->completion_time);
    bind_map(st, 10, s, hex);
    reg_bind_text(st, 11, s->parent_id[0] ? s->parent_id : NULL);
    reg_bind_text(st, 12, s->state_message);
    reg_bind_text(st, 13, s->volume_id[0] ? s->volume_id : NULL);
    r = reg_step_done(reg, st, "cannot insert snapshot '%s'", s->id);
    if (r == -EEXIST)
        return error_set(EEXIST, "snapshot '%s' already exists", s->id);
    return r < 0 ? r : 0;
}

int registry_snapshot_get(struct registry *reg, const char *id, struct registry_snapshot **ret)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    if (!id_arg_is_valid(id))
        return error_set(EINVAL, "malformed snapshot id '%s'", id ? id : "");
    r = reg_select_by_id(reg, "SELECT " SNAPSHOT_COLUMNS " FROM snapshots WHERE id = ?1",
                         "snapshot", id, &st);
    if (r < 0)
        return r;
    return read_row(reg, st, ret, NULL);
}

/* Why did an update match no row: absent, or a completed snapshot whose
 * map the caller tried to change? */
static int explain_no_update(struct registry *reg, const char *id)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r, rc;

    r = reg_prepare(reg, "SELECT state FROM snapshots WHERE id = ?1", &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return error_set(ENOENT, "snapshot '%s' not found", id);
    if (rc != SQLITE_ROW)
        return reg_fail(reg, rc, "cannot read snapshot '%s'", id);
    return error_set(EROFS, "snapshot '%s' is completed: its block map cannot change", id);
}

int registry_snapshot_update(struct registry *reg, const struct registry_snapshot *s)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    char hex[DIGEST_HEX_SIZE];
    int r;

    if (!id_field_is_valid(s->id, sizeof(s->id)))
        return error_set(EINVAL, "malformed snapshot id '%.*s'", (int)sizeof(s->id) - 1, s->id);
    r = validate_mutable(s);
    if (r < 0)
        return r;
    /* One statement, so the immutability check and the write are atomic:
     * a completed row matches only if its map stays what it is. */
    r = reg_prepare(reg,
                    "UPDATE snapshots SET state = ?2, progress = ?3, map_id = ?4,"
                    " completion_time = ?5, state_message = ?6"
                    " WHERE id = ?1 AND (state <> 'completed' OR map_id IS ?4)",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, s->id);
    reg_bind_text(st, 2, snapshot_state_to_string(s->state));
    sqlite3_bind_int(st, 3, s->progress);
    bind_map(st, 4, s, hex);
    reg_bind_positive(st, 5, s->completion_time);
    reg_bind_text(st, 6, s->state_message);
    r = reg_step_done(reg, st, "cannot update snapshot '%s'", s->id);
    if (r < 0)
        return r;
    if (r == 0) {
        sqlite3_reset(st);
        return explain_no_update(reg, s->id);
    }
    return 0;
}

int registry_snapshot_delete(struct registry *reg, const char *id)
{
    if (!id_arg_is_valid(id))
        return error_set(EINVAL, "malformed snapshot id '%s'", id ? id : "");
    /* No foreign key cascades to snapshot_permissions (migration 3). */
    return reg_delete_resource(reg, "DELETE FROM snapshots WHERE id = ?1", "snapshot", id,
                               reg_snapshot_permissions_delete);
}

static void release_rows(void *list, size_t n)
{
    registry_snapshot_list_free(list, n);
}

int registry_snapshot_list(struct registry *reg, struct registry_snapshot ***ret, size_t *ret_n)
{
    static const struct reg_collector c = {
        .size = sizeof(struct registry_snapshot *),
        .read = read_row,
        .release = release_rows,
        .what = "snapshots",
    };
    void *list;
    int r = reg_list(reg, "SELECT " SNAPSHOT_COLUMNS " FROM snapshots ORDER BY start_time, id", &c,
                     &list, ret_n);

    if (r == 0)
        *ret = list;
    return r;
}

int registry_snapshots_using_map(struct registry *reg, const struct digest *map_id,
                                 size_t *ret_count)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    char hex[DIGEST_HEX_SIZE];
    int r, rc;

    r = reg_prepare(reg, "SELECT count(*) FROM snapshots WHERE map_id = ?1", &st);
    if (r < 0)
        return r;
    sqlite3_bind_text(st, 1, digest_to_hex(map_id, hex), -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        return reg_fail(reg, rc, "cannot count the snapshots using block map '%s'", hex);
    *ret_count = (size_t)sqlite3_column_int64(st, 0);
    return 0;
}
