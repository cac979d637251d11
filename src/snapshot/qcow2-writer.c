/* qcow2 writer: produces a self-contained qcow2 version 3 image with 64 KiB
 * clusters, no compression and 16-bit refcounts from clusters handed over in
 * increasing guest order.
 *
 * Layout, in file order:
 *   cluster 0                  the header (written last)
 *   clusters 1..D              data clusters, in the order they were put
 *   then                       the L2 tables that map at least one cluster
 *   then                       the L1 table
 *   then                       the refcount table, then the refcount blocks
 *
 * Design notes:
 * - Data goes to the file as it arrives; in memory we keep only the runs of
 *   consecutive guest clusters (data clusters are allocated sequentially, so
 *   a run of guest clusters is also a run of host clusters).  All-zero
 *   clusters are not stored: unallocated clusters read as zeros.
 * - finish() writes every table, fsyncs, and only then writes the header and
 *   fsyncs again: an image cut short by a crash has no valid header rather
 *   than a header pointing at missing tables.
 * - Every cluster has refcount 1, so every L1 and L2 entry carries the COPIED
 *   flag, which `qemu-img check` verifies.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "snapshot/qcow2.h"

#define CLUSTER_BITS 16
#define CLUSTER_SIZE (1u << CLUSTER_BITS)
#define L2_ENTRIES (CLUSTER_SIZE / 8)
#define REFCOUNT_ORDER 4 /* 16-bit refcounts */
#define REFCOUNTS_PER_BLOCK (CLUSTER_SIZE * 8 / (1u << REFCOUNT_ORDER))
#define HEADER_LEN 112   /* version 3 header with the compression type field */
#define MAX_SIZE (1ULL << 50) /* 1 PiB: a 16 MiB L1 table, under qemu's 32 MiB */

#define OFLAG_COPIED (1ULL << 63)

struct run {
    uint64_t guest; /* first guest cluster index */
    uint64_t count; /* consecutive guest (and host) clusters */
};

struct qcow2_writer {
    int fd;
    uint64_t size;
    uint64_t next;     /* the lowest offset put() accepts */
    uint64_t n_data;   /* data clusters written so far */
    struct run *runs;
    size_t n_runs, cap_runs;
    int error;         /* sticky: the first failure */
    bool finished;
};

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

int qcow2_writer_new(int fd, uint64_t size, struct qcow2_writer **ret)
{
    struct qcow2_writer *w;

    if (size % 512)
        return error_set(EINVAL,
                         "cannot write a qcow2 image of %" PRIu64
                         " bytes: the size must be a multiple of 512",
                         size);
    if (size > MAX_SIZE)
        return error_set(EINVAL,
                         "cannot write a qcow2 image of %" PRIu64 " bytes: the limit is 1 PiB",
                         size);
    w = xcalloc(1, sizeof(*w));
    w->fd = fd;
    w->size = size;
    *ret = w;
    return 0;
}

uint32_t qcow2_writer_cluster_size(const struct qcow2_writer *w)
{
    return CLUSTER_SIZE;
}

static int fail(struct qcow2_writer *w, int e)
{
    if (!w->error)
        w->error = e;
    return e;
}

int qcow2_writer_put(struct qcow2_writer *w, uint64_t offset, const void *data)
{
    uint64_t cluster = offset / CLUSTER_SIZE;
    uint64_t tail;
    int e;

    if (w->error)
        return w->error;
    if (w->finished)
        return error_set(EINVAL, "qcow2 image already finished");
    if (offset % CLUSTER_SIZE || offset >= w->size || offset < w->next)
        return error_set(EINVAL,
                         "cannot put qcow2 cluster at offset %" PRIu64
                         ": offsets must be cluster aligned, increasing and inside the "
                         "%" PRIu64 "-byte disk",
                         offset, w->size);
    tail = MIN((uint64_t)CLUSTER_SIZE, w->size - offset);
    if (tail < CLUSTER_SIZE && !buf_is_zero((const uint8_t *)data + tail, CLUSTER_SIZE - tail))
        return error_set(EINVAL,
                         "cannot put qcow2 cluster at offset %" PRIu64
                         ": it holds data past the end of the disk",
                         offset);
    w->next = offset + CLUSTER_SIZE;
    if (buf_is_zero(data, CLUSTER_SIZE))
        return 0; /* unallocated clusters read as zeros */

    e = write_all(w->fd, data, CLUSTER_SIZE, (off_t)((1 + w->n_data) * CLUSTER_SIZE));
    if (e < 0)
        return fail(w, error_set(e, "cannot write qcow2 image: %s", strerror(-e)));
    w->n_data++;
    if (w->n_runs > 0 && w->runs[w->n_runs - 1].guest + w->runs[w->n_runs - 1].count == cluster) {
        w->runs[w->n_runs - 1].count++;
        return 0;
    }
    if (w->n_runs == w->cap_runs) {
        w->cap_runs = w->cap_runs ? w->cap_runs * 2 : 64;
        w->runs = xrealloc(w->runs, w->cap_runs * sizeof(*w->runs));
    }
    w->runs[w->n_runs++] = (struct run){ .guest = cluster, .count = 1 };
    return 0;
}

static int write_clusters(struct qcow2_writer *w, const void *buf, uint64_t n, uint64_t cluster)
{
    int e = write_all(w->fd, buf, (size_t)(n * CLUSTER_SIZE), (off_t)(cluster * CLUSTER_SIZE));
    if (e < 0)
        return fail(w, error_set(e, "cannot write qcow2 image: %s", strerror(-e)));
    return 0;
}

/* Write the L2 tables (in L1 order) for every L1 entry that maps some
 * cluster, from host cluster `first` on, and fill in the big-endian l1. */
