/* Private to src/registry/: the handle, the statement cache, error mapping
 * and the migration runner.  Every file that adds typed queries (snapshots.c,
 * tags.c, and the images, permissions and jobs of the API issue) uses these
 * helpers, so that SQL is prepared once per handle, values are only ever
 * bound, and SQLite result codes become errnos in one place.
 *
 * Pattern for a query:
 *
 *     _cleanup_stmt_ sqlite3_stmt *st = NULL;
 *     int r = reg_prepare(reg, "SELECT ... WHERE id = ?1", &st);
 *     if (r < 0)
 *         return r;
 *     sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
 *     r = sqlite3_step(st);
 *     if (r != SQLITE_ROW && r != SQLITE_DONE)
 *         return reg_fail(reg, r, "cannot read snapshot '%s'", id);
 *
 * The cleanup resets the statement and clears its bindings when `st` leaves
 * scope, which also ends the implicit read transaction a SELECT holds.
 */
#ifndef KILN_REGISTRY_INTERNAL_H
#define KILN_REGISTRY_INTERNAL_H

#include <sqlite3.h>
#include <stddef.h>

#include "registry/permissions.h"
#include "registry/registry.h"

/* The oldest SQLite whose SQL the migrations use (STRICT tables, 3.37). */
#define REGISTRY_SQLITE_MIN 3037000

/* PRAGMA application_id of a kiln registry: "kiln" in ASCII. */
#define REGISTRY_APPLICATION_ID 0x6b696c6e

#define REGISTRY_BUSY_TIMEOUT_MS 5000

/* A database kind: what its messages call it, its PRAGMA application_id
 * and its numbered migrations (see migrations.c for the rules).  The
 * region registry is one (reg_registry_schema); the global accounts
 * database (accounts.c) is another, on the same connection code. */
struct reg_migration {
    int version;
    const char *name;
    const char *sql;
};

struct reg_schema {
    const char *what; /* "registry", "accounts database" */
    int application_id;
    const struct reg_migration *migrations; /* numbered 1, 2, ... */
    size_t n_migrations;
};

extern const struct reg_schema reg_registry_schema;

struct stmt_cache_entry {
    const char *sql; /* a string constant: compared by content */
    sqlite3_stmt *stmt;
};

struct registry {
    const struct reg_schema *schema;
    sqlite3 *db;
    char *path;
    unsigned tx_depth; /* registry_begin() nesting: 0 outside transactions */
    struct stmt_cache_entry *stmts;
    size_t n_stmts, cap_stmts;
    /* The last image list query and its SQL text (images.c) */
    sqlite3_stmt *list_stmt;
    char *list_sql;
};

/* Return the cached statement for `sql` (preparing it on first use) in
 * *ret.  `sql` must be a string constant: the cache keeps the pointer for the
 * life of the handle.  A statement is not reentrant: a caller must not use the
 * same SQL text again while its statement is still being stepped. */
int reg_prepare(struct registry *reg, const char *sql, sqlite3_stmt **ret);

static inline void reg_stmt_donep(sqlite3_stmt **st)
{
    if (*st) {
        sqlite3_reset(*st);
        sqlite3_clear_bindings(*st);
    }
}
#define _cleanup_stmt_ __attribute__((cleanup(reg_stmt_donep)))

/* Map an SQLite (extended) result code to -errno:
 *   BUSY, LOCKED                     -EBUSY
 *   CONSTRAINT_PRIMARYKEY, _UNIQUE   -EEXIST
 *   other CONSTRAINT (CHECK, NOT NULL, FOREIGN KEY, DATATYPE)   -EINVAL
 *   FULL, or an I/O error with errno ENOSPC or EDQUOT           -ENOSPC
 *   READONLY                         -EROFS
 *   CORRUPT, NOTADB                  -EBADMSG
 *   PERM, AUTH                       -EACCES
 *   NOMEM                            -ENOMEM
 *   CANTOPEN                         the system errno when there is one
 *   anything else                    -EIO
 * `db` may be NULL (no system errno is consulted then). */
