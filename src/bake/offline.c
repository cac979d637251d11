/* The offline executor (offline.h): file-level steps through libext2fs.
 *
 * Design notes.
 * - Order of writes.  libext2fs writes inodes and directory blocks through
 *   at once and keeps the bitmaps, group descriptors and superblock in
 *   memory until ext2fs_close().  A new file is written to a new inode
 *   (allocated in the in-memory bitmap) before any directory names it, so a
 *   failure while writing its data frees the inode and its blocks again
 *   and leaves no trace in the metadata that close writes.
 * - Failures of the volume itself (EXT2_ET_SHORT_READ/_WRITE) may leave
 *   half an update on disk: the handle is marked broken, close writes
 *   nothing and the caller discards the volume.
 * - Path resolution is ours (not ext2fs_namei()): it refuses `..` in
 *   the caller's paths, clamps `..` of link targets at the image's root,
 *   and bounds the links followed (40, as Linux).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bake/offline.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "volume/volume.h"

#define MAX_LINKS 40
#define MAX_PATH 4096
#define MAX_READ_FILE (16U << 20) /* unit files, append_line targets */
#define COPY_BUF (1U << 20)

static char *xstrndup(const char *s, size_t n)
{
    char *p = strndup(s, n);
    if (!p)
        abort();
    return p;
}

struct offline {
    ext2_filsys fs;
    struct ext4_io_reader rd; /* for offline_open_volume() */
    char *name;
    bool broken;
};

/* ---- errors ---- */

/* Report libext2fs error `e` while doing `what` to `path`. */
static int fs_err(struct offline *o, errcode_t e, const char *what, const char *path)
{
    int err = ext4_io_errno(e);
    int io = ext4_io_last_errno(o->fs);

    if (e == EXT2_ET_SHORT_READ || e == EXT2_ET_SHORT_WRITE) {
        o->broken = true;
        return error_set(EIO, "cannot %s '%s' in '%s': %s (%s)", what, path, o->name,
                         ext4_io_strerror(e), strerror(io ? io : EIO));
    }
    return error_set(err, "cannot %s '%s' in '%s': %s", what, path, o->name, ext4_io_strerror(e));
}

static int check_usable(struct offline *o)
{
    if (o->broken)
        return error_set(EIO, "file system '%s' was left inconsistent by an earlier I/O error",
                         o->name);
    return 0;
}

/* ---- opening ---- */

static int vol_read(void *ud, void *buf, size_t len, uint64_t off)
{
    return volume_read(ud, buf, len, off);
}

static int vol_write(void *ud, const void *buf, size_t len, uint64_t off)
{
    return volume_write(ud, buf, len, off, false);
}

static int vol_flush(void *ud)
{
    return volume_flush(ud);
}

static bool has_partition_table(const struct ext4_io_reader *r)
{
    uint8_t mbr[512];

    if (r->size < sizeof(mbr) || r->read(r->ud, mbr, sizeof(mbr), r->offset) < 0)
        return false;
    return mbr[510] == 0x55 && mbr[511] == 0xaa;
}

static int open_reader(struct offline *o)
{
    uint8_t magic[2];
    errcode_t e;
    int rc;

    rc = o->rd.size >= 2048 ? o->rd.read(o->rd.ud, magic, 2, o->rd.offset + 1024 + 56) : -EINVAL;
    if (rc < 0 || magic[0] != 0x53 || magic[1] != 0xef) {
        if (rc < 0 && rc != -EINVAL)
            return error_set(rc, "cannot read the superblock of '%s'", o->name);
        if (has_partition_table(&o->rd))
            return error_set(ENOTSUP,
                             "'%s' is a partitioned disk: the offline executor edits only a "
                             "bare ext2/3/4 file system at offset 0",
                             o->name);
        return error_set(EINVAL, "'%s' holds no ext2/3/4 file system at offset 0", o->name);
    }
    e = ext4_io_open(&o->rd, o->name, EXT2_FLAG_RW | EXT2_FLAG_64BITS, &o->fs);
    if (e) {
        int err = ext4_io_errno(e);
        if (e == EXT2_ET_UNSUPP_FEATURE || e == EXT2_ET_RO_UNSUPP_FEATURE)
            err = ENOTSUP;
        o->fs = NULL;
        return error_set(err == EIO ? EBADMSG : err, "cannot open the file system of '%s': %s",
                         o->name, ext4_io_strerror(e));
    }
    e = ext2fs_check_desc(o->fs);
    if (e)
        return error_set(EBADMSG, "cannot open the file system of '%s': %s", o->name,
                         ext4_io_strerror(e));
    if (o->fs->super->s_state & EXT2_ERROR_FS || !(o->fs->super->s_state & EXT2_VALID_FS))
        return error_set(EBADMSG, "file system of '%s' is marked with errors: run e2fsck first",
                         o->name);
    if (ext2fs_has_feature_journal_needs_recovery(o->fs->super))
        return error_set(EBADMSG,
                         "file system of '%s' has a journal to replay: boot it or run e2fsck "
                         "first",
                         o->name);
    e = ext2fs_read_bitmaps(o->fs);
    if (e)
        return error_set(EBADMSG, "cannot read the bitmaps of '%s': %s", o->name,
                         ext4_io_strerror(e));
    return 0;
}

static void offline_free(struct offline *o)
{
    if (o->fs)
        ext2fs_free(o->fs);
    free(o->name);
    free(o);
}

int offline_open(const struct ext4_io_reader *r, const char *name, struct offline **ret)
{
    struct offline *o = xcalloc(1, sizeof(*o));
    int rc;

    o->rd = *r;
    o->name = xstrdup(name);
    if (!r->write) {
        offline_free(o);
        return error_set(EROFS, "cannot edit '%s': opened read-only", name);
    }
    rc = open_reader(o);
    if (rc < 0) {
        offline_free(o);
        return rc;
    }
    *ret = o;
    return 0;
}

int offline_open_volume(struct volume *v, const char *name, struct offline **ret)
{
    struct ext4_io_reader r = {
        .read = vol_read, .write = vol_write, .flush = vol_flush, .ud = v, .size = volume_size(v)};

    if (volume_is_read_only(v))
        return error_set(EROFS, "cannot edit '%s': the volume is open read-only", name);
    return offline_open(&r, name, ret);
}

int offline_close(struct offline *o)
{
    errcode_t e;
    int rc = 0;

    if (!o)
        return 0;
    if (o->broken) {
        rc = check_usable(o);
        offline_free(o);
        return rc;
    }
    /* ext2fs_close() writes the metadata, then flushes the channel (the
     * volume's flush); it frees the file system even when it fails. */
    e = ext2fs_close2(o->fs, 0);
    if (e) {
        int io = ext4_io_last_errno(o->fs);
        rc = error_set(io ? io : ext4_io_errno(e), "cannot write the file system of '%s': %s",
                       o->name, ext4_io_strerror(e));
    }
    o->fs = NULL;
    offline_free(o);
    return rc;
}

