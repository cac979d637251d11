/* The offline executor (src/bake/offline.c) on real ext4 images: a tree
 * made with mke2fs -d, imported into a chunk store, a copy-on-write volume
 * over it; every operation applied through libext2fs, the volume closed,
 * read back into a raw file and checked with e2fsprogs' own tools
 * (e2fsck -fn clean, debugfs cat/stat for content, mode, owner and link
 * targets).  Then the refusals: bad paths, missing sources, a full file
 * system (ENOSPC named, the file system still clean), a corrupt one and
 * disks that hold no bare ext4 (nothing written).  Operation times are
 * printed, never asserted. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bake/offline.h"
#include "common/error.h"
#include "common/util.h"
#include "tap.h"
#include "volume/volume.h"

#define MiB (1024 * 1024ULL)

static char tmpdir[] = "/tmp/kiln-test-offline.XXXXXX";
static struct store *store;
static int nvol;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

/* The output of a shell command (a new string). */
static char *run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *run(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    size_t len = 0, cap = 65536;
    char *out = calloc(1, cap);

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    if (!p)
        return out;
    size_t n;
    while ((n = fread(out + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 4096) {
            cap *= 2;
            out = realloc(out, cap);
        }
    }
    out[len] = '\0';
    pclose(p);
    return out;
}

static void put(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    chmod(path, mode);
}

/* A volume over the raw image `img` (imported into the store). */
static struct volume *volume_of(const char *img, unsigned flags)
{
    struct volume *rw = NULL;

    if (flags & VOLUME_OPEN_READ_ONLY) { /* create it first */
        rw = volume_of(img, 0);
        if (!rw)
            return NULL;
        volume_close(rw);
        nvol--;
    }
    struct import_options io = {.format = IMAGE_FORMAT_RAW, .threads = 2};
    struct import_stats st;
    struct blockmap *m = NULL;
    struct digest id;
    struct volume *v = NULL;
    char dir[600];

    if (snapshot_import(store, img, &io, &id, &m, &st) < 0)
        return NULL;
    uint64_t size = (m->volume_size + 4095) / 4096 * 4096;
    snprintf(dir, sizeof(dir), "%s/vol-%d", tmpdir, ++nvol);
    if (volume_open(store, dir, m, &id, size,
                    (flags & VOLUME_OPEN_READ_ONLY) ? flags : VOLUME_OPEN_CREATE | flags, &v) < 0)
        return NULL;
    return v;
}

/* The volume's bytes, written to raw file `img`. */
static int export_volume(struct volume *v, const char *img)
{
    uint64_t size = volume_size(v);
    uint8_t *buf = malloc(MiB);
    int fd = open(img, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int rc = fd < 0 || !buf ? -1 : 0;

    for (uint64_t off = 0; rc == 0 && off < size; off += MiB) {
        size_t n = (size_t)MIN((uint64_t)MiB, size - off);
        rc = volume_read(v, buf, n, off);
        if (rc == 0 && pwrite(fd, buf, n, (off_t)off) != (ssize_t)n)
            rc = -1;
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    return rc;
}

static char *cat(const char *img, const char *path)
{
    return run("PATH=$PATH:/sbin:/usr/sbin debugfs -R 'cat %s' %s 2>/dev/null", path, img);
}

static char *stat_of(const char *img, const char *path)
{
    return run("PATH=$PATH:/sbin:/usr/sbin debugfs -R 'stat %s' %s 2>&1", path, img);
}

static bool has(const char *haystack, const char *needle)
{
    return haystack && strstr(haystack, needle) != NULL;
}

static void check_stat(const char *img, const char *path, const char *want1, const char *want2)
{
    char *s = stat_of(img, path);
    ok(has(s, want1) && (!want2 || has(s, want2)), "'%s': %s%s%s", path, want1, want2 ? ", " : "",
       want2 ? want2 : "");
    if (!(has(s, want1) && (!want2 || has(s, want2))))
        printf("# %s\n", s);
    free(s);
}

static void check_cat(const char *img, const char *path, const char *want)
{
    char *s = cat(img, path);
    is_str(s, want, "'%s' holds its content", path);
    free(s);
}

static bool fsck_clean(const char *img)
{
    char *out = run("PATH=$PATH:/sbin:/usr/sbin e2fsck -fn %s 2>&1; echo rc=$?", img);
    bool clean = has(out, "rc=0");
    if (!clean)
        printf("# %s\n", out);
    free(out);
    return clean;
}

static bool message_has(const char *a, const char *b)
{
    const char *m = error_message();
    bool yes = m && strstr(m, a) && (!b || strstr(m, b));
    if (!yes)
        printf("#   message: %s\n", m ? m : "(none)");
    return yes;
}

#define TIMED(label, expr)                                                                         \
    ({                                                                                             \
        uint64_t t0_ = now_ns();                                                                   \
        int r_ = (expr);                                                                           \
        printf("# %-28s %8.3f ms\n", label, (double)(now_ns() - t0_) / 1e6);                       \
        r_;                                                                                        \
    })

/* The tree of the test image: a Debian-like merged /usr (/lib a link to
 * usr/lib), units, links that point out of the tree. */
static int make_tree(const char *t)
{
    int rc = sh("set -e; cd %s; mkdir -p etc/systemd/system/multi-user.target.wants "
                "usr/lib/systemd/system usr/share/zoneinfo var/cache/junk/deep tmp; "
                "ln -s usr/lib lib; ln -s /tmp hostlink; ln -s ../../../.. etc/up; "
                "ln -s /lib/systemd/system/cron.service "
                "etc/systemd/system/multi-user.target.wants/cron.service",
                t);
    char p[700];
#define PUT(rel, text, mode)                                                                       \
    do {                                                                                           \
        snprintf(p, sizeof(p), "%s/%s", t, rel);                                                   \
        put(p, text, mode);                                                                        \
    } while (0)
    PUT("etc/motd", "old motd\n", 0644);
    PUT("etc/hosts", "127.0.0.1 localhost", 0644); /* no final newline */
    PUT("etc/old.conf", "remove me\n", 0644);
    PUT("usr/share/zoneinfo/UTC", "TZif\n", 0644);
    PUT("var/cache/junk/a", "a\n", 0644);
    PUT("var/cache/junk/deep/b", "b\n", 0644);
    PUT("usr/lib/systemd/system/nginx.service",
        "[Unit]\nDescription=web\n\n[Service]\nExecStart=/usr/sbin/nginx\n\n"
        "[Install]\nWantedBy=multi-user.target\nAlias=www.service\n",
        0644);
    PUT("usr/lib/systemd/system/getty@.service",
        "[Service]\nExecStart=/sbin/agetty %I\n[Install]\nWantedBy = getty.target\n", 0644);
    PUT("usr/lib/systemd/system/cron.service",
        "[Service]\nExecStart=/usr/sbin/cron\n[Install]\nWantedBy=multi-user.target\n", 0644);
    PUT("usr/lib/systemd/system/static.service", "[Service]\nExecStart=/bin/true\n", 0644);
    PUT("usr/lib/systemd/system/apt-daily.timer", "[Timer]\nOnCalendar=daily\n", 0644);
#undef PUT
    return rc;
}

static int mkfs(const char *tree, const char *img, const char *size)
{
    return sh(
        "PATH=$PATH:/sbin:/usr/sbin; rm -f %s; mke2fs -q -F -t ext4 -b 4096 -E root_owner=0:0 "
        "%s%s %s %s >/dev/null 2>&1",
        img, tree ? "-d " : "", tree ? tree : "", img, size);
}

static void test_operations(void)
{
    char tree[600], img[600], out[600], host[600], hostdir[600], hosttmp[600];
    struct offline *o = NULL;
    struct offline_attr a;
    struct volume *v;

    snprintf(tree, sizeof(tree), "%s/tree", tmpdir);
    snprintf(img, sizeof(img), "%s/disk.img", tmpdir);
    snprintf(out, sizeof(out), "%s/out.img", tmpdir);
    ok(sh("mkdir -p %s", tree) == 0 && make_tree(tree) == 0, "a tree for the image");
    is_int(mkfs(tree, img, "64M"), 0, "mke2fs -d made an ext4 image of it");
    v = volume_of(img, 0);
    ok(v != NULL, "a volume over it");
    if (!v)
        return;

    is_int(TIMED("open", offline_open_volume(v, "vol-test", &o)), 0, "opened read-write");
    if (!o)
        return;

    /* file: content, mode, owner, replacing a file */
    a = (struct offline_attr){.mode = 0600, .uid = 1000, .gid = 1001};
    is_int(TIMED("file (replace /etc/motd)",
                 offline_file_write(o, "/etc/motd", "Managed image\n", 14, &a, 0)),
           0, "file: /etc/motd replaced");
    is_int(TIMED("file (new dirs)",
                 offline_file_write(o, "/opt/app/conf/app.conf", "x=1\n", 4, NULL, OFFLINE_MKDIRS)),
           0, "file: with mkdirs, its directories created");
    is_int(offline_file_write(o, "/nonexist/dir/f", "x", 1, NULL, 0), -ENOENT,
           "file: a missing directory without mkdirs is ENOENT");
    ok(message_has("'/nonexist/dir/f'", "vol-test"), "the message names the path and volume");
    is_int(offline_file_write(o, "/etc", "x", 1, NULL, 0), -EEXIST,
           "file: over a directory is EEXIST");
    /* a big file: more than one extent's worth of writes */
    size_t big = 3 * MiB + 123;
    char *bigbuf = malloc(big);
    for (size_t i = 0; i < big; i++)
        bigbuf[i] = (char)('a' + i % 26);
    is_int(
        TIMED("file (3 MiB)", offline_file_write(o, "/srv/big", bigbuf, big, NULL, OFFLINE_MKDIRS)),
        0, "file: 3 MiB written");

    /* file from the host: a file, a directory with and without '/' */
    snprintf(host, sizeof(host), "%s/tool.sh", tmpdir);
    put(host, "#!/bin/sh\necho hi\n", 0755);
    snprintf(hostdir, sizeof(hostdir), "%s/srcdir", tmpdir);
    sh("mkdir -p %s/sub && echo A > %s/a && echo B > %s/sub/b && chmod 0640 %s/sub/b && "
       "ln -s a %s/link",
       hostdir, hostdir, hostdir, hostdir, hostdir);
    a = (struct offline_attr){.mode = -1, .uid = 0, .gid = 0};
    is_int(
        TIMED("copy (host file)", offline_copy(o, host, "/usr/local/bin/tool", &a, OFFLINE_MKDIRS)),
        0, "copy: a host file");
    is_int(TIMED("copy (host dir)", offline_copy(o, hostdir, "/srv", &a, OFFLINE_MKDIRS)), 0,
           "copy: a host directory without '/' lands in /srv/srcdir");
    char slash[700];
    snprintf(slash, sizeof(slash), "%s/", hostdir);
    is_int(offline_copy(o, slash, "/srv2", &a, OFFLINE_MKDIRS), 0,
           "copy: with '/' its contents land in /srv2");
    char missing[700];
    snprintf(missing, sizeof(missing), "%s/no-such-file", tmpdir);
    is_int(offline_copy(o, missing, "/etc/x", &a, 0), -ENOENT, "copy: a missing source");
    ok(message_has(missing, NULL), "the message names the host path");

    /* symlink, append_line, mkdir */
    is_int(TIMED("symlink", offline_symlink(o, "/usr/share/zoneinfo/UTC", "/etc/localtime", 0)), 0,
           "symlink: /etc/localtime");
    is_int(TIMED("append_line", offline_append_line(o, "/etc/hosts", "10.0.0.1 db", NULL, 0)), 1,
           "append_line: appended to a file without a final newline");
    is_int(offline_append_line(o, "/etc/hosts", "10.0.0.1 db", NULL, 0), 0,
           "append_line: the line is there: nothing appended");
    is_int(offline_append_line(o, "/etc/hosts", "127.0.0.1 localhost", NULL, 0), 0,
           "append_line: an existing first line is found");
    is_int(offline_append_line(o, "/etc/new.conf", "a=b", NULL, 0), 1,
           "append_line: a missing file is created");
    is_int(offline_append_line(o, "/etc/hosts", "two\nlines", NULL, 0), -EINVAL,
           "append_line: a newline in the line is refused");
    a = (struct offline_attr){.mode = 0750, .uid = 33, .gid = 33};
    is_int(TIMED("mkdir", offline_mkdir(o, "/var/lib/app/data", &a, OFFLINE_MKDIRS)), 0,
           "mkdir: with parents");
    is_int(offline_mkdir(o, "/var/lib/app/data", &a, 0), 0, "mkdir: an existing directory");
    is_int(offline_mkdir(o, "/etc/motd", &a, 0), -EEXIST, "mkdir: over a file is EEXIST");

    /* delete */
    is_int(TIMED("delete (file)", offline_delete(o, "/etc/old.conf", 0)), 0, "delete: a file");
    is_int(offline_delete(o, "/var/cache/junk", 0), -ENOTEMPTY,
           "delete: a non-empty directory needs recursive");
    is_int(TIMED("delete (tree)", offline_delete(o, "/var/cache/junk", OFFLINE_RECURSIVE)), 0,
           "delete: recursive");
    is_int(offline_delete(o, "/nope", 0), -ENOENT, "delete: absent is ENOENT");
    ok(message_has("'/nope'", NULL), "the message names it");
    is_int(offline_delete(o, "/nope/deeper", OFFLINE_MISSING_OK), 0,
           "delete: absent is fine with missing_ok");
    is_int(offline_delete(o, "/srv/srcdir/link", 0), 0, "delete: a link, not its target");

    /* systemd */
    is_int(TIMED("systemd enable", offline_systemd(o, OFFLINE_SYSTEMD_ENABLE, "nginx.service")), 0,
           "systemd: enable nginx.service");
    is_int(offline_systemd(o, OFFLINE_SYSTEMD_ENABLE, "getty@ttyS1.service"), 0,
           "systemd: enable an instance of a template");
    is_int(offline_systemd(o, OFFLINE_SYSTEMD_ENABLE, "static.service"), -EINVAL,
           "systemd: a unit without [Install] cannot be enabled");
    ok(message_has("static.service", "[Install]"), "the message says why");
    is_int(offline_systemd(o, OFFLINE_SYSTEMD_ENABLE, "missing.service"), -ENOENT,
           "systemd: a missing unit");
    is_int(offline_systemd(o, OFFLINE_SYSTEMD_ENABLE, "../evil.service"), -EINVAL,
           "systemd: a bad unit name");
    is_int(offline_systemd(o, OFFLINE_SYSTEMD_DISABLE, "cron.service"), 0,
           "systemd: disable cron.service");
    is_int(offline_systemd(o, OFFLINE_SYSTEMD_MASK, "apt-daily.timer"), 0,
           "systemd: mask apt-daily.timer");

    /* paths */
    is_int(offline_file_write(o, "/etc/../x", "x", 1, NULL, 0), -EINVAL, "'..' is refused");
    ok(message_has("'/etc/../x'", "'..'"), "and named");
    is_int(offline_file_write(o, "etc/x", "x", 1, NULL, 0), -EINVAL, "a relative path");
    is_int(offline_file_write(o, "/", "x", 1, NULL, 0), -EINVAL, "the root is no file");
    is_int(offline_file_write(o, "/etc/motd/x", "x", 1, NULL, 0), -ENOTDIR,
           "a file as a directory");
    snprintf(hosttmp, sizeof(hosttmp), "/tmp/%s-via-link", tmpdir + 5);
    char via[800];
    snprintf(via, sizeof(via), "/hostlink/%s-via-link", tmpdir + 5);
    is_int(offline_file_write(o, via, "in", 2, NULL, 0), 0, "a write through an absolute link");
    ok(access(hosttmp, F_OK) != 0, "it did not reach the host's /tmp");
    is_int(offline_file_write(o, "/etc/up/escaped.txt", "root\n", 5, NULL, 0), 0,
           "a write through a link climbing out with '..'");
    /* a target of 60 bytes or more does not fit in the inode: a slow link,
     * whose target resolution reads from a data block */
    const char *far = "/opt/a-directory-whose-name-is-long-enough-that-a-link-to-it-is-slow";
    is_int(offline_mkdir(o, far, NULL, 0), 0, "mkdir: a directory with a long name");
    is_int(offline_symlink(o, far, "/slow", 0), 0, "symlink: a slow link to it");
    is_int(offline_file_write(o, "/slow/f", "far\n", 4, NULL, 0), 0, "a write through a slow link");

    is_int(TIMED("close (ext2fs_close + flush)", offline_close(o)), 0, "closed and flushed");
    is_int(export_volume(v, out), 0, "the volume read back into a raw file");
    ok(fsck_clean(out), "e2fsck -fn finds the file system clean");

    check_cat(out, "/etc/motd", "Managed image\n");
    check_stat(out, "/etc/motd", "Mode:  0600", "User:  1000   Group:  1001");
    check_cat(out, "/opt/app/conf/app.conf", "x=1\n");
    check_stat(out, "/opt/app", "Mode:  0755", "Type: directory");
    char *got = cat(out, "/srv/big");
    ok(got && strlen(got) == big && memcmp(got, bigbuf, big) == 0, "/srv/big reads back whole");
    free(got);
    free(bigbuf);
    check_cat(out, "/usr/local/bin/tool", "#!/bin/sh\necho hi\n");
    check_stat(out, "/usr/local/bin/tool", "Mode:  0755", NULL);
    check_cat(out, "/srv/srcdir/a", "A\n");
    check_cat(out, "/srv/srcdir/sub/b", "B\n");
    check_stat(out, "/srv/srcdir/sub/b", "Mode:  0640", NULL);
    check_cat(out, "/srv2/a", "A\n");
    check_stat(out, "/srv2/link", "Fast link dest: \"a\"", NULL);
    check_stat(out, "/srv/srcdir/link", "File not found", NULL);
    check_stat(out, "/etc/localtime", "Fast link dest: \"/usr/share/zoneinfo/UTC\"", NULL);
    check_cat(out, "/etc/hosts", "127.0.0.1 localhost\n10.0.0.1 db\n");
    check_cat(out, "/etc/new.conf", "a=b\n");
    check_stat(out, "/etc/new.conf", "Mode:  0644", "User:     0   Group:     0");
    check_stat(out, "/var/lib/app/data", "Mode:  0750", "User:    33   Group:    33");
    check_stat(out, "/etc/old.conf", "File not found", NULL);
    check_stat(out, "/var/cache/junk", "File not found", NULL);
    check_stat(out, "/etc/systemd/system/multi-user.target.wants/nginx.service",
               "Fast link dest: \"/lib/systemd/system/nginx.service\"", NULL);
    check_stat(out, "/etc/systemd/system/www.service",
               "Fast link dest: \"/lib/systemd/system/nginx.service\"", NULL);
    check_stat(out, "/etc/systemd/system/getty.target.wants/getty@ttyS1.service",
               "Fast link dest: \"/lib/systemd/system/getty@.service\"", NULL);
    check_stat(out, "/etc/systemd/system/multi-user.target.wants/cron.service", "File not found",
               NULL);
    check_stat(out, "/etc/systemd/system/apt-daily.timer", "Fast link dest: \"/dev/null\"", NULL);
    snprintf(via, sizeof(via), "/tmp/%s-via-link", tmpdir + 5);
    check_cat(out, via, "in");
    check_cat(out, "/escaped.txt", "root\n");
    snprintf(via, sizeof(via), "%s/f", far);
    check_cat(out, via, "far\n");
    check_stat(out, "/slow", "Type: symlink", NULL);
    volume_close(v);
}

static void test_full(void)
{
    char img[600], out[600];
    struct offline *o = NULL;
    struct volume *v;

    snprintf(img, sizeof(img), "%s/small.img", tmpdir);
    snprintf(out, sizeof(out), "%s/small-out.img", tmpdir);
    is_int(mkfs(NULL, img, "4M"), 0, "a 4 MiB ext4 image");
    v = volume_of(img, 0);
    ok(v && offline_open_volume(v, "vol-small", &o) == 0, "opened");
    if (!o)
        return;
    is_int(offline_file_write(o, "/keep", "kept\n", 5, NULL, 0), 0, "a small file");
    size_t big = 8 * MiB;
    char *buf = calloc(1, big);
    memset(buf, 'z', big);
    is_int(offline_file_write(o, "/too-big", buf, big, NULL, 0), -ENOSPC,
           "8 MiB into 4 MiB: ENOSPC");
    ok(message_has("'/too-big'", "Could not allocate block"),
       "the message names the file and libext2fs's reason");
    is_int(offline_file_write(o, "/keep", buf, big, NULL, 0), -ENOSPC,
           "replacing a file with too much: ENOSPC");
    ok(message_has("'/keep'", "Could not allocate block"), "named too");
    free(buf);
    is_int(offline_file_write(o, "/after", "fine\n", 5, NULL, 0), 0,
           "the handle still works after ENOSPC");
    is_int(offline_close(o), 0, "closed");
    is_int(export_volume(v, out), 0, "read back");
    ok(fsck_clean(out), "e2fsck -fn: clean after ENOSPC (its blocks and inode freed)");
    check_stat(out, "/too-big", "File not found", NULL);
    check_cat(out, "/keep", "kept\n");
    check_cat(out, "/after", "fine\n");
    volume_close(v);
}

/* Open must fail with `err` and a message holding `want`, and write
 * nothing to the volume. */
static void check_refused(const char *img, int err, const char *want, const char *what)
{
    struct offline *o = NULL;
    struct volume_stats st;
    struct volume *v = volume_of(img, 0);

    ok(v != NULL, "a volume over %s", what);
    if (!v)
        return;
    is_int(offline_open_volume(v, "vol-bad", &o), -err, "%s: refused", what);
    ok(message_has(want, "vol-bad"), "%s: the message says '%s'", what, want);
    volume_stats(v, &st);
    is_int(st.blocks_written, 0, "%s: nothing written", what);
    offline_discard(o);
    volume_close(v);
}

static void test_refusals(void)
{
    char img[600];
    struct offline *o = NULL;

    snprintf(img, sizeof(img), "%s/corrupt.img", tmpdir);
    is_int(mkfs(NULL, img, "8M"), 0, "an image to corrupt");
    /* the group descriptors (block 1 of a 4 KiB file system) */
    is_int(sh("printf '\\377\\377\\377\\377\\377\\377\\377\\377\\377\\377\\377\\377' | "
              "dd of=%s bs=1 seek=4096 conv=notrunc status=none",
              img),
           0, "its group descriptors overwritten");
    check_refused(img, EBADMSG, "Corrupt group descriptor", "a corrupt file system");

    is_int(mkfs(NULL, img, "8M"), 0, "an image marked with errors");
    sh("PATH=$PATH:/sbin:/usr/sbin debugfs -w -R 'ssv state 2' %s >/dev/null 2>&1", img);
    check_refused(img, EBADMSG, "marked with errors", "a file system with errors");

    is_int(sh("rm -f %s; truncate -s 4M %s", img, img), 0, "a blank disk");
    check_refused(img, EINVAL, "no ext2/3/4 file system", "a blank disk");

    is_int(sh("printf '\\125\\252' | dd of=%s bs=1 seek=510 conv=notrunc status=none; "
              "printf 'x' | dd of=%s bs=1 seek=1048576 conv=notrunc status=none",
              img, img),
           0, "a disk with an MBR");
    check_refused(img, ENOTSUP, "partitioned disk", "a partitioned disk");

    is_int(mkfs(NULL, img, "8M"), 0, "a good image");
    struct volume *v = volume_of(img, VOLUME_OPEN_READ_ONLY);
    ok(v != NULL, "a read-only volume over it");
    if (v) {
        is_int(offline_open_volume(v, "vol-ro", &o), -EROFS, "read-only volume: EROFS");
        volume_close(v);
    }
    offline_discard(NULL);
    is_int(offline_close(NULL), 0, "close accepts NULL");
}

/* A reader over a raw file whose writes can be made to fail. */
struct faulty {
    int fd;
    bool fail;
};

static int faulty_read(void *ud, void *buf, size_t len, uint64_t off)
{
    struct faulty *f = ud;
    return pread(f->fd, buf, len, (off_t)off) == (ssize_t)len ? 0 : -EIO;
}

static int faulty_write(void *ud, const void *buf, size_t len, uint64_t off)
{
    struct faulty *f = ud;
    if (f->fail)
        return -EIO;
    return pwrite(f->fd, buf, len, (off_t)off) == (ssize_t)len ? 0 : -EIO;
}

static void test_io_error(void)
{
    char img[600], sb_before[1024], sb_after[1024];
    struct offline *o = NULL;
    struct faulty f = {.fd = -1};

    snprintf(img, sizeof(img), "%s/faulty.img", tmpdir);
    is_int(mkfs(NULL, img, "8M"), 0, "an image behind a failing disk");
    f.fd = open(img, O_RDWR);
    struct ext4_io_reader r = {
        .read = faulty_read, .write = faulty_write, .ud = &f, .size = 8 * MiB};
    ok(f.fd >= 0 && pread(f.fd, sb_before, 1024, 1024) == 1024, "its superblock");
    is_int(offline_open(&r, "disk-faulty", &o), 0, "opened over a plain reader");
    if (!o)
        return;
    f.fail = true;
    is_int(offline_file_write(o, "/f", "data", 4, NULL, 0), -EIO, "a failing write: EIO");
    ok(message_has("'/f'", "Input/output error"), "named, with the disk's error");
    f.fail = false;
    is_int(offline_mkdir(o, "/d", NULL, 0), -EIO, "the handle refuses further work");
    ok(message_has("inconsistent", "disk-faulty"), "and says why");
    is_int(offline_close(o), -EIO, "close writes no metadata and fails");
    ok(pread(f.fd, sb_after, 1024, 1024) == 1024 && memcmp(sb_before, sb_after, 1024) == 0,
       "the superblock was not written");
    close(f.fd);
    struct ext4_io_reader ro = r;
    ro.write = NULL;
    is_int(offline_open(&ro, "disk-ro", &o), -EROFS, "a reader without write: EROFS");
}

static void test_unit_install(void)
{
    struct offline_unit_install in;
    const char *unit = "[Unit]\nWantedBy=no.target\n[Install]\nWantedBy = a.target b.target\r\n"
                       "# WantedBy=comment.target\nRequiredBy=c.target\nAlias=d.service\n"
                       "WantedBy=e.target\n[X-Other]\nAlias=no.service\n";

    is_int(offline_unit_install_parse(unit, strlen(unit), &in), 0, "[Install] parsed");
    is_int(in.n_wanted_by, 3, "three WantedBy names over two lines");
    ok(in.n_wanted_by == 3 && !strcmp(in.wanted_by[0], "a.target") &&
           !strcmp(in.wanted_by[1], "b.target") && !strcmp(in.wanted_by[2], "e.target"),
       "in order, blanks and CR trimmed, other sections and comments ignored");
    ok(in.n_required_by == 1 && !strcmp(in.required_by[0], "c.target"), "RequiredBy");
    ok(in.n_alias == 1 && !strcmp(in.alias[0], "d.service"), "Alias");
    offline_unit_install_release(&in);
    char *many = malloc(20 * 300 + 32);
    snprintf(many, 32, "[Install]\nWantedBy=");
    for (int i = 0; i < 300; i++)
        snprintf(many + strlen(many), 20, "t%d.target ", i);
    is_int(offline_unit_install_parse(many, strlen(many), &in), -EINVAL, "300 names: refused");
    ok(message_has("more than 256", NULL), "the message gives the bound");
    free(many);
}

int main(void)
{
    char path[600];

    if (sh("PATH=$PATH:/sbin:/usr/sbin command -v mke2fs debugfs e2fsck >/dev/null") != 0) {
        printf("1..0 # SKIP e2fsprogs missing\n");
        return 0;
    }
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/store", tmpdir);
    is_int(store_open(path, NULL, &store), 0, "a store");
    if (store) {
        test_operations();
        test_full();
        test_refusals();
        test_unit_install();
        test_io_error();
        store_free(store);
    }
    sh("rm -rf %s", tmpdir);
    return done_testing();
}