int reg_errno(sqlite3 *db, int rc);

/* Record "<context>: <sqlite message>" with error_set() and return the
 * mapped -errno for `rc`.  Call it right after the failing SQLite call, before
 * anything else touches the connection. */
int reg_fail(struct registry *reg, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Step a statement that returns no rows (INSERT, UPDATE, DELETE).  Returns
 * the number of rows changed, or reg_fail() with the formatted context. */
int reg_step_done(struct registry *reg, sqlite3_stmt *st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Run `sql` (a static string selecting by "id = ?1") for `id` and step to
 * its row: 0 with the statement in *ret (which the caller declares with
 * _cleanup_stmt_), -ENOENT "<what> '<id>' not found" when there is none, or
 * reg_fail() "cannot read <what> '<id>'". */
int reg_select_by_id(struct registry *reg, const char *sql, const char *what, const char *id,
                     sqlite3_stmt **ret);

/* Run `delete_sql` ("DELETE FROM <table> WHERE id = ?1", a static string)
 * for `id`, delete its tags, then run `also` (may be NULL) for whatever else
 * goes with it, all in one transaction (a savepoint inside the caller's).
 * `what` names the kind of resource in messages ("image").  -ENOENT when
 * there is no such row. */
int reg_delete_resource(struct registry *reg, const char *delete_sql, const char *what,
                        const char *id, int (*also)(struct registry *reg, const char *id));

/* Bind a C string, or NULL as SQL NULL.  The text must outlive the step. */
int reg_bind_text(sqlite3_stmt *st, int idx, const char *s);

/* Copy the text of column `col` into a new string, or NULL for SQL NULL. */
char *reg_column_strdup(sqlite3_stmt *st, int col);

/* Bind v when it is positive, else SQL NULL (times and counts whose 0
 * means "unset"). */
void reg_bind_positive(sqlite3_stmt *st, int idx, int64_t v);

/* Copy the text of column `col` into buf[size] ("" for SQL NULL); false
 * when it does not fit or holds a NUL. */
bool reg_column_copy(sqlite3_stmt *st, int col, char *buf, size_t size);

/* True when field[size] holds a NUL: a C string that fits its array. */
bool reg_terminated(const char *field, size_t size);

/* True when s holds no control character (below 0x20, or 0x7f). */
bool reg_printable(const char *s);

/* registry_open() for a database of another kind: the same settings
 * (WAL, synchronous=FULL, busy timeout, foreign keys), migrated to the
 * newest version of `schema`, which must outlive the handle. */
int reg_open(const char *path, const struct reg_schema *schema, struct registry **ret);

/* migrations.c: bring the schema up to date; refuses a database written by
 * a newer kiln or one that is not a kiln database of reg->schema's kind. */
int reg_migrate(struct registry *reg);
int reg_user_version(struct registry *reg, int *ret);

/* The migrations this build knows, for registry_schema_latest(). */
int reg_migrations_latest(void);
/* The newest version of `schema`. */
int reg_schema_latest(const struct reg_schema *schema);

/* A list query's rows collected into an array of `size`-byte elements
 * (reg_collect()).  `read` fills the zeroed element `slot` from the current
 * row of `st` and returns 0 or -errno (with error_set()); `release` frees the
 * first n elements and the array, and must accept an element a failed `read`
 * left zeroed or partly filled (reg_collect_release_free when the elements
 * own nothing).  `what` names the rows in the message of a failed step
 * ("cannot list <what>"). */
struct reg_collector {
    size_t size;
    int (*read)(struct registry *reg, sqlite3_stmt *st, void *slot, void *data);
    void (*release)(void *list, size_t n);
    const char *what;
};

/* Step `st` (prepared and bound by the caller, declared _cleanup_stmt_) to
 * its end, reading each row with c->read(reg, st, slot, data).  On success
 * *ret is the array (never NULL, even when empty; the caller owns it) and
 * *ret_n the number of rows.  On error everything read so far is released
 * and the reader's -errno, or reg_fail() "cannot list <what>", returned. */
int reg_collect(struct registry *reg, sqlite3_stmt *st, const struct reg_collector *c,
                void *data, void **ret, size_t *ret_n);
void reg_collect_release_free(void *list, size_t n);
/* reg_collect() of `sql` (a static string without parameters), prepared
 * here; c->read gets data NULL. */
int reg_list(struct registry *reg, const char *sql, const struct reg_collector *c, void **ret,
             size_t *ret_n);

/* true for a 12-digit account id. */
bool reg_account_is_valid(const char *s);

/* ---- the permission tables (permissions.c) ---- */

/* One permission table and the table of the resources it belongs to: the
 * SQL is constant text (the statement cache keys on it). */
struct reg_permission_table {
    const char *what;      /* the resource, in messages: "image" */
    const char *id_prefix; /* "ami" */
    const char *noun;      /* "launch permission" */
    const char *sql_exists, *sql_add, *sql_remove, *sql_clear, *sql_list, *sql_check;
};

extern const struct reg_permission_table reg_image_permissions;    /* image_launch_permissions */
extern const struct reg_permission_table reg_snapshot_permissions; /* snapshot_permissions */

/* -EINVAL naming it unless id is a well-formed id of t's resource. */
int reg_permission_id_check(const struct reg_permission_table *t, const char *id);
/* -EINVAL naming it unless (kind, value) is a valid permission: a user
 * with a 12-digit account id or the group "all". */
int reg_permission_validate(const struct reg_permission_table *t, const char *id,
                            enum registry_permission_kind kind, const char *value);

/* Add (adding one that exists is success) or remove (removing one that
 * does not is success) one permission, or clear them all, in a
 * transaction of its own (a savepoint in the caller's) that checks the
 * resource exists: -EINVAL bad id, kind or value; -ENOENT no such
 * resource. */
int reg_permission_add(struct registry *reg, const struct reg_permission_table *t, const char *id,
                       enum registry_permission_kind kind, const char *value);
int reg_permission_remove(struct registry *reg, const struct reg_permission_table *t,
                          const char *id, enum registry_permission_kind kind, const char *value);
int reg_permission_clear(struct registry *reg, const struct reg_permission_table *t,
                         const char *id);

/* The same writes without checks or a transaction of their own, for a
 * caller that has validated and holds a transaction (insert, update,
 * delete of the resource).  Return 0 or -errno. */
int reg_permission_write(struct registry *reg, const struct reg_permission_table *t,
                         const char *id, enum registry_permission_kind kind, const char *value,
                         bool add);
int reg_permission_delete_all(struct registry *reg, const struct reg_permission_table *t,
                              const char *id);

/* The permissions of resource `id`, users (by account id) then the group;
 * an empty list when there are none or no such resource.  *ret is an
 * array the caller frees with free().  -EBADMSG for a row that is not a
 * valid permission. */
int reg_permission_list(struct registry *reg, const struct reg_permission_table *t,
                        const char *id, struct registry_permission **ret, size_t *ret_n);

/* Whether a user permission names `account` (*ret_user) and whether the
 * group "all" is there (*ret_public); either may be NULL. */
int reg_permission_check(struct registry *reg, const struct reg_permission_table *t,
                         const char *id, const char *account, bool *ret_user, bool *ret_public);

/* Delete every create-volume permission of snapshot `id` (in the caller's
 * transaction; snapshot-permissions.c).  Returns 0 or -errno. */
int reg_snapshot_permissions_delete(struct registry *reg, const char *id);

/* 12 uniformly random digits from getrandom(), the first not zero.
 * Returns 0 or -errno. */
int reg_account_generate(char ret[ACCOUNT_ID_SIZE]);

#endif
