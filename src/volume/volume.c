/* Copy-on-write volumes: open and close, the lazy read path, writes, trims,
 * flush, block status and counters.  The layering and the thread-safety
 * contract are in volume.h; the directory format in docs/formats.md.
 *
 * Design notes (block states).  Two bits per 4 KiB block: zero[b] set means
 * the block reads zeros; otherwise alloc[b] set means it reads the overlay;
 * otherwise it reads the base.  Every change is one atomic bit operation
 * made after the data it describes is in the overlay file:
 *   write      pwrite the block(s), set alloc, clear zero;
 *   trim/zero  set zero, then punch the overlay (only to free space: a zero
 *              block never reads the overlay, so a failed punch loses
 *              nothing).
 * Every intermediate state reads either the old or the new contents.
 *
 * Design notes (durability).  volume_flush() (1) copies the two bitmaps,
 * (2) fdatasyncs the overlay, (3) writes the copy to "bitmap.tmp",
 * fdatasyncs it, renames it over "bitmap" and fsyncs the directory.  A bit
 * is set only after its data was written (above), so every bit in the copy
 * describes data that (2) made durable: the bitmap on disk never claims a
 * block whose data could be lost.  The rename makes the bitmap switch
 * atomic: after a crash the volume reads as of the last completed flush
 * (plus, possibly, later writes to blocks the overlay already held, which
 * is what a disk without a flush promises).  The whole file is rewritten,
 * only when the bitmaps changed since the last flush, sparse (24 bytes per
 * 64-block group written) or dense (64 KiB per GiB), whichever is smaller:
 * a flush costs what was written, not the volume's size, until most of the
 * volume has been written.  (A journal of dirty pages would bound it for
 * large, fully written volumes too.)  Copying the bitmaps in memory is a
 * scan of 16 bytes per 256 KiB of volume.
 *
 * Design notes (cache).  Base blocks are fetched one whole chunk at a time
 * (the store's unit of verification), decoded into the sparse file "cache"
 * at the chunk's offset, and marked in cached[].  Base data never changes
 * for a volume, so a cached block is written once and never rewritten; the
 * cache's bitmap is saved on close after an fdatasync of "cache", so it
 * only ever claims durable blocks.  The cache holds at most the base's data
 * (each base block once): it is bounded by the snapshot's size.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/byteorder.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "volume/internal.h"

#define BITMAP_MAGIC "KILNVBM"
#define CACHE_MAGIC "KILNVCA"
#define BITMAP_VERSION 1
#define BITMAP_HEADER 96
#define BITMAP_DENSE 0
#define BITMAP_SPARSE 1

/* ---- range sets ---- */

static void range_set_init(struct range_set *rs)
{
    pthread_mutex_init(&rs->mu, NULL);
    pthread_cond_init(&rs->cv, NULL);
    rs->r = NULL;
    rs->n = rs->cap = 0;
}

static void range_set_release(struct range_set *rs)
{
    pthread_mutex_destroy(&rs->mu);
    pthread_cond_destroy(&rs->cv);
    free(rs->r);
}

static bool range_set_overlaps(const struct range_set *rs, uint64_t start, uint64_t end)
{
    for (size_t i = 0; i < rs->n; i++)
        if (rs->r[i].start < end && start < rs->r[i].end)
            return true;
    return false;
}

static void range_acquire(struct range_set *rs, uint64_t start, uint64_t end)
{
    pthread_mutex_lock(&rs->mu);
    while (range_set_overlaps(rs, start, end))
        pthread_cond_wait(&rs->cv, &rs->mu);
    if (rs->n == rs->cap) {
        rs->cap = rs->cap ? rs->cap * 2 : 16;
        rs->r = xrealloc(rs->r, rs->cap * sizeof(*rs->r));
    }
    rs->r[rs->n].start = start;
    rs->r[rs->n].end = end;
    rs->n++;
    pthread_mutex_unlock(&rs->mu);
}

static void range_release(struct range_set *rs, uint64_t start, uint64_t end)
{
    pthread_mutex_lock(&rs->mu);
    for (size_t i = 0; i < rs->n; i++) {
        if (rs->r[i].start == start && rs->r[i].end == end) {
            rs->r[i] = rs->r[rs->n - 1];
            rs->n--;
            break;
        }
    }
    pthread_cond_broadcast(&rs->cv);
    pthread_mutex_unlock(&rs->mu);
}

/* ---- bitmaps ---- */

static uint64_t range_mask(uint64_t from, uint64_t to)
{
    /* bits [from, to) of one word, 0 <= from < to <= 64 */
    uint64_t hi = to == 64 ? ~0ULL : (1ULL << to) - 1;
    return hi & ~((1ULL << from) - 1);
}

static void bits_set(_Atomic uint64_t *map, uint64_t from, uint64_t to)
{
    while (from < to) {
        uint64_t w = from / 64, end = MIN(to, (w + 1) * 64);
        atomic_fetch_or_explicit(&map[w], range_mask(from % 64, end - w * 64),
                                 memory_order_release);
        from = end;
    }
}

static void bits_clear(_Atomic uint64_t *map, uint64_t from, uint64_t to)
{
    while (from < to) {
        uint64_t w = from / 64, end = MIN(to, (w + 1) * 64);
        atomic_fetch_and_explicit(&map[w], ~range_mask(from % 64, end - w * 64),
                                  memory_order_release);
        from = end;
    }
}

