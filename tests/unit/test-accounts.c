/* Unit tests for src/registry/accounts.c: creating accounts and keys, the
 * shapes of ids, keys and secrets, names, lookups, the default account
 * across reopening and across processes, the credentials file, and key
 * lookups from several threads while accounts are being created.  Most
 * tests run on ":memory:"; what needs a file uses a temporary directory.
 */
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "registry/accounts.h"
#include "registry/registry.h"
#include "tap.h"

static char tmpdir[] = "/tmp/test-accounts-XXXXXX";

static char *tmp_path(const char *name)
{
    static char buf[4][256];
    static int next;
    char *p = buf[next++ % 4];

    snprintf(p, sizeof(buf[0]), "%s/%s", tmpdir, name);
    return p;
}

static struct accounts *open_ok(const char *path)
{
    struct accounts *a = NULL;
    int r = accounts_open(path, &a);

    if (r < 0)
        printf("# accounts_open('%s'): %d %s\n", path, r, error_message() ? error_message() : "");
    return a;
}

static bool only(const char *s, const char *alphabet)
{
    for (; *s; s++)
        if (!strchr(alphabet, *s))
            return false;
    return true;
}

static bool id_ok(const char *id)
{
    return strlen(id) == 12 && only(id, "0123456789") && id[0] != '0';
}

