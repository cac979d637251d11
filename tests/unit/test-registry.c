/* Unit tests for src/registry/: schema and migrations, the settings that
 * durability rests on, snapshot rows, tags, transactions and the mapping of
 * SQLite failures to errnos.  Most tests run on ":memory:"; what needs a
 * file (WAL, reopening, a second connection) uses a temporary directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/hash.h"
#include "registry/internal.h"
#include "registry/registry.h"
#include "tap.h"

#define SNAP_A "snap-0123456789abcdef0"
#define SNAP_B "snap-0123456789abcdef1"
#define SNAP_C "snap-00000000000000002"
#define OWNER "123456789012"

static char tmpdir[] = "/tmp/test-registry-XXXXXX";

static char *tmp_path(const char *name)
{
    static char buf[4][256];
    static int next;
    char *p = buf[next++ % 4];

    snprintf(p, sizeof(buf[0]), "%s/%s", tmpdir, name);
    return p;
}

static void remove_db(const char *path)
{
    char p[300];

    unlink(path);
    snprintf(p, sizeof(p), "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", path);
    unlink(p);
}

static struct registry *open_ok(const char *path)
{
    struct registry *reg = NULL;
    int r = registry_open(path, &reg);

    if (r < 0)
        printf("# registry_open('%s'): %d %s\n", path, r, error_message() ? error_message() : "");
    return reg;
}

/* Run SQL on the file through a connection of our own (as the sqlite3
 * tool would). */
static int raw_exec(const char *path, const char *sql)
{
    sqlite3 *db;
    int rc = sqlite3_open(path, &db);

    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

static long long pragma_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    long long v = -1;

    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static bool message_style_ok(void)
{
    const char *m = error_message();
    size_t n = m ? strlen(m) : 0;

    return n > 0 && !(m[0] >= 'A' && m[0] <= 'Z') && m[n - 1] != '.';
}

static void make_snapshot(struct registry_snapshot *s, const char *id, int64_t start)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->id, sizeof(s->id), "%s", id);
    snprintf(s->owner, sizeof(s->owner), "%s", OWNER);
    s->state = SNAPSHOT_PENDING;
    s->volume_size = 3ULL << 30 | 512; /* 3 GiB and a sector: 4 GiB reported */
    s->volume_size_gib = 4;
    s->start_time = start;
}

static void fake_digest(struct digest *d, uint8_t seed)
{
    for (size_t i = 0; i < DIGEST_SIZE; i++)
        d->b[i] = (uint8_t)(seed + i * 7);
}

/* ---------------------------------------------------------------------- */

static void test_open_memory(void)
{
    struct registry *reg = open_ok(":memory:");

    ok(reg != NULL, "open :memory:");
    if (!reg)
        return;
    is_int(registry_schema_version(reg), registry_schema_latest(),
           "a new database is migrated to the latest schema");
    ok(registry_schema_latest() >= 1, "at least migration 1 exists");
    is_int(pragma_int(reg->db, "PRAGMA foreign_keys"), 1, "foreign keys are enforced");
    is_int(pragma_int(reg->db, "PRAGMA synchronous"), 2, "synchronous is FULL");
    is_int(pragma_int(reg->db, "PRAGMA application_id"), REGISTRY_APPLICATION_ID,
           "application id is stamped");
    ok(!registry_in_transaction(reg), "no transaction open after open");
    registry_free(reg);
    registry_free(NULL);
    ok(1, "registry_free(NULL) is harmless");
}

static void test_file_wal_and_reopen(void)
{
    const char *path = tmp_path("wal.db");
    struct registry *reg = open_ok(path);
    struct registry_snapshot s, *got = NULL;
    sqlite3 *db;
    const unsigned char *mode = NULL;
    sqlite3_stmt *st;

    ok(reg != NULL, "open a file database");
    if (!reg)
        return;
    is_int(pragma_int(reg->db, "PRAGMA synchronous"), 2, "synchronous is FULL on a file");
    is_int(pragma_int(reg->db, "PRAGMA busy_timeout"), REGISTRY_BUSY_TIMEOUT_MS,
           "busy timeout is set");
    make_snapshot(&s, SNAP_A, 1000);
    s.description = (char *)"kept across reopen";
    is_int(registry_snapshot_insert(reg, &s), 0, "insert into the file database");
    registry_free(reg);

    /* journal_mode=WAL is stored in the file: a fresh connection sees it. */
    ok(sqlite3_open(path, &db) == SQLITE_OK, "open the file with plain sqlite");
    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        mode = sqlite3_column_text(st, 0);
    is_str(mode ? (const char *)mode : "", "wal", "journal mode is WAL");
    sqlite3_finalize(st);
    is_int(pragma_int(db, "PRAGMA user_version"), registry_schema_latest(),
           "user_version holds the schema version");
    sqlite3_close(db);

    reg = open_ok(path);
    ok(reg != NULL, "reopen the file database");
    if (!reg)
        return;
    is_int(registry_schema_version(reg), registry_schema_latest(), "schema version after reopen");
    is_int(registry_snapshot_get(reg, SNAP_A, &got), 0, "row survives reopen");
    is_str(got ? got->description : NULL, "kept across reopen", "description survives reopen");
    registry_snapshot_free(got);
    registry_free(reg);
    remove_db(path);
}

