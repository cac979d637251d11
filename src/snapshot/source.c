/* Import sources: raw files (holes found with SEEK_DATA/SEEK_HOLE) and
 * qcow2 images (through our own reader). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "snapshot/source.h"

/* Signatures of files that are not raw disks, refused when probing. */
static const struct {
    const char *magic;
    size_t len;
    size_t offset;
    const char *what;
} foreign[] = {
    { "KDMV", 4, 0, "a VMDK image" },
    { "# Disk DescriptorFile", 21, 0, "a VMDK descriptor" },
    { "vhdxfile", 8, 0, "a VHDX image" },
    { "conectix", 8, 0, "a VHD image" },
    { "QED\0", 4, 0, "a QED image" },
    { "<<< Oracle VM VirtualBox Disk Image >>>", 39, 0, "a VDI image" },
    /* ID1 ID2 CM=8: deflate is the only method RFC 1952 defines; two
     * bytes alone refuse one random raw disk in 65536. */
    { "\x1f\x8b\x08", 3, 0, "a gzip file" },
    { "\xfd" "7zXZ\0", 6, 0, "an xz file" },
    { "\x28\xb5\x2f\xfd", 4, 0, "a zstd file" },
    { "BZh", 3, 0, "a bzip2 file" },
    { "PK\x03\x04", 4, 0, "a zip file" },
    { "\x7f" "ELF", 4, 0, "an ELF executable" },
    { "ustar", 5, 257, "a tar archive" },
};

static int probe(struct source *src, const uint8_t *head, size_t n)
{
    if (qcow2_probe(head, n)) {
        src->format = IMAGE_FORMAT_QCOW2;
        return 0;
    }
    for (size_t i = 0; i < ARRAY_SIZE(foreign); i++)
        if (n >= foreign[i].offset + foreign[i].len &&
            memcmp(head + foreign[i].offset, foreign[i].magic, foreign[i].len) == 0)
            return error_set(EINVAL, "'%s' is %s, not a raw or qcow2 disk image", src->path,
                             foreign[i].what);
    src->format = IMAGE_FORMAT_RAW;
    return 0;
}

int source_open(const char *path, enum image_format format, struct source *ret)
{
    struct source src = { .fd = -1, .format = format, .path = path };
    uint8_t head[512];
    struct stat st;
    ssize_t n;
    int r;

    /* O_NONBLOCK: opening a FIFO must not wait for a writer. */
    src.fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (src.fd < 0)
        return error_set(errno, "cannot open '%s': %m", path);
    if (fstat(src.fd, &st) < 0) {
        r = error_set(errno, "cannot stat '%s': %m", path);
        goto fail;
    }
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
        r = error_set(EINVAL, "'%s' is not a regular file or block device", path);
        goto fail;
    }
    if (fcntl(src.fd, F_SETFL, 0) < 0) {
        r = error_set(errno, "cannot use '%s': %m", path);
        goto fail;
    }
    n = pread_full(src.fd, head, sizeof(head), 0);
    if (n < 0) {
        r = error_set((int)n, "cannot read '%s': %s", path, strerror((int)-n));
        goto fail;
    }
    if (format == IMAGE_FORMAT_AUTO) {
        r = probe(&src, head, (size_t)n);
        if (r < 0)
            goto fail;
    }
    if (src.format == IMAGE_FORMAT_QCOW2) {
        r = qcow2_reader_open(src.fd, &src.qcow2);
        if (r < 0) {
            char why[256];
            snprintf(why, sizeof(why), "%s", error_message() ? error_message() : strerror(-r));
            r = error_set(r, "cannot import '%s': %s", path, why);
            goto fail;
        }
        src.size = qcow2_reader_size(src.qcow2);
    } else if (S_ISBLK(st.st_mode)) {
        off_t end = lseek(src.fd, 0, SEEK_END);
        if (end < 0) {
            r = error_set(errno, "cannot size '%s': %m", path);
            goto fail;
        }
        src.size = (uint64_t)end;
    } else {
        src.size = (uint64_t)st.st_size;
    }
    if (src.size == 0) {
        r = error_set(EINVAL, "'%s' is empty: a disk image needs at least one sector", path);
        goto fail;
    }
    if (src.size % 512) {
        r = error_set(EINVAL,
                      "'%s' is %llu bytes, not a multiple of 512: it is not a disk image",
                      path, (unsigned long long)src.size);
        goto fail;
    }
    if (src.size > BLOCKMAP_MAX_VOLUME) {
        r = error_set(EINVAL, "'%s' is larger than the 64 TiB kiln supports", path);
        goto fail;
    }
    *ret = src;
    return 0;

