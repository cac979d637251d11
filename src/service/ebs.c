/* Uploads through the EBS direct API: StartSnapshot, PutSnapshotBlock,
 * CompleteSnapshot and the Timeout, over one region (service.h).  The API
 * server (src/api/ebs.c) is the only caller today; the reads (blocks of a
 * map, one block, lineage) are here too so that the API never touches the
 * store or the registry itself.
 *
 * Design notes (staging and durability):
 *
 *   DATA/regions/<r>/ebs-uploads/<snap-id>/ holds the accepted blocks of a
 *   pending snapshot, one file per block named by its index (16 hex
 *   digits): the 524288 bytes, then their SHA-256 (32 bytes).  A block is
 *   written to a temporary file in that directory, fsynced, renamed over
 *   its name and the directory fsynced before PutSnapshotBlock answers,
 *   so an answered block survives a crash or a restart; a torn temporary
 *   file is never read (its name is not an index) and goes with the
 *   directory.  The directory exists before the snapshot's row does, and
 *   goes after the row has left `pending`, so a pending row always has
 *   one; the expiry sweep removes directories whose row is not pending.
 *
 *   Completion re-reads every staged block and checks it against its
 *   digest (a damaged staging file is -EBADMSG, never a wrong snapshot),
 *   then runs the import pipeline (snapshot_import_reader()) over the
 *   volume: staged blocks, the parent's content where none was written,
 *   zeros elsewhere.  So an uploaded disk is cut, deduplicated and made
 *   durable exactly like an imported one, and dedups against it.
 *
 * Design notes (concurrency): the staging directory's flock() orders puts
 * (shared) against completion and expiry (exclusive): a block is either
 * staged before completion looks, or refused because the snapshot is no
 * longer pending.  Completion holds the store's shared lock from its
 * first chunk to its row's commit, as imports do, so gc cannot sweep
 * chunks it reuses.
 *
 * Design notes (Timeout): a pending upload is cancelled when neither a
 * block nor a completion came for `Timeout` minutes: its deadline is the
 * later of the start time and the staging directory's mtime (every staged
 * block renames into it) plus the timeout.  It is checked lazily by every
 * EBS call on the snapshot and by a sweep when the server starts.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/cleanup.h"
#include "common/digest-map.h"
#include "common/error.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/util.h"
#include "registry/ebs-uploads.h"
#include "registry/snapshot-permissions.h"
#include "service/service.h"

#define STAGING_DIR "ebs-uploads"
#define STAGED_FILE_SIZE (EBS_BLOCK_SIZE + DIGEST_SIZE)
#define BLOCKS_PER_EBS (EBS_BLOCK_SIZE / BLOCK_SIZE)
#define LOCK_TIMEOUT_MS (10 * 60 * 1000)
#define TOKEN_KEY_SETTING "ebs-token-key"
#define LINEAGE_MAX 10000 /* parent links followed before giving up */

static char *staging_path(struct region *r, const char *snap_id)
{
    return xasprintf("%s/" STAGING_DIR "/%s", r->dir, snap_id);
}

/* ---- checksums ---- */

void service_ebs_checksum_format(const struct digest *d, char ret[EBS_CHECKSUM_SIZE])
{
    EVP_EncodeBlock((unsigned char *)ret, d->b, DIGEST_SIZE);
}

int service_ebs_checksum_parse(const char *s, struct digest *ret)
{
    unsigned char out[48];
    char again[EBS_CHECKSUM_SIZE];
    struct digest d;

    if (strlen(s) != EBS_CHECKSUM_SIZE - 1)
        return error_set(EINVAL, "checksum '%.64s' is not the base64 of a SHA-256", s);
    if (EVP_DecodeBlock(out, (const unsigned char *)s, (int)strlen(s)) != 33)
        return error_set(EINVAL, "checksum '%.64s' is not base64", s);
    memcpy(d.b, out, DIGEST_SIZE);
    /* Canonical form only: the encoding of what was decoded. */
    service_ebs_checksum_format(&d, again);
    if (strcmp(again, s) != 0)
        return error_set(EINVAL, "checksum '%.64s' is not canonical base64", s);
    *ret = d;
    return 0;
}

/* ---- staging ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* The staged block indexes of dir (sorted); temporaries are skipped. */
static int staged_list(const char *dir, uint64_t **ret, size_t *ret_n)
{
    _cleanup_free_ uint64_t *v = NULL;
    size_t n = 0, cap = 0;
    DIR *d = opendir(dir);
    struct dirent *de;

    if (!d)
        return error_set(errno, "cannot read staging directory '%s': %m", dir);
    while ((de = readdir(d))) {
        uint64_t idx;

        if (strlen(de->d_name) != 16 || strspn(de->d_name, "0123456789abcdef") != 16)
            continue;
        idx = strtoull(de->d_name, NULL, 16);
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            v = xrealloc(v, cap * sizeof(*v));
        }
        v[n++] = idx;
    }
    closedir(d);
    qsort(v, n, sizeof(*v), cmp_u64);
    *ret = v ? TAKE_PTR(v) : xcalloc(1, sizeof(uint64_t));
    *ret_n = n;
    return 0;
}

/* Remove a staging directory and everything in it (missing is fine). */
static int staging_remove(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int r = 0;

    if (!d)
        return errno == ENOENT ? 0 : error_set(errno, "cannot open '%s': %m", dir);
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
            r = error_set(errno, "cannot remove '%s/%s': %m", dir, de->d_name);
    }
    closedir(d);
    if (r == 0 && rmdir(dir) < 0 && errno != ENOENT)
        r = error_set(errno, "cannot remove '%s': %m", dir);
    return r;
}

/* Open and flock the staging directory of snap_id.  -ENOENT when there is
 * none.  With `try`, -EBUSY instead of waiting. */
