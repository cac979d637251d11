/* The registry handle: opening a database with the settings kiln relies on,
 * the statement cache, SQLite-to-errno mapping, transactions, settings and
 * the default account.  Typed queries live in snapshots.c and tags.c, the
 * schema in migrations.c.
 *
 * Design notes (durability and concurrency):
 *   - journal_mode=WAL: readers never block the writer and the writer never
 *     blocks readers, so the offline `kiln` verbs and `kiln serve` can share
 *     one file.  A file database that cannot switch to WAL (a filesystem
 *     without shared memory) is refused rather than silently run in another
 *     mode.
 *   - synchronous=FULL: in WAL mode, NORMAL syncs only at checkpoints and a
 *     power cut may undo transactions that had returned.  The durability
 *     rule (chunks, then block map, then the row) needs "committed" to mean
 *     "on disk", so the WAL is fsynced at every commit.
 *   - A write transaction starts with BEGIN IMMEDIATE: taking the write lock
 *     up front means the busy handler waits for it, where a deferred
 *     transaction that later tries to upgrade would fail at once with
 *     SQLITE_BUSY_SNAPSHOT.
 *   - busy_timeout (5 s by default): past it SQLITE_BUSY becomes -EBUSY.
 *   - foreign_keys=ON and trusted_schema=OFF on every connection (both are
 *     per connection, not stored in the file).
 */
#include <errno.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "registry/internal.h"

#define JOURNAL_RETRY_MS 10

/* ---- errors ---------------------------------------------------------- */

int reg_errno(sqlite3 *db, int rc)
{
    int sys = db ? sqlite3_system_errno(db) : 0;

    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_CONSTRAINT:
        if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE)
            return -EEXIST;
        return -EINVAL;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_READONLY:
        return -EROFS;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return -EBADMSG;
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return -EACCES;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_CANTOPEN:
        return sys > 0 ? -sys : -EIO;
    case SQLITE_IOERR:
        if (sys == ENOSPC || sys == EDQUOT)
            return -ENOSPC;
        return -EIO;
    default:
        return -EIO;
    }
}

static int vfail(sqlite3 *db, int rc, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static int vfail(sqlite3 *db, int rc, const char *fmt, va_list ap)
{
    char context[256];
    /* sqlite3_errmsg() describes the last failing call; for a code we were
     * handed without a failing call (db NULL) use the generic text. */
    const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    int err = reg_errno(db, rc);

    /* SQLite says "disk I/O error" for a full disk; say what it is. */
    if (err == -ENOSPC)
        msg = strerror(ENOSPC);
    vsnprintf(context, sizeof(context), fmt, ap);
    return error_set(err, "%s: %s", context, msg);
}

int reg_fail(struct registry *reg, int rc, const char *fmt, ...)
{
    va_list ap;
    int r;

    va_start(ap, fmt);
    r = vfail(reg ? reg->db : NULL, rc, fmt, ap);
    va_end(ap);
    return r;
}

int reg_step_done(struct registry *reg, sqlite3_stmt *st, const char *fmt, ...)
{
    va_list ap;
    int rc = sqlite3_step(st), r;

    if (rc == SQLITE_DONE || rc == SQLITE_ROW)
        return sqlite3_changes(reg->db);
    va_start(ap, fmt);
    r = vfail(reg->db, rc, fmt, ap);
    va_end(ap);
    return r;
}

/* Prepare, bind `id` as ?1 and step `sql` (a static string: the statement
 * cache keeps the pointer); the rows changed, or -errno naming
 * "<of><what> '<id>'". */
static int exec_id(struct registry *reg, const char *sql, const char *id, const char *of,
                   const char *what)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = reg_prepare(reg, sql, &st);

    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    return reg_step_done(reg, st, "cannot delete %s%s '%s'", of, what, id);
}

int reg_delete_resource(struct registry *reg, const char *delete_sql, const char *what,
                        const char *id, int (*also)(struct registry *reg, const char *id))
{
    int r = registry_begin(reg);

    if (r < 0)
        return r;
    r = exec_id(reg, delete_sql, id, "", what);
    if (r == 0)
        r = error_set(ENOENT, "%s '%s' not found", what, id);
    if (r >= 0)
        r = exec_id(reg, "DELETE FROM tags WHERE resource_id = ?1", id, "the tags of ", what);
    if (r >= 0 && also)
        r = also(reg, id);
    /* A half-done delete is undone. */
    r = registry_end(reg, r);
    return r < 0 ? r : 0;
}

/* ---- statements ------------------------------------------------------ */

