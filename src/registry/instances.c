/* Instance rows: typed insert, get, state update, delete and list over the
 * `instances` table (migration 9, docs/formats.md), and the allocation of
 * each instance's loopback address.  Values are checked here (-EINVAL
 * naming the field) before they are bound; the table's CHECK constraints
 * are the second line; rows read back are checked again (-EBADMSG). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "registry/instances.h"
#include "registry/internal.h"

#define INSTANCE_COLUMNS                                                                           \
    "id, owner, reservation_id, launch_index, image_id, instance_type, state, reason_code, "       \
    "reason_message, launch_time, availability_zone, key_name, user_data, address, "               \
    "root_device_name, root_volume_id, root_delete_on_termination, http_tokens, "                  \
    "http_endpoint, http_hop_limit, client_token, terminated_time"

/* Wall-clock unix milliseconds (terminated_time). */
static const struct {
    enum instance_state state;
    const char *name;
} states[] = {
    {INSTANCE_PENDING, "pending"},
    {INSTANCE_RUNNING, "running"},
    {INSTANCE_SHUTTING_DOWN, "shutting-down"},
    {INSTANCE_TERMINATED, "terminated"},
    {INSTANCE_STOPPING, "stopping"},
    {INSTANCE_STOPPED, "stopped"},
};

const char *instance_state_to_string(enum instance_state s)
{
    for (size_t i = 0; i < ARRAY_SIZE(states); i++)
        if (states[i].state == s)
            return states[i].name;
    return NULL;
}

int instance_state_from_string(const char *s, enum instance_state *ret)
{
    for (size_t i = 0; i < ARRAY_SIZE(states); i++)
        if (s && strcmp(s, states[i].name) == 0) {
            *ret = states[i].state;
            return 0;
        }
    return error_set(EINVAL, "unknown instance state '%s'", s ? s : "");
}

void registry_instance_free(struct registry_instance *in)
{
    if (!in)
        return;
    free(in->user_data);
    free(in);
}

void registry_instance_list_free(struct registry_instance **list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++)
        registry_instance_free(list[i]);
    free(list);
}

/* ---- validation ---- */

/* A printable, NUL-terminated field; empty only when `may_be_empty`. */
static bool text_ok(const char *field, size_t size, bool may_be_empty)
{
    return reg_terminated(field, size) && (may_be_empty || field[0]) && reg_printable(field);
}

/* "127.a.b.c" with each part 0..255 and no leading zeros. */
static bool address_is_valid(const char *s)
{
    unsigned parts[4];
    char back[INSTANCE_ADDRESS_SIZE];
    int n = 0;

    if (strlen(s) >= INSTANCE_ADDRESS_SIZE ||
        sscanf(s, "%3u.%3u.%3u.%3u%n", &parts[0], &parts[1], &parts[2], &parts[3], &n) != 4 ||
        s[n] != '\0')
        return false;
    if (parts[0] != 127 || parts[1] > 255 || parts[2] > 255 || parts[3] > 255)
        return false;
    snprintf(back, sizeof(back), "%u.%u.%u.%u", parts[0], parts[1], parts[2], parts[3]);
    return strcmp(back, s) == 0;
}

static int validate_reason(const char *id, const char *code, const char *message)
{
    if (code && (strlen(code) > INSTANCE_REASON_CODE_MAX || !reg_printable(code)))
        return error_set(EINVAL, "instance '%s' has a malformed state reason code", id);
    if (message && (strlen(message) > INSTANCE_REASON_MESSAGE_MAX || !reg_printable(message)))
        return error_set(EINVAL, "instance '%s' has a malformed state reason message", id);
    return 0;
}