static int staging_lock(struct region *r, const char *snap_id, bool exclusive, bool try,
                        int *ret_fd)
{
    _cleanup_free_ char *dir = staging_path(r, snap_id);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0)
        return errno == ENOENT ? -ENOENT : error_set(errno, "cannot open '%s': %m", dir);
    while (flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | (try ? LOCK_NB : 0)) < 0) {
        int e = errno;
        if (e == EINTR)
            continue;
        close(fd);
        return e == EWOULDBLOCK ? -EBUSY : error_set(e, "cannot lock '%s': %s", dir, strerror(e));
    }
    *ret_fd = fd;
    return 0;
}

/* The deadline of a pending upload, unix ms. */
static int64_t upload_deadline(struct region *r, const struct registry_snapshot *row,
                               const struct registry_ebs_upload *u)
{
    _cleanup_free_ char *dir = staging_path(r, row->id);
    int64_t last = row->start_time;
    struct stat st;

    if (stat(dir, &st) == 0) {
        int64_t m = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
        last = MAX(last, m);
    }
    return last + (int64_t)u->timeout_minutes * 60 * 1000;
}

/* With the staging directory locked exclusively: move a pending row to
 * error and drop its blocks. */
static int cancel_upload(struct region *r, struct registry_snapshot *row, const char *why)
{
    _cleanup_free_ char *dir = staging_path(r, row->id);
    int e;

    row->state = SNAPSHOT_ERROR;
    free(row->state_message);
    row->state_message = xstrdup(why);
    e = registry_snapshot_update(r->reg, row);
    if (e < 0)
        return e;
    log_info("snapshot '%s': %s", row->id, why);
    return staging_remove(dir);
}

/* Check one upload's Timeout (the directory not yet locked).  1 when it
 * was cancelled. */
static int expire_one(struct region *r, const struct registry_ebs_upload *u)
{
    struct registry_snapshot *row = NULL;
    char why[128];
    int fd = -1, e;

    e = registry_snapshot_get(r->reg, u->snapshot_id, &row);
    if (e < 0)
        return e == -ENOENT ? 0 : e;
    if (row->state != SNAPSHOT_PENDING || wall_clock_ms() <= upload_deadline(r, row, u)) {
        registry_snapshot_free(row);
        return 0;
    }
    registry_snapshot_free(row);
    row = NULL;
    /* A completion in progress holds the lock: it decides. */
    e = staging_lock(r, u->snapshot_id, true, true, &fd);
    if (e == -EBUSY)
        return 0;
    if (e < 0 && e != -ENOENT)
        return e;
    e = registry_snapshot_get(r->reg, u->snapshot_id, &row);
    if (e == 0 && row->state == SNAPSHOT_PENDING && wall_clock_ms() > upload_deadline(r, row, u)) {
        snprintf(why, sizeof(why),
                 "the upload timed out: no block and no completion for %d minutes",
                 u->timeout_minutes);
        e = cancel_upload(r, row, why);
        if (e == 0)
            e = 1;
    } else if (e == -ENOENT) {
        e = 0;
    }
    registry_snapshot_free(row);
    if (fd >= 0)
        close(fd);
    return e;
}

int service_ebs_expire(struct region *r, const char *snap_id, size_t *ret_n)
{
    _cleanup_free_ struct registry_ebs_upload *list = NULL;
    _cleanup_free_ char *top = NULL;
    size_t n = 0, expired = 0;
    int e;

    if (snap_id && !id_is_valid("snap", snap_id))
        return error_set(EINVAL, "malformed snapshot id '%.40s'", snap_id);
    if (snap_id) {
        struct registry_ebs_upload u;
        e = registry_ebs_upload_get(r->reg, snap_id, &u);
        if (e == -ENOENT)
            e = 0;
        else if (e == 0)
            e = expire_one(r, &u);
        if (e >= 0 && ret_n)
            *ret_n = (size_t)e;
        return e < 0 ? e : 0;
    }
    e = registry_ebs_uploads_pending(r->reg, &list, &n);
    if (e < 0)
        return e;
    for (size_t i = 0; i < n; i++) {
        /* One upload that cannot be checked (its staging directory
         * damaged, the registry busy for it) neither stops the others
         * being cancelled nor fails the caller's unrelated request. */
        e = expire_one(r, &list[i]);
        if (e < 0) {
            log_warning("cannot check EBS upload '%s' for its timeout: %s",
                        list[i].snapshot_id, error_message() ? error_message() : strerror(-e));
            error_clear();
            continue;
        }
        expired += (size_t)e;
    }

    /* Staging directories whose snapshot is not pending any more. */
    top = xasprintf("%s/" STAGING_DIR, r->dir);
    DIR *d = opendir(top);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            struct registry_snapshot *row = NULL;
            bool stale;
            int fd = -1;

            if (!id_is_valid("snap", de->d_name))
                continue;
            e = registry_snapshot_get(r->reg, de->d_name, &row);
            if (e < 0 && e != -ENOENT) {
                closedir(d);
                return e;
            }
            stale = e == -ENOENT || row->state != SNAPSHOT_PENDING;
            registry_snapshot_free(row);
            /* A start that made its directory but not yet its row holds
             * no lock; a new directory is left alone for a minute. */
            struct stat st;
            if (!stale || fstatat(dirfd(d), de->d_name, &st, 0) < 0 ||
                time(NULL) - st.st_mtim.tv_sec < 60)
                continue;
            if (staging_lock(r, de->d_name, true, true, &fd) == 0) {
                _cleanup_free_ char *dir = staging_path(r, de->d_name);
                log_info("removing the staged blocks of '%s' (not pending)", de->d_name);
                staging_remove(dir);
                close(fd);
            }
        }
        closedir(d);
    }
    if (ret_n)
        *ret_n = expired;
    return 0;
}

