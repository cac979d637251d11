/* The snapshot actions: DescribeSnapshots and DeleteSnapshot (the wire
 * reference's sections 2.2 to 2.4 and 4), and how every handler reaches a
 * region's registry (api_region_open()).  The createVolumePermission
 * actions are in sharing.c.
 *
 * Design notes:
 *
 * - Region access: every request opens the region it was signed for with
 *   region_open(read_only = true) and frees it before answering.  Read-only
 *   here means the chunk store is not written (no directory creation, no
 *   recovery sweep that could race a running import); the registry is a
 *   normal SQLite connection, and WAL lets any number of them read while
 *   one writes.  Opening costs a few system calls and one SQLite open per
 *   request, which is small next to the HTTP and SigV4 work, and there is
 *   no cache to invalidate or to share between connection threads.  A
 *   region that has no data yet is an empty region, not an error.
 *
 * - Visibility: a snapshot is visible to the account that owns it, to the
 *   accounts it is shared with (a createVolumePermission naming them) and,
 *   when public (the group "all"), to everyone; any other snapshot answers
 *   exactly like one that does not exist (InvalidSnapshot.NotFound).  Only
 *   the owner changes a snapshot, tags it or sees its tags.  The rule is
 *   permissions.c's (api_access_decide(), api_snapshot_access()).
 *
 * - Filtering and paging happen here over the region's snapshot list
 *   (ordered by start time, then id); a page ends at an item whose sort
 *   key becomes the NextToken, so deleting items between pages neither
 *   repeats nor skips the others.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/internal.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/ids.h"
#include "common/util.h"
#include "registry/images.h"
#include "registry/snapshot-permissions.h"
#include "service/service.h"

/* What AWS reports as the volume of a snapshot that was imported, copied
 * or uploaded rather than taken from a volume (a row's volume_id is ""). */
#define IMPORTED_VOLUME_ID "vol-ffffffff"

int api_region_open(struct api_ctx *ctx, struct region **ret)
{
    int r = region_open(ctx->data_dir, ctx->region, true, ret);

    if (r == -ENOENT) {
        *ret = NULL;
        return 0;
    }
    return r;
}

int api_snapshot_id_check(struct api_ctx *ctx, const char *id)
{
    return api_id_check(ctx, API_RES_SNAPSHOT, "snap", id);
}

int api_snapshot_not_found(struct api_ctx *ctx, const char *const *ids, size_t n)
{
    _cleanup_free_ char *list = api_join_ids(ids, n);

    ctx->resource = API_RES_SNAPSHOT;
    if (n > 1)
        return api_fail(ctx, API_ERR_NOT_FOUND, "The snapshots '%s' do not exist.", list);
    return api_fail(ctx, API_ERR_NOT_FOUND, "The snapshot '%s' does not exist.", list);
}

const char *api_format_time(int64_t ms, char *buf, size_t size)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    if (!gmtime_r(&t, &tm))
        memset(&tm, 0, sizeof(tm));
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    return buf;
}

/* ---- DescribeSnapshots ---- */

static const char *const snapshot_filters[] = {
    "description", "encrypted", "owner-alias", "owner-id", "progress", "snapshot-id",
    "start-time",  "status",    "storage-tier", "transfer-type", "volume-id", "volume-size",
    "tag-key",     "tag:",      NULL,
};

/* A candidate row and, once loaded, its tags (none for a snapshot the
 * caller does not own: tags are the owner's). */
static bool match_fields(const struct api_filters *fs, const struct registry_snapshot *s,
                         const char *provider)
{
    char size[24], progress[8], start[40];

    /* Only the provider's snapshots have an owner alias; kiln makes no
     * time-based copies: a transfer-type filter matches nothing. */
    if (api_filters_has(fs, "owner-alias") &&
        (strcmp(s->owner, provider) != 0 ||
         !api_filters_match(fs, "owner-alias", SERVICE_PROVIDER_ACCOUNT)))
        return false;
    if (api_filters_has(fs, "transfer-type"))
        return false;
    snprintf(size, sizeof(size), "%" PRIu32, s->volume_size_gib);
    snprintf(progress, sizeof(progress), "%d%%", s->progress);
    api_format_time(s->start_time, start, sizeof(start));
    return api_filters_match(fs, "snapshot-id", s->id) &&
           api_filters_match(fs, "owner-id", s->owner) &&
           api_filters_match(fs, "status", snapshot_state_to_string(s->state)) &&
           api_filters_match(fs, "description", s->description ? s->description : "") &&
           api_filters_match(fs, "volume-size", size) &&
           api_filters_match(fs, "progress", progress) &&
           api_filters_match(fs, "start-time", start) &&
           api_filters_match(fs, "encrypted", "false") &&
           api_filters_match(fs, "storage-tier", "standard") &&
           api_filters_match(fs, "volume-id",
                             s->volume_id[0] ? s->volume_id : IMPORTED_VOLUME_ID);
}

/* Owner.N, resolved to n_accounts accounts (api_owners_resolve()): none
 * asked for matches all. */
