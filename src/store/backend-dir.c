/* The `dir` backend: one file per object in fanned-out directories.
 *
 *   ROOT/chunks/ab/abcdef...(64 hex)   chunk objects, 256 subdirectories
 *   ROOT/maps/ab/abcdef...             block map objects
 *   ROOT/tmp/                          named temporaries and intent files
 *   ROOT/lock                          writer (shared) / gc (exclusive) lock
 *
 * Design notes (durability):
 *   put() writes the object into an anonymous O_TMPFILE inode in the target
 *   directory and links it into place with linkat(); a process killed at any
 *   point leaves either no file or a complete one, and nothing to clean up.
 *   Where O_TMPFILE or /proc is missing it falls back to an exclusive
 *   tmp/<pid>.<n>.<random>.tmp file, linked into place and then unlinked.  In
 *   both cases an object that is already present is success (EEXIST).
 *
 *   Non-durable puts are not fsynced one by one: sync() calls syncfs() once.
 *   Between the first such put and that sync() an intent file
 *   tmp/intent-<pid>.<n>.<random>.intent.tmp exists, flock()ed by its
 *   writer before it gets that name.  If the machine
 *   crashes in that window, an object's name may be durable before its data
 *   (ext4 delayed allocation), so recovery_candidates() reports every object
 *   modified since the oldest intent file nobody holds, and the store layer
 *   verifies them.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "store/internal.h"

struct dir_backend {
    char *root;
    int root_fd;
    int lock_fd;
    bool read_only;
    _Atomic bool no_tmpfile;  /* O_TMPFILE or /proc unavailable */
    pthread_mutex_t intent_lock;
    int intent_fd;            /* held while unsynced puts exist, else -1 */
    char intent_name[128];
    struct stale_intent *stale;
    size_t nstale;
};

/* Names of temporaries and intent files: unique within the process, and
 * the pid makes them unique between processes; random bits keep a stale
 * file of a dead process whose pid was reused from getting in the way. */
static _Atomic unsigned tmp_counter;

static void temp_name(char *buf, size_t size, const char *prefix, const char *suffix)
{
    unsigned rnd = 0;

    if (random_bytes(&rnd, sizeof(rnd)) < 0)
        rnd = (unsigned)now_ns();
    snprintf(buf, size, "tmp/%s%d.%u.%08x%s", prefix, (int)getpid(),
             atomic_fetch_add(&tmp_counter, 1), rnd, suffix);
}

/* Stale intent files found by a recovery walk, kept locked until the walk's
 * results are final so that only these are removed. */
struct stale_intent {
    char name[96];
    int fd;
};

static const char *kind_dir(enum store_kind kind)
{
    return kind == STORE_MAP ? "maps" : "chunks";
}

/* "chunks/ab" and "chunks/ab/abcd..." for an id. */
static void object_paths(enum store_kind kind, const struct digest *id, char *dir,
                         size_t dirsize, char *path, size_t pathsize)
{
    char hex[DIGEST_HEX_SIZE];

    digest_to_hex(id, hex);
    snprintf(dir, dirsize, "%s/%.2s", kind_dir(kind), hex);
    snprintf(path, pathsize, "%s/%.2s/%s", kind_dir(kind), hex, hex);
}

