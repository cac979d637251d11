/* qcow2 reader: parses and validates a qcow2 v2 or v3 header, then maps guest
 * offsets to host data through the L1 and L2 tables (standard and extended L2
 * entries), inflating compressed clusters (deflate, or zstd when the header
 * says so).  Refcount tables, snapshots and bitmaps are not needed to read the
 * active layer and are ignored.
 *
 * Design notes:
 * - Everything read from the file is untrusted.  The header fields are range
 *   checked at open (cluster_bits 9..21, header_length, extension lengths,
 *   the L1 size capped at 32 MiB as qemu does, the L1 table and every L2
 *   table it points at inside the file); L2 entries are checked when they are
 *   used (data clusters aligned and inside the file, compressed clusters
 *   starting inside the file, subcluster bitmaps consistent).  Memory is
 *   bounded by the cluster size and the (capped, file-backed) L1 size.
 * - Problems found at open are refusals (-EINVAL, or -ENOTSUP for features
 *   kiln does not implement); problems found while reading are corruption
 *   (-EBADMSG).  Each records one message through error_set().
 * - Images with a backing file or an external data file are refused: the
 *   active layer alone would not hold the whole disk.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "snapshot/qcow2.h"

#define V2_HEADER_LEN 72
#define V3_HEADER_LEN 104
#define MIN_CLUSTER_BITS 9
#define MAX_CLUSTER_BITS 21        /* qemu's limit: 2 MiB clusters */
#define MIN_EXTL2_CLUSTER_BITS 14  /* the spec: extended L2 needs >= 16 KiB */
#define MAX_L1_BYTES (32u << 20)   /* qemu's QCOW_MAX_L1_SIZE */
#define MAX_NAME 1023              /* backing file name limit in the spec */
#define MAX_SIZE (1ULL << 62)      /* keeps every offset computation in range */
#define L2_CACHE_SLOTS 4
#define EXTENT_MAX_LOOKUPS 16384   /* bounds the work of one extent() call */
#define ZSTD_WINDOW_LOG_MAX 23     /* a cluster is at most 2 MiB */

#define INCOMPAT_DIRTY (1ULL << 0)
#define INCOMPAT_CORRUPT (1ULL << 1)
#define INCOMPAT_DATA_FILE (1ULL << 2)
#define INCOMPAT_COMPRESSION (1ULL << 3)
#define INCOMPAT_EXTL2 (1ULL << 4)
#define INCOMPAT_KNOWN 0x1fULL

#define EXT_END 0x00000000u
#define EXT_FEATURE_NAMES 0x6803f857u
#define EXT_DATA_FILE 0x44415441u

#define OFLAG_COMPRESSED (1ULL << 62)
#define OFLAG_ZERO 1ULL
#define OFFSET_MASK 0x00fffffffffffe00ULL

#define COMPRESSION_DEFLATE 0
#define COMPRESSION_ZSTD 1

enum kind {
    KIND_ZERO,       /* unallocated or zero cluster/subcluster */
    KIND_DATA,       /* stored as is at host */
    KIND_COMPRESSED, /* a whole compressed cluster at host, csize bytes */
};

struct mapping {
    enum kind kind;
    uint64_t host;  /* DATA: host offset of the guest offset looked up */
    uint64_t csize; /* COMPRESSED: bytes of compressed data (at most) */
    uint64_t len;   /* bytes from the guest offset with this mapping */
};

struct l2_slot {
    uint64_t offset; /* host offset of the table; 0 when the slot is empty */
    uint8_t *table;
};

struct qcow2_reader {
    int fd;
    uint64_t file_size;
    uint64_t size;
    unsigned version;
    unsigned cluster_bits;
    uint64_t cluster_size;
    unsigned l2_bits; /* log2 of the entries in one L2 table */
    bool extended_l2;
    int compression;

    uint64_t *l1; /* host byte order, only the entries the size needs */
    size_t l1_len;

    struct l2_slot l2[L2_CACHE_SLOTS];
    unsigned l2_victim;

    /* The last compressed cluster, decompressed. */
    bool z_valid;
    uint64_t z_host;
    uint8_t *z_data; /* cluster_size bytes */
    uint8_t *z_in;   /* 2 * cluster_size bytes: the largest descriptor */
    z_stream inflater;
    bool inflater_ready;
    ZSTD_DCtx *zstd;
};

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}

