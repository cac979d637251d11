/* The read-only libext2fs I/O manager of ext4-io.h.  ext2fs_open() takes an
 * I/O manager and a name, not a handle, so ext4_io_open() hands the reader
 * to the manager's open through a thread-local pointer, set only for the
 * duration of that call; each channel then keeps it as its private data. */
#include <stdlib.h>
#include <string.h>

#include "snapshot/ext4-io.h"

#define MAX_READ (64U << 20)

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

    if (!opening || (flags & IO_FLAG_RW))
        return EXT2_ET_BAD_DEVICE_NAME;
    ch = calloc(1, sizeof(*ch));
    if (!ch)
        return EXT2_ET_NO_MEMORY;
    ch->magic = EXT2_ET_MAGIC_IO_CHANNEL;
    ch->manager = &reader_io_manager;
    ch->name = strdup(name);
    ch->block_size = 1024;
    ch->refcount = 1;
    ch->private_data = (void *)opening;
    if (!ch->name) {
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
    const struct ext4_io_reader *r = ch->private_data;
    /* A negative count is a byte count (libext2fs's convention). */
    uint64_t len = count < 0 ? (uint64_t)-(int64_t)count : (uint64_t)count * ch->block_size;
    uint64_t off = (uint64_t)block * ch->block_size;

    if (len > MAX_READ || off > r->size || len > r->size - off)
        return EXT2_ET_SHORT_READ;
    if (r->read(r->ud, data, len, r->offset + off) < 0)
        return EXT2_ET_SHORT_READ;
    return 0;
}

static errcode_t kio_read_blk(io_channel ch, unsigned long block, int count, void *data)
{
    return kio_read_blk64(ch, block, count, data);
}

static errcode_t kio_write_blk64(io_channel ch, unsigned long long block, int count,
                                 const void *data)
{
    return EXT2_ET_RO_FILSYS;
}

static errcode_t kio_write_blk(io_channel ch, unsigned long block, int count, const void *data)
{
    return EXT2_ET_RO_FILSYS;
}

static errcode_t kio_flush(io_channel ch)
{
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

    if (flags & EXT2_FLAG_RW)
        return EXT2_ET_RO_FILSYS;
    opening = r;
    e = ext2fs_open(name, flags, 0, 0, &reader_io_manager, ret);
    opening = NULL;
    return e;
}
