/* Export: write a snapshot's volume out as a sparse raw file or a qcow2
 * image, and read arbitrary byte ranges of it.
 *
 * Raw export runs one worker per core over the extents (each chunk is
 * fetched, verified and written with pwrite at its offset); holes are never
 * written, so the output is sparse.  Output goes to a temporary file next to
 * the target, renamed into place only when complete: a failed export (a
 * damaged chunk, a full disk) leaves no half-written file behind.  Raw
 * output is not fsynced (as with cp).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/progress.h"
#include "common/util.h"
#include "snapshot/qcow2.h"
#include "snapshot/snapshot.h"

#define EXPORT_BATCH 64

/* Fetch the chunk of extent e into buf (count * 4 KiB bytes). */
static int fetch_extent(struct store *s, const struct blockmap_extent *e, uint8_t *buf)
{
    size_t want = (size_t)e->count * BLOCK_SIZE;
    ssize_t n = store_chunk_get(s, &e->id, buf, want);
    char hex[DIGEST_HEX_SIZE];

    if ((n >= 0 && (size_t)n != want) || n == -EFBIG)
        n = -EBADMSG; /* not the length the map says: damage */
    if (n == -EBADMSG)
        return error_set(EBADMSG, "chunk '%s' at offset %llu is corrupt (digest mismatch)",
                         digest_to_hex(&e->id, hex),
                         (unsigned long long)e->block * BLOCK_SIZE);
    if (n == -ENOENT)
        return error_set(ENOENT, "chunk '%s' at offset %llu is missing from the store",
                         digest_to_hex(&e->id, hex),
                         (unsigned long long)e->block * BLOCK_SIZE);
    if (n < 0)
        return error_set((int)n, "cannot read chunk '%s': %s", digest_to_hex(&e->id, hex),
                         strerror((int)-n));
    return 0;
}

int snapshot_read(struct store *s, const struct blockmap *m, void *buf, size_t len,
                  uint64_t offset)
{
    _cleanup_free_ uint8_t *chunk = NULL;
    uint8_t *out = buf;
    uint64_t end = offset + len;
    int r;

    if (end > m->volume_size || end < offset)
        return -EINVAL;
    memset(out, 0, len);
    for (size_t i = blockmap_seek(m, offset / BLOCK_SIZE); i < m->n; i++) {
        const struct blockmap_extent *e = &m->ext[i];
        uint64_t es = e->block * BLOCK_SIZE, ee = es + (uint64_t)e->count * BLOCK_SIZE;
        if (es >= end)
            break;
        if (!chunk)
            chunk = xmalloc(STORE_CHUNK_MAX);
        r = fetch_extent(s, e, chunk);
        if (r < 0)
            return r;
        uint64_t from = MAX(es, offset), to = MIN(ee, end);
        memcpy(out + (from - offset), chunk + (from - es), to - from);
    }
    return 0;
}

struct raw_job {
    struct store *s;
    const struct blockmap *m;
    int fd;
    _Atomic size_t next;
    _Atomic int error;
    struct progress *bar;
};

static void *raw_worker(void *arg)
{
    struct raw_job *j = arg;
    _cleanup_free_ uint8_t *buf = xmalloc(STORE_CHUNK_MAX);

    for (;;) {
        size_t first = atomic_fetch_add(&j->next, EXPORT_BATCH);
        if (first >= j->m->n || atomic_load(&j->error))
            break;
        for (size_t i = first; i < MIN(first + EXPORT_BATCH, j->m->n); i++) {
            const struct blockmap_extent *e = &j->m->ext[i];
            uint64_t off = e->block * BLOCK_SIZE;
            size_t len = (size_t)MIN((uint64_t)e->count * BLOCK_SIZE, j->m->volume_size - off);
            int r = fetch_extent(j->s, e, buf);
            if (r == 0) {
                r = write_all(j->fd, buf, len, (off_t)off);
                if (r < 0)
                    r = error_set(r, "cannot write exported data: %s", strerror(-r));
            }
            if (r < 0) {
                int zero = 0;
                atomic_compare_exchange_strong(&j->error, &zero, r);
                /* The message is per thread: hand it to the joiner. */
                return xstrdup(error_message() ? error_message() : strerror(-r));
            }
            progress_add(j->bar, len);
        }
    }
    return NULL;
}

/* A device keeps its old contents where the volume has holes: write zeros
 * there. */
static int zero_holes(const struct blockmap *m, int fd)
{
    _cleanup_free_ uint8_t *zeros = xcalloc(1, 1 << 20);
    uint64_t pos = 0;
    int r;

    for (size_t i = 0; i <= m->n; i++) {
        uint64_t end = i < m->n ? m->ext[i].block * BLOCK_SIZE : m->volume_size;
        while (pos < end) {
            size_t len = (size_t)MIN((uint64_t)(1 << 20), end - pos);
            r = write_all(fd, zeros, len, (off_t)pos);
            if (r < 0)
                return error_set(r, "cannot write zeros to the output: %s", strerror(-r));
            pos += len;
        }
        if (i < m->n)
            pos = MIN((m->ext[i].block + m->ext[i].count) * BLOCK_SIZE, m->volume_size);
    }
    return 0;
}