bool qcow2_probe(const void *buf, size_t len)
{
    return len >= 4 && memcmp(buf, QCOW2_MAGIC_BYTES, 4) == 0;
}

/* Copy a name from the file for a message, replacing what a terminal should
 * not see. */
static void printable(char *dst, size_t size, const uint8_t *src, size_t len)
{
    size_t i;

    for (i = 0; i < len && i + 1 < size; i++)
        dst[i] = src[i] >= 0x20 && src[i] < 0x7f && src[i] != '\'' ? (char)src[i] : '?';
    dst[i] = '\0';
}

/* What the header extensions told us (only what open needs). */
struct extensions {
    char incompat_names[64][47]; /* from the feature name table */
    bool data_file;
    char data_file_name[MAX_NAME + 1];
};

static int parse_extensions(const uint8_t *head, size_t start, size_t end,
                            struct extensions *ext)
{
    size_t off = start;

    while (off + 8 <= end) {
        uint32_t type = be32(head + off);
        uint32_t len = be32(head + off + 4);

        off += 8;
        if (type == EXT_END)
            return 0;
        if (len > end - off)
            return error_set(EINVAL,
                             "corrupt qcow2 header: extension 0x%08" PRIx32 " of %" PRIu32
                             " bytes at offset %zu runs past the end of the header",
                             type, len, off - 8);
        if (type == EXT_FEATURE_NAMES) {
            for (size_t i = 0; i + 48 <= len; i += 48) {
                const uint8_t *e = head + off + i;
                if (e[0] == 0 && e[1] < 64) /* type 0: incompatible */
                    printable(ext->incompat_names[e[1]], sizeof(ext->incompat_names[0]),
                              e + 2, strnlen((const char *)e + 2, 46));
            }
        } else if (type == EXT_DATA_FILE) {
            ext->data_file = true;
            printable(ext->data_file_name, sizeof(ext->data_file_name), head + off,
                      MIN(len, (uint32_t)MAX_NAME));
        }
        /* Other extensions (backing format, bitmaps, encryption header) do
         * not change how the active layer reads, or go with a header field
         * that is checked on its own. */
        off += len;
        off = (off + 7) & ~(size_t)7;
    }
    return 0;
}

/* Refuse what kiln cannot read faithfully.  The order puts the most useful
 * message first when an image has several problems. */
static int check_features(const struct qcow2_reader *r, const uint8_t *head, size_t head_len,
                          const struct extensions *ext, uint64_t incompat)
{
    uint64_t backing_offset = be64(head + 8);
    uint32_t backing_len = be32(head + 16);
    uint32_t crypt = be32(head + 32);
    uint64_t unknown = incompat & ~INCOMPAT_KNOWN;

    if (unknown) {
        unsigned bit = (unsigned)__builtin_ctzll(unknown);
        if (ext->incompat_names[bit][0])
            return error_set(ENOTSUP,
                             "qcow2 image uses unknown incompatible feature bit %u ('%s'); "
                             "kiln cannot read it safely",
                             bit, ext->incompat_names[bit]);
        return error_set(ENOTSUP,
                         "qcow2 image uses unknown incompatible feature bit %u; "
                         "kiln cannot read it safely",
                         bit);
    }
    /* An empty name means no backing file, as in qemu. */
    if (backing_offset != 0 && backing_len != 0) {
        char name[MAX_NAME + 1];
        if (backing_len > MAX_NAME || backing_offset > head_len ||
            backing_len > head_len - backing_offset)
            return error_set(EINVAL,
                             "qcow2 image has a backing file (its name, %" PRIu32
                             " bytes at offset %" PRIu64 ", is not inside the header cluster); "
                             "kiln imports self-contained images only",
                             backing_len, backing_offset);
        printable(name, sizeof(name), head + backing_offset, backing_len);
        return error_set(EINVAL,
                         "qcow2 image has backing file '%s'; kiln imports self-contained "
                         "images only (flatten it with 'qemu-img convert -O qcow2' first)",
                         name);
    }
    if ((incompat & INCOMPAT_DATA_FILE) || ext->data_file) {
        if (ext->data_file)
            return error_set(EINVAL,
                             "qcow2 image keeps its data in external data file '%s'; "
                             "kiln imports self-contained images only",
                             ext->data_file_name);
        return error_set(EINVAL,
                         "qcow2 image keeps its data in an external data file "
                         "(incompatible feature bit 2); kiln imports self-contained images only");
    }
    if (crypt != 0)
        return error_set(ENOTSUP, "qcow2 image is encrypted (%s); kiln cannot import "
                                  "encrypted images",
                         crypt == 1 ? "aes" : crypt == 2 ? "luks" : "unknown method");
    if (incompat & INCOMPAT_CORRUPT)
        return error_set(EINVAL, "qcow2 image is marked corrupt; repair it with "
                                 "'qemu-img check -r all' before importing it");
    /* The dirty bit means refcounts may be stale (lazy refcounts): the L1 and
     * L2 tables we read would still be consistent.  But it is also set while
     * a VM has the image open, and importing a disk that is being written
     * gives a torn snapshot, so refuse and let the user decide. */
    if (incompat & INCOMPAT_DIRTY)
        return error_set(EINVAL,
                         "qcow2 image is marked dirty (it is in use by a VM or was not "
                         "closed cleanly); shut the VM down or run 'qemu-img check -r all' "
                         "before importing it");
    if (r->extended_l2 && r->cluster_bits < MIN_EXTL2_CLUSTER_BITS)
        return error_set(EINVAL,
                         "corrupt qcow2 header: extended L2 entries need clusters of at "
                         "least 16 KiB, not %" PRIu64 " bytes",
                         r->cluster_size);
    return 0;
}

