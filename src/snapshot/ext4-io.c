/* The libext2fs I/O manager of ext4-io.h.  ext2fs_open() takes an I/O
 * manager and a name, not a handle, so ext4_io_open() hands the reader to
 * the manager's open through a thread-local pointer, set only for the
 * duration of that call; each channel then keeps it in its private data.
 * Writes go straight to the write callback (no cache here: the volume below
 * has its own), so a flush is only the callback's flush. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "snapshot/ext4-io.h"

#define MAX_READ (64U << 20)

struct kio_priv {
    const struct ext4_io_reader *r;
    int last_errno; /* of the last failed callback */
};

static __thread const struct ext4_io_reader *opening;

static errcode_t kio_open(const char *name, int flags, io_channel *ret);
static errcode_t kio_close(io_channel ch);
static errcode_t kio_set_blksize(io_channel ch, int blksize);
static errcode_t kio_read_blk64(io_channel ch, unsigned long long block, int count, void *data);
static errcode_t kio_read_blk(io_channel ch, unsigned long block, int count, void *data);
static errcode_t kio_write_blk64(io_channel ch, unsigned long long block, int count,
                                 const void *data);
static errcode_t kio_write_blk(io_channel ch, unsigned long block, int count, const void *data);
static errcode_t kio_flush(io_channel ch);
static errcode_t kio_set_option(io_channel ch, const char *option, const char *arg);

static struct struct_io_manager reader_io_manager = {
    .magic = EXT2_ET_MAGIC_IO_MANAGER,
    .name = "kiln reader",
    .open = kio_open,
    .close = kio_close,
    .set_blksize = kio_set_blksize,
    .read_blk = kio_read_blk,
    .write_blk = kio_write_blk,
    .flush = kio_flush,
    .set_option = kio_set_option,
    .read_blk64 = kio_read_blk64,
    .write_blk64 = kio_write_blk64,
};

static errcode_t kio_open(const char *name, int flags, io_channel *ret)
{
    io_channel ch;

    struct kio_priv *p;

    if (!opening)
        return EXT2_ET_BAD_DEVICE_NAME;
    if ((flags & IO_FLAG_RW) && !opening->write)
        return EXT2_ET_RO_FILSYS;
    ch = calloc(1, sizeof(*ch));
    p = calloc(1, sizeof(*p));
    if (!ch || !p) {
        free(ch);
        free(p);
        return EXT2_ET_NO_MEMORY;
    }
    ch->magic = EXT2_ET_MAGIC_IO_CHANNEL;
    ch->manager = &reader_io_manager;
    ch->name = strdup(name);
    ch->block_size = 1024;
    ch->refcount = 1;
    ch->flags = flags & IO_FLAG_RW;
    p->r = opening;
    ch->private_data = p;
    if (!ch->name) {
        free(p);
        free(ch);
        return EXT2_ET_NO_MEMORY;
    }
    *ret = ch;
    return 0;
}

static errcode_t kio_close(io_channel ch)
{
    if (--ch->refcount > 0)
        return 0;
    free(ch->private_data);
    free(ch->name);
    free(ch);
    return 0;
}

static errcode_t kio_set_blksize(io_channel ch, int blksize)
{
    ch->block_size = blksize;
    return 0;
}

static errcode_t kio_read_blk64(io_channel ch, unsigned long long block, int count, void *data)
{
    struct kio_priv *p = ch->private_data;
    const struct ext4_io_reader *r = p->r;
    /* A negative count is a byte count (libext2fs's convention). */
    uint64_t len = count < 0 ? (uint64_t)-(int64_t)count : (uint64_t)count * ch->block_size;
    uint64_t off = (uint64_t)block * ch->block_size;
    int rc;

    if (len > MAX_READ || off > r->size || len > r->size - off)
        return EXT2_ET_SHORT_READ;
    rc = r->read(r->ud, data, len, r->offset + off);
    if (rc < 0) {
        p->last_errno = -rc;
        return EXT2_ET_SHORT_READ;
    }
    return 0;
}

static errcode_t kio_read_blk(io_channel ch, unsigned long block, int count, void *data)
{
    return kio_read_blk64(ch, block, count, data);
}

static errcode_t kio_write_blk64(io_channel ch, unsigned long long block, int count,
                                 const void *data)
{
    struct kio_priv *p = ch->private_data;
    const struct ext4_io_reader *r = p->r;
    uint64_t len = count < 0 ? (uint64_t)-(int64_t)count : (uint64_t)count * ch->block_size;
    uint64_t off = (uint64_t)block * ch->block_size;
    int rc;

    if (!r->write || !(ch->flags & IO_FLAG_RW))
        return EXT2_ET_RO_FILSYS;
    if (len > MAX_READ || off > r->size || len > r->size - off)
        return EXT2_ET_SHORT_WRITE;
    rc = r->write(r->ud, data, len, r->offset + off);
    if (rc < 0) {
        p->last_errno = -rc;
        return EXT2_ET_SHORT_WRITE;
    }
    return 0;
}

