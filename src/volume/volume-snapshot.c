/* Incremental snapshots of a volume: a new block map that shares every base
 * extent the overlay does not touch.
 *
 * Design notes.  The map is built in one pass over the base's extents and
 * the overlay's dirty blocks (data or zero), in block order:
 *   - a base extent with no dirty block is appended as it is (its chunk is
 *     shared: nothing is read);
 *   - a *region* is a run of dirty blocks widened to the boundaries of the
 *     base extents it splits (an extent names a whole chunk, so the
 *     untouched rest of a split chunk must become chunks of its own), and
 *     widened again while the widened end meets more dirty blocks.  A
 *     region is read through the volume's own read path (overlay, cache,
 *     store) and cut by the import's chunker (chunker.c): all-zero blocks
 *     become holes, cuts fall where the content fingerprint says, at most
 *     max_blocks a chunk; chunks the store has are not written again.
 * The work is proportional to the dirty blocks (plus at most one base chunk
 * on either side of each dirty run) and to the number of base extents and
 * bitmap words (a scan), never to the volume's size in bytes.
 *
 * Durability: chunks, store_sync(), then the map (fsynced by the store).
 * Writes are held off (snap_lock) while the map is built, so it is one
 * point in time of the volume.
 */
#include <errno.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "volume/internal.h"

#define READ_BLOCKS 1024 /* 4 MiB read at a time */

struct builder {
    struct volume *v;
    struct blockmap *map;
    const struct chunker_params *params;
    uint8_t *chunk; /* max_blocks blocks */
    uint32_t chunk_len;
    uint64_t chunk_first;
    struct volume_snapshot_stats st;
    volume_progress_fn progress;
    void *userdata;
    uint64_t done;
};

static uint64_t count_dirty(struct volume *v, uint64_t from, uint64_t to)
{
    uint64_t n = 0;
    for (uint64_t b = volume_next_dirty(v, from, to); b < to; b = volume_next_dirty(v, b, to)) {
        uint64_t e = volume_next_clean(v, b, to);
        n += e - b;
        b = e;
    }
    return n;
}

static int emit(struct builder *bd)
{
    struct digest id;
    size_t stored = 0;
    size_t len = (size_t)bd->chunk_len * BLOCK_SIZE;
    int r;

    if (bd->chunk_len == 0)
        return 0;
    sha256(bd->chunk, len, &id);
    r = store_chunk_put(bd->v->store, &id, bd->chunk, len, &stored);
    if (r < 0) {
        char hex[DIGEST_HEX_SIZE];
        return error_set(r, "cannot store chunk '%s': %s", digest_to_hex(&id, hex),
                         strerror(-r));
    }
    if (r == 1) {
        bd->st.chunks_new++;
        bd->st.bytes_new += len;
        bd->st.stored_new += stored;
    }
    r = blockmap_append(bd->map, bd->chunk_first, bd->chunk_len, &id);
    if (r < 0)
        return error_set(r, "cannot add an extent at block %llu to the block map",
                         (unsigned long long)bd->chunk_first);
    bd->st.chunks++;
    bd->chunk_len = 0;
    return 0;
}

/* Read blocks [rs, re) of the volume and cut them into chunks. */
static int chunk_region(struct builder *bd, uint8_t *buf, uint64_t rs, uint64_t re)
{
    int r;

    for (uint64_t b = rs; b < re;) {
        uint64_t n = MIN((uint64_t)READ_BLOCKS, re - b);
        r = volume_read_locked(bd->v, buf, n * BLOCK_SIZE, b * BLOCK_SIZE);
        if (r < 0)
            return r;
        bd->st.bytes_read += n * BLOCK_SIZE;
        for (uint64_t i = 0; i < n; i++) {
            const uint8_t *blk = buf + i * BLOCK_SIZE;
            if (buf_is_zero(blk, BLOCK_SIZE)) {
                r = emit(bd);
                if (r < 0)
                    return r;
                continue;
            }
            if (bd->chunk_len == 0)
                bd->chunk_first = b + i;
            memcpy(bd->chunk + (size_t)bd->chunk_len * BLOCK_SIZE, blk, BLOCK_SIZE);
            bd->chunk_len++;
            if (chunker_cut(bd->params, chunker_block_fingerprint(blk), bd->chunk_len)) {
                r = emit(bd);
                if (r < 0)
                    return r;
            }
        }
        if (bd->progress) {
            bd->done += count_dirty(bd->v, b, b + n);
            r = bd->progress(bd->userdata, bd->done, bd->st.blocks_dirty);
            if (r < 0)
                return r;
        }
        b += n;
    }
    return emit(bd); /* a region's end ends a chunk */
}