static bool key_ok(const char *k)
{
    return strlen(k) == 20 && strncmp(k, "AKIA", 4) == 0 &&
           only(k + 4, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567");
}

static bool secret_ok(const char *s)
{
    return strlen(s) == 40 &&
           only(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
}

static long long raw_int(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    long long v = -1;

    if (sqlite3_open(path, &db) != SQLITE_OK)
        return -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return v;
}

static int raw_exec(const char *path, const char *sql)
{
    sqlite3 *db;
    int rc = sqlite3_open(path, &db);

    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

static void test_create_and_lookup(void)
{
    struct accounts *a = open_ok(":memory:");
    struct account_credentials alice, bob, again;
    char secret[ACCOUNT_SECRET_SIZE], account[ACCOUNT_ID_SIZE];
    struct account *list = NULL, acct;
    size_t n = 0;

    ok(a != NULL, "open :memory:");
    if (!a)
        return;
    is_int(accounts_create(a, "alice", &alice), 0, "create alice");
    ok(id_ok(alice.account_id), "account id is 12 digits, first not zero: %s", alice.account_id);
    ok(key_ok(alice.access_key_id), "access key id is AKIA + 16 of A-Z2-7: %s",
       alice.access_key_id);
    ok(secret_ok(alice.secret), "secret is 40 base64 characters");
    is_int(accounts_create(a, "bob.smith-2_x", &bob), 0, "create a name with . - _ and digits");
    ok(strcmp(alice.account_id, bob.account_id) != 0, "account ids differ");
    ok(strcmp(alice.access_key_id, bob.access_key_id) != 0, "access key ids differ");
    ok(strcmp(alice.secret, bob.secret) != 0, "secrets differ");

    memset(&again, 'x', sizeof(again));
    is_int(accounts_create(a, "alice", &again), -EEXIST, "a second alice is -EEXIST");
    ok(error_message() && strstr(error_message(), "'alice'"), "the message names it: %s",
       error_message() ? error_message() : "");
    is_int(accounts_create(a, "ALICE", &again), -EEXIST, "names compare without case");
    ok(again.account_id[0] == 'x', "nothing written on failure");

    is_int(accounts_lookup_key(a, alice.access_key_id, secret, account), 0, "lookup alice's key");
    is_str(secret, alice.secret, "the secret round-trips");
    is_str(account, alice.account_id, "the key belongs to alice");
    is_int(accounts_lookup_key(a, bob.access_key_id, secret, account), 0, "lookup bob's key");
    is_str(account, bob.account_id, "the key belongs to bob");
    is_int(accounts_lookup_key(a, "AKIAAAAAAAAAAAAAAAAA", secret, account), -ENOENT,
           "an unknown key is -ENOENT");
    is_int(accounts_lookup_key(a, "AKIA0000", secret, account), -ENOENT,
           "a malformed key is -ENOENT");
    is_int(accounts_lookup_key(a, NULL, secret, account), -ENOENT, "a NULL key is -ENOENT");
    is_int(accounts_lookup_key(a, "akia" "AAAAAAAAAAAAAAAA", secret, account), -ENOENT,
           "key ids are case-sensitive");

    is_int(accounts_list(a, &list, &n), 0, "list");
    is_int(n, 2, "two accounts");
    if (n == 2) {
        /* Ordered by creation time, then id: both may share a millisecond. */
        struct account *al = strcmp(list[0].name, "alice") == 0 ? &list[0] : &list[1];
        struct account *bo = al == &list[0] ? &list[1] : &list[0];
        ok(list[0].created < list[1].created ||
           (list[0].created == list[1].created && strcmp(list[0].id, list[1].id) < 0),
           "in order of creation, then id");
        is_str(al->id, alice.account_id, "alice listed with her id");
        is_int(al->n_keys, 1, "one key");
        if (al->n_keys == 1) {
            is_str(al->keys[0].id, alice.access_key_id, "her key id");
            ok(al->keys[0].active, "active");
        }
        is_str(bo->name, "bob.smith-2_x", "bob listed");
        is_str(bo->id, bob.account_id, "with his id");
        ok(al->created > 1600000000000LL, "created is unix milliseconds");
    }
    accounts_list_free(list, n);

    is_int(accounts_get_by_name(a, "Alice", &acct), 0, "get by name, any case");
    is_str(acct.id, alice.account_id, "finds alice");
    is_int(acct.n_keys, 1, "with her key");
    account_release(&acct);
    is_int(accounts_get_by_name(a, "carol", &acct), -ENOENT, "get an absent name: -ENOENT");
    accounts_free(a);
}

static void test_names(void)
{
    struct accounts *a = open_ok(":memory:");
    struct account_credentials c;
    char name[70];
    static const char *const bad[] = { "", "a b", "x/y", "caf\xc3\xa9", "a\nb", "a:b",
                                       "'; DROP TABLE accounts; --", "[x]" };

    if (!a)
        return;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        is_int(accounts_create(a, bad[i], &c), -EINVAL, "invalid name %zu is -EINVAL", i);
    is_int(accounts_create(a, NULL, &c), -EINVAL, "NULL name is -EINVAL");
    memset(name, 'n', 64);
    name[64] = '\0';
    is_int(accounts_create(a, name, &c), 0, "64 characters are allowed");
    name[64] = 'n';
    name[65] = '\0';
    is_int(accounts_create(a, name, &c), -EINVAL, "65 characters are not");
    ok(account_name_is_valid("default"), "'default' is a valid name");

    /* Many accounts: ids, keys and secrets all distinct. */
    enum { N = 100 };
    static struct account_credentials all[N];
    bool distinct = true, shapes = true;
    int made = 0;
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "user%d", i);
        if (accounts_create(a, name, &all[i]) == 0)
            made++;
        shapes = shapes && id_ok(all[i].account_id) && key_ok(all[i].access_key_id) &&
                 secret_ok(all[i].secret);
        for (int j = 0; j < i; j++)
            if (!strcmp(all[i].account_id, all[j].account_id) ||
                !strcmp(all[i].access_key_id, all[j].access_key_id) ||
                !strcmp(all[i].secret, all[j].secret))
                distinct = false;
    }
    is_int(made, N, "created %d accounts", N);
    ok(shapes, "every id, key and secret well formed");
    ok(distinct, "every id, key and secret distinct");
    accounts_free(a);
}

static void test_file(void)
{
    const char *path = tmp_path("accounts.db");
    struct account_credentials d1, d2, d3, alice;
    char secret[ACCOUNT_SECRET_SIZE], account[ACCOUNT_ID_SIZE];
    struct accounts *a = open_ok(path);
    struct registry *reg = NULL;
    struct stat sb;
    bool created = false;

    ok(a != NULL, "open a file");
    if (!a)
        return;
    ok(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600, "accounts.db is mode 0600 (%o)",
       (unsigned)(sb.st_mode & 0777));
    is_int(accounts_ensure_default(a, &d1, &created), 0, "ensure the default account");
    ok(created, "created on first use");
    ok(id_ok(d1.account_id) && key_ok(d1.access_key_id) && secret_ok(d1.secret),
       "default credentials well formed");
    is_int(accounts_ensure_default(a, &d2, &created), 0, "ensure again");
    ok(!created, "not created twice");
    ok(memcmp(&d1, &d2, sizeof(d1)) == 0, "same credentials");
    is_int(accounts_create(a, "default", &alice), -EEXIST, "'default' is taken");
    is_int(accounts_create(a, "alice", &alice), 0, "create alice");
    accounts_free(a);

    ok(stat(tmp_path("accounts.db-wal"), &sb) != 0 || (sb.st_mode & 0077) == 0,
       "the WAL is owner-only too");
    is_int(raw_int(path, "PRAGMA application_id"), 0x6b616363, "application_id is 'kacc'");
    is_int(raw_int(path, "PRAGMA user_version"), 1, "schema version 1");

    a = open_ok(path);
    ok(a != NULL, "reopen");
    if (!a)
        return;
    is_int(accounts_ensure_default(a, &d3, NULL), 0, "ensure after reopening");
    ok(memcmp(&d1, &d3, sizeof(d1)) == 0, "same default credentials after reopening");
    is_int(accounts_lookup_key(a, alice.access_key_id, secret, account), 0,
           "alice's key survives reopening");
    is_str(secret, alice.secret, "with her secret");

    /* A key made inactive (by hand, for now) no longer authenticates. */
    char sql[200];
    snprintf(sql, sizeof(sql), "UPDATE access_keys SET status = 'inactive' "
                               "WHERE access_key_id = '%s'", alice.access_key_id);
    is_int(raw_exec(path, sql), SQLITE_OK, "deactivate alice's key through another connection");
    is_int(accounts_lookup_key(a, alice.access_key_id, secret, account), -ENOENT,
           "an inactive key is -ENOENT");
    is_int(raw_exec(path, "UPDATE access_keys SET secret = 'short'"), SQLITE_CONSTRAINT,
           "the schema refuses a malformed secret");
    accounts_free(a);

    /* A region registry is not an accounts database, and the reverse. */
    is_int(registry_open(tmp_path("registry.db"), &reg), 0, "create a registry");
    registry_free(reg);
    is_int(accounts_open(tmp_path("registry.db"), &a), -EBADMSG,
           "a registry is refused as an accounts database");
    ok(error_message() && strstr(error_message(), "not a kiln accounts database"), "saying so: %s",
       error_message() ? error_message() : "");
    reg = NULL;
    is_int(registry_open(path, &reg), -EBADMSG, "an accounts database is refused as a registry");
    registry_free(reg);
    is_int(accounts_open(tmp_path("no/such/dir/accounts.db"), &a), -ENOENT,
           "a missing directory is -ENOENT");
}

/* Several processes ensuring the default account of one new file agree. */
static void test_default_race(void)
{
    enum { P = 4 };
    const char *path = tmp_path("race.db");
    int fds[P][2];
    pid_t pids[P];
    char ids[P][ACCOUNT_ID_SIZE + ACCOUNT_ACCESS_KEY_ID_SIZE];
    int ok_count = 0, same = 1;

    fflush(stdout); /* children must not print the parent's buffered TAP */
    for (int i = 0; i < P; i++) {
        if (pipe(fds[i]) < 0)
            return;
        pids[i] = fork();
        if (pids[i] == 0) {
            struct accounts *a = NULL;
            struct account_credentials c;
            char out[sizeof(ids[0])] = "";
            if (accounts_open(path, &a) == 0 && accounts_ensure_default(a, &c, NULL) == 0)
                snprintf(out, sizeof(out), "%s%s", c.account_id, c.access_key_id);
            accounts_free(a);
            if (write(fds[i][1], out, sizeof(out)) != (ssize_t)sizeof(out))
                _exit(2);
            _exit(out[0] ? 0 : 1);
        }
        close(fds[i][1]);
    }
    for (int i = 0; i < P; i++) {
        int status = 0;
        ssize_t got = read(fds[i][0], ids[i], sizeof(ids[i]));
        close(fds[i][0]);
        waitpid(pids[i], &status, 0);
        if (got == (ssize_t)sizeof(ids[i]) && WIFEXITED(status) && WEXITSTATUS(status) == 0)
            ok_count++;
        if (i > 0 && strcmp(ids[i], ids[0]) != 0)
            same = 0;
    }
    is_int(ok_count, P, "%d processes ensure the default account of one new file", P);
    ok(same, "all of them got the same account and key");
}

/* `test-accounts --list PATH` / `--create PATH NAME` (the latter prints
 * the new key id): another process, started afresh (a forked child would
 * carry this process's open handle). */
static int other_process(int argc, char **argv)
{
    struct accounts *o = NULL;
    int e = accounts_open(argv[2], &o);

    if (e == 0 && strcmp(argv[1], "--list") == 0) {
        struct account *list = NULL;
        size_t n = 0;
        e = accounts_list(o, &list, &n);
        accounts_list_free(list, n);
    } else if (e == 0 && argc == 4) {
        struct account_credentials c;
        e = accounts_create(o, argv[3], &c);
        if (e == 0)
            printf("%s\n", c.access_key_id);
    }
    accounts_free(o);
    return e == 0 ? 0 : 1;
}

/* A second handle on the same file in one process (the server looks the
 * provider account up beside its own handle) must leave the first one's
 * locks alone: other processes reading, writing and closing afterwards
 * must neither remove the WAL under it nor hide the new key from it. */
static void test_second_handle(const char *self)
{
    const char *path = tmp_path("second.db");
    struct accounts *a = NULL, *b = NULL;
    struct account_credentials c1, c2;
    char secret[ACCOUNT_SECRET_SIZE], id[ACCOUNT_ID_SIZE], key[64] = "", wal[300], cmd[900];
    FILE *f;

    snprintf(wal, sizeof(wal), "%s-wal", path);
    is_int(accounts_open(path, &a), 0, "open the long-lived handle");
    is_int(accounts_create(a, "first", &c1), 0, "create an account through it");
    is_int(accounts_open(path, &b), 0, "open a second handle in the same process");
    is_int(accounts_create(b, "second", &c2), 0, "create one through the second");
    accounts_free(b);
    fflush(stdout);
    snprintf(cmd, sizeof(cmd), "'%s' --list '%s'", self, path);
    is_int(system(cmd), 0, "another process lists the accounts");
    snprintf(cmd, sizeof(cmd), "'%s' --create '%s' third", self, path);
    f = popen(cmd, "r");
    if (!f || !fgets(key, sizeof(key), f))
        key[0] = '\0';
    if (f)
        pclose(f);
    key[strcspn(key, "\n")] = '\0';
    ok(key[0] != '\0', "another process adds a key");
    ok(access(wal, F_OK) == 0, "the WAL is still there");
    is_int(accounts_lookup_key(a, key, secret, id), 0, "the long-lived handle sees the new key");
    accounts_free(a);
}

/* ---- concurrent lookups ----------------------------------------------- */

enum { KEYS = 16, THREADS = 4, LOOKUPS = 5000 };

struct lookup_job {
    struct accounts *a;
    const struct account_credentials *creds;
    unsigned seed;
    int failures;
};

static void *lookup_thread(void *arg)
{
    struct lookup_job *job = arg;
    char secret[ACCOUNT_SECRET_SIZE], account[ACCOUNT_ID_SIZE];

    for (int i = 0; i < LOOKUPS; i++) {
        const struct account_credentials *c = &job->creds[rand_r(&job->seed) % KEYS];
        if (accounts_lookup_key(job->a, c->access_key_id, secret, account) != 0 ||
            strcmp(secret, c->secret) != 0 || strcmp(account, c->account_id) != 0)
            job->failures++;
        if (i % 100 == 0 &&
            accounts_lookup_key(job->a, "AKIAZZZZZZZZZZZZZZZZ", secret, account) != -ENOENT)
            job->failures++;
    }
    return NULL;
}

static void test_threads(const char *path)
{
    struct accounts *a = open_ok(path);
    static struct account_credentials creds[KEYS];
    struct lookup_job jobs[THREADS];
    pthread_t th[THREADS];
    int failures = 0, created = 0;
    char name[32];

    if (!a)
        return;
    for (int i = 0; i < KEYS; i++) {
        snprintf(name, sizeof(name), "t%d", i);
        accounts_create(a, name, &creds[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (struct lookup_job){ .a = a, .creds = creds, .seed = (unsigned)i + 1 };
        pthread_create(&th[i], NULL, lookup_thread, &jobs[i]);
    }
    /* Writes on the same handle while the lookups run. */
    for (int i = 0; i < 20; i++) {
        struct account_credentials c;
        snprintf(name, sizeof(name), "writer%d", i);
        if (accounts_create(a, name, &c) == 0)
            created++;
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        failures += jobs[i].failures;
    }
    is_int(failures, 0, "%d threads x %d lookups on %s, all right", THREADS, LOOKUPS, path);
    is_int(created, 20, "accounts created meanwhile on the same handle");
    accounts_free(a);
}

/* ---- the credentials file --------------------------------------------- */

static char *slurp(const char *path)
{
    static char buf[1024];
    FILE *f = fopen(path, "r");
    size_t n;

    if (!f)
        return NULL;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static void test_credentials_file(void)
{
    const char *path = tmp_path("credentials");
    struct account_credentials c = {
        .account_id = "123456789012",
        .access_key_id = "AKIAABCDEFGHIJ234567",
        .secret = "abcdefghijABCDEFGHIJ0123456789+/abcdefgh",
    };
    char want[256];
    struct stat sb;
    mode_t old = umask(0);

    is_int(accounts_write_credentials_file(path, &c, NULL), 0, "write a credentials file");
    snprintf(want, sizeof(want), "[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n",
             c.access_key_id, c.secret);
    is_str(slurp(path), want, "in the aws CLI's format, profile default");
    ok(stat(path, &sb) == 0 && (sb.st_mode & 07777) == 0600, "mode 0600 with umask 0 (%o)",
       (unsigned)(sb.st_mode & 07777));
    umask(old);

    chmod(path, 0644);
    is_int(accounts_write_credentials_file(path, &c, "kiln-alice"), 0, "replace it");
    snprintf(want, sizeof(want),
             "[kiln-alice]\naws_access_key_id = %s\naws_secret_access_key = %s\n",
             c.access_key_id, c.secret);
    is_str(slurp(path), want, "with the named profile");
    ok(stat(path, &sb) == 0 && (sb.st_mode & 07777) == 0600, "the new file is 0600 again");

    is_int(accounts_write_credentials_file(path, &c, "a]\nb"), -EINVAL, "a bad profile is -EINVAL");
    c.secret[3] = '\0';
    is_int(accounts_write_credentials_file(path, &c, NULL), -EINVAL,
           "malformed credentials are -EINVAL");
    is_str(slurp(path), want, "and the file is unchanged");
    is_int(accounts_write_credentials_file(tmp_path("nodir/credentials"), &c, NULL) < 0, 1,
           "a missing directory fails");

    /* No temporary left behind. */
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "ls %s | grep -c '\\.tmp$' >/dev/null", tmpdir);
    ok(system(cmd) != 0, "no temporary files left in the directory");
}

int main(int argc, char **argv)
{
    char cmd[300];

    if (argc >= 3)
        return other_process(argc, argv);
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_create_and_lookup();
    test_names();
    test_file();
    test_default_race();
    test_second_handle(argv[0]);
    test_credentials_file();
    test_threads(":memory:");
    test_threads(tmp_path("threads.db"));

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        printf("# cannot remove %s\n", tmpdir);
    return done_testing();
}