static errcode_t kio_write_blk(io_channel ch, unsigned long block, int count, const void *data)
{
    return kio_write_blk64(ch, block, count, data);
}

static errcode_t kio_flush(io_channel ch)
{
    struct kio_priv *p = ch->private_data;
    int rc;

    if (!p->r->write || !p->r->flush || !(ch->flags & IO_FLAG_RW))
        return 0;
    rc = p->r->flush(p->r->ud);
    if (rc < 0) {
        p->last_errno = -rc;
        return EXT2_ET_SHORT_WRITE;
    }
    return 0;
}

static errcode_t kio_set_option(io_channel ch, const char *option, const char *arg)
{
    return EXT2_ET_INVALID_ARGUMENT;
}

errcode_t ext4_io_open(const struct ext4_io_reader *r, const char *name, int flags,
                       ext2_filsys *ret)
{
    errcode_t e;

    if ((flags & EXT2_FLAG_RW) && !r->write)
        return EXT2_ET_RO_FILSYS;
    opening = r;
    e = ext2fs_open(name, flags, 0, 0, &reader_io_manager, ret);
    opening = NULL;
    return e;
}

int ext4_io_last_errno(ext2_filsys fs)
{
    if (!fs || !fs->io || fs->io->manager != &reader_io_manager)
        return 0;
    return ((struct kio_priv *)fs->io->private_data)->last_errno;
}

const char *ext4_io_strerror(errcode_t code)
{
    const struct error_table *t = &et_ext2_error_table;

    if (code >= t->base && code < t->base + t->n_msgs)
        return t->msgs[code - t->base];
    if (code > 0 && code < 4096)
        return strerror((int)code);
    return "unknown libext2fs error";
}

int ext4_io_errno(errcode_t code)
{
    switch (code) {
    case EXT2_ET_BLOCK_ALLOC_FAIL:
    case EXT2_ET_INODE_ALLOC_FAIL:
    case EXT2_ET_DIR_NO_SPACE:
    case EXT2_ET_EXTENT_NO_SPACE:
    case EXT2_ET_DIR_NO_SPACE_FOR_CSUM:
    case EXT2_ET_EA_NO_SPACE:
    case EXT2_ET_INLINE_DATA_NO_SPACE:
    case EXT2_ET_TOOSMALL:
        return ENOSPC;
    case EXT2_ET_FILE_NOT_FOUND:
        return ENOENT;
    case EXT2_ET_DIR_EXISTS:
        return EEXIST;
    case EXT2_ET_NO_DIRECTORY:
        return ENOTDIR;
    case EXT2_ET_FILE_TOO_BIG:
        return EFBIG;
    case EXT2_ET_RO_FILSYS:
        return EROFS;
    case EXT2_ET_NO_MEMORY:
        return ENOMEM;
    case EXT2_ET_SHORT_READ:
    case EXT2_ET_SHORT_WRITE:
        return EIO;
    case EXT2_ET_BAD_MAGIC:
    case EXT2_ET_SB_CSUM_INVALID:
    case EXT2_ET_BAD_DESC_SIZE:
    case EXT2_ET_FILESYSTEM_CORRUPTED:
    case EXT2_ET_INODE_CORRUPTED:
    case EXT2_ET_UNKNOWN_CSUM:
    case EXT2_ET_GDESC_BAD_BLOCK_MAP:
    case EXT2_ET_GDESC_BAD_INODE_MAP:
    case EXT2_ET_GDESC_BAD_INODE_TABLE:
    case EXT2_ET_CORRUPT_SUPERBLOCK:
    case EXT2_ET_INODE_CSUM_INVALID:
    case EXT2_ET_INODE_BITMAP_CSUM_INVALID:
    case EXT2_ET_BLOCK_BITMAP_CSUM_INVALID:
    case EXT2_ET_EXTENT_CSUM_INVALID:
    case EXT2_ET_DIR_CSUM_INVALID:
    case EXT2_ET_EXT_ATTR_CSUM_INVALID:
    case EXT2_ET_DIR_CORRUPTED:
    case EXT2_ET_EXTENT_HEADER_BAD:
    case EXT2_ET_BAD_BLOCK_NUM:
    case EXT2_ET_BAD_INODE_NUM:
        return EBADMSG;
    default:
        return code > 0 && code < 4096 ? (int)code : EIO;
    }
}
