/* The EBS direct API's service layer (src/service/ebs.c) over a temporary
 * data directory: a block is refused for a wrong length, a wrong checksum,
 * an index past the volume or another owner, with nothing staged; accepted
 * blocks survive closing and reopening the region (what a server restart
 * does); completion checks ChangedBlocksCount and the LINEAR aggregate
 * (raw digests and base64 texts) before anything changes, then reads back
 * exactly what was written, with a parent's content where nothing was; a
 * snapshot past its Timeout is cancelled and takes no more blocks; client
 * tokens are idempotent; lineage; the strict checksum parser. */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "registry/ebs-uploads.h"
#include "service/service.h"
#include "service-util.h"
#include "tap.h"

#define OWNER "123456789012"
#define OTHER "210987654321"

static char tmpdir[] = "/tmp/kiln-test-ebs.XXXXXX";

static int put(struct region *r, const char *account, const char *id, uint64_t index,
               const uint8_t *data)
{
    struct digest d;
    char sum[EBS_CHECKSUM_SIZE];

    sha256(data, EBS_BLOCK_SIZE, &d);
    return service_ebs_put_block(r, account, id, index, data, EBS_BLOCK_SIZE, &d, -1, sum);
}

static size_t staged_files(const char *region_dir, const char *id)
{
    char path[512];
    size_t n = 0;

    snprintf(path, sizeof(path), "%s/ebs-uploads/%s", region_dir, id);
    FILE *p = NULL;
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "ls -A '%s' 2>/dev/null | wc -l", path);
    p = popen(cmd, "r");
    if (p) {
        if (fscanf(p, "%zu", &n) != 1)
            n = (size_t)-1;
        pclose(p);
    }
    return n;
}

static bool staging_exists(const char *region_dir, const char *id)
{
    char path[512];
    struct stat st;

    snprintf(path, sizeof(path), "%s/ebs-uploads/%s", region_dir, id);
    return stat(path, &st) == 0;
}

static enum snapshot_state state_of(struct region *r, const char *id)
{
    struct registry_snapshot *row = NULL;
    enum snapshot_state s = (enum snapshot_state)-1;

    if (registry_snapshot_get(r->reg, id, &row) == 0)
        s = row->state;
    registry_snapshot_free(row);
    return s;
}

static struct digest linear(const uint8_t *const *blocks, size_t n, bool base64)
{
    struct sha256_ctx *c = sha256_new();
    struct digest d, out;
    char text[EBS_CHECKSUM_SIZE];

    for (size_t i = 0; i < n; i++) {
        sha256(blocks[i], EBS_BLOCK_SIZE, &d);
        if (base64) {
            service_ebs_checksum_format(&d, text);
            sha256_update(c, text, strlen(text));
        } else {
            sha256_update(c, d.b, DIGEST_SIZE);
        }
    }
    sha256_final(c, &out);
    sha256_free(c);
    return out;
}

static int read_block(struct region *r, const char *id, uint64_t index, uint8_t *buf)
{
    struct blockmap *m = NULL;
    int e = service_snapshot_get(r, id, NULL, &m);

    if (e == 0)
        e = service_ebs_read_block(r, m, index, buf);
    blockmap_free(m);
    return e;
}

static void test_checksums(void)
{
    struct digest d, back;
    char text[EBS_CHECKSUM_SIZE];

    sha256("abc", 3, &d);
    service_ebs_checksum_format(&d, text);
    is_str(text, "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=", "base64 of SHA-256('abc')");
    is_int(service_ebs_checksum_parse(text, &back), 0, "parses back");
    ok(digest_equal(&d, &back), "to the same digest");
    is_int(service_ebs_checksum_parse("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0", &back),
           -EINVAL, "unpadded is refused");
    is_int(service_ebs_checksum_parse("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa1=", &back),
           -EINVAL, "non-canonical trailing bits are refused");
    is_int(service_ebs_checksum_parse("!ngWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=", &back),
           -EINVAL, "a character outside base64 is refused");
    is_int(service_ebs_checksum_parse("", &back), -EINVAL, "empty is refused");
}

/* A parent snapshot deleted (and its chunks collected) while a child's
 * upload is pending: the upload recorded the parent's map, which gc keeps
 * while the child is pending, so the child completes with the parent's
 * content. */
