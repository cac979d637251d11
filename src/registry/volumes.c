/* Volume rows: typed insert, get, update, delete and list over the
 * `volumes` table (docs/registry-schema.md).  Values are checked here
 * (-EINVAL naming the field) before they are bound; the table's CHECK
 * constraints are the second line; rows read back are checked again
 * (-EBADMSG). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "registry/internal.h"
#include "registry/volumes.h"

#define VOLUME_COLUMNS                                                                           \
    "id, owner, availability_zone, size_gib, snapshot_id, base_map_id, state, create_time, "     \
    "volume_type, iops, throughput, instance_id, device, attach_time"

static const char *const state_names[] = {
    [VOLUME_CREATING] = "creating", [VOLUME_AVAILABLE] = "available",
    [VOLUME_IN_USE] = "in-use",     [VOLUME_DELETING] = "deleting",
    [VOLUME_DELETED] = "deleted",   [VOLUME_ERROR] = "error",
};

const char *volume_state_to_string(enum volume_state s)
{
    if ((unsigned)s >= ARRAY_SIZE(state_names))
        return NULL;
    return state_names[s];
}

int volume_state_from_string(const char *s, enum volume_state *ret)
{
    for (size_t i = 0; i < ARRAY_SIZE(state_names); i++)
        if (s && strcmp(s, state_names[i]) == 0) {
            *ret = (enum volume_state)i;
            return 0;
        }
    return error_set(EINVAL, "unknown volume state '%s'", s ? s : "");
}

void registry_volume_free(struct registry_volume *v)
{
    free(v);
}

void registry_volume_list_free(struct registry_volume **list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++)
        registry_volume_free(list[i]);
    free(list);
}

/* ---- validation ---- */

static int validate_mutable(const struct registry_volume *v)
{
    if (!volume_state_to_string(v->state))
        return error_set(EINVAL, "volume '%s' has an invalid state %d", v->id, (int)v->state);
    if (v->size_gib < 1 || v->size_gib > VOLUME_SIZE_GIB_MAX)
        return error_set(EINVAL, "volume '%s' has size %u GiB, outside 1..%d", v->id,
                         v->size_gib, VOLUME_SIZE_GIB_MAX);
    if (v->iops < 0 || v->throughput < 0)
        return error_set(EINVAL, "volume '%s' has negative iops or throughput", v->id);
    if (!reg_terminated(v->instance_id, sizeof(v->instance_id)) ||
        (v->instance_id[0] && !id_is_valid("i", v->instance_id)))
        return error_set(EINVAL, "volume '%s' has a malformed instance id", v->id);
    if (!reg_terminated(v->device, sizeof(v->device)) || !reg_printable(v->device))
        return error_set(EINVAL, "volume '%s' has a malformed device name", v->id);
    if (!v->instance_id[0] != !v->device[0])
        return error_set(EINVAL, "volume '%s': an attachment needs an instance and a device",
                         v->id);
    if (v->attach_time < 0)
        return error_set(EINVAL, "volume '%s' has a negative attach time", v->id);
    return 0;
}

static int validate_all(const struct registry_volume *v)
{
    if (!reg_terminated(v->id, sizeof(v->id)) || !id_is_valid("vol", v->id))
        return error_set(EINVAL, "malformed volume id '%.*s'", (int)sizeof(v->id) - 1, v->id);
    if (!reg_terminated(v->owner, sizeof(v->owner)) || !reg_account_is_valid(v->owner))
        return error_set(EINVAL, "volume '%s' has a malformed owner", v->id);
    if (!reg_terminated(v->availability_zone, sizeof(v->availability_zone)) ||
        !v->availability_zone[0] || !reg_printable(v->availability_zone))
        return error_set(EINVAL, "volume '%s' has a malformed availability zone", v->id);
    if (!reg_terminated(v->snapshot_id, sizeof(v->snapshot_id)) ||
        (v->snapshot_id[0] && !id_is_valid("snap", v->snapshot_id)))
        return error_set(EINVAL, "volume '%s' has a malformed snapshot id", v->id);
    if (!v->snapshot_id[0] != !v->has_base)
        return error_set(EINVAL, "volume '%s': a snapshot id goes with its block map", v->id);
    if (!reg_terminated(v->volume_type, sizeof(v->volume_type)) || strcmp(v->volume_type, "gp3"))
        return error_set(EINVAL, "volume '%s' has an unsupported volume type", v->id);
    return validate_mutable(v);
}

static bool id_arg_is_valid(const char *id)
{
    return id && id_is_valid("vol", id);
}

/* ---- rows ---- */

/* The current row of `st` into *(struct registry_volume **)slot: a reg_collector
 * reader (data unused), and the get's. */