static void test_refuse_future_and_foreign(void)
{
    const char *path = tmp_path("future.db");
    struct registry *reg = open_ok(path);
    char want[64];
    int r;

    ok(reg != NULL, "create a database to age");
    registry_free(reg);
    reg = NULL;
    is_int(raw_exec(path, "PRAGMA user_version = 99"), SQLITE_OK, "claim schema version 99");
    error_clear();
    r = registry_open(path, &reg);
    is_int(r, -EPROTO, "a newer schema is refused with -EPROTO");
    ok(reg == NULL, "no handle is returned on failure");
    snprintf(want, sizeof(want), "schema version 99");
    ok(error_message() && strstr(error_message(), want) && strstr(error_message(), path),
       "the message names the file and the version: %s",
       error_message() ? error_message() : "(none)");
    ok(message_style_ok(), "the message is lowercase without a full stop");
    snprintf(want, sizeof(want), "PRAGMA user_version = %d", registry_schema_latest());
    is_int(raw_exec(path, want), SQLITE_OK, "set the version back");
    reg = open_ok(path);
    ok(reg != NULL, "refusal changed nothing: the database opens again");
    registry_free(reg);
    remove_db(path);

    /* Another program's SQLite file. */
    path = tmp_path("foreign.db");
    is_int(raw_exec(path, "CREATE TABLE t (x); INSERT INTO t VALUES (1)"), SQLITE_OK,
           "make a foreign database");
    reg = NULL;
    is_int(registry_open(path, &reg), -EBADMSG, "tables without a schema version are refused");
    ok(message_style_ok() && strstr(error_message(), "not a kiln registry"),
       "message says it is not a registry: %s", error_message() ? error_message() : "(none)");
    is_int(raw_exec(path, "PRAGMA user_version = 1"), SQLITE_OK, "give it a version");
    is_int(registry_open(path, &reg), -EBADMSG, "a wrong application id is refused");
    remove_db(path);

    /* Not a database at all. */
    path = tmp_path("garbage.db");
    {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        char junk[4096];

        memset(junk, 'x', sizeof(junk));
        ok(fd >= 0 && write(fd, junk, sizeof(junk)) == (ssize_t)sizeof(junk),
           "write a garbage file");
        if (fd >= 0)
            close(fd);
    }
    is_int(registry_open(path, &reg), -EBADMSG, "a file that is not a database is -EBADMSG");
    ok(message_style_ok() && strstr(error_message(), path), "message names the file: %s",
       error_message() ? error_message() : "(none)");
    remove_db(path);

    /* A directory that does not exist. */
    is_int(registry_open(tmp_path("no/such/dir.db"), &reg), -ENOENT,
           "a missing directory is -ENOENT");
}

