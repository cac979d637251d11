/* Copy-on-write volumes, loaded lazily from a snapshot.
 *
 * A volume is three layers, asked top down ("unallocated here means ask
 * the layer below", as QEMU backing chains):
 *
 *   overlay   a sparse file of the volume's size holding every block
 *             written since the volume was created, and a persistent
 *             bitmap of 4 KiB blocks saying which blocks are the
 *             overlay's (data, or zeros after a trim or write-zeroes);
 *   cache     decoded base data fetched so far (a sparse file and a bitmap
 *             of the blocks it holds);
 *   base      the block map of the snapshot the volume was created from
 *             (or none: a blank volume), read from the chunk store on first
 *             touch, one whole chunk at a time, verified and decompressed.
 *
 * Blocks past the end of the base (a volume grown past its snapshot) and
 * holes of the base read as zeros.  The directory format (overlay, bitmap,
 * cache) is in docs/formats.md.
 *
 * A read-only view of a snapshot (volume_open_snapshot()) has no overlay
 * and a private cache that lives as long as the handle: `kiln nbd SNAPSHOT`
 * serves snapshots through the same read path.
 *
 * Region-level openers (the registry row, its base map and its directory)
 * are service_volume_open() and service_volume_open_snapshot() in
 * service/service.h: that is what front ends (the NBD server) call.
 *
 * Thread safety: every call except volume_open() and volume_close() may be
 * made from any number of threads at once on one handle.  Writes, trims and
 * zero-writes to overlapping ranges are serialised (one waits for the
 * other); disjoint ranges proceed in parallel.  A read concurrent with a
 * write to the same bytes sees the old or the new data (as a disk).
 * One process opens a volume writable at a time (an exclusive lock on its
 * directory, -EBUSY otherwise); share the handle between connections.
 *
 * Durability: volume_write() without fua is durable only after the next
 * volume_flush(); volume_flush() makes every write, trim and zero-write that
 * returned before it started durable: it fdatasyncs the overlay, then
 * writes the bitmap to a temporary file, fsyncs it and renames it into
 * place (design notes in volume.c).
 *
 * All int functions return >= 0 or -errno with a message through
 * error_set(): -EINVAL a range outside the volume, -EROFS a write to a
 * read-only handle, -EBADMSG a corrupt chunk or bitmap, -ENOENT a chunk the
 * store lacks, -EBUSY a volume open elsewhere.
 */
#ifndef KILN_VOLUME_VOLUME_H
#define KILN_VOLUME_VOLUME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cleanup.h"
#include "common/hash.h"
#include "snapshot/snapshot.h"
#include "store/store.h"

/* The largest volume (EC2's limit for gp3: 16 TiB). */
#define VOLUME_MAX_SIZE (16ULL << 40)

enum volume_open_flags {
    VOLUME_OPEN_READ_ONLY = 1U << 0, /* no writes; no lock on the directory */
    VOLUME_OPEN_CREATE = 1U << 1,    /* create the directory's files if missing */
};

struct volume;

/* Open the volume whose files live in `dir` (DATA/regions/<r>/volumes/<id>),
 * `size` bytes (a multiple of 4 KiB; at least the base's size, rounded up to
 * 4 KiB), over `base` (may be NULL: a blank volume; the volume takes
 * ownership of it, even on failure) whose map id is `base_id` (NULL
 * when base is NULL).  `s` is borrowed and must outlive the handle.
 *
 * A size larger than the one the bitmap was written for grows the volume
 * (the new blocks read as zeros); smaller is -EINVAL.  A read-only open
 * takes the lock shared and keeps its cache in an unnamed file. */
int volume_open(struct store *s, const char *dir, struct blockmap *base,
                const struct digest *base_id, uint64_t size, unsigned flags,
                struct volume **ret);

/* A read-only view of `base` (owned by the view from now on, even on
 * failure), exactly base->volume_size bytes (need not be a multiple of
 * 4 KiB), whose cache is an unnamed file in `scratch_dir` freed with the
 * handle.  `s` is borrowed. */
int volume_open_snapshot(struct store *s, const char *scratch_dir, struct blockmap *base,
                         const struct digest *base_id, struct volume **ret);

/* Flush (unless read-only), save the cache's bitmap, release the lock and
 * free.  Returns the flush's result; the handle is freed either way.
 * Accepts NULL. */
int volume_close(struct volume *v);
static inline void volume_closep(struct volume **v)
{
    volume_close(*v);
}

uint64_t volume_size(const struct volume *v);
bool volume_is_read_only(const struct volume *v);