fail:
    source_release(&src);
    return r;
}

int source_from_reader(const struct snapshot_reader *reader, struct source *ret)
{
    const char *name = reader->name ? reader->name : "volume";

    if (!reader->extent || !reader->read)
        return error_set(EINVAL, "'%s': a reader needs extent and read callbacks", name);
    if (reader->size == 0 || reader->size % 512)
        return error_set(EINVAL, "'%s' is %llu bytes, not a non-zero multiple of 512", name,
                         (unsigned long long)reader->size);
    if (reader->size > BLOCKMAP_MAX_VOLUME)
        return error_set(EINVAL, "'%s' is larger than the 64 TiB kiln supports", name);
    *ret = (struct source){ .fd = -1, .format = IMAGE_FORMAT_RAW, .size = reader->size,
                            .reader = reader, .path = name };
    return 0;
}

void source_release(struct source *src)
{
    qcow2_reader_free(src->qcow2);
    src->qcow2 = NULL;
    if (src->fd >= 0)
        close(src->fd);
    src->fd = -1;
}

int source_extent(struct source *src, uint64_t offset, uint64_t max_len, bool *ret_data,
                  uint64_t *ret_len)
{
    off_t data, hole;

    if (src->qcow2)
        return qcow2_reader_extent(src->qcow2, offset, max_len, ret_data, ret_len);
    if (src->reader)
        return src->reader->extent(src->reader->userdata, offset, max_len, ret_data, ret_len);

    if (offset >= src->data_start && offset < src->data_end) {
        *ret_data = true;
        *ret_len = MIN(src->data_end - offset, max_len);
        return 0;
    }
    data = lseek(src->fd, (off_t)offset, SEEK_DATA);
    if (data < 0 && errno == ENXIO) {
        /* Only a hole up to the end of the file. */
        *ret_data = false;
        *ret_len = max_len;
        return 0;
    }
    if (data < 0) {
        /* No SEEK_DATA support (or a block device): all data. */
        *ret_data = true;
        *ret_len = max_len;
        return 0;
    }
    if ((uint64_t)data > offset) {
        *ret_data = false;
        *ret_len = MIN((uint64_t)data - offset, max_len);
        return 0;
    }
    hole = lseek(src->fd, (off_t)offset, SEEK_HOLE);
    if (hole > (off_t)offset) {
        src->data_start = offset;
        src->data_end = (uint64_t)hole;
    }
    *ret_data = true;
    *ret_len = hole > (off_t)offset ? MIN((uint64_t)hole - offset, max_len) : max_len;
    return 0;
}

int source_read(struct source *src, void *buf, size_t len, uint64_t offset)
{
    ssize_t n;

    if (src->qcow2)
        return qcow2_reader_read(src->qcow2, buf, len, offset);
    if (src->reader)
        return src->reader->read(src->reader->userdata, buf, len, offset);
    n = pread_full(src->fd, buf, len, (off_t)offset);
    if (n < 0)
        return error_set((int)n, "cannot read '%s': %s", src->path, strerror((int)-n));
    if ((size_t)n < len)
        return error_set(EIO, "'%s' shrank while it was being read", src->path);
    return 0;
}