static void test_snapshot_round_trip(void)
{
    struct registry *reg = open_ok(":memory:");
    struct registry_snapshot s, u, *got = NULL;

    if (!reg)
        return;

    /* All fields set, including a parent and text that would break pasted
     * SQL. */
    make_snapshot(&s, SNAP_B, 1700000000123);
    s.progress = 42;
    s.description = (char *)"it's a 'test'; DROP TABLE snapshots; --";
    s.completion_time = 0;
    s.has_map = true;
    fake_digest(&s.map_id, 1);
    snprintf(s.parent_id, sizeof(s.parent_id), "%s", SNAP_A);
    s.state_message = (char *)"copying";
    is_int(registry_snapshot_insert(reg, &s), 0, "insert a row with every field");
    is_int(registry_snapshot_get(reg, SNAP_B, &got), 0, "get it back");
    if (got) {
        is_str(got->id, SNAP_B, "id");
        is_str(got->owner, OWNER, "owner");
        is_int(got->state, SNAPSHOT_PENDING, "state");
        is_int(got->progress, 42, "progress");
        ok(got->volume_size == (3ULL << 30 | 512), "volume size in bytes");
        is_int(got->volume_size_gib, 4, "volume size in GiB");
        is_str(got->description, s.description, "description with quotes survives binding");
        is_int(got->start_time, 1700000000123, "start time in milliseconds");
        is_int(got->completion_time, 0, "no completion time while pending");
        ok(got->has_map && digest_equal(&got->map_id, &s.map_id), "block map id");
        is_str(got->parent_id, SNAP_A, "parent");
        is_str(got->state_message, "copying", "state message");
    }
    registry_snapshot_free(got);
    got = NULL;

    /* NULL strings and no map, parent or completion. */
    make_snapshot(&s, SNAP_A, 5);
    s.volume_size = 1ULL << 40;
    s.volume_size_gib = 1024;
    is_int(registry_snapshot_insert(reg, &s), 0, "insert a row with NULL strings");
    is_int(registry_snapshot_get(reg, SNAP_A, &got), 0, "get it back");
    if (got) {
        ok(got->description == NULL, "NULL description stays NULL");
        ok(got->state_message == NULL, "NULL state message stays NULL");
        ok(!got->has_map, "no block map");
        is_str(got->parent_id, "", "no parent reads as empty");
        ok(got->volume_size == 1ULL << 40, "a 1 TiB volume size");
    }
    registry_snapshot_free(got);
    got = NULL;

    /* Update: pending -> completed. */
    make_snapshot(&u, SNAP_A, 0);
    u.state = SNAPSHOT_COMPLETED;
    u.progress = 100;
    u.has_map = true;
    fake_digest(&u.map_id, 9);
    u.completion_time = 1700000009999;
    u.state_message = (char *)"done";
    u.description = (char *)"ignored by update";
    is_int(registry_snapshot_update(reg, &u), 0, "update to completed");
    is_int(registry_snapshot_get(reg, SNAP_A, &got), 0, "get the updated row");
    if (got) {
        is_int(got->state, SNAPSHOT_COMPLETED, "state updated");
        is_int(got->progress, 100, "progress updated");
        ok(got->has_map && digest_equal(&got->map_id, &u.map_id), "map updated");
        is_int(got->completion_time, 1700000009999, "completion time updated");
        is_str(got->state_message, "done", "state message updated");
        ok(got->description == NULL, "update leaves the description alone");
        is_int(got->start_time, 5, "update leaves the start time alone");
        ok(got->volume_size == 1ULL << 40, "update leaves the size alone");
    }
    registry_snapshot_free(got);
    got = NULL;

    /* A completed snapshot's map is immutable; its state is not. */
    fake_digest(&u.map_id, 10);
    is_int(registry_snapshot_update(reg, &u), -EROFS, "changing a completed map is -EROFS");
    ok(message_style_ok(), "with a message: %s", error_message() ? error_message() : "");
    u.state = SNAPSHOT_ERROR;
    u.has_map = false;
    is_int(registry_snapshot_update(reg, &u), -EROFS, "clearing a completed map is -EROFS");
    fake_digest(&u.map_id, 9);
    u.has_map = true;
    u.state_message = NULL;
    is_int(registry_snapshot_update(reg, &u), 0, "completed -> error keeping the map");
    is_int(registry_snapshot_get(reg, SNAP_A, &got), 0, "get it");
    if (got) {
        is_int(got->state, SNAPSHOT_ERROR, "state is error");
        ok(got->state_message == NULL, "state message cleared to NULL");
    }
    registry_snapshot_free(got);
    got = NULL;

    /* Missing rows. */
    make_snapshot(&u, SNAP_C, 0);
    is_int(registry_snapshot_update(reg, &u), -ENOENT, "update of a missing row is -ENOENT");
    is_int(registry_snapshot_get(reg, SNAP_C, &got), -ENOENT, "get of a missing row is -ENOENT");
    ok(got == NULL, "ret untouched on failure");
    ok(message_style_ok() && strstr(error_message(), SNAP_C), "not-found message names it: %s",
       error_message() ? error_message() : "");
    is_int(registry_snapshot_delete(reg, SNAP_C), -ENOENT, "delete of a missing row is -ENOENT");

    /* Duplicates. */
    make_snapshot(&s, SNAP_A, 7);
    is_int(registry_snapshot_insert(reg, &s), -EEXIST, "duplicate id is -EEXIST");
    ok(message_style_ok() && strstr(error_message(), SNAP_A), "duplicate message names it: %s",
       error_message() ? error_message() : "");

    /* Delete. */
    is_int(registry_snapshot_delete(reg, SNAP_A), 0, "delete a row");
    is_int(registry_snapshot_get(reg, SNAP_A, &got), -ENOENT, "it is gone");
    is_int(registry_snapshot_delete(reg, SNAP_A), -ENOENT, "deleting twice is -ENOENT");

    registry_free(reg);
}

