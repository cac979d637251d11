/* A libext2fs I/O manager over callbacks: how kiln walks an ext2/3/4 file
 * system inside a disk it reads some other way (an import source, raw or
 * qcow2, for layout.c's cut hints; a volume's read path for vm/bootfiles.c's
 * kernel and initrd), without mounting anything.  With a write callback it
 * is read-write: the offline executor (src/bake/offline.c) edits a volume's
 * file system through it.
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
 * fails with EXT2_ET_SHORT_READ before reaching `read`.
 *
 * `write` and `flush` are optional (NULL: a read-only reader, as layout.c
 * and bootfiles.c use): write(ud, buf, len, offset + off) stores len bytes
 * (0 or -errno; the same bounds as reads, EXT2_ET_SHORT_WRITE past them),
 * flush(ud) makes every write so far durable (may be NULL: nothing to do).
 * libext2fs writes through at once (no cache in this manager); a failed
 * callback's errno is kept for ext4_io_last_errno(). */
struct ext4_io_reader {
    int (*read)(void *ud, void *buf, size_t len, uint64_t offset);
    int (*write)(void *ud, const void *buf, size_t len, uint64_t offset);
    int (*flush)(void *ud);
    void *ud;
    uint64_t offset;
    uint64_t size;
};

/* ext2fs_open() the file system `r` reads with `flags` (EXT2_FLAG_64BITS,
 * ...); EXT2_FLAG_RW needs r->write (EXT2_ET_RO_FILSYS without it);
 * `name` shows in libext2fs's messages.  *r must outlive the file system
 * (ext2fs_close() or ext2fs_free()).  Returns 0 with *ret, or the libext2fs
 * error code. */
errcode_t ext4_io_open(const struct ext4_io_reader *r, const char *name, int flags,
                       ext2_filsys *ret);

/* The -errno of the last failed read, write or flush callback of `fs`'s
 * channel (0 if none failed): libext2fs reports them only as
 * EXT2_ET_SHORT_READ / _SHORT_WRITE. */
int ext4_io_last_errno(ext2_filsys fs);

/* The text of libext2fs error code `code` (what com_err's error_message()
 * says: the ext2 error table, else strerror for an errno).  Static. */
const char *ext4_io_strerror(errcode_t code);

/* The errno kiln reports for libext2fs error code `code` (positive):
 * ENOSPC for allocation failures, ENOENT, EEXIST, ENOTDIR, EBADMSG for
 * checksums and corruption, EROFS, EIO for short I/O, else EIO; an errno
 * value passes through. */
int ext4_io_errno(errcode_t code);

#endif
