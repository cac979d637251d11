/* Builds, their journal and the layer cache: typed queries over migration
 * 11 (registry/bake.h, docs/formats.md).  Values are checked before they
 * are bound (-EINVAL naming the field) and rows are checked again when
 * read back (-EBADMSG), as in jobs.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "registry/bake.h"
#include "registry/internal.h"

static const char *const state_names[] = {
    [BAKE_BUILD_RUNNING] = "running",
    [BAKE_BUILD_SUCCEEDED] = "succeeded",
    [BAKE_BUILD_FAILED] = "failed",
    [BAKE_BUILD_CLEANED] = "cleaned",
};

static const char *const kind_names[] = {
    [BAKE_KIND_INSTANCE] = "instance",
    [BAKE_KIND_VOLUME] = "volume",
    [BAKE_KIND_SNAPSHOT] = "snapshot",
    [BAKE_KIND_IMAGE] = "image",
};

static const char *const kind_prefixes[] = {
    [BAKE_KIND_INSTANCE] = "i",
    [BAKE_KIND_VOLUME] = "vol",
    [BAKE_KIND_SNAPSHOT] = "snap",
    [BAKE_KIND_IMAGE] = "ami",
};

static const char *const entry_state_names[] = {
    [BAKE_ENTRY_PENDING] = "pending",
    [BAKE_ENTRY_CREATED] = "created",
    [BAKE_ENTRY_RELEASED] = "released",
    [BAKE_ENTRY_UNDONE] = "undone",
};

_Static_assert(ARRAY_SIZE(kind_names) == BAKE_KIND_COUNT, "one name per kind");

const char *registry_bake_state_to_string(enum registry_bake_state s)
{
    return (unsigned)s < ARRAY_SIZE(state_names) ? state_names[s] : NULL;
}

const char *registry_bake_kind_to_string(enum registry_bake_kind k)
{
    return (unsigned)k < ARRAY_SIZE(kind_names) ? kind_names[k] : NULL;
}

const char *registry_bake_kind_prefix(enum registry_bake_kind k)
{
    return (unsigned)k < ARRAY_SIZE(kind_prefixes) ? kind_prefixes[k] : NULL;
}

const char *registry_bake_entry_state_to_string(enum registry_bake_entry_state s)
{
    return (unsigned)s < ARRAY_SIZE(entry_state_names) ? entry_state_names[s] : NULL;
}

/* Index of `s` in names[n], or -1. */
static int name_index(const char *const *names, size_t n, const unsigned char *s)
{
    for (size_t i = 0; s && i < n; i++)
        if (strcmp((const char *)s, names[i]) == 0)
            return (int)i;
    return -1;
}

static int check_build_id(const char *id)
{
    if (!id || !id_is_valid("bld", id))
        return error_set(EINVAL, "malformed build id '%.*s'", ID_MAX_SIZE, id ? id : "");
    return 0;
}

/* ---- builds ---------------------------------------------------------- */

int registry_bake_build_insert(struct registry *reg, const struct registry_bake_build *b)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    char hex[DIGEST_HEX_SIZE];
    int r;

    if (!reg_terminated(b->id, sizeof(b->id)) || check_build_id(b->id) < 0)
        return error_set(EINVAL, "malformed build id '%.*s'", (int)sizeof(b->id) - 1, b->id);
    if (!reg_terminated(b->owner, sizeof(b->owner)) || !reg_account_is_valid(b->owner))
        return error_set(EINVAL, "build '%s' has a malformed owner", b->id);
    if (!registry_bake_state_to_string(b->state))
        return error_set(EINVAL, "build '%s' has an invalid state %d", b->id, (int)b->state);
    if (b->pid <= 0)
        return error_set(EINVAL, "build '%s' has an invalid pid %lld", b->id, (long long)b->pid);
    if (!reg_terminated(b->boot_id, sizeof(b->boot_id)) || !b->boot_id[0] ||
        !reg_printable(b->boot_id))
        return error_set(EINVAL, "build '%s' has a malformed boot id", b->id);
    if (b->start_time > INT64_MAX || b->created < 0 || b->updated < 0)
        return error_set(EINVAL, "build '%s' has a negative time", b->id);
    r = reg_prepare(reg,
                    "INSERT INTO bake_builds (id, owner, template_digest, state, pid, boot_id,"
                    " start_time, created, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, b->id);
    reg_bind_text(st, 2, b->owner);
    reg_bind_text(st, 3, digest_to_hex(&b->template_digest, hex));
    reg_bind_text(st, 4, state_names[b->state]);
    sqlite3_bind_int64(st, 5, b->pid);
    reg_bind_text(st, 6, b->boot_id);
    sqlite3_bind_int64(st, 7, (int64_t)b->start_time);
    sqlite3_bind_int64(st, 8, b->created);
    sqlite3_bind_int64(st, 9, b->updated);
    r = reg_step_done(reg, st, "cannot insert build '%s'", b->id);
    return r < 0 ? r : 0;
}