static void test_snapshot_validation(void)
{
    struct registry *reg = open_ok(":memory:");
    struct registry_snapshot s, *got = NULL;
    enum snapshot_state st;

    if (!reg)
        return;
    make_snapshot(&s, "snap-0123", 0);
    is_int(registry_snapshot_insert(reg, &s), -EINVAL, "short id is -EINVAL");
    make_snapshot(&s, "ami-0123456789abcdef0", 0);
    is_int(registry_snapshot_insert(reg, &s), -EINVAL, "wrong prefix is -EINVAL");
    make_snapshot(&s, "snap-0123456789ABCDEF0", 0);
    is_int(registry_snapshot_insert(reg, &s), -EINVAL, "uppercase hex is -EINVAL");
    make_snapshot(&s, SNAP_A, 0);
    snprintf(s.owner, sizeof(s.owner), "12345");
    is_int(registry_snapshot_insert(reg, &s), -EINVAL, "short owner is -EINVAL");
    make_snapshot(&s, SNAP_A, 0);
    memset(s.owner, '1', sizeof(s.owner)); /* no terminator */
    is_int(registry_snapshot_insert(reg, &s), -EINVAL, "unterminated owner is -EINVAL");
    make_snapshot(&s, SNAP_A, 0);
    s.progress = 101;
    is_int(registry_snapshot_insert(reg, &s), -EINVAL, "progress 101 is -EINVAL");
    make_snapshot(&s, SNAP_A, 0);
    s.state = SNAPSHOT_COMPLETED;
    is_int(registry_snapshot_insert(reg, &s), -EINVAL, "completed without a map is -EINVAL");
    make_snapshot(&s, SNAP_A, 0);
    s.state = (enum snapshot_state)7;
    is_int(registry_snapshot_insert(reg, &s), -EINVAL, "state outside the enum is -EINVAL");
    make_snapshot(&s, SNAP_A, 0);
    snprintf(s.parent_id, sizeof(s.parent_id), "%s", SNAP_A);
    is_int(registry_snapshot_insert(reg, &s), -EINVAL, "own parent is -EINVAL");
    make_snapshot(&s, SNAP_A, 0);
    snprintf(s.parent_id, sizeof(s.parent_id), "vol-1");
    is_int(registry_snapshot_insert(reg, &s), -EINVAL, "malformed parent is -EINVAL");
    make_snapshot(&s, SNAP_A, 0);
    s.volume_size = UINT64_MAX;
    is_int(registry_snapshot_insert(reg, &s), -EINVAL, "size above INT64_MAX is -EINVAL");
    is_int(registry_snapshot_get(reg, "nonsense", &got), -EINVAL, "get of a malformed id");
    is_int(registry_snapshot_delete(reg, NULL), -EINVAL, "delete of a NULL id");

    /* The schema's CHECK constraints stand behind the C checks. */
    ok((sqlite3_exec(reg->db,
                     "INSERT INTO snapshots (id, owner, state, volume_size, volume_size_gib,"
                     " start_time) VALUES ('snap-xyz', '123456789012', 'pending', 0, 0, 0)",
                     NULL, NULL, NULL) & 0xff) == SQLITE_CONSTRAINT,
       "the schema refuses a malformed id");
    ok((sqlite3_exec(reg->db,
                     "INSERT INTO snapshots (id, owner, state, volume_size, volume_size_gib,"
                     " start_time) VALUES ('snap-0123456789abcdef0', '123456789012', 'done', 0,"
                     " 0, 0)",
                     NULL, NULL, NULL) & 0xff) == SQLITE_CONSTRAINT,
       "the schema refuses an unknown state");
    ok((sqlite3_exec(reg->db,
                     "INSERT INTO snapshots (id, owner, state, volume_size, volume_size_gib,"
                     " start_time) VALUES ('snap-0123456789abcdef0', '123456789012',"
                     " 'completed', 0, 0, 0)",
                     NULL, NULL, NULL) & 0xff) == SQLITE_CONSTRAINT,
       "the schema refuses a completed row without a map");
    ok((sqlite3_exec(reg->db,
                     "INSERT INTO snapshots (id, owner, state, volume_size, volume_size_gib,"
                     " start_time) VALUES ('snap-0123456789abcdef0', '123456789012',"
                     " 'pending', 'big', 0, 0)",
                     NULL, NULL, NULL) & 0xff) == SQLITE_CONSTRAINT,
       "the STRICT table refuses text in an integer column");

    /* Rows written behind our back are checked on the way out. */
    ok(sqlite3_exec(reg->db, "PRAGMA ignore_check_constraints = ON;"
                             "INSERT INTO snapshots (id, owner, state, volume_size,"
                             " volume_size_gib, start_time, map_id) VALUES"
                             " ('snap-0123456789abcdef0', '123456789012', 'pending', 0, 0, 0,"
                             " 'zz');"
                             "PRAGMA ignore_check_constraints = OFF;",
                    NULL, NULL, NULL) == SQLITE_OK,
       "plant a row with a malformed map id");
    is_int(registry_snapshot_get(reg, SNAP_A, &got), -EBADMSG, "reading it is -EBADMSG");

    is_str(snapshot_state_to_string(SNAPSHOT_PENDING), "pending", "pending as text");
    is_str(snapshot_state_to_string(SNAPSHOT_COMPLETED), "completed", "completed as text");
    is_str(snapshot_state_to_string(SNAPSHOT_ERROR), "error", "error as text");
    ok(snapshot_state_to_string((enum snapshot_state)9) == NULL, "no text outside the enum");
    ok(snapshot_state_from_string("completed", &st) == 0 && st == SNAPSHOT_COMPLETED,
       "parse completed");
    is_int(snapshot_state_from_string("available", &st), -EINVAL, "unknown state is -EINVAL");
    registry_free(reg);
}

