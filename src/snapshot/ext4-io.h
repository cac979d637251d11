/* A read-only libext2fs I/O manager over a read callback: how kiln walks an
 * ext2/3/4 file system inside a disk it reads some other way (an import
 * source, raw or qcow2, for layout.c's cut hints; a volume's read path for
 * vm/bootfiles.c's kernel and initrd), without mounting anything.
 *
 * It is a library of its own (kiln-ext4io: common and libext2fs only), so
 * that src/vm links it without the rest of src/snapshot. */
#ifndef KILN_SNAPSHOT_EXT4_IO_H
#define KILN_SNAPSHOT_EXT4_IO_H

#include <stddef.h>
#include <stdint.h>

/* com_err (pulled in by ext2fs.h) declares an error_message() of its own;
 * rename its declaration away from kiln's (common/error.h). */
#define error_message com_err_error_message
#include <ext2fs/ext2fs.h>
#undef error_message

/* Where the file system's bytes come from: read(ud, buf, len, offset + off)
 * reads len bytes at byte off of the file system (0 or -errno), which is
 * `size` bytes long.  A read past the end, or of more than 64 MiB at once,
 * fails with EXT2_ET_SHORT_READ before reaching `read`. */
struct ext4_io_reader {
    int (*read)(void *ud, void *buf, size_t len, uint64_t offset);
    void *ud;
    uint64_t offset;
    uint64_t size;
};

/* ext2fs_open() the file system `r` reads, read-only, with `flags`
 * (EXT2_FLAG_64BITS, ...; EXT2_FLAG_RW is refused); `name` shows in
 * libext2fs's messages.  *r must outlive the file system (ext2fs_close()).
 * Returns 0 with *ret, or the libext2fs error code. */
errcode_t ext4_io_open(const struct ext4_io_reader *r, const char *name, int flags,
                       ext2_filsys *ret);

#endif