/* ---- gc roots ---- */

int service_ebs_roots(struct region *r, struct digest_map *live)
{
    _cleanup_free_ struct digest *maps = NULL;
    size_t n = 0;
    char hex[DIGEST_HEX_SIZE];
    int e;

    e = registry_ebs_upload_parent_maps(r->reg, &maps, &n);
    for (size_t i = 0; i < n && e >= 0; i++) {
        struct blockmap *m = NULL;
        e = blockmap_load(r->store, &maps[i], &m);
        if (e == -ENOENT) { /* gone already: that completion will fail */
            error_clear();
            e = 0;
            continue;
        }
        if (e < 0)
            return error_set(EBADMSG,
                             "cannot mark the chunks of block map %s, the parent of a pending "
                             "EBS upload: it is unreadable; run 'kiln fsck'",
                             digest_to_hex(&maps[i], hex));
        digest_map_insert(live, &maps[i], NULL);
        for (size_t k = 0; k < m->n; k++)
            digest_map_insert(live, &m->ext[k].id, NULL);
        blockmap_free(m);
    }
    return e < 0 ? e : 0;
}

/* ---- access ---- */

int service_ebs_readable(struct region *r, const struct registry_snapshot *s,
                         const char *account, bool *ret)
{
    bool user = false;
    int e;

    if (strcmp(s->owner, account) == 0) {
        *ret = true;
        return 0;
    }
    e = registry_snapshot_permission_check(r->reg, s->id, account, &user, NULL);
    if (e < 0)
        return e;
    *ret = user;
    return 0;
}

