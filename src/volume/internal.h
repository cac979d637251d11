/* Private to src/volume/: the handle, its bitmaps and range locks, shared
 * by the read and write paths (volume.c), the incremental snapshot
 * builder (volume-snapshot.c) and boot profiles and prefetch (profile.c). */
#ifndef KILN_VOLUME_INTERNAL_H
#define KILN_VOLUME_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "volume/volume.h"

/* A set of block ranges in use: acquiring a range waits until no range in
 * use overlaps it.  A handful of requests are in flight at a time, so a
 * list is enough. */
struct range_set {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct range {
        uint64_t start, end;
    } *r;
    size_t n, cap;
};

struct volume {
    struct store *store; /* borrowed */
    struct blockmap *base; /* owned, NULL for a blank volume */
    struct digest base_id;
    uint64_t size;       /* bytes */
    uint64_t nblocks;    /* 4 KiB blocks, rounded up */
    uint64_t base_end;   /* bytes of the volume the base describes */
    uint64_t base_blocks;
    bool read_only;
    bool view;           /* a snapshot view: no overlay at all */
    char *dir;           /* NULL for a snapshot view */
    int dir_fd, lock_fd, overlay_fd, cache_fd;

    /* The overlay's state of block b: zero[b] set reads zeros; else
     * alloc[b] set reads the overlay; else the base.  Both are read and
     * changed with atomic word operations (no lock on the read path).
     * cached[b]: the cache file holds base block b. */
    _Atomic uint64_t *alloc, *zero, *cached;
    size_t words;        /* of alloc and zero */
    size_t cache_words;
    atomic_uint_fast64_t bitmap_gen;  /* bumped by every change of alloc/zero */
    uint64_t bitmap_saved_gen;        /* under flush_mu */
    atomic_uint_fast64_t cache_gen;   /* bumped by every fetch */
    uint64_t cache_saved_gen;

    pthread_mutex_t flush_mu;    /* one flush at a time */
    pthread_rwlock_t snap_lock;  /* writers shared, volume_snapshot() exclusive */
    struct range_set writing;    /* blocks being written, trimmed or zeroed */
    struct range_set fetching;   /* base blocks being fetched */

    unsigned fetch_delay_us;     /* KILN_FETCH_DELAY_US, read once per process */

    /* Boot profiles (profile.c).  ext_flags (one byte per base extent,
     * EXT_*) is allocated by volume_boot_start() / volume_record_start() /
     * volume_prefetch_start() before the handle is shared and lives as
     * long as the handle; NULL means no recording and no prefetch. */
    _Atomic uint8_t *ext_flags;
    atomic_bool recording;
    uint64_t record_deadline_ns; /* 0: none */
    pthread_mutex_t record_mu;   /* rec, rec_n */
    uint32_t *rec;               /* extent indexes in first-touch order */
    size_t rec_n;
    char *profile_path;          /* where volume_boot_finish() saves, or NULL */
    struct prefetch *pf;

    struct {
        atomic_uint_fast64_t chunks_fetched, blocks_fetched, bytes_fetched, cache_hits,
            bytes_read, blocks_written, blocks_zeroed, flushes, prefetch_chunks,
            prefetch_bytes, prefetch_hits, prefetch_errors;
    } st;
};

#define EXT_TOUCHED 1U    /* a read (the guest's) has touched the extent */
#define EXT_PREFETCHED 2U /* the prefetcher fetched it */

/* Fetch base extent i into the cache unless it is there already: 1 when
 * this call fetched it, 0 when it was cached (meanwhile, by another thread:
 * concurrent fetches of one extent wait for each other), -errno.  With
 * `prefetch`, marks it EXT_PREFETCHED before other readers may see it. */
int volume_fetch_extent(struct volume *v, size_t i, bool prefetch);

/* A read touched base extent i (`fetched`: that read fetched it itself):
 * recording and prefetch hit accounting.  Only when v->ext_flags. */
void volume_note_touch(struct volume *v, size_t i, bool fetched);

/* Stop and join the prefetch threads and free the recording (close). */
void volume_boot_release(struct volume *v);

static inline bool bit_test(_Atomic uint64_t *map, uint64_t b)
{
    return (atomic_load_explicit(&map[b / 64], memory_order_acquire) >> (b % 64)) & 1;
}

/* true when block b of the overlay is the overlay's (data or zero). */
static inline bool volume_block_dirty(struct volume *v, uint64_t b)
{
    return bit_test(v->alloc, b) || bit_test(v->zero, b);
}

/* The first block >= b (and < end) that is dirty, or clean; `end` if none. */
uint64_t volume_next_dirty(struct volume *v, uint64_t b, uint64_t end);
uint64_t volume_next_clean(struct volume *v, uint64_t b, uint64_t end);

/* Parse the bytes of a bitmap file (docs/formats.md, "Volumes"): `magic`
 * (8 bytes), written for `base_id`, at most max_blocks blocks, `nmaps`
 * bitmaps.  On success *ret_words is a new array of nmaps bitmaps of
 * ceil(*ret_nblocks / 64) words each.  -EBADMSG for anything malformed
 * (never aborts, whatever the bytes), -EINVAL for more blocks than
 * max_blocks. */
int volume_bitmap_parse(const void *data, size_t len, const char *magic,
                        const struct digest *base_id, uint64_t max_blocks, size_t nmaps,
                        uint64_t **ret_words, uint64_t *ret_nblocks);

/* The read path without validation (off + len within the volume). */
int volume_read_locked(struct volume *v, void *buf, size_t len, uint64_t off);

#endif