static bool owner_matches(size_t n_owners, const char **accounts, size_t n_accounts,
                          const struct registry_snapshot *s)
{
    return n_owners == 0 || api_in_list(accounts, n_accounts, s->owner);
}

/* A snapshot row with its createVolumePermission list (loaded only when
 * the caller does not own it or asks RestorableBy). */
struct access {
    struct registry_permission *perms;
    size_t n_perms;
};

static bool perms_have(const struct access *a, enum registry_permission_kind kind,
                       const char *value)
{
    for (size_t i = 0; i < a->n_perms; i++)
        if (a->perms[i].kind == kind && strcmp(a->perms[i].value, value) == 0)
            return true;
    return false;
}

/* The caller's access to s, from its preloaded permissions. */
static enum api_access access_of(const struct api_ctx *ctx, const struct registry_snapshot *s,
                                 const struct access *a)
{
    return api_access_decide(ctx->account, s->owner,
                             perms_have(a, REGISTRY_PERMISSION_USER, ctx->account),
                             perms_have(a, REGISTRY_PERMISSION_GROUP, "all"));
}

/* RestorableBy.N (api_users_resolve(): 'self' is the caller's account id):
 * 'all' selects public snapshots; an account id selects the snapshots that
 * account owns or has an explicit permission for (EC2's wording: "own or
 * have explicit permissions"). */
static bool restorable_by(const char **users, size_t n, const struct registry_snapshot *s,
                          const struct access *a)
{
    if (n == 0)
        return true;
    for (size_t i = 0; i < n; i++) {
        const char *u = users[i];
        if (strcmp(u, "all") == 0) {
            if (perms_have(a, REGISTRY_PERMISSION_GROUP, "all"))
                return true;
        } else if (strcmp(u, s->owner) == 0 || perms_have(a, REGISTRY_PERMISSION_USER, u)) {
            return true;
        }
    }
    return false;
}

static void access_release(struct access *as, size_t n)
{
    if (!as)
        return;
    for (size_t i = 0; i < n; i++)
        free(as[i].perms);
    free(as);
}

void api_write_tag_set(struct xml *x, const struct registry_tag *tags, size_t n)
{
    xml_open(x, "tagSet");
    for (size_t i = 0; i < n; i++) {
        xml_open(x, "item");
        xml_element(x, "key", tags[i].key);
        xml_element(x, "value", tags[i].value);
        xml_close(x);
    }
    xml_close(x);
}

static void write_snapshot(struct xml *x, const struct api_candidate *c, const char *provider)
{
    const struct registry_snapshot *s = c->row;
    char t[40], progress[8];

    snprintf(progress, sizeof(progress), "%d%%", s->progress);
    xml_open(x, "item");
    xml_element(x, "snapshotId", s->id);
    xml_element(x, "volumeId", s->volume_id[0] ? s->volume_id : IMPORTED_VOLUME_ID);
    xml_element(x, "status", snapshot_state_to_string(s->state));
    if (s->state == SNAPSHOT_ERROR)
        xml_element(x, "statusMessage", s->state_message ? s->state_message : "");
    xml_element(x, "startTime", api_format_time(s->start_time, t, sizeof(t)));
    if (s->state == SNAPSHOT_COMPLETED && s->completion_time > 0)
        xml_element(x, "completionTime", api_format_time(s->completion_time, t, sizeof(t)));
    xml_element(x, "progress", progress);
    xml_element(x, "ownerId", s->owner);
    if (strcmp(s->owner, provider) == 0)
        xml_element(x, "ownerAlias", SERVICE_PROVIDER_ACCOUNT);
    xml_element_int(x, "volumeSize", s->volume_size_gib);
    xml_element(x, "description", s->description ? s->description : "");
    xml_element_bool(x, "encrypted", false);
    xml_element(x, "storageTier", "standard");
    api_write_tag_set(x, c->tags, c->n_tags);
    xml_close(x);
}

/* Row k of a DescribeSnapshots is snapshot `id` and visible to the caller. */
struct seen_snapshots {
    struct registry_snapshot *const *rows;
    const bool *visible;
};

static bool snapshot_seen(const void *ud, size_t k, const char *id)
{
    const struct seen_snapshots *s = ud;

    return s->visible[k] && strcmp(s->rows[k]->id, id) == 0;
}