static int check_compression(struct qcow2_reader *r, const uint8_t *head, uint32_t header_len,
                             uint64_t incompat)
{
    unsigned type = 0;

    if (r->version >= 3 && header_len > V3_HEADER_LEN)
        type = head[V3_HEADER_LEN];
    if ((incompat & INCOMPAT_COMPRESSION) && header_len <= V3_HEADER_LEN)
        return error_set(EINVAL, "corrupt qcow2 header: the compression type bit is set "
                                 "but the header has no compression type field");
    if (!(incompat & INCOMPAT_COMPRESSION) && type != COMPRESSION_DEFLATE)
        return error_set(EINVAL, "corrupt qcow2 header: compression type %u without "
                                 "the compression type feature bit",
                         type);
    if (type != COMPRESSION_DEFLATE && type != COMPRESSION_ZSTD)
        return error_set(ENOTSUP, "unsupported qcow2 compression type %u", type);
    r->compression = (int)type;
    return 0;
}

static int load_l1(struct qcow2_reader *r, const uint8_t *head)
{
    uint32_t l1_size = be32(head + 36);
    uint64_t l1_offset = be64(head + 40);
    uint64_t per_l1 = 1ULL << (r->l2_bits + r->cluster_bits); /* guest bytes per entry */
    uint64_t need = r->size / per_l1 + (r->size % per_l1 != 0);
    _cleanup_free_ uint8_t *raw = NULL;
    ssize_t n;

    if (need > l1_size)
        return error_set(EINVAL,
                         "corrupt qcow2 header: an L1 table of %" PRIu32 " entries cannot map "
                         "a virtual size of %" PRIu64 " bytes",
                         l1_size, r->size);
    if (need > MAX_L1_BYTES / 8)
        return error_set(EINVAL,
                         "qcow2 image needs an L1 table of %" PRIu64 " entries, more than "
                         "the %u supported",
                         need, MAX_L1_BYTES / 8);
    r->l1_len = (size_t)need;
    r->l1 = xcalloc(r->l1_len ? r->l1_len : 1, sizeof(uint64_t));
    if (need == 0)
        return 0;
    if (l1_offset & (r->cluster_size - 1))
        return error_set(EINVAL,
                         "corrupt qcow2 header: L1 table offset %" PRIu64
                         " is not aligned to a cluster",
                         l1_offset);
    if (l1_offset > r->file_size || need * 8 > r->file_size - l1_offset)
        return error_set(EINVAL,
                         "corrupt qcow2 header: the L1 table at offset %" PRIu64 " (%" PRIu64
                         " bytes) lies past the end of the file (%" PRIu64 " bytes)",
                         l1_offset, need * 8, r->file_size);
    raw = xmalloc((size_t)need * 8);
    n = pread_full(r->fd, raw, (size_t)need * 8, (off_t)l1_offset);
    if (n < 0)
        return error_set((int)n, "cannot read qcow2 L1 table: %s", strerror((int)-n));
    if ((uint64_t)n < need * 8)
        return error_set(EINVAL, "corrupt qcow2 image: the L1 table is truncated");
    for (size_t i = 0; i < r->l1_len; i++) {
        uint64_t l2 = be64(raw + i * 8) & OFFSET_MASK;
        r->l1[i] = l2;
        if (l2 == 0)
            continue;
        if (l2 & (r->cluster_size - 1))
            return error_set(EINVAL,
                             "corrupt qcow2 image: L1 entry %zu points at offset %" PRIu64
                             ", which is not aligned to a cluster",
                             i, l2);
        if (l2 > r->file_size || r->cluster_size > r->file_size - l2)
            return error_set(EINVAL,
                             "corrupt qcow2 image: L1 entry %zu points at an L2 table at "
                             "offset %" PRIu64 ", past the end of the file (%" PRIu64 " bytes)",
                             i, l2, r->file_size);
    }
    return 0;
}