#define BUILD_COLUMNS                                                                              \
    "id, owner, template_digest, state, pid, boot_id, start_time, created, updated"

static int read_build(struct registry *reg, sqlite3_stmt *st, void *slot, void *data)
{
    struct registry_bake_build *b = slot;
    int state;

    (void)reg;
    (void)data;
    memset(b, 0, sizeof(*b));
    state = name_index(state_names, ARRAY_SIZE(state_names), sqlite3_column_text(st, 3));
    if (!reg_column_copy(st, 0, b->id, sizeof(b->id)) ||
        !reg_column_copy(st, 1, b->owner, sizeof(b->owner)) ||
        digest_from_hex((const char *)sqlite3_column_text(st, 2), &b->template_digest) < 0 ||
        state < 0 || !reg_column_copy(st, 5, b->boot_id, sizeof(b->boot_id)) ||
        sqlite3_column_int64(st, 6) < 0)
        return error_set(EBADMSG, "build row '%s' is malformed", b->id);
    b->state = (enum registry_bake_state)state;
    b->pid = sqlite3_column_int64(st, 4);
    b->start_time = (uint64_t)sqlite3_column_int64(st, 6);
    b->created = sqlite3_column_int64(st, 7);
    b->updated = sqlite3_column_int64(st, 8);
    return 0;
}

int registry_bake_build_get(struct registry *reg, const char *id, struct registry_bake_build *ret)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    struct registry_bake_build b;
    int r = check_build_id(id);

    if (r < 0)
        return r;
    r = reg_select_by_id(reg, "SELECT " BUILD_COLUMNS " FROM bake_builds WHERE id = ?1", "build",
                         id, &st);
    if (r < 0)
        return r;
    r = read_build(reg, st, &b, NULL);
    if (r < 0)
        return r;
    *ret = b;
    return 0;
}

int registry_bake_build_set_state(struct registry *reg, const char *id,
                                  enum registry_bake_state state, int64_t now_ms)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = check_build_id(id);

    if (r < 0)
        return r;
    if (!registry_bake_state_to_string(state))
        return error_set(EINVAL, "invalid state %d for build '%s'", (int)state, id);
    r = reg_prepare(reg, "UPDATE bake_builds SET state = ?2, updated = ?3 WHERE id = ?1", &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    reg_bind_text(st, 2, state_names[state]);
    sqlite3_bind_int64(st, 3, now_ms);
    r = reg_step_done(reg, st, "cannot set the state of build '%s'", id);
    if (r == 0)
        return error_set(ENOENT, "build '%s' not found", id);
    return r < 0 ? r : 0;
}

int registry_bake_build_list_active(struct registry *reg, struct registry_bake_build **ret,
                                    size_t *ret_n)
{
    static const struct reg_collector c = {
        .size = sizeof(struct registry_bake_build),
        .read = read_build,
        .release = reg_collect_release_free,
        .what = "active builds",
    };
    return reg_list(reg,
                    "SELECT " BUILD_COLUMNS " FROM bake_builds"
                    " WHERE state IN ('running', 'failed') ORDER BY created, id",
                    &c, (void **)ret, ret_n);
}

/* ---- journal entries --------------------------------------------------- */

int registry_bake_entry_add(struct registry *reg, const char *build_id,
                            enum registry_bake_kind kind, int64_t now_ms, uint32_t *ret_seq)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int64_t seq;
    int r = check_build_id(build_id);

    if (r < 0)
        return r;
    if (!registry_bake_kind_to_string(kind))
        return error_set(EINVAL, "invalid resource kind %d for build '%s'", (int)kind, build_id);
    r = registry_begin(reg);
    if (r < 0)
        return r;
    {
        _cleanup_stmt_ sqlite3_stmt *q = NULL;
        r = reg_select_by_id(reg,
                             "SELECT (SELECT coalesce(max(seq), 0) FROM bake_journal"
                             " WHERE build_id = ?1) FROM bake_builds WHERE id = ?1",
                             "build", build_id, &q);
        seq = r < 0 ? 0 : sqlite3_column_int64(q, 0) + 1;
    }
    if (r >= 0 && seq > UINT32_MAX)
        r = error_set(ENOSPC, "build '%s' has too many journal entries", build_id);
    if (r >= 0)
        r = reg_prepare(reg,
                        "INSERT INTO bake_journal (build_id, seq, kind, resource_id, state,"
                        " updated) VALUES (?1, ?2, ?3, '', 'pending', ?4)",
                        &st);
    if (r >= 0) {
        reg_bind_text(st, 1, build_id);
        sqlite3_bind_int64(st, 2, seq);
        reg_bind_text(st, 3, kind_names[kind]);
        sqlite3_bind_int64(st, 4, now_ms);
        r = reg_step_done(reg, st, "cannot journal a %s for build '%s'", kind_names[kind],
                          build_id);
    }
    r = registry_end(reg, r);
    if (r < 0)
        return r;
    *ret_seq = (uint32_t)seq;
    return 0;
}