static int read_row(struct registry *reg, sqlite3_stmt *st, void *slot, void *data)
{
    struct registry_volume **ret = slot;
    _cleanup_(registry_volume_freep) struct registry_volume *v = xcalloc(1, sizeof(*v));
    const char *map, *state;
    int64_t size;

    if (!reg_column_copy(st, 0, v->id, sizeof(v->id)) || !id_is_valid("vol", v->id))
        return error_set(EBADMSG, "registry '%s' holds a malformed volume id", reg->path);
    size = sqlite3_column_int64(st, 3);
    state = (const char *)sqlite3_column_text(st, 6);
    map = (const char *)sqlite3_column_text(st, 5);
    if (!reg_column_copy(st, 1, v->owner, sizeof(v->owner)) ||
        !reg_column_copy(st, 2, v->availability_zone, sizeof(v->availability_zone)) ||
        !reg_column_copy(st, 4, v->snapshot_id, sizeof(v->snapshot_id)) ||
        !reg_column_copy(st, 8, v->volume_type, sizeof(v->volume_type)) ||
        !reg_column_copy(st, 11, v->instance_id, sizeof(v->instance_id)) ||
        !reg_column_copy(st, 12, v->device, sizeof(v->device)) || size < 1 ||
        size > VOLUME_SIZE_GIB_MAX || volume_state_from_string(state, &v->state) < 0 ||
        (map && digest_from_hex(map, &v->base_map_id) < 0))
        return error_set(EBADMSG, "volume '%s' has a malformed field in registry '%s'", v->id,
                         reg->path);
    v->has_base = map != NULL;
    v->size_gib = (uint32_t)size;
    v->create_time = sqlite3_column_int64(st, 7);
    v->iops = sqlite3_column_int(st, 9);
    v->throughput = sqlite3_column_int(st, 10);
    v->attach_time = sqlite3_column_int64(st, 13);
    if (validate_all(v) < 0) {
        char why[256]; /* error_set() reuses error_message()'s buffer */
        snprintf(why, sizeof(why), "%s", error_message() ? error_message() : "invalid");
        return error_set(EBADMSG, "volume '%s' in registry '%s': %s", v->id, reg->path, why);
    }
    *ret = TAKE_PTR(v);
    return 0;
}

int registry_volume_insert(struct registry *reg, const struct registry_volume *v)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    char hex[DIGEST_HEX_SIZE];
    int r = validate_all(v);

    if (r < 0)
        return r;
    r = reg_prepare(reg,
                    "INSERT INTO volumes (" VOLUME_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6,"
                    " ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, v->id);
    reg_bind_text(st, 2, v->owner);
    reg_bind_text(st, 3, v->availability_zone);
    sqlite3_bind_int64(st, 4, v->size_gib);
    reg_bind_text(st, 5, v->snapshot_id[0] ? v->snapshot_id : NULL);
    reg_bind_text(st, 6, v->has_base ? digest_to_hex(&v->base_map_id, hex) : NULL);
    reg_bind_text(st, 7, volume_state_to_string(v->state));
    sqlite3_bind_int64(st, 8, v->create_time);
    reg_bind_text(st, 9, v->volume_type);
    sqlite3_bind_int(st, 10, v->iops);
    sqlite3_bind_int(st, 11, v->throughput);
    reg_bind_text(st, 12, v->instance_id[0] ? v->instance_id : NULL);
    reg_bind_text(st, 13, v->device[0] ? v->device : NULL);
    reg_bind_positive(st, 14, v->attach_time);
    r = reg_step_done(reg, st, "cannot insert volume '%s'", v->id);
    if (r == -EEXIST)
        return error_set(EEXIST, "volume '%s' already exists", v->id);
    return r < 0 ? r : 0;
}

int registry_volume_get(struct registry *reg, const char *id, struct registry_volume **ret)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    if (!id_arg_is_valid(id))
        return error_set(EINVAL, "malformed volume id '%s'", id ? id : "");
    r = reg_select_by_id(reg, "SELECT " VOLUME_COLUMNS " FROM volumes WHERE id = ?1",
                         "volume", id, &st);
    if (r < 0)
        return r;
    return read_row(reg, st, ret, NULL);
}

int registry_volume_update(struct registry *reg, const struct registry_volume *v)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    _cleanup_(registry_volume_freep) struct registry_volume *old = NULL;
    int r;

    if (!reg_terminated(v->id, sizeof(v->id)) || !id_arg_is_valid(v->id))
        return error_set(EINVAL, "malformed volume id '%.*s'", (int)sizeof(v->id) - 1, v->id);
    r = validate_mutable(v);
    if (r < 0)
        return r;
    r = reg_prepare(reg,
                    "UPDATE volumes SET state = ?2, size_gib = ?3, iops = ?4, throughput = ?5,"
                    " instance_id = ?6, device = ?7, attach_time = ?8"
                    " WHERE id = ?1 AND size_gib <= ?3",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, v->id);
    reg_bind_text(st, 2, volume_state_to_string(v->state));
    sqlite3_bind_int64(st, 3, v->size_gib);
    sqlite3_bind_int(st, 4, v->iops);
    sqlite3_bind_int(st, 5, v->throughput);
    reg_bind_text(st, 6, v->instance_id[0] ? v->instance_id : NULL);
    reg_bind_text(st, 7, v->device[0] ? v->device : NULL);
    reg_bind_positive(st, 8, v->attach_time);
    r = reg_step_done(reg, st, "cannot update volume '%s'", v->id);
    if (r != 0)
        return r < 0 ? r : 0;
    sqlite3_reset(st);
    /* No row matched: absent, or a shrink. */
    r = registry_volume_get(reg, v->id, &old);
    if (r < 0)
        return r;
    return error_set(EINVAL, "volume '%s' cannot shrink from %u to %u GiB", v->id, old->size_gib,
                     v->size_gib);
}

int registry_volume_delete(struct registry *reg, const char *id)
{
    if (!id_arg_is_valid(id))
        return error_set(EINVAL, "malformed volume id '%s'", id ? id : "");
    return reg_delete_resource(reg, "DELETE FROM volumes WHERE id = ?1", "volume", id, NULL);
}

static void release_rows(void *list, size_t n)
{
    registry_volume_list_free(list, n);
}

int registry_volume_list(struct registry *reg, struct registry_volume ***ret, size_t *ret_n)
{
    static const struct reg_collector c = {
        .size = sizeof(struct registry_volume *),
        .read = read_row,
        .release = release_rows,
        .what = "volumes",
    };
    void *list;
    int r = reg_list(reg, "SELECT " VOLUME_COLUMNS " FROM volumes ORDER BY create_time, id", &c,
                     &list, ret_n);

    if (r == 0)
        *ret = list;
    return r;
}