static bool bits_all(_Atomic uint64_t *map, uint64_t from, uint64_t to)
{
    while (from < to) {
        uint64_t w = from / 64, end = MIN(to, (w + 1) * 64);
        uint64_t m = range_mask(from % 64, end - w * 64);
        if ((atomic_load_explicit(&map[w], memory_order_acquire) & m) != m)
            return false;
        from = end;
    }
    return true;
}

static uint64_t dirty_word(struct volume *v, uint64_t w)
{
    return atomic_load_explicit(&v->alloc[w], memory_order_acquire) |
           atomic_load_explicit(&v->zero[w], memory_order_acquire);
}

uint64_t volume_next_dirty(struct volume *v, uint64_t b, uint64_t end)
{
    if (v->view)
        return end;
    while (b < end) {
        uint64_t w = b / 64;
        uint64_t bits = dirty_word(v, w) >> (b % 64);
        if (bits)
            return MIN(end, b + (uint64_t)__builtin_ctzll(bits));
        b = (w + 1) * 64;
    }
    return end;
}

uint64_t volume_next_clean(struct volume *v, uint64_t b, uint64_t end)
{
    if (v->view)
        return MIN(b, end);
    while (b < end) {
        uint64_t w = b / 64;
        uint64_t bits = ~dirty_word(v, w) >> (b % 64);
        if (bits)
            return MIN(end, b + (uint64_t)__builtin_ctzll(bits));
        b = (w + 1) * 64;
    }
    return end;
}

/* ---- bitmap files ---- */

/* Write `nmaps` bitmaps of `words` words each (copied atomically word by
 * word) as file `name` of the volume's directory: temporary file,
 * fdatasync, rename, directory fsync.  The payload is dense (every word)
 * or sparse (only the word indexes where some bitmap is not zero),
 * whichever is smaller, so that the file and the cost of a flush follow
 * what was written, not the volume's size. */