int reg_prepare(struct registry *reg, const char *sql, sqlite3_stmt **ret)
{
    sqlite3_stmt *st;
    int rc;

    for (size_t i = 0; i < reg->n_stmts; i++)
        if (reg->stmts[i].sql == sql || strcmp(reg->stmts[i].sql, sql) == 0) {
            *ret = reg->stmts[i].stmt;
            return 0;
        }

    rc = sqlite3_prepare_v3(reg->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK)
        return reg_fail(reg, rc, "cannot prepare registry query");
    if (reg->n_stmts == reg->cap_stmts) {
        reg->cap_stmts = reg->cap_stmts ? 2 * reg->cap_stmts : 16;
        reg->stmts = xrealloc(reg->stmts, reg->cap_stmts * sizeof(*reg->stmts));
    }
    reg->stmts[reg->n_stmts++] = (struct stmt_cache_entry){ .sql = sql, .stmt = st };
    *ret = st;
    return 0;
}

int reg_bind_text(sqlite3_stmt *st, int idx, const char *s)
{
    if (!s)
        return sqlite3_bind_null(st, idx);
    return sqlite3_bind_text(st, idx, s, -1, SQLITE_STATIC);
}

char *reg_column_strdup(sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);

    return t ? xstrdup((const char *)t) : NULL;
}

void reg_bind_positive(sqlite3_stmt *st, int idx, int64_t v)
{
    if (v > 0)
        sqlite3_bind_int64(st, idx, v);
    else
        sqlite3_bind_null(st, idx);
}

bool reg_column_copy(sqlite3_stmt *st, int col, char *buf, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    int len = sqlite3_column_bytes(st, col);

    if (!t) {
        buf[0] = '\0';
        return true;
    }
    if ((size_t)len >= size || memchr(t, '\0', (size_t)len))
        return false;
    memcpy(buf, t, (size_t)len + 1);
    return true;
}

int reg_collect(struct registry *reg, sqlite3_stmt *st, const struct reg_collector *c,
                void *data, void **ret, size_t *ret_n)
{
    unsigned char *list = NULL;
    size_t n = 0, cap = 0;
    int r, rc;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            list = xrealloc(list, cap * c->size);
        }
        memset(list + n * c->size, 0, c->size);
        r = c->read(reg, st, list + n * c->size, data);
        if (r < 0) {
            c->release(list, n + 1); /* the failed row's slot too */
            return r;
        }
        n++;
    }
    if (rc != SQLITE_DONE) {
        r = reg_fail(reg, rc, "cannot list %s", c->what);
        c->release(list, n);
        return r;
    }
    *ret = list ? list : xcalloc(1, c->size);
    *ret_n = n;
    return 0;
}

int reg_list(struct registry *reg, const char *sql, const struct reg_collector *c, void **ret,
             size_t *ret_n)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = reg_prepare(reg, sql, &st);

    if (r < 0)
        return r;
    return reg_collect(reg, st, c, NULL, ret, ret_n);
}

void reg_collect_release_free(void *list, size_t n)
{
    (void)n;
    free(list);
}

/* Run one statement without values (PRAGMA, BEGIN, ...); the text is ours,
 * never built from input. */
static int exec_sql(struct registry *reg, const char *sql, const char *what)
{
    int rc = sqlite3_exec(reg->db, sql, NULL, NULL, NULL);

    if (rc != SQLITE_OK)
        return reg_fail(reg, rc, "cannot %s in %s '%s'", what, reg->schema->what, reg->path);
    return 0;
}

/* ---- open and close -------------------------------------------------- */

