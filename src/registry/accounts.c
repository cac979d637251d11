/* The accounts database (accounts.h): its schema, account and access-key
 * rows, the key lookup SigV4 needs, and the aws CLI credentials file.
 *
 * The connection code, the statement cache, error mapping, transactions and
 * the migration runner are the registry's (internal.h): accounts.db is a
 * `struct registry` opened with its own schema (accounts_schema below).
 *
 * Design notes (durability and concurrency):
 *   - Every write is one transaction (BEGIN IMMEDIATE, synchronous=FULL):
 *     an account never exists without its first key, and a returned create
 *     is on disk.
 *   - Ids and keys are random.  A collision with an existing row is
 *     detected by the primary key (INSERT ... ON CONFLICT DO NOTHING changes
 *     no row) and retried with a new value; a taken name is the UNIQUE
 *     constraint, -EEXIST.
 *   - The default account is looked up and, if absent, created inside one
 *     write transaction, so processes racing on a new data directory agree
 *     on one default account.
 *   - One connection per handle, and a mutex held for the whole of every
 *     public call (the statement cache and the connection, opened
 *     SQLITE_OPEN_NOMUTEX, are used by one thread at a time).  Error
 *     messages are per thread (error.h), so a failed lookup reports to the
 *     thread that made it.
 *   - The database file is created mode 0600 before SQLite opens it; SQLite
 *     gives its -wal and -shm files the same mode.  Secrets are stored in
 *     clear (SigV4 signs with the secret itself), so nobody but the owner
 *     may read them.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "registry/accounts.h"
#include "registry/internal.h"

/* PRAGMA application_id of an accounts database: "kacc" in ASCII. */
#define ACCOUNTS_APPLICATION_ID 0x6b616363

#define ACCESS_KEY_PREFIX "AKIA"
#define ACCESS_KEY_RANDOM 16
#define SECRET_LENGTH (ACCOUNT_SECRET_SIZE - 1)
#define GENERATE_ATTEMPTS 8

static const char base32_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
static const char base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Names compare without case (COLLATE NOCASE), as IAM user names do: "Alice"
 * and "alice" cannot both exist.  Times are unix milliseconds. */
static const char accounts_migration_1[] =
    "CREATE TABLE accounts (\n"
    "    id      TEXT NOT NULL PRIMARY KEY\n"
    "            CHECK (length(id) = 12 AND id NOT GLOB '*[^0-9]*'),\n"
    "    name    TEXT NOT NULL UNIQUE COLLATE NOCASE\n"
    "            CHECK (length(name) BETWEEN 1 AND 64\n"
    "                   AND name NOT GLOB '*[^A-Za-z0-9._-]*'),\n"
    "    created INTEGER NOT NULL\n"
    ") STRICT, WITHOUT ROWID;\n"
    "\n"
    "CREATE TABLE access_keys (\n"
    "    access_key_id TEXT NOT NULL PRIMARY KEY\n"
    "                  CHECK (length(access_key_id) = 20\n"
    "                         AND substr(access_key_id, 1, 4) = 'AKIA'\n"
    "                         AND substr(access_key_id, 5) NOT GLOB '*[^A-Z2-7]*'),\n"
    "    secret        TEXT NOT NULL\n"
    "                  CHECK (length(secret) = 40 AND secret NOT GLOB '*[^A-Za-z0-9+/]*'),\n"
    "    account_id    TEXT NOT NULL REFERENCES accounts (id),\n"
    "    created       INTEGER NOT NULL,\n"
    "    status        TEXT NOT NULL DEFAULT 'active'\n"
    "                  CHECK (status IN ('active', 'inactive'))\n"
    ") STRICT, WITHOUT ROWID;\n"
    "\n"
    "CREATE INDEX access_keys_account ON access_keys (account_id, created, access_key_id);\n"
    "\n"
    "PRAGMA application_id = 1801544547;\n"; /* ACCOUNTS_APPLICATION_ID */

_Static_assert(ACCOUNTS_APPLICATION_ID == 1801544547, "migration 1 stamps this application id");

static const struct reg_migration accounts_migrations[] = {
    { 1, "accounts and access keys", accounts_migration_1 },
};

static const struct reg_schema accounts_schema = {
    .what = "accounts database",
    .application_id = ACCOUNTS_APPLICATION_ID,
    .migrations = accounts_migrations,
    .n_migrations = ARRAY_SIZE(accounts_migrations),
};

struct accounts {
    struct registry *reg;
    pthread_mutex_t lock;
};

/* ---- the lock ---------------------------------------------------------- */