static int read_entry(struct registry *reg, sqlite3_stmt *st, void *slot, void *data)
{
    struct registry_bake_entry *e = slot;
    int kind, state;
    int64_t seq = sqlite3_column_int64(st, 1);

    (void)reg;
    (void)data;
    memset(e, 0, sizeof(*e));
    kind = name_index(kind_names, ARRAY_SIZE(kind_names), sqlite3_column_text(st, 2));
    state =
        name_index(entry_state_names, ARRAY_SIZE(entry_state_names), sqlite3_column_text(st, 4));
    if (!reg_column_copy(st, 0, e->build_id, sizeof(e->build_id)) || seq < 1 || seq > UINT32_MAX ||
        kind < 0 || state < 0 || !reg_column_copy(st, 3, e->resource_id, sizeof(e->resource_id)) ||
        !reg_column_copy(st, 5, e->error, sizeof(e->error)))
        return error_set(EBADMSG, "journal entry %lld of build '%s' is malformed", (long long)seq,
                         e->build_id);
    if (e->resource_id[0] && !id_is_valid(kind_prefixes[kind], e->resource_id))
        return error_set(EBADMSG, "journal entry %lld of build '%s' names a malformed %s id",
                         (long long)seq, e->build_id, kind_names[kind]);
    e->seq = (uint32_t)seq;
    e->kind = (enum registry_bake_kind)kind;
    e->state = (enum registry_bake_entry_state)state;
    e->updated = sqlite3_column_int64(st, 6);
    return 0;
}

#define ENTRY_COLUMNS "build_id, seq, kind, resource_id, state, error, updated"

static int entry_get(struct registry *reg, const char *build_id, uint32_t seq,
                     struct registry_bake_entry *ret)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = reg_prepare(reg,
                        "SELECT " ENTRY_COLUMNS " FROM bake_journal"
                        " WHERE build_id = ?1 AND seq = ?2",
                        &st);

    if (r < 0)
        return r;
    reg_bind_text(st, 1, build_id);
    sqlite3_bind_int64(st, 2, seq);
    r = sqlite3_step(st);
    if (r == SQLITE_DONE)
        return error_set(ENOENT, "journal entry %u of build '%s' not found", seq, build_id);
    if (r != SQLITE_ROW)
        return reg_fail(reg, r, "cannot read journal entry %u of build '%s'", seq, build_id);
    return read_entry(reg, st, ret, NULL);
}

/* Write state, resource id and error of an entry. */
static int entry_write(struct registry *reg, const struct registry_bake_entry *e, int64_t now_ms)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = reg_prepare(reg,
                        "UPDATE bake_journal SET state = ?3, resource_id = ?4, error = ?5,"
                        " updated = ?6 WHERE build_id = ?1 AND seq = ?2",
                        &st);

    if (r < 0)
        return r;
    reg_bind_text(st, 1, e->build_id);
    sqlite3_bind_int64(st, 2, e->seq);
    reg_bind_text(st, 3, entry_state_names[e->state]);
    reg_bind_text(st, 4, e->resource_id);
    reg_bind_text(st, 5, e->error[0] ? e->error : NULL);
    sqlite3_bind_int64(st, 6, now_ms);
    r = reg_step_done(reg, st, "cannot update journal entry %u of build '%s'", e->seq, e->build_id);
    return r < 0 ? r : 0;
}

/* Read entry (build_id, seq), let `change` modify it, write it back, all
 * in one transaction. */
static int entry_update(struct registry *reg, const char *build_id, uint32_t seq,
                        int (*change)(struct registry_bake_entry *e, const void *arg),
                        const void *arg, int64_t now_ms)
{
    struct registry_bake_entry e;
    int r = check_build_id(build_id);

    if (r < 0)
        return r;
    r = registry_begin(reg);
    if (r < 0)
        return r;
    r = entry_get(reg, build_id, seq, &e);
    if (r >= 0)
        r = change(&e, arg);
    if (r >= 0)
        r = entry_write(reg, &e, now_ms);
    r = registry_end(reg, r);
    return r < 0 ? r : 0;
}

