/* The offline executor: file-level bake steps applied to the ext4 file
 * system of a volume through libext2fs, without booting anything
 * (docs/baking.md, "Offline executor").
 *
 * The file system is opened read-write through snapshot/ext4-io.h over the
 * volume's read path (volume_read/volume_write), so reads fall through to
 * the snapshot the volume was made from and every write lands in the
 * volume's overlay.  Only a bare ext2/3/4 file system at offset 0 (as kiln's
 * images are) is supported; a partitioned disk is refused with -ENOTSUP.
 *
 * Paths inside the image are absolute; a `..` component is refused
 * (-EINVAL) and symbolic links met on the way are resolved inside the image
 * (an absolute target starts again at the image's root, `..` stops at the
 * root), never on the host.
 *
 * Every function returns >= 0 or -errno with a message through
 * error_set() that names the path in the image (or on the host) and, for
 * libext2fs failures, its error text: -ENOENT missing, -EEXIST in the way,
 * -ENOTDIR a component is not a directory, -EINVAL bad input, -ENOSPC the
 * file system is full, -EBADMSG a corrupt file system, -EIO the volume
 * failed.  Bad input is refused before anything is written.  A failure
 * while writing (ENOSPC) undoes the operation's own allocations, so the
 * file system stays consistent and the handle usable; only an I/O failure
 * of the volume leaves it inconsistent, after which every call and
 * offline_close() fail with -EIO and the volume must be discarded.
 *
 * Durability: nothing is durable until offline_close(), which writes the
 * bitmaps, group descriptors and superblock (ext2fs_close()) and then
 * flushes the volume (volume_flush()).  A crash before that leaves a volume
 * to be thrown away (a bake rebuilds the step).
 *
 * A handle is used by one thread at a time.
 */
#ifndef KILN_BAKE_OFFLINE_H
#define KILN_BAKE_OFFLINE_H

#include <stddef.h>
#include <stdint.h>

#include "snapshot/ext4-io.h"

struct volume;
struct offline;

/* Open the ext4 file system of volume `v` (borrowed; opened writable; must
 * outlive the handle) read-write; `name` (copied) names it in messages (a
 * volume or build id).  Refused, with nothing written: no ext2/3/4 file
 * system at offset 0 (-EINVAL), a partitioned disk (-ENOTSUP), a corrupt
 * one (-EBADMSG with libext2fs's reason), one marked with errors or with a
 * journal to replay (-EBADMSG), features libext2fs cannot write
 * (-ENOTSUP), a read-only volume (-EROFS). */
int offline_open_volume(struct volume *v, const char *name, struct offline **ret);

/* The same over any reader with a write callback (`r` borrowed, must
 * outlive the handle). */
int offline_open(const struct ext4_io_reader *r, const char *name, struct offline **ret);

/* Write the file system's metadata (ext2fs_close()), then flush the volume;
 * frees the handle either way.  Accepts NULL (returns 0). */
int offline_close(struct offline *o);

/* Free the handle without writing the file system's metadata (after a
 * failure, when the volume is to be discarded).  Accepts NULL. */
void offline_discard(struct offline *o);

/* Attributes of what a step creates.  mode: permission bits (07777), or -1
 * for the default (0644 files, 0755 directories; a file replaced keeps its
 * mode and owner unless given; a copied host file keeps the host's
 * mode); uid, gid: numeric owner, -1 for 0 (root) or the replaced file's. */
struct offline_attr {
    int mode;
    int64_t uid, gid;
};
#define OFFLINE_ATTR_DEFAULT ((struct offline_attr){.mode = -1, .uid = -1, .gid = -1})

enum offline_flags {
    OFFLINE_MKDIRS = 1U << 0,     /* create missing parent directories (0755, root) */
    OFFLINE_RECURSIVE = 1U << 1,  /* delete: directories with their contents */
    OFFLINE_MISSING_OK = 1U << 2, /* delete: an absent path is success */
};