int qcow2_reader_open(int fd, struct qcow2_reader **ret)
{
    struct qcow2_reader *r = NULL;
    _cleanup_free_ uint8_t *head = NULL;
    _cleanup_free_ struct extensions *ext = NULL;
    uint8_t fixed[V3_HEADER_LEN];
    uint32_t header_len = V2_HEADER_LEN;
    uint64_t incompat = 0;
    size_t head_len, ext_end;
    off_t end;
    ssize_t n;
    int e;

    end = lseek(fd, 0, SEEK_END);
    if (end < 0)
        return error_set(errno, "cannot size qcow2 image: %s", strerror(errno));
    n = pread_full(fd, fixed, sizeof(fixed), 0);
    if (n < 0)
        return error_set((int)n, "cannot read qcow2 header: %s", strerror((int)-n));
    if (n < 4 || !qcow2_probe(fixed, (size_t)n))
        return error_set(EINVAL, "not a qcow2 image (bad magic)");
    if (n < 8)
        return error_set(EINVAL, "truncated qcow2 header: the file has only %zd bytes", n);

    r = xcalloc(1, sizeof(*r));
    r->fd = fd;
    r->file_size = (uint64_t)end;
    r->version = be32(fixed + 4);
    if (r->version != 2 && r->version != 3) {
        e = error_set(ENOTSUP, "unsupported qcow2 version %u (kiln reads versions 2 and 3)",
                      r->version);
        goto fail;
    }
    if (r->version == 3)
        header_len = V3_HEADER_LEN;
    if ((size_t)n < header_len) {
        e = error_set(EINVAL,
                      "truncated qcow2 header: the file has only %zd bytes, a version %u "
                      "header needs %" PRIu32,
                      n, r->version, header_len);
        goto fail;
    }
    r->cluster_bits = be32(fixed + 20);
    if (r->cluster_bits < MIN_CLUSTER_BITS || r->cluster_bits > MAX_CLUSTER_BITS) {
        e = error_set(EINVAL,
                      "corrupt qcow2 header: cluster_bits %u is out of range (%d to %d)",
                      r->cluster_bits, MIN_CLUSTER_BITS, MAX_CLUSTER_BITS);
        goto fail;
    }
    r->cluster_size = 1ULL << r->cluster_bits;
    r->size = be64(fixed + 24);
    if (r->size > MAX_SIZE) {
        e = error_set(EINVAL, "corrupt qcow2 header: virtual size %" PRIu64 " is too large",
                      r->size);
        goto fail;
    }
    if (r->version == 3) {
        incompat = be64(fixed + 72);
        header_len = be32(fixed + 100);
        if (header_len < V3_HEADER_LEN || header_len > r->cluster_size) {
            e = error_set(EINVAL,
                          "corrupt qcow2 header: header_length %" PRIu32
                          " is out of range (%d to the cluster size)",
                          header_len, V3_HEADER_LEN);
            goto fail;
        }
        if (header_len > r->file_size) {
            e = error_set(EINVAL,
                          "truncated qcow2 header: the file has only %" PRIu64
                          " bytes, the header needs %" PRIu32,
                          r->file_size, header_len);
            goto fail;
        }
    }
    r->extended_l2 = incompat & INCOMPAT_EXTL2;
    r->l2_bits = r->cluster_bits - (r->extended_l2 ? 4 : 3);

    /* The header, its extensions and the backing file name all live in the
     * first cluster (at most 2 MiB). */
    head_len = (size_t)MIN(r->cluster_size, r->file_size);
    head = xcalloc(1, head_len);
    n = pread_full(fd, head, head_len, 0);
    if (n < 0) {
        e = error_set((int)n, "cannot read qcow2 header: %s", strerror((int)-n));
        goto fail;
    }
    head_len = (size_t)n;
    if (head_len < header_len) {
        e = error_set(EINVAL, "truncated qcow2 header: the file shrank while being read");
        goto fail;
    }

    ext = xcalloc(1, sizeof(*ext));
    ext_end = head_len;
    if (be64(head + 8) != 0 && be64(head + 8) < ext_end)
        ext_end = (size_t)MAX(be64(head + 8), (uint64_t)header_len); /* the name follows */
    e = parse_extensions(head, header_len, ext_end, ext);
    if (e < 0)
        goto fail;
    e = check_features(r, head, head_len, ext, incompat);
    if (e < 0)
        goto fail;
    e = check_compression(r, head, header_len, incompat);
    if (e < 0)
        goto fail;
    e = load_l1(r, head);
    if (e < 0)
        goto fail;

    *ret = r;
    return 0;

fail:
    qcow2_reader_free(r);
    return e;
}

