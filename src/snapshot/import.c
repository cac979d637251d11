/* Import: read a disk image, cut it into chunks, store the new ones, write
 * the block map.
 *
 * Design notes (concurrency):
 *   The calling thread reads the input in 4 MiB segments, skipping holes
 *   without reading them, finds all-zero blocks and chunk boundaries (cheap:
 *   a fingerprint per 4 KiB block) and queues each segment with its list of
 *   chunks.  Worker threads, one per core, hash each chunk (SHA-256), skip
 *   chunks the store already has, and compress and write the rest.  The
 *   calling thread collects segments in order and appends their extents to
 *   the block map, so reading, hashing, compressing and writing overlap.  At
 *   most QUEUE_DEPTH segments are in flight: memory does not grow with the
 *   image (apart from the map itself, 48 bytes per chunk).
 *
 *   Before that, layout.c lists where the file systems in the image start
 *   files, and the chunker cuts there too.
 *
 *   A chunk that runs past the end of a segment is carried: its blocks are
 *   copied into the headroom in front of the next segment's data, so every
 *   chunk is contiguous in one buffer.
 *
 * Design notes (durability): chunks first, store_sync(), then the map
 * (fsynced by the store).  The caller registers the map id afterwards.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/util.h"
#include "snapshot/layout.h"
#include "snapshot/source.h"

#define SEG_BLOCKS 1024 /* 4 MiB */
#define MAX_CHUNK_BLOCKS (STORE_CHUNK_MAX / BLOCK_SIZE)
#define QUEUE_DEPTH 8

struct chunk_job {
    uint32_t rel;   /* first block, relative to seg->buf */
    uint32_t count;
    struct digest id;
};

struct seg {
    uint8_t *mem;          /* headroom for a carried chunk, then the segment */
    uint8_t *buf;          /* the first carried or segment block */
    uint64_t first_block;  /* volume block of buf[0] */
    size_t nchunks;
    struct chunk_job chunks[SEG_BLOCKS + MAX_CHUNK_BLOCKS];
    int error;
    char message[256]; /* error_set() is per thread: the worker's message */
    bool done;
};

struct pipeline {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct seg *ring[QUEUE_DEPTH];
    uint64_t head, next_work, tail;
    bool stop;
    struct store *store;
    _Atomic uint64_t chunks_new, bytes_new, stored_new;
};

static void process_segment(struct pipeline *p, struct seg *sg)
{
    for (size_t i = 0; i < sg->nchunks; i++) {
        struct chunk_job *c = &sg->chunks[i];
        const uint8_t *data = sg->buf + (size_t)c->rel * BLOCK_SIZE;
        size_t len = (size_t)c->count * BLOCK_SIZE;
        size_t stored = 0;
        int r;

        sha256(data, len, &c->id);
        r = store_chunk_put(p->store, &c->id, data, len, &stored);
        if (r < 0) {
            char hex[DIGEST_HEX_SIZE];
            sg->error = r;
            snprintf(sg->message, sizeof(sg->message), "cannot store chunk '%s': %s",
                     digest_to_hex(&c->id, hex), strerror(-r));
            return;
        }
        if (r > 0) {
            atomic_fetch_add(&p->chunks_new, 1);
            atomic_fetch_add(&p->bytes_new, len);
            atomic_fetch_add(&p->stored_new, stored);
        }
    }
}

