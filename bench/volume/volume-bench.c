/* volume-bench DIR [GiB]: copy-on-write volumes, measured (not a test).
 *
 * In a scratch data directory DIR it writes a GiB-sized disk of mixed
 * content (random and compressible text, no holes), imports it, and
 * prints Markdown:
 *   - creating a volume from the snapshot (O(1): a row and a directory);
 *   - fetch amplification: cold random reads, at several read sizes,
 *     touching 5% of the volume, each read size on a fresh volume: bytes
 *     fetched from the store against bytes read, from the volume's
 *     counters;
 *   - warm reads through volume_read() (4 KiB at queue depth 1, 64 KiB
 *     with 2 threads);
 *   - CreateSnapshot after writing the same 64 MiB to a 2 GiB and a
 *     20 GiB volume of the same snapshot.
 * Wall-clock figures depend on the machine; the byte counts do not.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"
#include "service/service.h"
#include "volume/volume.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

static uint64_t rng = 0x2545f4914f6cdd1dULL;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int make_disk(const char *path, uint64_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    uint8_t *buf = malloc(MiB);
    if (fd < 0 || !buf)
        return -1;
    for (uint64_t off = 0; off < size; off += MiB) {
        if ((off / MiB) % 2 == 0) {
            for (size_t i = 0; i < MiB; i += 8) {
                uint64_t x = next();
                memcpy(buf + i, &x, 8);
            }
        } else {
            size_t n = 0;
            char line[80];
            while (n < MiB) {
                int l = snprintf(line, sizeof(line), "block %llu line %llu of some text\n",
                                 (unsigned long long)(off / 4096),
                                 (unsigned long long)(next() % 1000));
                size_t c = (size_t)l < MiB - n ? (size_t)l : MiB - n;
                memcpy(buf + n, line, c);
                n += c;
            }
        }
        if (write(fd, buf, MiB) != (ssize_t)MiB)
            return -1;
    }
    free(buf);
    return close(fd);
}

static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static double ms_since(uint64_t t0)
{
    return (double)(now_ns() - t0) / 1e6;
}

static void die(const char *what)
{
    fprintf(stderr, "volume-bench: %s: %s\n", what, error_message() ? error_message() : "");
    exit(1);
}

struct warm {
    struct volume *v;
    uint64_t size, reads, len;
    uint64_t seed;
};

static void *warm_main(void *arg)
{
    struct warm *w = arg;
    uint8_t *buf = malloc(w->len);
    uint64_t x = w->seed;
    for (uint64_t i = 0; i < w->reads; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t off = x % (w->size / w->len) * w->len;
        if (volume_read(w->v, buf, w->len, off) < 0)
            die("warm read");
    }
    free(buf);
    return NULL;
}

int main(int argc, char **argv)
{
    struct region *r = NULL;
    struct service_import_options io = {.format = IMAGE_FORMAT_RAW};
    struct import_stats ist;
    char path[4096], snap[ID_MAX_SIZE], vol[ID_MAX_SIZE];
    uint64_t gib = argc > 2 ? strtoull(argv[2], NULL, 10) : 2;
    uint64_t size = gib * GiB;
    uint64_t t0;

    if (argc < 2) {
        fprintf(stderr, "usage: volume-bench DIR [GiB]\n");
        return 2;
    }
    mkdir_p(argv[1]);
    snprintf(path, sizeof(path), "%s/disk.raw", argv[1]);
    if (make_disk(path, size) < 0)
        die("cannot write the disk");
    if (region_open(argv[1], "us-east-1", false, &r) < 0)
        die("region");
    if (service_snapshot_import(r, path, &io, snap, &ist) < 0)
        die("import");
    unlink(path);
    printf("Disk: %llu GiB of mixed content (half random, half text), %llu chunks "
           "(average %.0f KiB).\n\n",
           (unsigned long long)gib, (unsigned long long)ist.chunks,
           (double)ist.bytes_read / (double)ist.chunks / 1024);

    /* ---- create (as the API does: the owner is known) ---- */
    char owner[ACCOUNT_ID_SIZE];
    if (service_default_account(argv[1], owner) < 0)
        die("account");
    double best = 1e9, worst = 0, create_ms[20];
    for (int i = 0; i < 20; i++) {
        struct service_volume_create_options co = {.snapshot_id = snap, .owner = owner,
                                                   .size_gib = i % 2 ? 20 : 0};
        t0 = now_ns();
        if (service_volume_create(r, &co, vol) < 0)
            die("create");
        double ms = ms_since(t0);
        create_ms[i] = ms;
        best = ms < best ? ms : best;
        worst = ms > worst ? ms : worst;
        service_volume_delete(r, vol);
    }
    printf("| measurement | result |\n| --- | --- |\n");
    int under10 = 0;
    for (int i = 0; i < 20; i++)
        under10 += create_ms[i] < 10;
    printf("| create a volume from the snapshot (20 runs, %llu and 20 GiB) | %.2f to %.2f ms "
           "(%d of 20 under 10 ms) |\n",
           (unsigned long long)gib, best, worst, under10);

    /* ---- fetch amplification ---- */
    static const uint64_t sizes[] = {4096, 65536, 256 * 1024, 512 * 1024, MiB, 4 * MiB};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        struct service_volume_create_options co = {.snapshot_id = snap};
        struct volume *v = NULL;
        struct volume_stats st;
        uint64_t len = sizes[k], slots = size / len, want = slots / 20;
        uint8_t *buf = malloc(len);
        uint64_t *perm = malloc(slots * sizeof(*perm));
        if (service_volume_create(r, &co, vol) < 0 || service_volume_open(r, vol, 0, &v) < 0)
            die("volume");
        for (uint64_t i = 0; i < slots; i++)
            perm[i] = i;
        for (uint64_t i = 0; i < want; i++) {
            uint64_t j = i + next() % (slots - i), t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        t0 = now_ns();
        for (uint64_t i = 0; i < want; i++)
            if (volume_read(v, buf, len, perm[i] * len) < 0)
                die("read");
        double ms = ms_since(t0);
        volume_stats(v, &st);
        printf("| cold random %llu KiB reads over 5%% (%llu MiB read) | %llu MiB fetched in "
               "%llu chunks: **%.2fx**; %.0f MB/s |\n",
               (unsigned long long)(len / 1024), (unsigned long long)(st.bytes_read / MiB),
               (unsigned long long)(st.bytes_fetched / MiB),
               (unsigned long long)st.chunks_fetched,
               (double)st.bytes_fetched / (double)st.bytes_read,
               (double)st.bytes_read / ms / 1e3);
        free(buf);
        free(perm);
        volume_close(v);
        service_volume_delete(r, vol);
    }

    /* ---- warm reads ---- */
    {
        struct service_volume_create_options co = {.snapshot_id = snap};
        struct volume *v = NULL;
        if (service_volume_create(r, &co, vol) < 0 || service_volume_open(r, vol, 0, &v) < 0)
            die("volume");
        if (volume_cache(v, size, 0) < 0)
            die("prefetch");
        struct warm w = {.v = v, .size = size, .reads = 200000, .len = 4096, .seed = 99};
        t0 = now_ns();
        warm_main(&w);
        double ms = ms_since(t0);
        printf("| warm random 4 KiB reads, 1 thread | %.1f us per read |\n",
               ms * 1e3 / (double)w.reads);
        struct warm ws[2];
        pthread_t th[2];
        t0 = now_ns();
        for (int i = 0; i < 2; i++) {
            ws[i] = (struct warm){.v = v, .size = size, .reads = 20000, .len = 65536,
                                  .seed = 7 + (uint64_t)i};
            pthread_create(&th[i], NULL, warm_main, &ws[i]);
        }
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
        ms = ms_since(t0);
        printf("| warm random 64 KiB reads, 2 threads | %.0f MB/s |\n",
               2.0 * 20000 * 65536 / ms / 1e3);
        volume_close(v);
        service_volume_delete(r, vol);
    }

    /* ---- flush: one 4 KiB write into a new block, then volume_flush(),
     * on a small and a 20 GiB volume (the bitmap is rewritten whole). ---- */
    {
        uint32_t fs[2] = {(uint32_t)gib, 20};
        uint8_t blk[4096];
        memset(blk, 0x5a, sizeof(blk));
        for (int k = 0; k < 2; k++) {
            struct service_volume_create_options co = {.snapshot_id = snap, .size_gib = fs[k]};
            struct volume *v = NULL;
            double ms[10];
            if (service_volume_create(r, &co, vol) < 0 || service_volume_open(r, vol, 0, &v) < 0)
                die("volume");
            for (int i = 0; i < 10; i++) {
                if (volume_write(v, blk, sizeof(blk), (uint64_t)i * 8 * MiB, false) < 0)
                    die("write");
                t0 = now_ns();
                if (volume_flush(v) < 0)
                    die("flush");
                ms[i] = ms_since(t0);
            }
            for (int i = 1; i < 10; i++)
                for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) {
                    double s = ms[j];
                    ms[j] = ms[j - 1];
                    ms[j - 1] = s;
                }
            char *bm = service_volume_dir(r, vol);
            char *bmf = xasprintf("%s/bitmap", bm);
            struct stat bst = {0};
            stat(bmf, &bst);
            printf("| flush after a 4 KiB write to a new block, %u GiB volume (10 runs) | "
                   "median %.1f ms (%.1f to %.1f); bitmap file %lld bytes (dense: %llu KiB) |\n",
                   fs[k], ms[5], ms[0], ms[9], (long long)bst.st_size,
                   (unsigned long long)((uint64_t)fs[k] * GiB / 4096 / 8 * 2 / 1024));
            free(bmf);
            free(bm);
            volume_close(v);
            service_volume_delete(r, vol);
        }
    }

    /* ---- CreateSnapshot: the same amount written to a small and a large
     * volume (fresh random data each time, so every run stores new chunks),
     * alternating, 3 runs each; the median. ---- */
    uint8_t *data = malloc(MiB);
    uint32_t vsizes[2] = {(uint32_t)gib, 20};
    double snap_ms[2][3], snap_cpu[2][3];
    struct volume_snapshot_stats last[2];
    for (int run = 0; run < 6; run++) {
        int k = run % 2;
        struct service_volume_create_options co = {.snapshot_id = snap, .size_gib = vsizes[k]};
        struct volume *v = NULL;
        char s2[ID_MAX_SIZE];
        if (service_volume_create(r, &co, vol) < 0 || service_volume_open(r, vol, 0, &v) < 0)
            die("volume");
        for (int i = 0; i < 64; i++) {
            for (size_t j = 0; j < MiB; j += 8) {
                uint64_t x = next();
                memcpy(data + j, &x, 8);
            }
            if (volume_write(v, data, MiB, (uint64_t)(i * 29 % (size / MiB)) * MiB, false) < 0)
                die("write");
        }
        volume_close(v);
        t0 = now_ns();
        uint64_t c0 = cpu_ns();
        if (service_volume_snapshot(r, vol, NULL, s2, &last[k]) < 0)
            die("snapshot");
        snap_ms[k][run / 2] = ms_since(t0);
        snap_cpu[k][run / 2] = (double)(cpu_ns() - c0) / 1e6;
        service_volume_delete(r, vol);
        service_snapshot_delete(r, s2);
    }
    for (int k = 0; k < 2; k++) {
        double *m = snap_ms[k], med;
        med = m[0] > m[1] ? (m[1] > m[2] ? m[1] : (m[0] > m[2] ? m[2] : m[0]))
                          : (m[0] > m[2] ? m[0] : (m[1] > m[2] ? m[2] : m[1]));
        double *c = snap_cpu[k], cmed;
        cmed = c[0] > c[1] ? (c[1] > c[2] ? c[1] : (c[0] > c[2] ? c[2] : c[0]))
                           : (c[0] > c[2] ? c[0] : (c[1] > c[2] ? c[2] : c[1]));
        printf("| CreateSnapshot of a %u GiB volume after 64 MiB of writes (median of 3) | "
               "%.0f ms CPU, %.0f ms wall (runs %.0f, %.0f, %.0f); %llu MiB read, %llu chunks "
               "new, %llu shared |\n",
               vsizes[k], cmed, med, m[0], m[1], m[2],
               (unsigned long long)(last[k].bytes_read / MiB),
               (unsigned long long)last[k].chunks_new, (unsigned long long)last[k].chunks_shared);
    }
    free(data);
    region_free(r);
    return 0;
}
