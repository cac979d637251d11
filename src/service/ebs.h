/* Uploads through the EBS direct API (ebs.c): part of the service layer's
 * contract (service.h includes it), kept in its own header.  All functions
 * return >= 0 or -errno with a message recorded through error_set(). */
#ifndef KILN_SERVICE_EBS_H
#define KILN_SERVICE_EBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry/registry.h"
#include "snapshot/snapshot.h"

#define EBS_VOLUME_MAX_GIB 65536
#define EBS_CHECKSUM_SIZE 45 /* base64 of a SHA-256, with NUL */

struct region;
struct registry_tag;

struct service_ebs_start_options {
    const char *owner;            /* the caller's account */
    uint64_t volume_size_gib;     /* 1..EBS_VOLUME_MAX_GIB */
    const char *parent_id;        /* a completed snapshot the owner may read, or NULL */
    const char *description;      /* or NULL */
    const struct registry_tag *tags;
    size_t n_tags;
    int timeout_minutes;          /* 0: EBS_TIMEOUT_DEFAULT (60) */
    const char *client_token;     /* or NULL */
};

/* StartSnapshot: create the snapshot row (pending, progress 0, owned by
 * opts->owner, with its tags) and its staging directory, the directory
 * first (fsynced) so that a pending row always has one.  With a client
 * token the owner used before: the same parameters return that snapshot
 * again (1), other parameters are -EEXIST.  A parent must be a completed
 * snapshot the owner may read (service_ebs_readable()), else -ENOENT, or
 * -EINVAL when it is not completed or its volume is larger than the new
 * one.  *ret is the row (owned by the caller).  Returns 0 (new), 1 (the
 * token's snapshot) or -errno. */
int service_ebs_start(struct region *r, const struct service_ebs_start_options *opts,
                      struct registry_snapshot **ret);

/* PutSnapshotBlock: check that `data` is EBS_BLOCK_SIZE bytes (-EMSGSIZE)
 * whose SHA-256 is `checksum` (-EINVAL, "checksum mismatch") before
 * anything else; then that the snapshot exists and belongs to `account`
 * (-ENOENT), is pending (-EROFS) and has not timed out (-ETIMEDOUT), and
 * that `index` lies inside its volume (-ERANGE); only then stage the
 * block with its digest (replacing an earlier one of the same index),
 * fsynced and renamed into place: when this returns 0 the block survives
 * a crash.  `progress` (0..100, or -1) is recorded on the row.
 * *ret_checksum gets the server's own checksum (base64). */
int service_ebs_put_block(struct region *r, const char *account, const char *snap_id,
                          uint64_t index, const void *data, size_t len,
                          const struct digest *checksum, int progress,
                          char ret_checksum[EBS_CHECKSUM_SIZE]);

/* CompleteSnapshot: with the upload locked against new blocks, check
 * `changed_blocks` against the number of staged blocks and, when
 * `aggregate` is given, the LINEAR checksum (SHA-256 over the blocks'
 * digests in index order, raw, or their base64 texts) (-EINVAL; nothing
 * changes); re-verify every staged block (-EBADMSG); then import the
 * volume (staged blocks over the parent's content; zeros where neither)
 * through the chunk store exactly as a file import (chunks, store_sync(),
 * block map), and the row turns completed (progress 100); the staging
 * directory goes last.  A completed snapshot completes again as a no-op;
 * one past its Timeout is cancelled (-ETIMEDOUT).  *ret_state (may be
 * NULL) is the resulting state. */
int service_ebs_complete(struct region *r, const char *account, const char *snap_id,
                         uint64_t changed_blocks, const struct digest *aggregate,
                         enum snapshot_state *ret_state);

/* The parent block maps of the region's pending uploads (recorded by
 * StartSnapshot), with their chunks, inserted into `live`: gc roots, so a
 * parent snapshot deleted during an upload leaves what its completion
 * reads.  A map that is gone is skipped (that completion will fail); an
 * unreadable one is -EBADMSG (gc stops rather than sweep). */
struct digest_map;
int service_ebs_roots(struct region *r, struct digest_map *live);

/* Cancel uploads past their Timeout (no block written and no completion
 * for that long): the row turns error with a message and the staged
 * blocks are removed.  Also removes staging directories of snapshots that
 * are no longer pending (a completion or deletion that stopped half-way).
 * With `snap_id`, only that snapshot is checked (and its failure is
 * returned); without, an upload that cannot be checked is logged and
 * skipped, so one damaged upload does not stop the sweep.  *ret_n (may be
 * NULL): how many were cancelled. */
int service_ebs_expire(struct region *r, const char *snap_id, size_t *ret_n);

/* Whether `account` may read snapshot s through the EBS direct API: it
 * owns it or a createVolumePermission names it (the EBS direct API does
 * not serve public snapshots to others). */
int service_ebs_readable(struct region *r, const struct registry_snapshot *s,
                         const char *account, bool *ret);

/* The 512 KiB blocks of m that hold data, from index `start` on, at most
 * `max`: *ret (owned by the caller) and *ret_n; *ret_more when there are
 * more after them. */
int service_ebs_blocks(const struct blockmap *m, uint64_t start, size_t max, uint64_t **ret,
                       size_t *ret_n, bool *ret_more);

/* A page of ListChangedBlocks: the 512 KiB blocks from index `start` on
 * whose content differs between a and b (bytes past the end of the shorter
 * volume read as zeros), at most `max`, into *ret (owned by the caller) and
 * *ret_n.  With a NULL, every block of b that holds data
 * (service_ebs_blocks()).  The maps name the candidates; only the
 * candidates up to the end of this page are read and compared, so a page
 * costs what it lists, not the whole difference.  *ret_more when
 * candidates are left after the page (the next page may come out empty). */
int service_ebs_changed_blocks(struct region *r, const struct blockmap *a,
                               const struct blockmap *b, uint64_t start, size_t max,
                               uint64_t **ret, size_t *ret_n, bool *ret_more);

/* Whether 512 KiB block `index` of m holds data. */
bool service_ebs_block_present(const struct blockmap *m, uint64_t index);

/* Read 512 KiB block `index` of m (zeros where it holds none and past the
 * end of the volume) into buf (EBS_BLOCK_SIZE bytes).  -ERANGE past the
 * volume; -EBADMSG for a chunk the store lacks or that fails its digest
 * (damage, never "not found"). */
int service_ebs_read_block(struct region *r, const struct blockmap *m, uint64_t index,
                           void *buf);

/* Whether snapshots a and b are of one lineage: following parent ids from
 * each reaches a common snapshot. */
int service_ebs_related(struct region *r, const char *a, const char *b, bool *ret);

/* The region's secret for block and page tokens (32 random bytes, made on
 * first use and kept in the registry's settings). */
int service_ebs_token_key(struct region *r, uint8_t ret[32]);

/* Base64 of a SHA-256 and back: parsing is strict (44 characters,
 * canonical), -EINVAL otherwise. */
void service_ebs_checksum_format(const struct digest *d, char ret[EBS_CHECKSUM_SIZE]);
int service_ebs_checksum_parse(const char *s, struct digest *ret);

#endif
