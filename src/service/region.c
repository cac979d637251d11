/* Regions of a data directory and the snapshot services over them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "registry/accounts.h"
#include "service/service.h"

/* How long an import waits for a running gc. */
#define LOCK_TIMEOUT_MS (10 * 60 * 1000)

char *service_default_data_dir(void)
{
    const char *env = getenv("KILN_DATA_DIR");
    const char *xdg = getenv("XDG_DATA_HOME");
    const char *home = getenv("HOME");

    if (env && *env)
        return xstrdup(env);
    if (xdg && *xdg)
        return xasprintf("%s/kiln", xdg);
    return xasprintf("%s/.local/share/kiln", home && *home ? home : ".");
}

bool region_name_is_valid(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > 32 || name[0] < 'a' || name[0] > 'z')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
              name[i] == '-'))
            return false;
    return true;
}

int region_open(const char *data_dir, const char *name, bool read_only, struct region **ret)
{
    _cleanup_(region_freep) struct region *r = xcalloc(1, sizeof(*r));
    _cleanup_free_ char *db = NULL, *storedir = NULL;
    struct store_options so = { .read_only = read_only };
    struct stat st;
    int e;

    if (!region_name_is_valid(name))
        return error_set(EINVAL, "invalid region name '%s'", name);
    r->name = xstrdup(name);
    r->data_dir = xstrdup(data_dir);
    r->dir = xasprintf("%s/regions/%s", data_dir, name);
    r->read_only = read_only;
    if (read_only) {
        if (stat(r->dir, &st) < 0)
            return error_set(ENOENT, "region '%s' has no data in '%s'", name, data_dir);
    } else {
        e = mkdir_p(r->dir);
        if (e < 0)
            return error_set(e, "cannot create '%s': %s", r->dir, strerror(-e));
    }
    storedir = xasprintf("%s/store", r->dir);
    e = store_open(storedir, &so, &r->store);
    if (e < 0)
        return e;
    db = xasprintf("%s/registry.db", r->dir);
    e = registry_open(db, &r->reg);
    if (e < 0)
        return e;
    if (!read_only) {
        /* Objects of a writer that died before syncing may be torn. */
        e = store_recover(r->store);
        if (e < 0)
            return error_set(e, "cannot recover the store of region '%s': %s", name,
                             strerror(-e));
    }
    *ret = TAKE_PTR(r);
    return 0;
}

void region_free(struct region *r)
{
    if (!r)
        return;
    registry_free(r->reg);
    store_free(r->store);
    free(r->name);
    free(r->data_dir);
    free(r->dir);
    free(r);
}

int service_default_account(const char *data_dir, char ret[ACCOUNT_ID_SIZE])
{
    _cleanup_free_ char *path = accounts_path(data_dir);
    struct accounts *a = NULL;
    struct account_credentials c;
    bool created;
    int e;

    e = mkdir_p(data_dir);
    if (e < 0)
        return error_set(e, "cannot create '%s': %s", data_dir, strerror(-e));
    e = accounts_open(path, &a);
    if (e < 0)
        return e;
    e = accounts_ensure_default(a, &c, &created);
    accounts_free(a);
    if (e < 0)
        return e;
    memcpy(ret, c.account_id, ACCOUNT_ID_SIZE);
    return 0;
}

int service_provider_account(const char *data_dir, char ret[ACCOUNT_ID_SIZE])
{
    _cleanup_free_ char *path = accounts_path(data_dir);
    struct accounts *a = NULL;
    struct account acct = { 0 };
    struct account_credentials c;
    int e;

    e = mkdir_p(data_dir);
    if (e < 0)
        return error_set(e, "cannot create '%s': %s", data_dir, strerror(-e));
    e = accounts_open(path, &a);
    if (e < 0)
        return e;
    e = accounts_get_by_name(a, SERVICE_PROVIDER_ACCOUNT, &acct);
    if (e == 0) {
        memcpy(ret, acct.id, ACCOUNT_ID_SIZE);
        account_release(&acct);
    } else if (e == -ENOENT) {
        e = accounts_create(a, SERVICE_PROVIDER_ACCOUNT, &c);
        if (e == 0) {
            memcpy(ret, c.account_id, ACCOUNT_ID_SIZE);
        } else if (e == -EEXIST) { /* another process created it first */
            e = accounts_get_by_name(a, SERVICE_PROVIDER_ACCOUNT, &acct);
            if (e == 0) {
                memcpy(ret, acct.id, ACCOUNT_ID_SIZE);
                account_release(&acct);
            }
        }
    }
    accounts_free(a);
    return e < 0 ? e : 0;
}

