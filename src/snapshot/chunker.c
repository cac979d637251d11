/* Content-defined chunking at 4 KiB block granularity.
 *
 * File systems keep file data on block boundaries, so a byte-level rolling
 * hash is not needed to find the same content at another offset: it is
 * enough to decide cut points from the blocks themselves.  A chunk ends after
 * block b when it is at least min_blocks long and the fingerprint of b has
 * its low log2(avg_blocks) bits zero, or when it reaches max_blocks.  The
 * same run of blocks therefore produces the same chunks wherever it lies,
 * and a change disturbs only the chunk it falls in.
 *
 * The fingerprint is a 64-bit multiply-xorshift hash of the block's words in
 * four independent lanes (about 10 GB/s per core), not a cryptographic hash:
 * it only places boundaries; chunk identity is SHA-256.
 */
#include <string.h>

#include "snapshot/snapshot.h"

/* Chosen by measurement on the bench images (docs/benchmarks.md). */
const struct chunker_params chunker_default_params = {
    .min_blocks = 1,
    .avg_blocks = 16,
    .max_blocks = 64,
};

#define P1 0x9e3779b97f4a7c15ULL
#define P2 0xc2b2ae3d27d4eb4fULL

static inline uint64_t mix(uint64_t h, uint64_t w)
{
    h ^= w * P2;
    h = (h << 31) | (h >> 33);
    return h * P1;
}

uint64_t chunker_block_fingerprint(const void *block)
{
    const unsigned char *p = block;
    uint64_t a = P1, b = P2, c = P1 ^ P2, d = P1 + P2;

    for (size_t i = 0; i < BLOCK_SIZE; i += 32) {
        uint64_t w[4];
        memcpy(w, p + i, sizeof(w));
        a = mix(a, w[0]);
        b = mix(b, w[1]);
        c = mix(c, w[2]);
        d = mix(d, w[3]);
    }
    uint64_t h = a ^ (b << 1) ^ (c << 2) ^ (d << 3);
    h ^= h >> 29;
    h *= P1;
    h ^= h >> 32;
    return h;
}

bool chunker_cut(const struct chunker_params *p, uint64_t fp, uint32_t len)
{
    if (len >= p->max_blocks)
        return true;
    if (len < p->min_blocks)
        return false;
    return (fp & (p->avg_blocks - 1)) == 0;
}
