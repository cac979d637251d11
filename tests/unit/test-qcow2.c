/* Tests for the qcow2 reader and writer, against images that qemu-img and
 * qemu-io make at test time: every variant of a patterned raw disk (v2, v3,
 * deflate, zstd, 512-byte and 2 MiB clusters, extended L2, zero clusters)
 * must read back byte for byte with holes reported as holes; the writer's
 * output must pass `qemu-img check` and `qemu-img compare`; and each kind of
 * image kiln refuses must be refused with a message that names the problem.
 * Skips (exit 77) when qemu-img is not installed. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "snapshot/qcow2.h"
#include "tap.h"

#define KiB (1024ULL)
#define MiB (1024ULL * 1024)
#define GiB (1024ULL * MiB)

/* 5 MiB and three sectors: not a multiple of any cluster size. */
#define RAW_SIZE (5 * MiB + 3 * 512)

static char dir[256];
static bool have_qemu_io;

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void fill_random(uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(rng() >> 24);
}

static void fill_text(uint8_t *p, size_t len)
{
    static const char text[] = "kiln reads qcow2 images without qemu-img at run time. ";

    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)text[(i + i / 4096) % (sizeof(text) - 1)];
}

/* Run a shell command inside the test directory; returns its exit status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    int n, status;
    va_list ap;

    n = snprintf(cmd, sizeof(cmd), "cd '%s' && ", dir);
    va_start(ap, fmt);
    vsnprintf(cmd + n, sizeof(cmd) - (size_t)n, fmt, ap);
    va_end(ap);
    status = system(cmd);
    if (status == -1 || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

static const char *path_of(const char *name)
{
    static char buf[4][512];
    static unsigned next;
    char *p = buf[next++ % 4];

    snprintf(p, sizeof(buf[0]), "%s/%s", dir, name);
    return p;
}

static uint8_t *read_whole(const char *name, size_t *ret_len)
{
    struct stat st;
    _cleanup_close_ int fd = open(path_of(name), O_RDONLY | O_CLOEXEC);
    uint8_t *p;

    if (fd < 0 || fstat(fd, &st) < 0)
        return NULL;
    p = xmalloc((size_t)st.st_size);
    if (pread_full(fd, p, (size_t)st.st_size, 0) != st.st_size) {
        free(p);
        return NULL;
    }
    *ret_len = (size_t)st.st_size;
    return p;
}

static int write_file(const char *name, const void *buf, size_t len)
{
    _cleanup_close_ int fd = open(path_of(name), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

    if (fd < 0)
        return -errno;
    return write_all(fd, buf, len, 0);
}

/* Copy `src` to `dst`, keeping the first `max` bytes at most. */
static void copy_file(const char *src, const char *dst, size_t max)
{
    size_t len;
    _cleanup_free_ uint8_t *p = read_whole(src, &len);

    if (!p || write_file(dst, p, MIN(len, max)) < 0) {
        printf("Bail out! cannot copy '%s'\n", src);
        exit(1);
    }
}

static void patch(const char *name, uint64_t offset, const void *bytes, size_t len)
{
    _cleanup_close_ int fd = open(path_of(name), O_WRONLY | O_CLOEXEC);

    if (fd < 0 || write_all(fd, bytes, len, (off_t)offset) < 0) {
        printf("Bail out! cannot patch '%s'\n", name);
        exit(1);
    }
}

static void patch_be32(const char *name, uint64_t offset, uint32_t v)
{
    uint8_t b[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
    patch(name, offset, b, 4);
}

static void patch_be64(const char *name, uint64_t offset, uint64_t v)
{
    patch_be32(name, offset, (uint32_t)(v >> 32));
    patch_be32(name, offset + 4, (uint32_t)v);
}

static uint64_t get_be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* The raw L2 entry for guest cluster 0, and where it is in the file. */
static uint64_t l2_entry0(const char *name, uint64_t *ret_where)
{
    size_t len;
    _cleanup_free_ uint8_t *p = read_whole(name, &len);
    uint64_t l1_offset, l2_offset;

    if (!p || len < 104)
        return 0;
    l1_offset = get_be(p + 40, 8);
    if (l1_offset + 8 > len)
        return 0;
    l2_offset = get_be(p + l1_offset, 8) & 0x00fffffffffffe00ULL;
    if (l2_offset == 0 || l2_offset + 8 > len)
        return 0;
    *ret_where = l2_offset;
    return get_be(p + l2_offset, 8);
}

/* The patterned disk: compressible text, random data, a 2 MiB hole, zeros
 * written explicitly, small unaligned writes and data in the last sector. */
static uint8_t *make_raw(const char *name)
{
    uint8_t *raw = xcalloc(1, RAW_SIZE);
    _cleanup_close_ int fd = -1;

    fill_text(raw, 512 * KiB);
    for (size_t i = 0; i < 512 * KiB; i += 16) /* compresses, but not to nothing */
        raw[i] = (uint8_t)rng();
    fill_random(raw + 512 * KiB, 512 * KiB);
    /* [1 MiB, 3 MiB) is a hole. */
    fill_text(raw + 3 * MiB, 100 * KiB);
    /* [3 MiB + 100 KiB, 3.5 MiB) is written zeros. */
    fill_random(raw + 4 * MiB + 512, 512);
    fill_text(raw + 4 * MiB + 200000, 3000);
    fill_random(raw + RAW_SIZE - 1536, 1536);

    fd = open(path_of(name), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, RAW_SIZE) < 0 ||
        write_all(fd, raw, 1 * MiB, 0) < 0 ||
        write_all(fd, raw + 3 * MiB, 512 * KiB, 3 * MiB) < 0 ||
        write_all(fd, raw + 4 * MiB, 256 * KiB, 4 * MiB) < 0 ||
        write_all(fd, raw + RAW_SIZE - 4096, 4096, RAW_SIZE - 4096) < 0) {
        printf("Bail out! cannot write '%s'\n", name);
        exit(1);
    }
    return raw;
}