int service_snapshot_get(struct region *r, const char *id, struct registry_snapshot **ret_row,
                         struct blockmap **ret_map)
{
    struct registry_snapshot *row = NULL;
    int e;

    e = registry_snapshot_get(r->reg, id, &row);
    if (e == -ENOENT)
        return error_set(ENOENT, "snapshot '%s' does not exist in region '%s'", id, r->name);
    if (e < 0)
        return e;
    if (ret_map) {
        if (!row->has_map) {
            e = error_set(EINVAL, "snapshot '%s' is %s and has no data yet", id,
                          snapshot_state_to_string(row->state));
            registry_snapshot_free(row);
            return e;
        }
        e = blockmap_load(r->store, &row->map_id, ret_map);
        if (e < 0) {
            char why[300];
            snprintf(why, sizeof(why), "%s", error_message());
            registry_snapshot_free(row);
            return error_set(e, "snapshot '%s': %s", id, why);
        }
    }
    if (ret_row)
        *ret_row = row;
    else
        registry_snapshot_free(row);
    return 0;
}

int service_snapshot_import(struct region *r, const char *path,
                            const struct service_import_options *opts,
                            char ret_id[ID_MAX_SIZE], struct import_stats *ret_stats)
{
    struct registry_snapshot *parent_row = NULL;
    _cleanup_(blockmap_freep) struct blockmap *parent = NULL;
    _cleanup_(blockmap_freep) struct blockmap *map = NULL;
    struct import_options io = {
        .format = opts->format,
        .threads = opts->threads,
        .progress = opts->progress,
    };
    struct registry_snapshot row = { .state = SNAPSHOT_COMPLETED, .progress = 100 };
    struct import_stats stats;
    int e;

    if (r->read_only)
        return -EROFS;
    if (opts->parent_id) {
        e = service_snapshot_get(r, opts->parent_id, &parent_row, &parent);
        if (e < 0)
            return e;
        io.parent = parent;
        io.parent_id = parent_row->map_id;
        registry_snapshot_free(parent_row);
        snprintf(row.parent_id, sizeof(row.parent_id), "%s", opts->parent_id);
    }
    e = id_generate("snap", row.id, sizeof(row.id));
    if (e < 0)
        return e;
    if (opts->owner)
        snprintf(row.owner, sizeof(row.owner), "%s", opts->owner);
    else if ((e = service_default_account(r->data_dir, row.owner)) < 0)
        return e;
    row.start_time = wall_clock_ms();

    /* Shared lock from the first chunk until the row that references the
     * chunks is committed: gc cannot sweep chunks this import reuses. */
    e = store_lock(r->store, false, LOCK_TIMEOUT_MS);
    if (e < 0)
        return e;
    e = snapshot_import(r->store, path, &io, &row.map_id, &map, &stats);
    if (e == 0) {
        row.has_map = true;
        row.volume_size = stats.volume_size;
        row.volume_size_gib = (uint32_t)DIV_ROUND_UP(stats.volume_size, 1ULL << 30);
        row.description = (char *)opts->description;
        row.completion_time = wall_clock_ms();
        e = registry_snapshot_insert(r->reg, &row);
    }
    store_unlock(r->store);
    if (e < 0)
        return e;
    memcpy(ret_id, row.id, ID_MAX_SIZE);
    if (ret_stats)
        *ret_stats = stats;
    return 0;
}

int service_snapshot_delete(struct region *r, const char *id)
{
    int e = registry_snapshot_delete(r->reg, id);

    if (e == -ENOENT)
        return error_set(ENOENT, "snapshot '%s' does not exist in region '%s'", id, r->name);
    return e;
}
