/* Uploads through the EBS direct API: the `ebs_uploads` table of schema
 * versions 5 and 7 (docs/formats.md).  A row records, for a snapshot
 * started with StartSnapshot, what a repeated StartSnapshot with the same
 * ClientToken must find (the token and a digest of the request's
 * parameters) and the Timeout after which a snapshot left pending is
 * cancelled.  The row outlives the upload, so that a retried StartSnapshot
 * still answers with the same snapshot; it may outlive the snapshot too
 * (DeleteSnapshot does not know of it), which the service treats as "no
 * such token".
 *
 * The functions follow registry.h's contract: >= 0 or -errno recorded
 * through error_set() (EINVAL a malformed value, EEXIST a token the owner
 * already used, ENOENT no such row). */
#ifndef KILN_REGISTRY_EBS_UPLOADS_H
#define KILN_REGISTRY_EBS_UPLOADS_H

#include <stdbool.h>
#include <stddef.h>

#include "registry/registry.h"

#define EBS_CLIENT_TOKEN_MAX 255
#define EBS_TIMEOUT_MIN 10   /* minutes */
#define EBS_TIMEOUT_MAX 4320
#define EBS_TIMEOUT_DEFAULT 60

struct registry_ebs_upload {
    char snapshot_id[ID_MAX_SIZE];
    char owner[ACCOUNT_ID_SIZE];
    char client_token[EBS_CLIENT_TOKEN_MAX + 1]; /* "" when none */
    char request_digest[DIGEST_HEX_SIZE];        /* hex SHA-256 of the parameters */
    int timeout_minutes;                         /* EBS_TIMEOUT_MIN..MAX */
    /* The block map of ParentSnapshotId when the upload started (schema
     * version 7; false for uploads without a parent, and for those started
     * by an older kiln). */
    bool has_parent_map;
    struct digest parent_map_id;
};

/* Insert a row (in the caller's transaction when one is open).  -EEXIST
 * when the snapshot has a row or the owner already used the token. */
int registry_ebs_upload_insert(struct registry *reg, const struct registry_ebs_upload *u);

/* The row of snapshot `snapshot_id`; -ENOENT if none. */
int registry_ebs_upload_get(struct registry *reg, const char *snapshot_id,
                            struct registry_ebs_upload *ret);

/* The row `owner` made with client token `token`; -ENOENT if none. */
int registry_ebs_upload_find_token(struct registry *reg, const char *owner, const char *token,
                                   struct registry_ebs_upload *ret);

/* Delete the row of snapshot `snapshot_id` (absent is success). */
int registry_ebs_upload_delete(struct registry *reg, const char *snapshot_id);

/* The distinct parent block maps of the uploads whose snapshot is still
 * pending: gc roots (the parent snapshot may be deleted meanwhile).  *ret
 * (free()) may be NULL when *ret_n is 0. */
int registry_ebs_upload_parent_maps(struct registry *reg, struct digest **ret, size_t *ret_n);

/* The uploads whose snapshot is still pending, by snapshot id: *ret is an
 * array of *ret_n rows the caller frees with free(). */
int registry_ebs_uploads_pending(struct registry *reg, struct registry_ebs_upload **ret,
                                 size_t *ret_n);

#endif
