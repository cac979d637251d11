/* The kernel and initrd of an image, read from the image's own ext4 file
 * system: an instance boots what its image holds, never the host's /boot.
 *
 * libext2fs walks the file system through an I/O manager (snapshot/ext4-io.c)
 * whose reads go to the caller's struct vm_disk (a volume's read path, so
 * blocks come from the chunk store like any other read of the disk); nothing
 * is mounted.
 * /vmlinuz and /initrd.img (Debian's symlinks) are followed inside the
 * image; without them the newest /boot/vmlinuz-VERSION and its
 * /boot/initrd.img-VERSION are taken.  Each file is copied to a temporary
 * file in the instance directory and renamed into place.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "snapshot/ext4-io.h"
#include "vm/vm.h"

#define MAX_KERNEL (256ULL << 20)
#define MAX_INITRD (1ULL << 30)

/* The regular file `path` (symlinks followed inside the image), or 0. */
static ext2_ino_t lookup(ext2_filsys fs, const char *path)
{
    struct ext2_inode inode;
    ext2_ino_t ino;

    if (ext2fs_namei_follow(fs, EXT2_ROOT_INO, EXT2_ROOT_INO, path, &ino) != 0)
        return 0;
    if (ext2fs_read_inode(fs, ino, &inode) != 0 || !LINUX_S_ISREG(inode.i_mode))
        return 0;
    return ino;
}

struct newest {
    char version[256];
};

static int boot_dir_cb(struct ext2_dir_entry *de, int offset, int blocksize, char *buf,
                       void *priv)
{
    struct newest *n = priv;
    size_t len = ext2fs_dirent_name_len(de);
    char name[256];

    memcpy(name, de->name, len);
    name[len] = 0;
    if (strncmp(name, "vmlinuz-", 8) == 0 && name[8] &&
        (!n->version[0] || strverscmp(name + 8, n->version) > 0))
        snprintf(n->version, sizeof(n->version), "%s", name + 8);
    return 0;
}

static int copy_out(ext2_filsys fs, ext2_ino_t ino, const char *what, uint64_t max,
                    const char *dest)
{
    _cleanup_free_ char *tmp = xasprintf("%s.tmp", dest);
    _cleanup_free_ uint8_t *buf = xmalloc(1 << 20);
    _cleanup_close_ int fd = -1;
    ext2_file_t file = NULL;
    __u64 size, done = 0;
    int r = 0;

    if (ext2fs_file_open(fs, ino, 0, &file) != 0)
        return error_set(EBADMSG, "cannot open the image's %s", what);
    if (ext2fs_file_get_lsize(file, &size) != 0) {
        ext2fs_file_close(file);
        return error_set(EBADMSG, "cannot read the size of the image's %s", what);
    }
    if (size > max) {
        ext2fs_file_close(file);
        return error_set(EFBIG, "the image's %s is %llu bytes (at most %llu)", what,
                         (unsigned long long)size, (unsigned long long)max);
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        r = error_set(errno, "cannot create '%s': %m", tmp);
        goto out;
    }
    while (done < size) {
        unsigned int got = 0;
        unsigned int want = size - done < (1 << 20) ? (unsigned int)(size - done) : 1 << 20;
        if (ext2fs_file_read(file, buf, want, &got) != 0 || got == 0) {
            r = error_set(EBADMSG, "cannot read the image's %s at byte %llu", what,
                          (unsigned long long)done);
            goto out;
        }
        r = write_all(fd, buf, got, (off_t)done);
        if (r < 0) {
            r = error_set(r, "cannot write '%s': %s", tmp, strerror(-r));
            goto out;
        }
        done += got;
    }
    if (rename(tmp, dest) < 0)
        r = error_set(errno, "cannot rename '%s': %m", tmp);
out:
    ext2fs_file_close(file);
    if (r < 0)
        unlink(tmp);
    return r;
}

int vm_boot_files_extract(const struct vm_disk *disk, const char *dir, bool *ret_has_initrd)
{
    _cleanup_free_ char *kdest = xasprintf("%s/vmlinuz", dir);
    _cleanup_free_ char *idest = xasprintf("%s/initrd.img", dir);
    struct ext4_io_reader rd = { .read = disk->read, .ud = disk->ud, .size = disk->size };
    ext2_filsys fs = NULL;
    ext2_ino_t kino, iino, boot;
    struct newest n = { { 0 } };
    int r;

    if (ext4_io_open(&rd, "kiln-vm", EXT2_FLAG_64BITS, &fs) != 0)
        return error_set(EBADMSG, "the root volume holds no ext4 file system at its start");
    kino = lookup(fs, "/vmlinuz");
    iino = kino ? lookup(fs, "/initrd.img") : 0;
    if (!kino && ext2fs_namei(fs, EXT2_ROOT_INO, EXT2_ROOT_INO, "/boot", &boot) == 0) {
        ext2fs_dir_iterate(fs, boot, 0, NULL, boot_dir_cb, &n);
        if (n.version[0]) {
            _cleanup_free_ char *k = xasprintf("/boot/vmlinuz-%s", n.version);
            _cleanup_free_ char *i = xasprintf("/boot/initrd.img-%s", n.version);
            kino = lookup(fs, k);
            iino = lookup(fs, i);
        }
    }
    if (!kino) {
        r = error_set(ENOENT, "the image has no kernel (/vmlinuz or /boot/vmlinuz-*)");
        goto out;
    }
    r = copy_out(fs, kino, "kernel", MAX_KERNEL, kdest);
    if (r >= 0 && iino)
        r = copy_out(fs, iino, "initrd", MAX_INITRD, idest);
    if (r >= 0 && !iino)
        unlink(idest);
    if (r >= 0)
        *ret_has_initrd = iino != 0;
out:
    ext2fs_close_free(&fs);
    return r;
}