int api_describe_snapshots(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_free_ const char **ids = NULL, **owners = NULL, **users = NULL, **accounts = NULL;
    struct registry_snapshot **rows = NULL;
    struct api_candidates cs = {0};
    struct api_describe d;
    struct region *rg;
    struct access *as = NULL;
    bool *visible = NULL;
    size_t n_ids, n_owners, n_users, n_accounts = 0, n_rows = 0, n_page = 0;
    char provider[ACCOUNT_ID_SIZE];
    int r;

    r = query_get_list(q, "SnapshotId", &ids, &n_ids);
    if (r == 0)
        r = query_get_list(q, "Owner", &owners, &n_owners);
    if (r == 0)
        r = query_get_list(q, "RestorableBy", &users, &n_users);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n_ids; i++) {
        r = api_snapshot_id_check(ctx, ids[i]);
        if (r < 0)
            return r;
    }
    r = api_owners_resolve(ctx, owners, n_owners, provider, &accounts, &n_accounts);
    if (r == 0)
        r = api_users_resolve(ctx, users, n_users);
    if (r == 0)
        r = api_describe_begin(ctx, q, n_ids > 0, "snapshotIds", snapshot_filters, &d);
    if (r < 0)
        return r;
    rg = d.rg;
    if (rg) {
        r = registry_snapshot_list(rg->reg, &rows, &n_rows);
        if (r < 0)
            goto out;
    }
    as = xcalloc(n_rows ? n_rows : 1, sizeof(*as));
    visible = xcalloc(n_rows ? n_rows : 1, sizeof(*visible));
    for (size_t k = 0; k < n_rows; k++) {
        if (strcmp(rows[k]->owner, ctx->account) != 0 || n_users) {
            r = registry_snapshot_permission_list(rg->reg, rows[k]->id, &as[k].perms,
                                                  &as[k].n_perms);
            if (r < 0)
                goto out;
        }
        visible[k] = access_of(ctx, rows[k], &as[k]) != API_ACCESS_NONE;
    }

    /* Explicit ids must all name visible snapshots. */
    r = api_ids_must_exist(ctx, ids, n_ids, n_rows, snapshot_seen,
                           &(struct seen_snapshots){ rows, visible }, api_snapshot_not_found);
    if (r < 0)
        goto out;

    api_candidates_init(&cs, n_rows);
    for (size_t k = 0; k < n_rows; k++) {
        struct registry_snapshot *s = rows[k];

        if (!visible[k] || (n_ids && !api_in_list(ids, n_ids, s->id)) ||
            !owner_matches(n_owners, accounts, n_accounts, s) ||
            !restorable_by(users, n_users, s, &as[k]) || !match_fields(&d.fs, s, provider))
            continue;
        r = api_candidates_add(&cs, rg, &d.fs, d.after, s->start_time, s->id, s,
                               api_snapshot_visible(ctx, s));
        if (r < 0)
            goto out;
    }
    r = api_candidates_page(&cs, rg, d.max, &n_page);
    if (r < 0)
        goto out;
    xml_open(x, "snapshotSet");
    for (size_t i = 0; i < n_page; i++)
        write_snapshot(x, &cs.c[i], provider);
    xml_close(x);
    api_candidates_write_token(x, &cs, n_page);
    r = 0;
out:
    api_candidates_release(&cs);
    access_release(as, n_rows);
    free(visible);
    registry_snapshot_list_free(rows, n_rows);
    api_describe_release(&d);
    return r;
}

/* ---- DeleteSnapshot ---- */

/* DeleteSnapshot refuses a snapshot that an image still maps (any image
 * that is not deregistered, disabled ones included).  It runs inside the
 * delete's transaction, so a RegisterImage cannot slip in between the
 * check and the delete. */
static int snapshot_check_not_in_use(struct api_ctx *ctx, struct region *rg, const char *id)
{
    size_t n = 0;
    int r = registry_snapshot_in_use_by_images(rg->reg, id, &n);

    if (r < 0)
        return r;
    if (n > 0) {
        ctx->resource = API_RES_SNAPSHOT;
        return api_fail(ctx, API_ERR_IN_USE, "The snapshot %s is currently in use by %zu image%s",
                        id, n, n == 1 ? "" : "s");
    }
    return 0;
}

int api_delete_snapshot(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    struct registry_snapshot *s = NULL;
    const char *id = query_get(q, "SnapshotId");
    int r;

    if (!id)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter SnapshotId");
    r = api_snapshot_id_check(ctx, id);
    if (r < 0)
        return r;
    r = api_region_open(ctx, &rg);
    if (r < 0)
        return r;
    if (!rg)
        return api_snapshot_not_found(ctx, &id, 1);

    r = registry_begin(rg->reg);
    if (r < 0)
        return r;
    r = registry_snapshot_get(rg->reg, id, &s);
    /* A snapshot shared with the caller is not there for a delete. */
    if (r == -ENOENT || (r == 0 && !api_snapshot_visible(ctx, s))) {
        r = api_snapshot_not_found(ctx, &id, 1);
        goto fail;
    }
    if (r < 0)
        goto fail;
    r = snapshot_check_not_in_use(ctx, rg, id);
    if (r < 0)
        goto fail;
    r = api_dry_run(ctx);
    if (r < 0)
        goto fail;
    r = service_snapshot_delete(rg, id);
    if (r == -ENOENT)
        r = api_snapshot_not_found(ctx, &id, 1);
    if (r < 0)
        goto fail;
    r = registry_commit(rg->reg);
    if (r < 0)
        goto fail;
    registry_snapshot_free(s);
    xml_element_bool(x, "return", true);
    return 0;

fail:
    /* Nothing was written unless the delete itself ran; either way the
     * first error is what the client sees. */
    registry_rollback(rg->reg);
    registry_snapshot_free(s);
    return r;
}
