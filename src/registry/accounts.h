/* Accounts and their access keys: the global accounts database.
 *
 * Accounts are global, like IAM: one SQLite database DATA/accounts.db
 * (beside DATA/regions/, not inside a region) holds every account and its
 * access keys, with its own numbered migrations and PRAGMA application_id
 * "kacc" (docs/formats.md, "The accounts database").  It is opened with the
 * registry's settings: WAL, synchronous=FULL, a busy timeout, foreign keys.
 *
 * An account is a 12-digit id (first digit not zero) and a unique name of 1
 * to 64 letters, digits, '-', '_' and '.' (compared without case, as IAM
 * does).  An access key is "AKIA" and 16 characters of A-Z2-7, with a
 * secret of 40 characters of the base64 alphabet (240 random bits from
 * getrandom()).  SigV4 needs the secret itself to compute the signature, so
 * it is stored as is: the database file is created mode 0600 and its
 * permissions are its protection.
 *
 * Functions return >= 0 on success or -errno with a message recorded by
 * error_set(): ENOENT no such account or key, EEXIST the name is taken,
 * EINVAL a malformed name, id or profile, EBUSY the database was locked for
 * too long, EBADMSG a corrupt file or one that is not an accounts database,
 * EPROTO a schema written by a newer kiln, EIO anything else.
 *
 * Threads: every function may be called on one handle from several threads
 * at once.  The handle has one connection and a mutex around each call; a
 * key lookup is a single primary-key read, so serialising lookups costs
 * less than a connection per thread would, and a key created by
 * `kiln account create` in another process is seen by the next lookup.
 */
#ifndef KILN_REGISTRY_ACCOUNTS_H
#define KILN_REGISTRY_ACCOUNTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry/registry.h"

#define ACCOUNTS_DB_NAME "accounts.db"
#define ACCOUNT_DEFAULT_NAME "default"
#define ACCOUNT_NAME_MAX 64
#define ACCOUNT_ACCESS_KEY_ID_SIZE 21 /* "AKIA", 16 of A-Z2-7, NUL */
#define ACCOUNT_SECRET_SIZE 41        /* 40 of A-Za-z0-9+/, NUL */

struct accounts;

/* What a client signs with. */
struct account_credentials {
    char account_id[ACCOUNT_ID_SIZE];
    char access_key_id[ACCOUNT_ACCESS_KEY_ID_SIZE];
    char secret[ACCOUNT_SECRET_SIZE];
};

struct account_key {
    char id[ACCOUNT_ACCESS_KEY_ID_SIZE];
    bool active;
    int64_t created; /* unix milliseconds */
};

/* An account as listed: never a secret. */
struct account {
    char id[ACCOUNT_ID_SIZE];
    char name[ACCOUNT_NAME_MAX + 1];
    int64_t created;          /* unix milliseconds */
    struct account_key *keys; /* owned; oldest first */
    size_t n_keys;
};

/* DATA/accounts.db for data directory `data_dir`; a new string. */
char *accounts_path(const char *data_dir);

/* true for a valid account name (1 to 64 of A-Za-z0-9-_.). */
bool account_name_is_valid(const char *name);
/* true for "AKIA" and 16 characters of A-Z2-7. */
bool account_access_key_id_is_valid(const char *s);

/* Open (creating it mode 0600 if needed) the accounts database at `path`;
 * ":memory:" gives a private in-memory database for tests.  Runs pending
 * migrations.  The directory must exist. */
int accounts_open(const char *path, struct accounts **ret);
void accounts_free(struct accounts *a);

/* Create an account named `name` with a new id and its first access key,
 * in one transaction.  -EINVAL for a malformed name, -EEXIST if an account
 * has this name already.  *ret is written only on success. */
int accounts_create(struct accounts *a, const char *name, struct account_credentials *ret);

/* The credentials of the account named "default" (its oldest active key),
 * creating the account on first use; *ret_created (may be NULL) says
 * whether this call created it.  Several processes racing to create it end
 * with one account, and all of them return its credentials. */
int accounts_ensure_default(struct accounts *a, struct account_credentials *ret,
                            bool *ret_created);

/* The account named `name` (case-insensitive), with its key ids, into *ret;
 * release with account_release().  -ENOENT if there is none. */
int accounts_get_by_name(struct accounts *a, const char *name, struct account *ret);
void account_release(struct account *acct);

/* All accounts, ordered by creation time then id, each with its key ids.
 * *ret is an array of *ret_n accounts; free with accounts_list_free(). */
int accounts_list(struct accounts *a, struct account **ret, size_t *ret_n);
void accounts_list_free(struct account *list, size_t n);

/* The SigV4 verifier's question: the secret and the account of access key
 * `access_key_id`.  -ENOENT if the key is unknown, malformed or inactive (a
 * caller answers all three the same way).  Safe to call from several
 * threads on one handle.  The outputs are written only on success. */
int accounts_lookup_key(struct accounts *a, const char *access_key_id,
                        char ret_secret[ACCOUNT_SECRET_SIZE],
                        char ret_account_id[ACCOUNT_ID_SIZE]);

/* Write `c` to `path` in the aws CLI's credentials-file format:
 *
 *     [profile]
 *     aws_access_key_id = AKIA...
 *     aws_secret_access_key = ...
 *
 * `profile` NULL means "default"; otherwise it follows the rule of account
 * names (-EINVAL).  The file is replaced atomically, mode 0600: written to
 * an exclusive temporary file in the same directory, fsynced, renamed over
 * `path`, and the directory fsynced.  Other profiles in an existing file are
 * not kept. */
int accounts_write_credentials_file(const char *path, const struct account_credentials *c,
                                    const char *profile);

#endif