static void test_parent_deleted(struct region *r, const uint8_t *a, uint8_t *got)
{
    struct service_ebs_start_options o = { .owner = OWNER, .volume_size_gib = 1 };
    struct registry_snapshot *row = NULL;
    struct gc_report rep = { 0 };
    uint8_t *e = malloc(EBS_BLOCK_SIZE);
    char parent[ID_MAX_SIZE] = "", child[ID_MAX_SIZE] = "";
    enum snapshot_state st;
    struct digest agg;

    test_fill(e, EBS_BLOCK_SIZE, 4);
    is_int(service_ebs_start(r, &o, &row), 0, "start a parent");
    if (row)
        snprintf(parent, sizeof(parent), "%s", row->id);
    registry_snapshot_free(row);
    row = NULL;
    is_int(put(r, OWNER, parent, 3, e), 0, "its block 3");
    agg = linear((const uint8_t *const[]){ e }, 1, false);
    is_int(service_ebs_complete(r, OWNER, parent, 1, &agg, &st), 0, "complete it");

    o.parent_id = parent;
    is_int(service_ebs_start(r, &o, &row), 0, "start its child");
    if (row)
        snprintf(child, sizeof(child), "%s", row->id);
    registry_snapshot_free(row);
    row = NULL;
    is_int(put(r, OWNER, child, 9, a), 0, "the child's block 9");
    is_int(service_snapshot_delete(r, parent), 0, "delete the parent meanwhile");
    is_int(service_gc(r, false, 0, &rep), 0, "gc with no grace period");
    agg = linear((const uint8_t *const[]){ a }, 1, false);
    is_int(service_ebs_complete(r, OWNER, child, 1, &agg, &st), 0,
           "the child completes without its parent snapshot");
    is_int(read_block(r, child, 3, got), 0, "read the child's block 3");
    ok(memcmp(got, e, EBS_BLOCK_SIZE) == 0, "the deleted parent's content");
    is_int(read_block(r, child, 9, got), 0, "read the child's block 9");
    ok(memcmp(got, a, EBS_BLOCK_SIZE) == 0, "its own");
    /* Completed, the child no longer holds the parent's map. */
    is_int(service_gc(r, false, 0, &rep), 0, "gc again");
    ok(rep.maps_freed >= 1, "the parent's map goes now");
    is_int(read_block(r, child, 3, got), 0, "the child still reads block 3");
    ok(memcmp(got, e, EBS_BLOCK_SIZE) == 0, "from its own map");
    free(e);
}

/* Make upload `id` look 11 minutes old (row and staging directory). */
static void age_upload(struct region *r, const char *id)
{
    char path[512], sql[300];
    sqlite3 *db = NULL;
    struct timespec ts[2];

    snprintf(path, sizeof(path), "%s/registry.db", r->dir);
    snprintf(sql, sizeof(sql),
             "UPDATE snapshots SET start_time = start_time - 660000 WHERE id = '%s';"
             "UPDATE ebs_uploads SET timeout_minutes = 10 WHERE snapshot_id = '%s'",
             id, id);
    ok(sqlite3_open(path, &db) == SQLITE_OK && sqlite3_exec(db, sql, 0, 0, 0) == SQLITE_OK,
       "age the row of '%s'", id);
    sqlite3_close(db);
    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec -= 660;
    ts[1] = ts[0];
    snprintf(path, sizeof(path), "%s/ebs-uploads/%s", r->dir, id);
    is_int(utimensat(AT_FDCWD, path, ts, 0), 0, "and its staging directory");
}

/* The Timeout sweep (StartSnapshot runs it for the whole region) goes on
 * past an upload it cannot check: the other expired one is cancelled. */