static inline void unlockp(pthread_mutex_t **m)
{
    if (*m)
        pthread_mutex_unlock(*m);
}

static pthread_mutex_t *lock(struct accounts *a)
{
    pthread_mutex_lock(&a->lock);
    return &a->lock;
}

/* Hold the handle's mutex until the end of the enclosing scope. */
#define LOCK_GUARD(a) \
    _cleanup_(unlockp) __attribute__((unused)) pthread_mutex_t *lock_guard_ = lock(a)

/* ---- validation and generation -------------------------------------- */

static bool all_in(const char *s, size_t len, const char *alphabet)
{
    for (size_t i = 0; i < len; i++)
        if (!s[i] || !strchr(alphabet, s[i]))
            return false;
    return true;
}

bool account_name_is_valid(const char *name)
{
    size_t n;

    if (!name)
        return false;
    n = strnlen(name, ACCOUNT_NAME_MAX + 1);
    return n >= 1 && n <= ACCOUNT_NAME_MAX &&
           all_in(name, n,
                  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.");
}

bool account_access_key_id_is_valid(const char *s)
{
    return s && strnlen(s, ACCOUNT_ACCESS_KEY_ID_SIZE) == ACCOUNT_ACCESS_KEY_ID_SIZE - 1 &&
           strncmp(s, ACCESS_KEY_PREFIX, 4) == 0 &&
           all_in(s + 4, ACCESS_KEY_RANDOM, base32_alphabet);
}

static bool secret_is_valid(const char *s)
{
    return s && strnlen(s, ACCOUNT_SECRET_SIZE) == SECRET_LENGTH &&
           all_in(s, SECRET_LENGTH, base64_alphabet);
}

/* `len` characters of `alphabet` (32 or 64 symbols: a power of two that
 * divides 256, so masking a random byte is uniform) and a NUL. */
static int random_string(char *out, size_t len, const char *alphabet, unsigned mask)
{
    unsigned char bytes[64];
    int r;

    if (len > sizeof(bytes))
        return error_set(EINVAL, "random string of %zu characters is too long", len);
    r = random_bytes(bytes, len);
    if (r < 0)
        return error_set(r, "cannot read random bytes: %s", strerror(-r));
    for (size_t i = 0; i < len; i++)
        out[i] = alphabet[bytes[i] & mask];
    out[len] = '\0';
    explicit_bzero(bytes, sizeof(bytes));
    return 0;
}

static int key_generate(char id[ACCOUNT_ACCESS_KEY_ID_SIZE], char secret[ACCOUNT_SECRET_SIZE])
{
    int r;

    memcpy(id, ACCESS_KEY_PREFIX, 4);
    r = random_string(id + 4, ACCESS_KEY_RANDOM, base32_alphabet, 31);
    if (r < 0)
        return r;
    return random_string(secret, SECRET_LENGTH, base64_alphabet, 63);
}

/* ---- open and close ---------------------------------------------------- */

char *accounts_path(const char *data_dir)
{
    return xasprintf("%s/%s", data_dir, ACCOUNTS_DB_NAME);
}

/* Create the file, owner-only, before SQLite does (it would use 0644). */
/* Create the file mode 0600 when it does not exist, and never open() and
 * close() one that does: closing any descriptor of a file drops every
 * POSIX lock this process holds on it, those of its other SQLite
 * connections too (a server's long-lived handle), and the next process to
 * close its connection would then take the WAL for unused and remove it,
 * leaving that handle blind to later writes. */
static int precreate(const char *path)
{
    struct stat st;
    int fd;

    if (stat(path, &st) == 0)
        return 0;
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0 && errno != EEXIST)
        return error_set(errno, "cannot open accounts database '%s': %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    return 0;
}

int accounts_open(const char *path, struct accounts **ret)
{
    struct accounts *a;
    int r;

    if (!path || !path[0])
        return error_set(EINVAL, "cannot open an accounts database without a path");
    if (strcmp(path, ":memory:") != 0) {
        r = precreate(path);
        if (r < 0)
            return r;
    }
    a = xcalloc(1, sizeof(*a));
    r = reg_open(path, &accounts_schema, &a->reg);
    if (r < 0) {
        free(a);
        return r;
    }
    pthread_mutex_init(&a->lock, NULL);
    *ret = a;
    return 0;
}

void accounts_free(struct accounts *a)
{
    if (!a)
        return;
    registry_free(a->reg);
    pthread_mutex_destroy(&a->lock);
    free(a);
}

/* ---- creating ---------------------------------------------------------- */

/* Insert an access key for `account_id`, retrying on the (2^-80) chance
 * that its id exists.  Called inside a transaction. */
static int key_insert(struct accounts *a, const char *account_id, int64_t created,
                      struct account_credentials *c)
{
    for (int attempt = 0; attempt < GENERATE_ATTEMPTS; attempt++) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = key_generate(c->access_key_id, c->secret);
        if (r < 0)
            return r;
        r = reg_prepare(a->reg,
                        "INSERT INTO access_keys (access_key_id, secret, account_id, created,"
                        " status) VALUES (?1, ?2, ?3, ?4, 'active')"
                        " ON CONFLICT (access_key_id) DO NOTHING",
                        &st);
        if (r < 0)
            return r;
        reg_bind_text(st, 1, c->access_key_id);
        reg_bind_text(st, 2, c->secret);
        reg_bind_text(st, 3, account_id);
        sqlite3_bind_int64(st, 4, created);
        r = reg_step_done(a->reg, st, "cannot store an access key of account '%s'", account_id);
        if (r != 0)
            return r < 0 ? r : 0;
    }
    return error_set(EIO, "cannot generate an unused access key id for account '%s'",
                     account_id);
}