static int open_image(const char *name, struct qcow2_reader **ret, int *ret_fd)
{
    int fd = open(path_of(name), O_RDONLY | O_CLOEXEC);
    int r;

    if (fd < 0)
        return -errno;
    error_clear();
    r = qcow2_reader_open(fd, ret);
    if (r < 0) {
        close(fd);
        return r;
    }
    *ret_fd = fd;
    return 0;
}

static bool same(const uint8_t *a, const uint8_t *b, size_t len, uint64_t base)
{
    for (size_t i = 0; i < len; i++)
        if (a[i] != b[i]) {
            printf("#   first difference at offset %llu: got 0x%02x, want 0x%02x\n",
                   (unsigned long long)(base + i), a[i], b[i]);
            return false;
        }
    return true;
}

/* Read `name` every way an importer might and compare with `raw`.
 * min_hole: bytes that must be reported as holes (0: do not check). */
static void check_image(const char *what, const char *name, const uint8_t *raw, uint64_t size,
                        uint64_t min_hole)
{
    struct qcow2_reader *r = NULL;
    _cleanup_close_ int fd = -1;
    _cleanup_free_ uint8_t *buf = xmalloc(size);
    uint64_t off, hole_bytes = 0, n_extents = 0;
    bool good = true, zeros_ok = true;
    int e;

    e = open_image(name, &r, &fd);
    is_int(e, 0, "%s: opens", what);
    if (e < 0) {
        printf("#   %s\n", error_message() ? error_message() : "(no message)");
        return;
    }
    is_int(qcow2_reader_size(r), size, "%s: virtual size", what);

    /* Sequentially, 1 MiB at a time. */
    for (off = 0; off < size && good; off += MiB) {
        size_t len = (size_t)MIN(MiB, size - off);
        e = qcow2_reader_read(r, buf + off, len, off);
        if (e < 0) {
            printf("#   read at %llu: %s\n", (unsigned long long)off, error_message());
            good = false;
        }
    }
    ok(good && same(buf, raw, (size_t)size, 0), "%s: sequential read matches the raw disk", what);

    /* Random pieces, crossing cluster and table boundaries. */
    good = true;
    for (int i = 0; i < 300 && good; i++) {
        uint64_t len = rng() % (i < 150 ? 2000 : 300 * KiB) + 1;
        off = rng() % (size - len + 1);
        memset(buf, 0xee, len);
        e = qcow2_reader_read(r, buf, (size_t)len, off);
        good = e == 0 && same(buf, raw + off, (size_t)len, off);
    }
    ok(good, "%s: random reads match", what);

    /* Extents: holes must read as zeros, data read through extents must
     * rebuild the disk, and the lengths must add up. */
    good = true;
    memset(buf, 0xee, size);
    for (off = 0; off < size && good;) {
        bool alloc;
        uint64_t len;
        e = qcow2_reader_extent(r, off, size - off, &alloc, &len);
        if (e < 0 || len == 0 || len > size - off) {
            good = false;
            break;
        }
        if (alloc) {
            good = qcow2_reader_read(r, buf + off, (size_t)len, off) == 0;
        } else {
            memset(buf + off, 0, (size_t)len);
            hole_bytes += len;
            if (!buf_is_zero(raw + off, (size_t)len))
                zeros_ok = false;
        }
        off += len;
        n_extents++;
    }
    ok(good && off == size, "%s: extents cover the disk (%llu extents)", what,
       (unsigned long long)n_extents);
    ok(zeros_ok, "%s: every hole reads as zeros in the raw disk", what);
    ok(good && same(buf, raw, (size_t)size, 0), "%s: reading through extents rebuilds the disk",
       what);
    if (min_hole)
        ok(hole_bytes >= min_hole, "%s: holes found (%llu bytes, want at least %llu)", what,
           (unsigned long long)hole_bytes, (unsigned long long)min_hole);

    /* Limits. */
    {
        bool alloc;
        uint64_t len = 0;
        e = qcow2_reader_extent(r, 0, 100, &alloc, &len);
        ok(e == 0 && len > 0 && len <= 100, "%s: extent honours max_len", what);
        is_int(qcow2_reader_extent(r, size, 100, &alloc, &len), -EINVAL,
               "%s: extent at the end is refused", what);
        is_int(qcow2_reader_read(r, buf, 2, size - 1), -EINVAL,
               "%s: read past the end is refused", what);
    }
    qcow2_reader_free(r);
}

