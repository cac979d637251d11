/* Jobs and client tokens (migration 4, docs/formats.md).
 *
 * A job is work accepted and not yet done: a copy between regions whose
 * destination rows are registered `pending`.  Its row lives in the
 * destination region's registry, is inserted in the transaction that
 * registers the pending rows, and is deleted in the transaction that makes
 * them available (or failed).  So the jobs table holds exactly the copies
 * still to run, which is what `kiln serve` resumes at start.
 *
 * Each item names a source snapshot and the block map it had when the job
 * was accepted: the job reads that map, not the source row, and gc in the
 * source region treats it as a root (registry_job_source_maps()), so the
 * source may be deleted while the copy is pending.
 *
 * A client token remembers the first successful result of an idempotent
 * request (EC2's ClientToken) per account: the action, a digest of its
 * parameters and the id it returned.
 *
 * All functions return >= 0 or -errno with a message (error_set()), with
 * the errnos of registry.h.
 */
#ifndef KILN_REGISTRY_JOBS_H
#define KILN_REGISTRY_JOBS_H

#include <stddef.h>
#include <stdint.h>

#include "registry/registry.h"

#define JOB_REGION_SIZE 65 /* region names are at most 64 characters */
#define JOB_ITEMS_MAX 128  /* an image maps at most IMAGE_DEVICES_MAX snapshots */

enum registry_job_kind {
    JOB_COPY_IMAGE,    /* id is the new ami-, source_id the source image */
    JOB_COPY_SNAPSHOT, /* id is the new snap-, source_id the source snapshot */
    JOB_VOLUME_SNAPSHOT, /* id is the new snap-, source_id the vol- it was taken of;
                          * one item: source and target the new snap-, source_map_id
                          * the map captured at request time (migration 8) */
};

/* "copy-image", "copy-snapshot", "volume-snapshot"; NULL outside the enum. */
const char *registry_job_kind_to_string(enum registry_job_kind k);

struct registry_job_item {
    char source_snapshot_id[ID_MAX_SIZE];
    struct digest source_map_id;
    char target_snapshot_id[ID_MAX_SIZE];
};

struct registry_job {
    char id[ID_MAX_SIZE]; /* the resource the job makes */
    enum registry_job_kind kind;
    char owner[ACCOUNT_ID_SIZE];
    char source_region[JOB_REGION_SIZE];
    char source_id[ID_MAX_SIZE];
    int64_t created; /* unix ms */
    struct registry_job_item *items; /* owned by rows from _get and _list */
    size_t n_items;
};

/* Frees a row from _get or _list (items included); accepts NULL. */
void registry_job_free(struct registry_job *j);
void registry_job_list_free(struct registry_job **list, size_t n);

/* Insert a job and its items (1..JOB_ITEMS_MAX) in one transaction (a
 * savepoint inside the caller's).  -EEXIST id taken, -EINVAL a malformed
 * field.  Copies what it is given. */
int registry_job_insert(struct registry *reg, const struct registry_job *j);

/* One job with its items; *ret belongs to the caller.  -ENOENT absent. */
int registry_job_get(struct registry *reg, const char *id, struct registry_job **ret);

/* Every job, oldest first, with items.  Free with registry_job_list_free(). */
int registry_job_list(struct registry *reg, struct registry_job ***ret, size_t *ret_n);

/* Delete a job and its items.  -ENOENT absent. */
int registry_job_delete(struct registry *reg, const char *id);

/* The distinct source block maps of the jobs that read from region
 * `source_region`: gc roots for that region.  *ret (free()) may be NULL
 * when *ret_n is 0. */
int registry_job_source_maps(struct registry *reg, const char *source_region,
                             struct digest **ret, size_t *ret_n);

#define CLIENT_TOKEN_MAX 64
#define CLIENT_TOKEN_ACTION_MAX 64

struct registry_client_token {
    char action[CLIENT_TOKEN_ACTION_MAX + 1];
    struct digest params; /* what the caller hashed its parameters to */
    char resource_id[ID_MAX_SIZE];
    int64_t created; /* unix ms */
};

/* true for a token EC2 accepts: 1 to 64 printable ASCII characters. */
bool client_token_is_valid(const char *token);

/* The record of (account, token) into *ret.  -ENOENT when the token is
 * new, -EINVAL malformed account or token. */
int registry_client_token_get(struct registry *reg, const char *account, const char *token,
                              struct registry_client_token *ret);

/* Record (account, token) -> t.  -EEXIST when the account used the token
 * already (a concurrent request won: read it back). */
int registry_client_token_insert(struct registry *reg, const char *account, const char *token,
                                 const struct registry_client_token *t);

#endif