static int dir_open(const char *location, bool read_only, void **ret_priv)
{
    _cleanup_free_ struct dir_backend *b = xcalloc(1, sizeof(*b));
    int r;

    if (!read_only) {
        static const char *const subdirs[] = { "chunks", "maps", "tmp" };
        r = mkdir_p(location);
        if (r < 0)
            return error_set(r, "cannot create store directory '%s': %s", location,
                             strerror(-r));
        for (size_t i = 0; i < ARRAY_SIZE(subdirs); i++) {
            _cleanup_free_ char *p = xasprintf("%s/%s", location, subdirs[i]);
            if (mkdir(p, 0755) < 0 && errno != EEXIST)
                return error_set(errno, "cannot create '%s': %m", p);
        }
    }
    b->root_fd = open(location, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (b->root_fd < 0)
        return error_set(errno, "cannot open store directory '%s': %m", location);
    b->root = xstrdup(location);
    b->read_only = read_only;
    b->lock_fd = -1;
    b->intent_fd = -1;
    b->no_tmpfile = getenv("KILN_NO_TMPFILE") != NULL;
    pthread_mutex_init(&b->intent_lock, NULL);
    *ret_priv = TAKE_PTR(b);
    return 0;
}

static void release_stale(struct dir_backend *b, bool remove);

static void dir_close(void *priv)
{
    struct dir_backend *b = priv;

    if (!b)
        return;
    if (b->intent_fd >= 0) {
        /* Unsynced objects remain: leave the intent file for recovery. */
        close(b->intent_fd);
    }
    release_stale(b, false);
    if (b->lock_fd >= 0)
        close(b->lock_fd);
    close(b->root_fd);
    pthread_mutex_destroy(&b->intent_lock);
    free(b->root);
    free(b);
}

/* Record that unsynced objects are about to exist.  The intent file is
 * created, locked and made durable under a temporary name that recovery
 * ignores, and only then renamed to intent-*: recovery never sees an intent
 * file its live writer has not locked yet. */
static int intent_begin(struct dir_backend *b)
{
    _cleanup_free_ char *dir = NULL;
    char tmp[96];
    int r = 0, fd;

    pthread_mutex_lock(&b->intent_lock);
    if (b->intent_fd >= 0)
        goto out;
    temp_name(tmp, sizeof(tmp), "", ".intent.tmp");
    snprintf(b->intent_name, sizeof(b->intent_name), "tmp/intent-%s", tmp + 4);
    fd = openat(b->root_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        r = -errno;
        goto out;
    }
    if (flock(fd, LOCK_EX) < 0 || fsync(fd) < 0 ||
        renameat(b->root_fd, tmp, b->root_fd, b->intent_name) < 0) {
        r = -errno;
        close(fd);
        unlinkat(b->root_fd, tmp, 0);
        goto out;
    }
    /* The intent file must be durable before any object it covers. */
    dir = xasprintf("%s/tmp", b->root);
    r = fsync_dir(dir);
    if (r < 0) {
        unlinkat(b->root_fd, b->intent_name, 0);
        close(fd);
        goto out;
    }
    b->intent_fd = fd;
out:
    pthread_mutex_unlock(&b->intent_lock);
    return r;
}

static int link_tmpfile(struct dir_backend *b, int fd, const char *path)
{
    char proc[64];

    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    if (linkat(AT_FDCWD, proc, b->root_fd, path, AT_SYMLINK_FOLLOW) < 0)
        return -errno;
    return 0;
}

/* The fallback without O_TMPFILE: an exclusive temporary, linked into place
 * and unlinked.  Returns 0 when linked, -EEXIST when the object was already
 * present (only linkat's EEXIST means that), -errno. */
static int put_named_temp(struct dir_backend *b, const char *path, const void *data, size_t len,
                          bool durable)
{
    char tmp[96];
    _cleanup_close_ int fd = -1;
    int r;

    for (int tries = 0; fd < 0; tries++) {
        temp_name(tmp, sizeof(tmp), "", ".tmp");
        fd = openat(b->root_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
        if (fd < 0 && (errno != EEXIST || tries >= 8))
            return errno == EEXIST ? -EIO : -errno;
    }
    r = write_all(fd, data, len, 0);
    if (r >= 0 && durable && fdatasync(fd) < 0)
        r = -errno;
    if (r >= 0 && linkat(b->root_fd, tmp, b->root_fd, path, 0) < 0)
        r = -errno;
    unlinkat(b->root_fd, tmp, 0);
    return r;
}

/* Make an object that is already present durable, for a durable put that
 * found it there (an earlier writer may have died before its fsync). */
static int fsync_present(struct dir_backend *b, const char *dir, const char *path)
{
    _cleanup_close_ int fd = openat(b->root_fd, path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    _cleanup_free_ char *full = xasprintf("%s/%s", b->root, dir);

    if (fd < 0)
        return -errno;
    if (fsync(fd) < 0)
        return -errno;
    return fsync_dir(full);
}

static int dir_put(void *priv, enum store_kind kind, const struct digest *id, const void *data,
                   size_t len, bool durable)
{
    struct dir_backend *b = priv;
    char dir[64], path[160];
    int r;

    if (b->read_only)
        return -EROFS;
    /* No existence check here: callers that expect to find the object
     * ask first (store_has), and linkat() reports EEXIST anyway. */
    object_paths(kind, id, dir, sizeof(dir), path, sizeof(path));
    if (!durable) {
        r = intent_begin(b);
        if (r < 0)
            return r;
    }

    for (int attempt = 0; attempt < 2; attempt++) {
        if (!b->no_tmpfile) {
            _cleanup_close_ int fd = openat(b->root_fd, dir, O_TMPFILE | O_WRONLY | O_CLOEXEC,
                                            0444);
            if (fd >= 0) {
                r = write_all(fd, data, len, 0);
                if (r >= 0 && durable && fdatasync(fd) < 0)
                    r = -errno;
                if (r >= 0)
                    r = link_tmpfile(b, fd, path);
                if (r == -ENOENT && access("/proc/self/fd", F_OK) < 0)
                    b->no_tmpfile = true; /* no procfs: fall through */
                else
                    goto linked;
            } else if (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL) {
                b->no_tmpfile = true;
            } else if (errno != ENOENT) {
                return -errno;
            }
        }
        if (b->no_tmpfile) {
            r = put_named_temp(b, path, data, len, durable);
            if (r != -ENOENT)
                goto linked;
        }
        /* The fan-out directory does not exist yet: create it, and for a
         * durable put make its name durable in the parent. */
        _cleanup_free_ char *full = xasprintf("%s/%s", b->root, dir);
        if (mkdir(full, 0755) < 0 && errno != EEXIST)
            return -errno;
        if (durable) {
            _cleanup_free_ char *parent = xasprintf("%s/%s", b->root, kind_dir(kind));
            r = fsync_dir(parent);
            if (r < 0)
                return r;
        }
    }
    return -ENOENT;

linked:
    if (r == -EEXIST)
        return durable ? fsync_present(b, dir, path) : 0;
    if (r < 0)
        return r;
    if (durable) {
        _cleanup_free_ char *full = xasprintf("%s/%s", b->root, dir);
        r = fsync_dir(full);
        if (r < 0)
            return r;
    }
    return 1;
}

static ssize_t dir_get(void *priv, enum store_kind kind, const struct digest *id, void *buf,
                       size_t bufsize)
{
    struct dir_backend *b = priv;
    char dir[64], path[160];
    struct stat st;
    ssize_t n;

    object_paths(kind, id, dir, sizeof(dir), path, sizeof(path));
    /* O_NONBLOCK and S_ISREG: a damaged store may hold anything there. */
    _cleanup_close_ int fd = openat(b->root_fd, path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EBADMSG;
    n = pread_full(fd, buf, MIN(bufsize, (size_t)st.st_size), 0);
    if (n < 0)
        return n;
    if ((size_t)n < MIN(bufsize, (size_t)st.st_size))
        return -EBADMSG; /* shrank under us */
    return (ssize_t)st.st_size;
}

static int dir_stat(void *priv, enum store_kind kind, const struct digest *id,
                    uint64_t *ret_size, time_t *ret_mtime)
{
    struct dir_backend *b = priv;
    char dir[64], path[160];
    struct stat st;

    object_paths(kind, id, dir, sizeof(dir), path, sizeof(path));
    if (fstatat(b->root_fd, path, &st, 0) < 0)
        return -errno;
    if (ret_size)
        *ret_size = (uint64_t)st.st_size;
    if (ret_mtime)
        *ret_mtime = st.st_mtime;
    return 0;
}

static int dir_remove(void *priv, enum store_kind kind, const struct digest *id)
{
    struct dir_backend *b = priv;
    char dir[64], path[160];

    if (b->read_only)
        return -EROFS;
    object_paths(kind, id, dir, sizeof(dir), path, sizeof(path));
    if (unlinkat(b->root_fd, path, 0) < 0)
        return -errno;
    return 0;
}

/* true for 64 lowercase hex digits whose first byte is `fanout`: the only
 * names put() writes in that directory. */
static bool canonical_name(const char *name, int fanout)
{
    char prefix[3];

    for (int i = 0; i < 2 * DIGEST_SIZE; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
            return false;
    snprintf(prefix, sizeof(prefix), "%02x", fanout);
    return name[2 * DIGEST_SIZE] == '\0' && name[0] == prefix[0] && name[1] == prefix[1];
}

/* Walk every object of a kind; when since >= 0, only those modified at or
 * after that time. */
static int walk(struct dir_backend *b, enum store_kind kind, time_t since, store_list_fn fn,
                void *userdata)
{
    for (int i = 0; i < 256; i++) {
        char sub[64];
        snprintf(sub, sizeof(sub), "%s/%02x", kind_dir(kind), i);
        int fd = openat(b->root_fd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT)
                continue;
            return -errno;
        }
        DIR *d = fdopendir(fd);
        if (!d) {
            int e = -errno;
            close(fd);
            return e;
        }
        struct dirent *de;
        int r = 0;
        while ((de = readdir(d))) {
            struct store_object_info info;
            struct stat st;
            if (!canonical_name(de->d_name, i))
                continue; /* not ours */
            digest_from_hex(de->d_name, &info.id);
            if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                continue; /* removed meanwhile */
            if (since >= 0 && st.st_mtime < since)
                continue;
            info.stored_size = (uint64_t)st.st_size;
            info.mtime = st.st_mtime;
            r = fn(&info, userdata);
            if (r < 0)
                break;
        }
        closedir(d);
        if (r < 0)
            return r;
    }
    return 0;
}

static int dir_list(void *priv, enum store_kind kind, store_list_fn fn, void *userdata)
{
    return walk(priv, kind, -1, fn, userdata);
}

static int dir_sync(void *priv)
{
    struct dir_backend *b = priv;

    if (b->read_only)
        return 0;
    if (syncfs(b->root_fd) < 0)
        return -errno;
    pthread_mutex_lock(&b->intent_lock);
    if (b->intent_fd >= 0) {
        unlinkat(b->root_fd, b->intent_name, 0);
        close(b->intent_fd);
        b->intent_fd = -1;
    }
    pthread_mutex_unlock(&b->intent_lock);
    return 0;
}

static int dir_lock(void *priv, bool exclusive, int timeout_ms)
{
    struct dir_backend *b = priv;
    int op = exclusive ? LOCK_EX : LOCK_SH;

    if (b->lock_fd < 0) {
        b->lock_fd = openat(b->root_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (b->lock_fd < 0)
            return -errno;
    }
    for (int waited = 0;; waited += 10) {
        if (flock(b->lock_fd, op | LOCK_NB) == 0)
            return 0;
        if (errno != EWOULDBLOCK)
            return -errno;
        if (waited >= timeout_ms)
            return -EBUSY;
        poll(NULL, 0, 10);
    }
}

static void dir_unlock(void *priv)
{
    struct dir_backend *b = priv;

    if (b->lock_fd >= 0)
        flock(b->lock_fd, LOCK_UN);
}

static int dir_sweep_temporaries(void *priv, time_t grace, bool dry_run, uint64_t *ret_files,
                                 uint64_t *ret_bytes)
{
    struct dir_backend *b = priv;
    uint64_t files = 0, bytes = 0;
    time_t now = time(NULL);
    int fd = openat(b->root_fd, "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d;
    struct dirent *de;

    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -ENOMEM;
    }
    while ((de = readdir(d))) {
        struct stat st;
        size_t n = strlen(de->d_name);
        if (n < 4 || strcmp(de->d_name + n - 4, ".tmp") != 0)
            continue;
        if (strncmp(de->d_name, "intent-", 7) == 0)
            continue; /* evidence for recovery, not a temporary */
        if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (now - st.st_mtime < grace)
            continue;
        if (!dry_run && unlinkat(fd, de->d_name, 0) < 0)
            continue;
        files++;
        bytes += (uint64_t)st.st_size;
    }
    closedir(d);
    *ret_files = files;
    *ret_bytes = bytes;
    return 0;
}

static void release_stale(struct dir_backend *b, bool remove)
{
    for (size_t i = 0; i < b->nstale; i++) {
        struct stat held, named;
        /* Remove the name only if it still is the file we hold locked. */
        if (remove && fstat(b->stale[i].fd, &held) == 0 &&
            fstatat(b->root_fd, b->stale[i].name, &named, AT_SYMLINK_NOFOLLOW) == 0 &&
            held.st_dev == named.st_dev && held.st_ino == named.st_ino)
            unlinkat(b->root_fd, b->stale[i].name, 0);
        close(b->stale[i].fd);
    }
    free(b->stale);
    b->stale = NULL;
    b->nstale = 0;
}

/* Lock every intent file whose writer is gone, keeping the locks. */
static void collect_stale_intents(struct dir_backend *b)
{
    int fd = openat(b->root_fd, "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    size_t cap = 0;
    DIR *d;
    struct dirent *de;

    release_stale(b, false);
    if (fd < 0)
        return;
    d = fdopendir(fd);
    if (!d) {
        close(fd);
        return;
    }
    while ((de = readdir(d))) {
        struct stat st;
        if (strncmp(de->d_name, "intent-", 7) != 0 || strlen(de->d_name) > 80)
            continue;
        int ifd = openat(fd, de->d_name, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (ifd < 0)
            continue;
        if (fstat(ifd, &st) < 0 || !S_ISREG(st.st_mode) || flock(ifd, LOCK_EX | LOCK_NB) < 0) {
            close(ifd); /* its writer is alive (or it is not ours) */
            continue;
        }
        if (b->nstale == cap) {
            cap = cap ? cap * 2 : 8;
            b->stale = xrealloc(b->stale, cap * sizeof(*b->stale));
        }
        snprintf(b->stale[b->nstale].name, sizeof(b->stale[b->nstale].name), "tmp/%s",
                 de->d_name);
        b->stale[b->nstale++].fd = ifd;
    }
    closedir(d);
}

static int dir_recovery_candidates(void *priv, enum store_kind kind, store_list_fn fn,
                                   void *userdata)
{
    struct dir_backend *b = priv;
    time_t since = -1;

    /* The first kind collects the stale intents; the second reuses them. */
    if (kind == STORE_CHUNK || !b->stale)
        collect_stale_intents(b);
    for (size_t i = 0; i < b->nstale; i++) {
        struct stat st;
        if (fstat(b->stale[i].fd, &st) == 0 && (since < 0 || st.st_mtime < since))
            since = st.st_mtime;
    }
    if (since < 0)
        return 0;
    /* One second of slack for coarse timestamps. */
    return walk(b, kind, since - 1, fn, userdata);
}

static bool dir_recovery_needed(void *priv)
{
    return ((struct dir_backend *)priv)->nstale > 0;
}

static void dir_finish_recovery(void *priv, bool success)
{
    release_stale(priv, success);
}

const struct store_backend store_backend_dir = {
    .name = "dir",
    .open = dir_open,
    .close = dir_close,
    .put = dir_put,
    .get = dir_get,
    .stat = dir_stat,
    .remove = dir_remove,
    .list = dir_list,
    .sync = dir_sync,
    .lock = dir_lock,
    .unlock = dir_unlock,
    .sweep_temporaries = dir_sweep_temporaries,
    .recovery_candidates = dir_recovery_candidates,
    .recovery_needed = dir_recovery_needed,
    .finish_recovery = dir_finish_recovery,
};