int service_ebs_token_key(struct region *r, uint8_t ret[32])
{
    _cleanup_free_ char *hex = NULL;
    char fresh[65];
    uint8_t b[32];
    int e;

    e = registry_setting_get(r->reg, TOKEN_KEY_SETTING, &hex);
    if (e == -ENOENT) {
        /* Made once, in a write transaction, so that two first callers
         * agree on one key. */
        e = registry_begin(r->reg);
        if (e < 0)
            return e;
        e = registry_setting_get(r->reg, TOKEN_KEY_SETTING, &hex);
        if (e == -ENOENT) {
            e = random_bytes(b, sizeof(b));
            if (e == 0) {
                hex_encode(b, sizeof(b), fresh);
                e = registry_setting_set(r->reg, TOKEN_KEY_SETTING, fresh);
                hex = xstrdup(fresh);
            }
        }
        if (e >= 0)
            e = registry_commit(r->reg);
        if (e < 0) {
            registry_rollback(r->reg);
            return e;
        }
    }
    if (e < 0)
        return e;
    if (strlen(hex) != 64)
        return error_set(EBADMSG, "setting '%s' is not 64 hex digits", TOKEN_KEY_SETTING);
    for (size_t i = 0; i < 32; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return error_set(EBADMSG, "setting '%s' is not 64 hex digits", TOKEN_KEY_SETTING);
        ret[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/* ---- StartSnapshot ---- */

/* A digest of the parameters a retried StartSnapshot must repeat. */
static void request_digest(const struct service_ebs_start_options *o, char ret[DIGEST_HEX_SIZE])
{
    struct sha256_ctx *c = sha256_new();
    struct digest d;
    char num[64];

    snprintf(num, sizeof(num), "%" PRIu64 "|%d|", o->volume_size_gib,
             o->timeout_minutes ? o->timeout_minutes : EBS_TIMEOUT_DEFAULT);
    sha256_update(c, num, strlen(num));
    /* Lengths first, so that no two lists of strings hash alike. */
    const char *fields[] = { o->parent_id, o->description };
    for (size_t i = 0; i < ARRAY_SIZE(fields); i++) {
        const char *f = fields[i] ? fields[i] : "";
        snprintf(num, sizeof(num), "%d:%zu:", fields[i] != NULL, strlen(f));
        sha256_update(c, num, strlen(num));
        sha256_update(c, f, strlen(f));
    }
    for (size_t i = 0; i < o->n_tags; i++) {
        const char *v = o->tags[i].value ? o->tags[i].value : "";
        snprintf(num, sizeof(num), "t%zu:%zu:", strlen(o->tags[i].key), strlen(v));
        sha256_update(c, num, strlen(num));
        sha256_update(c, o->tags[i].key, strlen(o->tags[i].key));
        sha256_update(c, v, strlen(v));
    }
    sha256_final(c, &d);
    sha256_free(c);
    digest_to_hex(&d, ret);
}

/* A retried StartSnapshot: the token's snapshot, when it still exists. */
static int start_retry(struct region *r, const struct service_ebs_start_options *o,
                       const char *digest, struct registry_snapshot **ret)
{
    struct registry_ebs_upload u;
    int e;

    e = registry_ebs_upload_find_token(r->reg, o->owner, o->client_token, &u);
    if (e < 0)
        return e;
    if (strcmp(u.request_digest, digest) != 0)
        return error_set(EEXIST,
                         "client token '%.64s' was used with other parameters (snapshot '%s')",
                         o->client_token, u.snapshot_id);
    e = registry_snapshot_get(r->reg, u.snapshot_id, ret);
    if (e == -ENOENT) {
        /* The snapshot was deleted: the token is free again. */
        e = registry_ebs_upload_delete(r->reg, u.snapshot_id);
        return e < 0 ? e : -ENOENT;
    }
    return e < 0 ? e : 1;
}

int service_ebs_start(struct region *r, const struct service_ebs_start_options *o,
                      struct registry_snapshot **ret)
{
    struct registry_snapshot row = { .state = SNAPSHOT_PENDING, .progress = 0 };
    struct registry_ebs_upload u = { .timeout_minutes = o->timeout_minutes };
    struct registry_snapshot *parent = NULL;
    _cleanup_free_ char *top = NULL, *dir = NULL;
    bool locked = false;
    int e;

    if (r->read_only)
        return -EROFS;
    if (!u.timeout_minutes)
        u.timeout_minutes = EBS_TIMEOUT_DEFAULT;
    if (o->volume_size_gib < 1 || o->volume_size_gib > EBS_VOLUME_MAX_GIB)
        return error_set(EINVAL, "volume size %" PRIu64 " GiB is not 1 to %d", o->volume_size_gib,
                         EBS_VOLUME_MAX_GIB);
    if (u.timeout_minutes < EBS_TIMEOUT_MIN || u.timeout_minutes > EBS_TIMEOUT_MAX)
        return error_set(EINVAL, "timeout %d is not %d to %d minutes", u.timeout_minutes,
                         EBS_TIMEOUT_MIN, EBS_TIMEOUT_MAX);
    if (o->client_token && (!*o->client_token || strlen(o->client_token) > EBS_CLIENT_TOKEN_MAX))
        return error_set(EINVAL, "client token is not 1 to %d characters", EBS_CLIENT_TOKEN_MAX);
    request_digest(o, u.request_digest);
    if (o->client_token) {
        e = start_retry(r, o, u.request_digest, ret);
        if (e != -ENOENT)
            return e;
    }
    if (o->parent_id) {
        bool readable = false;
        /* The store's lock, shared, from reading the parent's map id until
         * the upload row that names it is committed: a gc sees the parent
         * snapshot or the upload (service_ebs_roots()), never neither. */
        e = store_lock(r->store, false, LOCK_TIMEOUT_MS);
        if (e < 0)
            return e;
        locked = true;
        e = registry_snapshot_get(r->reg, o->parent_id, &parent);
        if (e == 0)
            e = service_ebs_readable(r, parent, o->owner, &readable);
        if (e == 0 && !readable)
            e = -ENOENT;
        if (e == -ENOENT)
            e = error_set(ENOENT, "parent snapshot '%s' does not exist", o->parent_id);
        if (e == 0 && parent->state != SNAPSHOT_COMPLETED)
            e = error_set(EINVAL, "parent snapshot '%s' is %s, not completed", o->parent_id,
                          snapshot_state_to_string(parent->state));
        if (e == 0 && parent->volume_size > o->volume_size_gib << 30)
            e = error_set(EINVAL,
                          "volume size %" PRIu64 " GiB is smaller than parent snapshot "
                          "'%s' (%u GiB)",
                          o->volume_size_gib, o->parent_id, parent->volume_size_gib);
        if (e == 0 && !parent->has_map)
            e = error_set(EBADMSG, "parent snapshot '%s' has no block map", o->parent_id);
        if (e == 0) {
            u.has_parent_map = true;
            u.parent_map_id = parent->map_id;
        }
        registry_snapshot_free(parent);
        if (e < 0)
            goto out;
        snprintf(row.parent_id, sizeof(row.parent_id), "%s", o->parent_id);
    }

    e = id_generate("snap", row.id, sizeof(row.id));
    if (e < 0)
        goto out;
    snprintf(row.owner, sizeof(row.owner), "%s", o->owner);
    row.volume_size = o->volume_size_gib << 30;
    row.volume_size_gib = (uint32_t)o->volume_size_gib;
    row.description = (char *)o->description;
    row.start_time = wall_clock_ms();
    memcpy(u.snapshot_id, row.id, sizeof(u.snapshot_id));
    memcpy(u.owner, row.owner, sizeof(u.owner));
    if (o->client_token)
        snprintf(u.client_token, sizeof(u.client_token), "%s", o->client_token);

    /* The staging directory first: a pending row always has one. */
    top = xasprintf("%s/" STAGING_DIR, r->dir);
    dir = staging_path(r, row.id);
    e = mkdir_p(top);
    if (e == 0)
        e = fsync_dir(r->dir); /* ebs-uploads/ itself, the first time */
    if (e == 0 && mkdir(dir, 0700) < 0)
        e = -errno;
    if (e == 0)
        e = fsync_dir(top);
    if (e < 0) {
        e = error_set(e, "cannot create staging directory '%s': %s", dir, strerror(-e));
        goto out;
    }

    e = registry_begin(r->reg);
    if (e == 0)
        e = registry_snapshot_insert(r->reg, &row);
    if (e == 0)
        e = registry_ebs_upload_insert(r->reg, &u);
    for (size_t i = 0; e == 0 && i < o->n_tags; i++)
        e = registry_tag_set(r->reg, row.id, o->tags[i].key, o->tags[i].value);
    if (e == 0)
        e = registry_commit(r->reg);
    if (e < 0) {
        registry_rollback(r->reg);
        staging_remove(dir);
        if (e == -EEXIST && o->client_token) {
            /* Another start with the same token won the race. */
            e = start_retry(r, o, u.request_digest, ret);
            if (e == -ENOENT)
                e = error_set(EEXIST, "client token '%.64s' is in use", o->client_token);
        }
        goto out;
    }
    e = registry_snapshot_get(r->reg, row.id, ret);
out:
    if (locked)
        store_unlock(r->store);
    return e;
}

/* ---- PutSnapshotBlock ---- */

/* The row of a snapshot the caller may write: exists, owned, pending and
 * not timed out.  The staging directory is locked by the caller. */
static int writable_row(struct region *r, const char *account, const char *snap_id,
                        struct registry_snapshot **ret)
{
    struct registry_snapshot *row = NULL;
    struct registry_ebs_upload u;
    int e;

    e = registry_snapshot_get(r->reg, snap_id, &row);
    if (e == 0 && strcmp(row->owner, account) != 0)
        e = -ENOENT;
    if (e == -ENOENT) {
        registry_snapshot_free(row);
        return error_set(ENOENT, "snapshot '%s' does not exist", snap_id);
    }
    if (e < 0)
        return e;
    if (row->state != SNAPSHOT_PENDING) {
        e = error_set(EROFS, "snapshot '%s' is %s: it takes no more blocks", snap_id,
                      snapshot_state_to_string(row->state));
        registry_snapshot_free(row);
        return e;
    }
    e = registry_ebs_upload_get(r->reg, snap_id, &u);
    if (e == -ENOENT)
        e = error_set(EROFS, "snapshot '%s' was not started through the EBS direct API",
                      snap_id);
    if (e == 0 && wall_clock_ms() > upload_deadline(r, row, &u))
        e = error_set(ETIMEDOUT, "snapshot '%s' timed out after %d minutes without a block or "
                                 "a completion", snap_id, u.timeout_minutes);
    if (e < 0) {
        registry_snapshot_free(row);
        return e;
    }
    *ret = row;
    return 0;
}

int service_ebs_put_block(struct region *r, const char *account, const char *snap_id,
                          uint64_t index, const void *data, size_t len,
                          const struct digest *checksum, int progress,
                          char ret_checksum[EBS_CHECKSUM_SIZE])
{
    struct registry_snapshot *row = NULL;
    _cleanup_free_ char *dir = NULL, *tmp = NULL, *name = NULL;
    struct digest d;
    int fd = -1, lockfd = -1, e;

    /* Everything about the bytes is checked before anything is looked up
     * or stored. */
    if (len != EBS_BLOCK_SIZE)
        return error_set(EMSGSIZE, "block %" PRIu64 " is %zu bytes; blocks are %u bytes",
                         index, len, EBS_BLOCK_SIZE);
    sha256(data, len, &d);
    if (!digest_equal(&d, checksum)) {
        char want[EBS_CHECKSUM_SIZE], got[EBS_CHECKSUM_SIZE];
        service_ebs_checksum_format(checksum, want);
        service_ebs_checksum_format(&d, got);
        return error_set(EINVAL, "checksum mismatch for block %" PRIu64 ": the header says %s, "
                                 "the data's SHA-256 is %s", index, want, got);
    }
    if (progress > 100)
        return error_set(EINVAL, "progress %d is not 0 to 100", progress);
    if (!id_is_valid("snap", snap_id))
        return error_set(EINVAL, "malformed snapshot id '%.40s'", snap_id);

    e = staging_lock(r, snap_id, false, false, &lockfd);
    if (e == -ENOENT) {
        /* No staging directory: not a pending upload (or none at all). */
        e = registry_snapshot_get(r->reg, snap_id, &row);
        if (e == 0 && strcmp(row->owner, account) == 0)
            e = error_set(EROFS, "snapshot '%s' is %s: it takes no more blocks", snap_id,
                          snapshot_state_to_string(row->state));
        else
            e = error_set(ENOENT, "snapshot '%s' does not exist", snap_id);
        registry_snapshot_free(row);
        return e;
    }
    if (e < 0)
        return e;
    e = writable_row(r, account, snap_id, &row);
    if (e < 0)
        goto out;
    if (index >= DIV_ROUND_UP(row->volume_size, EBS_BLOCK_SIZE)) {
        e = error_set(ERANGE, "block index %" PRIu64 " is past the end of the %u GiB volume "
                              "(blocks 0 to %" PRIu64 ")", index, row->volume_size_gib,
                      DIV_ROUND_UP(row->volume_size, EBS_BLOCK_SIZE) - 1);
        goto out;
    }

    dir = staging_path(r, snap_id);
    tmp = xasprintf("%s/.tmp-XXXXXX", dir);
    name = xasprintf("%s/%016" PRIx64, dir, index);
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        e = error_set(errno, "cannot create a staging file in '%s': %m", dir);
        goto out;
    }
    e = write_all(fd, data, len, 0);
    if (e == 0)
        e = write_all(fd, d.b, DIGEST_SIZE, (off_t)len);
    if (e == 0 && fsync(fd) < 0)
        e = -errno;
    if (e == 0 && rename(tmp, name) < 0)
        e = -errno;
    if (e == 0)
        e = fsync_dir(dir);
    if (e < 0) {
        unlink(tmp);
        e = error_set(e, "cannot stage block %" PRIu64 " of '%s': %s", index, snap_id,
                      strerror(-e));
        goto out;
    }
    if (progress >= 0 && progress != row->progress) {
        row->progress = progress;
        e = registry_snapshot_update(r->reg, row);
        if (e < 0)
            goto out;
    }
    service_ebs_checksum_format(&d, ret_checksum);
    e = 0;
out:
    if (fd >= 0)
        close(fd);
    close(lockfd);
    registry_snapshot_free(row);
    return e;
}

/* ---- CompleteSnapshot ---- */

/* The volume a completion imports: staged blocks over the parent. */
struct upload_volume {
    const char *dir;
    const uint64_t *staged; /* sorted block indexes */
    size_t n;
    struct store *store;
    const struct blockmap *parent; /* or NULL */
    uint64_t size;
    int fd;              /* the staged block last opened */
    uint64_t fd_index;
};

static bool is_staged(const struct upload_volume *v, uint64_t k, uint64_t *ret_next)
{
    size_t lo = 0, hi = v->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v->staged[mid] < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (ret_next)
        *ret_next = lo < v->n ? v->staged[lo] : UINT64_MAX;
    return lo < v->n && v->staged[lo] == k;
}

static int volume_extent(void *ud, uint64_t off, uint64_t max_len, bool *ret_data,
                         uint64_t *ret_len)
{
    struct upload_volume *v = ud;
    uint64_t k = off / EBS_BLOCK_SIZE, next, limit;

    if (is_staged(v, k, NULL)) {
        *ret_data = true;
        *ret_len = MIN(max_len, (k + 1) * EBS_BLOCK_SIZE - off);
        return 0;
    }
    is_staged(v, k, &next);
    limit = off + max_len;
    if (next != UINT64_MAX)
        limit = MIN(limit, next * EBS_BLOCK_SIZE);
    if (v->parent && off < v->parent->volume_size) {
        size_t after;
        ssize_t i = blockmap_lookup(v->parent, off / BLOCK_SIZE, &after);
        if (i >= 0) {
            const struct blockmap_extent *x = &v->parent->ext[i];
            uint64_t end = MIN((x->block + x->count) * BLOCK_SIZE, v->parent->volume_size);
            *ret_data = true;
            *ret_len = MIN(limit, end) - off;
            return 0;
        }
        if (after < v->parent->n)
            limit = MIN(limit, MAX(off + 1, v->parent->ext[after].block * BLOCK_SIZE));
    }
    *ret_data = false;
    *ret_len = limit - off;
    return 0;
}

static int read_staged(struct upload_volume *v, uint64_t k, void *buf, size_t len, uint64_t at)
{
    ssize_t n;

    if (v->fd < 0 || v->fd_index != k) {
        char name[17];
        if (v->fd >= 0)
            close(v->fd);
        snprintf(name, sizeof(name), "%016" PRIx64, k);
        _cleanup_free_ char *path = xasprintf("%s/%s", v->dir, name);
        v->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (v->fd < 0)
            return error_set(errno, "cannot open staged block '%s': %m", path);
        v->fd_index = k;
    }
    n = pread_full(v->fd, buf, len, (off_t)at);
    if (n < 0)
        return error_set((int)n, "cannot read staged block %" PRIu64 ": %s", k,
                         strerror((int)-n));
    if ((size_t)n < len)
        return error_set(EBADMSG, "staged block %" PRIu64 " is truncated", k);
    return 0;
}

static int volume_read(void *ud, void *buf, size_t len, uint64_t off)
{
    struct upload_volume *v = ud;
    uint8_t *out = buf;
    int e;

    while (len) {
        uint64_t k = off / EBS_BLOCK_SIZE;
        size_t n = (size_t)MIN((uint64_t)len, (k + 1) * EBS_BLOCK_SIZE - off);

        if (is_staged(v, k, NULL)) {
            e = read_staged(v, k, out, n, off - k * EBS_BLOCK_SIZE);
        } else if (v->parent && off < v->parent->volume_size) {
            size_t in = (size_t)MIN((uint64_t)n, v->parent->volume_size - off);
            e = snapshot_read(v->store, v->parent, out, in, off);
            memset(out + in, 0, n - in);
        } else {
            memset(out, 0, n);
            e = 0;
        }
        if (e < 0)
            return e;
        out += n;
        off += n;
        len -= n;
    }
    return 0;
}

/* Read every staged block, check it against its recorded digest and fold
 * the digests into the two forms of the LINEAR aggregate. */
static int verify_staged(const char *dir, const uint64_t *staged, size_t n,
                         struct digest *ret_raw, struct digest *ret_b64)
{
    /* One byte more than a staged file, to see one that is too long. */
    _cleanup_free_ uint8_t *buf = xmalloc(STAGED_FILE_SIZE + 1);
    struct sha256_ctx *raw = sha256_new(), *b64 = sha256_new();
    int e = 0;

    for (size_t i = 0; i < n && e == 0; i++) {
        _cleanup_free_ char *path = xasprintf("%s/%016" PRIx64, dir, staged[i]);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct digest d, want;
        char text[EBS_CHECKSUM_SIZE];
        ssize_t got;

        if (fd < 0) {
            e = error_set(errno, "cannot open staged block '%s': %m", path);
            break;
        }
        got = pread_full(fd, buf, STAGED_FILE_SIZE + 1, 0);
        if (got < 0) {
            e = error_set((int)got, "cannot read staged block '%s': %s", path,
                          strerror((int)-got));
            break;
        }
        if (got != STAGED_FILE_SIZE) {
            e = error_set(EBADMSG, "staged block '%s' is %zd bytes, not %u", path, got,
                          STAGED_FILE_SIZE);
            break;
        }
        sha256(buf, EBS_BLOCK_SIZE, &d);
        memcpy(want.b, buf + EBS_BLOCK_SIZE, DIGEST_SIZE);
        if (!digest_equal(&d, &want)) {
            e = error_set(EBADMSG, "staged block '%s' does not match its digest", path);
            break;
        }
        sha256_update(raw, d.b, DIGEST_SIZE);
        service_ebs_checksum_format(&d, text);
        sha256_update(b64, text, strlen(text));
    }
    sha256_final(raw, ret_raw);
    sha256_final(b64, ret_b64);
    sha256_free(raw);
    sha256_free(b64);
    return e;
}

int service_ebs_complete(struct region *r, const char *account, const char *snap_id,
                         uint64_t changed_blocks, const struct digest *aggregate,
                         enum snapshot_state *ret_state)
{
    struct registry_snapshot *row = NULL, *prow = NULL;
    _cleanup_(blockmap_freep) struct blockmap *parent = NULL;
    _cleanup_(blockmap_freep) struct blockmap *map = NULL;
    _cleanup_free_ uint64_t *staged = NULL;
    _cleanup_free_ char *dir = NULL;
    struct import_options io = { .format = IMAGE_FORMAT_RAW };
    struct digest agg_raw, agg_b64, map_id;
    struct upload_volume vol;
    struct snapshot_reader reader;
    struct registry_ebs_upload upload;
    size_t n = 0;
    bool locked = false;
    int lockfd = -1, e;

    if (r->read_only)
        return -EROFS;
    if (!id_is_valid("snap", snap_id))
        return error_set(EINVAL, "malformed snapshot id '%.40s'", snap_id);
    e = staging_lock(r, snap_id, true, false, &lockfd);
    if (e == -ENOENT) {
        e = registry_snapshot_get(r->reg, snap_id, &row);
        if (e == 0 && strcmp(row->owner, account) != 0)
            e = -ENOENT;
        if (e == -ENOENT)
            e = error_set(ENOENT, "snapshot '%s' does not exist", snap_id);
        else if (e == 0 && row->state == SNAPSHOT_COMPLETED) {
            if (ret_state)
                *ret_state = row->state;
        } else if (e == 0) {
            e = error_set(EROFS, "snapshot '%s' is %s%s%s", snap_id,
                          snapshot_state_to_string(row->state),
                          row->state_message ? ": " : "",
                          row->state_message ? row->state_message : "");
        }
        registry_snapshot_free(row);
        return e;
    }
    if (e < 0)
        return e;
    e = registry_snapshot_get(r->reg, snap_id, &row);
    if (e == 0 && row->state == SNAPSHOT_COMPLETED && strcmp(row->owner, account) == 0) {
        /* Completed by another call that had not yet removed the
         * directory. */
        if (ret_state)
            *ret_state = row->state;
        goto out;
    }
    registry_snapshot_free(row);
    row = NULL;
    e = writable_row(r, account, snap_id, &row);
    if (e == -ETIMEDOUT) {
        char why[600];
        snprintf(why, sizeof(why), "%s", error_message());
        registry_snapshot_free(row);
        row = NULL;
        if (registry_snapshot_get(r->reg, snap_id, &row) == 0)
            cancel_upload(r, row, "the upload timed out before its completion");
        e = error_set(ETIMEDOUT, "%s", why);
    }
    if (e < 0)
        goto out;

    dir = staging_path(r, snap_id);
    e = staged_list(dir, &staged, &n);
    if (e < 0)
        goto out;
    if (changed_blocks != n) {
        e = error_set(EINVAL, "ChangedBlocksCount is %" PRIu64 " but %zu blocks were written",
                      changed_blocks, n);
        goto out;
    }
    e = verify_staged(dir, staged, n, &agg_raw, &agg_b64);
    if (e < 0)
        goto out;
    if (aggregate && !digest_equal(aggregate, &agg_raw) && !digest_equal(aggregate, &agg_b64)) {
        char want[EBS_CHECKSUM_SIZE], got[EBS_CHECKSUM_SIZE];
        service_ebs_checksum_format(aggregate, want);
        service_ebs_checksum_format(&agg_raw, got);
        e = error_set(EINVAL, "the aggregate checksum %s does not match the %zu blocks "
                              "written (LINEAR: %s)", want, n, got);
        goto out;
    }
    /* From the first chunk (and the parent's map) to the row's commit. */
    e = store_lock(r->store, false, LOCK_TIMEOUT_MS);
    if (e < 0)
        goto out;
    locked = true;
    e = registry_ebs_upload_get(r->reg, snap_id, &upload);
    if (e < 0)
        goto out;
    if (upload.has_parent_map) {
        /* The parent's map as it was at StartSnapshot: a gc root while the
         * upload is pending, so it is there even if the parent snapshot
         * was deleted since. */
        e = blockmap_load(r->store, &upload.parent_map_id, &parent);
        if (e < 0) {
            char hex[DIGEST_HEX_SIZE];
            e = error_set(e == -ENOENT ? EBADMSG : e,
                          "cannot read block map %s of parent snapshot '%s': %s",
                          digest_to_hex(&upload.parent_map_id, hex), row->parent_id,
                          e == -ENOENT ? "it is missing" : strerror(-e));
            goto out;
        }
        io.parent = parent;
        io.parent_id = upload.parent_map_id;
    } else if (row->parent_id[0]) {
        /* An upload started before schema version 7 recorded no map. */
        e = service_snapshot_get(r, row->parent_id, &prow, &parent);
        if (e < 0)
            goto out;
        io.parent = parent;
        io.parent_id = prow->map_id;
        registry_snapshot_free(prow);
    }

    vol = (struct upload_volume){
        .dir = dir, .staged = staged, .n = n, .store = r->store, .parent = parent,
        .size = row->volume_size, .fd = -1,
    };
    reader = (struct snapshot_reader){
        .size = row->volume_size, .extent = volume_extent, .read = volume_read,
        .userdata = &vol, .name = snap_id,
    };
    e = snapshot_import_reader(r->store, &reader, &io, &map_id, &map, NULL);
    if (vol.fd >= 0)
        close(vol.fd);
    if (e == 0) {
        row->state = SNAPSHOT_COMPLETED;
        row->progress = 100;
        row->has_map = true;
        row->map_id = map_id;
        row->completion_time = wall_clock_ms();
        e = registry_snapshot_update(r->reg, row);
    }
    store_unlock(r->store);
    locked = false;
    if (e < 0)
        goto out;
    if (staging_remove(dir) < 0)
        log_warning("snapshot '%s' is completed but its staged blocks stay: %s", snap_id,
                    error_message());
    if (ret_state)
        *ret_state = SNAPSHOT_COMPLETED;
    e = 0;
out:
    if (locked)
        store_unlock(r->store);
    close(lockfd);
    registry_snapshot_free(row);
    return e;
}

/* ---- reads ---- */

bool service_ebs_block_present(const struct blockmap *m, uint64_t index)
{
    uint64_t b0 = index * BLOCKS_PER_EBS;
    size_t i = blockmap_seek(m, b0);

    return i < m->n && m->ext[i].block < b0 + BLOCKS_PER_EBS;
}

int service_ebs_blocks(const struct blockmap *m, uint64_t start, size_t max, uint64_t **ret,
                       size_t *ret_n, bool *ret_more)
{
    _cleanup_free_ uint64_t *out = NULL;
    uint64_t nblocks = DIV_ROUND_UP(m->volume_size, EBS_BLOCK_SIZE);
    size_t n = 0, cap = 0;
    bool more = false;

    if (start < nblocks) {
        for (size_t i = blockmap_seek(m, start * BLOCKS_PER_EBS); i < m->n && !more; i++) {
            const struct blockmap_extent *x = &m->ext[i];
            uint64_t k0 = MAX(start, x->block / BLOCKS_PER_EBS);
            uint64_t k1 = (x->block + x->count - 1) / BLOCKS_PER_EBS;
            for (uint64_t k = k0; k <= k1 && k < nblocks; k++) {
                if (n && out[n - 1] >= k)
                    continue;
                if (n == max) {
                    more = true;
                    break;
                }
                if (n == cap) {
                    cap = cap ? 2 * cap : 256;
                    out = xrealloc(out, cap * sizeof(*out));
                }
                out[n++] = k;
            }
        }
    }
    *ret = out ? TAKE_PTR(out) : xcalloc(1, sizeof(uint64_t));
    *ret_n = n;
    *ret_more = more;
    return 0;
}

int service_ebs_read_block(struct region *r, const struct blockmap *m, uint64_t index,
                           void *buf)
{
    uint64_t start = index * EBS_BLOCK_SIZE;
    int e;

    if (index >= DIV_ROUND_UP(m->volume_size, EBS_BLOCK_SIZE))
        return error_set(ERANGE, "block index %" PRIu64 " is past the end of the volume", index);
    memset(buf, 0, EBS_BLOCK_SIZE);
    e = snapshot_read(r->store, m, buf,
                      (size_t)MIN((uint64_t)EBS_BLOCK_SIZE, m->volume_size - start), start);
    if (e == -ENOENT) {
        /* The map names the chunk: a missing one is damage to the store,
         * not a snapshot that does not exist. */
        char why[512];
        snprintf(why, sizeof(why), "%s", error_message() ? error_message() : "a chunk is missing");
        return error_set(EBADMSG, "cannot read block %" PRIu64 ": %s", index, why);
    }
    return e;
}

/* Block `index` of m, zeros past the end of its volume. */
static int read_block_or_zeros(struct region *r, const struct blockmap *m, uint64_t index,
                               void *buf)
{
    if (index >= DIV_ROUND_UP(m->volume_size, EBS_BLOCK_SIZE)) {
        memset(buf, 0, EBS_BLOCK_SIZE);
        return 0;
    }
    return service_ebs_read_block(r, m, index, buf);
}

int service_ebs_changed_blocks(struct region *r, const struct blockmap *a,
                               const struct blockmap *b, uint64_t start, size_t max,
                               uint64_t **ret, size_t *ret_n, bool *ret_more)
{
    _cleanup_free_ uint64_t *cand = NULL, *out = NULL;
    _cleanup_free_ uint8_t *ba = NULL, *bb = NULL;
    size_t n = 0, kept = 0, i;
    bool more = false;
    int e;

    if (!a)
        return service_ebs_blocks(b, start, max, ret, ret_n, ret_more);
    e = snapshot_diff_candidates(a, b, &cand, &n);
    if (e < 0)
        return e;
    for (i = 0; i < n && cand[i] < start; i++)
        ;
    ba = xmalloc(EBS_BLOCK_SIZE);
    bb = xmalloc(EBS_BLOCK_SIZE);
    out = xcalloc(MIN(max, n - i) + 1, sizeof(*out));
    for (; i < n; i++) {
        if (kept == max) {
            more = true;
            break;
        }
        e = read_block_or_zeros(r, a, cand[i], ba);
        if (e == 0)
            e = read_block_or_zeros(r, b, cand[i], bb);
        if (e < 0)
            return e;
        if (memcmp(ba, bb, EBS_BLOCK_SIZE) != 0)
            out[kept++] = cand[i];
    }
    *ret = TAKE_PTR(out);
    *ret_n = kept;
    *ret_more = more;
    return 0;
}

/* The chain of snapshot ids from `id` up through its parents. */
static int lineage(struct region *r, const char *id, char (**ret)[ID_MAX_SIZE], size_t *ret_n)
{
    char (*v)[ID_MAX_SIZE] = NULL;
    size_t n = 0, cap = 0;
    char cur[ID_MAX_SIZE];

    snprintf(cur, sizeof(cur), "%s", id);
    while (cur[0] && n < LINEAGE_MAX) {
        struct registry_snapshot *row = NULL;
        int e = registry_snapshot_get(r->reg, cur, &row);
        if (e == -ENOENT && n > 0)
            break; /* a deleted ancestor ends the chain */
        if (e < 0) {
            free(v);
            return e;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            v = xrealloc(v, cap * sizeof(*v));
        }
        memcpy(v[n++], cur, ID_MAX_SIZE);
        snprintf(cur, sizeof(cur), "%s", row->parent_id);
        registry_snapshot_free(row);
    }
    *ret = v;
    *ret_n = n;
    return 0;
}

int service_ebs_related(struct region *r, const char *a, const char *b, bool *ret)
{
    _cleanup_free_ char(*la)[ID_MAX_SIZE] = NULL;
    _cleanup_free_ char(*lb)[ID_MAX_SIZE] = NULL;
    size_t na = 0, nb = 0;
    int e;

    e = lineage(r, a, &la, &na);
    if (e == 0)
        e = lineage(r, b, &lb, &nb);
    if (e < 0)
        return e;
    *ret = false;
    for (size_t i = 0; i < na && !*ret; i++)
        for (size_t j = 0; j < nb; j++)
            if (strcmp(la[i], lb[j]) == 0) {
                *ret = true;
                break;
            }
    return 0;
}
