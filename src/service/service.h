/* Service functions: the operations users ask for, over one region's
 * registry and chunk store.  The command line calls them today; the API
 * server and the baker call the same functions later.  Nothing above this
 * layer touches SQLite or chunk files.
 *
 * Data directory layout (docs/architecture.md):
 *   DATA/regions/<region>/registry.db   the region's registry
 *   DATA/regions/<region>/store/        its chunk store
 *
 * All functions return >= 0 or -errno with a message recorded through
 * error_set().
 */
#ifndef KILN_SERVICE_SERVICE_H
#define KILN_SERVICE_SERVICE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "registry/registry.h"
#include "registry/volumes.h"
#include "snapshot/snapshot.h"
#include "store/store.h"

#define DEFAULT_REGION "us-east-1"

struct region {
    char *name;
    char *data_dir;
    char *dir;
    struct store *store;
    struct registry *reg;
    bool read_only;
};

/* The data directory: $KILN_DATA_DIR, else $XDG_DATA_HOME/kiln, else
 * ~/.local/share/kiln.  Returns a new string. */
char *service_default_data_dir(void);

/* true when `name` is a valid region name: lowercase letters, digits and
 * dashes, 1 to 32 characters, starting with a letter. */
bool region_name_is_valid(const char *name);

/* Open a region of the data directory (created when !read_only).  A
 * read-only open fails with -ENOENT if the region does not exist. */
int region_open(const char *data_dir, const char *name, bool read_only, struct region **ret);
void region_free(struct region *r);
DEFINE_CLEANUP_FREE(struct region, region_free)

/* The data directory's default account (DATA/accounts.db, created with its
 * first access key on first use): the owner of what the offline command
 * line creates, and the account whose credentials `kiln serve` writes out
 * on its first start. */
int service_default_account(const char *data_dir, char ret[ACCOUNT_ID_SIZE]);

/* The provider account: kiln's equivalent of the `amazon` owner, which owns
 * the base images `kiln base-image build` registers (public).  An account
 * named SERVICE_PROVIDER_ACCOUNT, created on first use (its access key is
 * not needed by anyone; a race between processes ends with one account). */
#define SERVICE_PROVIDER_ACCOUNT "kiln"
int service_provider_account(const char *data_dir, char ret[ACCOUNT_ID_SIZE]);

/* Load a snapshot's row and block map (either out-parameter may be NULL). */
int service_snapshot_get(struct region *r, const char *id, struct registry_snapshot **ret_row,
                         struct blockmap **ret_map);

struct service_import_options {
    const char *owner;       /* account id; NULL: the default account */
    enum image_format format;
    const char *parent_id;   /* snap-..., or NULL */
    const char *description; /* or NULL */
    bool progress;
    int threads;
};

/* Import a disk image and register it as a completed snapshot.  Bad input
 * is refused before anything is written; on failure nothing is registered
 * (written chunks are reclaimed by gc). */
int service_snapshot_import(struct region *r, const char *path,
                            const struct service_import_options *opts,
                            char ret_id[ID_MAX_SIZE], struct import_stats *ret_stats);

struct service_image_import_options {
    const char *name;         /* required: the image name */
    const char *description;  /* or NULL */
    const char *architecture; /* NULL: x86_64 */
    const char *boot_mode;    /* legacy-bios, uefi, uefi-preferred or NULL */
    const char *owner;        /* account id; NULL: the default account */
    bool is_public;           /* launch permission for everyone (group "all") */
    enum image_format format;
    bool progress;
    int threads;
};

/* Import a disk image as a snapshot and register an available image whose
 * root device (/dev/xvda, EBS, gp3) maps it.  Nothing is registered when
 * any step fails (images.c). */
int service_image_import(struct region *r, const char *path,
                         const struct service_image_import_options *opts,
                         char ret_image_id[ID_MAX_SIZE], char ret_snap_id[ID_MAX_SIZE]);

/* -EEXIST when `owner` has an image called `name` in r that is not
 * deregistered (images.c). */
int image_name_check_free(struct region *r, const char *owner, const char *name);

/* Delete a snapshot's registry row; its chunks are freed by the next gc. */
int service_snapshot_delete(struct region *r, const char *id);

/* ---- copies between regions (copy.c), run as jobs (jobs.c) ---- */

/* A copy is accepted in one call (_start: the new rows registered
 * `pending` and a job recorded, in one destination transaction) and done
 * later by service_job_run(), normally on a `kiln serve` job runner
 * thread.  docs/architecture.md, "Jobs". */