/* Insert the account row and its first key; the caller holds the lock. */
static int create_locked(struct accounts *a, const char *name, struct account_credentials *ret)
{
    struct account_credentials c = { 0 };
    int64_t created = wall_clock_ms();
    int r = -EIO, attempt;

    r = registry_begin(a->reg);
    if (r < 0)
        return r;
    for (attempt = 0; attempt < GENERATE_ATTEMPTS; attempt++) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;

        r = reg_account_generate(c.account_id);
        if (r < 0)
            goto fail;
        /* An id collision changes no row and is retried; a taken name is
         * the UNIQUE constraint: -EEXIST. */
        r = reg_prepare(a->reg,
                        "INSERT INTO accounts (id, name, created) VALUES (?1, ?2, ?3)"
                        " ON CONFLICT (id) DO NOTHING",
                        &st);
        if (r < 0)
            goto fail;
        reg_bind_text(st, 1, c.account_id);
        reg_bind_text(st, 2, name);
        sqlite3_bind_int64(st, 3, created);
        r = reg_step_done(a->reg, st, "cannot create account '%s'", name);
        if (r == -EEXIST)
            r = error_set(EEXIST, "account '%s' exists", name);
        if (r != 0)
            break;
    }
    if (r < 0)
        goto fail;
    if (attempt == GENERATE_ATTEMPTS) {
        r = error_set(EIO, "cannot generate an unused account id for '%s'", name);
        goto fail;
    }
    r = key_insert(a, c.account_id, created, &c);
    if (r < 0)
        goto fail;
    r = registry_commit(a->reg);
    if (r < 0)
        goto fail;
    *ret = c;
    explicit_bzero(&c, sizeof(c));
    return 0;

fail:
    registry_rollback(a->reg);
    explicit_bzero(&c, sizeof(c));
    return r;
}

int accounts_create(struct accounts *a, const char *name, struct account_credentials *ret)
{
    if (!account_name_is_valid(name))
        return error_set(EINVAL,
                         "invalid account name '%.80s' (1 to %d letters, digits, '-', '_' "
                         "and '.')",
                         name ? name : "", ACCOUNT_NAME_MAX);
    LOCK_GUARD(a);
    return create_locked(a, name, ret);
}

/* ---- reading ----------------------------------------------------------- */

void account_release(struct account *acct)
{
    if (!acct)
        return;
    free(acct->keys);
    acct->keys = NULL;
    acct->n_keys = 0;
}

void accounts_list_free(struct account *list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++)
        account_release(&list[i]);
    free(list);
}

static void release_all(struct account **list, size_t *n)
{
    accounts_list_free(*list, *n);
    *list = NULL;
    *n = 0;
}

#define ACCOUNT_ROWS                                                                             \
    "SELECT a.id, a.name, a.created, k.access_key_id, k.status, k.created"                      \
    " FROM accounts AS a LEFT JOIN access_keys AS k ON k.account_id = a.id"

/* Fold the rows of an ACCOUNT_ROWS query (ordered by account) into
 * accounts with their keys.  One statement reads one snapshot of the
 * database.  A row that breaks the schema's rules is -EBADMSG. */