static void test_snapshot_list(void)
{
    struct registry *reg = open_ok(":memory:");
    struct registry_snapshot s, **list = NULL;
    struct digest map;
    size_t n = 99, count = 99;

    if (!reg)
        return;
    is_int(registry_snapshot_list(reg, &list, &n), 0, "list an empty table");
    is_int(n, 0, "no rows");
    ok(list != NULL, "an empty list is still an array");
    registry_snapshot_list_free(list, n);

    /* Insert out of order; equal start times sort by id. */
    make_snapshot(&s, SNAP_B, 20);
    s.description = (char *)"b";
    registry_snapshot_insert(reg, &s);
    make_snapshot(&s, SNAP_A, 20);
    s.has_map = true;
    fake_digest(&s.map_id, 3);
    registry_snapshot_insert(reg, &s);
    make_snapshot(&s, SNAP_C, 30);
    s.has_map = true;
    fake_digest(&s.map_id, 3);
    registry_snapshot_insert(reg, &s);

    is_int(registry_snapshot_list(reg, &list, &n), 0, "list three rows");
    is_int(n, 3, "three rows");
    if (n == 3) {
        is_str(list[0]->id, SNAP_A, "first by start time, then id");
        is_str(list[1]->id, SNAP_B, "second");
        is_str(list[2]->id, SNAP_C, "last has the latest start time");
        is_str(list[1]->description, "b", "list rows carry all fields");
    }
    registry_snapshot_list_free(list, n);
    registry_snapshot_list_free(NULL, 0);

    fake_digest(&map, 3);
    is_int(registry_snapshots_using_map(reg, &map, &count), 0, "count rows using a map");
    is_int(count, 2, "two rows share the map");
    fake_digest(&map, 4);
    registry_snapshots_using_map(reg, &map, &count);
    is_int(count, 0, "an unused map has no rows");
    registry_free(reg);
}

static bool has_tag(struct registry_tag *tags, size_t n, const char *key, const char *value)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(tags[i].key, key) == 0)
            return strcmp(tags[i].value, value) == 0;
    return false;
}