static int validate(const struct registry_instance *in)
{
    if (!reg_terminated(in->id, sizeof(in->id)) || !id_is_valid("i", in->id))
        return error_set(EINVAL, "malformed instance id '%.*s'", (int)sizeof(in->id) - 1, in->id);
    if (!reg_terminated(in->owner, sizeof(in->owner)) || !reg_account_is_valid(in->owner))
        return error_set(EINVAL, "instance '%s' has a malformed owner", in->id);
    if (!reg_terminated(in->reservation_id, sizeof(in->reservation_id)) ||
        !id_is_valid("r", in->reservation_id))
        return error_set(EINVAL, "instance '%s' has a malformed reservation id", in->id);
    if (in->launch_index < 0)
        return error_set(EINVAL, "instance '%s' has a negative launch index", in->id);
    if (!reg_terminated(in->image_id, sizeof(in->image_id)) || !id_is_valid("ami", in->image_id))
        return error_set(EINVAL, "instance '%s' has a malformed image id", in->id);
    if (!text_ok(in->instance_type, sizeof(in->instance_type), false))
        return error_set(EINVAL, "instance '%s' has a malformed instance type", in->id);
    if (!instance_state_to_string(in->state))
        return error_set(EINVAL, "instance '%s' has an invalid state %d", in->id, (int)in->state);
    if (!reg_terminated(in->reason_code, sizeof(in->reason_code)) ||
        !reg_terminated(in->reason_message, sizeof(in->reason_message)) ||
        validate_reason(in->id, in->reason_code, in->reason_message) < 0)
        return error_set(EINVAL, "instance '%s' has a malformed state reason", in->id);
    if (in->launch_time < 0)
        return error_set(EINVAL, "instance '%s' has a negative launch time", in->id);
    if (!text_ok(in->availability_zone, sizeof(in->availability_zone), false))
        return error_set(EINVAL, "instance '%s' has a malformed availability zone", in->id);
    if (!text_ok(in->key_name, sizeof(in->key_name), true))
        return error_set(EINVAL, "instance '%s' has a malformed key name", in->id);
    if (in->user_data_len > INSTANCE_USER_DATA_MAX || (in->user_data_len && !in->user_data))
        return error_set(EINVAL, "instance '%s' has user data over %d bytes", in->id,
                         INSTANCE_USER_DATA_MAX);
    if (!reg_terminated(in->address, sizeof(in->address)) || !address_is_valid(in->address))
        return error_set(EINVAL, "instance '%s' has a malformed address (want 127.x.y.z)", in->id);
    if (!text_ok(in->root_device_name, sizeof(in->root_device_name), false))
        return error_set(EINVAL, "instance '%s' has a malformed root device name", in->id);
    if (!reg_terminated(in->root_volume_id, sizeof(in->root_volume_id)) ||
        (in->root_volume_id[0] && !id_is_valid("vol", in->root_volume_id)))
        return error_set(EINVAL, "instance '%s' has a malformed root volume id", in->id);
    if (in->http_hop_limit < 1 || in->http_hop_limit > 64)
        return error_set(EINVAL, "instance '%s' has a metadata hop limit outside 1..64", in->id);
    if (!text_ok(in->client_token, sizeof(in->client_token), true))
        return error_set(EINVAL, "instance '%s' has a malformed client token", in->id);
    return 0;
}

static bool id_arg_is_valid(const char *id)
{
    return id && id_is_valid("i", id);
}

/* ---- rows ---- */

/* The current row of `st` into *(struct registry_instance **)slot: a reg_collector
 * reader (data unused), and the get's. */