struct copy_stats {
    uint64_t chunks_copied;  /* chunks written to the destination */
    uint64_t bytes_copied;   /* their plaintext bytes */
    uint64_t chunks_present; /* extents whose chunk the destination had */
    uint64_t bytes_present;
};

/* An idempotent request's ClientToken (registry/jobs.h): recorded with the
 * new id in the transaction that accepts the copy. */
struct service_client_token {
    const char *account;
    const char *token;
    const char *action;   /* "CopyImage" */
    struct digest params; /* the caller's digest of the request */
};

struct registry_tag;

struct service_snapshot_copy_options {
    const char *owner;                /* the new snapshot's account id */
    const char *description;          /* or NULL */
    const struct registry_tag *tags;  /* put on the new snapshot */
    size_t n_tags;
};

/* Accept a copy of completed snapshot `snap_id` of region `src` into `dst`
 * (opened writable): register a new pending snapshot (same volume size,
 * no parent) and a job that copies the source's current block map.
 * Returns 0 and the new id, or -errno with nothing registered (-EINVAL
 * the source is not completed, -ENOENT no such snapshot). */
int service_snapshot_copy_start(struct region *src, const char *snap_id, struct region *dst,
                                const struct service_snapshot_copy_options *opts,
                                char ret_id[ID_MAX_SIZE]);

struct service_image_copy_options {
    const char *owner;       /* the new image's account id */
    const char *name;        /* required */
    const char *description; /* or NULL */
    const struct registry_tag *image_tags; /* put on the new image */
    size_t n_image_tags;
    const struct registry_tag *snapshot_tags; /* put on every new snapshot */
    size_t n_snapshot_tags;
    const struct service_client_token *token; /* or NULL */
};

/* Accept a copy of available image `image_id` of `src` into `dst`: in one
 * destination transaction, a pending snapshot for every distinct mapped
 * snapshot, a pending image (new id, the source's attributes, mappings to
 * the new snapshots, source_image_id and source_region set), the job, and
 * the client token when given.  Returns 0 and the new image id, or -errno
 * with nothing registered: -EEXIST when the owner already has an image of
 * that name in `dst`; -EACCES when opts->owner does not own a mapped
 * snapshot and no createVolumePermission names it (or "all"): the image's
 * launch permission does not give its storage away; -EALREADY when
 * opts->token was recorded by a concurrent request in the meantime (read it
 * back). */
int service_image_copy_start(struct region *src, const char *image_id, struct region *dst,
                             const struct service_image_copy_options *opts,
                             char ret_id[ID_MAX_SIZE]);

/* Run job `job_id` of region `dst` (opened writable): copy the chunks of
 * every source map that dst lacks (verified as they are read), sync, write
 * the maps, then in one transaction mark the snapshots completed, the
 * image available and delete the job.  Rows deleted meanwhile are
 * skipped.  `stop` (may be NULL) is polled between chunks; `chunk_delay_us`
 * slows each copied chunk down (tests of interruption; 0 normally).
 * Returns:
 *    0  done (or nothing left to do)
 *    1  the copy failed: the snapshots are `error` and the image `failed`
 *       with a state reason, the job deleted (the failure is in the rows)
 *   -ECANCELED  stopped at a safe point; the job stays, to be resumed
 *   -EBUSY  the destination store (a gc) or the registry stayed locked;
 *           the job stays, to be tried again
 *   other -errno  the registry could not be updated; the job stays */
int service_job_run(struct region *dst, const char *job_id, const atomic_bool *stop,
                    unsigned chunk_delay_us, struct copy_stats *ret);

/* The job runner of `kiln serve` (jobs.c): `threads` workers that run the
 * jobs of the regions served, oldest first.  At start it resumes every job
 * left in their registries (a stopped or killed serve); afterwards it
 * looks for new jobs when service_jobs_notify() is called and every few
 * seconds.  One runner per data directory runs jobs (DATA/jobs.lock); a
 * second serve's runner waits for that lock. */
struct job_runner;

struct job_runner_options {
    const char *data_dir;
    const char *const *regions; /* the regions served */
    size_t n_regions;
    int threads;                /* 1..64 */
    unsigned chunk_delay_us;    /* see service_job_run() */
};

int job_runner_new(const struct job_runner_options *o, struct job_runner **ret);

/* Wake this process's runner (if any) to look for new jobs now. */
void service_jobs_notify(void);