void qcow2_reader_free(struct qcow2_reader *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < L2_CACHE_SLOTS; i++)
        free(r->l2[i].table);
    if (r->inflater_ready)
        inflateEnd(&r->inflater);
    ZSTD_freeDCtx(r->zstd);
    free(r->z_data);
    free(r->z_in);
    free(r->l1);
    free(r);
}

uint64_t qcow2_reader_size(const struct qcow2_reader *r)
{
    return r->size;
}

static int load_l2(struct qcow2_reader *r, uint64_t offset, const uint8_t **ret_table)
{
    struct l2_slot *slot;
    ssize_t n;

    for (size_t i = 0; i < L2_CACHE_SLOTS; i++)
        if (r->l2[i].offset == offset) {
            *ret_table = r->l2[i].table;
            return 0;
        }
    slot = &r->l2[r->l2_victim];
    r->l2_victim = (r->l2_victim + 1) % L2_CACHE_SLOTS;
    if (!slot->table)
        slot->table = xmalloc((size_t)r->cluster_size);
    slot->offset = 0;
    n = pread_full(r->fd, slot->table, (size_t)r->cluster_size, (off_t)offset);
    if (n < 0)
        return error_set((int)n, "cannot read qcow2 L2 table at offset %" PRIu64 ": %s",
                         offset, strerror((int)-n));
    if ((uint64_t)n < r->cluster_size)
        return error_set(EBADMSG,
                         "corrupt qcow2 image: the L2 table at offset %" PRIu64
                         " is truncated",
                         offset);
    slot->offset = offset;
    *ret_table = slot->table;
    return 0;
}