static int read_row(struct registry *reg, sqlite3_stmt *st, void *slot, void *data)
{
    struct registry_instance **ret = slot;
    _cleanup_(registry_instance_freep) struct registry_instance *in = xcalloc(1, sizeof(*in));
    const void *blob;
    int blob_len;

    if (!reg_column_copy(st, 0, in->id, sizeof(in->id)) || !id_is_valid("i", in->id))
        return error_set(EBADMSG, "registry '%s' holds a malformed instance id", reg->path);
    if (!reg_column_copy(st, 1, in->owner, sizeof(in->owner)) ||
        !reg_column_copy(st, 2, in->reservation_id, sizeof(in->reservation_id)) ||
        !reg_column_copy(st, 4, in->image_id, sizeof(in->image_id)) ||
        !reg_column_copy(st, 5, in->instance_type, sizeof(in->instance_type)) ||
        instance_state_from_string((const char *)sqlite3_column_text(st, 6), &in->state) < 0 ||
        !reg_column_copy(st, 7, in->reason_code, sizeof(in->reason_code)) ||
        !reg_column_copy(st, 8, in->reason_message, sizeof(in->reason_message)) ||
        !reg_column_copy(st, 10, in->availability_zone, sizeof(in->availability_zone)) ||
        !reg_column_copy(st, 11, in->key_name, sizeof(in->key_name)) ||
        !reg_column_copy(st, 13, in->address, sizeof(in->address)) ||
        !reg_column_copy(st, 14, in->root_device_name, sizeof(in->root_device_name)) ||
        !reg_column_copy(st, 15, in->root_volume_id, sizeof(in->root_volume_id)) ||
        !reg_column_copy(st, 20, in->client_token, sizeof(in->client_token)))
        return error_set(EBADMSG, "instance '%s' has a malformed field in registry '%s'", in->id,
                         reg->path);
    in->launch_index = sqlite3_column_int(st, 3);
    in->launch_time = sqlite3_column_int64(st, 9);
    in->terminated_time = sqlite3_column_int64(st, 21); /* NULL reads 0 */
    blob = sqlite3_column_blob(st, 12);
    blob_len = sqlite3_column_bytes(st, 12);
    if (sqlite3_column_type(st, 12) != SQLITE_NULL) {
        if (blob_len < 0 || blob_len > INSTANCE_USER_DATA_MAX)
            return error_set(EBADMSG, "instance '%s' has oversized user data in registry '%s'",
                             in->id, reg->path);
        in->user_data = xmalloc(blob_len ? (size_t)blob_len : 1);
        if (blob_len)
            memcpy(in->user_data, blob, (size_t)blob_len);
        in->user_data_len = (size_t)blob_len;
    }
    in->root_delete_on_termination = sqlite3_column_int(st, 16) != 0;
    in->http_tokens_required = strcmp((const char *)sqlite3_column_text(st, 17), "required") == 0;
    in->http_endpoint_enabled = strcmp((const char *)sqlite3_column_text(st, 18), "enabled") == 0;
    in->http_hop_limit = sqlite3_column_int(st, 19);
    if (validate(in) < 0) {
        char why[256]; /* error_set() reuses error_message()'s buffer */
        snprintf(why, sizeof(why), "%s", error_message() ? error_message() : "invalid");
        return error_set(EBADMSG, "instance '%s' in registry '%s': %s", in->id, reg->path, why);
    }
    *ret = TAKE_PTR(in);
    return 0;
}

int registry_instance_insert(struct registry *reg, const struct registry_instance *in)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = validate(in);

    if (r < 0)
        return r;
    r = reg_prepare(reg,
                    "INSERT INTO instances (" INSTANCE_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5,"
                    " ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,"
                    " ?21, ?22)",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, in->id);
    reg_bind_text(st, 2, in->owner);
    reg_bind_text(st, 3, in->reservation_id);
    sqlite3_bind_int(st, 4, in->launch_index);
    reg_bind_text(st, 5, in->image_id);
    reg_bind_text(st, 6, in->instance_type);
    reg_bind_text(st, 7, instance_state_to_string(in->state));
    reg_bind_text(st, 8, in->reason_code[0] ? in->reason_code : NULL);
    reg_bind_text(st, 9, in->reason_message[0] ? in->reason_message : NULL);
    sqlite3_bind_int64(st, 10, in->launch_time);
    reg_bind_text(st, 11, in->availability_zone);
    reg_bind_text(st, 12, in->key_name[0] ? in->key_name : NULL);
    if (in->user_data)
        sqlite3_bind_blob(st, 13, in->user_data, (int)in->user_data_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 13);
    reg_bind_text(st, 14, in->address);
    reg_bind_text(st, 15, in->root_device_name);
    reg_bind_text(st, 16, in->root_volume_id[0] ? in->root_volume_id : NULL);
    sqlite3_bind_int(st, 17, in->root_delete_on_termination);
    reg_bind_text(st, 18, in->http_tokens_required ? "required" : "optional");
    reg_bind_text(st, 19, in->http_endpoint_enabled ? "enabled" : "disabled");
    sqlite3_bind_int(st, 20, in->http_hop_limit);
    reg_bind_text(st, 21, in->client_token[0] ? in->client_token : NULL);
    if (in->state == INSTANCE_TERMINATED)
        sqlite3_bind_int64(st, 22, in->terminated_time > 0 ? in->terminated_time : wall_clock_ms());
    else
        sqlite3_bind_null(st, 22);
    r = reg_step_done(reg, st, "cannot insert instance '%s'", in->id);
    if (r == -EEXIST)
        return error_set(EEXIST, "instance '%s' or its address '%s' is taken", in->id, in->address);
    return r < 0 ? r : 0;
}

int registry_instance_get(struct registry *reg, const char *id, struct registry_instance **ret)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    if (!id_arg_is_valid(id))
        return error_set(EINVAL, "malformed instance id '%s'", id ? id : "");
    r = reg_select_by_id(reg, "SELECT " INSTANCE_COLUMNS " FROM instances WHERE id = ?1",
                         "instance", id, &st);
    if (r < 0)
        return r;
    return read_row(reg, st, ret, NULL);
}