void offline_discard(struct offline *o)
{
    if (o)
        offline_free(o);
}

/* ---- paths ---- */

static int check_path(struct offline *o, const char *path)
{
    if (!path || path[0] != '/')
        return error_set(EINVAL, "path '%s' in '%s' is not absolute", path ? path : "", o->name);
    if (strlen(path) >= MAX_PATH)
        return error_set(EINVAL, "path '%.64s...' in '%s' is too long", path, o->name);
    for (const char *p = path; *p;) {
        while (*p == '/')
            p++;
        size_t n = strcspn(p, "/");
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return error_set(EINVAL, "path '%s' in '%s' has a '..' component", path, o->name);
        if (n > EXT2_NAME_LEN)
            return error_set(EINVAL, "path '%s' in '%s' has a name longer than 255 bytes", path,
                             o->name);
        p += n;
    }
    return 0;
}

static int read_inode(struct offline *o, ext2_ino_t ino, struct ext2_inode_large *inode,
                      const char *path)
{
    errcode_t e = ext2fs_read_inode_full(o->fs, ino, (struct ext2_inode *)inode, sizeof(*inode));
    return e ? fs_err(o, e, "read the inode of", path) : 0;
}

static int write_inode(struct offline *o, ext2_ino_t ino, struct ext2_inode_large *inode,
                       const char *path)
{
    errcode_t e = ext2fs_write_inode_full(o->fs, ino, (struct ext2_inode *)inode, sizeof(*inode));
    return e ? fs_err(o, e, "write the inode of", path) : 0;
}

/* Read the first `size` bytes of the data of inode `ino` into `buf`. */
static int read_data(struct offline *o, ext2_ino_t ino, char *buf, uint64_t size, const char *path)
{
    ext2_file_t f;
    unsigned got = 0;
    errcode_t e;

    e = ext2fs_file_open(o->fs, ino, 0, &f);
    if (e)
        return fs_err(o, e, "open", path);
    e = size ? ext2fs_file_read(f, buf, (unsigned)size, &got) : 0;
    ext2fs_file_close(f);
    if (e)
        return fs_err(o, e, "read", path);
    if (got != size)
        return error_set(EBADMSG, "'%s' in '%s' is shorter than its size", path, o->name);
    return 0;
}

/* The target of symbolic link `ino` (a new string). */
static int read_link(struct offline *o, ext2_ino_t ino, const char *path, char **ret)
{
    struct ext2_inode_large inode;
    int rc;

    rc = read_inode(o, ino, &inode, path);
    if (rc < 0)
        return rc;
    uint64_t size = EXT2_I_SIZE(&inode);
    if (size == 0 || size >= MAX_PATH)
        return error_set(EBADMSG, "symbolic link '%s' in '%s' has a bad length", path, o->name);
    _cleanup_free_ char *buf = xcalloc(1, size + 1);
    if (ext2fs_is_fast_symlink((struct ext2_inode *)&inode)) {
        if (size > sizeof(inode.i_block))
            return error_set(EBADMSG, "symbolic link '%s' in '%s' is corrupt", path, o->name);
        memcpy(buf, inode.i_block, size);
    } else {
        rc = read_data(o, ino, buf, size, path);
        if (rc < 0)
            return rc;
    }
    *ret = TAKE_PTR(buf);
    return 0;
}

static int lookup(struct offline *o, ext2_ino_t dir, const char *name, size_t len, ext2_ino_t *ret,
                  const char *path)
{
    errcode_t e = ext2fs_lookup(o->fs, dir, name, (int)len, NULL, ret);
    if (e == EXT2_ET_FILE_NOT_FOUND)
        return -ENOENT;
    return e ? fs_err(o, e, "look up", path) : 0;
}

static int mode_of(struct offline *o, ext2_ino_t ino, uint16_t *ret, const char *path)
{
    struct ext2_inode_large inode;
    int rc = read_inode(o, ino, &inode, path);
    if (rc >= 0)
        *ret = inode.i_mode;
    return rc;
}

static int make_dir(struct offline *o, ext2_ino_t parent, const char *name,
                    const struct offline_attr *a, const char *path, ext2_ino_t *ret);

enum {
    RESOLVE_FOLLOW = 1U << 0, /* follow a final symbolic link */
    RESOLVE_MKDIRS = 1U << 1, /* create missing directories (all of the path) */
};

/* Resolve `path` (checked) to an inode.  -ENOENT (no message) when a
 * component is missing; -ENOTDIR, -ELOOP with one. */
static int resolve(struct offline *o, const char *path, unsigned flags, ext2_ino_t *ret)
{
    _cleanup_free_ char *rest = xstrdup(path);
    ext2_ino_t cur = EXT2_ROOT_INO;
    unsigned links = 0;
    size_t pos = 0;
    int rc;

    for (;;) {
        while (rest[pos] == '/')
            pos++;
        if (!rest[pos])
            break;
        size_t n = strcspn(rest + pos, "/");
        const char *comp = rest + pos;
        bool last = rest[pos + n] == '\0' || rest[pos + n + strspn(rest + pos + n, "/")] == '\0';
        uint16_t mode;
        ext2_ino_t next;

        if (n == 1 && comp[0] == '.') {
            pos += n;
            continue;
        }
        rc = mode_of(o, cur, &mode, path);
        if (rc < 0)
            return rc;
        if (!LINUX_S_ISDIR(mode))
            return error_set(ENOTDIR, "'%s' in '%s': a component is not a directory", path,
                             o->name);
        if (n == 2 && comp[0] == '.' && comp[1] == '.') { /* from a link target */
            if (cur != EXT2_ROOT_INO) {
                rc = lookup(o, cur, "..", 2, &next, path);
                if (rc < 0)
                    return rc == -ENOENT
                               ? error_set(EBADMSG, "'%s' in '%s': a directory has no '..'", path,
                                           o->name)
                               : rc;
                cur = next;
            }
            pos += n;
            continue;
        }
        rc = lookup(o, cur, comp, n, &next, path);
        if (rc == -ENOENT && (flags & RESOLVE_MKDIRS)) {
            char name[EXT2_NAME_LEN + 1];
            memcpy(name, comp, n);
            name[n] = '\0';
            rc = make_dir(o, cur, name, NULL, path, &next);
        }
        if (rc < 0)
            return rc;
        rc = mode_of(o, next, &mode, path);
        if (rc < 0)
            return rc;
        if (LINUX_S_ISLNK(mode) && (!last || (flags & RESOLVE_FOLLOW))) {
            _cleanup_free_ char *target = NULL;
            if (++links > MAX_LINKS)
                return error_set(ELOOP, "'%s' in '%s': too many levels of symbolic links", path,
                                 o->name);
            rc = read_link(o, next, path, &target);
            if (rc < 0)
                return rc;
            char *joined = xasprintf("%s/%s", target, rest + pos + n);
            if (strlen(joined) >= 4 * MAX_PATH) {
                free(joined);
                return error_set(ELOOP, "'%s' in '%s': symbolic links expand too far", path,
                                 o->name);
            }
            free(rest);
            rest = joined;
            pos = 0;
            if (target[0] == '/')
                cur = EXT2_ROOT_INO;
            continue;
        }
        cur = next;
        pos += n;
    }
    *ret = cur;
    return 0;
}