static int change_created(struct registry_bake_entry *e, const void *arg)
{
    const char *id = arg;

    if (e->state != BAKE_ENTRY_PENDING)
        return error_set(EINVAL, "journal entry %u of build '%s' is %s, not pending", e->seq,
                         e->build_id, entry_state_names[e->state]);
    if (!id || !id_is_valid(kind_prefixes[e->kind], id))
        return error_set(EINVAL, "malformed %s id '%.*s' for journal entry %u of build '%s'",
                         kind_names[e->kind], ID_MAX_SIZE, id ? id : "", e->seq, e->build_id);
    snprintf(e->resource_id, sizeof(e->resource_id), "%s", id);
    e->state = BAKE_ENTRY_CREATED;
    return 0;
}

int registry_bake_entry_set_created(struct registry *reg, const char *build_id, uint32_t seq,
                                    const char *resource_id, int64_t now_ms)
{
    return entry_update(reg, build_id, seq, change_created, resource_id, now_ms);
}

struct state_change {
    enum registry_bake_entry_state state;
    const char *resource_id;
};

static int change_state(struct registry_bake_entry *e, const void *arg)
{
    const struct state_change *c = arg;

    if (c->state != BAKE_ENTRY_RELEASED && c->state != BAKE_ENTRY_UNDONE)
        return error_set(EINVAL, "journal entry %u of build '%s' cannot be set %s", e->seq,
                         e->build_id,
                         registry_bake_entry_state_to_string(c->state) ? entry_state_names[c->state]
                                                                       : "to an invalid state");
    if (e->state == BAKE_ENTRY_UNDONE && c->state == BAKE_ENTRY_UNDONE)
        return 0; /* two janitors undid it: the second write is a no-op */
    if (e->state == BAKE_ENTRY_RELEASED || e->state == BAKE_ENTRY_UNDONE)
        return error_set(EINVAL, "journal entry %u of build '%s' is %s already", e->seq,
                         e->build_id, entry_state_names[e->state]);
    if (c->state == BAKE_ENTRY_RELEASED && e->state == BAKE_ENTRY_PENDING)
        return error_set(EINVAL, "journal entry %u of build '%s' is pending: nothing to release",
                         e->seq, e->build_id);
    if (c->resource_id && c->resource_id[0] && !e->resource_id[0]) {
        if (!id_is_valid(kind_prefixes[e->kind], c->resource_id))
            return error_set(EINVAL, "malformed %s id '%.*s' for journal entry %u of build '%s'",
                             kind_names[e->kind], ID_MAX_SIZE, c->resource_id, e->seq, e->build_id);
        snprintf(e->resource_id, sizeof(e->resource_id), "%s", c->resource_id);
    }
    e->state = c->state;
    e->error[0] = '\0';
    return 0;
}

int registry_bake_entry_set_state(struct registry *reg, const char *build_id, uint32_t seq,
                                  enum registry_bake_entry_state state, const char *resource_id,
                                  int64_t now_ms)
{
    struct state_change c = {.state = state, .resource_id = resource_id};

    return entry_update(reg, build_id, seq, change_state, &c, now_ms);
}

static int change_error(struct registry_bake_entry *e, const void *arg)
{
    const char *msg = arg;
    size_t n = 0;

    /* Keep printable bytes only, truncated. */
    for (; msg && *msg && n < BAKE_ERROR_MAX; msg++)
        e->error[n++] = (*msg < 0x20 || *msg == 0x7f) ? ' ' : *msg;
    if (n == 0)
        e->error[n++] = '?';
    e->error[n] = '\0';
    return 0;
}

int registry_bake_entry_set_error(struct registry *reg, const char *build_id, uint32_t seq,
                                  const char *message, int64_t now_ms)
{
    return entry_update(reg, build_id, seq, change_error, message, now_ms);
}

/* The rows of build `build_id` that `sql` (one parameter, the build id)
 * selects, read by `c`. */
static int list_of_build(struct registry *reg, const char *build_id, const char *sql,
                         const struct reg_collector *c, void **ret, size_t *ret_n)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = check_build_id(build_id);

    if (r < 0)
        return r;
    r = reg_prepare(reg, sql, &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, build_id);
    return reg_collect(reg, st, c, NULL, ret, ret_n);
}

int registry_bake_entry_list(struct registry *reg, const char *build_id,
                             struct registry_bake_entry **ret, size_t *ret_n)
{
    static const struct reg_collector c = {
        .size = sizeof(struct registry_bake_entry),
        .read = read_entry,
        .release = reg_collect_release_free,
        .what = "journal entries",
    };

