/* Boot profiles and parallel prefetch: recording the order in which a
 * volume's first boot touches the chunks of its base snapshot, the profile
 * file (docs/formats.md, "Boot profiles"), and the threads that fetch a
 * profile's chunks into the cache of a later volume of the same snapshot
 * while it boots.
 *
 * Design notes (why).  A lazy boot reads its base in small serial reads:
 * every fetch latency is paid once per first touch (docs/benchmarks.md,
 * "Boot").  The chunks a boot touches, and their order, hardly change from
 * one boot of a snapshot to the next, so the first boot records them and
 * later boots fetch them ahead of the guest, several at a time.
 *
 * Design notes (concurrency).  ext_flags (one byte per base extent) and the
 * recording buffer are allocated before the handle is shared (the
 * start calls' contract) and freed only by volume_destroy() after the
 * prefetch threads are joined, so the read path tests them without a lock.
 * A guest read and a prefetch of the same chunk meet in
 * volume_fetch_extent()'s range lock: the later one waits and finds the
 * chunk cached, so each chunk is fetched once.  The prefetcher marks an
 * extent EXT_PREFETCHED before it sets the cached bits, so the reader that
 * finds it cached also sees whose fetch it was (prefetch_hits).  Memory:
 * the recording holds 4 bytes per base extent at most; each prefetch
 * thread holds one chunk at a time.
 *
 * Design notes (durability).  A profile is only a hint: it is written as a
 * temporary file, fdatasynced, renamed into place, and the directory
 * fsynced, so a reader sees the old file or the new one; a corrupt or
 * foreign one is ignored with a warning and replaced by the next recording.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/byteorder.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "volume/internal.h"

#define PROFILE_MAGIC "KILNBPF"
#define PROFILE_VERSION 1
#define PROFILE_HEADER 96
#define PREFETCH_THREADS 4
#define PREFETCH_THREADS_MAX 16
#define RECORD_SECONDS 300

struct prefetch {
    struct volume *v;
    uint32_t *ext; /* base extent indexes, in the profile's order */
    size_t n;
    atomic_size_t next;
    atomic_bool stop;
    atomic_bool warned;
    pthread_t th[PREFETCH_THREADS_MAX];
    unsigned nthreads;
};

/* ---- the file ---- */

void volume_profile_free(struct volume_profile *p)
{
    if (!p)
        return;
    free(p->blocks);
    free(p);
}

char *volume_profile_path(const char *region_dir, const char *snapshot_id)
{
    return xasprintf("%s/profiles/%s.profile", region_dir, snapshot_id);
}