/* Opening must fail with `want` and a message holding both needles. */
static void check_refused(const char *what, const char *name, int want, const char *needle,
                          const char *needle2)
{
    struct qcow2_reader *r = NULL;
    int fd = -1, e;
    const char *msg;

    e = open_image(name, &r, &fd);
    is_int(e, want, "%s: refused", what);
    msg = error_message();
    ok(msg && strstr(msg, needle) && (!needle2 || strstr(msg, needle2)),
       "%s: message names the problem", what);
    printf("#   message: %s\n", msg ? msg : "(none)");
    if (e == 0) {
        qcow2_reader_free(r);
        close(fd);
    }
}

/* Opening works, but reading guest cluster 0 must fail with `want`. */
static void check_read_fails(const char *what, const char *name, int want, const char *needle)
{
    struct qcow2_reader *r = NULL;
    _cleanup_close_ int fd = -1;
    uint8_t buf[4096];
    const char *msg;
    int e;

    e = open_image(name, &r, &fd);
    is_int(e, 0, "%s: opens", what);
    if (e < 0) {
        printf("#   %s\n", error_message());
        return;
    }
    error_clear();
    e = qcow2_reader_read(r, buf, sizeof(buf), 0);
    is_int(e, want, "%s: read fails", what);
    msg = error_message();
    ok(msg && strstr(msg, needle), "%s: message names the problem", what);
    printf("#   message: %s\n", msg ? msg : "(none)");
    qcow2_reader_free(r);
}

static void test_qemu_variants(const uint8_t *raw)
{
    static const struct {
        const char *what, *opts;
        uint64_t min_hole;
    } variants[] = {
        { "v2", "-o compat=0.10", 2 * MiB },
        { "v3", "-o compat=1.1", 2 * MiB },
        { "v2 deflate", "-c -o compat=0.10", 2 * MiB },
        { "v3 deflate", "-c", 2 * MiB },
        { "v3 zstd", "-c -o compression_type=zstd", 2 * MiB },
        { "512-byte clusters", "-o cluster_size=512", 2 * MiB },
        { "512-byte clusters deflate", "-c -o cluster_size=512", 2 * MiB },
        { "2 MiB clusters", "-o cluster_size=2M", 0 },
        { "2 MiB clusters zstd", "-c -o cluster_size=2M,compression_type=zstd", 0 },
        { "extended L2", "-o extended_l2=on", 2 * MiB },
        { "extended L2 2 MiB clusters", "-o extended_l2=on,cluster_size=2M", 1 * MiB },
        { "extended L2 zstd", "-c -o extended_l2=on,compression_type=zstd", 2 * MiB },
        { "lazy refcounts", "-o lazy_refcounts=on", 2 * MiB },
        { "1-bit refcounts", "-o refcount_bits=1", 2 * MiB },
        { "metadata preallocation", "-o preallocation=metadata", 0 },
        { "full preallocation", "-o preallocation=falloc", 0 },
    };

    for (size_t i = 0; i < ARRAY_SIZE(variants); i++) {
        int st = sh("qemu-img convert -f raw -O qcow2 %s disk.raw variant.qcow2",
                    variants[i].opts);
        is_int(st, 0, "%s: qemu-img convert %s", variants[i].what, variants[i].opts);
        if (st == 0)
            check_image(variants[i].what, "variant.qcow2", raw, RAW_SIZE, variants[i].min_hole);
    }
}

/* Images changed in place by qemu-io: zero clusters (with and without the
 * host cluster kept), compressed clusters partly rewritten, and subclusters
 * allocated, zeroed and left unallocated inside one cluster. */