static void *worker(void *arg)
{
    struct pipeline *p = arg;

    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->stop && p->next_work == p->head)
            pthread_cond_wait(&p->cond, &p->lock);
        if (p->next_work == p->head && p->stop)
            break;
        struct seg *sg = p->ring[p->next_work % QUEUE_DEPTH];
        p->next_work++;
        pthread_mutex_unlock(&p->lock);

        process_segment(p, sg);

        pthread_mutex_lock(&p->lock);
        sg->done = true;
        pthread_cond_broadcast(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

struct importer {
    struct pipeline pipe;
    struct source src;
    const struct chunker_params *params;
    struct blockmap *map;
    struct seg *free_segs[QUEUE_DEPTH + 1];
    size_t nfree;
    struct import_stats stats;
    struct layout_hints hints;
    size_t next_hint;
    int error;
    bool zero_flags[SEG_BLOCKS];
};

static struct seg *seg_new(void)
{
    struct seg *sg = xcalloc(1, sizeof(*sg));

    sg->mem = xmalloc((size_t)(SEG_BLOCKS + MAX_CHUNK_BLOCKS) * BLOCK_SIZE);
    return sg;
}

static void seg_free(struct seg *sg)
{
    if (!sg)
        return;
    free(sg->mem);
    free(sg);
}

/* Append the finished segment's extents to the map and recycle it. */
static int collect_one(struct importer *im, struct seg *sg)
{
    int r = sg->error;

    if (r < 0)
        error_set(r, "%s", sg->message);
    for (size_t i = 0; r == 0 && i < sg->nchunks; i++) {
        const struct chunk_job *c = &sg->chunks[i];
        r = blockmap_append(im->map, sg->first_block + c->rel, c->count, &c->id);
    }
    im->free_segs[im->nfree++] = sg;
    return r;
}

/* Collect finished segments in order; with `wait`, block until the oldest
 * one is finished. */
static void collect(struct importer *im, bool wait)
{
    struct pipeline *p = &im->pipe;

    pthread_mutex_lock(&p->lock);
    for (;;) {
        if (p->tail == p->head)
            break;
        struct seg *sg = p->ring[p->tail % QUEUE_DEPTH];
        if (!sg->done) {
            if (!wait)
                break;
            pthread_cond_wait(&p->cond, &p->lock);
            continue;
        }
        p->tail++;
        pthread_mutex_unlock(&p->lock);
        int r = collect_one(im, sg);
        if (r < 0 && im->error == 0)
            im->error = r;
        pthread_mutex_lock(&p->lock);
        wait = false;
    }
    pthread_mutex_unlock(&p->lock);
}

static void submit(struct importer *im, struct seg *sg)
{
    struct pipeline *p = &im->pipe;

    sg->done = false;
    sg->error = 0;
    pthread_mutex_lock(&p->lock);
    p->ring[p->head % QUEUE_DEPTH] = sg;
    p->head++;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

static struct seg *get_free_seg(struct importer *im)
{
    while (im->nfree == 0)
        collect(im, true);
    return im->free_segs[--im->nfree];
}

/* Read the window [first, first + nblocks) into sg->buf at `carry` blocks,
 * marking holes in zero_flags. */
static int read_window(struct importer *im, struct seg *sg, uint32_t carry, uint64_t first,
                       uint32_t nblocks)
{
    uint64_t off = first * BLOCK_SIZE;
    uint64_t end = MIN((first + nblocks) * BLOCK_SIZE, im->src.size);
    uint8_t *base = sg->buf + (size_t)carry * BLOCK_SIZE;
    int r;

    memset(im->zero_flags, 0, nblocks);
    /* The tail of a volume that is not a multiple of 4 KiB reads as zeros. */
    if (end < (first + nblocks) * BLOCK_SIZE)
        memset(base + (end - first * BLOCK_SIZE), 0, (first + nblocks) * BLOCK_SIZE - end);
    while (off < end) {
        bool data;
        uint64_t len;
        r = source_extent(&im->src, off, end - off, &data, &len);
        if (r < 0)
            return r;
        if (len == 0)
            return error_set(EIO, "cannot map '%s' at offset %llu", im->src.path,
                             (unsigned long long)off);
        if (data) {
            r = source_read(&im->src, base + (off - first * BLOCK_SIZE), len, off);
            if (r < 0)
                return r;
            im->stats.bytes_read += len;
        } else {
            /* Whole blocks inside the hole need no reading or scanning. */
            uint64_t b0 = DIV_ROUND_UP(off, BLOCK_SIZE), b1 = (off + len) / BLOCK_SIZE;
            if (off + len == im->src.size)
                b1 = DIV_ROUND_UP(off + len, BLOCK_SIZE);
            for (uint64_t b = b0; b < b1; b++)
                im->zero_flags[b - first] = true;
            memset(base + (off - first * BLOCK_SIZE), 0, len);
        }
        off += len;
    }
    return 0;
}

static void add_chunk(struct seg *sg, uint64_t start, uint32_t count)
{
    struct chunk_job *c = &sg->chunks[sg->nchunks++];

    c->rel = (uint32_t)(start - sg->first_block);
    c->count = count;
}

static int run(struct importer *im, struct progress *bar)
{
    uint64_t total_blocks = DIV_ROUND_UP(im->src.size, BLOCK_SIZE);
    uint64_t cur_start = 0;
    uint32_t cur_len = 0;
    struct seg *prev = NULL;
    int r;

    for (uint64_t first = 0; first < total_blocks; first += SEG_BLOCKS) {
        uint32_t nblocks = (uint32_t)MIN((uint64_t)SEG_BLOCKS, total_blocks - first);
        struct seg *sg = get_free_seg(im);

        if (im->error) {
            im->free_segs[im->nfree++] = sg;
            if (prev)
                im->free_segs[im->nfree++] = prev;
            return im->error;
        }
        /* Carry the unfinished chunk of the previous segment. */
        sg->buf = sg->mem + (size_t)(MAX_CHUNK_BLOCKS - cur_len) * BLOCK_SIZE;
        sg->first_block = first - cur_len;
        sg->nchunks = 0;
        if (cur_len)
            memcpy(sg->buf, prev->buf + (cur_start - prev->first_block) * BLOCK_SIZE,
                   (size_t)cur_len * BLOCK_SIZE);
        if (prev)
            submit(im, prev);
        prev = NULL;

        r = read_window(im, sg, cur_len, first, nblocks);
        if (r < 0) {
            im->free_segs[im->nfree++] = sg;
            return r;
        }

        for (uint32_t i = 0; i < nblocks; i++) {
            uint64_t b = first + i;
            const uint8_t *blk = sg->buf + (size_t)(b - sg->first_block) * BLOCK_SIZE;

            /* A file starts here: end the chunk before it. */
            while (im->next_hint < im->hints.n && im->hints.blocks[im->next_hint] < b)
                im->next_hint++;
            if (cur_len && im->next_hint < im->hints.n && im->hints.blocks[im->next_hint] == b) {
                add_chunk(sg, cur_start, cur_len);
                cur_len = 0;
            }
            if (im->zero_flags[i] || buf_is_zero(blk, BLOCK_SIZE)) {
                if (cur_len)
                    add_chunk(sg, cur_start, cur_len);
                cur_len = 0;
                im->stats.zero_bytes += BLOCK_SIZE;
                continue;
            }
            if (cur_len == 0)
                cur_start = b;
            cur_len++;
            if (chunker_cut(im->params, chunker_block_fingerprint(blk), cur_len)) {
                add_chunk(sg, cur_start, cur_len);
                cur_len = 0;
            }
        }
        if (first + nblocks == total_blocks && cur_len) {
            add_chunk(sg, cur_start, cur_len);
            cur_len = 0;
        }
        progress_add(bar, (uint64_t)nblocks * BLOCK_SIZE);
        prev = sg;
        collect(im, false);
    }
    if (prev)
        submit(im, prev);
    return 0;
}

int image_format_from_string(const char *s, enum image_format *ret)
{
    if (strcmp(s, "auto") == 0)
        *ret = IMAGE_FORMAT_AUTO;
    else if (strcmp(s, "raw") == 0)
        *ret = IMAGE_FORMAT_RAW;
    else if (strcmp(s, "qcow2") == 0)
        *ret = IMAGE_FORMAT_QCOW2;
    else
        return -EINVAL;
    return 0;
}

const char *image_format_to_string(enum image_format f)
{
    switch (f) {
    case IMAGE_FORMAT_RAW: return "raw";
    case IMAGE_FORMAT_QCOW2: return "qcow2";
    default: return "auto";
    }
}

/* The import proper, over an open source (which it releases). */
static int import_source(struct store *s, struct source *src, const struct import_options *opts,
                         struct digest *ret_map_id, struct blockmap **ret_map,
                         struct import_stats *ret_stats)
{
    _cleanup_free_ struct importer *im = xcalloc(1, sizeof(*im));
    pthread_t threads[64];
    int nthreads = opts->threads > 0 ? opts->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    struct progress *bar = NULL;
    struct digest id;
    int r;

    nthreads = MAX(1, MIN(nthreads, (int)ARRAY_SIZE(threads)));
    im->src = *src;
    im->params = opts->chunker ? opts->chunker : &chunker_default_params;
    if (im->params->min_blocks < 1 || im->params->max_blocks > MAX_CHUNK_BLOCKS ||
        im->params->min_blocks > im->params->max_blocks || im->params->avg_blocks == 0 ||
        (im->params->avg_blocks & (im->params->avg_blocks - 1))) {
        source_release(&im->src);
        return error_set(EINVAL, "invalid chunker parameters");
    }
    im->map = blockmap_new(im->src.size);
    if (opts->parent)
        im->map->parent = opts->parent_id;
    im->stats.volume_size = im->src.size;
    if (!opts->no_hints) {
        uint64_t t0 = now_ns();
        layout_hints_find(&im->src, &im->hints);
        log_debug("found %zu cut hints in %.3f s", im->hints.n, (double)(now_ns() - t0) / 1e9);
    }
    for (int i = 0; i < QUEUE_DEPTH; i++)
        im->free_segs[im->nfree++] = seg_new();

    pthread_mutex_init(&im->pipe.lock, NULL);
    pthread_cond_init(&im->pipe.cond, NULL);
    im->pipe.store = s;
    int started = 0;
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&threads[started], NULL, worker, &im->pipe) == 0)
            started++;

    if (opts->progress)
        bar = progress_new("importing", im->src.size);
    r = started ? run(im, bar) : error_set(EAGAIN, "cannot start import threads");

    /* Drain: every submitted segment is collected before the workers stop. */
    pthread_mutex_lock(&im->pipe.lock);
    im->pipe.stop = true;
    pthread_cond_broadcast(&im->pipe.cond);
    pthread_mutex_unlock(&im->pipe.lock);
    while (im->pipe.tail != im->pipe.head)
        collect(im, true);
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    progress_free(bar);
    if (r == 0)
        r = im->error;

    for (size_t i = 0; i < im->nfree; i++)
        seg_free(im->free_segs[i]);
    pthread_mutex_destroy(&im->pipe.lock);
    pthread_cond_destroy(&im->pipe.cond);
    source_release(&im->src);
    layout_hints_release(&im->hints);

    if (r == 0) {
        r = store_sync(s);
        if (r < 0)
            r = error_set(r, "cannot make the chunks durable: %s", strerror(-r));
    }
    if (r == 0) {
        r = blockmap_save(s, im->map, &id);
        if (r < 0)
            r = error_set(r, "cannot write the block map: %s", strerror(-r));
    }
    if (r < 0) {
        blockmap_free(im->map);
        return r;
    }

    im->stats.chunks = im->map->n;
    im->stats.chunks_new = im->pipe.chunks_new;
    im->stats.bytes_new = im->pipe.bytes_new;
    im->stats.stored_new = im->pipe.stored_new;
    im->stats.total_blocks = DIV_ROUND_UP(im->src.size, EBS_BLOCK_SIZE);
    if (opts->parent) {
        _cleanup_free_ uint64_t *changed = NULL;
        size_t n = 0;
        if (snapshot_diff_candidates(opts->parent, im->map, &changed, &n) == 0)
            im->stats.changed_blocks = n;
    } else {
        im->stats.changed_blocks = im->stats.total_blocks;
    }
    if (ret_stats)
        *ret_stats = im->stats;
    if (ret_map_id)
        *ret_map_id = id;
    if (ret_map)
        *ret_map = im->map;
    else
        blockmap_free(im->map);
    return 0;
}

int snapshot_import(struct store *s, const char *path, const struct import_options *opts,
                    struct digest *ret_map_id, struct blockmap **ret_map,
                    struct import_stats *ret_stats)
{
    struct source src;
    int r = source_open(path, opts->format, &src);

    if (r < 0)
        return r;
    return import_source(s, &src, opts, ret_map_id, ret_map, ret_stats);
}

int snapshot_import_reader(struct store *s, const struct snapshot_reader *reader,
                           const struct import_options *opts, struct digest *ret_map_id,
                           struct blockmap **ret_map, struct import_stats *ret_stats)
{
    struct source src;
    int r = source_from_reader(reader, &src);

    if (r < 0)
        return r;
    return import_source(s, &src, opts, ret_map_id, ret_map, ret_stats);
}