/* Split `path` into its parent directory (resolved, following links,
 * created with OFFLINE_MKDIRS) and its last name.  -EINVAL for "/". */
static int resolve_parent(struct offline *o, const char *path, unsigned flags, ext2_ino_t *ret_dir,
                          char ret_name[EXT2_NAME_LEN + 1])
{
    size_t len = strlen(path);
    uint16_t mode;
    int rc;

    while (len > 1 && path[len - 1] == '/')
        len--;
    size_t start = len;
    while (start > 0 && path[start - 1] != '/')
        start--;
    if (len - start == 0 || (len - start == 1 && path[start] == '.'))
        return error_set(EINVAL, "path '%s' in '%s' names no file", path, o->name);
    _cleanup_free_ char *dir = xstrndup(path, start);
    rc = resolve(o, dir, RESOLVE_FOLLOW | ((flags & OFFLINE_MKDIRS) ? RESOLVE_MKDIRS : 0), ret_dir);
    if (rc == -ENOENT)
        return error_set(ENOENT, "cannot create '%s' in '%s': its directory does not exist", path,
                         o->name);
    if (rc < 0)
        return rc;
    rc = mode_of(o, *ret_dir, &mode, path);
    if (rc < 0)
        return rc;
    if (!LINUX_S_ISDIR(mode))
        return error_set(ENOTDIR, "cannot create '%s' in '%s': its parent is not a directory", path,
                         o->name);
    memcpy(ret_name, path + start, len - start);
    ret_name[len - start] = '\0';
    return 0;
}

/* ---- inodes ---- */

static void set_owner(struct ext2_inode_large *inode, int64_t uid, int64_t gid)
{
    if (uid >= 0) {
        inode->i_uid = (uint16_t)uid;
        inode->i_uid_high = (uint16_t)(uid >> 16);
    }
    if (gid >= 0) {
        inode->i_gid = (uint16_t)gid;
        inode->i_gid_high = (uint16_t)(gid >> 16);
    }
}

static int check_attr(struct offline *o, const struct offline_attr *a, const char *path)
{
    if (!a)
        return 0;
    if (a->mode < -1 || a->mode > 07777)
        return error_set(EINVAL, "mode %o for '%s' in '%s' is out of range (07777)",
                         (unsigned)a->mode, path, o->name);
    if (a->uid < -1 || a->uid > UINT32_MAX - 1 || a->gid < -1 || a->gid > UINT32_MAX - 1)
        return error_set(EINVAL, "owner for '%s' in '%s' is out of range", path, o->name);
    return 0;
}

/* What every step checks before it touches the file system: the handle
 * is usable, `path` is well formed, attributes `a` (or NULL) in range. */
static int check_step(struct offline *o, const char *path, const struct offline_attr *a)
{
    int rc = check_usable(o);

    if (rc >= 0)
        rc = check_path(o, path);
    if (rc >= 0)
        rc = check_attr(o, a, path);
    return rc;
}

static int link_name(struct offline *o, ext2_ino_t dir, const char *name, ext2_ino_t ino, int type,
                     const char *path)
{
    errcode_t e = ext2fs_link(o->fs, dir, name, ino, type);
    if (e == EXT2_ET_DIR_NO_SPACE) {
        e = ext2fs_expand_dir(o->fs, dir);
        if (!e)
            e = ext2fs_link(o->fs, dir, name, ino, type);
    }
    return e ? fs_err(o, e, "link", path) : 0;
}

/* Release inode `ino` whose last name is gone: its blocks, its extended
 * attribute block, the inode. */
static int free_inode(struct offline *o, ext2_ino_t ino, const char *path)
{
    struct ext2_inode_large inode;
    errcode_t e;
    int rc;

    rc = read_inode(o, ino, &inode, path);
    if (rc < 0)
        return rc;
    bool dir = LINUX_S_ISDIR(inode.i_mode);
    if (ext2fs_inode_has_valid_blocks2(o->fs, (struct ext2_inode *)&inode)) {
        e = ext2fs_punch(o->fs, ino, (struct ext2_inode *)&inode, NULL, 0, ~0ULL);
        if (e)
            return fs_err(o, e, "free the blocks of", path);
        rc = read_inode(o, ino, &inode, path);
        if (rc < 0)
            return rc;
    }
    blk64_t ea = ext2fs_file_acl_block(o->fs, (struct ext2_inode *)&inode);
    if (ea) {
        __u32 count = 0;
        e = ext2fs_adjust_ea_refcount3(o->fs, ea, NULL, -1, &count, ino);
        if (e)
            return fs_err(o, e, "release the attributes of", path);
        if (count == 0)
            ext2fs_block_alloc_stats2(o->fs, ea, -1);
        ext2fs_file_acl_block_set(o->fs, (struct ext2_inode *)&inode, 0);
    }
    inode.i_links_count = 0;
    inode.i_dtime = (uint32_t)time(NULL);
    rc = write_inode(o, ino, &inode, path);
    if (rc < 0)
        return rc;
    ext2fs_inode_alloc_stats2(o->fs, ino, -1, dir);
    return 0;
}

/* A new inode of `mode` (type and permissions), owner uid:gid, no name yet,
 * marked in use. */
static int new_inode(struct offline *o, ext2_ino_t dir, uint16_t mode, int64_t uid, int64_t gid,
                     const char *path, ext2_ino_t *ret)
{
    struct ext2_inode_large inode;
    ext2_ino_t ino;
    errcode_t e;

    e = ext2fs_new_inode(o->fs, dir, mode, NULL, &ino);
    if (e)
        return fs_err(o, e, "allocate an inode for", path);
    memset(&inode, 0, sizeof(inode));
    inode.i_mode = mode;
    inode.i_links_count = 1;
    inode.i_atime = inode.i_ctime = inode.i_mtime = (uint32_t)time(NULL);
    inode.i_extra_isize = sizeof(struct ext2_inode_large) - EXT2_GOOD_OLD_INODE_SIZE;
    set_owner(&inode, uid < 0 ? 0 : uid, gid < 0 ? 0 : gid);
    if (ext2fs_has_feature_extents(o->fs->super)) {
        ext2_extent_handle_t h;
        e = ext2fs_extent_open2(o->fs, ino, (struct ext2_inode *)&inode, &h);
        if (e)
            return fs_err(o, e, "set up the extents of", path);
        ext2fs_extent_free(h);
    }
    e = ext2fs_write_new_inode(o->fs, ino, (struct ext2_inode *)&inode);
    if (e)
        return fs_err(o, e, "write the inode of", path);
    ext2fs_inode_alloc_stats2(o->fs, ino, +1, 0);
    *ret = ino;
    return 0;
}