static void test_qemu_io_variants(const uint8_t *raw)
{
    static const struct {
        const char *what, *opts, *io;
        uint64_t off, len;
        int pattern; /* -1: zeros */
    } edits[] = {
        { "v3 zero cluster kept", "", "write -z 0 64k", 0, 64 * KiB, -1 },
        { "v3 zero clusters unmapped", "", "write -z -u 3M 128k", 3 * MiB, 128 * KiB, -1 },
        { "v2 zeroed clusters", "-o compat=0.10", "write -z 64k 128k", 64 * KiB, 128 * KiB, -1 },
        { "deflate partly rewritten", "-c", "write -P 0xab 100k 8k", 100 * KiB, 8 * KiB, 0xab },
        { "zstd partly rewritten", "-c -o compression_type=zstd", "write -P 0xcd 1000k 100k",
          1000 * KiB, 100 * KiB, 0xcd },
        { "extended L2 subcluster data", "-o extended_l2=on", "write -P 0x5a 1234k 2k",
          1234 * KiB, 2 * KiB, 0x5a },
        { "extended L2 zero subcluster", "-o extended_l2=on", "write -z 6k 4k", 6 * KiB,
          4 * KiB, -1 },
        { "extended L2 zero in compressed", "-c -o extended_l2=on", "write -z 2k 2k", 2 * KiB,
          2 * KiB, -1 },
    };
    _cleanup_free_ uint8_t *copy = xmalloc(RAW_SIZE);

    if (!have_qemu_io) {
        ok(1, "# SKIP qemu-io not found");
        return;
    }
    for (size_t i = 0; i < ARRAY_SIZE(edits); i++) {
        int st = sh("qemu-img convert -f raw -O qcow2 %s disk.raw edited.qcow2 && "
                    "qemu-io -f qcow2 -c '%s' edited.qcow2 >/dev/null",
                    edits[i].opts, edits[i].io);
        is_int(st, 0, "%s: qemu-io %s", edits[i].what, edits[i].io);
        if (st != 0)
            continue;
        memcpy(copy, raw, RAW_SIZE);
        memset(copy + edits[i].off, edits[i].pattern < 0 ? 0 : edits[i].pattern,
               (size_t)edits[i].len);
        check_image(edits[i].what, "edited.qcow2", copy, RAW_SIZE, 0);
    }

    /* A fresh extended-L2 image with scattered subclusters. */
    memset(copy, 0, RAW_SIZE);
    memset(copy, 0x55, 4 * KiB);
    memset(copy + 40 * KiB, 0x66, 2 * KiB);
    memset(copy + 70 * KiB, 0x77, 8 * KiB);
    is_int(sh("qemu-img create -q -f qcow2 -o extended_l2=on sub.qcow2 %llu && "
              "qemu-io -f qcow2 -c 'write -P 0x55 0 4k' -c 'write -P 0x66 40k 2k' "
              "-c 'write -P 0x77 70k 8k' -c 'write -z 128k 64k' sub.qcow2 >/dev/null",
              (unsigned long long)RAW_SIZE),
           0, "extended L2 scattered subclusters: made");
    check_image("extended L2 scattered subclusters", "sub.qcow2", copy, RAW_SIZE,
                RAW_SIZE - 14 * KiB);
}