    return list_of_build(reg, build_id,
                         "SELECT " ENTRY_COLUMNS " FROM bake_journal WHERE build_id = ?1"
                         " ORDER BY seq",
                         &c, (void **)ret, ret_n);
}

/* ---- the layer cache --------------------------------------------------- */

#define LAYER_COLUMNS "key, snapshot_id, parent_key, summary, created, last_used, size"

int registry_bake_layer_insert(struct registry *reg, const struct registry_bake_layer *l)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    char key[DIGEST_HEX_SIZE], parent[DIGEST_HEX_SIZE];
    int r;

    digest_to_hex(&l->key, key);
    if (!reg_terminated(l->snapshot_id, sizeof(l->snapshot_id)) ||
        !id_is_valid("snap", l->snapshot_id))
        return error_set(EINVAL, "layer '%s' has a malformed snapshot id", key);
    if (!reg_terminated(l->summary, sizeof(l->summary)) || !reg_printable(l->summary))
        return error_set(EINVAL, "layer '%s' has a malformed summary", key);
    if (l->created < 0 || l->last_used < 0 || l->size > INT64_MAX)
        return error_set(EINVAL, "layer '%s' has a negative time or size", key);
    r = reg_prepare(reg,
                    "INSERT INTO bake_layers (" LAYER_COLUMNS ")"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, key);
    reg_bind_text(st, 2, l->snapshot_id);
    reg_bind_text(st, 3, l->has_parent ? digest_to_hex(&l->parent_key, parent) : NULL);
    reg_bind_text(st, 4, l->summary);
    sqlite3_bind_int64(st, 5, l->created);
    sqlite3_bind_int64(st, 6, l->last_used);
    sqlite3_bind_int64(st, 7, (int64_t)l->size);
    r = reg_step_done(reg, st, "cannot insert layer '%s'", key);
    if (r == -EEXIST)
        return error_set(EEXIST, "layer '%s' is cached already", key);
    return r < 0 ? r : 0;
}

static int read_layer(struct registry *reg, sqlite3_stmt *st, void *slot, void *data)
{
    struct registry_bake_layer *l = slot;
    const char *key = (const char *)sqlite3_column_text(st, 0);

    (void)reg;
    (void)data;
    memset(l, 0, sizeof(*l));
    if (digest_from_hex(key, &l->key) < 0 ||
        !reg_column_copy(st, 1, l->snapshot_id, sizeof(l->snapshot_id)) ||
        !reg_column_copy(st, 3, l->summary, sizeof(l->summary)) || sqlite3_column_int64(st, 6) < 0)
        return error_set(EBADMSG, "layer row '%.64s' is malformed", key ? key : "");
    if (sqlite3_column_type(st, 2) != SQLITE_NULL) {
        if (digest_from_hex((const char *)sqlite3_column_text(st, 2), &l->parent_key) < 0)
            return error_set(EBADMSG, "layer row '%.64s' has a malformed parent", key);
        l->has_parent = true;
    }
    l->created = sqlite3_column_int64(st, 4);
    l->last_used = sqlite3_column_int64(st, 5);
    l->size = (uint64_t)sqlite3_column_int64(st, 6);
    return 0;
}

int registry_bake_layer_get(struct registry *reg, const struct digest *key,
                            struct registry_bake_layer *ret)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    struct registry_bake_layer l;
    char hex[DIGEST_HEX_SIZE];
    int r;

    r = reg_select_by_id(reg, "SELECT " LAYER_COLUMNS " FROM bake_layers WHERE key = ?1", "layer",
                         digest_to_hex(key, hex), &st);
    if (r < 0)
        return r;
    r = read_layer(reg, st, &l, NULL);
    if (r < 0)
        return r;
    *ret = l;
    return 0;
}

int registry_bake_layer_touch(struct registry *reg, const struct digest *key, int64_t now_ms)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    char hex[DIGEST_HEX_SIZE];
    int r = reg_prepare(reg, "UPDATE bake_layers SET last_used = max(last_used, ?2) WHERE key = ?1",
                        &st);

    if (r < 0)
        return r;
    reg_bind_text(st, 1, digest_to_hex(key, hex));
    sqlite3_bind_int64(st, 2, now_ms);
    r = reg_step_done(reg, st, "cannot record a use of layer '%s'", hex);
    if (r == 0)
        return error_set(ENOENT, "layer '%s' not found", hex);
    return r < 0 ? r : 0;
}