static int make_dir(struct offline *o, ext2_ino_t parent, const char *name,
                    const struct offline_attr *a, const char *path, ext2_ino_t *ret)
{
    struct ext2_inode_large inode;
    ext2_ino_t ino;
    errcode_t e;
    int rc;

    e = ext2fs_mkdir(o->fs, parent, 0, name);
    if (e == EXT2_ET_DIR_NO_SPACE) {
        e = ext2fs_expand_dir(o->fs, parent);
        if (!e)
            e = ext2fs_mkdir(o->fs, parent, 0, name);
    }
    if (e)
        return fs_err(o, e, "create directory", path);
    rc = lookup(o, parent, name, strlen(name), &ino, path);
    if (rc < 0)
        return rc == -ENOENT ? error_set(EIO, "directory '%s' vanished in '%s'", path, o->name)
                             : rc;
    rc = read_inode(o, ino, &inode, path);
    if (rc < 0)
        return rc;
    inode.i_mode = LINUX_S_IFDIR | (a && a->mode >= 0 ? a->mode : 0755);
    set_owner(&inode, a && a->uid >= 0 ? a->uid : 0, a && a->gid >= 0 ? a->gid : 0);
    rc = write_inode(o, ino, &inode, path);
    if (rc < 0)
        return rc;
    *ret = ino;
    return 0;
}

/* Free new inode `ino` after failure `rc` of the step that made it,
 * keeping that step's message; returns rc. */
static int discard_inode(struct offline *o, ext2_ino_t ino, int rc, const char *path)
{
    _cleanup_free_ char *msg = xstrdup(error_message() ? error_message() : "");

    free_inode(o, ino, path);
    return error_set(rc, "%s", msg);
}

/* Drop one link of `ino` (read into `inode`), whose name is already gone:
 * the inode goes with its last one. */
static int put_link(struct offline *o, ext2_ino_t ino, struct ext2_inode_large *inode,
                    const char *path)
{
    if (inode->i_links_count > 1) {
        inode->i_links_count--;
        return write_inode(o, ino, inode, path);
    }
    return free_inode(o, ino, path);
}

/* Remove name `name` of `ino` from directory `dir`, dropping a link (and
 * the inode with its last one).  Directories must be empty. */
static int unlink_inode(struct offline *o, ext2_ino_t dir, const char *name, ext2_ino_t ino,
                        const char *path)
{
    struct ext2_inode_large inode;
    errcode_t e;
    int rc;

    rc = read_inode(o, ino, &inode, path);
    if (rc < 0)
        return rc;
    e = ext2fs_unlink(o->fs, dir, name, ino, 0);
    if (e)
        return fs_err(o, e, "unlink", path);
    if (LINUX_S_ISDIR(inode.i_mode)) {
        struct ext2_inode_large parent;
        rc = read_inode(o, dir, &parent, path);
        if (rc < 0)
            return rc;
        if (parent.i_links_count > 2)
            parent.i_links_count--;
        rc = write_inode(o, dir, &parent, path);
        if (rc < 0)
            return rc;
        return free_inode(o, ino, path);
    }
    return put_link(o, ino, &inode, path);
}

/* ---- file data ---- */

/* Refuse a write of `len` bytes that cannot fit before starting it (the
 * data blocks and a margin for extent blocks), so that the usual ENOSPC
 * writes nothing at all. */
static int check_space(struct offline *o, uint64_t len, const char *path)
{
    uint64_t bs = o->fs->blocksize;
    uint64_t data = DIV_ROUND_UP(len, bs), need = data + 2 + data / 1024;
    uint64_t free_blocks = ext2fs_free_blocks_count(o->fs->super);

    if (len && need > free_blocks)
        return error_set(ENOSPC, "cannot write '%s' in '%s': %s (%llu blocks needed, %llu free)",
                         path, o->name, ext4_io_strerror(EXT2_ET_BLOCK_ALLOC_FAIL),
                         (unsigned long long)need, (unsigned long long)free_blocks);
    return 0;
}

/* Cut file `ino` back to `size` bytes, freeing the blocks past it (undoes
 * a failed append). */
static int truncate_to(struct offline *o, ext2_ino_t ino, uint64_t size, const char *path)
{
    struct ext2_inode_large inode;
    errcode_t e;
    int rc;

    rc = read_inode(o, ino, &inode, path);
    if (rc < 0)
        return rc;
    e = ext2fs_punch(o->fs, ino, (struct ext2_inode *)&inode, NULL,
                     DIV_ROUND_UP(size, o->fs->blocksize), ~0ULL);
    if (!e)
        e = ext2fs_inode_size_set(o->fs, (struct ext2_inode *)&inode, size);
    if (e)
        return fs_err(o, e, "truncate", path);
    return write_inode(o, ino, &inode, path);
}

/* Write `len` bytes at offset `at` of file `ino` (its size).  On failure
 * with `undo`, the file is cut back to `at` bytes. */
static int append_data(struct offline *o, ext2_ino_t ino, uint64_t at, const void *data, size_t len,
                       const char *path, bool undo)
{
    ext2_file_t f;
    errcode_t e;
    size_t done = 0;
    int rc;

    rc = check_space(o, len, path);
    if (rc < 0)
        return rc;
    e = ext2fs_file_open(o->fs, ino, EXT2_FILE_WRITE, &f);
    if (e)
        return fs_err(o, e, "open", path);
    e = ext2fs_file_llseek(f, at, EXT2_SEEK_SET, NULL);
    while (!e && done < len) {
        unsigned n = (unsigned)MIN(len - done, (size_t)COPY_BUF), got = 0;
        e = ext2fs_file_write(f, (const char *)data + done, n, &got);
        done += got;
        if (!e && got == 0)
            e = EXT2_ET_SHORT_WRITE;
    }
    if (!e)
        e = ext2fs_file_flush(f);
    errcode_t e2 = ext2fs_file_close(f); /* fails again after a failed flush */
    if (!e)
        e = e2;
    if (!e)
        return 0;
    rc = fs_err(o, e, "write", path);
    if (undo && !o->broken) {
        _cleanup_free_ char *msg = xstrdup(error_message() ? error_message() : "");
        if (truncate_to(o, ino, at, path) < 0)
            o->broken = true;
        error_set(rc, "%s", msg);
    }
    return rc;
}

/* Read regular file `ino` whole (at most MAX_READ_FILE bytes). */
static int read_file(struct offline *o, ext2_ino_t ino, const char *path, char **ret,
                     size_t *ret_len)
{
    struct ext2_inode_large inode;
    int rc;

    rc = read_inode(o, ino, &inode, path);
    if (rc < 0)
        return rc;
    if (!LINUX_S_ISREG(inode.i_mode))
        return error_set(EINVAL, "'%s' in '%s' is not a regular file", path, o->name);
    uint64_t size = EXT2_I_SIZE(&inode);
    if (size > MAX_READ_FILE)
        return error_set(EFBIG, "'%s' in '%s' is larger than %u MiB", path, o->name,
                         MAX_READ_FILE >> 20);
    _cleanup_free_ char *buf = xmalloc(size + 1);
    rc = read_data(o, ino, buf, size, path);
    if (rc < 0)
        return rc;
    buf[size] = '\0';
    *ret_len = size;
    *ret = TAKE_PTR(buf);
    return 0;
}

