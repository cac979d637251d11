/* EBS direct API uploads: typed insert, get, token lookup, delete and the
 * pending list over the `ebs_uploads` table (schema versions 5 and 7).  Values
 * are checked before they are bound, and rows read back are checked again
 * (-EBADMSG), like the other tables. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/ids.h"
#include "common/util.h"
#include "registry/ebs-uploads.h"
#include "registry/internal.h"

static bool hex64(const char *s)
{
    if (strlen(s) != 64)
        return false;
    for (size_t i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static int check_upload(const struct registry_ebs_upload *u)
{
    if (!id_is_valid("snap", u->snapshot_id))
        return error_set(EINVAL, "malformed snapshot id '%.40s'", u->snapshot_id);
    if (!reg_account_is_valid(u->owner))
        return error_set(EINVAL, "upload of '%s': malformed owner '%.20s'", u->snapshot_id,
                         u->owner);
    if (!hex64(u->request_digest))
        return error_set(EINVAL, "upload of '%s': malformed request digest", u->snapshot_id);
    if (u->timeout_minutes < EBS_TIMEOUT_MIN || u->timeout_minutes > EBS_TIMEOUT_MAX)
        return error_set(EINVAL, "upload of '%s': timeout %d is not %d to %d minutes",
                         u->snapshot_id, u->timeout_minutes, EBS_TIMEOUT_MIN, EBS_TIMEOUT_MAX);
    return 0;
}

int registry_ebs_upload_insert(struct registry *reg, const struct registry_ebs_upload *u)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    char hex[DIGEST_HEX_SIZE];
    int r = check_upload(u);

    if (r < 0)
        return r;
    r = reg_prepare(reg,
                    "INSERT INTO ebs_uploads (snapshot_id, owner, client_token, request_digest,"
                    " timeout_minutes, parent_map_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, u->snapshot_id);
    reg_bind_text(st, 2, u->owner);
    reg_bind_text(st, 3, u->client_token[0] ? u->client_token : NULL);
    reg_bind_text(st, 4, u->request_digest);
    sqlite3_bind_int(st, 5, u->timeout_minutes);
    if (u->has_parent_map)
        sqlite3_bind_text(st, 6, digest_to_hex(&u->parent_map_id, hex), -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 6);
    r = reg_step_done(reg, st, "cannot record the upload of snapshot '%s'", u->snapshot_id);
    return r < 0 ? r : 0;
}

#define UPLOAD_COLUMNS \
    "snapshot_id, owner, client_token, request_digest, timeout_minutes, parent_map_id"

/* Fill *ret from a row of UPLOAD_COLUMNS. */
static int read_row(sqlite3_stmt *st, struct registry_ebs_upload *ret)
{
    const char *id = (const char *)sqlite3_column_text(st, 0);
    const char *owner = (const char *)sqlite3_column_text(st, 1);
    const char *token = (const char *)sqlite3_column_text(st, 2);
    const char *digest = (const char *)sqlite3_column_text(st, 3);
    const char *parent = (const char *)sqlite3_column_text(st, 5);
    struct registry_ebs_upload u = { .timeout_minutes = sqlite3_column_int(st, 4) };

    if (!id || !owner || !digest || strlen(id) >= sizeof(u.snapshot_id) ||
        strlen(owner) >= sizeof(u.owner) || strlen(digest) >= sizeof(u.request_digest) ||
        (token && strlen(token) >= sizeof(u.client_token)))
        return error_set(EBADMSG, "malformed upload row for '%.40s'", id ? id : "");
    snprintf(u.snapshot_id, sizeof(u.snapshot_id), "%s", id);
    snprintf(u.owner, sizeof(u.owner), "%s", owner);
    snprintf(u.client_token, sizeof(u.client_token), "%s", token ? token : "");
    snprintf(u.request_digest, sizeof(u.request_digest), "%s", digest);
    if (parent) {
        if (digest_from_hex(parent, &u.parent_map_id) < 0)
            return error_set(EBADMSG, "malformed parent map in the upload row for '%s'",
                             u.snapshot_id);
        u.has_parent_map = true;
    }
    if (check_upload(&u) < 0)
        return error_set(EBADMSG, "malformed upload row for '%s'", u.snapshot_id);
    *ret = u;
    return 0;
}

