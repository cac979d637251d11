/* The registry: the single source of truth for metadata in one region.
 *
 * SQLite in WAL mode, one database per region (DATA/regions/<r>/registry.db),
 * schema created and upgraded by numbered migrations (PRAGMA user_version).
 * Every write is a transaction; a row becomes visible only when everything it
 * points at is durable (the caller's job: chunks, then block map, then row).
 *
 * Functions return >= 0 on success or -errno (ENOENT no such row, EEXIST
 * duplicate id, EBUSY database locked for too long, EIO any other SQLite
 * failure, with the SQLite message recorded through error_set()).  Where
 * the house vocabulary (docs/errors.md) has a better word, it is used:
 * EINVAL a value the schema refuses, ENOSPC disk or quota full, EROFS
 * read-only database or a completed snapshot's block map, EBADMSG a corrupt
 * file or one that is not a kiln registry, EPROTO a schema written by a
 * newer kiln.  Every error is recorded through error_set().
 *
 * Durability: synchronous=FULL, so a row is on disk when the call (or the
 * registry_commit() of an explicit transaction) returns.  The schema and its
 * migration rule are documented in docs/registry-schema.md.
 *
 * A registry handle is used by one thread at a time; several handles (in
 * several threads or processes) may share one database file.
 */
#ifndef KILN_REGISTRY_REGISTRY_H
#define KILN_REGISTRY_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cleanup.h"
#include "common/hash.h"
#include "common/ids.h"

#define ACCOUNT_ID_SIZE 13 /* 12 digits and a NUL */

struct registry;

/* Open (creating if needed) the database at `path`; ":memory:" gives a
 * private in-memory database for tests.  Runs pending migrations. */
int registry_open(const char *path, struct registry **ret);
void registry_free(struct registry *reg);

/* The schema version the database is at after migrations. */
int registry_schema_version(struct registry *reg);

/* The newest schema version this build knows (what registry_open() migrates
 * to).  A database at a newer version is refused with -EPROTO. */
int registry_schema_latest(void);

/* How long a call waits for another writer before failing with -EBUSY
 * (default 5000 ms). */
int registry_set_busy_timeout(struct registry *reg, unsigned ms);

/* Explicit transactions (BEGIN IMMEDIATE / COMMIT / ROLLBACK).  Calls made
 * outside an explicit transaction run in their own.
 *
 * Transactions nest: a begin inside a transaction opens a savepoint, and
 * its commit or rollback ends only that savepoint, so a service function
 * can wrap its steps in begin/commit whether or not its caller already
 * did.  Only the outermost commit makes the changes durable and visible.
 * registry_rollback() outside any transaction (for instance after SQLite
 * rolled back on its own when a commit failed) is success, so that
 * "if (registry_commit(reg) < 0) registry_rollback(reg);" is always right. */
int registry_begin(struct registry *reg);
int registry_commit(struct registry *reg);
int registry_rollback(struct registry *reg);

/* End the transaction the caller's registry_begin() opened with the
 * outcome `r` of its work: commit when r >= 0, else roll back.  Returns r
 * (>= 0) when the commit succeeded, else the first error: the work's, or
 * the commit's (after which it rolls back too). */
int registry_end(struct registry *reg, int r);

/* true between registry_begin() and its matching outermost commit or
 * rollback. */
bool registry_in_transaction(struct registry *reg);

/* Small named settings of this region (the default account, later API
 * switches such as block-public-access state).  Keys and values are text.
 * registry_setting_get: *ret is owned by the caller; -ENOENT if unset.
 * registry_setting_set inserts or replaces. */
int registry_setting_get(struct registry *reg, const char *key, char **ret);
int registry_setting_set(struct registry *reg, const char *key, const char *value);


enum snapshot_state {
    SNAPSHOT_PENDING,
    SNAPSHOT_COMPLETED,
    SNAPSHOT_ERROR,
};

/* "pending", "completed", "error"; NULL for a value outside the enum. */
const char *snapshot_state_to_string(enum snapshot_state s);
/* 0, or -EINVAL for an unknown string. */
int snapshot_state_from_string(const char *s, enum snapshot_state *ret);