void volume_profile_encode(const struct volume_profile *p, uint8_t **ret, size_t *ret_len)
{
    size_t len = PROFILE_HEADER + p->n * 8;
    uint8_t *buf = xcalloc(1, len);
    struct digest d;

    memcpy(buf, PROFILE_MAGIC, 8);
    put_le32(buf + 8, PROFILE_VERSION);
    put_le32(buf + 12, BLOCK_SIZE);
    put_le64(buf + 16, p->n);
    memcpy(buf + 24, p->base_id.b, DIGEST_SIZE);
    for (size_t i = 0; i < p->n; i++)
        put_le64(buf + PROFILE_HEADER + i * 8, p->blocks[i]);
    sha256(buf + PROFILE_HEADER, len - PROFILE_HEADER, &d);
    memcpy(buf + 56, d.b, DIGEST_SIZE);
    *ret = buf;
    *ret_len = len;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int volume_profile_parse(const void *data, size_t len, struct volume_profile **ret)
{
    const uint8_t *p = data;
    struct digest d;

    if (len < PROFILE_HEADER || memcmp(p, PROFILE_MAGIC, 8) != 0)
        return error_set(EBADMSG, "not a boot profile");
    if (get_le32(p + 8) != PROFILE_VERSION || get_le32(p + 12) != BLOCK_SIZE)
        return error_set(EBADMSG, "a boot profile of version %u (block size %u), not %u",
                         get_le32(p + 8), get_le32(p + 12), PROFILE_VERSION);
    uint64_t n = get_le64(p + 16);
    if (n > VOLUME_PROFILE_MAX || get_le64(p + 88) != 0 || len != PROFILE_HEADER + n * 8)
        return error_set(EBADMSG, "a boot profile of the wrong size");
    sha256(p + PROFILE_HEADER, len - PROFILE_HEADER, &d);
    if (memcmp(p + 56, d.b, DIGEST_SIZE) != 0)
        return error_set(EBADMSG, "a corrupt boot profile (digest mismatch)");

    _cleanup_(volume_profile_freep) struct volume_profile *prof = xcalloc(1, sizeof(*prof));
    memcpy(prof->base_id.b, p + 24, DIGEST_SIZE);
    prof->n = (size_t)n;
    prof->blocks = xcalloc(n ? n : 1, sizeof(uint64_t));
    for (size_t i = 0; i < n; i++) {
        prof->blocks[i] = get_le64(p + PROFILE_HEADER + i * 8);
        if (prof->blocks[i] >= VOLUME_MAX_SIZE / BLOCK_SIZE)
            return error_set(EBADMSG, "a boot profile entry past the largest volume");
    }
    _cleanup_free_ uint64_t *sorted = xmalloc(n ? n * 8 : 1);
    if (n)
        memcpy(sorted, prof->blocks, n * 8);
    qsort(sorted, n, 8, cmp_u64);
    for (size_t i = 1; i < n; i++)
        if (sorted[i] == sorted[i - 1])
            return error_set(EBADMSG, "a boot profile that names chunk %llu twice",
                             (unsigned long long)sorted[i]);
    *ret = TAKE_PTR(prof);
    return 0;
}

int volume_profile_load(const char *path, const struct digest *base_id,
                        struct volume_profile **ret)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    _cleanup_free_ uint8_t *buf = NULL;
    struct volume_profile *p;
    struct stat st;
    char why[256];

    if (fd < 0 && errno == ENOENT)
        return -ENOENT;
    if (fd < 0 || fstat(fd, &st) < 0)
        return error_set(errno, "cannot open boot profile '%s': %m", path);
    if ((uint64_t)st.st_size > PROFILE_HEADER + (uint64_t)VOLUME_PROFILE_MAX * 8)
        return error_set(EBADMSG, "boot profile '%s' is too large", path);
    buf = xmalloc((size_t)st.st_size + 1);
    ssize_t n = pread_full(fd, buf, (size_t)st.st_size, 0);
    if (n < 0)
        return error_set((int)n, "cannot read boot profile '%s': %s", path,
                         strerror((int)-n));
    int r = volume_profile_parse(buf, (size_t)n, &p);
    if (r < 0) {
        snprintf(why, sizeof(why), "%s", error_message() ? error_message() : strerror(-r));
        return error_set(r, "boot profile '%s': %s", path, why);
    }
    if (memcmp(p->base_id.b, base_id->b, DIGEST_SIZE) != 0) {
        volume_profile_free(p);
        return error_set(EBADMSG, "boot profile '%s' was recorded over another snapshot",
                         path);
    }
    *ret = p;
    return 0;
}

int volume_profile_save(const struct volume_profile *p, const char *path)
{
    _cleanup_free_ char *dir = xstrdup(path), *tmp = xasprintf("%s.tmp", path);
    _cleanup_free_ uint8_t *buf = NULL;
    _cleanup_close_ int fd = -1;
    size_t len;
    int r;

    if (p->n > VOLUME_PROFILE_MAX)
        return error_set(EINVAL, "a boot profile of %zu chunks (at most %u)", p->n,
                         VOLUME_PROFILE_MAX);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        r = mkdir_p(dir);
        if (r < 0)
            return error_set(r, "cannot create '%s': %s", dir, strerror(-r));
    }
    volume_profile_encode(p, &buf, &len);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return error_set(errno, "cannot create '%s': %m", tmp);
    r = write_all(fd, buf, len, 0);
    if (r == 0 && fdatasync(fd) < 0)
        r = -errno;
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r == 0 && slash && slash != dir)
        r = fsync_dir(dir);
    if (r < 0) {
        unlink(tmp);
        return error_set(r, "cannot write boot profile '%s': %s", path, strerror(-r));
    }
    return 0;
}