static int bitmap_file_save(struct volume *v, const char *name, const char *magic,
                            _Atomic uint64_t *const *maps, size_t nmaps, size_t words,
                            uint64_t nblocks)
{
    _cleanup_free_ uint64_t *snap = xcalloc(nmaps * words > 0 ? nmaps * words : 1, 8);
    _cleanup_free_ char *tmp = xasprintf("%s.tmp", name);
    _cleanup_free_ uint8_t *buf = NULL;
    _cleanup_close_ int fd = -1;
    size_t nonzero = 0, len, rec = 8 + 8 * nmaps;
    struct digest d;
    int r;

    for (size_t w = 0; w < words; w++) {
        bool any = false;
        for (size_t m = 0; m < nmaps; m++) {
            snap[m * words + w] = atomic_load_explicit(&maps[m][w], memory_order_acquire);
            any = any || snap[m * words + w];
        }
        nonzero += any;
    }
    bool sparse = nonzero * rec < nmaps * words * 8;
    len = BITMAP_HEADER + (sparse ? nonzero * rec : nmaps * words * 8);
    buf = xcalloc(1, len);
    if (sparse) {
        uint8_t *p = buf + BITMAP_HEADER;
        for (size_t w = 0; w < words; w++) {
            bool any = false;
            for (size_t m = 0; m < nmaps; m++)
                any = any || snap[m * words + w];
            if (!any)
                continue;
            put_le64(p, w);
            for (size_t m = 0; m < nmaps; m++)
                put_le64(p + 8 + 8 * m, snap[m * words + w]);
            p += rec;
        }
    } else {
        for (size_t m = 0; m < nmaps; m++)
            for (size_t w = 0; w < words; w++)
                put_le64(buf + BITMAP_HEADER + (m * words + w) * 8, snap[m * words + w]);
    }
    memcpy(buf, magic, 8);
    put_le32(buf + 8, BITMAP_VERSION);
    put_le32(buf + 12, BLOCK_SIZE);
    put_le64(buf + 16, nblocks);
    memcpy(buf + 24, v->base_id.b, DIGEST_SIZE);
    sha256(buf + BITMAP_HEADER, len - BITMAP_HEADER, &d);
    memcpy(buf + 56, d.b, DIGEST_SIZE);
    put_le32(buf + 88, sparse ? BITMAP_SPARSE : BITMAP_DENSE);

    fd = openat(v->dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return error_set(errno, "cannot create '%s/%s': %m", v->dir, tmp);
    r = write_all(fd, buf, len, 0);
    if (r == 0 && fdatasync(fd) < 0)
        r = -errno;
    if (r == 0 && renameat(v->dir_fd, tmp, v->dir_fd, name) < 0)
        r = -errno;
    if (r == 0 && fsync(v->dir_fd) < 0)
        r = -errno;
    if (r < 0) {
        unlinkat(v->dir_fd, tmp, 0);
        return error_set(r, "cannot write '%s/%s': %s", v->dir, name, strerror(-r));
    }
    return 0;
}

int volume_bitmap_parse(const void *data, size_t len, const char *magic,
                        const struct digest *base_id, uint64_t max_blocks, size_t nmaps,
                        uint64_t **ret_words, uint64_t *ret_nblocks)
{
    const uint8_t *p = data;
    struct digest d;

    if (len < BITMAP_HEADER || memcmp(p, magic, 8) != 0 ||
        get_le32(p + 8) != BITMAP_VERSION || get_le32(p + 12) != BLOCK_SIZE)
        return error_set(EBADMSG, "not a volume bitmap");
    if (memcmp(p + 24, base_id->b, DIGEST_SIZE) != 0)
        return error_set(EBADMSG, "a bitmap of another base snapshot");
    uint64_t nblocks = get_le64(p + 16);
    if (nblocks > max_blocks)
        return error_set(EINVAL, "a bitmap of %llu blocks, more than the volume's %llu",
                         (unsigned long long)nblocks, (unsigned long long)max_blocks);
    uint64_t fwords = DIV_ROUND_UP(nblocks, 64);
    uint32_t encoding = get_le32(p + 88);
    size_t rec = 8 + 8 * nmaps;
    if (nmaps == 0 || nmaps > 8 || fwords > (SIZE_MAX - BITMAP_HEADER) / rec ||
        get_le32(p + 92) != 0 ||
        !(encoding == BITMAP_DENSE ? len == BITMAP_HEADER + nmaps * fwords * 8
          : encoding == BITMAP_SPARSE
              ? (len - BITMAP_HEADER) % rec == 0 && (len - BITMAP_HEADER) / rec <= fwords
              : false))
        return error_set(EBADMSG, "a bitmap of the wrong size or encoding");
    sha256(p + BITMAP_HEADER, len - BITMAP_HEADER, &d);
    if (memcmp(p + 56, d.b, DIGEST_SIZE) != 0)
        return error_set(EBADMSG, "a corrupt bitmap (digest mismatch)");
    uint64_t *words = xcalloc(fwords * nmaps > 0 ? fwords * nmaps : 1, sizeof(uint64_t));
    if (encoding == BITMAP_SPARSE) {
        size_t n = (len - BITMAP_HEADER) / rec;
        const uint8_t *q = p + BITMAP_HEADER;
        for (size_t i = 0; i < n; i++, q += rec) {
            uint64_t w = get_le64(q);
            if (w >= fwords || (i > 0 && w <= get_le64(q - rec))) {
                free(words);
                return error_set(EBADMSG, "a sparse bitmap whose word %llu is out of order",
                                 (unsigned long long)w);
            }
            for (size_t m = 0; m < nmaps; m++)
                words[m * fwords + w] = get_le64(q + 8 + 8 * m);
        }
    }
    for (size_t m = 0; m < nmaps; m++) {
        for (uint64_t w = 0; w < fwords && encoding == BITMAP_DENSE; w++)
            words[m * fwords + w] = get_le64(p + BITMAP_HEADER + (m * fwords + w) * 8);
        /* Bits past the end are never set by a writer: keep them clear
         * even in a file whose digest matches. */
        if (nblocks % 64)
            words[m * fwords + fwords - 1] &= range_mask(0, nblocks % 64);
    }
    *ret_words = words;
    *ret_nblocks = nblocks;
    return 0;
}

/* Read bitmap file `name` into `nmaps` bitmaps of `words` words.  0 when
 * loaded, 1 when the file does not exist, -EBADMSG when damaged or not of
 * this volume, -EINVAL when written for a larger volume. */
static int bitmap_file_load(struct volume *v, const char *name, const char *magic,
                            uint64_t max_blocks, _Atomic uint64_t *const *maps, size_t nmaps,
                            size_t words)
{
    _cleanup_close_ int fd = openat(v->dir_fd, name, O_RDONLY | O_CLOEXEC);
    _cleanup_free_ uint8_t *buf = NULL;
    _cleanup_free_ uint64_t *got = NULL;
    uint64_t nblocks;
    struct stat st;
    ssize_t n;
    int r;

    if (fd < 0 && errno == ENOENT)
        return 1;
    if (fd < 0 || fstat(fd, &st) < 0)
        return error_set(errno, "cannot open '%s/%s': %m", v->dir, name);
    /* A bitmap written for a larger volume is refused as such; any other
     * file larger than a bitmap of this volume is refused unread. */
    uint8_t hdr[BITMAP_HEADER];
    n = pread_full(fd, hdr, sizeof(hdr), 0);
    if (n == BITMAP_HEADER && memcmp(hdr, magic, 8) == 0 && get_le64(hdr + 16) > max_blocks)
        return error_set(EINVAL, "'%s/%s' describes %llu blocks, more than the volume's %llu",
                         v->dir, name, (unsigned long long)get_le64(hdr + 16),
                         (unsigned long long)max_blocks);
    if ((uint64_t)st.st_size > BITMAP_HEADER + (uint64_t)(8 + 8 * nmaps) * words)
        return error_set(EBADMSG, "'%s/%s' is larger than a bitmap of this volume", v->dir,
                         name);
    buf = xmalloc((size_t)st.st_size + 1);
    n = pread_full(fd, buf, (size_t)st.st_size, 0);
    if (n < 0)
        return error_set((int)n, "cannot read '%s/%s': %s", v->dir, name, strerror((int)-n));
    r = volume_bitmap_parse(buf, (size_t)n, magic, &v->base_id, max_blocks, nmaps, &got,
                            &nblocks);
    if (r < 0) {
        /* error_set() writes the buffer error_message() returns: copy. */
        char why[256];
        snprintf(why, sizeof(why), "%s", error_message() ? error_message() : strerror(-r));
        return error_set(r, "'%s/%s': %s", v->dir, name, why);
    }
    size_t fwords = DIV_ROUND_UP(nblocks, 64);
    for (size_t m = 0; m < nmaps; m++)
        for (size_t w = 0; w < fwords && w < words; w++)
            atomic_store(&maps[m][w], got[m * fwords + w]);
    return 0;
}

static const char *volume_name(const struct volume *v);

/* ---- the fetch delay knob ---- */

/* KILN_FETCH_DELAY_US=N (a test and bench knob, docs/operations.md): every
 * chunk fetch from the store sleeps N microseconds first, as a remote store
 * would answer.  Read once per process; at most 10 s. */
static unsigned fetch_delay_us;
static pthread_once_t fetch_delay_once = PTHREAD_ONCE_INIT;

static void fetch_delay_read(void)
{
    const char *s = getenv("KILN_FETCH_DELAY_US");
    char *end;

    if (!s || !*s)
        return;
    errno = 0;
    unsigned long n = strtoul(s, &end, 10);
    if (errno || *end || n > 10000000UL) {
        log_warning("KILN_FETCH_DELAY_US '%s' ignored: expected microseconds up to 10000000",
                    s);
        return;
    }
    fetch_delay_us = (unsigned)n;
}

static void fetch_delay(struct volume *v)
{
    if (v->fetch_delay_us == 0)
        return;
    struct timespec ts = { v->fetch_delay_us / 1000000U,
                           (long)(v->fetch_delay_us % 1000000U) * 1000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- open and close ---- */

static struct volume *volume_alloc(struct store *s, struct blockmap *base,
                                   const struct digest *base_id, uint64_t size)
{
    struct volume *v = xcalloc(1, sizeof(*v));

    v->store = s;
    v->base = base;
    if (base && base_id)
        v->base_id = *base_id;
    v->size = size;
    v->nblocks = DIV_ROUND_UP(size, BLOCK_SIZE);
    v->base_end = base ? base->volume_size : 0;
    v->base_blocks = DIV_ROUND_UP(v->base_end, BLOCK_SIZE);
    v->dir_fd = v->lock_fd = v->overlay_fd = v->cache_fd = -1;
    v->words = DIV_ROUND_UP(v->nblocks, 64);
    v->cache_words = DIV_ROUND_UP(v->base_blocks, 64);
    v->cached = xcalloc(v->cache_words ? v->cache_words : 1, sizeof(uint64_t));
    pthread_mutex_init(&v->flush_mu, NULL);
    pthread_rwlock_init(&v->snap_lock, NULL);
    range_set_init(&v->writing);
    range_set_init(&v->fetching);
    pthread_mutex_init(&v->record_mu, NULL);
    pthread_once(&fetch_delay_once, fetch_delay_read);
    v->fetch_delay_us = fetch_delay_us;
    return v;
}

static void volume_destroy(struct volume *v)
{
    volume_boot_release(v); /* the prefetch threads first: they use the rest */
    pthread_mutex_destroy(&v->record_mu);
    if (v->cache_fd >= 0)
        close(v->cache_fd);
    if (v->overlay_fd >= 0)
        close(v->overlay_fd);
    if (v->lock_fd >= 0)
        close(v->lock_fd); /* releases the flock */
    if (v->dir_fd >= 0)
        close(v->dir_fd);
    free(v->alloc);
    free(v->zero);
    free(v->cached);
    blockmap_free(v->base);
    free(v->dir);
    pthread_mutex_destroy(&v->flush_mu);
    pthread_rwlock_destroy(&v->snap_lock);
    range_set_release(&v->writing);
    range_set_release(&v->fetching);
    free(v);
}

static int open_unnamed(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR))
        return fd >= 0 ? fd : -errno;
    /* A file system without O_TMPFILE: create and unlink at once. */
    _cleanup_free_ char *path = xasprintf("%s/.kiln-cache-XXXXXX", dir);
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return -errno;
    unlink(path);
    return fd;
}

int volume_open_snapshot(struct store *s, const char *scratch_dir, struct blockmap *base,
                         const struct digest *base_id, struct volume **ret)
{
    struct volume *v;
    int fd;

    if (!base)
        return error_set(EINVAL, "a snapshot view needs a block map");
    if (base->volume_size > VOLUME_MAX_SIZE || base->volume_size == 0) {
        fd = error_set(EINVAL, "cannot serve a snapshot of %llu bytes",
                       (unsigned long long)base->volume_size);
        blockmap_free(base);
        return fd;
    }
    fd = open_unnamed(scratch_dir);
    if (fd < 0) {
        blockmap_free(base);
        return error_set(fd, "cannot create a cache file in '%s': %s", scratch_dir,
                         strerror(-fd));
    }
    v = volume_alloc(s, base, base_id, base->volume_size);
    v->cache_fd = fd;
    v->read_only = true;
    v->view = true;
    *ret = v;
    return 0;
}

int volume_open(struct store *s, const char *dir, struct blockmap *base,
                const struct digest *base_id, uint64_t size, unsigned flags,
                struct volume **ret)
{
    bool ro = flags & VOLUME_OPEN_READ_ONLY;
    struct volume *v;
    int r;

    if (size % BLOCK_SIZE != 0 || size == 0 || size > VOLUME_MAX_SIZE ||
        (base && size < DIV_ROUND_UP(base->volume_size, BLOCK_SIZE) * BLOCK_SIZE)) {
        r = error_set(EINVAL, "invalid volume size %llu for '%s'", (unsigned long long)size,
                      dir);
        blockmap_free(base);
        return r;
    }
    v = volume_alloc(s, base, base_id, size);
    v->dir = xstrdup(dir);
    v->read_only = ro;
    v->alloc = xcalloc(v->words ? v->words : 1, sizeof(uint64_t));
    v->zero = xcalloc(v->words ? v->words : 1, sizeof(uint64_t));

    if (!ro && (flags & VOLUME_OPEN_CREATE) && mkdir(dir, 0755) < 0 && errno != EEXIST) {
        r = error_set(errno, "cannot create volume directory '%s': %m", dir);
        goto fail;
    }
    v->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (v->dir_fd < 0) {
        r = error_set(errno, "cannot open volume directory '%s': %m", dir);
        goto fail;
    }
    v->lock_fd = openat(v->dir_fd, "lock", (ro ? O_RDONLY : O_RDWR | O_CREAT) | O_CLOEXEC, 0644);
    if (v->lock_fd < 0 && !(ro && errno == ENOENT)) {
        r = error_set(errno, "cannot open '%s/lock': %m", dir);
        goto fail;
    }
    if (v->lock_fd >= 0 && flock(v->lock_fd, (ro ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
        r = error_set(errno == EWOULDBLOCK ? EBUSY : errno, "volume '%s' is in use", dir);
        goto fail;
    }

    _Atomic uint64_t *ov[2] = { v->alloc, v->zero };
    r = bitmap_file_load(v, "bitmap", BITMAP_MAGIC, v->nblocks, ov, 2, v->words);
    if (r < 0)
        goto fail;
    bool has_bitmap = r == 0;

    v->overlay_fd = openat(v->dir_fd, "overlay", (ro ? O_RDONLY : O_RDWR | O_CREAT) | O_CLOEXEC,
                           0644);
    if (v->overlay_fd < 0 && !(ro && errno == ENOENT && !has_bitmap)) {
        r = error_set(errno, "cannot open '%s/overlay': %m", dir);
        goto fail;
    }
    if (!ro) {
        struct stat st;
        if (fstat(v->overlay_fd, &st) < 0 ||
            ((uint64_t)st.st_size < size && ftruncate(v->overlay_fd, (off_t)size) < 0)) {
            r = error_set(errno, "cannot size '%s/overlay': %m", dir);
            goto fail;
        }
    }

    if (ro) {
        /* A reader must not race the writer's cache: a private one. */
        v->cache_fd = open_unnamed(dir);
        if (v->cache_fd < 0) {
            r = error_set(v->cache_fd, "cannot create a cache file in '%s': %s", dir,
                          strerror(-v->cache_fd));
            goto fail;
        }
    } else {
        v->cache_fd = openat(v->dir_fd, "cache", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (v->cache_fd < 0) {
            r = error_set(errno, "cannot open '%s/cache': %m", dir);
            goto fail;
        }
        _Atomic uint64_t *cm[1] = { v->cached };
        r = bitmap_file_load(v, "cache.bitmap", CACHE_MAGIC, v->base_blocks, cm, 1,
                             v->cache_words);
        if (r < 0) {
            /* Only a cache: start it again rather than refuse the volume. */
            log_warning("volume '%s': discarding its cache: %s", dir, error_message());
            memset((void *)v->cached, 0, v->cache_words * sizeof(uint64_t));
            if (ftruncate(v->cache_fd, 0) < 0) {
                r = error_set(errno, "cannot empty '%s/cache': %m", dir);
                goto fail;
            }
            unlinkat(v->dir_fd, "cache.bitmap", 0);
        }
    }
    *ret = v;
    return 0;

fail:
    volume_destroy(v);
    return r;
}

static int save_cache(struct volume *v)
{
    uint64_t gen = atomic_load(&v->cache_gen);
    _Atomic uint64_t *cm[1] = { v->cached };

    if (v->read_only || gen == v->cache_saved_gen)
        return 0;
    if (fdatasync(v->cache_fd) < 0)
        return error_set(errno, "cannot sync '%s/cache': %m", v->dir);
    int r = bitmap_file_save(v, "cache.bitmap", CACHE_MAGIC, cm, 1, v->cache_words,
                             v->base_blocks);
    if (r == 0)
        v->cache_saved_gen = gen;
    return r;
}

int volume_close(struct volume *v)
{
    int r = 0, q;

    if (!v)
        return 0;
    if (volume_boot_finish(v) < 0)
        log_warning("volume '%s': boot profile not saved: %s", volume_name(v),
                    error_message());
    volume_boot_release(v); /* stops the prefetch before the cache is saved */
    if (!v->read_only) {
        r = volume_flush(v);
        q = save_cache(v);
        if (q < 0)
            log_warning("volume '%s': cache not saved: %s", v->dir, error_message());
    }
    volume_destroy(v);
    return r;
}

uint64_t volume_size(const struct volume *v)
{
    return v->size;
}

bool volume_is_read_only(const struct volume *v)
{
    return v->read_only;
}

const struct blockmap *volume_base(const struct volume *v)
{
    return v->base;
}

const struct digest *volume_base_id(const struct volume *v)
{
    return v->base ? &v->base_id : NULL;
}

static const char *volume_name(const struct volume *v)
{
    return v->dir ? v->dir : "snapshot view";
}

static int check_range(struct volume *v, uint64_t len, uint64_t off)
{
    if (off > v->size || len > v->size - off)
        return error_set(EINVAL, "range %llu+%llu is outside volume '%s' (%llu bytes)",
                         (unsigned long long)off, (unsigned long long)len, volume_name(v),
                         (unsigned long long)v->size);
    return 0;
}

/* ---- the read path ---- */

int volume_fetch_extent(struct volume *v, size_t i, bool prefetch)
{
    const struct blockmap_extent *e = &v->base->ext[i];
    uint64_t first = e->block, end = e->block + e->count;
    size_t want = (size_t)e->count * BLOCK_SIZE;
    char hex[DIGEST_HEX_SIZE];
    _cleanup_free_ uint8_t *buf = NULL;
    int r = 0;

    range_acquire(&v->fetching, first, end);
    if (bits_all(v->cached, first, end))
        goto out; /* another thread fetched it meanwhile */
    buf = xmalloc(want);
    fetch_delay(v);
    ssize_t n = store_chunk_get(v->store, &e->id, buf, want);
    if ((n >= 0 && (size_t)n != want) || n == -EFBIG)
        n = -EBADMSG;
    if (n == -EBADMSG)
        r = error_set(EBADMSG, "chunk '%s' at offset %llu is corrupt (digest mismatch)",
                      digest_to_hex(&e->id, hex), (unsigned long long)first * BLOCK_SIZE);
    else if (n == -ENOENT)
        r = error_set(ENOENT, "chunk '%s' at offset %llu is missing from the store",
                      digest_to_hex(&e->id, hex), (unsigned long long)first * BLOCK_SIZE);
    else if (n < 0)
        r = error_set((int)n, "cannot read chunk '%s': %s", digest_to_hex(&e->id, hex),
                      strerror((int)-n));
    if (r < 0)
        goto out;
    r = write_all(v->cache_fd, buf, want, (off_t)(first * BLOCK_SIZE));
    if (r < 0) {
        r = error_set(r, "cannot write the cache of '%s': %s", volume_name(v), strerror(-r));
        goto out;
    }
    /* Marked before the cached bits: a reader that waited for this fetch
     * sees it was the prefetcher's. */
    if (prefetch && v->ext_flags) {
        atomic_fetch_or(&v->ext_flags[i], EXT_PREFETCHED);
        atomic_fetch_add(&v->st.prefetch_chunks, 1);
        atomic_fetch_add(&v->st.prefetch_bytes, want);
    }
    bits_set(v->cached, first, end);
    atomic_fetch_add(&v->cache_gen, 1);
    atomic_fetch_add(&v->st.chunks_fetched, 1);
    atomic_fetch_add(&v->st.blocks_fetched, e->count);
    atomic_fetch_add(&v->st.bytes_fetched, want);
    r = 1;
out:
    range_release(&v->fetching, first, end);
    return r;
}

static int read_fd(struct volume *v, int fd, const char *what, uint8_t *out, uint64_t len,
                   uint64_t off)
{
    ssize_t n = pread_full(fd, out, len, (off_t)off);
    if (n < 0)
        return error_set((int)n, "cannot read the %s of '%s': %s", what, volume_name(v),
                         strerror((int)-n));
    if ((uint64_t)n < len)
        memset(out + n, 0, len - (uint64_t)n); /* a sparse file's short tail */
    return 0;
}

/* Bytes [from, to) of the base (zeros where it has none). */
static int read_base(struct volume *v, uint8_t *out, uint64_t from, uint64_t to)
{
    uint64_t cur = from, lim = MIN(to, v->base_end);
    int r;

    if (v->base && from < lim) {
        const struct blockmap *m = v->base;
        for (size_t i = blockmap_seek(m, from / BLOCK_SIZE); i < m->n; i++) {
            const struct blockmap_extent *e = &m->ext[i];
            uint64_t es = e->block * BLOCK_SIZE;
            if (es >= lim)
                break;
            uint64_t a = MAX(es, from);
            uint64_t b = MIN(es + (uint64_t)e->count * BLOCK_SIZE, lim);
            if (a >= b)
                continue;
            if (a > cur)
                memset(out + (cur - from), 0, a - cur);
            uint64_t fb = a / BLOCK_SIZE, lb = DIV_ROUND_UP(b, BLOCK_SIZE);
            bool fetched = false;
            if (bits_all(v->cached, fb, lb)) {
                atomic_fetch_add(&v->st.cache_hits, lb - fb);
            } else {
                r = volume_fetch_extent(v, i, false);
                if (r < 0)
                    return r;
                fetched = r > 0;
            }
            if (v->ext_flags)
                volume_note_touch(v, i, fetched);
            r = read_fd(v, v->cache_fd, "cache", out + (a - from), b - a, a);
            if (r < 0)
                return r;
            cur = b;
        }
    }
    if (cur < to)
        memset(out + (cur - from), 0, to - cur);
    return 0;
}

enum block_class { CLASS_BASE, CLASS_DATA, CLASS_ZERO };

static enum block_class classify(struct volume *v, uint64_t b)
{
    if (v->view)
        return CLASS_BASE;
    if (bit_test(v->zero, b))
        return CLASS_ZERO;
    return bit_test(v->alloc, b) ? CLASS_DATA : CLASS_BASE;
}

int volume_read_locked(struct volume *v, void *buf, size_t len, uint64_t off)
{
    uint8_t *out = buf;
    uint64_t pos = off, end = off + len;
    int r = 0;

    while (pos < end && r == 0) {
        uint64_t b = pos / BLOCK_SIZE;
        enum block_class c = classify(v, b);
        uint64_t nb = b + 1;
        if (c == CLASS_BASE)
            nb = MAX(nb, volume_next_dirty(v, nb, DIV_ROUND_UP(end, BLOCK_SIZE)));
        else
            while (nb * BLOCK_SIZE < end && classify(v, nb) == c)
                nb++;
        uint64_t run_end = MIN(nb * BLOCK_SIZE, end);
        uint8_t *o = out + (pos - off);
        switch (c) {
        case CLASS_ZERO:
            memset(o, 0, run_end - pos);
            break;
        case CLASS_DATA:
            r = read_fd(v, v->overlay_fd, "overlay", o, run_end - pos, pos);
            break;
        case CLASS_BASE:
            r = read_base(v, o, pos, run_end);
            break;
        }
        pos = run_end;
    }
    return r;
}

int volume_read(struct volume *v, void *buf, size_t len, uint64_t off)
{
    int r = check_range(v, len, off);
    if (r < 0)
        return r;
    atomic_fetch_add(&v->st.bytes_read, len);
    return volume_read_locked(v, buf, len, off);
}

int volume_cache(struct volume *v, size_t len, uint64_t off)
{
    int r = check_range(v, len, off);
    if (r < 0 || !v->base || len == 0)
        return r;
    uint64_t fb = off / BLOCK_SIZE, lb = DIV_ROUND_UP(off + len, BLOCK_SIZE);
    const struct blockmap *m = v->base;
    for (size_t i = blockmap_seek(m, fb); i < m->n && m->ext[i].block < lb; i++) {
        const struct blockmap_extent *e = &m->ext[i];
        /* A chunk every block of which the overlay holds is not needed. */
        if (volume_next_clean(v, MAX(e->block, fb), MIN(e->block + e->count, lb)) ==
            MIN(e->block + e->count, lb))
            continue;
        if (bits_all(v->cached, e->block, e->block + e->count))
            continue;
        r = volume_fetch_extent(v, i, false);
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- writes ---- */

static int check_writable(struct volume *v, uint64_t len, uint64_t off)
{
    if (v->read_only)
        return error_set(EROFS, "volume '%s' is open read-only", volume_name(v));
    return check_range(v, len, off);
}

/* Write [off, off + len) into the overlay with the range lock held,
 * completing partial blocks from the current contents. */
static int write_locked(struct volume *v, const uint8_t *buf, uint64_t len, uint64_t off)
{
    uint8_t tmp[BLOCK_SIZE];
    uint64_t pos = off, end = off + len;
    const uint8_t *p = buf;
    int r;

    while (pos < end) {
        uint64_t bs = pos / BLOCK_SIZE * BLOCK_SIZE, be = bs + BLOCK_SIZE;
        uint64_t n;
        if (pos == bs && end >= be) {
            n = (end - pos) / BLOCK_SIZE * BLOCK_SIZE;
            r = write_all(v->overlay_fd, p, n, (off_t)pos);
        } else {
            n = MIN(be, end) - pos;
            r = volume_read_locked(v, tmp, BLOCK_SIZE, bs);
            if (r < 0)
                return r;
            if (p)
                memcpy(tmp + (pos - bs), p, n);
            else
                memset(tmp + (pos - bs), 0, n);
            r = write_all(v->overlay_fd, tmp, BLOCK_SIZE, (off_t)bs);
        }
        if (r < 0)
            return error_set(r, "cannot write the overlay of '%s': %s", volume_name(v),
                             strerror(-r));
        pos += n;
        if (p)
            p += n;
    }
    uint64_t fb = off / BLOCK_SIZE, lb = DIV_ROUND_UP(end, BLOCK_SIZE);
    bits_set(v->alloc, fb, lb);
    bits_clear(v->zero, fb, lb);
    atomic_fetch_add(&v->bitmap_gen, 1);
    atomic_fetch_add(&v->st.blocks_written, lb - fb);
    return 0;
}

int volume_write(struct volume *v, const void *buf, size_t len, uint64_t off, bool fua)
{
    int r = check_writable(v, len, off);
    if (r < 0 || len == 0)
        return r;
    uint64_t fb = off / BLOCK_SIZE, lb = DIV_ROUND_UP(off + len, BLOCK_SIZE);
    pthread_rwlock_rdlock(&v->snap_lock);
    range_acquire(&v->writing, fb, lb);
    r = write_locked(v, buf, len, off);
    range_release(&v->writing, fb, lb);
    pthread_rwlock_unlock(&v->snap_lock);
    if (r == 0 && fua)
        r = volume_flush(v);
    return r;
}

static int zero_range(struct volume *v, size_t len, uint64_t off, bool fua)
{
    int r = check_writable(v, len, off);
    if (r < 0 || len == 0)
        return r;
    uint64_t end = off + len;
    uint64_t fb = off / BLOCK_SIZE, lb = DIV_ROUND_UP(end, BLOCK_SIZE);
    /* Whole blocks inside the range. */
    uint64_t zb = DIV_ROUND_UP(off, BLOCK_SIZE), ze = end / BLOCK_SIZE;

    pthread_rwlock_rdlock(&v->snap_lock);
    range_acquire(&v->writing, fb, lb);
    if (zb >= ze) {
        r = write_locked(v, NULL, len, off); /* within one or two partial blocks */
    } else {
        if (off < zb * BLOCK_SIZE)
            r = write_locked(v, NULL, zb * BLOCK_SIZE - off, off);
        if (r == 0 && end > ze * BLOCK_SIZE)
            r = write_locked(v, NULL, end - ze * BLOCK_SIZE, ze * BLOCK_SIZE);
        if (r == 0) {
            bits_set(v->zero, zb, ze);
            atomic_fetch_add(&v->bitmap_gen, 1);
            atomic_fetch_add(&v->st.blocks_zeroed, ze - zb);
            /* Only to free space: a zero block never reads the overlay. */
            if (fallocate(v->overlay_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          (off_t)(zb * BLOCK_SIZE), (off_t)((ze - zb) * BLOCK_SIZE)) < 0 &&
                errno != EOPNOTSUPP)
                log_warning("volume '%s': cannot punch the overlay: %m", volume_name(v));
        }
    }
    range_release(&v->writing, fb, lb);
    pthread_rwlock_unlock(&v->snap_lock);
    if (r == 0 && fua)
        r = volume_flush(v);
    return r;
}

int volume_trim(struct volume *v, size_t len, uint64_t off, bool fua)
{
    return zero_range(v, len, off, fua);
}

int volume_zero(struct volume *v, size_t len, uint64_t off, bool fua)
{
    return zero_range(v, len, off, fua);
}

int volume_flush(struct volume *v)
{
    int r = 0;

    if (v->read_only)
        return 0;
    pthread_mutex_lock(&v->flush_mu);
    /* The generation first, then the bits (the save copies them), then the
     * data: see the design notes. */
    uint64_t gen = atomic_load(&v->bitmap_gen);
    bool changed = gen != v->bitmap_saved_gen;
    _Atomic uint64_t *copy[2] = { NULL, NULL };
    if (changed) {
        for (int m = 0; m < 2; m++) {
            _Atomic uint64_t *src = m ? v->zero : v->alloc;
            copy[m] = xcalloc(v->words ? v->words : 1, sizeof(uint64_t));
            for (size_t w = 0; w < v->words; w++)
                atomic_store_explicit(&copy[m][w],
                                      atomic_load_explicit(&src[w], memory_order_acquire),
                                      memory_order_relaxed);
        }
    }
    if (fdatasync(v->overlay_fd) < 0)
        r = error_set(errno, "cannot sync the overlay of '%s': %m", volume_name(v));
    if (r == 0 && changed) {
        r = bitmap_file_save(v, "bitmap", BITMAP_MAGIC, copy, 2, v->words, v->nblocks);
        if (r == 0) {
            v->bitmap_saved_gen = gen;
            atomic_fetch_add(&v->st.flushes, 1);
        }
    }
    free(copy[0]);
    free(copy[1]);
    pthread_mutex_unlock(&v->flush_mu);
    return r;
}

/* ---- block status and counters ---- */

int volume_block_status(struct volume *v, uint64_t off, uint64_t len, bool *ret_allocated,
                        bool *ret_zero, uint64_t *ret_run_len)
{
    int r = check_range(v, len, off);
    if (r < 0)
        return r;
    if (len == 0)
        return error_set(EINVAL, "block status of an empty range");
    uint64_t end = off + len, b = off / BLOCK_SIZE, eb = DIV_ROUND_UP(end, BLOCK_SIZE);
    enum block_class c = classify(v, b);
    bool allocated;
    uint64_t nb;

    if (c == CLASS_DATA || c == CLASS_ZERO) {
        allocated = c == CLASS_DATA;
        nb = b + 1;
        while (nb < eb && classify(v, nb) == c)
            nb++;
    } else {
        nb = volume_next_dirty(v, b, eb);
        if (nb == b)
            nb = b + 1; /* cannot happen: b is clean */
        uint64_t base_b = v->base ? v->base_blocks : 0;
        if (b >= base_b) {
            allocated = false;
        } else {
            size_t next;
            ssize_t i = blockmap_lookup(v->base, b, &next);
            if (i >= 0) {
                const struct blockmap_extent *e = &v->base->ext[i];
                allocated = true;
                nb = MIN(nb, e->block + e->count);
            } else {
                allocated = false;
                uint64_t hole_end = next < v->base->n ? v->base->ext[next].block : base_b;
                /* past the base's last block: zeros up to the dirty run */
                if (next >= v->base->n)
                    hole_end = eb;
                nb = MIN(nb, MAX(hole_end, b + 1));
            }
        }
    }
    uint64_t run_end = MIN(nb * BLOCK_SIZE, end);
    /* The base's data ends inside its last block when its size is not a
     * multiple of 4 KiB: report the bytes past it as data too (they read
     * zeros, which "data" does not deny). */
    *ret_allocated = allocated;
    *ret_zero = !allocated;
    *ret_run_len = run_end - off;
    return 0;
}

void volume_stats(struct volume *v, struct volume_stats *ret)
{
    ret->chunks_fetched = atomic_load(&v->st.chunks_fetched);
    ret->blocks_fetched = atomic_load(&v->st.blocks_fetched);
    ret->bytes_fetched = atomic_load(&v->st.bytes_fetched);
    ret->cache_hits = atomic_load(&v->st.cache_hits);
    ret->bytes_read = atomic_load(&v->st.bytes_read);
    ret->blocks_written = atomic_load(&v->st.blocks_written);
    ret->blocks_zeroed = atomic_load(&v->st.blocks_zeroed);
    ret->flushes = atomic_load(&v->st.flushes);
    ret->prefetch_chunks = atomic_load(&v->st.prefetch_chunks);
    ret->prefetch_bytes = atomic_load(&v->st.prefetch_bytes);
    ret->prefetch_hits = atomic_load(&v->st.prefetch_hits);
    ret->prefetch_errors = atomic_load(&v->st.prefetch_errors);
}
