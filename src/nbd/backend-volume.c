/* A volume (src/volume/) as an NBD backend: each callback is one call of
 * the volume's API, which is thread-safe and does its own locking, so the
 * adapter adds none.  One handle serves every connection, so a flush on
 * any connection covers the writes of all: NBD_FLAG_CAN_MULTI_CONN. */
#include <errno.h>

#include "nbd/nbd.h"
#include "nbd/proto.h"
#include "volume/volume.h"

static int vol_pread(void *h, void *buf, uint32_t count, uint64_t offset)
{
    return volume_read(h, buf, count, offset);
}

static int vol_pwrite(void *h, const void *buf, uint32_t count, uint64_t offset, bool fua)
{
    return volume_write(h, buf, count, offset, fua);
}

static int vol_flush(void *h)
{
    return volume_flush(h);
}

static int vol_trim(void *h, uint32_t count, uint64_t offset, bool fua)
{
    return volume_trim(h, count, offset, fua);
}

/* Zeroed blocks are recorded in the overlay bitmap either way: the volume
 * never needs space to write them again beyond the overlay's, so NO_HOLE
 * (may_trim false) asks nothing more of it. */
static int vol_zero(void *h, uint32_t count, uint64_t offset, bool may_trim, bool fua)
{
    return volume_zero(h, count, offset, fua);
}

static int vol_cache(void *h, uint32_t count, uint64_t offset)
{
    return volume_cache(h, count, offset);
}

static int vol_extents(void *h, uint32_t count, uint64_t offset, struct nbd_extent *ret,
                       size_t max)
{
    uint64_t pos = offset, end = offset + count;
    size_t n = 0;

    while (pos < end && n < max) {
        bool allocated, zero;
        uint64_t run;
        int r = volume_block_status(h, pos, end - pos, &allocated, &zero, &run);
        if (r < 0)
            return n ? (int)n : r;
        if (run == 0 || run > end - pos)
            run = end - pos;
        ret[n++] = (struct nbd_extent){ pos, run,
                                        (allocated ? 0 : NBD_STATE_HOLE) |
                                            (zero ? NBD_STATE_ZERO : 0) };
        pos += run;
    }
    return (int)n;
}

static void vol_close(void *h)
{
    volume_close(h);
}

static const struct nbd_backend_ops volume_rw_ops = {
    .name = "volume",
    .pread = vol_pread,
    .pwrite = vol_pwrite,
    .flush = vol_flush,
    .trim = vol_trim,
    .zero = vol_zero,
    .cache = vol_cache,
    .extents = vol_extents,
    .close = vol_close,
};

static const struct nbd_backend_ops volume_ro_ops = {
    .name = "volume",
    .pread = vol_pread,
    .cache = vol_cache,
    .extents = vol_extents,
    .close = vol_close,
};

int nbd_volume_backend_new(struct volume *v, bool read_only, struct nbd_backend *ret)
{
    read_only = read_only || volume_is_read_only(v);
    *ret = (struct nbd_backend){
        .ops = read_only ? &volume_ro_ops : &volume_rw_ops,
        .handle = v,
        .size = volume_size(v),
        .read_only = read_only,
        .can_multi_conn = true,
    };
    return 0;
}
