/* Diff: which 512 KiB blocks differ between two snapshots.
 *
 * Two maps are compared block by block (EBS_BLOCK_SIZE) by the list of
 * (offset, length, chunk) pieces that cover each block.  Equal lists mean
 * equal content.  Unequal lists usually mean different content, but not
 * always: the same bytes can be cut into chunks differently when what
 * precedes them differs.  Bytes past the end of the shorter volume compare
 * as zeros.  snapshot_diff() therefore reads both sides of each
 * candidate block and keeps only the blocks whose bytes differ.
 */
#include <errno.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "snapshot/snapshot.h"

#define BLOCKS_PER_EBS (EBS_BLOCK_SIZE / BLOCK_SIZE)

struct cursor {
    const struct blockmap *m;
    size_t i;
};

/* Does the range [b0, b1) (in 4 KiB blocks) look the same in both maps? */
static bool same_range(struct cursor *ca, struct cursor *cb, uint64_t b0, uint64_t b1)
{
    const struct blockmap *a = ca->m, *b = cb->m;
    size_t i = ca->i = blockmap_seek(a, b0);
    size_t j = cb->i = blockmap_seek(b, b0);

    for (;;) {
        bool ina = i < a->n && a->ext[i].block < b1;
        bool inb = j < b->n && b->ext[j].block < b1;
        if (!ina && !inb)
            return true;
        if (ina != inb)
            return false;
        const struct blockmap_extent *x = &a->ext[i], *y = &b->ext[j];
        if (x->block != y->block || x->count != y->count || !digest_equal(&x->id, &y->id))
            return false;
        i++;
        j++;
    }
}

int snapshot_diff_candidates(const struct blockmap *a, const struct blockmap *b,
                             uint64_t **ret, size_t *ret_n)
{
    uint64_t size = MAX(a->volume_size, b->volume_size);
    uint64_t nblocks = DIV_ROUND_UP(size, EBS_BLOCK_SIZE);
    struct cursor ca = { a, 0 }, cb = { b, 0 };
    uint64_t *out = NULL;
    size_t n = 0, cap = 0;

    /* Equal extents mean equal bytes, also in a last block that only one
     * volume fills: chunks are zero-padded past the end of their volume,
     * and past the end is read as zeros. */
    for (uint64_t k = 0; k < nblocks; k++) {
        uint64_t b0 = k * BLOCKS_PER_EBS, b1 = b0 + BLOCKS_PER_EBS;
        size_t ia = blockmap_seek(a, b0), ib = blockmap_seek(b, b0);
        bool ina = ia < a->n && a->ext[ia].block < b1;
        bool inb = ib < b->n && b->ext[ib].block < b1;
        if (!ina && !inb) {
            /* Holes on both sides: skip to the next extent of either. */
            uint64_t next = UINT64_MAX;
            if (ia < a->n)
                next = a->ext[ia].block;
            if (ib < b->n)
                next = MIN(next, b->ext[ib].block);
            if (next == UINT64_MAX)
                break;
            k = next / BLOCKS_PER_EBS - 1; /* next >= b1: the loop moves on to it */
            continue;
        }
        if (same_range(&ca, &cb, b0, b1))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            out = xrealloc(out, cap * sizeof(*out));
        }
        out[n++] = k;
    }
    *ret = out;
    *ret_n = n;
    return 0;
}

/* Read block k of m into buf (zeros past the end of its volume). */
static int read_ebs_block(struct store *s, const struct blockmap *m, uint64_t k, uint8_t *buf)
{
    uint64_t start = k * EBS_BLOCK_SIZE;

    memset(buf, 0, EBS_BLOCK_SIZE);
    if (start >= m->volume_size)
        return 0;
    return snapshot_read(s, m, buf, (size_t)MIN((uint64_t)EBS_BLOCK_SIZE,
                                                m->volume_size - start), start);
}

int snapshot_diff(struct store *s, const struct blockmap *a, const struct blockmap *b,
                  uint64_t **ret, size_t *ret_n)
{
    _cleanup_free_ uint64_t *cand = NULL;
    _cleanup_free_ uint8_t *ba = xmalloc(EBS_BLOCK_SIZE);
    _cleanup_free_ uint8_t *bb = xmalloc(EBS_BLOCK_SIZE);
    size_t n, kept = 0;
    int r;

    r = snapshot_diff_candidates(a, b, &cand, &n);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++) {
        uint64_t k = cand[i];
        r = read_ebs_block(s, a, k, ba);
        if (r == 0)
            r = read_ebs_block(s, b, k, bb);
        if (r < 0)
            return r;
        if (memcmp(ba, bb, EBS_BLOCK_SIZE) != 0)
            cand[kept++] = k;
    }
    *ret = TAKE_PTR(cand);
    *ret_n = kept;
    return 0;
}