int registry_instance_set_state(struct registry *reg, const char *id, enum instance_state state,
                                const char *reason_code, const char *reason_message,
                                const char *root_volume_id)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    if (!id_arg_is_valid(id))
        return error_set(EINVAL, "malformed instance id '%s'", id ? id : "");
    if (!instance_state_to_string(state))
        return error_set(EINVAL, "instance '%s': invalid state %d", id, (int)state);
    r = validate_reason(id, reason_code, reason_message);
    if (r < 0)
        return r;
    if (root_volume_id && root_volume_id[0] && !id_is_valid("vol", root_volume_id))
        return error_set(EINVAL, "instance '%s': malformed root volume id '%s'", id,
                         root_volume_id);
    r = reg_prepare(reg,
                    "UPDATE instances SET state = ?2, reason_code = ?3, reason_message = ?4,"
                    " root_volume_id = CASE WHEN ?5 THEN ?6 ELSE root_volume_id END,"
                    " terminated_time = CASE WHEN ?2 <> 'terminated' THEN NULL"
                    "  ELSE coalesce(terminated_time, ?7) END"
                    " WHERE id = ?1",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    reg_bind_text(st, 2, instance_state_to_string(state));
    reg_bind_text(st, 3, reason_code && reason_code[0] ? reason_code : NULL);
    reg_bind_text(st, 4, reason_message && reason_message[0] ? reason_message : NULL);
    sqlite3_bind_int(st, 5, root_volume_id != NULL);
    reg_bind_text(st, 6, root_volume_id && root_volume_id[0] ? root_volume_id : NULL);
    sqlite3_bind_int64(st, 7, wall_clock_ms());
    r = reg_step_done(reg, st, "cannot update instance '%s'", id);
    if (r == -EEXIST)
        return error_set(EEXIST, "instance '%s': its address is taken by another instance", id);
    if (r < 0)
        return r;
    if (r == 0)
        return error_set(ENOENT, "instance '%s' not found", id);
    return 0;
}

int registry_instance_delete(struct registry *reg, const char *id)
{
    if (!id_arg_is_valid(id))
        return error_set(EINVAL, "malformed instance id '%s'", id ? id : "");
    /* instance_security_groups goes with the row (ON DELETE CASCADE). */
    return reg_delete_resource(reg, "DELETE FROM instances WHERE id = ?1", "instance", id, NULL);
}

static void release_rows(void *list, size_t n)
{
    registry_instance_list_free(list, n);
}

int registry_instance_list(struct registry *reg, struct registry_instance ***ret, size_t *ret_n)
{
    static const struct reg_collector c = {
        .size = sizeof(struct registry_instance *),
        .read = read_row,
        .release = release_rows,
        .what = "instances",
    };
    void *list;
    int r = reg_list(reg,
                     "SELECT " INSTANCE_COLUMNS " FROM instances"
                     " ORDER BY launch_time, reservation_id, launch_index, id",
                     &c, &list, ret_n);

    if (r == 0)
        *ret = list;
    return r;
}

/* ---- addresses ---- */

#define ADDRESS_HOST_FIRST 2  /* .1 is left alone, as a gateway would be */
#define ADDRESS_HOST_LAST 254 /* .255 looks like a broadcast address */
#define ADDRESS_HOSTS (ADDRESS_HOST_LAST - ADDRESS_HOST_FIRST + 1)
#define ADDRESS_SLOTS (256 * ADDRESS_HOSTS)