/* Write `len` bytes of `data` as regular file `path` (created, or replaced:
 * the new content is written to a new inode first, then the name is
 * switched, so a failure leaves the old file).  -EEXIST when `path` is a
 * directory. */
int offline_file_write(struct offline *o, const char *path, const void *data, size_t len,
                       const struct offline_attr *a, unsigned flags);

/* Copy host file or directory `host_path` to `path` (Packer's rule: a
 * directory source ending in '/' copies its contents into `path`, without
 * it the directory itself becomes `path`/basename).  Regular files,
 * directories and symbolic links (copied as links) are copied with their
 * host modes unless a->mode is given (files only); the owner is a's.  The
 * whole source is checked first (-ENOENT missing, -EACCES unreadable,
 * -EINVAL other file types), so a bad source writes nothing. */
int offline_copy(struct offline *o, const char *host_path, const char *path,
                 const struct offline_attr *a, unsigned flags);

/* Delete `path` (not following a final symbolic link).  A non-empty
 * directory needs OFFLINE_RECURSIVE (-ENOTEMPTY otherwise); an absent path
 * is -ENOENT unless OFFLINE_MISSING_OK. */
int offline_delete(struct offline *o, const char *path, unsigned flags);

/* Make `path` a symbolic link to `target` (any string up to 4095 bytes),
 * replacing a link or file there (a directory is -EEXIST). */
int offline_symlink(struct offline *o, const char *target, const char *path, unsigned flags);

/* Append `line` (no newline in it) and a newline to file `path` unless a
 * line of the file already equals it; create the file (attributes `a`)
 * when absent.  Returns 1 when appended, 0 when the line was there. */
int offline_append_line(struct offline *o, const char *path, const char *line,
                        const struct offline_attr *a, unsigned flags);

/* Create directory `path` (mode and owner `a`); an existing directory gets
 * `a`'s mode and owner where given (not an error); something else there is
 * -EEXIST. */
int offline_mkdir(struct offline *o, const char *path, const struct offline_attr *a,
                  unsigned flags);

enum offline_systemd_action {
    OFFLINE_SYSTEMD_ENABLE,
    OFFLINE_SYSTEMD_DISABLE,
    OFFLINE_SYSTEMD_MASK,
};

/* What systemctl enable/disable/mask do to the files, for `unit`
 * (`name.service`, `name@instance.service`, ...):
 *   enable  reads the unit file from /etc/systemd/system, /lib/systemd/system
 *           or /usr/lib/systemd/system (first found; a template for an
 *           instance) and links it into /etc/systemd/system/T.wants/ (and
 *           .requires/) for each T of its [Install] WantedBy= (RequiredBy=),
 *           and /etc/systemd/system/A for each Alias=; -ENOENT no unit file,
 *           -EINVAL no [Install] entry to act on;
 *   disable removes those links from every *.wants and *.requires directory
 *           of /etc/systemd/system (and the aliases); nothing to remove is
 *           success;
 *   mask    links /etc/systemd/system/unit to /dev/null (-EEXIST over a
 *           regular file). */
int offline_systemd(struct offline *o, enum offline_systemd_action action, const char *unit);

/* The [Install] section of a unit file, as `enable` reads it. */
struct offline_unit_install {
    char **wanted_by, **required_by, **alias; /* names as written, none empty */
    size_t n_wanted_by, n_required_by, n_alias;
};

/* At most this many names in one [Install] section. */
#define OFFLINE_UNIT_INSTALL_MAX 256

/* Parse the WantedBy=, RequiredBy= and Alias= lines (space-separated lists,
 * repeatable) of the [Install] section of unit file text `text` (`len`
 * bytes, any bytes: a NUL ends the text).  -EINVAL with a message for more
 * than OFFLINE_UNIT_INSTALL_MAX names.  Release with
 * offline_unit_install_release(). */
int offline_unit_install_parse(const char *text, size_t len, struct offline_unit_install *ret);
void offline_unit_install_release(struct offline_unit_install *u);

#endif
