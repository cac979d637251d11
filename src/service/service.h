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

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "registry/registry.h"
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

/* Delete a snapshot's registry row; its chunks are freed by the next gc. */
int service_snapshot_delete(struct region *r, const char *id);

/* ---- copies between regions (copy.c) ---- */

struct copy_stats {
    uint64_t chunks_copied;  /* chunks written to the destination */
    uint64_t bytes_copied;   /* their plaintext bytes */
    uint64_t chunks_present; /* extents whose chunk the destination had */
    uint64_t bytes_present;
};

/* Copy completed snapshot `snap_id` of region `src` into region `dst`
 * (opened writable) as a new completed snapshot owned by `owner`, with the
 * same volume size, `description` (may be NULL) and no parent.  Only the
 * chunks the destination lacks are read (and verified) from the source and
 * written; a corrupt source chunk fails the copy (-EBADMSG, naming it).
 * Chunks, then store_sync(), then the block map, then the row: nothing is
 * registered on failure (gc reclaims what was written).  *ret (may be
 * NULL) receives what was copied. */
int service_snapshot_copy(struct region *src, const char *snap_id, struct region *dst,
                          const char *owner, const char *description,
                          char ret_id[ID_MAX_SIZE], struct copy_stats *ret);

struct registry_tag;

struct service_image_copy_options {
    const char *owner;       /* the new image's account id */
    const char *name;        /* required */
    const char *description; /* or NULL */
    const struct registry_tag *image_tags; /* put on the new image */
    size_t n_image_tags;
    const struct registry_tag *snapshot_tags; /* put on every new snapshot */
    size_t n_snapshot_tags;
};

/* Copy image `image_id` of `src` into `dst`: every mapped snapshot as by
 * service_snapshot_copy(), then one registry transaction inserting the new
 * snapshot rows and an available image (new id, the source's attributes
 * and mappings, source_image_id and source_region set).  Synchronous: the
 * image is available when this returns.  -EEXIST when the owner already
 * has an image of that name in `dst` (checked before anything is copied);
 * nothing is registered on failure. */
int service_image_copy(struct region *src, const char *image_id, struct region *dst,
                       const struct service_image_copy_options *opts,
                       char ret_id[ID_MAX_SIZE], struct copy_stats *ret);

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

#endif