static int read_accounts(struct accounts *a, sqlite3_stmt *st, struct account **ret,
                         size_t *ret_n)
{
    struct account *list = NULL;
    size_t n = 0, cap = 0;
    int rc;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        const char *name = (const char *)sqlite3_column_text(st, 1);
        const char *key = (const char *)sqlite3_column_text(st, 3);
        const char *status = (const char *)sqlite3_column_text(st, 4);
        struct account *acct;

        if (!id || !reg_account_is_valid(id) || !account_name_is_valid(name)) {
            release_all(&list, &n);
            return error_set(EBADMSG, "accounts database '%s' holds a malformed account '%s'",
                             a->reg->path, id ? id : "");
        }
        if (n == 0 || strcmp(list[n - 1].id, id) != 0) {
            if (n == cap) {
                cap = cap ? 2 * cap : 8;
                list = xrealloc(list, cap * sizeof(*list));
            }
            acct = &list[n++];
            *acct = (struct account){ .created = sqlite3_column_int64(st, 2) };
            snprintf(acct->id, sizeof(acct->id), "%s", id);
            snprintf(acct->name, sizeof(acct->name), "%s", name);
        }
        acct = &list[n - 1];
        if (!key)
            continue; /* an account without keys: the LEFT JOIN's NULLs */
        if (!account_access_key_id_is_valid(key) || !status) {
            release_all(&list, &n);
            return error_set(EBADMSG,
                             "accounts database '%s' holds a malformed access key '%s' "
                             "of account '%s'",
                             a->reg->path, key, id);
        }
        acct->keys = xrealloc(acct->keys, (acct->n_keys + 1) * sizeof(*acct->keys));
        struct account_key *k = &acct->keys[acct->n_keys++];
        *k = (struct account_key){
            .active = strcmp(status, "active") == 0,
            .created = sqlite3_column_int64(st, 5),
        };
        snprintf(k->id, sizeof(k->id), "%s", key);
    }
    if (rc != SQLITE_DONE) {
        release_all(&list, &n);
        return reg_fail(a->reg, rc, "cannot read accounts database '%s'", a->reg->path);
    }
    *ret = list;
    *ret_n = n;
    return 0;
}

int accounts_list(struct accounts *a, struct account **ret, size_t *ret_n)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    LOCK_GUARD(a);
    r = reg_prepare(a->reg,
                    ACCOUNT_ROWS " ORDER BY a.created, a.id, k.created, k.access_key_id", &st);
    if (r < 0)
        return r;
    return read_accounts(a, st, ret, ret_n);
}

static int get_by_name_locked(struct accounts *a, const char *name, struct account *ret)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    struct account *list = NULL;
    size_t n = 0;
    int r;

    if (!account_name_is_valid(name))
        return error_set(EINVAL, "invalid account name '%.80s'", name ? name : "");
    r = reg_prepare(a->reg,
                    ACCOUNT_ROWS " WHERE a.name = ?1 ORDER BY a.id, k.created, k.access_key_id",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, name);
    r = read_accounts(a, st, &list, &n);
    if (r < 0)
        return r;
    if (n == 0) {
        free(list);
        return error_set(ENOENT, "no account named '%s'", name);
    }
    *ret = list[0];
    free(list); /* the name is unique: one account, whose keys move to *ret */
    return 0;
}

int accounts_get_by_name(struct accounts *a, const char *name, struct account *ret)
{
    LOCK_GUARD(a);
    return get_by_name_locked(a, name, ret);
}

static int lookup_locked(struct accounts *a, const char *access_key_id,
                         char ret_secret[ACCOUNT_SECRET_SIZE],
                         char ret_account_id[ACCOUNT_ID_SIZE])
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    const char *secret, *account, *status;
    int r, rc;

    if (!account_access_key_id_is_valid(access_key_id))
        return error_set(ENOENT, "malformed access key id");
    r = reg_prepare(a->reg,
                    "SELECT secret, account_id, status FROM access_keys"
                    " WHERE access_key_id = ?1",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, access_key_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return error_set(ENOENT, "no access key '%s'", access_key_id);
    if (rc != SQLITE_ROW)
        return reg_fail(a->reg, rc, "cannot look up access key '%s'", access_key_id);
    secret = (const char *)sqlite3_column_text(st, 0);
    account = (const char *)sqlite3_column_text(st, 1);
    status = (const char *)sqlite3_column_text(st, 2);
    if (!secret_is_valid(secret) || !account || !reg_account_is_valid(account) || !status)
        return error_set(EBADMSG, "accounts database '%s' holds a malformed access key '%s'",
                         a->reg->path, access_key_id);
    if (strcmp(status, "active") != 0)
        return error_set(ENOENT, "access key '%s' is inactive", access_key_id);
    memcpy(ret_secret, secret, ACCOUNT_SECRET_SIZE);
    memcpy(ret_account_id, account, ACCOUNT_ID_SIZE);
    return 0;
}