int registry_bake_layer_list(struct registry *reg, struct registry_bake_layer **ret, size_t *ret_n)
{
    static const struct reg_collector c = {
        .size = sizeof(struct registry_bake_layer),
        .read = read_layer,
        .release = reg_collect_release_free,
        .what = "layers",
    };
    return reg_list(reg, "SELECT " LAYER_COLUMNS " FROM bake_layers ORDER BY last_used DESC, key",
                    &c, (void **)ret, ret_n);
}

int registry_bake_layer_delete(struct registry *reg, const struct digest *key)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    char hex[DIGEST_HEX_SIZE];
    int r = reg_prepare(reg, "DELETE FROM bake_layers WHERE key = ?1", &st);

    if (r < 0)
        return r;
    reg_bind_text(st, 1, digest_to_hex(key, hex));
    r = reg_step_done(reg, st, "cannot delete layer '%s'", hex);
    if (r == 0)
        return error_set(ENOENT, "layer '%s' not found", hex);
    return r < 0 ? r : 0;
}

int registry_bake_layer_prune_list(struct registry *reg, int64_t older_than_ms, uint64_t max_bytes,
                                   struct registry_bake_layer **ret, size_t *ret_n)
{
    _cleanup_free_ struct registry_bake_layer *all = NULL;
    size_t n = 0, first_kept;
    uint64_t total = 0;
    int r;

    r = registry_bake_layer_list(reg, &all, &n); /* most recently used first */
    if (r < 0)
        return r;
    /* Layers [0, first_kept) survive the age limit; the rest go. */
    first_kept = n;
    for (size_t i = 0; i < n; i++)
        if (older_than_ms > 0 && all[i].last_used < older_than_ms) {
            first_kept = i;
            break;
        }
    /* Keep the most recently used while they fit in max_bytes. */
    for (size_t i = 0; i < first_kept; i++) {
        if (all[i].size > max_bytes - total) {
            first_kept = i;
            break;
        }
        total += all[i].size;
    }
    /* Return the pruned ones least recently used first. */
    {
        size_t k = n - first_kept;
        struct registry_bake_layer *list = xcalloc(k ? k : 1, sizeof(*list));
        for (size_t i = 0; i < k; i++)
            list[i] = all[n - 1 - i];
        *ret = list;
        *ret_n = k;
    }
    return 0;
}

/* ---- distribution (migration 12) --------------------------------------- */

static const char *const output_state_names[] = {
    [BAKE_OUTPUT_PENDING] = "pending",
    [BAKE_OUTPUT_COPYING] = "copying",
    [BAKE_OUTPUT_DONE] = "done",
    [BAKE_OUTPUT_FAILED] = "failed",
};

const char *registry_bake_output_state_to_string(enum registry_bake_output_state s)
{
    return (unsigned)s < ARRAY_SIZE(output_state_names) ? output_state_names[s] : NULL;
}

/* What the schema accepts as a region: 1 to 64 of [a-z0-9-] (the service
 * layer's rule, region_name_is_valid(), is stricter). */