static int write_l2_tables(struct qcow2_writer *w, uint8_t *l1, uint64_t first)
{
    _cleanup_free_ uint8_t *table = xcalloc(1, CLUSTER_SIZE);
    uint64_t host = 1; /* the host cluster of the next data cluster */
    uint64_t current = UINT64_MAX, table_cluster = first - 1;
    int e;

    for (size_t i = 0; i < w->n_runs; i++) {
        for (uint64_t c = w->runs[i].guest; c < w->runs[i].guest + w->runs[i].count; c++) {
            uint64_t l1i = c / L2_ENTRIES;
            if (l1i != current) {
                if (current != UINT64_MAX) {
                    e = write_clusters(w, table, 1, table_cluster);
                    if (e < 0)
                        return e;
                }
                memset(table, 0, CLUSTER_SIZE);
                current = l1i;
                table_cluster++;
                put_be64(l1 + l1i * 8, table_cluster * CLUSTER_SIZE | OFLAG_COPIED);
            }
            put_be64(table + (c % L2_ENTRIES) * 8, host++ * CLUSTER_SIZE | OFLAG_COPIED);
        }
    }
    if (current != UINT64_MAX)
        return write_clusters(w, table, 1, table_cluster);
    return 0;
}

int qcow2_writer_finish(struct qcow2_writer *w)
{
    uint64_t guest_clusters = DIV_ROUND_UP(w->size, CLUSTER_SIZE);
    uint64_t l1_size = DIV_ROUND_UP(guest_clusters, L2_ENTRIES);
    uint64_t l1_clusters = DIV_ROUND_UP(l1_size * 8, CLUSTER_SIZE);
    uint64_t n_l2 = 0, last = UINT64_MAX;
    uint64_t l2_first, l1_first, rt_first, rb_first, total, n_rt = 0, n_rb = 0;
    _cleanup_free_ uint8_t *l1 = NULL;
    _cleanup_free_ uint8_t *buf = NULL;
    int e;

    if (w->error)
        return w->error;
    if (w->finished)
        return error_set(EINVAL, "qcow2 image already finished");

    for (size_t i = 0; i < w->n_runs; i++) {
        uint64_t a = w->runs[i].guest / L2_ENTRIES;
        uint64_t b = (w->runs[i].guest + w->runs[i].count - 1) / L2_ENTRIES;
        n_l2 += b - a + 1 - (a == last);
        last = b;
    }
    l2_first = 1 + w->n_data;
    l1_first = l2_first + n_l2;
    rt_first = l1_first + l1_clusters;
    /* The refcount blocks must count themselves and the table: iterate to
     * the fixed point (two or three rounds). */
    for (;;) {
        uint64_t rb, rt;
        total = rt_first + n_rt + n_rb;
        rb = DIV_ROUND_UP(total, REFCOUNTS_PER_BLOCK);
        rt = DIV_ROUND_UP(rb * 8, CLUSTER_SIZE);
        if (rb == n_rb && rt == n_rt)
            break;
        n_rb = rb;
        n_rt = rt;
    }
    rb_first = rt_first + n_rt;

    /* L2 tables, then L1. */
    l1 = xcalloc(l1_clusters ? l1_clusters : 1, CLUSTER_SIZE);
    e = write_l2_tables(w, l1, l2_first);
    if (e < 0)
        return e;
    e = write_clusters(w, l1, l1_clusters, l1_first);
    if (e < 0)
        return e;

    /* Refcount table, then blocks. */
    buf = xcalloc(n_rt, CLUSTER_SIZE);
    for (uint64_t i = 0; i < n_rb; i++)
        put_be64(buf + i * 8, (rb_first + i) * CLUSTER_SIZE);
    e = write_clusters(w, buf, n_rt, rt_first);
    if (e < 0)
        return e;
    free(buf);
    buf = xmalloc(CLUSTER_SIZE);
    for (uint64_t b = 0; b < n_rb; b++) {
        memset(buf, 0, CLUSTER_SIZE);
        for (uint64_t i = 0; i < REFCOUNTS_PER_BLOCK; i++)
            if (b * REFCOUNTS_PER_BLOCK + i < total)
                put_be16(buf + i * 2, 1);
        e = write_clusters(w, buf, 1, rb_first + b);
        if (e < 0)
            return e;
    }

    /* Everything the header points at is durable before the header. */
    if (fsync(w->fd) < 0)
        return fail(w, error_set(errno, "cannot fsync qcow2 image: %s", strerror(errno)));
    memset(buf, 0, CLUSTER_SIZE);
    memcpy(buf, QCOW2_MAGIC_BYTES, 4);
    put_be32(buf + 4, 3);                            /* version */
    put_be32(buf + 20, CLUSTER_BITS);
    put_be64(buf + 24, w->size);
    put_be32(buf + 36, (uint32_t)l1_size);
    put_be64(buf + 40, l1_first * CLUSTER_SIZE);
    put_be64(buf + 48, rt_first * CLUSTER_SIZE);
    put_be32(buf + 56, (uint32_t)n_rt);
    put_be32(buf + 96, REFCOUNT_ORDER);
    put_be32(buf + 100, HEADER_LEN);
    /* Compression type 0 (deflate, unused), then the end-of-extensions
     * marker at HEADER_LEN: both zero already. */
    e = write_clusters(w, buf, 1, 0);
    if (e < 0)
        return e;
    if (fsync(w->fd) < 0)
        return fail(w, error_set(errno, "cannot fsync qcow2 image: %s", strerror(errno)));
    w->finished = true;
    return 0;
}

void qcow2_writer_free(struct qcow2_writer *w)
{
    if (!w)
        return;
    free(w->runs);
    free(w);
}
