/* The writer and the checker of volume-crash.sh.
 *
 *   volume-crash-helper write DATA REGION VOL SEED LOG
 *       writes, zero-writes and trims the first AREA bytes of volume VOL
 *       forever (until killed), operation i derived from (SEED, i); after
 *       every FLUSH_EVERY operations it calls volume_flush() and then
 *       appends "i" to LOG (fdatasync'ed): every operation up to the last
 *       number in LOG was flushed.
 *
 *   volume-crash-helper verify DATA REGION VOL SEED LOG BEFORE AFTER
 *       replays the flushed operations over BEFORE (the AREA bytes as they
 *       were when the writer started) and compares the volume with them,
 *       skipping only the bytes that the at most FLUSH_EVERY + 1
 *       operations after the last flush touched (they may or may not be
 *       there).  Writes what the volume holds now to AFTER (the next run's
 *       BEFORE).  Exit 0 when every flushed byte is there.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "service/service.h"
#include "volume/volume.h"

#define AREA (32u << 20)
#define FLUSH_EVERY 8
#define MAX_LEN (256u << 10)

struct op {
    int kind; /* 0 write, 1 zero, 2 trim */
    uint64_t off, len;
};

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static struct op make_op(uint64_t seed, uint64_t i)
{
    uint64_t h = mix(seed * 0x9e3779b97f4a7c15ULL + i);
    struct op o;
    uint64_t k = h % 10;
    o.kind = k < 7 ? 0 : k < 9 ? 1 : 2;
    o.len = 1 + mix(h) % MAX_LEN;
    o.off = mix(h + 1) % (AREA - o.len);
    if (h & (1ULL << 40))
        o.off &= ~4095ULL;
    return o;
}

static void fill(uint8_t *buf, uint64_t seed, uint64_t i, const struct op *o)
{
    uint64_t x = mix(seed ^ (i << 20));
    for (uint64_t j = 0; j < o->len; j++) {
        if (j % 8 == 0)
            x = mix(x + j);
        buf[j] = (uint8_t)(x >> (j % 8 * 8));
    }
}

static int open_volume(const char *data, const char *region, const char *vol,
                       struct region **ret_r, struct volume **ret_v)
{
    int e = region_open(data, region, false, ret_r);
    if (e == 0)
        e = service_volume_open(*ret_r, vol, 0, ret_v);
    if (e < 0)
        fprintf(stderr, "cannot open volume '%s': %s\n", vol,
                error_message() ? error_message() : strerror(-e));
    return e;
}

static int do_write(char **argv)
{
    struct region *r = NULL;
    struct volume *v = NULL;
    uint64_t seed = strtoull(argv[5], NULL, 10);
    uint8_t *buf = malloc(MAX_LEN);
    int log = open(argv[6], O_WRONLY | O_CREAT | O_APPEND, 0644);

    if (!buf || log < 0 || open_volume(argv[2], argv[3], argv[4], &r, &v) < 0)
        return 1;
    for (uint64_t i = 1;; i++) {
        struct op o = make_op(seed, i);
        int e;
        if (o.kind == 0) {
            fill(buf, seed, i, &o);
            e = volume_write(v, buf, o.len, o.off, false);
        } else if (o.kind == 1) {
            e = volume_zero(v, o.len, o.off, false);
        } else {
            e = volume_trim(v, o.len, o.off, false);
        }
        if (e == 0 && i % FLUSH_EVERY == 0) {
            e = volume_flush(v);
            char line[32];
            int n = snprintf(line, sizeof(line), "%llu\n", (unsigned long long)i);
            if (e == 0 && (write(log, line, (size_t)n) != n || fdatasync(log) < 0))
                e = -errno;
        }
        if (e < 0) {
            fprintf(stderr, "operation %llu failed: %s\n", (unsigned long long)i,
                    error_message() ? error_message() : strerror(-e));
            return 1;
        }
    }
}

static int do_verify(char **argv)
{
    struct region *r = NULL;
    struct volume *v = NULL;
    uint64_t seed = strtoull(argv[5], NULL, 10), last = 0;
    uint8_t *ref = malloc(AREA), *amb = calloc(1, AREA), *now = malloc(AREA);
    uint8_t *buf = malloc(MAX_LEN);
    FILE *f;
    char line[64];
    int fd;

    if (!ref || !amb || !now || !buf)
        return 1;
    fd = open(argv[7], O_RDONLY);
    if (fd < 0 || read(fd, ref, AREA) != (ssize_t)AREA) {
        fprintf(stderr, "cannot read '%s'\n", argv[7]);
        return 1;
    }
    close(fd);
    f = fopen(argv[6], "r");
    while (f && fgets(line, sizeof(line), f))
        if (strchr(line, '\n')) /* a torn last line is not a flush */
            last = strtoull(line, NULL, 10);
    if (f)
        fclose(f);
    for (uint64_t i = 1; i <= last + FLUSH_EVERY + 1; i++) {
        struct op o = make_op(seed, i);
        if (i > last) {
            memset(amb + o.off, 1, o.len);
            continue;
        }
        if (o.kind == 0) {
            fill(buf, seed, i, &o);
            memcpy(ref + o.off, buf, o.len);
        } else {
            memset(ref + o.off, 0, o.len);
        }
    }
    if (open_volume(argv[2], argv[3], argv[4], &r, &v) < 0)
        return 1;
    if (volume_read(v, now, AREA, 0) < 0) {
        fprintf(stderr, "cannot read the volume: %s\n", error_message());
        return 1;
    }
    uint64_t bad = 0, first = 0, checked = 0;
    for (uint64_t j = 0; j < AREA; j++) {
        if (amb[j])
            continue;
        checked++;
        if (now[j] != ref[j] && bad++ == 0)
            first = j;
    }
    /* Closing flushes: what was read is now the durable state. */
    if (volume_close(v) < 0) {
        fprintf(stderr, "cannot close the volume: %s\n", error_message());
        return 1;
    }
    region_free(r);
    fd = open(argv[8], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, now, AREA) != (ssize_t)AREA || close(fd) < 0)
        return 1;
    printf("%llu operations flushed; %llu bytes checked, %llu differ", (unsigned long long)last,
           (unsigned long long)checked, (unsigned long long)bad);
    if (bad)
        printf(" (first at %llu)", (unsigned long long)first);
    printf("\n");
    free(ref);
    free(amb);
    free(now);
    free(buf);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 7 && strcmp(argv[1], "write") == 0)
        return do_write(argv);
    if (argc == 9 && strcmp(argv[1], "verify") == 0)
        return do_verify(argv);
    fprintf(stderr, "usage: volume-crash-helper write DATA REGION VOL SEED LOG\n"
                    "       volume-crash-helper verify DATA REGION VOL SEED LOG BEFORE AFTER\n");
    return 2;
}