/* Link new inode `ino` as `name` in `dir`, replacing a non-directory
 * already there.  On failure the new inode is freed. */
struct retarget {
    const char *name;
    size_t len;
    ext2_ino_t old, ino;
    int type;
    bool done;
};

static int retarget_cb(struct ext2_dir_entry *d, int offset, int blocksize, char *buf, void *priv)
{
    struct retarget *r = priv;

    if (d->inode != r->old || (size_t)ext2fs_dirent_name_len(d) != r->len ||
        memcmp(d->name, r->name, r->len) != 0)
        return 0;
    d->inode = r->ino;
    ext2fs_dirent_set_file_type(d, r->type);
    r->done = true;
    return DIRENT_CHANGED | DIRENT_ABORT;
}

/* Drop one link of `ino`, whose name is already gone. */
static int drop_link(struct offline *o, ext2_ino_t ino, const char *path)
{
    struct ext2_inode_large inode;
    int rc = read_inode(o, ino, &inode, path);

    if (rc < 0)
        return rc;
    return put_link(o, ino, &inode, path);
}

/* Name new inode `ino` `name` in `dir`.  A non-directory already there is
 * replaced by pointing its directory entry at the new inode (no new entry,
 * so no space is needed and there is no moment without the name), then
 * dropping the old inode's link.  On failure the new inode is freed. */
static int install(struct offline *o, ext2_ino_t dir, const char *name, ext2_ino_t ino, int type,
                   const char *path)
{
    struct retarget r = {.name = name, .len = strlen(name), .ino = ino, .type = type};
    uint16_t mode;
    errcode_t e;
    int rc;

    rc = lookup(o, dir, name, r.len, &r.old, path);
    if (rc == 0) {
        rc = mode_of(o, r.old, &mode, path);
        if (rc >= 0 && LINUX_S_ISDIR(mode))
            rc = error_set(EEXIST, "cannot replace '%s' in '%s': it is a directory", path, o->name);
        if (rc >= 0) {
            e = ext2fs_dir_iterate(o->fs, dir, 0, NULL, retarget_cb, &r);
            if (e)
                rc = fs_err(o, e, "replace", path);
            else if (!r.done)
                rc = error_set(EBADMSG, "cannot replace '%s' in '%s': its entry vanished", path,
                               o->name);
        }
        if (rc >= 0)
            return drop_link(o, r.old, path);
    } else if (rc == -ENOENT) {
        rc = link_name(o, dir, name, ino, type, path);
    }
    if (rc < 0 && !o->broken)
        return discard_inode(o, ino, rc, path);
    return rc;
}

/* Create regular file `path` with the bytes `fill` writes. */
typedef int (*fill_fn)(struct offline *o, ext2_ino_t ino, void *ud, const char *path);

static int create_file(struct offline *o, const char *path, const struct offline_attr *a,
                       int default_mode, unsigned flags, fill_fn fill, void *ud)
{
    char name[EXT2_NAME_LEN + 1];
    ext2_ino_t dir = 0, ino = 0, old = 0;
    int64_t uid = a ? a->uid : -1, gid = a ? a->gid : -1;
    int mode = a && a->mode >= 0 ? a->mode : -1;
    int rc;

    rc = resolve_parent(o, path, flags, &dir, name);
    if (rc < 0)
        return rc;
    rc = lookup(o, dir, name, strlen(name), &old, path);
    if (rc == 0) {
        struct ext2_inode_large inode;
        rc = read_inode(o, old, &inode, path);
        if (rc < 0)
            return rc;
        if (LINUX_S_ISDIR(inode.i_mode))
            return error_set(EEXIST, "cannot write '%s' in '%s': it is a directory", path, o->name);
        if (LINUX_S_ISREG(inode.i_mode)) { /* keep what was not given */
            if (mode < 0)
                mode = inode.i_mode & 07777;
            if (uid < 0)
                uid = inode_uid(inode);
            if (gid < 0)
                gid = inode_gid(inode);
        }
    } else if (rc != -ENOENT) {
        return rc;
    }
    if (mode < 0)
        mode = default_mode;
    rc = new_inode(o, dir, (uint16_t)(LINUX_S_IFREG | mode), uid, gid, path, &ino);
    if (rc < 0)
        return rc;
    rc = fill(o, ino, ud, path);
    if (rc < 0)
        return o->broken ? rc : discard_inode(o, ino, rc, path);
    return install(o, dir, name, ino, EXT2_FT_REG_FILE, path);
}

struct mem_src {
    const void *data;
    size_t len;
};

static int fill_mem(struct offline *o, ext2_ino_t ino, void *ud, const char *path)
{
    struct mem_src *m = ud;
    return m->len ? append_data(o, ino, 0, m->data, m->len, path, false) : 0;
}