/* Map the guest offset (< size) to where its data is. */
static int lookup(struct qcow2_reader *r, uint64_t offset, struct mapping *m)
{
    uint64_t cluster = offset >> r->cluster_bits;
    uint64_t in = offset & (r->cluster_size - 1);
    uint64_t l1i = cluster >> r->l2_bits;
    uint64_t l2i = cluster & ((1ULL << r->l2_bits) - 1);
    const uint8_t *table = NULL;
    uint64_t entry, host;
    int e;

    memset(m, 0, sizeof(*m));
    if (l1i >= r->l1_len || r->l1[l1i] == 0) {
        /* A whole L2 table's worth of unallocated clusters. */
        m->kind = KIND_ZERO;
        m->len = ((l1i + 1) << (r->l2_bits + r->cluster_bits)) - offset;
        return 0;
    }
    e = load_l2(r, r->l1[l1i], &table);
    if (e < 0)
        return e;
    entry = be64(table + (l2i << (r->extended_l2 ? 4 : 3)));
    m->len = r->cluster_size - in;

    if (entry & OFLAG_COMPRESSED) {
        unsigned shift = 62 - (r->cluster_bits - 8);
        uint64_t sectors = ((entry >> shift) & ((1ULL << (r->cluster_bits - 8)) - 1)) + 1;
        host = entry & ((1ULL << shift) - 1);
        m->kind = KIND_COMPRESSED;
        m->host = host;
        m->csize = sectors * 512 - (host & 511);
        return 0;
    }

    host = entry & OFFSET_MASK;
    if (!r->extended_l2) {
        /* Bit 0 is the zero flag of version 3; qemu honours it in version 2
         * images too, and so do we, so that both read the same data. */
        if ((entry & OFLAG_ZERO) || host == 0) {
            m->kind = KIND_ZERO;
            return 0;
        }
    } else {
        uint64_t bitmap = be64(table + (l2i << 4) + 8);
        uint32_t alloc = (uint32_t)bitmap, zero = (uint32_t)(bitmap >> 32);
        unsigned sc_bits = r->cluster_bits - 5;
        unsigned sc = (unsigned)(in >> sc_bits), end = sc + 1;
        bool is_alloc = alloc >> sc & 1;

        if (alloc & zero)
            return error_set(EBADMSG,
                             "corrupt qcow2 image: the L2 entry for guest offset %" PRIu64
                             " marks subclusters both allocated and zero",
                             offset);
        if (host == 0 && alloc)
            return error_set(EBADMSG,
                             "corrupt qcow2 image: the L2 entry for guest offset %" PRIu64
                             " has allocated subclusters but no host cluster",
                             offset);
        while (end < 32 && (bool)(alloc >> end & 1) == is_alloc)
            end++;
        m->len = ((uint64_t)end << sc_bits) - in;
        if (!is_alloc) {
            m->kind = KIND_ZERO;
            return 0;
        }
    }
    if (host & (r->cluster_size - 1))
        return error_set(EBADMSG,
                         "corrupt qcow2 image: the data cluster for guest offset %" PRIu64
                         " is at host offset %" PRIu64 ", which is not cluster aligned",
                         offset, host);
    m->kind = KIND_DATA;
    m->host = host + in;
    return 0;
}

static int inflate_cluster(struct qcow2_reader *r, const uint8_t *in, size_t len)
{
    int z;

    if (!r->inflater_ready) {
        memset(&r->inflater, 0, sizeof(r->inflater));
        /* Raw deflate; qemu writes 4 KiB windows, 32 KiB reads them all. */
        if (inflateInit2(&r->inflater, -15) != Z_OK)
            return -ENOMEM;
        r->inflater_ready = true;
    } else if (inflateReset(&r->inflater) != Z_OK) {
        return -EIO;
    }
    r->inflater.next_in = (Bytef *)in;
    r->inflater.avail_in = (uInt)len;
    r->inflater.next_out = r->z_data;
    r->inflater.avail_out = (uInt)r->cluster_size;
    z = inflate(&r->inflater, Z_FINISH);
    /* The data is followed by padding: success is a full cluster. */
    if ((z == Z_STREAM_END || z == Z_OK || z == Z_BUF_ERROR) && r->inflater.avail_out == 0)
        return 0;
    return -EBADMSG;
}

static int unzstd_cluster(struct qcow2_reader *r, const uint8_t *in, size_t len)
{
    ZSTD_inBuffer input = { in, len, 0 };
    ZSTD_outBuffer output = { r->z_data, (size_t)r->cluster_size, 0 };

    if (!r->zstd) {
        r->zstd = ZSTD_createDCtx();
        if (!r->zstd)
            return -ENOMEM;
        /* Cap the window a hostile frame may ask us to allocate. */
        if (ZSTD_isError(ZSTD_DCtx_setParameter(r->zstd, ZSTD_d_windowLogMax,
                                                ZSTD_WINDOW_LOG_MAX)))
            return -EIO;
    } else {
        ZSTD_DCtx_reset(r->zstd, ZSTD_reset_session_only);
    }
    /* Stream until the cluster is full: the frame is followed by padding. */
    while (output.pos < output.size) {
        size_t in_before = input.pos, out_before = output.pos;
        size_t z = ZSTD_decompressStream(r->zstd, &output, &input);
        if (ZSTD_isError(z))
            return -EBADMSG;
        if (input.pos == in_before && output.pos == out_before)
            return -EBADMSG;
    }
    return 0;
}