static void test_sweep_skips_a_damaged_upload(struct region *r, const uint8_t *a)
{
    struct service_ebs_start_options o = { .owner = OWNER, .volume_size_gib = 1 };
    struct registry_snapshot *x = NULL, *y = NULL;
    char bad[ID_MAX_SIZE] = "", good[ID_MAX_SIZE] = "", path[512];
    size_t expired = 0;
    int fd;

    is_int(service_ebs_start(r, &o, &x), 0, "start two uploads");
    is_int(service_ebs_start(r, &o, &y), 0, "the second");
    if (!x || !y)
        goto out;
    /* The sweep goes by snapshot id: damage the first one. */
    snprintf(bad, sizeof(bad), "%s", strcmp(x->id, y->id) < 0 ? x->id : y->id);
    snprintf(good, sizeof(good), "%s", strcmp(x->id, y->id) < 0 ? y->id : x->id);
    is_int(put(r, OWNER, good, 0, a), 0, "a block for the good one");
    age_upload(r, bad);
    age_upload(r, good);
    snprintf(path, sizeof(path), "%s/ebs-uploads/%s", r->dir, bad);
    ok(rmdir(path) == 0 && (fd = open(path, O_CREAT | O_WRONLY, 0600)) >= 0 && close(fd) == 0,
       "the first one's staging directory is a file now");
    {
        struct timespec ts[2];
        clock_gettime(CLOCK_REALTIME, &ts[0]);
        ts[0].tv_sec -= 660;
        ts[1] = ts[0];
        is_int(utimensat(AT_FDCWD, path, ts, 0), 0, "an old one");
    }
    is_int(service_ebs_expire(r, NULL, &expired), 0, "the sweep runs");
    is_int(expired, 1, "and cancels the other one");
    is_int(state_of(r, good), SNAPSHOT_ERROR, "which is error");
    is_int(state_of(r, bad), SNAPSHOT_PENDING, "the damaged one is left");
    ok(unlink(path) == 0 && mkdir(path, 0700) == 0, "repair it");
    age_upload(r, bad);
    is_int(service_ebs_expire(r, NULL, &expired), 0, "the sweep runs again");
    is_int(expired, 1, "and cancels it too");
out:
    registry_snapshot_free(x);
    registry_snapshot_free(y);
}

