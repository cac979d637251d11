/* Chunking parameter study: for each (min, avg, max) candidate, cut the bench
 * images with kiln's chunker and report what a store would hold: the stored
 * size of image a, the bytes images b (in place), c (rebuilt) and d
 * (unrelated) add after a, the number of chunks, and the block map size.
 * Compression is zstd level 1 per chunk, as the store does it.  Each
 * candidate runs without and with the file system cut hints (layout.c).
 *
 *   build/bench/chunk-params [DIR]   (DIR holds a.raw b.raw c.raw d.raw)
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "common/digest-map.h"
#include "common/util.h"
#include "snapshot/layout.h"
#include "snapshot/snapshot.h"

struct result {
    uint64_t added, chunks;
};

static ZSTD_CCtx *cctx;
static void *cbuf;
static bool use_hints;

static void emit(const uint8_t *img, uint64_t start, uint32_t len, struct digest_map *seen,
                 struct result *res)
{
    struct digest id;
    bool created;

    sha256(img + start * BLOCK_SIZE, (size_t)len * BLOCK_SIZE, &id);
    digest_map_insert(seen, &id, &created);
    res->chunks++;
    if (created) {
        size_t n = ZSTD_compressCCtx(cctx, cbuf, ZSTD_compressBound(STORE_CHUNK_MAX),
                                     img + start * BLOCK_SIZE, (size_t)len * BLOCK_SIZE, 1);
        res->added += 16 + MIN(n, (size_t)len * BLOCK_SIZE);
    }
}

/* Cut image `path`, add its chunks to `seen`, return bytes newly stored. */
static struct result run_image(const char *path, const struct chunker_params *p,
                               struct digest_map *seen)
{
    struct result res = { 0 };
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        perror(path);
        exit(1);
    }
    const uint8_t *img = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    uint64_t nblocks = (uint64_t)st.st_size / BLOCK_SIZE, start = 0;
    uint32_t len = 0;
    struct layout_hints h = { 0 };
    size_t next = 0;

    if (use_hints) {
        struct source src;
        if (source_open(path, IMAGE_FORMAT_RAW, &src) == 0) {
            layout_hints_find(&src, &h);
            source_release(&src);
        }
    }
    for (uint64_t b = 0; b <= nblocks; b++) {
        bool end = b == nblocks;
        while (next < h.n && h.blocks[next] < b)
            next++;
        if (len && next < h.n && h.blocks[next] == b) {
            emit(img, start, len, seen, &res);
            len = 0;
        }
        bool zero = !end && buf_is_zero(img + b * BLOCK_SIZE, BLOCK_SIZE);
        bool cut = false;
        if (!end && !zero) {
            if (len == 0)
                start = b;
            len++;
            cut = chunker_cut(p, chunker_block_fingerprint(img + b * BLOCK_SIZE), len);
        }
        if ((end || zero || cut) && len) {
            emit(img, start, len, seen, &res);
            len = 0;
        }
    }
    layout_hints_release(&h);
    munmap((void *)img, (size_t)st.st_size);
    close(fd);
    return res;
}

int main(int argc, char **argv)
{
    static const struct chunker_params cands[] = {
        { 1, 1, 1 },  { 1, 2, 8 },   { 1, 4, 16 },   { 1, 8, 32 },
        { 1, 16, 64 }, { 1, 32, 128 }, { 1, 64, 256 },
    };
    const char *dir = argc > 1 ? argv[1] : "/var/tmp/kiln-bench";
    char a[512], b[512], c[512], d[512];

    snprintf(a, sizeof(a), "%s/a.raw", dir);
    snprintf(b, sizeof(b), "%s/b.raw", dir);
    snprintf(c, sizeof(c), "%s/c.raw", dir);
    snprintf(d, sizeof(d), "%s/d.raw", dir);
    cctx = ZSTD_createCCtx();
    cbuf = malloc(ZSTD_compressBound(STORE_CHUNK_MAX));
    printf("| hints | min/avg/max blocks | a stored MB | a chunks | map KB | b added MB | c added MB "
           "| d alone MB | d added MB | d saving |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for (size_t k = 0; k < 2 * sizeof(cands) / sizeof(cands[0]); k++) {
        size_t i = k % (sizeof(cands) / sizeof(cands[0]));
        use_hints = k >= sizeof(cands) / sizeof(cands[0]);
        const struct chunker_params *p = &cands[i];
        struct digest_map seen;
        digest_map_init(&seen);
        struct result ra = run_image(a, p, &seen);
        struct digest_map sa = seen; /* snapshot of the map after a */
        sa.slots = xmalloc(seen.cap * sizeof(*seen.slots));
        memcpy(sa.slots, seen.slots, seen.cap * sizeof(*seen.slots));
        struct digest_map s2 = sa;
        s2.slots = xmalloc(sa.cap * sizeof(*sa.slots));
        memcpy(s2.slots, sa.slots, sa.cap * sizeof(*sa.slots));
        struct digest_map s3 = sa;
        s3.slots = xmalloc(sa.cap * sizeof(*sa.slots));
        memcpy(s3.slots, sa.slots, sa.cap * sizeof(*sa.slots));
        struct result rb = run_image(b, p, &seen);
        struct result rc = run_image(c, p, &s2);
        struct result rd = run_image(d, p, &s3);
        struct digest_map alone;
        digest_map_init(&alone);
        struct result rd0 = run_image(d, p, &alone);
        printf("| %s | %u/%u/%u | %.1f | %llu | %llu | %.1f | %.1f | %.1f | %.1f | %.0f%% |\n",
               use_hints ? "yes" : "no", p->min_blocks, p->avg_blocks, p->max_blocks,
               ra.added / 1e6,
               (unsigned long long)ra.chunks, (unsigned long long)(ra.chunks * 48 / 1024),
               rb.added / 1e6, rc.added / 1e6, rd0.added / 1e6, rd.added / 1e6,
               100.0 * (1.0 - (double)rd.added / (double)rd0.added));
        fflush(stdout);
        digest_map_release(&seen);
        digest_map_release(&sa);
        digest_map_release(&s2);
        digest_map_release(&s3);
        digest_map_release(&alone);
    }
    return 0;
}