static void test_tags(void)
{
    struct registry *reg = open_ok(":memory:");
    struct registry_tag *tags = NULL;
    struct registry_snapshot s;
    size_t n = 0;

    if (!reg)
        return;
    is_int(registry_tag_list(reg, SNAP_A, &tags, &n), 0, "list tags of an untagged resource");
    is_int(n, 0, "none");
    registry_tag_list_free(tags, n);

    is_int(registry_tag_set(reg, SNAP_A, "Name", "first"), 0, "set a tag");
    is_int(registry_tag_set(reg, SNAP_A, "env", "prod"), 0, "set another");
    is_int(registry_tag_set(reg, SNAP_A, "empty", NULL), 0, "set a tag with no value");
    is_int(registry_tag_set(reg, SNAP_A, "Name", "second"), 0, "replace a tag");
    is_int(registry_tag_set(reg, "ami-0123456789abcdef0", "Name", "image"), 0,
           "tag another resource");
    is_int(registry_tag_set(reg, SNAP_A, "", "x"), -EINVAL, "an empty key is -EINVAL");
    is_int(registry_tag_set(reg, "", "k", "x"), -EINVAL, "an empty resource id is -EINVAL");

    is_int(registry_tag_list(reg, SNAP_A, &tags, &n), 0, "list tags");
    is_int(n, 3, "three keys: replacing did not add one");
    if (n == 3) {
        is_str(tags[0].key, "Name", "sorted by key (bytewise)");
        is_str(tags[0].value, "second", "the replaced value");
        is_str(tags[1].key, "empty", "then 'empty'");
        is_str(tags[1].value, "", "a NULL value is stored as empty");
        is_str(tags[2].key, "env", "then 'env'");
    }
    registry_tag_list_free(tags, n);

    is_int(registry_tag_delete(reg, SNAP_A, "env", "test"), 0,
           "delete with a value that does not match");
    registry_tag_list(reg, SNAP_A, &tags, &n);
    ok(has_tag(tags, n, "env", "prod"), "the tag is kept when the value does not match");
    registry_tag_list_free(tags, n);
    is_int(registry_tag_delete(reg, SNAP_A, "env", "prod"), 0, "delete with the matching value");
    is_int(registry_tag_delete(reg, SNAP_A, "empty", ""), 0, "delete matching an empty value");
    is_int(registry_tag_delete(reg, SNAP_A, "nope", NULL), 0, "deleting an absent tag is success");
    registry_tag_list(reg, SNAP_A, &tags, &n);
    is_int(n, 1, "one tag left");
    ok(has_tag(tags, n, "Name", "second"), "Name is left");
    registry_tag_list_free(tags, n);
    is_int(registry_tag_delete(reg, SNAP_A, "Name", NULL), 0, "delete without a value");
    registry_tag_list(reg, SNAP_A, &tags, &n);
    is_int(n, 0, "no tags left");
    registry_tag_list_free(tags, n);

    /* Deleting a snapshot deletes its tags, and only its. */
    make_snapshot(&s, SNAP_A, 0);
    registry_snapshot_insert(reg, &s);
    registry_tag_set(reg, SNAP_A, "a", "1");
    registry_tag_set(reg, SNAP_A, "b", "2");
    is_int(registry_snapshot_delete(reg, SNAP_A), 0, "delete the tagged snapshot");
    registry_tag_list(reg, SNAP_A, &tags, &n);
    is_int(n, 0, "its tags went with it");
    registry_tag_list_free(tags, n);
    registry_tag_list(reg, "ami-0123456789abcdef0", &tags, &n);
    is_int(n, 1, "other resources keep theirs");
    registry_tag_list_free(tags, n);
    registry_free(reg);
}

static void test_settings(void)
{
    struct registry *reg = open_ok(":memory:");
    char *v = NULL;

    if (!reg)
        return;
    is_int(registry_setting_get(reg, "x", &v), -ENOENT, "an unset setting is -ENOENT");
    is_int(registry_setting_set(reg, "x", "1"), 0, "set it");
    is_int(registry_setting_set(reg, "x", "2"), 0, "replace it");
    is_int(registry_setting_get(reg, "x", &v), 0, "read it");
    is_str(v, "2", "the latest value");
    free(v);
    is_int(registry_setting_set(reg, "", "1"), -EINVAL, "an empty key is -EINVAL");
    registry_free(reg);
}