/* ---- recording ---- */

static void ext_flags_alloc(struct volume *v)
{
    if (!v->ext_flags)
        v->ext_flags = xcalloc(v->base->n ? v->base->n : 1, 1);
}

int volume_record_start(struct volume *v, unsigned max_seconds)
{
    if (!v->base)
        return error_set(EINVAL, "volume '%s' has no base snapshot to record",
                         v->dir ? v->dir : "snapshot view");
    if (v->rec || v->pf)
        return error_set(EINVAL, "volume '%s' already records or prefetches",
                         v->dir ? v->dir : "snapshot view");
    ext_flags_alloc(v);
    v->rec = xcalloc(v->base->n ? v->base->n : 1, sizeof(uint32_t));
    v->rec_n = 0;
    v->record_deadline_ns = max_seconds ? now_ns() + max_seconds * 1000000000ULL : 0;
    atomic_store(&v->recording, true);
    return 0;
}

void volume_note_touch(struct volume *v, size_t i, bool fetched)
{
    uint8_t old = atomic_fetch_or(&v->ext_flags[i], EXT_TOUCHED);

    if (old & EXT_TOUCHED)
        return;
    if ((old & EXT_PREFETCHED) && !fetched)
        atomic_fetch_add(&v->st.prefetch_hits, 1);
    if (!atomic_load(&v->recording))
        return;
    if (v->record_deadline_ns && now_ns() > v->record_deadline_ns) {
        atomic_store(&v->recording, false);
        return;
    }
    pthread_mutex_lock(&v->record_mu);
    if (atomic_load(&v->recording) && v->rec_n < v->base->n && v->rec_n < VOLUME_PROFILE_MAX)
        v->rec[v->rec_n++] = (uint32_t)i;
    pthread_mutex_unlock(&v->record_mu);
}

int volume_record_stop(struct volume *v, struct volume_profile **ret)
{
    if (!v->rec)
        return error_set(EINVAL, "volume '%s' is not recording",
                         v->dir ? v->dir : "snapshot view");
    pthread_mutex_lock(&v->record_mu);
    atomic_store(&v->recording, false);
    uint32_t *rec = TAKE_PTR(v->rec);
    size_t n = v->rec_n;
    v->rec_n = 0;
    pthread_mutex_unlock(&v->record_mu);
    if (ret) {
        struct volume_profile *p = xcalloc(1, sizeof(*p));
        p->base_id = v->base_id;
        p->n = n;
        p->blocks = xcalloc(n ? n : 1, sizeof(uint64_t));
        for (size_t k = 0; k < n; k++)
            p->blocks[k] = v->base->ext[rec[k]].block;
        *ret = p;
    }
    free(rec);
    return 0;
}

/* ---- prefetch ---- */

static void *prefetch_main(void *arg)
{
    struct prefetch *pf = arg;
    struct volume *v = pf->v;

    while (!atomic_load(&pf->stop)) {
        size_t k = atomic_fetch_add(&pf->next, 1);
        if (k >= pf->n)
            break;
        const struct blockmap_extent *e = &v->base->ext[pf->ext[k]];
        uint64_t end = e->block + e->count;
        /* A chunk the overlay holds all of is never read from the base. */
        if (volume_next_clean(v, e->block, end) == end)
            continue;
        int r = volume_fetch_extent(v, pf->ext[k], true);
        if (r < 0) {
            atomic_fetch_add(&v->st.prefetch_errors, 1);
            if (!atomic_exchange(&pf->warned, true))
                log_warning("volume '%s': prefetch: %s", v->dir ? v->dir : "snapshot view",
                            error_message() ? error_message() : strerror(-r));
        }
    }
    return NULL;
}