static int fill_host(struct offline *o, ext2_ino_t ino, void *ud, const char *path)
{
    const char *host = ud;
    _cleanup_close_ int fd = open(host, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    _cleanup_free_ uint8_t *buf = xmalloc(COPY_BUF);
    uint64_t at = 0;
    int rc;

    struct stat st;

    if (fd < 0 || fstat(fd, &st) < 0)
        return error_set(errno, "cannot open '%s' on the host: %s", host, strerror(errno));
    rc = check_space(o, (uint64_t)st.st_size, path);
    if (rc < 0)
        return rc;
    for (;;) {
        ssize_t n = read(fd, buf, COPY_BUF);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return error_set(errno, "cannot read '%s' on the host: %s", host, strerror(errno));
        if (n == 0)
            return 0;
        rc = append_data(o, ino, at, buf, (size_t)n, path, false);
        if (rc < 0)
            return rc;
        at += (uint64_t)n;
    }
}

int offline_file_write(struct offline *o, const char *path, const void *data, size_t len,
                       const struct offline_attr *a, unsigned flags)
{
    struct mem_src m = {data, len};
    int rc = check_step(o, path, a);

    if (rc < 0)
        return rc;
    return create_file(o, path, a, 0644, flags, fill_mem, &m);
}

/* ---- symlinks, directories ---- */

int offline_symlink(struct offline *o, const char *target, const char *path, unsigned flags)
{
    char name[EXT2_NAME_LEN + 1];
    ext2_ino_t dir, old;
    errcode_t e;
    int rc = check_step(o, path, NULL);

    if (rc < 0)
        return rc;
    if (!target || !target[0] || strlen(target) >= MAX_PATH)
        return error_set(EINVAL, "symbolic link '%s' in '%s': the target is empty or too long",
                         path, o->name);
    rc = resolve_parent(o, path, flags, &dir, name);
    if (rc < 0)
        return rc;
    rc = lookup(o, dir, name, strlen(name), &old, path);
    if (rc == 0) {
        uint16_t mode;
        rc = mode_of(o, old, &mode, path);
        if (rc < 0)
            return rc;
        if (LINUX_S_ISDIR(mode))
            return error_set(EEXIST, "cannot replace '%s' in '%s': it is a directory", path,
                             o->name);
        rc = unlink_inode(o, dir, name, old, path);
    } else if (rc == -ENOENT) {
        rc = 0;
    }
    if (rc < 0)
        return rc;
    e = ext2fs_symlink(o->fs, dir, 0, name, target);
    if (e == EXT2_ET_DIR_NO_SPACE) {
        e = ext2fs_expand_dir(o->fs, dir);
        if (!e)
            e = ext2fs_symlink(o->fs, dir, 0, name, target);
    }
    return e ? fs_err(o, e, "create symbolic link", path) : 0;
}

static int set_attr(struct offline *o, ext2_ino_t ino, const struct offline_attr *a,
                    const char *path)
{
    struct ext2_inode_large inode;
    int rc;

    if (!a || (a->mode < 0 && a->uid < 0 && a->gid < 0))
        return 0;
    rc = read_inode(o, ino, &inode, path);
    if (rc < 0)
        return rc;
    if (a->mode >= 0)
        inode.i_mode = (uint16_t)((inode.i_mode & ~07777) | a->mode);
    set_owner(&inode, a->uid, a->gid);
    inode.i_ctime = (uint32_t)time(NULL);
    return write_inode(o, ino, &inode, path);
}

int offline_mkdir(struct offline *o, const char *path, const struct offline_attr *a, unsigned flags)
{
    char name[EXT2_NAME_LEN + 1];
    ext2_ino_t dir, ino;
    int rc = check_step(o, path, a);

    if (rc < 0)
        return rc;
    rc = resolve(o, path, RESOLVE_FOLLOW, &ino);
    if (rc == 0) {
        uint16_t mode;
        rc = mode_of(o, ino, &mode, path);
        if (rc < 0)
            return rc;
        if (!LINUX_S_ISDIR(mode))
            return error_set(EEXIST,
                             "cannot create directory '%s' in '%s': something else is there", path,
                             o->name);
        return set_attr(o, ino, a, path);
    }
    if (rc != -ENOENT)
        return rc;
    rc = resolve_parent(o, path, flags, &dir, name);
    if (rc < 0)
        return rc;
    return make_dir(o, dir, name, a, path, &ino);
}

/* ---- delete ---- */

struct names {
    char **v;
    size_t n;
};

static int collect_name(struct ext2_dir_entry *d, int offset, int blocksize, char *buf, void *priv)
{
    struct names *ns = priv;
    size_t len = ext2fs_dirent_name_len(d);

    if ((len == 1 && d->name[0] == '.') || (len == 2 && d->name[0] == '.' && d->name[1] == '.'))
        return 0;
    ns->v = xrealloc(ns->v, (ns->n + 1) * sizeof(*ns->v));
    ns->v[ns->n++] = xstrndup(d->name, len);
    return 0;
}

static void names_release(struct names *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i]);
    free(ns->v);
}

static int list_dir(struct offline *o, ext2_ino_t dir, const char *path, struct names *ns)
{
    errcode_t e = ext2fs_dir_iterate(o->fs, dir, 0, NULL, collect_name, ns);
    return e ? fs_err(o, e, "list directory", path) : 0;
}

static int remove_tree(struct offline *o, ext2_ino_t dir, const char *name, ext2_ino_t ino,
                       const char *path, int depth)
{
    uint16_t mode;
    int rc;

    if (depth > 256)
        return error_set(ELOOP, "'%s' in '%s' is nested too deeply", path, o->name);
    rc = mode_of(o, ino, &mode, path);
    if (rc < 0)
        return rc;
    if (LINUX_S_ISDIR(mode)) {
        struct names ns = {0};
        rc = list_dir(o, ino, path, &ns);
        for (size_t i = 0; rc >= 0 && i < ns.n; i++) {
            ext2_ino_t child;
            _cleanup_free_ char *sub = xasprintf("%s/%s", path, ns.v[i]);
            rc = lookup(o, ino, ns.v[i], strlen(ns.v[i]), &child, sub);
            if (rc >= 0)
                rc = remove_tree(o, ino, ns.v[i], child, sub, depth + 1);
        }
        names_release(&ns);
        if (rc < 0)
            return rc;
    }
    return unlink_inode(o, dir, name, ino, path);
}

int offline_delete(struct offline *o, const char *path, unsigned flags)
{
    char name[EXT2_NAME_LEN + 1];
    ext2_ino_t dir, ino;
    uint16_t mode;
    int rc = check_step(o, path, NULL);

    if (rc < 0)
        return rc;
    rc = resolve_parent(o, path, 0, &dir, name);
    if (rc == -ENOENT && (flags & OFFLINE_MISSING_OK))
        return 0;
    if (rc < 0)
        return rc;
    rc = lookup(o, dir, name, strlen(name), &ino, path);
    if (rc == -ENOENT)
        return flags & OFFLINE_MISSING_OK
                   ? 0
                   : error_set(ENOENT, "cannot delete '%s' in '%s': it does not exist", path,
                               o->name);
    if (rc < 0)
        return rc;
    rc = mode_of(o, ino, &mode, path);
    if (rc < 0)
        return rc;
    if (LINUX_S_ISDIR(mode) && !(flags & OFFLINE_RECURSIVE)) {
        struct names ns = {0};
        rc = list_dir(o, ino, path, &ns);
        size_t n = ns.n;
        names_release(&ns);
        if (rc < 0)
            return rc;
        if (n)
            return error_set(ENOTEMPTY,
                             "cannot delete '%s' in '%s': the directory is not empty (recursive "
                             "not set)",
                             path, o->name);
    }
    return remove_tree(o, dir, name, ino, path, 0);
}

/* ---- append_line ---- */

int offline_append_line(struct offline *o, const char *path, const char *line,
                        const struct offline_attr *a, unsigned flags)
{
    ext2_ino_t ino;
    int rc = check_step(o, path, a);

    if (rc < 0)
        return rc;
    if (!line || strchr(line, '\n'))
        return error_set(EINVAL, "line for '%s' in '%s' contains a newline", path, o->name);
    size_t llen = strlen(line);
    rc = resolve(o, path, RESOLVE_FOLLOW, &ino);
    if (rc == -ENOENT) {
        _cleanup_free_ char *text = xasprintf("%s\n", line);
        rc = offline_file_write(o, path, text, llen + 1, a, flags);
        return rc < 0 ? rc : 1;
    }
    if (rc < 0)
        return rc;
    _cleanup_free_ char *buf = NULL;
    size_t len;
    rc = read_file(o, ino, path, &buf, &len);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < len;) {
        size_t end = i;
        while (end < len && buf[end] != '\n')
            end++;
        if (end - i == llen && memcmp(buf + i, line, llen) == 0)
            return 0;
        i = end + 1;
    }
    bool nl = len > 0 && buf[len - 1] != '\n';
    _cleanup_free_ char *text = xasprintf("%s%s\n", nl ? "\n" : "", line);
    rc = append_data(o, ino, len, text, strlen(text), path, true);
    return rc < 0 ? rc : 1;
}