struct registry_snapshot {
    char id[ID_MAX_SIZE];             /* snap-<17 hex> */
    char owner[ACCOUNT_ID_SIZE];      /* 12-digit account id */
    enum snapshot_state state;
    int progress;                     /* 0..100 */
    uint64_t volume_size;             /* bytes */
    uint32_t volume_size_gib;         /* rounded up, as EC2 reports VolumeSize */
    char *description;                /* owned, may be NULL */
    int64_t start_time;               /* unix milliseconds */
    int64_t completion_time;          /* unix milliseconds, 0 while pending */
    bool has_map;
    struct digest map_id;             /* block map, valid when has_map */
    char parent_id[ID_MAX_SIZE];      /* "" when none */
    char *state_message;              /* owned, may be NULL */
    char volume_id[ID_MAX_SIZE];      /* the volume it was taken of; "" when none
                                       * (imported, copied, uploaded; migration 8) */
};

/* Frees the strings and the struct itself (a row from _get or _list).
 * Accepts NULL. */
void registry_snapshot_free(struct registry_snapshot *s);
DEFINE_CLEANUP_FREE(struct registry_snapshot, registry_snapshot_free)

/* Insert a new row.  -EEXIST if the id is taken; -EINVAL if a field is out
 * of range (malformed id, owner or parent, progress outside 0..100, a
 * completed snapshot without a block map, a size above INT64_MAX).  The
 * row does not take ownership of s's strings. */
int registry_snapshot_insert(struct registry *reg, const struct registry_snapshot *s);

/* Look up one row; *ret is owned by the caller.  -ENOENT if absent. */
int registry_snapshot_get(struct registry *reg, const char *id, struct registry_snapshot **ret);

/* Update state, progress, map, completion time and state message of an
 * existing row from `s` (matched by s->id).  -ENOENT if absent.  Other
 * fields of `s` are ignored.  A completed snapshot's block map is
 * immutable: changing or clearing it is -EROFS (its state, progress and
 * message may still change, e.g. to error after fsck finds damage). */
int registry_snapshot_update(struct registry *reg, const struct registry_snapshot *s);

/* Delete a row, its tags and its create-volume permissions
 * (snapshot-permissions.h).  -ENOENT if absent. */
int registry_snapshot_delete(struct registry *reg, const char *id);

/* All rows ordered by start time then id.  *ret is an array of *ret_n
 * owned rows; free with registry_snapshot_list_free(). */
int registry_snapshot_list(struct registry *reg, struct registry_snapshot ***ret, size_t *ret_n);
void registry_snapshot_list_free(struct registry_snapshot **list, size_t n);

/* How many snapshot rows refer to block map `map_id` (0 is not an error):
 * whether deleting a row leaves its block map referenced. */
int registry_snapshots_using_map(struct registry *reg, const struct digest *map_id,
                                 size_t *ret_count);

/* Tags on any resource id (snap-, ami-, vol-, ...).  Keys are unique per
 * resource; setting an existing key replaces its value.  The registry does
 * not check that the resource exists (the caller validates the request);
 * deleting a snapshot row deletes its tags.  A NULL value is stored as ""
 * (EC2's CreateTags default); an empty key is -EINVAL.  Lists are ordered
 * by key; registry_tag_list_free() frees the strings and the array. */
struct registry_tag {
    char *key;
    char *value;
};
int registry_tag_set(struct registry *reg, const char *resource_id, const char *key,
                     const char *value);
/* Delete the tag with `key`; when value is non-NULL, only if it matches.
 * Deleting an absent tag is success (as EC2's DeleteTags). */
int registry_tag_delete(struct registry *reg, const char *resource_id, const char *key,
                        const char *value);
int registry_tag_list(struct registry *reg, const char *resource_id, struct registry_tag **ret,
                      size_t *ret_n);
void registry_tag_list_free(struct registry_tag *tags, size_t n);
/* The ids of the resources whose id starts with `prefix`- ("i", "vol",
 * "snap", "ami") that carry tag key=value, sorted: *ret an array of
 * strings, each and the array the caller's to free() (never NULL on
 * success). */
int registry_tag_find(struct registry *reg, const char *key, const char *value,
                      const char *prefix, char ***ret, size_t *ret_n);

#endif