static bool region_ok(const char *s, size_t size)
{
    size_t n;

    if (!reg_terminated(s, size) || !s[0])
        return false;
    n = strlen(s);
    if (n > BAKE_REGION_SIZE - 1)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

void registry_bake_distribution_release(struct registry_bake_distribution *d)
{
    if (!d)
        return;
    free(d->spec);
    d->spec = NULL;
}

int registry_bake_distribution_set(struct registry *reg, const char *build_id,
                                   const struct registry_bake_distribution *d,
                                   const char *const *regions, size_t n_regions, int64_t now_ms)
{
    int r = check_build_id(build_id);

    if (r < 0)
        return r;
    if (!reg_terminated(d->name, sizeof(d->name)) || !d->name[0] || !reg_printable(d->name))
        return error_set(EINVAL, "build '%s': malformed name", build_id);
    if (!region_ok(d->region, sizeof(d->region)))
        return error_set(EINVAL, "build '%s': malformed region '%.64s'", build_id, d->region);
    if (!reg_terminated(d->image_id, sizeof(d->image_id)) || !id_is_valid("ami", d->image_id))
        return error_set(EINVAL, "build '%s': malformed image id '%.*s'", build_id, ID_MAX_SIZE,
                         d->image_id);
    if (!d->spec || strlen(d->spec) > BAKE_SPEC_MAX)
        return error_set(EINVAL,
                         "build '%s': the distribution spec is missing or longer than "
                         "%d bytes",
                         build_id, BAKE_SPEC_MAX);
    if (n_regions < 1 || strcmp(regions[0], d->region) != 0)
        return error_set(EINVAL, "build '%s': the first output region must be the build's",
                         build_id);
    for (size_t i = 0; i < n_regions; i++) {
        if (!region_ok(regions[i], strlen(regions[i]) + 1))
            return error_set(EINVAL, "build '%s': malformed region '%.64s'", build_id, regions[i]);
        for (size_t k = 0; k < i; k++)
            if (strcmp(regions[k], regions[i]) == 0)
                return error_set(EINVAL, "build '%s': region '%s' is named twice", build_id,
                                 regions[i]);
    }
    if (n_regions > UINT32_MAX)
        return error_set(EINVAL, "build '%s': too many regions", build_id);

    r = registry_begin(reg);
    if (r < 0)
        return r;
    {
        _cleanup_stmt_ sqlite3_stmt *q = NULL;
        r = reg_select_by_id(reg, "SELECT image_id FROM bake_builds WHERE id = ?1", "build",
                             build_id, &q);
        if (r >= 0 && sqlite3_column_type(q, 0) != SQLITE_NULL)
            r = error_set(EEXIST, "build '%s' has its distribution recorded already", build_id);
    }
    if (r >= 0) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        r = reg_prepare(reg,
                        "UPDATE bake_builds SET name = ?2, region = ?3, image_id = ?4,"
                        " distribution = ?5, updated = ?6 WHERE id = ?1",
                        &st);
        if (r >= 0) {
            reg_bind_text(st, 1, build_id);
            reg_bind_text(st, 2, d->name);
            reg_bind_text(st, 3, d->region);
            reg_bind_text(st, 4, d->image_id);
            reg_bind_text(st, 5, d->spec);
            sqlite3_bind_int64(st, 6, now_ms);
            r = reg_step_done(reg, st, "cannot record the distribution of build '%s'", build_id);
        }
    }
    for (size_t i = 0; r >= 0 && i < n_regions; i++) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        r = reg_prepare(reg,
                        "INSERT INTO bake_outputs (build_id, seq, region, image_id, state,"
                        " attempts, error, started, updated)"
                        " VALUES (?1, ?2, ?3, ?4, 'pending', 0, NULL, 0, ?5)",
                        &st);
        if (r < 0)
            break;
        reg_bind_text(st, 1, build_id);
        sqlite3_bind_int64(st, 2, (int64_t)i);
        reg_bind_text(st, 3, regions[i]);
        /* The build's own region publishes the build's image. */
        reg_bind_text(st, 4, i == 0 ? d->image_id : "");
        sqlite3_bind_int64(st, 5, now_ms);
        r = reg_step_done(reg, st, "cannot record output region '%s' of build '%s'", regions[i],
                          build_id);
    }
    r = registry_end(reg, r);
    return r < 0 ? r : 0;
}

int registry_bake_distribution_get(struct registry *reg, const char *build_id,
                                   struct registry_bake_distribution *ret)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    struct registry_bake_distribution d = {0};
    int r = check_build_id(build_id);

    if (r < 0)
        return r;
    r = reg_select_by_id(reg,
                         "SELECT name, region, image_id, distribution FROM bake_builds"
                         " WHERE id = ?1",
                         "build", build_id, &st);
    if (r < 0)
        return r;
    if (sqlite3_column_type(st, 2) == SQLITE_NULL)
        return error_set(ENOENT, "build '%s' has no distribution recorded", build_id);
    if (!reg_column_copy(st, 0, d.name, sizeof(d.name)) ||
        !reg_column_copy(st, 1, d.region, sizeof(d.region)) ||
        !reg_column_copy(st, 2, d.image_id, sizeof(d.image_id)) ||
        sqlite3_column_type(st, 3) != SQLITE_TEXT || !id_is_valid("ami", d.image_id))
        return error_set(EBADMSG, "the distribution of build '%s' is malformed", build_id);
    d.spec = reg_column_strdup(st, 3);
    *ret = d;
    return 0;
}

#define OUTPUT_COLUMNS "build_id, seq, region, image_id, state, attempts, error, started, updated"

static int read_output(struct registry *reg, sqlite3_stmt *st, void *slot, void *data)
{
    struct registry_bake_output *o = slot;
    int64_t seq = sqlite3_column_int64(st, 1), attempts = sqlite3_column_int64(st, 5);
    int state;

    (void)reg;
    (void)data;
    memset(o, 0, sizeof(*o));
    state =
        name_index(output_state_names, ARRAY_SIZE(output_state_names), sqlite3_column_text(st, 4));
    if (!reg_column_copy(st, 0, o->build_id, sizeof(o->build_id)) || seq < 0 || seq > UINT32_MAX ||
        !reg_column_copy(st, 2, o->region, sizeof(o->region)) ||
        !reg_column_copy(st, 3, o->image_id, sizeof(o->image_id)) || state < 0 || attempts < 0 ||
        attempts > UINT32_MAX || !reg_column_copy(st, 6, o->error, sizeof(o->error)) ||
        (o->image_id[0] && !id_is_valid("ami", o->image_id)))
        return error_set(EBADMSG, "output row '%s' of build '%s' is malformed", o->region,
                         o->build_id);
    o->seq = (uint32_t)seq;
    o->state = (enum registry_bake_output_state)state;
    o->attempts = (uint32_t)attempts;
    o->started = sqlite3_column_int64(st, 7);
    o->updated = sqlite3_column_int64(st, 8);
    return 0;
}