/* ---- copies from the host ---- */

/* Check the whole source before writing anything. */
static int check_host(struct offline *o, const char *host, int depth)
{
    struct stat st;

    if (depth > 256)
        return error_set(ELOOP, "'%s' on the host is nested too deeply", host);
    if (lstat(host, &st) < 0)
        return error_set(errno, "cannot copy '%s' from the host: %s", host, strerror(errno));
    if (S_ISLNK(st.st_mode))
        return 0;
    if (S_ISREG(st.st_mode)) {
        if (access(host, R_OK) < 0)
            return error_set(errno, "cannot copy '%s' from the host: %s", host, strerror(errno));
        return 0;
    }
    if (!S_ISDIR(st.st_mode))
        return error_set(EINVAL, "cannot copy '%s' from the host: not a file, directory or link",
                         host);
    DIR *d = opendir(host);
    if (!d)
        return error_set(errno, "cannot copy '%s' from the host: %s", host, strerror(errno));
    struct dirent *de;
    int rc = 0;
    while (rc >= 0 && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        _cleanup_free_ char *sub = xasprintf("%s/%s", host, de->d_name);
        rc = check_host(o, sub, depth + 1);
    }
    closedir(d);
    return rc;
}

static int copy_tree(struct offline *o, const char *host, const char *path,
                     const struct offline_attr *a, unsigned flags, bool top)
{
    struct stat st;
    int rc;

    if (lstat(host, &st) < 0)
        return error_set(errno, "cannot copy '%s' from the host: %s", host, strerror(errno));
    if (S_ISLNK(st.st_mode)) {
        char target[MAX_PATH];
        ssize_t n = readlink(host, target, sizeof(target) - 1);
        if (n < 0)
            return error_set(errno, "cannot read link '%s' on the host: %s", host, strerror(errno));
        target[n] = '\0';
        return offline_symlink(o, target, path, flags);
    }
    struct offline_attr fa = {
        .mode = (int)(st.st_mode & 07777), .uid = a ? a->uid : -1, .gid = a ? a->gid : -1};
    if (S_ISREG(st.st_mode)) {
        if (top && a && a->mode >= 0)
            fa.mode = a->mode;
        rc = check_path(o, path);
        if (rc < 0)
            return rc;
        return create_file(o, path, &fa, 0644, flags, fill_host, (void *)host);
    }
    rc = offline_mkdir(o, path, &fa, flags);
    if (rc < 0)
        return rc;
    DIR *d = opendir(host);
    if (!d)
        return error_set(errno, "cannot copy '%s' from the host: %s", host, strerror(errno));
    struct dirent *de;
    while (rc >= 0 && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        _cleanup_free_ char *sub = xasprintf("%s/%s", host, de->d_name);
        _cleanup_free_ char *dst = xasprintf("%s/%s", strcmp(path, "/") ? path : "", de->d_name);
        rc = copy_tree(o, sub, dst, a, flags, false);
    }
    closedir(d);
    return rc;
}

int offline_copy(struct offline *o, const char *host_path, const char *path,
                 const struct offline_attr *a, unsigned flags)
{
    struct stat st;
    int rc = check_step(o, path, a);

    if (rc >= 0)
        rc = check_host(o, host_path, 0);
    if (rc < 0)
        return rc;
    if (stat(host_path, &st) == 0 && S_ISDIR(st.st_mode)) {
        size_t n = strlen(host_path);
        if (n && host_path[n - 1] != '/') {
            const char *base = strrchr(host_path, '/');
            base = base ? base + 1 : host_path;
            _cleanup_free_ char *dst = xasprintf("%s/%s", strcmp(path, "/") ? path : "", base);
            return copy_tree(o, host_path, dst, a, flags, true);
        }
    }
    return copy_tree(o, host_path, path, a, flags, true);
}

/* ---- systemd ---- */

static const char *const unit_dirs[] = {"/etc/systemd/system", "/lib/systemd/system",
                                        "/usr/lib/systemd/system"};