/* The base's map (NULL for a blank volume) and its id (borrowed). */
const struct blockmap *volume_base(const struct volume *v);
const struct digest *volume_base_id(const struct volume *v);

/* Read `len` bytes at `off` into buf.  off + len must be within the
 * volume. */
int volume_read(struct volume *v, void *buf, size_t len, uint64_t off);

/* Write `len` bytes at `off`.  A partial 4 KiB block is completed from the
 * layers below first.  With `fua`, the write is durable when this returns
 * (as if followed by volume_flush()). */
int volume_write(struct volume *v, const void *buf, size_t len, uint64_t off, bool fua);

/* Make every completed write, trim and zero-write durable. */
int volume_flush(struct volume *v);

/* Trim and write-zeroes: afterwards the range reads as zeros, even where
 * the base has data.  Whole 4 KiB blocks in the range are punched out of
 * the overlay and marked zero; the partial blocks at either end are written
 * with zeros.  (Trim is advisory in NBD; kiln makes it read zeros, which
 * NBD_FLAG_SEND_TRIM allows.)  `fua` as for volume_write(). */
int volume_trim(struct volume *v, size_t len, uint64_t off, bool fua);
int volume_zero(struct volume *v, size_t len, uint64_t off, bool fua);

/* Prefetch: fetch every base chunk the range needs into the cache. */
int volume_cache(struct volume *v, size_t len, uint64_t off);

/* Allocation status of the run that starts at `off` (for NBD's
 * base:allocation): every byte from off to off + *ret_run_len (at least 1,
 * at most `len`) has the same status.  *ret_allocated: data is stored
 * (overlay data or base data); false for holes, trimmed or zeroed blocks
 * and blocks past the base.  *ret_zero: known to read as zeros (true for
 * every unallocated run; false for data even if it happens to be zeros). */
int volume_block_status(struct volume *v, uint64_t off, uint64_t len, bool *ret_allocated,
                        bool *ret_zero, uint64_t *ret_run_len);

struct volume_stats {
    uint64_t chunks_fetched; /* chunks read from the store (each verified) */
    uint64_t blocks_fetched; /* 4 KiB blocks those chunks held */
    uint64_t bytes_fetched;  /* plaintext bytes fetched from the store */
    uint64_t cache_hits;     /* base blocks served from the cache */
    uint64_t bytes_read;     /* bytes asked for by volume_read() */
    uint64_t blocks_written; /* 4 KiB blocks written to the overlay */
    uint64_t blocks_zeroed;  /* blocks trimmed or zeroed */
    uint64_t flushes;        /* bitmap writes made by flushes */
};

/* The counters since the handle was opened (each read atomically). */
void volume_stats(struct volume *v, struct volume_stats *ret);

/* ---- incremental snapshots (volume-snapshot.c) ---- */

struct volume_snapshot_stats {
    uint64_t blocks_dirty;   /* overlay blocks (data or zero) */
    uint64_t bytes_read;     /* bytes read to build new chunks */
    uint64_t chunks;         /* extents in the new map */
    uint64_t chunks_shared;  /* extents taken from the base as they were */
    uint64_t chunks_new;     /* chunks written to the store */
    uint64_t bytes_new;      /* their plaintext bytes */
    uint64_t stored_new;     /* their encoded bytes */
};

/* Build the block map of the volume as it is now, sharing every base
 * extent no overlay block touches: only the overlay's blocks, and the rest
 * of each base chunk they split, are read, chunked and stored.  Chunks,
 * then store_sync(), then the map (parent: the base's id).  The caller holds
 * the store's lock shared (store_lock()) from before this call until the
 * map is referenced by a registry row, and makes sure no write runs at the
 * same time (the result is a crash-consistent image of the volume either
 * way).  Chunks go to the store the volume was opened with.  The cost depends on the data written, not the volume's size. */
int volume_snapshot(struct volume *v, struct digest *ret_map_id, struct blockmap **ret_map,
                    struct volume_snapshot_stats *ret_stats);

/* volume_snapshot() that calls fn(userdata, done, total) after each 4 MiB
 * it reads, `done` of the `total` written blocks stored so
 * far (non-decreasing, ending at total), on the calling thread, while
 * writes are held off.  A negative return from fn stops the snapshot with
 * that error.  fn may be NULL. */
typedef int (*volume_progress_fn)(void *userdata, uint64_t done, uint64_t total);
int volume_snapshot_progress(struct volume *v, volume_progress_fn fn, void *userdata,
                             struct digest *ret_map_id, struct blockmap **ret_map,
                             struct volume_snapshot_stats *ret_stats);

#endif