/* Ask every worker to stop at its next safe point (between chunks) and
 * wait for them; running jobs stay in the registry and resume at the next
 * start.  Then free.  Accepts NULL. */
void job_runner_free(struct job_runner *jr);

/* The block maps that pending jobs of any region of the data directory
 * read from region r, with their chunks, inserted into `live` (gc roots).
 * A map that is gone is skipped (its job will fail); an unreadable one is
 * -EBADMSG. */
struct digest_map;
int service_job_roots(struct region *r, struct digest_map *live);

/* ---- fsck (fsck.c) ---- */

enum fsck_problem {
    FSCK_MAP_MISSING,
    FSCK_MAP_CORRUPT,
    FSCK_CHUNK_MISSING,
    FSCK_CHUNK_CORRUPT,
    FSCK_ORPHAN_CORRUPT, /* a damaged chunk no snapshot uses */
    FSCK_ORPHAN_MAP_CORRUPT, /* a damaged block map no snapshot uses */
};

struct fsck_damage {
    enum fsck_problem problem;
    const char *snapshot_id; /* NULL for the FSCK_ORPHAN_* problems */
    struct digest object;    /* the map or chunk */
    uint64_t offset;         /* byte offset in the volume, chunk problems */
    uint64_t length;
};

struct fsck_report {
    uint64_t snapshots, maps, chunks, bytes;
    uint64_t damaged_snapshots, damaged_objects;
    uint64_t removed; /* with repair */
};

typedef void (*fsck_damage_fn)(const struct fsck_damage *d, void *userdata);

/* Reread every block map and chunk, verifying every digest; call fn for
 * every damaged block of every snapshot and every damaged chunk.  With
 * `repair`, damaged chunks are removed so that a re-import can write them
 * again (snapshots that used them stay damaged).  Returns 0 if clean, 1 if
 * damage was found, -errno if fsck itself failed.  `progress`: draw a bar
 * on a terminal. */
int service_fsck(struct region *r, bool repair, bool progress, fsck_damage_fn fn,
                 void *userdata, struct fsck_report *ret);

/* ---- gc (gc.c) ---- */

struct gc_report {
    uint64_t chunks_kept, chunks_freed, bytes_freed;
    uint64_t maps_freed;
    uint64_t temporaries_freed, temporary_bytes_freed;
    uint64_t volume_dirs_freed; /* directories of deleted volumes */
};

/* Mark every chunk reachable from a registered snapshot's map, sweep the
 * rest that are older than `grace` seconds.  Takes the store's exclusive
 * lock, so it waits for running imports. */
int service_gc(struct region *r, bool dry_run, time_t grace, struct gc_report *ret);

/* ---- du (du.c) ---- */

struct du_snapshot {
    struct registry_snapshot *row;
    uint64_t data_bytes;   /* non-hole bytes */
    uint64_t unique_bytes; /* stored bytes only this snapshot uses */
};

struct du_report {
    struct du_snapshot *snaps;
    size_t n;
    uint64_t logical_bytes;    /* sum of volume sizes */
    uint64_t data_bytes;       /* sum of non-hole bytes */
    uint64_t unique_plain;     /* plaintext bytes of distinct chunks */
    uint64_t stored_bytes;     /* encoded bytes of all objects in the store */
    uint64_t chunks;
    double dedup_ratio;        /* data_bytes / unique_plain */
    double compression_ratio;  /* unique_plain / stored chunk bytes */
};

int service_du(struct region *r, struct du_report *ret);
void du_report_release(struct du_report *d);

/* ---- volumes (volumes.c) ---- */

struct volume;               /* volume/volume.h */
struct volume_snapshot_stats;

/* A volume's directory: DATA/regions/<r>/volumes/<id> (a new string). */
char *service_volume_dir(struct region *r, const char *id);

/* The row of volume `id`; -ENOENT naming the region if absent. */
int service_volume_get(struct region *r, const char *id, struct registry_volume **ret);

struct service_volume_create_options {
    const char *owner;             /* account id; NULL: the default account */
    const char *snapshot_id;       /* snap-..., or NULL for a blank volume */
    uint32_t size_gib;             /* 0: the snapshot's size (required if blank) */
    const char *availability_zone; /* NULL: the region's zone "<region>a" */
    const char *volume_type;       /* NULL or "gp3" */
    int iops, throughput;          /* 0: gp3's defaults (3000, 125 MiB/s) */
    const struct registry_tag *tags; /* set in the transaction that inserts the row */
    size_t n_tags;
};