int accounts_lookup_key(struct accounts *a, const char *access_key_id,
                        char ret_secret[ACCOUNT_SECRET_SIZE],
                        char ret_account_id[ACCOUNT_ID_SIZE])
{
    LOCK_GUARD(a);
    return lookup_locked(a, access_key_id, ret_secret, ret_account_id);
}

/* ---- the default account --------------------------------------------- */

int accounts_ensure_default(struct accounts *a, struct account_credentials *ret,
                            bool *ret_created)
{
    struct account_credentials c = { 0 };
    struct account acct = { 0 };
    bool created = false;
    int r;

    LOCK_GUARD(a);
    /* The write lock first: a second process waits here and then finds the
     * account the first one made. */
    r = registry_begin(a->reg);
    if (r < 0)
        return r;
    r = get_by_name_locked(a, ACCOUNT_DEFAULT_NAME, &acct);
    if (r == -ENOENT) {
        error_clear();
        r = create_locked(a, ACCOUNT_DEFAULT_NAME, &c);
        created = r >= 0;
    } else if (r >= 0) {
        r = -ENOENT;
        for (size_t i = 0; i < acct.n_keys && r < 0; i++)
            if (acct.keys[i].active) {
                r = lookup_locked(a, acct.keys[i].id, c.secret, c.account_id);
                if (r >= 0)
                    snprintf(c.access_key_id, sizeof(c.access_key_id), "%s", acct.keys[i].id);
            }
        if (r == -ENOENT)
            r = error_set(ENOENT, "the default account '%s' has no active access key", acct.id);
        account_release(&acct);
    }
    if (r >= 0)
        r = registry_commit(a->reg);
    if (r < 0) {
        registry_rollback(a->reg);
        explicit_bzero(&c, sizeof(c));
        return r;
    }
    *ret = c;
    explicit_bzero(&c, sizeof(c));
    if (ret_created)
        *ret_created = created;
    return 0;
}

/* ---- the credentials file ------------------------------------------- */

int accounts_write_credentials_file(const char *path, const struct account_credentials *c,
                                    const char *profile)
{
    _cleanup_free_ char *dir_copy = NULL, *tmp = NULL, *text = NULL;
    unsigned char nonce[8];
    char hex[2 * sizeof(nonce) + 1];
    int fd = -1, r;

    if (!profile)
        profile = "default";
    if (!path || !path[0])
        return error_set(EINVAL, "cannot write a credentials file without a path");
    if (!account_name_is_valid(profile))
        return error_set(EINVAL, "invalid profile name '%.80s'", profile);
    if (!account_access_key_id_is_valid(c->access_key_id) || !secret_is_valid(c->secret))
        return error_set(EINVAL, "cannot write credentials file '%s': malformed credentials",
                         path);

    r = random_bytes(nonce, sizeof(nonce));
    if (r < 0)
        return error_set(r, "cannot read random bytes: %s", strerror(-r));
    for (size_t i = 0; i < sizeof(nonce); i++)
        snprintf(hex + 2 * i, 3, "%02x", nonce[i]);
    tmp = xasprintf("%s.%s.tmp", path, hex);
    text = xasprintf("[%s]\naws_access_key_id = %s\naws_secret_access_key = %s\n", profile,
                     c->access_key_id, c->secret);

    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        r = error_set(errno, "cannot create credentials file '%s': %s", tmp, strerror(errno));
        goto out;
    }
    /* Exactly 0600 whatever the umask. */
    if (fchmod(fd, 0600) < 0) {
        r = error_set(errno, "cannot set the mode of '%s': %s", tmp, strerror(errno));
        goto fail;
    }
    r = write_all(fd, text, strlen(text), -1);
    if (r < 0) {
        r = error_set(r, "cannot write credentials file '%s': %s", tmp, strerror(-r));
        goto fail;
    }
    if (fsync(fd) < 0) {
        r = error_set(errno, "cannot sync credentials file '%s': %s", tmp, strerror(errno));
        goto fail;
    }
    r = close(TAKE_FD(fd));
    if (r < 0) {
        r = error_set(errno, "cannot write credentials file '%s': %s", tmp, strerror(errno));
        goto fail;
    }
    if (rename(tmp, path) < 0) {
        r = error_set(errno, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        goto fail;
    }
    dir_copy = xstrdup(path);
    r = fsync_dir(dirname(dir_copy));
    if (r < 0)
        r = error_set(r, "cannot sync the directory of credentials file '%s': %s", path,
                      strerror(-r));
    goto out;

fail:
    /* Undo: the temporary file never stays behind. */
    if (fd >= 0)
        close(fd);
    unlink(tmp);
out:
    explicit_bzero(text, strlen(text));
    return r < 0 ? r : 0;
}