static void test_transactions(void)
{
    struct registry *reg = open_ok(":memory:");
    struct registry_snapshot s, *got = NULL;
    struct registry_tag *tags = NULL;
    size_t n = 0;

    if (!reg)
        return;
    is_int(registry_commit(reg), -EINVAL, "commit without a transaction is -EINVAL");
    is_int(registry_rollback(reg), 0, "rollback without a transaction is success");

    is_int(registry_begin(reg), 0, "begin");
    ok(registry_in_transaction(reg), "in a transaction");
    make_snapshot(&s, SNAP_A, 0);
    registry_snapshot_insert(reg, &s);
    registry_tag_set(reg, SNAP_A, "k", "v");
    is_int(registry_rollback(reg), 0, "rollback");
    ok(!registry_in_transaction(reg), "out of the transaction");
    is_int(registry_snapshot_get(reg, SNAP_A, &got), -ENOENT, "rollback left no row");
    registry_tag_list(reg, SNAP_A, &tags, &n);
    is_int(n, 0, "rollback left no tag");
    registry_tag_list_free(tags, n);

    is_int(registry_begin(reg), 0, "begin");
    registry_snapshot_insert(reg, &s);
    is_int(registry_commit(reg), 0, "commit");
    is_int(registry_snapshot_get(reg, SNAP_A, &got), 0, "commit kept the row");
    registry_snapshot_free(got);
    got = NULL;

    /* Nesting: an inner rollback undoes only the inner part. */
    is_int(registry_begin(reg), 0, "outer begin");
    make_snapshot(&s, SNAP_B, 1);
    registry_snapshot_insert(reg, &s);
    is_int(registry_begin(reg), 0, "inner begin");
    make_snapshot(&s, SNAP_C, 2);
    registry_snapshot_insert(reg, &s);
    is_int(registry_rollback(reg), 0, "inner rollback");
    ok(registry_in_transaction(reg), "still in the outer transaction");
    is_int(registry_begin(reg), 0, "inner begin again");
    registry_tag_set(reg, SNAP_B, "k", "v");
    is_int(registry_commit(reg), 0, "inner commit");
    is_int(registry_commit(reg), 0, "outer commit");
    ok(!registry_in_transaction(reg), "all transactions closed");
    is_int(registry_snapshot_get(reg, SNAP_B, &got), 0, "outer work committed");
    registry_snapshot_free(got);
    got = NULL;
    is_int(registry_snapshot_get(reg, SNAP_C, &got), -ENOENT, "rolled-back inner work is gone");
    registry_tag_list(reg, SNAP_B, &tags, &n);
    is_int(n, 1, "committed inner work is kept");
    registry_tag_list_free(tags, n);

    /* A delete (which opens its own nested transaction) undone by the
     * caller's rollback brings back the row and its tags. */
    is_int(registry_begin(reg), 0, "begin around a delete");
    is_int(registry_snapshot_delete(reg, SNAP_B), 0, "delete inside it");
    is_int(registry_snapshot_delete(reg, SNAP_C), -ENOENT, "a failing delete inside it");
    ok(registry_in_transaction(reg), "the failed delete left the caller's transaction open");
    is_int(registry_rollback(reg), 0, "roll the delete back");
    is_int(registry_snapshot_get(reg, SNAP_B, &got), 0, "the row is back");
    registry_snapshot_free(got);
    got = NULL;
    registry_tag_list(reg, SNAP_B, &tags, &n);
    is_int(n, 1, "its tag is back");
    registry_tag_list_free(tags, n);

    /* registry_end(): the work's outcome decides commit or rollback, and
     * the work's error is what comes back. */
    is_int(registry_begin(reg), 0, "begin for registry_end");
    registry_tag_set(reg, SNAP_B, "end", "kept");
    is_int(registry_end(reg, 7), 7, "registry_end of success returns the result");
    ok(!registry_in_transaction(reg), "and commits");
    is_int(registry_begin(reg), 0, "begin for a failing registry_end");
    registry_tag_set(reg, SNAP_B, "end2", "dropped");
    is_int(registry_end(reg, -EEXIST), -EEXIST, "registry_end of a failure returns it");
    ok(!registry_in_transaction(reg), "and rolls back");
    registry_tag_list(reg, SNAP_B, &tags, &n);
    is_int(n, 2, "the committed tag is there, the rolled-back one is not");
    registry_tag_list_free(tags, n);
    is_int(registry_begin(reg), 0, "outer begin");
    is_int(registry_begin(reg), 0, "inner begin");
    registry_tag_set(reg, SNAP_B, "end3", "inner");
    is_int(registry_end(reg, -EINVAL), -EINVAL, "a failing inner registry_end");
    ok(registry_in_transaction(reg), "leaves the outer transaction open");
    is_int(registry_end(reg, 0), 0, "the outer one commits");
    registry_tag_list(reg, SNAP_B, &tags, &n);
    is_int(n, 2, "without the inner work");
    registry_tag_list_free(tags, n);
    is_int(registry_end(reg, 0), -EINVAL, "registry_end without a transaction is -EINVAL");

    /* Closing with a transaction open rolls it back. */
    registry_begin(reg);
    make_snapshot(&s, SNAP_C, 3);
    registry_snapshot_insert(reg, &s);
    registry_free(reg);
    ok(1, "free with an open transaction");
}

static void test_two_connections(void)
{
    const char *path = tmp_path("busy.db");
    struct registry *a = open_ok(path), *b = open_ok(path);
    struct registry_snapshot s, *got = NULL;

    ok(a && b, "two handles on one file");
    if (!a || !b)
        return;
    is_int(registry_set_busy_timeout(b, 50), 0, "shorten b's busy timeout");
    make_snapshot(&s, SNAP_A, 0);
    is_int(registry_begin(a), 0, "a takes the write lock");
    is_int(registry_snapshot_insert(a, &s), 0, "a inserts");
    is_int(registry_snapshot_get(b, SNAP_A, &got), -ENOENT,
           "b does not see a's uncommitted row (and is not blocked reading)");
    make_snapshot(&s, SNAP_B, 0);
    is_int(registry_snapshot_insert(b, &s), -EBUSY, "b's write waits, then is -EBUSY");
    ok(message_style_ok(), "busy message: %s", error_message() ? error_message() : "");
    is_int(registry_begin(b), -EBUSY, "b cannot begin a write transaction either");
    ok(!registry_in_transaction(b), "b has no transaction after the failed begin");
    is_int(registry_commit(a), 0, "a commits");
    is_int(registry_snapshot_get(b, SNAP_A, &got), 0, "b sees the committed row at once");
    registry_snapshot_free(got);
    is_int(registry_snapshot_insert(b, &s), 0, "b can write now");
    registry_free(a);
    registry_free(b);

    /* Two handles migrating the same fresh file one after the other. */
    remove_db(path);
    a = open_ok(path);
    b = open_ok(path);
    ok(a && b, "second open of a just-created file");
    if (a && b)
        is_int(registry_schema_version(b), registry_schema_latest(), "both see the schema");
    registry_free(a);
    registry_free(b);
    remove_db(path);
}