/* Create an available volume: an empty directory and a row; no data is
 * copied (the volume reads its snapshot lazily).  -EINVAL for a size below
 * the snapshot's or above 16384 GiB, an unknown zone or type, a snapshot
 * that is not completed; -ENOENT for an unknown snapshot. */
int service_volume_create(struct region *r, const struct service_volume_create_options *o,
                          char ret_id[ID_MAX_SIZE]);

/* Delete a volume: row, then directory.  -EBUSY while it is attached to an
 * instance or open by another process. */
int service_volume_delete(struct region *r, const char *id);

/* Grow a volume to `size_gib` (ModifyVolume).  Smaller is -EINVAL; the same
 * size is success.  A handle open elsewhere sees the new size on reopen. */
int service_volume_grow(struct region *r, const char *id, uint32_t size_gib);

/* Open volume `id` (flags from volume/volume.h; writable opens create the
 * volume's files on first use).  Close with volume_close(); the region must
 * outlive the handle.  This is what the NBD server serves. */
int service_volume_open(struct region *r, const char *id, unsigned flags, struct volume **ret);

/* A read-only view of completed snapshot `snap_id` through the volume read
 * path and a private cache (`kiln nbd SNAPSHOT`).  The region must outlive
 * the handle. */
int service_volume_open_snapshot(struct region *r, const char *snap_id, struct volume **ret);

struct service_volume_snapshot_options {
    const char *owner;       /* NULL: the volume's owner */
    const char *description; /* or NULL */
    const struct registry_tag *tags; /* set in the transaction that inserts the row */
    size_t n_tags;
};

/* CreateSnapshot of a volume: incremental (volume_snapshot()), registered
 * pending, then completed with its map; its parent is the volume's
 * snapshot.  Opens the volume read-only: -EBUSY when another process has it
 * open for writing (use service_volume_snapshot_open() with that handle).
 * On failure no row remains. */
int service_volume_snapshot(struct region *r, const char *vol_id,
                            const struct service_volume_snapshot_options *o,
                            char ret_id[ID_MAX_SIZE], struct volume_snapshot_stats *ret);
/* The same over a handle the caller has open (writes are held off while
 * the map is built). */
int service_volume_snapshot_open(struct region *r, struct volume *v, const char *vol_id,
                                 const struct service_volume_snapshot_options *o,
                                 char ret_id[ID_MAX_SIZE], struct volume_snapshot_stats *ret);

/* CreateSnapshot of a volume as EC2 answers it: returns at once with the
 * new snapshot `pending`; the job runner of `kiln serve` completes it
 * (service_volume_snapshot_job_run()).  The data is captured when this is
 * called (point in time): the volume's written blocks are chunked and
 * stored and the block map saved here (cost proportional to the data
 * written since the volume was created, never to its size), then the
 * pending row and a JOB_VOLUME_SNAPSHOT job naming that map are committed
 * in one transaction, all under the store's lock held shared.  Writes that
 * come after this returns are not in the snapshot.  -EBUSY when another
 * process has the volume open for writing (its directory lock: kiln cannot
 * hold that process's writes off).  On failure no row and no job remain. */
int service_volume_snapshot_start(struct region *r, const char *vol_id,
                                  const struct service_volume_snapshot_options *o,
                                  char ret_id[ID_MAX_SIZE]);

/* Run a JOB_VOLUME_SNAPSHOT job (called by service_job_run() for that
 * kind): read back every chunk the captured map added over its parent
 * (store_chunk_get() checks each digest), updating the row's progress,
 * then, under the store's lock shared, one transaction: the row
 * `completed` with the map, the job deleted.  A chunk or map that is
 * missing or corrupt turns the row `error` with a StateMessage naming it,
 * and deletes the job.  Returns as service_job_run(). */
struct registry_job;
int service_volume_snapshot_job_run(struct region *r, const struct registry_job *job,
                                    const atomic_bool *stop, unsigned chunk_delay_us);

/* gc: mark the block maps volumes were created from, and their chunks. */
struct digest_map;
int service_volume_roots(struct region *r, struct digest_map *live);

/* gc: remove volume directories that have no row (a delete interrupted
 * between the row and the directory).  Call with the store's lock held
 * exclusively (creation holds it shared from directory to row). */
int service_volume_sweep_orphans(struct region *r, bool dry_run, uint64_t *ret_removed);

/* ---- the EBS direct API's uploads (ebs.c) ---- */
#include "service/ebs.h"

#endif