int registry_bake_output_list(struct registry *reg, const char *build_id,
                              struct registry_bake_output **ret, size_t *ret_n)
{
    static const struct reg_collector c = {
        .size = sizeof(struct registry_bake_output),
        .read = read_output,
        .release = reg_collect_release_free,
        .what = "build outputs",
    };

    return list_of_build(reg, build_id,
                         "SELECT " OUTPUT_COLUMNS " FROM bake_outputs WHERE build_id = ?1"
                         " ORDER BY seq",
                         &c, (void **)ret, ret_n);
}

int registry_bake_output_update(struct registry *reg, const struct registry_bake_output *o,
                                int64_t now_ms)
{
    char error[BAKE_ERROR_MAX + 1];
    size_t n = 0;
    int r = check_build_id(o->build_id);

    if (r < 0)
        return r;
    if (!region_ok(o->region, sizeof(o->region)))
        return error_set(EINVAL, "build '%s': malformed region", o->build_id);
    if (!registry_bake_output_state_to_string(o->state))
        return error_set(EINVAL, "build '%s': invalid output state %d", o->build_id, (int)o->state);
    if (!reg_terminated(o->image_id, sizeof(o->image_id)) ||
        (o->image_id[0] && !id_is_valid("ami", o->image_id)))
        return error_set(EINVAL, "build '%s': malformed image id for region '%s'", o->build_id,
                         o->region);
    if (o->state == BAKE_OUTPUT_DONE && !o->image_id[0])
        return error_set(EINVAL, "build '%s': region '%s' cannot be done without an image",
                         o->build_id, o->region);
    if (o->started < 0)
        return error_set(EINVAL, "build '%s': negative start time", o->build_id);
    /* Keep printable bytes only, truncated (as an entry's error). */
    for (const char *m = o->error; *m && n < BAKE_ERROR_MAX && m < o->error + sizeof(o->error); m++)
        error[n++] = (*m < 0x20 || *m == 0x7f) ? ' ' : *m;
    error[n] = '\0';

    r = registry_begin(reg);
    if (r < 0)
        return r;
    {
        _cleanup_stmt_ sqlite3_stmt *q = NULL;
        r = reg_prepare(reg, "SELECT state FROM bake_outputs WHERE build_id = ?1 AND region = ?2",
                        &q);
        if (r >= 0) {
            reg_bind_text(q, 1, o->build_id);
            reg_bind_text(q, 2, o->region);
            r = sqlite3_step(q);
            if (r == SQLITE_DONE)
                r = error_set(ENOENT, "build '%s' has no output region '%s'", o->build_id,
                              o->region);
            else if (r != SQLITE_ROW)
                r = reg_fail(reg, r, "cannot read output region '%s' of build '%s'", o->region,
                             o->build_id);
            else if (strcmp((const char *)sqlite3_column_text(q, 0), "done") == 0)
                r = error_set(EINVAL, "output region '%s' of build '%s' is done already", o->region,
                              o->build_id);
            else
                r = 0;
        }
    }
    if (r >= 0) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        r = reg_prepare(reg,
                        "UPDATE bake_outputs SET image_id = ?3, state = ?4, attempts = ?5,"
                        " error = ?6, started = ?7, updated = ?8"
                        " WHERE build_id = ?1 AND region = ?2",
                        &st);
        if (r >= 0) {
            reg_bind_text(st, 1, o->build_id);
            reg_bind_text(st, 2, o->region);
            reg_bind_text(st, 3, o->image_id);
            reg_bind_text(st, 4, output_state_names[o->state]);
            sqlite3_bind_int64(st, 5, o->attempts);
            reg_bind_text(st, 6, n ? error : NULL);
            sqlite3_bind_int64(st, 7, o->started);
            sqlite3_bind_int64(st, 8, now_ms);
            r = reg_step_done(reg, st, "cannot update output region '%s' of build '%s'", o->region,
                              o->build_id);
        }
    }
    r = registry_end(reg, r);
    return r < 0 ? r : 0;
}