static void test_disk_full(void)
{
    const char *path = tmp_path("full.db");
    struct registry *reg = open_ok(path);
    struct registry_snapshot s, *got = NULL;
    static char big[200000];
    int r = 0;

    if (!reg)
        return;
    /* Cap the file at its current size: the next page allocation fails
     * with SQLITE_FULL, as on a full disk. */
    ok(sqlite3_exec(reg->db, "PRAGMA max_page_count = 1", NULL, NULL, NULL) == SQLITE_OK,
       "cap the database size");
    memset(big, 'd', sizeof(big) - 1);
    make_snapshot(&s, SNAP_A, 0);
    s.description = big;
    r = registry_snapshot_insert(reg, &s);
    is_int(r, -ENOSPC, "a full database is -ENOSPC");
    ok(message_style_ok() && strstr(error_message(), SNAP_A), "full message names it: %s",
       error_message() ? error_message() : "");
    is_int(registry_snapshot_get(reg, SNAP_A, &got), -ENOENT, "nothing was written");
    registry_free(reg);
    remove_db(path);
}

/* A process killed right after registry_commit() returns has its row on
 * disk; one killed inside a transaction leaves nothing.  (Power loss is
 * what synchronous=FULL adds on top; a test cannot pull the plug.)  Under
 * valgrind the killed child reports the memory it held when it died: that
 * is the point of the test, not a leak, and it does not change the exit
 * status of the test. */
static void test_crash(void)
{
    const char *path = tmp_path("crash.db");
    struct registry *reg = open_ok(path);
    struct registry_snapshot s, *got = NULL;
    int status = 0;
    pid_t pid;

    registry_free(reg);
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        reg = open_ok(path);
        make_snapshot(&s, SNAP_A, 1);
        if (!reg || registry_begin(reg) < 0 || registry_snapshot_insert(reg, &s) < 0 ||
            registry_commit(reg) < 0)
            _exit(1);
        make_snapshot(&s, SNAP_B, 2);
        registry_begin(reg);
        registry_snapshot_insert(reg, &s);
        raise(SIGKILL); /* no close, no rollback, no exit handlers */
        _exit(1);
    }
    ok(pid > 0 && waitpid(pid, &status, 0) == pid && WIFSIGNALED(status) &&
           WTERMSIG(status) == SIGKILL,
       "a writer is killed mid-transaction");
    reg = open_ok(path);
    if (!reg)
        return;
    is_int(registry_snapshot_get(reg, SNAP_A, &got), 0, "the committed row survived the kill");
    registry_snapshot_free(got);
    got = NULL;
    is_int(registry_snapshot_get(reg, SNAP_B, &got), -ENOENT, "the uncommitted row did not");
    registry_free(reg);
    remove_db(path);
}

/* Several processes opening one new file at once: each migration is
 * applied exactly once and every open succeeds. */
static void test_concurrent_open(void)
{
    const char *path = tmp_path("race.db");
    pid_t pids[6];
    int failed = 0;
    struct registry *reg;

    fflush(stdout);
    for (size_t i = 0; i < ARRAY_SIZE(pids); i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            reg = open_ok(path);
            if (!reg || registry_setting_set(reg, "race", "x") < 0)
                _exit(1);
            registry_free(reg);
            _exit(0);
        }
    }
    for (size_t i = 0; i < ARRAY_SIZE(pids); i++) {
        int status = 0;
        if (pids[i] < 0 || waitpid(pids[i], &status, 0) != pids[i] || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            failed++;
    }
    is_int(failed, 0, "six processes open a new registry at once");
    reg = open_ok(path);
    if (reg) {
        is_int(registry_schema_version(reg), registry_schema_latest(), "the schema is complete");
        registry_free(reg);
    }
    remove_db(path);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_open_memory();
    test_file_wal_and_reopen();
    test_refuse_future_and_foreign();
    test_snapshot_round_trip();
    test_snapshot_validation();
    test_snapshot_list();
    test_tags();
    test_settings();
    test_transactions();
    test_two_connections();
    test_disk_full();
    test_crash();
    test_concurrent_open();
    rmdir(tmpdir);
    return done_testing();
}