/* The end of the base extent holding block b, or 0 if b is in no extent. */
static uint64_t extent_end_at(struct volume *v, uint64_t b)
{
    if (!v->base || b >= v->base_blocks)
        return 0;
    ssize_t i = blockmap_lookup(v->base, b, NULL);
    if (i < 0)
        return 0;
    return v->base->ext[i].block + v->base->ext[i].count;
}

static int build(struct builder *bd)
{
    struct volume *v = bd->v;
    const struct blockmap *base = v->base;
    size_t nbase = base ? base->n : 0, ei = 0;
    _cleanup_free_ uint8_t *buf = xmalloc((size_t)READ_BLOCKS * BLOCK_SIZE);
    uint64_t c = 0;
    int r;

    for (size_t w = 0; w < v->words; w++)
        bd->st.blocks_dirty += (uint64_t)__builtin_popcountll(
            atomic_load(&v->alloc[w]) | atomic_load(&v->zero[w]));

    for (;;) {
        uint64_t d = volume_next_dirty(v, c, v->nblocks);
        uint64_t rs = d;
        if (d < v->nblocks && extent_end_at(v, d) > d) {
            ssize_t i = blockmap_lookup(base, d, NULL);
            rs = base->ext[i].block;
        }
        /* Base extents wholly before the region are shared as they are. */
        for (; ei < nbase && base->ext[ei].block + base->ext[ei].count <= rs; ei++) {
            const struct blockmap_extent *e = &base->ext[ei];
            if (e->block < c)
                continue; /* inside the previous region */
            r = blockmap_append(bd->map, e->block, e->count, &e->id);
            if (r < 0)
                return error_set(r, "cannot add an extent at block %llu to the block map",
                                 (unsigned long long)e->block);
            bd->st.chunks++;
            bd->st.chunks_shared++;
        }
        if (d >= v->nblocks)
            break;
        uint64_t re = d;
        for (;;) {
            if (re < v->nblocks && volume_block_dirty(v, re))
                re = volume_next_clean(v, re, v->nblocks);
            uint64_t ee = extent_end_at(v, re - 1);
            if (ee > re)
                re = ee;
            if (re < v->nblocks && volume_block_dirty(v, re))
                continue;
            break;
        }
        r = chunk_region(bd, buf, rs, re);
        if (r < 0)
            return r;

        while (ei < nbase && base->ext[ei].block < re)
            ei++;
        c = re;
    }
    return 0;
}

int volume_snapshot(struct volume *v, struct digest *ret_map_id, struct blockmap **ret_map,
                    struct volume_snapshot_stats *ret_stats)
{
    return volume_snapshot_progress(v, NULL, NULL, ret_map_id, ret_map, ret_stats);
}

int volume_snapshot_progress(struct volume *v, volume_progress_fn fn, void *userdata,
                             struct digest *ret_map_id, struct blockmap **ret_map,
                             struct volume_snapshot_stats *ret_stats)
{
    _cleanup_(blockmap_freep) struct blockmap *map = NULL;
    _cleanup_free_ uint8_t *chunk = NULL;
    struct builder bd = { .v = v, .params = &chunker_default_params, .progress = fn,
                          .userdata = userdata };
    struct digest id;
    int r;

    if (v->view)
        return error_set(EINVAL, "a snapshot view has no overlay to snapshot");
    map = blockmap_new(v->size);
    if (v->base)
        map->parent = v->base_id;
    chunk = xmalloc((size_t)bd.params->max_blocks * BLOCK_SIZE);
    bd.map = map;
    bd.chunk = chunk;

    pthread_rwlock_wrlock(&v->snap_lock);
    r = build(&bd);
    pthread_rwlock_unlock(&v->snap_lock);
    if (r < 0)
        return r;
    r = store_sync(v->store);
    if (r < 0)
        return error_set(r, "cannot make the chunks of '%s' durable: %s", v->dir,
                         strerror(-r));
    r = blockmap_save(v->store, map, &id);
    if (r < 0)
        return r;
    *ret_map_id = id;
    if (ret_map)
        *ret_map = TAKE_PTR(map);
    if (ret_stats)
        *ret_stats = bd.st;
    return 0;
}
