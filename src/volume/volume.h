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
    uint64_t prefetch_chunks; /* chunks the prefetcher fetched (in chunks_fetched) */
    uint64_t prefetch_bytes;  /* their plaintext bytes (in bytes_fetched) */
    uint64_t prefetch_hits;   /* chunks whose first read found them prefetched */
    uint64_t prefetch_errors; /* prefetches that failed (the read reports it) */
};

/* The counters since the handle was opened (each read atomically). */
void volume_stats(struct volume *v, struct volume_stats *ret);

/* ---- boot profiles and prefetch (profile.c) ---- */

/* A boot profile: the chunks of one base snapshot in the order a boot
 * first touched them, each named by its first 4 KiB block (docs/formats.md,
 * "Boot profiles").  Kept per snapshot in
 * DATA/regions/<r>/profiles/<snap-id>.profile (volume_profile_path()). */
struct volume_profile {
    struct digest base_id; /* the block map it was recorded over */
    uint64_t *blocks;      /* first block of each chunk, in first-touch order */
    size_t n;
};

/* The most chunks a profile holds (a 16 TiB volume of 4 MiB chunks). */
#define VOLUME_PROFILE_MAX (1U << 22)

void volume_profile_free(struct volume_profile *p);
DEFINE_CLEANUP_FREE(struct volume_profile, volume_profile_free)

/* DATA/regions/<r>/profiles/<snapshot_id>.profile for region directory
 * `region_dir` (a new string). */
char *volume_profile_path(const char *region_dir, const char *snapshot_id);

/* Encode `p` (a new buffer of *ret_len bytes). */
void volume_profile_encode(const struct volume_profile *p, uint8_t **ret, size_t *ret_len);

/* Parse a profile file's bytes: -EBADMSG for anything malformed (bad magic,
 * version, size, digest, out-of-range or repeated entries), never an abort
 * whatever the bytes.  The caller checks base_id against its base. */
int volume_profile_parse(const void *data, size_t len, struct volume_profile **ret);

/* Read `path` and parse it: -ENOENT when missing, -EBADMSG as above, and
 * -EBADMSG too when it was recorded over another block map than
 * `base_id` (a foreign profile). */
int volume_profile_load(const char *path, const struct digest *base_id,
                        struct volume_profile **ret);

/* Write `p` to `path` atomically (temporary file, fdatasync, rename,
 * directory fsync), creating the directory if needed. */
int volume_profile_save(const struct volume_profile *p, const char *path);

/* Record the order in which reads first touch base chunks, for at most
 * max_seconds (0: until stopped).  Call before the handle is shared
 * between threads.  -EINVAL for a blank volume or one already recording
 * or prefetching. */
int volume_record_start(struct volume *v, unsigned max_seconds);

/* Stop recording; *ret (may be NULL) gets the profile so far (a new one,
 * possibly empty).  -EINVAL when not recording. */
int volume_record_stop(struct volume *v, struct volume_profile **ret);

/* Fetch the chunks of `p` (borrowed, for this call only) into the cache,
 * in its order, with `threads` threads (0: 4; at most 16), in the
 * background; each thread holds one chunk in memory.  Reads of a chunk
 * being prefetched wait for it (each chunk is fetched once).  Entries that
 * do not start a chunk of the base are skipped.  Call before the handle is
 * shared between threads.  -EINVAL for a blank volume, a profile of
 * another base, or a prefetch already started. */
int volume_prefetch_start(struct volume *v, const struct volume_profile *p, unsigned threads);

/* Wait for the prefetch to finish (0 when none runs).  The handle stops
 * it on close. */
int volume_prefetch_wait(struct volume *v);

struct volume_boot_options {
    unsigned threads;        /* prefetch threads (0: 4) */
    unsigned record_seconds; /* record at most this long (0: 300) */
};

/* Open for boot: when `profile_path` holds a valid profile of this base,
 * start prefetching it (returns 1); when it is missing, or corrupt or
 * foreign (a warning, the file is left for the next recording to replace),
 * record this boot (returns 0), to be saved at `profile_path` by
 * volume_boot_finish() or volume_close().  A blank volume: 0, nothing
 * done.  o may be NULL.  Call before the handle is shared. */
int volume_boot_start(struct volume *v, const char *profile_path,
                      const struct volume_boot_options *o);

/* The boot is done (the agent's hello): stop recording and save the
 * profile.  0 when nothing was recorded (or already saved), 1 when saved. */
int volume_boot_finish(struct volume *v);

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