int volume_prefetch_start(struct volume *v, const struct volume_profile *p, unsigned threads)
{
    const char *name = v->dir ? v->dir : "snapshot view";

    if (!v->base)
        return error_set(EINVAL, "volume '%s' has no base snapshot to prefetch", name);
    if (v->pf || v->rec)
        return error_set(EINVAL, "volume '%s' already prefetches or records", name);
    if (memcmp(p->base_id.b, v->base_id.b, DIGEST_SIZE) != 0)
        return error_set(EINVAL, "a boot profile of another snapshot than volume '%s''s",
                         name);
    threads = threads ? threads : PREFETCH_THREADS;
    if (threads > PREFETCH_THREADS_MAX)
        threads = PREFETCH_THREADS_MAX;
    ext_flags_alloc(v);
    struct prefetch *pf = xcalloc(1, sizeof(*pf));
    pf->v = v;
    pf->ext = xcalloc(p->n ? p->n : 1, sizeof(uint32_t));
    for (size_t k = 0; k < p->n; k++) {
        size_t next;
        ssize_t i = blockmap_lookup(v->base, p->blocks[k], &next);
        if (i >= 0 && v->base->ext[i].block == p->blocks[k])
            pf->ext[pf->n++] = (uint32_t)i;
    }
    if (pf->n < p->n)
        log_warning("volume '%s': %zu of the boot profile's %zu chunks are not chunks of "
                    "its snapshot: skipped",
                    name, p->n - pf->n, p->n);
    v->pf = pf;
    for (unsigned t = 0; t < threads && pf->n > 0; t++) {
        int e = pthread_create(&pf->th[t], NULL, prefetch_main, pf);
        if (e != 0) {
            log_warning("volume '%s': prefetch with %u threads, not %u: %s", name, t, threads,
                        strerror(e));
            break;
        }
        pf->nthreads++;
    }
    return 0;
}

int volume_prefetch_wait(struct volume *v)
{
    struct prefetch *pf = v->pf;

    if (!pf)
        return 0;
    for (unsigned t = 0; t < pf->nthreads; t++)
        pthread_join(pf->th[t], NULL);
    pf->nthreads = 0;
    return 0;
}

void volume_boot_release(struct volume *v)
{
    if (v->pf) {
        atomic_store(&v->pf->stop, true);
        volume_prefetch_wait(v);
        free(v->pf->ext);
        free(v->pf);
        v->pf = NULL;
    }
    free(v->rec);
    v->rec = NULL;
    free((void *)v->ext_flags);
    v->ext_flags = NULL;
    free(v->profile_path);
    v->profile_path = NULL;
}

/* ---- boot ---- */

int volume_boot_start(struct volume *v, const char *profile_path,
                      const struct volume_boot_options *o)
{
    _cleanup_(volume_profile_freep) struct volume_profile *p = NULL;
    unsigned threads = o ? o->threads : 0;
    unsigned seconds = o && o->record_seconds ? o->record_seconds : RECORD_SECONDS;

    if (!v->base)
        return 0;
    int r = volume_profile_load(profile_path, &v->base_id, &p);
    if (r == 0) {
        r = volume_prefetch_start(v, p, threads);
        return r < 0 ? r : 1;
    }
    if (r != -ENOENT)
        log_warning("ignoring a boot profile: %s", error_message());
    r = volume_record_start(v, seconds);
    if (r < 0)
        return r;
    v->profile_path = xstrdup(profile_path);
    return 0;
}

int volume_boot_finish(struct volume *v)
{
    _cleanup_(volume_profile_freep) struct volume_profile *p = NULL;

    if (!v->rec || !v->profile_path)
        return 0;
    int r = volume_record_stop(v, &p);
    if (r < 0)
        return r;
    if (p->n == 0)
        return 0; /* nothing read: keep whatever is there */
    r = volume_profile_save(p, v->profile_path);
    return r < 0 ? r : 1;
}