static int export_raw(struct store *s, const struct blockmap *m, int fd, bool device,
                      int nthreads, struct progress *bar)
{
    struct raw_job j = { .s = s, .m = m, .fd = fd, .bar = bar };
    pthread_t threads[64];
    int started = 0;
    char *msg = NULL;

    if (device) {
        off_t end = lseek(fd, 0, SEEK_END);
        if (end < 0)
            return error_set(errno, "cannot size the output device: %m");
        if ((uint64_t)end < m->volume_size)
            return error_set(ENOSPC, "the output device holds %llu bytes, the volume %llu",
                             (unsigned long long)end, (unsigned long long)m->volume_size);
        int r = zero_holes(m, fd);
        if (r < 0)
            return r;
    } else if (ftruncate(fd, (off_t)m->volume_size) < 0) {
        return error_set(errno, "cannot size the output: %m");
    }
    nthreads = MAX(1, MIN(nthreads, (int)ARRAY_SIZE(threads)));
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&threads[started], NULL, raw_worker, &j) == 0)
            started++;
    if (started == 0)
        return error_set(EAGAIN, "cannot start export threads");
    for (int i = 0; i < started; i++) {
        void *ret;
        pthread_join(threads[i], &ret);
        if (ret && !msg)
            msg = ret;
        else
            free(ret);
    }
    if (j.error) {
        error_set(j.error, "%s", msg ? msg : strerror(-j.error));
        free(msg);
        return j.error;
    }
    return 0;
}

static int export_qcow2(struct store *s, const struct blockmap *m, int fd, struct progress *bar)
{
    struct qcow2_writer *w = NULL;
    _cleanup_free_ uint8_t *cluster = NULL;
    uint32_t csize;
    uint64_t last = UINT64_MAX;
    int r;

    r = qcow2_writer_new(fd, m->volume_size, &w);
    if (r < 0)
        return r;
    csize = qcow2_writer_cluster_size(w);
    cluster = xmalloc(csize);
    /* Visit every cluster that some extent touches, in order. */
    for (size_t i = 0; i < m->n && r == 0; i++) {
        uint64_t es = m->ext[i].block * BLOCK_SIZE;
        uint64_t ee = MIN(es + (uint64_t)m->ext[i].count * BLOCK_SIZE, m->volume_size);
        for (uint64_t c = es / csize * csize; c < ee && r == 0; c += csize) {
            if (c == last)
                continue;
            size_t len = (size_t)MIN((uint64_t)csize, m->volume_size - c);
            memset(cluster, 0, csize);
            r = snapshot_read(s, m, cluster, len, c);
            if (r == 0)
                r = qcow2_writer_put(w, c, cluster);
            last = c;
            progress_add(bar, len);
        }
    }
    if (r == 0)
        r = qcow2_writer_finish(w);
    qcow2_writer_free(w);
    return r;
}

int snapshot_export(struct store *s, const struct blockmap *m, const char *path,
                    const struct export_options *opts)
{
    _cleanup_free_ char *tmp = NULL;
    _cleanup_close_ int fd = -1;
    struct progress *bar = NULL;
    struct stat st;
    bool special = stat(path, &st) == 0 && !S_ISREG(st.st_mode);
    int nthreads = opts->threads > 0 ? opts->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    int r;

    if (special) {
        /* A block device or similar: write in place. */
        fd = open(path, O_WRONLY | O_CLOEXEC);
    } else {
        unsigned rnd = 0;
        if (random_bytes(&rnd, sizeof(rnd)) < 0)
            rnd = (unsigned)now_ns();
        tmp = xasprintf("%s.kiln-tmp-%d-%08x", path, (int)getpid(), rnd);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    }
    if (fd < 0)
        return error_set(errno, "cannot create '%s': %m", tmp ? tmp : path);

    if (opts->progress)
        bar = progress_new("exporting", blockmap_data_bytes(m));
    if (opts->format == IMAGE_FORMAT_QCOW2)
        r = export_qcow2(s, m, fd, bar);
    else
        r = export_raw(s, m, fd, special, nthreads, bar);
    progress_free(bar);

    /* Like cp and qemu-img convert, raw output is left to the page cache;
     * the qcow2 writer fsyncs its own metadata. */
    if (tmp) {
        if (r == 0 && rename(tmp, path) < 0)
            r = error_set(errno, "cannot rename the export into '%s': %m", path);
        if (r < 0)
            unlink(tmp);
    }
    return r;
}
