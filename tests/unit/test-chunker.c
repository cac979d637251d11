/* Unit tests for the chunker: cut rules, determinism, and the property the
 * design relies on: the same run of blocks at another offset produces the
 * same chunks after the first cut point. */
#include "common/util.h"
#include "snapshot/snapshot.h"
#include "tap.h"

#define NB 2048

static uint8_t img[NB * BLOCK_SIZE];

/* Cut blocks [from, from + n) of buf; write chunk ids into out. */
static size_t cut(const uint8_t *buf, size_t n, struct digest *out)
{
    const struct chunker_params *p = &chunker_default_params;
    size_t k = 0, start = 0;
    uint32_t len = 0;

    for (size_t b = 0; b < n; b++) {
        if (len == 0)
            start = b;
        len++;
        if (chunker_cut(p, chunker_block_fingerprint(buf + b * BLOCK_SIZE), len) || b == n - 1) {
            sha256(buf + start * BLOCK_SIZE, (size_t)len * BLOCK_SIZE, &out[k++]);
            len = 0;
        }
    }
    return k;
}

int main(void)
{
    const struct chunker_params *p = &chunker_default_params;
    static struct digest a[NB], b[NB];
    uint64_t x = 88172645463325252ULL;

    for (size_t i = 0; i < sizeof(img); i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(img + i, &x, 8);
    }
    ok((p->avg_blocks & (p->avg_blocks - 1)) == 0, "average is a power of two");
    ok(p->min_blocks >= 1 && p->min_blocks <= p->max_blocks, "min <= max");
    ok((uint64_t)p->max_blocks * BLOCK_SIZE <= STORE_CHUNK_MAX, "max chunk fits the store");
    ok(chunker_cut(p, 1, p->max_blocks), "always cut at max");
    ok(!chunker_cut(p, 0, p->min_blocks - 1 ? p->min_blocks - 1 : 0) || p->min_blocks <= 1,
       "never cut below min");
    ok(chunker_cut(p, 0, p->min_blocks), "cut when the fingerprint matches");
    is_int(chunker_block_fingerprint(img), chunker_block_fingerprint(img),
           "fingerprint is deterministic");

    size_t na = cut(img, NB, a);
    double avg = (double)NB / (double)na;
    ok(avg > p->avg_blocks * 0.6 && avg < p->avg_blocks * 2.0 + p->min_blocks,
       "average chunk %.2f blocks for avg %u", avg, p->avg_blocks);

    /* Shift: the same blocks preceded by 3 other blocks. */
    static uint8_t shifted[(NB + 3) * BLOCK_SIZE];
    memset(shifted, 0x5a, 3 * BLOCK_SIZE);
    memcpy(shifted + 3 * BLOCK_SIZE, img, sizeof(img));
    size_t nb = cut(shifted, NB + 3, b);
    size_t common = 0;
    for (size_t i = 0; i < na; i++)
        for (size_t j = 0; j < nb && j < i + 8; j++)
            if (digest_equal(&a[i], &b[j])) {
                common++;
                break;
            }
    ok(common >= na - 2, "shifted content resynchronises: %zu of %zu chunks shared", common, na);
    return done_testing();
}