static int get_one(struct registry *reg, sqlite3_stmt *st, const char *what,
                   struct registry_ebs_upload *ret)
{
    int rc = sqlite3_step(st);

    if (rc == SQLITE_DONE)
        return error_set(ENOENT, "no upload %s", what);
    if (rc != SQLITE_ROW)
        return reg_fail(reg, rc, "cannot read the upload %s", what);
    return read_row(st, ret);
}

int registry_ebs_upload_get(struct registry *reg, const char *snapshot_id,
                            struct registry_ebs_upload *ret)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    char what[64];
    int r;

    r = reg_prepare(reg,
                    "SELECT " UPLOAD_COLUMNS " FROM ebs_uploads WHERE snapshot_id = ?1",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, snapshot_id);
    snprintf(what, sizeof(what), "of snapshot '%.40s'", snapshot_id);
    return get_one(reg, st, what, ret);
}

int registry_ebs_upload_find_token(struct registry *reg, const char *owner, const char *token,
                                   struct registry_ebs_upload *ret)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    r = reg_prepare(reg,
                    "SELECT " UPLOAD_COLUMNS " FROM ebs_uploads"
                    " WHERE owner = ?1 AND client_token = ?2",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, owner);
    reg_bind_text(st, 2, token);
    return get_one(reg, st, "with that client token", ret);
}

int registry_ebs_upload_delete(struct registry *reg, const char *snapshot_id)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    r = reg_prepare(reg, "DELETE FROM ebs_uploads WHERE snapshot_id = ?1", &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, snapshot_id);
    r = reg_step_done(reg, st, "cannot delete the upload of snapshot '%s'", snapshot_id);
    return r < 0 ? r : 0;
}

static int collect_row(struct registry *reg, sqlite3_stmt *st, void *slot, void *data)
{
    (void)reg;
    (void)data;
    return read_row(st, slot);
}

int registry_ebs_uploads_pending(struct registry *reg, struct registry_ebs_upload **ret,
                                 size_t *ret_n)
{
    static const struct reg_collector c = {
        .size = sizeof(struct registry_ebs_upload),
        .read = collect_row,
        .release = reg_collect_release_free,
        .what = "pending uploads",
    };
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    void *list;
    int r;

    r = reg_prepare(reg,
                    "SELECT u.snapshot_id, u.owner, u.client_token, u.request_digest,"
                    " u.timeout_minutes, u.parent_map_id FROM ebs_uploads u JOIN snapshots s"
                    " ON s.id = u.snapshot_id WHERE s.state = 'pending' ORDER BY u.snapshot_id",
                    &st);
    if (r < 0)
        return r;
    r = reg_collect(reg, st, &c, NULL, &list, ret_n);
    if (r < 0)
        return r;
    *ret = list;
    return 0;
}

int registry_ebs_upload_parent_maps(struct registry *reg, struct digest **ret, size_t *ret_n)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    _cleanup_free_ struct digest *maps = NULL;
    size_t n = 0;
    int r, rc;

    r = reg_prepare(reg,
                    "SELECT DISTINCT u.parent_map_id FROM ebs_uploads u JOIN snapshots s"
                    " ON s.id = u.snapshot_id"
                    " WHERE s.state = 'pending' AND u.parent_map_id IS NOT NULL",
                    &st);
    if (r < 0)
        return r;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *hex = (const char *)sqlite3_column_text(st, 0);
        struct digest d;
        if (!hex || digest_from_hex(hex, &d) < 0)
            return error_set(EBADMSG, "registry '%s' holds a malformed upload parent map id",
                             reg->path);
        maps = xrealloc(maps, (n + 1) * sizeof(*maps));
        maps[n++] = d;
    }
    if (rc != SQLITE_DONE)
        return reg_fail(reg, rc, "cannot list the parent maps of pending uploads");
    *ret = TAKE_PTR(maps);
    *ret_n = n;
    return 0;
}