static int pragma_text(struct registry *reg, const char *sql, char *buf, size_t size)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(reg->db, sql, -1, &st, NULL);

    if (rc != SQLITE_OK)
        return reg_fail(reg, rc, "cannot open %s '%s'", reg->schema->what, reg->path);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        int r = reg_fail(reg, rc, "cannot open %s '%s'", reg->schema->what, reg->path);
        sqlite3_finalize(st);
        return r;
    }
    buf[0] = '\0';
    if (rc == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(buf, size, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return 0;
}

static int configure(struct registry *reg)
{
    char mode[32];
    const char *file = sqlite3_db_filename(reg->db, "main");
    int r;

    sqlite3_busy_timeout(reg->db, REGISTRY_BUSY_TIMEOUT_MS);

    /* The first statement that reads the file: a file that is not a
     * database fails here with SQLITE_NOTADB (-EBADMSG).  Switching a new
     * file to WAL needs an exclusive lock and SQLite reports SQLITE_BUSY
     * for it without calling the busy handler when another process is
     * doing the same, so wait here, for as long as the busy timeout. */
    for (unsigned waited = 0;; waited += JOURNAL_RETRY_MS) {
        r = pragma_text(reg, "PRAGMA journal_mode = WAL", mode, sizeof(mode));
        if (r != -EBUSY || waited >= REGISTRY_BUSY_TIMEOUT_MS)
            break;
        usleep(JOURNAL_RETRY_MS * 1000);
    }
    if (r < 0)
        return r;
    if (file && file[0] && strcmp(mode, "wal") != 0)
        return error_set(EIO, "cannot enable write-ahead logging for %s '%s' (mode is '%s')",
                         reg->schema->what, reg->path, mode);

    r = exec_sql(reg,
                 "PRAGMA synchronous = FULL;"
                 "PRAGMA foreign_keys = ON;"
                 "PRAGMA trusted_schema = OFF;",
                 "configure");
    if (r < 0)
        return r;
    return 0;
}

/* A database created just now: make its directory entry durable too (the
 * WAL's creation already syncs the directory on Linux; this does not rely
 * on that). */
static int sync_parent(struct registry *reg, const char *path)
{
    _cleanup_free_ char *copy = xstrdup(path);
    int r = fsync_dir(dirname(copy));

    if (r < 0)
        return error_set(r, "cannot sync the directory of %s '%s': %s", reg->schema->what, path,
                         strerror(-r));
    return 0;
}

int registry_open(const char *path, struct registry **ret)
{
    return reg_open(path, &reg_registry_schema, ret);
}

int reg_open(const char *path, const struct reg_schema *schema, struct registry **ret)
{
    struct registry *reg;
    const char *file;
    int rc, r, before = 0;

    if (sqlite3_libversion_number() < REGISTRY_SQLITE_MIN)
        return error_set(ENOTSUP, "sqlite %s is too old for the %s (3.37 or newer needed)",
                         sqlite3_libversion(), schema->what);

    reg = xcalloc(1, sizeof(*reg));
    reg->schema = schema;
    reg->path = xstrdup(path);
    rc = sqlite3_open_v2(path, &reg->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                             SQLITE_OPEN_EXRESCODE,
                         NULL);
    if (rc != SQLITE_OK) {
        r = reg_fail(reg, rc, "cannot open %s '%s'", schema->what, path);
        goto fail;
    }
    sqlite3_extended_result_codes(reg->db, 1);

    r = configure(reg);
    if (r < 0)
        goto fail;
    r = reg_user_version(reg, &before);
    if (r < 0)
        goto fail;
    r = reg_migrate(reg);
    if (r < 0)
        goto fail;

    file = sqlite3_db_filename(reg->db, "main");
    if (before == 0 && file && file[0]) {
        r = sync_parent(reg, file);
        if (r < 0)
            goto fail;
    }

    *ret = reg;
    return 0;

fail:
    registry_free(reg);
    return r;
}

void registry_free(struct registry *reg)
{
    if (!reg)
        return;
    for (size_t i = 0; i < reg->n_stmts; i++)
        sqlite3_finalize(reg->stmts[i].stmt);
    free(reg->stmts);
    sqlite3_finalize(reg->list_stmt);
    free(reg->list_sql);
    /* An open transaction is rolled back by the close. */
    sqlite3_close(reg->db);
    free(reg->path);
    free(reg);
}

int registry_schema_version(struct registry *reg)
{
    int v = 0;
    int r = reg_user_version(reg, &v);

    return r < 0 ? r : v;
}

int registry_schema_latest(void)
{
    return reg_migrations_latest();
}

int registry_set_busy_timeout(struct registry *reg, unsigned ms)
{
    int rc = sqlite3_busy_timeout(reg->db, ms > INT32_MAX ? INT32_MAX : (int)ms);

    if (rc != SQLITE_OK)
        return reg_fail(reg, rc, "cannot set the busy timeout of %s '%s'", reg->schema->what,
                        reg->path);
    return 0;
}

/* ---- transactions ---------------------------------------------------- */

/* SQLite may end a transaction on its own (a failed COMMIT, SQLITE_FULL,
 * an I/O error).  Bring tx_depth back in line when it did. */
static void sync_depth(struct registry *reg)
{
    if (sqlite3_get_autocommit(reg->db))
        reg->tx_depth = 0;
}

int registry_begin(struct registry *reg)
{
    int r;

    sync_depth(reg);
    if (reg->tx_depth == 0)
        r = exec_sql(reg, "BEGIN IMMEDIATE", "begin a transaction");
    else
        r = exec_sql(reg, "SAVEPOINT kiln_nested", "begin a nested transaction");
    if (r < 0)
        return r;
    reg->tx_depth++;
    return 0;
}

int registry_commit(struct registry *reg)
{
    int r;

    if (reg->tx_depth > 0 && sqlite3_get_autocommit(reg->db)) {
        reg->tx_depth = 0;
        return error_set(EIO, "cannot commit in %s '%s': the transaction was rolled back",
                         reg->schema->what, reg->path);
    }
    if (reg->tx_depth == 0)
        return error_set(EINVAL, "cannot commit in %s '%s': no transaction is open",
                         reg->schema->what, reg->path);
    if (reg->tx_depth > 1) {
        r = exec_sql(reg, "RELEASE kiln_nested", "end a nested transaction");
        if (r < 0)
            return r;
        reg->tx_depth--;
        return 0;
    }
    r = exec_sql(reg, "COMMIT", "commit");
    sync_depth(reg);
    if (r < 0)
        return r;
    reg->tx_depth = 0;
    return 0;
}

int registry_rollback(struct registry *reg)
{
    int r;

    sync_depth(reg);
    if (reg->tx_depth == 0)
        return 0;
    if (reg->tx_depth > 1) {
        /* ROLLBACK TO keeps the savepoint open; RELEASE ends it. */
        r = exec_sql(reg, "ROLLBACK TO kiln_nested; RELEASE kiln_nested",
                     "roll back a nested transaction");
        if (r < 0)
            return r;
        reg->tx_depth--;
        return 0;
    }
    r = exec_sql(reg, "ROLLBACK", "roll back");
    sync_depth(reg);
    if (r < 0)
        return r;
    reg->tx_depth = 0;
    return 0;
}

int registry_end(struct registry *reg, int r)
{
    if (r >= 0) {
        int c = registry_commit(reg);
        if (c >= 0)
            return r;
        r = c;
    }
    /* Undo the work (a savepoint inside the caller's transaction); the
     * first error is what the caller sees. */
    registry_rollback(reg);
    return r;
}

bool registry_in_transaction(struct registry *reg)
{
    sync_depth(reg);
    return reg->tx_depth > 0;
}

/* ---- settings -------------------------------------------------------- */

int registry_setting_get(struct registry *reg, const char *key, char **ret)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r, rc;

    if (!key || !key[0])
        return error_set(EINVAL, "cannot read a setting without a key");
    r = reg_prepare(reg, "SELECT value FROM settings WHERE key = ?1", &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, key);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return error_set(ENOENT, "setting '%s' is not set", key);
    if (rc != SQLITE_ROW)
        return reg_fail(reg, rc, "cannot read setting '%s'", key);
    *ret = reg_column_strdup(st, 0);
    if (!*ret)
        *ret = xstrdup("");
    return 0;
}