static void test_writer(void)
{
    const uint64_t size = 2 * MiB + 3 * 64 * KiB + 1536;
    const uint64_t skipped = 5, zeroed = 7;
    _cleanup_free_ uint8_t *raw = xcalloc(1, size);
    _cleanup_free_ uint8_t *cluster = NULL;
    struct qcow2_writer *w = NULL;
    uint32_t cs;
    int fd, e;
    bool good = true;

    fill_random(raw, (size_t)size);
    memset(raw + skipped * 64 * KiB, 0, 64 * KiB);
    memset(raw + zeroed * 64 * KiB, 0, 64 * KiB);
    fill_text(raw + 10 * 64 * KiB, 64 * KiB);
    write_file("writer.raw", raw, (size_t)size);

    fd = open(path_of("writer.qcow2"), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    e = qcow2_writer_new(fd, size, &w);
    is_int(e, 0, "writer: new");
    if (e < 0)
        return;
    cs = qcow2_writer_cluster_size(w);
    is_int(cs, 65536, "writer: 64 KiB clusters");
    cluster = xmalloc(cs);
    for (uint64_t off = 0; off < size && good; off += cs) {
        if (off / cs == skipped)
            continue;
        memset(cluster, 0, cs);
        memcpy(cluster, raw + off, (size_t)MIN((uint64_t)cs, size - off));
        good = qcow2_writer_put(w, off, cluster) == 0;
    }
    ok(good, "writer: put every cluster but one");
    is_int(qcow2_writer_put(w, 3 * 64 * KiB, cluster), -EINVAL,
           "writer: an offset that does not increase is refused");
    is_int(qcow2_writer_finish(w), 0, "writer: finish");
    qcow2_writer_free(w);
    close(fd);

    is_int(sh("qemu-img check -q writer.qcow2"), 0, "writer: qemu-img check finds no errors");
    is_int(sh("qemu-img compare -q -f qcow2 -F raw writer.qcow2 writer.raw"), 0,
           "writer: qemu-img compare says identical");
    is_int(sh("qemu-img info writer.qcow2 | grep -q 'compat: 1.1'"), 0, "writer: version 3");
    check_image("writer output", "writer.qcow2", raw, size, 2 * 64 * KiB);

    /* Sparse and large: several L2 tables, far apart. */
    {
        const uint64_t big = 6 * GiB + 512;
        const uint64_t at[] = { 0, 700 * MiB, 4 * GiB + 64 * KiB, 4 * GiB + 128 * KiB,
                                big / cs * cs };
        _cleanup_close_ int rawfd = -1;
        good = true;
        rawfd = open(path_of("big.raw"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        fd = open(path_of("big.qcow2"), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        good = rawfd >= 0 && fd >= 0 && ftruncate(rawfd, (off_t)big) == 0;
        e = qcow2_writer_new(fd, big, &w);
        is_int(e, 0, "big writer: new");
        if (e < 0)
            return;
        for (size_t i = 0; i < ARRAY_SIZE(at) && good; i++) {
            size_t len = (size_t)MIN((uint64_t)cs, big - at[i]);
            memset(cluster, 0, cs);
            fill_random(cluster, len);
            good = write_all(rawfd, cluster, len, (off_t)at[i]) == 0 &&
                   qcow2_writer_put(w, at[i], cluster) == 0;
        }
        ok(good, "big writer: put clusters far apart");
        is_int(qcow2_writer_finish(w), 0, "big writer: finish");
        qcow2_writer_free(w);
        close(fd);
        is_int(sh("qemu-img check -q big.qcow2"), 0, "big writer: qemu-img check");
        is_int(sh("qemu-img compare -q -f qcow2 -F raw big.qcow2 big.raw"), 0,
               "big writer: qemu-img compare says identical");
        sh("rm -f big.raw");
    }

    /* Nothing put at all: a disk of zeros. */
    fd = open(path_of("empty.qcow2"), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    e = qcow2_writer_new(fd, 3 * MiB, &w);
    if (e == 0)
        e = qcow2_writer_finish(w);
    is_int(e, 0, "empty writer: finish");
    qcow2_writer_free(w);
    close(fd);
    is_int(sh("qemu-img check -q empty.qcow2 && truncate -s 3M zeros.raw && "
              "qemu-img compare -q -f qcow2 -F raw empty.qcow2 zeros.raw"),
           0, "empty writer: qemu-img check and compare");

    /* A write error sticks: put and finish both report it. */
    fd = open(path_of("writer.raw"), O_RDONLY | O_CLOEXEC);
    is_int(qcow2_writer_new(fd, 1 * MiB, &w), 0, "read-only writer: new");
    memset(cluster, 1, cs);
    error_clear();
    is_int(qcow2_writer_put(w, 0, cluster), -EBADF, "read-only writer: put fails");
    ok(error_message() && strstr(error_message(), "cannot write"), "read-only writer: message");
    is_int(qcow2_writer_put(w, 64 * KiB, cluster), -EBADF, "read-only writer: error sticks");
    is_int(qcow2_writer_finish(w), -EBADF, "read-only writer: finish reports it");
    qcow2_writer_free(w);
    close(fd);

    /* Misuse. */
    fd = open(path_of("misuse.qcow2"), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    is_int(qcow2_writer_new(fd, 1000, &w), -EINVAL, "writer: size not a multiple of 512");
    is_int(qcow2_writer_new(fd, 100 * KiB, &w), 0, "writer: new 100 KiB");
    memset(cluster, 1, cs);
    is_int(qcow2_writer_put(w, 512, cluster), -EINVAL, "writer: unaligned offset refused");
    is_int(qcow2_writer_put(w, 128 * KiB, cluster), -EINVAL, "writer: offset past the end");
    is_int(qcow2_writer_put(w, 64 * KiB, cluster), -EINVAL,
           "writer: data past the end of the disk refused");
    ok(error_message() && strstr(error_message(), "past the end"), "writer: message says why");
    qcow2_writer_free(w);
    close(fd);
}

static void test_refusals(void)
{
    uint8_t b;
    uint64_t where, entry;
    size_t len;

    /* Made by qemu-img. */
    is_int(sh("qemu-img create -q -f raw base.raw 1M && "
              "qemu-img create -q -f qcow2 -b base.raw -F raw backed.qcow2"),
           0, "made an image with a backing file");
    check_refused("backing file", "backed.qcow2", -EINVAL, "backing file 'base.raw'",
                  "self-contained");
    is_int(sh("qemu-img create -q -f qcow2 -o compat=0.10 -b base.raw -F raw backed2.qcow2"), 0,
           "made a v2 image with a backing file");
    check_refused("v2 backing file", "backed2.qcow2", -EINVAL, "backing file 'base.raw'", NULL);
    is_int(sh("qemu-img create -q -f qcow2 -o data_file=external.raw datafile.qcow2 1M"), 0,
           "made an image with an external data file");
    check_refused("external data file", "datafile.qcow2", -EINVAL,
                  "external data file 'external.raw'", NULL);
    if (sh("qemu-img create -q -f qcow2 --object secret,id=sec0,data=kiln "
           "-o encrypt.format=luks,encrypt.key-secret=sec0 luks.qcow2 1M 2>/dev/null") == 0)
        check_refused("luks encryption", "luks.qcow2", -ENOTSUP, "encrypted", "luks");
    else
        ok(1, "# SKIP qemu-img cannot make encrypted images");

    /* Patched headers, from a v3 image with data. */
    is_int(sh("qemu-img convert -f raw -O qcow2 disk.raw good.qcow2"), 0, "made a v3 image");
    is_int(sh("qemu-img convert -f raw -O qcow2 -o compat=0.10 disk.raw good2.qcow2"), 0,
           "made a v2 image");

    copy_file("good.qcow2", "bit5.qcow2", SIZE_MAX);
    b = 0x20; /* incompatible bit 5: byte 79 holds bits 0-7 */
    patch("bit5.qcow2", 79, &b, 1);
    check_refused("unknown incompatible bit 5", "bit5.qcow2", -ENOTSUP, "bit 5", NULL);

    copy_file("good.qcow2", "bit40.qcow2", SIZE_MAX);
    b = 0x01; /* bit 40: byte 72 + 7 - 5 */
    patch("bit40.qcow2", 74, &b, 1);
    check_refused("unknown incompatible bit 40", "bit40.qcow2", -ENOTSUP, "bit 40", NULL);

    /* A feature name table entry for bit 5 names it in the message. */
    {
        _cleanup_free_ uint8_t *p = NULL;
        copy_file("good.qcow2", "named.qcow2", SIZE_MAX);
        p = read_whole("named.qcow2", &len);
        for (size_t i = 2; p && i + 9 < 65536; i++)
            if (memcmp(p + i, "dirty bit", 9) == 0 && p[i - 2] == 0 && p[i - 1] == 0) {
                b = 5;
                patch("named.qcow2", i - 1, &b, 1);
                break;
            }
        b = 0x20;
        patch("named.qcow2", 79, &b, 1);
        check_refused("named unknown bit", "named.qcow2", -ENOTSUP, "bit 5 ('dirty bit')", NULL);
    }

    copy_file("good.qcow2", "corrupt.qcow2", SIZE_MAX);
    b = 0x02;
    patch("corrupt.qcow2", 79, &b, 1);
    check_refused("corrupt bit", "corrupt.qcow2", -EINVAL, "marked corrupt", "qemu-img check");

    copy_file("good.qcow2", "dirty.qcow2", SIZE_MAX);
    b = 0x01;
    patch("dirty.qcow2", 79, &b, 1);
    check_refused("dirty bit", "dirty.qcow2", -EINVAL, "dirty", "qemu-img check -r all");

    copy_file("good.qcow2", "datafilebit.qcow2", SIZE_MAX);
    b = 0x04;
    patch("datafilebit.qcow2", 79, &b, 1);
    check_refused("external data file bit", "datafilebit.qcow2", -EINVAL, "external data file",
                  NULL);

    copy_file("good.qcow2", "crypt.qcow2", SIZE_MAX);
    patch_be32("crypt.qcow2", 32, 1);
    check_refused("aes encryption", "crypt.qcow2", -ENOTSUP, "encrypted (aes)", NULL);

    copy_file("good.qcow2", "truncated.qcow2", 50);
    check_refused("truncated to 50 bytes", "truncated.qcow2", -EINVAL, "truncated", NULL);
    copy_file("good.qcow2", "truncated80.qcow2", 80);
    check_refused("v3 truncated to 80 bytes", "truncated80.qcow2", -EINVAL, "truncated", NULL);
    copy_file("good.qcow2", "truncated2.qcow2", 3);
    check_refused("truncated to 3 bytes", "truncated2.qcow2", -EINVAL, "not a qcow2 image",
                  NULL);
    check_refused("raw disk", "disk.raw", -EINVAL, "not a qcow2 image", "magic");
    write_file("empty.bin", "", 0);
    check_refused("empty file", "empty.bin", -EINVAL, "not a qcow2 image", NULL);

    copy_file("good.qcow2", "version4.qcow2", SIZE_MAX);
    patch_be32("version4.qcow2", 4, 4);
    check_refused("version 4", "version4.qcow2", -ENOTSUP, "version 4", NULL);

    copy_file("good.qcow2", "bits30.qcow2", SIZE_MAX);
    patch_be32("bits30.qcow2", 20, 30);
    check_refused("cluster_bits 30", "bits30.qcow2", -EINVAL, "cluster_bits 30", NULL);
    copy_file("good.qcow2", "bits8.qcow2", SIZE_MAX);
    patch_be32("bits8.qcow2", 20, 8);
    check_refused("cluster_bits 8", "bits8.qcow2", -EINVAL, "cluster_bits 8", NULL);

    copy_file("good.qcow2", "hdrlen.qcow2", SIZE_MAX);
    patch_be32("hdrlen.qcow2", 100, 20);
    check_refused("header_length 20", "hdrlen.qcow2", -EINVAL, "header_length", NULL);
    copy_file("good.qcow2", "hdrlen2.qcow2", SIZE_MAX);
    patch_be32("hdrlen2.qcow2", 100, 1u << 20);
    check_refused("header_length past the cluster", "hdrlen2.qcow2", -EINVAL, "header_length",
                  NULL);

    copy_file("good.qcow2", "extlen.qcow2", SIZE_MAX);
    patch_be32("extlen.qcow2", 112 + 4, 0x7fffffff); /* the first extension's length */
    check_refused("extension length", "extlen.qcow2", -EINVAL, "extension", NULL);

    copy_file("good.qcow2", "zstdtype.qcow2", SIZE_MAX);
    b = 7;
    patch("zstdtype.qcow2", 104, &b, 1);
    check_refused("compression type without its bit", "zstdtype.qcow2", -EINVAL,
                  "compression type", NULL);
    b = 0x08;
    patch("zstdtype.qcow2", 79, &b, 1);
    check_refused("compression type 7", "zstdtype.qcow2", -ENOTSUP, "compression type 7",
                  NULL);

    copy_file("good.qcow2", "l1eof.qcow2", SIZE_MAX);
    patch_be64("l1eof.qcow2", 40, 1ULL << 40);
    check_refused("L1 table past the end of the file", "l1eof.qcow2", -EINVAL, "L1 table",
                  "past the end");
    copy_file("good2.qcow2", "l1eof2.qcow2", SIZE_MAX);
    patch_be64("l1eof2.qcow2", 40, 1ULL << 40);
    check_refused("v2 L1 table past the end of the file", "l1eof2.qcow2", -EINVAL, "L1 table",
                  "past the end");

    copy_file("good.qcow2", "l1unaligned.qcow2", SIZE_MAX);
    {
        _cleanup_free_ uint8_t *p = read_whole("good.qcow2", &len);
        patch_be64("l1unaligned.qcow2", 40, get_be(p + 40, 8) + 512);
    }
    check_refused("L1 table not aligned", "l1unaligned.qcow2", -EINVAL, "L1 table", "aligned");

    copy_file("good.qcow2", "l1small.qcow2", SIZE_MAX);
    patch_be32("l1small.qcow2", 36, 0);
    check_refused("L1 table too small", "l1small.qcow2", -EINVAL, "L1 table", NULL);

    copy_file("good.qcow2", "l1huge.qcow2", SIZE_MAX);
    patch_be64("l1huge.qcow2", 24, 1ULL << 60);
    patch_be32("l1huge.qcow2", 36, 0xffffffffu);
    check_refused("L1 table over the cap", "l1huge.qcow2", -EINVAL, "L1 table", NULL);

    copy_file("good.qcow2", "bigsize.qcow2", SIZE_MAX);
    patch_be64("bigsize.qcow2", 24, UINT64_MAX);
    check_refused("virtual size 2^64-1", "bigsize.qcow2", -EINVAL, "virtual size", NULL);

    {
        _cleanup_free_ uint8_t *p = read_whole("good.qcow2", &len);
        uint64_t l1 = get_be(p + 40, 8);
        copy_file("good.qcow2", "l2eof.qcow2", SIZE_MAX);
        patch_be64("l2eof.qcow2", l1, (1ULL << 40) | (1ULL << 63));
        check_refused("L1 entry past the end of the file", "l2eof.qcow2", -EINVAL, "L1 entry 0",
                      "past the end");
    }

    /* Broken L2 entries are found when read. */
    entry = l2_entry0("good.qcow2", &where);
    ok(entry != 0, "found the L2 entry of cluster 0");
    copy_file("good.qcow2", "dataeof.qcow2", SIZE_MAX);
    patch_be64("dataeof.qcow2", where, (1ULL << 40) | (1ULL << 63));
    check_read_fails("data cluster past the end of the file", "dataeof.qcow2", -EBADMSG,
                     "past the end");
    copy_file("good.qcow2", "dataunaligned.qcow2", SIZE_MAX);
    patch_be64("dataunaligned.qcow2", where, entry + 512);
    check_read_fails("data cluster not aligned", "dataunaligned.qcow2", -EBADMSG, "aligned");

    /* Extended L2 entries with inconsistent subcluster bitmaps. */
    is_int(sh("qemu-img convert -f raw -O qcow2 -o extended_l2=on disk.raw extl2.qcow2"), 0,
           "made an image with extended L2 entries");
    entry = l2_entry0("extl2.qcow2", &where);
    ok(entry != 0, "extended L2: found the entry of cluster 0");
    copy_file("extl2.qcow2", "extl2-both.qcow2", SIZE_MAX);
    patch_be64("extl2-both.qcow2", where + 8, 0x0000000100000001ULL);
    check_read_fails("extended L2: subcluster allocated and zero", "extl2-both.qcow2", -EBADMSG,
                     "both allocated and zero");
    copy_file("extl2.qcow2", "extl2-nohost.qcow2", SIZE_MAX);
    patch_be64("extl2-nohost.qcow2", where, 0);
    patch_be64("extl2-nohost.qcow2", where + 8, 0x00000000ffffffffULL);
    check_read_fails("extended L2: allocated subclusters without a host cluster",
                     "extl2-nohost.qcow2", -EBADMSG, "no host cluster");
    copy_file("extl2.qcow2", "extl2-small.qcow2", SIZE_MAX);
    patch_be32("extl2-small.qcow2", 20, 13);
    check_refused("extended L2 with 8 KiB clusters", "extl2-small.qcow2", -EINVAL,
                  "at least 16 KiB", NULL);

    /* Corrupted compressed clusters. */
    is_int(sh("qemu-img convert -c -f raw -O qcow2 disk.raw deflate.qcow2 && "
              "qemu-img convert -c -f raw -O qcow2 -o compression_type=zstd disk.raw zstd.qcow2"),
           0, "made compressed images");
    for (int z = 0; z < 2; z++) {
        const char *src = z ? "zstd.qcow2" : "deflate.qcow2";
        const char *what = z ? "zstd" : "deflate";
        uint8_t junk[64];
        char name[64], label[128];
        uint64_t host;

        entry = l2_entry0(src, &where);
        ok(entry >> 62 & 1, "%s: cluster 0 is compressed", what);
        host = entry & ((1ULL << (62 - 8)) - 1);

        snprintf(name, sizeof(name), "bad-%s.qcow2", what);
        copy_file(src, name, SIZE_MAX);
        memset(junk, 0xff, sizeof(junk));
        patch(name, host, junk, sizeof(junk));
        snprintf(label, sizeof(label), "%s: garbage compressed data", what);
        check_read_fails(label, name, -EBADMSG, "compressed cluster");

        snprintf(name, sizeof(name), "short-%s.qcow2", what);
        copy_file(src, name, SIZE_MAX);
        patch_be64(name, where, (entry & ~(0xffULL << 54)) | 1ULL << 62); /* one sector */
        snprintf(label, sizeof(label), "%s: compressed cluster cut short", what);
        check_read_fails(label, name, -EBADMSG, "compressed cluster");

        snprintf(name, sizeof(name), "ceof-%s.qcow2", what);
        copy_file(src, name, SIZE_MAX);
        patch_be64(name, where, (entry & ~((1ULL << 54) - 1)) | (1ULL << 50));
        snprintf(label, sizeof(label), "%s: compressed cluster past the end", what);
        check_read_fails(label, name, -EBADMSG, "past the end");
    }
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    _cleanup_free_ uint8_t *raw = NULL;
    int status;

    status = system("qemu-img --version >/dev/null 2>&1");
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        printf("1..0 # SKIP qemu-img not found\n");
        return 77;
    }
    status = system("qemu-io --version >/dev/null 2>&1");
    have_qemu_io = status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;

    snprintf(dir, sizeof(dir), "%s/test-qcow2.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        printf("Bail out! cannot make a temporary directory\n");
        return 1;
    }

    ok(qcow2_probe("QFI\xfb\0\0\0\3", 8), "probe: qcow2 magic");
    ok(!qcow2_probe("QFI", 3), "probe: too short");
    ok(!qcow2_probe("QFI\xfa", 4), "probe: other magic");

    raw = make_raw("disk.raw");
    test_qemu_variants(raw);
    test_qemu_io_variants(raw);
    test_writer();
    test_refusals();

    sh("cd / && rm -rf '%s'", dir);
    return done_testing();
}