static int load_compressed(struct qcow2_reader *r, uint64_t host, uint64_t csize)
{
    size_t len;
    ssize_t n;
    int e;

    if (r->z_valid && r->z_host == host)
        return 0;
    if (host >= r->file_size)
        return error_set(EBADMSG,
                         "corrupt qcow2 image: compressed cluster at host offset %" PRIu64
                         " lies past the end of the file",
                         host);
    if (!r->z_data) {
        r->z_data = xmalloc((size_t)r->cluster_size);
        r->z_in = xmalloc((size_t)r->cluster_size * 2);
    }
    r->z_valid = false;
    /* The last sector of the last compressed cluster may extend past the end
     * of the file: read what is there. */
    len = (size_t)MIN(csize, r->file_size - host);
    n = pread_full(r->fd, r->z_in, len, (off_t)host);
    if (n < 0)
        return error_set((int)n, "cannot read qcow2 compressed cluster: %s",
                         strerror((int)-n));
    if (r->compression == COMPRESSION_ZSTD)
        e = unzstd_cluster(r, r->z_in, (size_t)n);
    else
        e = inflate_cluster(r, r->z_in, (size_t)n);
    if (e == -EBADMSG)
        return error_set(EBADMSG,
                         "corrupt qcow2 image: compressed cluster at host offset %" PRIu64
                         " (%" PRIu64 " bytes) does not decompress to a whole cluster",
                         host, csize);
    if (e < 0)
        return error_set(e, "cannot decompress qcow2 cluster: %s", strerror(-e));
    r->z_host = host;
    r->z_valid = true;
    return 0;
}

static int read_data(struct qcow2_reader *r, uint8_t *buf, size_t len, uint64_t host)
{
    ssize_t n;

    if (host > r->file_size || len > r->file_size - host)
        return error_set(EBADMSG,
                         "corrupt qcow2 image: data at host offset %" PRIu64
                         " lies past the end of the file",
                         host);
    n = pread_full(r->fd, buf, len, (off_t)host);
    if (n < 0)
        return error_set((int)n, "cannot read qcow2 data: %s", strerror((int)-n));
    if ((size_t)n < len)
        return error_set(EBADMSG, "corrupt qcow2 image: the file shrank while being read");
    return 0;
}

int qcow2_reader_read(struct qcow2_reader *r, void *buf, size_t len, uint64_t offset)
{
    uint8_t *out = buf;
    int e;

    if (offset > r->size || len > r->size - offset)
        return error_set(EINVAL,
                         "cannot read %zu bytes at offset %" PRIu64
                         " from a qcow2 image of %" PRIu64 " bytes",
                         len, offset, r->size);
    while (len > 0) {
        struct mapping m, next;
        size_t n;

        e = lookup(r, offset, &m);
        if (e < 0)
            return e;
        n = (size_t)MIN(m.len, (uint64_t)len);
        switch (m.kind) {
        case KIND_ZERO:
            memset(out, 0, n);
            break;
        case KIND_DATA:
            /* One pread for clusters that follow each other on the host. */
            while (n < len) {
                e = lookup(r, offset + n, &next);
                if (e < 0)
                    return e;
                if (next.kind != KIND_DATA || next.host != m.host + n)
                    break;
                n += (size_t)MIN(next.len, (uint64_t)(len - n));
            }
            e = read_data(r, out, n, m.host);
            if (e < 0)
                return e;
            break;
        case KIND_COMPRESSED:
            e = load_compressed(r, m.host, m.csize);
            if (e < 0)
                return e;
            memcpy(out, r->z_data + (offset & (r->cluster_size - 1)), n);
            break;
        }
        out += n;
        offset += n;
        len -= n;
    }
    return 0;
}

int qcow2_reader_extent(struct qcow2_reader *r, uint64_t offset, uint64_t max_len,
                        bool *ret_allocated, uint64_t *ret_len)
{
    struct mapping m;
    uint64_t limit, n;
    bool allocated;
    int e;

    if (offset >= r->size || max_len == 0)
        return error_set(EINVAL,
                         "cannot map offset %" PRIu64 " of a qcow2 image of %" PRIu64
                         " bytes",
                         offset, r->size);
    limit = MIN(max_len, r->size - offset);
    e = lookup(r, offset, &m);
    if (e < 0)
        return e;
    allocated = m.kind != KIND_ZERO;
    n = MIN(m.len, limit);
    for (unsigned i = 0; n < limit && i < EXTENT_MAX_LOOKUPS; i++) {
        e = lookup(r, offset + n, &m);
        if (e < 0)
            return e;
        if ((m.kind != KIND_ZERO) != allocated)
            break;
        n += MIN(m.len, limit - n);
    }
    *ret_allocated = allocated;
    *ret_len = n;
    return 0;
}