int registry_setting_set(struct registry *reg, const char *key, const char *value)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    if (!key || !key[0] || !value)
        return error_set(EINVAL, "cannot set setting '%s': key and value are required",
                         key ? key : "");
    r = reg_prepare(reg,
                    "INSERT INTO settings (key, value) VALUES (?1, ?2)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, key);
    reg_bind_text(st, 2, value);
    r = reg_step_done(reg, st, "cannot set setting '%s'", key);
    return r < 0 ? r : 0;
}

/* ---- the default account ---------------------------------------------- */

bool reg_account_is_valid(const char *s)
{
    size_t i;

    for (i = 0; s[i]; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return i == ACCOUNT_ID_SIZE - 1;
}

/* 12 uniformly random digits, the first non-zero (so that the id survives
 * tools that parse it as a number).  Rejection sampling avoids modulo bias:
 * a byte is used only below 252 for the first digit (9 * 28) and below 250
 * for the others (10 * 25). */
int reg_account_generate(char out[ACCOUNT_ID_SIZE])
{
    unsigned char pool[64];
    size_t used = sizeof(pool), n = 0;
    int r;

    while (n < ACCOUNT_ID_SIZE - 1) {
        unsigned limit = n == 0 ? 252 : 250;
        unsigned char b;

        if (used == sizeof(pool)) {
            r = random_bytes(pool, sizeof(pool));
            if (r < 0)
                r = error_set(r, "cannot read random bytes: %s", strerror(-r));
            if (r < 0)
                return r;
            used = 0;
        }
        b = pool[used++];
        if (b >= limit)
            continue;
        out[n] = (char)(n == 0 ? '1' + b % 9 : '0' + b % 10);
        n++;
    }
    out[n] = '\0';
    return 0;
}


bool reg_terminated(const char *field, size_t size)
{
    return memchr(field, '\0', size) != NULL;
}

bool reg_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

int reg_select_by_id(struct registry *reg, const char *sql, const char *what, const char *id,
                     sqlite3_stmt **ret)
{
    int r, rc;

    r = reg_prepare(reg, sql, ret);
    if (r < 0)
        return r;
    reg_bind_text(*ret, 1, id);
    rc = sqlite3_step(*ret);
    if (rc == SQLITE_DONE)
        return error_set(ENOENT, "%s '%s' not found", what, id);
    if (rc != SQLITE_ROW)
        return reg_fail(reg, rc, "cannot read %s '%s'", what, id);
    return 0;
}