int registry_instance_address_allocate(struct registry *reg, char ret[INSTANCE_ADDRESS_SIZE])
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    _cleanup_free_ uint8_t *used = xcalloc(ADDRESS_SLOTS, 1);
    int r, rc;

    r = reg_prepare(reg, "SELECT address FROM instances WHERE state <> 'terminated'", &st);
    if (r < 0)
        return r;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *a = (const char *)sqlite3_column_text(st, 0);
        unsigned p[4];
        int n = 0;

        /* Another range (an older kiln, a hand edit) cannot collide. */
        if (!a || sscanf(a, "%3u.%3u.%3u.%3u%n", &p[0], &p[1], &p[2], &p[3], &n) != 4 ||
            a[n] != '\0' || p[0] != INSTANCE_ADDRESS_FIRST_OCTET ||
            p[1] != INSTANCE_ADDRESS_SECOND_OCTET || p[2] > 255 || p[3] < ADDRESS_HOST_FIRST ||
            p[3] > ADDRESS_HOST_LAST)
            continue;
        used[p[2] * ADDRESS_HOSTS + (p[3] - ADDRESS_HOST_FIRST)] = 1;
    }
    if (rc != SQLITE_DONE)
        return reg_fail(reg, rc, "cannot list instance addresses");
    for (int i = 0; i < ADDRESS_SLOTS; i++)
        if (!used[i]) {
            snprintf(ret, INSTANCE_ADDRESS_SIZE, "%d.%d.%d.%d", INSTANCE_ADDRESS_FIRST_OCTET,
                     INSTANCE_ADDRESS_SECOND_OCTET, i / ADDRESS_HOSTS,
                     i % ADDRESS_HOSTS + ADDRESS_HOST_FIRST);
            return 0;
        }
    return error_set(ENOSPC, "every instance address 127.%d.0-255.%d-%d is taken",
                     INSTANCE_ADDRESS_SECOND_OCTET, ADDRESS_HOST_FIRST, ADDRESS_HOST_LAST);
}

/* ---- security groups ---- */

static int link_group(struct registry *reg, const char *id, const char *group)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r, rc;

    r = reg_prepare(reg, "SELECT 1 FROM security_groups WHERE id = ?1", &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, group);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return error_set(ENOENT, "the security group '%s' does not exist", group);
    if (rc != SQLITE_ROW)
        return reg_fail(reg, rc, "cannot read security group '%s'", group);
    sqlite3_reset(st);
    st = NULL;
    r = reg_prepare(reg,
                    "INSERT OR IGNORE INTO instance_security_groups (instance_id, group_id)"
                    " VALUES (?1, ?2)",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    reg_bind_text(st, 2, group);
    r = reg_step_done(reg, st, "cannot link instance '%s' to '%s'", id, group);
    return r < 0 ? r : 0;
}

int registry_instance_security_groups_set(struct registry *reg, const char *id,
                                          const char *const *ids, size_t n)
{
    _cleanup_(registry_instance_freep) struct registry_instance *in = NULL;
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    if (!id_arg_is_valid(id))
        return error_set(EINVAL, "malformed instance id '%s'", id ? id : "");
    for (size_t i = 0; i < n; i++)
        if (!ids[i] || !id_is_valid("sg", ids[i]))
            return error_set(EINVAL, "malformed security group id '%s'", ids[i] ? ids[i] : "");
    r = registry_begin(reg);
    if (r < 0)
        return r;
    r = registry_instance_get(reg, id, &in);
    if (r >= 0)
        r = reg_prepare(reg, "DELETE FROM instance_security_groups WHERE instance_id = ?1", &st);
    if (r >= 0) {
        reg_bind_text(st, 1, id);
        r = reg_step_done(reg, st, "cannot unlink the security groups of '%s'", id);
    }
    for (size_t i = 0; r >= 0 && i < n; i++)
        r = link_group(reg, id, ids[i]);
    r = registry_end(reg, r);
    return r < 0 ? r : 0;
}

void registry_instance_security_groups_free(char **ids, size_t n)
{
    if (!ids)
        return;
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
}

int registry_instance_security_groups(struct registry *reg, const char *id, char ***ret,
                                      size_t *ret_n)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    char **ids = NULL;
    size_t n = 0;
    int r, rc;

    r = reg_prepare(reg,
                    "SELECT group_id FROM instance_security_groups WHERE instance_id = ?1"
                    " ORDER BY group_id",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        ids = xrealloc(ids, (n + 1) * sizeof(*ids));
        ids[n] = reg_column_strdup(st, 0);
        if (!ids[n] || !id_is_valid("sg", ids[n])) {
            registry_instance_security_groups_free(ids, n + 1);
            return error_set(EBADMSG, "registry '%s' links '%s' to a malformed group id", reg->path,
                             id);
        }
        n++;
    }
    if (rc != SQLITE_DONE) {
        registry_instance_security_groups_free(ids, n);
        return reg_fail(reg, rc, "cannot read the security groups of '%s'", id);
    }
    *ret = ids ? ids : xcalloc(1, sizeof(*ids));
    *ret_n = n;
    return 0;
}