static int check_unit(struct offline *o, const char *unit)
{
    static const char *const suffixes[] = {".service", ".socket",    ".timer", ".target", ".path",
                                           ".mount",   ".automount", ".swap",  ".slice"};
    size_t n = strlen(unit);
    bool suffix = false;

    if (n == 0 || n > 255 ||
        strspn(unit, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789:-_.\\@") != n ||
        unit[0] == '.')
        return error_set(EINVAL, "'%s' is not a systemd unit name", unit);
    for (size_t i = 0; i < ARRAY_SIZE(suffixes); i++) {
        size_t s = strlen(suffixes[i]);
        if (n > s && strcmp(unit + n - s, suffixes[i]) == 0)
            suffix = true;
    }
    if (!suffix)
        return error_set(EINVAL, "'%s' is not a systemd unit name (no unit type suffix)", unit);
    return 0;
}

/* The unit file for `unit` (its template for an instance): its path in the
 * image (a new string) and its inode. */
static int find_unit(struct offline *o, const char *unit, char **ret_path, ext2_ino_t *ret_ino)
{
    _cleanup_free_ char *file = xstrdup(unit);
    char *at = strchr(file, '@');
    const char *dot = strrchr(unit, '.');
    int rc;

    if (at && at[1] != '.') /* name@instance.type -> name@.type */
        memmove(at + 1, file + (dot - unit), strlen(dot) + 1);
    for (size_t i = 0; i < ARRAY_SIZE(unit_dirs); i++) {
        _cleanup_free_ char *p = xasprintf("%s/%s", unit_dirs[i], file);
        ext2_ino_t ino;
        uint16_t mode;
        rc = resolve(o, p, RESOLVE_FOLLOW, &ino);
        if (rc == -ENOENT || rc == -ENOTDIR)
            continue;
        if (rc < 0)
            return rc;
        rc = mode_of(o, ino, &mode, p);
        if (rc < 0)
            return rc;
        if (!LINUX_S_ISREG(mode))
            continue;
        *ret_path = TAKE_PTR(p);
        *ret_ino = ino;
        return 0;
    }
    return error_set(ENOENT,
                     "cannot enable '%s' in '%s': no unit file '%s' in /etc/systemd/system, "
                     "/lib/systemd/system or /usr/lib/systemd/system",
                     unit, o->name, file);
}

static void add_name(char ***v, size_t *n, const char *name)
{
    *v = xrealloc(*v, (*n + 1) * sizeof(**v));
    (*v)[(*n)++] = xstrdup(name);
}

int offline_unit_install_parse(const char *data, size_t size, struct offline_unit_install *ret)
{
    struct offline_unit_install in = {0};
    _cleanup_free_ char *text = xstrndup(data, size);
    bool section = false;

    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        line += strspn(line, " \t");
        size_t n = strlen(line);
        while (n && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (line[0] == '[') {
            section = strcmp(line, "[Install]") == 0;
            continue;
        }
        if (!section || line[0] == '#' || line[0] == ';')
            continue;
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        for (char *k = eq; k > line && (k[-1] == ' ' || k[-1] == '\t');)
            *--k = '\0';
        char ***v = NULL;
        size_t *cnt = NULL;
        if (!strcmp(line, "WantedBy")) {
            v = &in.wanted_by;
            cnt = &in.n_wanted_by;
        } else if (!strcmp(line, "RequiredBy")) {
            v = &in.required_by;
            cnt = &in.n_required_by;
        } else if (!strcmp(line, "Alias")) {
            v = &in.alias;
            cnt = &in.n_alias;
        } else {
            continue;
        }
        char *save = NULL;
        for (char *tok = strtok_r(eq + 1, " \t\r", &save); tok;
             tok = strtok_r(NULL, " \t\r", &save)) {
            if (in.n_wanted_by + in.n_required_by + in.n_alias == OFFLINE_UNIT_INSTALL_MAX) {
                offline_unit_install_release(&in);
                return error_set(EINVAL, "[Install] names more than %d units",
                                 OFFLINE_UNIT_INSTALL_MAX);
            }
            add_name(v, cnt, tok);
        }
    }
    *ret = in;
    return 0;
}

static void free_names(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void offline_unit_install_release(struct offline_unit_install *u)
{
    free_names(u->wanted_by, u->n_wanted_by);
    free_names(u->required_by, u->n_required_by);
    free_names(u->alias, u->n_alias);
    memset(u, 0, sizeof(*u));
}

static int systemd_enable(struct offline *o, const char *unit)
{
    _cleanup_free_ char *file = NULL, *text = NULL;
    struct offline_unit_install in = {0};
    ext2_ino_t ino = 0;
    size_t len;
    int rc;

    rc = find_unit(o, unit, &file, &ino);
    if (rc < 0)
        return rc;
    rc = read_file(o, ino, file, &text, &len);
    if (rc < 0)
        return rc;
    rc = offline_unit_install_parse(text, len, &in);
    if (rc < 0) {
        _cleanup_free_ char *msg = xstrdup(error_message() ? error_message() : "");
        return error_set(rc, "unit file '%s' in '%s': %s", file, o->name, msg);
    }
    size_t nw = in.n_wanted_by, nr = in.n_required_by, total = nw + nr + in.n_alias;
    for (size_t i = 0; rc >= 0 && i < total; i++) {
        bool wanted = i < nw, required = !wanted && i < nw + nr;
        const char *t = wanted     ? in.wanted_by[i]
                        : required ? in.required_by[i - nw]
                                   : in.alias[i - nw - nr];
        rc = check_unit(o, t);
        if (rc < 0) {
            rc = error_set(EINVAL, "unit file '%s' in '%s': bad [Install] entry '%s'", file,
                           o->name, t);
            break;
        }
        _cleanup_free_ char *link =
            wanted || required
                ? xasprintf("/etc/systemd/system/%s.%s/%s", t, wanted ? "wants" : "requires", unit)
                : xasprintf("/etc/systemd/system/%s", t);
        rc = offline_symlink(o, file, link, OFFLINE_MKDIRS);
    }
    if (rc >= 0 && total == 0)
        rc = error_set(EINVAL,
                       "cannot enable '%s' in '%s': '%s' has no WantedBy=, RequiredBy= or "
                       "Alias= in [Install]",
                       unit, o->name, file);
    offline_unit_install_release(&in);
    return rc;
}

static int systemd_disable(struct offline *o, const char *unit)
{
    struct names ns = {0};
    ext2_ino_t dir;
    int rc;

    rc = resolve(o, "/etc/systemd/system", RESOLVE_FOLLOW, &dir);
    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return rc;
    rc = list_dir(o, dir, "/etc/systemd/system", &ns);
    for (size_t i = 0; rc >= 0 && i < ns.n; i++) {
        size_t n = strlen(ns.v[i]);
        bool deps = (n > 6 && !strcmp(ns.v[i] + n - 6, ".wants")) ||
                    (n > 9 && !strcmp(ns.v[i] + n - 9, ".requires"));
        _cleanup_free_ char *p = xasprintf("/etc/systemd/system/%s", ns.v[i]);
        ext2_ino_t ino;
        uint16_t mode;
        if (deps) {
            _cleanup_free_ char *link = xasprintf("%s/%s", p, unit);
            if (resolve(o, link, 0, &ino) == 0 && mode_of(o, ino, &mode, link) == 0 &&
                LINUX_S_ISLNK(mode))
                rc = offline_delete(o, link, 0);
            continue;
        }
        /* An alias: a link in /etc/systemd/system whose target ends in
         * /unit (not the unit's own name: that would be a mask). */
        if (strcmp(ns.v[i], unit) != 0 && resolve(o, p, 0, &ino) == 0 &&
            mode_of(o, ino, &mode, p) == 0 && LINUX_S_ISLNK(mode)) {
            _cleanup_free_ char *target = NULL;
            rc = read_link(o, ino, p, &target);
            if (rc < 0)
                break;
            size_t tl = strlen(target), ul = strlen(unit);
            if (tl > ul && target[tl - ul - 1] == '/' && !strcmp(target + tl - ul, unit))
                rc = offline_delete(o, p, 0);
        }
    }
    names_release(&ns);
    return rc;
}

static int systemd_mask(struct offline *o, const char *unit)
{
    _cleanup_free_ char *p = xasprintf("/etc/systemd/system/%s", unit);
    ext2_ino_t ino;
    uint16_t mode;
    int rc;

    rc = resolve(o, p, 0, &ino);
    if (rc == 0) {
        rc = mode_of(o, ino, &mode, p);
        if (rc < 0)
            return rc;
        if (!LINUX_S_ISLNK(mode))
            return error_set(EEXIST, "cannot mask '%s' in '%s': '%s' exists and is not a link",
                             unit, o->name, p);
    } else if (rc != -ENOENT) {
        return rc;
    }
    return offline_symlink(o, "/dev/null", p, OFFLINE_MKDIRS);
}

int offline_systemd(struct offline *o, enum offline_systemd_action action, const char *unit)
{
    int rc = check_usable(o);

    if (rc >= 0)
        rc = unit ? check_unit(o, unit) : error_set(EINVAL, "no systemd unit named");
    if (rc < 0)
        return rc;
    switch (action) {
    case OFFLINE_SYSTEMD_ENABLE: return systemd_enable(o, unit);
    case OFFLINE_SYSTEMD_DISABLE: return systemd_disable(o, unit);
    case OFFLINE_SYSTEMD_MASK: return systemd_mask(o, unit);
    }
    return error_set(EINVAL, "unknown systemd action %d", (int)action);
}