int main(void)
{
    struct region *r = NULL;
    struct registry_snapshot *row = NULL, *row2 = NULL;
    struct service_ebs_start_options o = { .owner = OWNER, .volume_size_gib = 1 };
    uint8_t *a = malloc(EBS_BLOCK_SIZE), *b = malloc(EBS_BLOCK_SIZE), *c = malloc(EBS_BLOCK_SIZE);
    uint8_t *got = malloc(EBS_BLOCK_SIZE), *zero = calloc(1, EBS_BLOCK_SIZE);
    char id[ID_MAX_SIZE], child[ID_MAX_SIZE], sum[EBS_CHECKSUM_SIZE];
    enum snapshot_state st;
    struct digest d, agg;
    size_t expired = 0;
    bool related = false;

    test_checksums();
    test_fill(a, EBS_BLOCK_SIZE, 1);
    test_fill(b, EBS_BLOCK_SIZE, 2);
    test_fill(c, EBS_BLOCK_SIZE, 3);
    if (!mkdtemp(tmpdir))
        return 1;
    is_int(region_open(tmpdir, "us-east-1", false, &r), 0, "open a region");
    if (!r)
        return done_testing();

    /* Start. */
    is_int(service_ebs_start(r, &o, &row), 0, "start a 1 GiB snapshot");
    if (!row)
        return done_testing();
    snprintf(id, sizeof(id), "%s", row->id);
    is_int(row->state, SNAPSHOT_PENDING, "it is pending");
    is_int(row->volume_size_gib, 1, "of 1 GiB");
    registry_snapshot_free(row);
    row = NULL;
    ok(staging_exists(r->dir, id), "its staging directory exists");

    /* Bad blocks change nothing. */
    sha256(a, EBS_BLOCK_SIZE, &d);
    is_int(service_ebs_put_block(r, OWNER, id, 0, a, EBS_BLOCK_SIZE - 512, &d, -1, sum),
           -EMSGSIZE, "a short block is refused");
    sha256(b, EBS_BLOCK_SIZE, &d);
    is_int(service_ebs_put_block(r, OWNER, id, 0, a, EBS_BLOCK_SIZE, &d, -1, sum), -EINVAL,
           "a wrong checksum is refused");
    ok(error_message() && strstr(error_message(), "checksum mismatch"), "saying why: %s",
       error_message());
    is_int(put(r, OWNER, id, 2048, a), -ERANGE, "an index past the volume is refused");
    is_int(put(r, OTHER, id, 0, a), -ENOENT, "another account's snapshot does not exist");
    is_int(put(r, OWNER, "snap-0123456789abcdef0", 0, a), -ENOENT, "an unknown one neither");
    is_int(staged_files(r->dir, id), 0, "nothing was staged");

    /* Good blocks, then a restart. */
    is_int(put(r, OWNER, id, 0, a), 0, "block 0");
    is_int(put(r, OWNER, id, 7, c), 0, "block 7 (first version)");
    is_int(put(r, OWNER, id, 7, b), 0, "block 7 again replaces it");
    is_int(put(r, OWNER, id, 2047, c), 0, "the last block");
    is_int(staged_files(r->dir, id), 3, "three staged blocks");
    region_free(r);
    r = NULL;
    is_int(region_open(tmpdir, "us-east-1", false, &r), 0, "reopen the region (a restart)");
    if (!r)
        return done_testing();
    is_int(service_ebs_expire(r, NULL, &expired), 0, "the start-up sweep runs");
    is_int(expired, 0, "and cancels nothing in time");
    is_int(state_of(r, id), SNAPSHOT_PENDING, "still pending");

    /* Completion checks before it changes anything. */
    is_int(service_ebs_complete(r, OWNER, id, 4, NULL, &st), -EINVAL,
           "a wrong ChangedBlocksCount is refused");
    const uint8_t *written[] = { a, b, c };
    agg = linear(written, 2, false);
    is_int(service_ebs_complete(r, OWNER, id, 3, &agg, &st), -EINVAL,
           "a wrong aggregate checksum is refused");
    is_int(service_ebs_complete(r, OTHER, id, 3, NULL, &st), -ENOENT,
           "another account cannot complete it");
    is_int(state_of(r, id), SNAPSHOT_PENDING, "still pending");
    is_int(staged_files(r->dir, id), 3, "its blocks still staged");
    agg = linear(written, 3, false);
    is_int(service_ebs_complete(r, OWNER, id, 3, &agg, &st), 0,
           "complete with the LINEAR checksum of the raw digests");
    is_int(st, SNAPSHOT_COMPLETED, "completed");
    ok(!staging_exists(r->dir, id), "the staging directory is gone");
    is_int(service_ebs_complete(r, OWNER, id, 3, &agg, &st), 0, "completing again is a no-op");
    is_int(put(r, OWNER, id, 1, a), -EROFS, "a completed snapshot takes no block");

    is_int(read_block(r, id, 0, got), 0, "read block 0");
    ok(memcmp(got, a, EBS_BLOCK_SIZE) == 0, "as written");
    is_int(read_block(r, id, 7, got), 0, "read block 7");
    ok(memcmp(got, b, EBS_BLOCK_SIZE) == 0, "the second version");
    is_int(read_block(r, id, 2047, got), 0, "read the last block");
    ok(memcmp(got, c, EBS_BLOCK_SIZE) == 0, "as written");
    is_int(read_block(r, id, 3, got), 0, "read an unwritten block");
    ok(memcmp(got, zero, EBS_BLOCK_SIZE) == 0, "zeros");
    is_int(read_block(r, id, 2048, got), -ERANGE, "past the volume is -ERANGE");
    {
        struct blockmap *m = NULL;
        uint64_t *list = NULL;
        size_t n = 0;
        bool more = true;
        service_snapshot_get(r, id, NULL, &m);
        is_int(m ? service_ebs_blocks(m, 0, 2, &list, &n, &more) : -1, 0, "list 2 blocks");
        ok(n == 2 && list[0] == 0 && list[1] == 7 && more, "0 and 7, and more");
        free(list);
        is_int(m ? service_ebs_blocks(m, 8, 10, &list, &n, &more) : -1, 0, "list from 8");
        ok(n == 1 && list[0] == 2047 && !more, "2047, and no more");
        free(list);
        blockmap_free(m);
    }

    /* A child inherits what it does not write. */
    o.parent_id = id;
    o.volume_size_gib = 1;
    is_int(service_ebs_start(r, &o, &row), 0, "start a child");
    if (!row)
        return done_testing();
    snprintf(child, sizeof(child), "%s", row->id);
    ok(strcmp(row->parent_id, id) == 0, "it names its parent");
    registry_snapshot_free(row);
    row = NULL;
    is_int(put(r, OWNER, child, 7, a), 0, "change block 7");
    agg = linear((const uint8_t *const[]){ a }, 1, true);
    is_int(service_ebs_complete(r, OWNER, child, 1, &agg, &st), 0,
           "complete with the LINEAR checksum of the base64 texts");
    is_int(read_block(r, child, 7, got), 0, "read the child's block 7");
    ok(memcmp(got, a, EBS_BLOCK_SIZE) == 0, "the new content");
    is_int(read_block(r, child, 0, got), 0, "read the child's block 0");
    ok(memcmp(got, a, EBS_BLOCK_SIZE) == 0, "the parent's");
    is_int(read_block(r, child, 2047, got), 0, "read the child's last block");
    ok(memcmp(got, c, EBS_BLOCK_SIZE) == 0, "the parent's");
    is_int(service_ebs_related(r, id, child, &related), 0, "lineage of parent and child");
    ok(related, "related");
    test_parent_deleted(r, a, got);
    o.parent_id = NULL;
    is_int(service_ebs_start(r, &o, &row), 0, "start an unrelated one");
    is_int(service_ebs_related(r, row ? row->id : id, child, &related), 0, "lineage");
    ok(!related, "unrelated");
    o.parent_id = row ? row->id : NULL;
    is_int(service_ebs_start(r, &o, &row2), -EINVAL, "a pending parent is refused");
    registry_snapshot_free(row2);
    row2 = NULL;
    o.parent_id = id;
    o.owner = OTHER;
    is_int(service_ebs_start(r, &o, &row2), -ENOENT, "another account's parent does not exist");
    o.owner = OWNER;
    o.parent_id = NULL;

    /* Timeout: make the pending one look 11 minutes old. */
    {
        char path[512];
        sqlite3 *db = NULL;
        char sql[200];
        struct timespec ts[2];
        const char *tid = row ? row->id : "";

        snprintf(path, sizeof(path), "%s/registry.db", r->dir);
        is_int(put(r, OWNER, tid, 0, a), 0, "a block for the one that will time out");
        snprintf(sql, sizeof(sql),
                 "UPDATE snapshots SET start_time = start_time - 660000 WHERE id = '%s';"
                 "UPDATE ebs_uploads SET timeout_minutes = 10 WHERE snapshot_id = '%s'",
                 tid, tid);
        ok(sqlite3_open(path, &db) == SQLITE_OK && sqlite3_exec(db, sql, 0, 0, 0) == SQLITE_OK,
           "age its row");
        sqlite3_close(db);
        clock_gettime(CLOCK_REALTIME, &ts[0]);
        ts[0].tv_sec -= 660;
        ts[1] = ts[0];
        snprintf(path, sizeof(path), "%s/ebs-uploads/%s", r->dir, tid);
        is_int(utimensat(AT_FDCWD, path, ts, 0), 0, "and its staging directory");
        is_int(put(r, OWNER, tid, 1, a), -ETIMEDOUT, "a block after the timeout is refused");
        is_int(service_ebs_expire(r, NULL, &expired), 0, "the sweep runs");
        is_int(expired, 1, "and cancels it");
        is_int(state_of(r, tid), SNAPSHOT_ERROR, "it is error");
        ok(!staging_exists(r->dir, tid), "its blocks are gone");
        is_int(put(r, OWNER, tid, 1, a), -EROFS, "it takes no block");
        is_int(service_ebs_complete(r, OWNER, tid, 1, NULL, &st), -EROFS,
               "and cannot complete");
    }
    registry_snapshot_free(row);
    row = NULL;
    test_sweep_skips_a_damaged_upload(r, a);

    /* Client tokens. */
    o.client_token = "token-1";
    o.description = "t";
    is_int(service_ebs_start(r, &o, &row), 0, "start with a client token");
    is_int(service_ebs_start(r, &o, &row2), 1, "again: the same snapshot");
    ok(row && row2 && strcmp(row->id, row2->id) == 0, "same id");
    registry_snapshot_free(row2);
    row2 = NULL;
    o.volume_size_gib = 2;
    is_int(service_ebs_start(r, &o, &row2), -EEXIST, "other parameters: a conflict");
    o.owner = OTHER;
    is_int(service_ebs_start(r, &o, &row2), 0, "another account's token is its own");
    ok(row && row2 && strcmp(row->id, row2->id) != 0, "a new snapshot");
    registry_snapshot_free(row);
    registry_snapshot_free(row2);

    o = (struct service_ebs_start_options){ .owner = OWNER, .volume_size_gib = 0 };
    is_int(service_ebs_start(r, &o, &row), -EINVAL, "0 GiB is refused");
    o.volume_size_gib = EBS_VOLUME_MAX_GIB + 1;
    is_int(service_ebs_start(r, &o, &row), -EINVAL, "more than 64 TiB is refused");
    o.volume_size_gib = 1;
    o.timeout_minutes = 9;
    is_int(service_ebs_start(r, &o, &row), -EINVAL, "a 9-minute timeout is refused");

    region_free(r);
    {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            printf("# cannot remove %s\n", tmpdir);
    }
    free(a);
    free(b);
    free(c);
    free(got);
    free(zero);
    return done_testing();
}
