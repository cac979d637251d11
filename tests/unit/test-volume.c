/* Copy-on-write volumes over a real chunk store in a temporary directory:
 * thousands of random writes, trims and zero-writes checked against a
 * reference buffer, a reopen, a grown volume, block status, counters,
 * threads writing disjoint (block-sharing) ranges at once, incremental
 * snapshots read back with snapshot_read() and the number of chunks they
 * store, snapshot views, and the errors bad requests and damaged files
 * get. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"
#include "volume/volume.h"
#include "tap.h"

#define MiB (1024 * 1024ULL)
#define DISK_SIZE (8 * MiB + 12288) /* not a multiple of 1 MiB */
#define VOL_SIZE (12 * MiB)         /* grown past the snapshot */

static char tmpdir[] = "/tmp/kiln-test-volume.XXXXXX";
static uint64_t rng_state = 88172645463325252ULL;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void fill(uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(rnd() >> 24);
}

/* A disk with random data, a hole, a run of repeated blocks and a
 * compressible stretch. */
static int make_disk(const char *path, uint8_t *data)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    fill(data, DISK_SIZE);
    memset(data + 2 * MiB, 0, 512 * 1024);
    for (size_t i = 0; i < 64; i++)
        memcpy(data + 4 * MiB + i * 4096, data + 6 * MiB, 4096);
    memset(data + 5 * MiB, 'k', 256 * 1024);
    if (fd < 0 || write(fd, data, DISK_SIZE) != (ssize_t)DISK_SIZE)
        return -1;
    return close(fd);
}

static int import(struct store *s, const char *path, struct blockmap **ret, struct digest *id)
{
    struct import_options io = {.format = IMAGE_FORMAT_RAW, .threads = 2};
    struct import_stats st;
    return snapshot_import(s, path, &io, id, ret, &st);
}

static int count_chunk(const struct store_object_info *info, void *userdata)
{
    (*(size_t *)userdata)++;
    return 0;
}

static size_t store_chunks(struct store *s)
{
    size_t n = 0;
    store_list(s, STORE_CHUNK, count_chunk, &n);
    return n;
}

static bool read_equals(struct volume *v, const uint8_t *ref, uint64_t size)
{
    uint8_t *buf = malloc(size);
    bool same = buf && volume_read(v, buf, size, 0) == 0 && memcmp(buf, ref, size) == 0;
    free(buf);
    return same;
}

static bool map_equals(struct store *s, const struct blockmap *m, const uint8_t *ref,
                       uint64_t size)
{
    uint8_t *buf = malloc(size);
    bool same = buf && m->volume_size == size && snapshot_read(s, m, buf, size, 0) == 0 &&
                memcmp(buf, ref, size) == 0;
    free(buf);
    return same;
}

/* Block status must never call a run zero that holds data. */
static bool status_consistent(struct volume *v, const uint8_t *ref, uint64_t size)
{
    for (uint64_t off = 0; off < size;) {
        bool alloc, zero;
        uint64_t run;
        if (volume_block_status(v, off, size - off, &alloc, &zero, &run) < 0 || run == 0 ||
            run > size - off)
            return false;
        if (zero && !buf_is_zero(ref + off, run))
            return false;
        off += run;
    }
    return true;
}

/* One random operation on the volume and the reference. */
static int random_op(struct volume *v, uint8_t *ref, uint64_t size, uint8_t *scratch)
{
    uint64_t kind = rnd() % 10;
    uint64_t len = 1 + rnd() % (kind < 8 ? 65536 : 3 * 65536);
    uint64_t off = rnd() % (size - len);
    if (rnd() % 2)
        off &= ~4095ULL; /* aligned half the time */
    if (kind < 6) {
        fill(scratch, len);
        memcpy(ref + off, scratch, len);
        return volume_write(v, scratch, len, off, rnd() % 50 == 0);
    }
    memset(ref + off, 0, len);
    if (kind < 8)
        return volume_zero(v, len, off, false);
    return volume_trim(v, len, off, false);
}

struct progress_log {
    uint64_t calls, last_done, last_total;
    bool monotone;
};

static int on_progress(void *userdata, uint64_t done, uint64_t total)
{
    struct progress_log *p = userdata;
    if (done < p->last_done || done > total)
        p->monotone = false;
    p->calls++;
    p->last_done = done;
    p->last_total = total;
    return 0;
}

static int stop_progress(void *userdata, uint64_t done, uint64_t total)
{
    return -ECANCELED;
}

struct reader {
    struct volume *v;
    const uint8_t *ref;
    uint64_t size;
    int error;
};

/* Read the whole volume in 100 KiB steps (crossing chunk edges) and
 * compare. */
static void *reader_main(void *arg)
{
    struct reader *rd = arg;
    uint8_t *buf = malloc(102400);
    for (uint64_t off = 0; off < rd->size && rd->error == 0; off += 102400) {
        uint64_t len = rd->size - off < 102400 ? rd->size - off : 102400;
        if (volume_read(rd->v, buf, len, off) < 0 || memcmp(buf, rd->ref + off, len) != 0)
            rd->error = -EBADMSG;
    }
    free(buf);
    return NULL;
}

struct writer {
    struct volume *v;
    uint8_t *ref;
    uint64_t from, to; /* byte range this thread owns */
    uint64_t seed;
    int error;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    uint8_t buf[20000];
    uint64_t s = w->seed;

    for (int i = 0; i < 400 && w->error == 0; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        uint64_t len = 1 + s % sizeof(buf);
        uint64_t span = w->to - w->from;
        if (len > span)
            len = span;
        uint64_t off = w->from + (s >> 20) % (span - len + 1);
        for (uint64_t j = 0; j < len; j++)
            buf[j] = (uint8_t)(s >> (j % 56)) ^ (uint8_t)j;
        memcpy(w->ref + off, buf, len);
        if (i % 7 == 3) {
            memset(w->ref + off, 0, len);
            w->error = volume_zero(w->v, len, off, false);
        } else {
            w->error = volume_write(w->v, buf, len, off, false);
        }
        if (i % 50 == 0 && w->error == 0)
            w->error = volume_flush(w->v);
    }
    return NULL;
}

int main(void)
{
    struct store *s = NULL;
    struct blockmap *base = NULL, *snap = NULL, *snap2 = NULL;
    struct digest base_id, snap_id, snap2_id;
    struct volume *v = NULL, *v2 = NULL;
    struct volume_stats st;
    struct volume_snapshot_stats ss;
    char path[600], vdir[512], cmd[700];
    uint8_t *disk = malloc(DISK_SIZE), *ref = calloc(1, 16 * MiB);
    uint8_t *scratch = malloc(4 * 65536), *buf = malloc(16 * MiB);
    int e;

    if (!mkdtemp(tmpdir) || !disk || !ref || !scratch || !buf) {
        perror("setup");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/store", tmpdir);
    is_int(store_open(path, NULL, &s), 0, "opened a store");
    snprintf(path, sizeof(path), "%s/disk.raw", tmpdir);
    ok(make_disk(path, disk) == 0, "wrote a test disk");
    is_int(import(s, path, &base, &base_id), 0, "imported it");
    memcpy(ref, disk, DISK_SIZE);

    /* ---- a volume grown past its snapshot ---- */
    snprintf(vdir, sizeof(vdir), "%s/vol-1", tmpdir);
    struct blockmap *copy = NULL;
    blockmap_load(s, &base_id, &copy);
    e = volume_open(s, vdir, copy, &base_id, VOL_SIZE, VOLUME_OPEN_CREATE, &v);
    is_int(e, 0, "opened a new volume of 12 MiB over an 8 MiB snapshot");
    is_int(volume_size(v), VOL_SIZE, "its size");
    ok(read_equals(v, ref, VOL_SIZE), "it reads as the snapshot, then zeros past it");
    volume_stats(v, &st);
    ok(st.chunks_fetched > 0 && st.bytes_fetched == blockmap_data_bytes(base),
       "every chunk was fetched once (%llu bytes)", (unsigned long long)st.bytes_fetched);
    uint64_t fetched = st.bytes_fetched;
    ok(read_equals(v, ref, VOL_SIZE), "reads again");
    volume_stats(v, &st);
    is_int(st.bytes_fetched, fetched, "the second read fetched nothing");
    ok(st.cache_hits >= blockmap_data_bytes(base) / 4096, "and was served by the cache (%llu)",
       (unsigned long long)st.cache_hits);
    ok(status_consistent(v, ref, VOL_SIZE), "block status agrees with the contents");

    /* ---- errors that lose nothing ---- */
    is_int(volume_read(v, buf, 4096, VOL_SIZE - 100), -EINVAL, "a read past the end: EINVAL");
    is_int(volume_write(v, buf, 1, VOL_SIZE, false), -EINVAL, "a write past the end: EINVAL");
    is_int(volume_zero(v, 2, UINT64_MAX, false), -EINVAL, "an offset that wraps: EINVAL");
    e = volume_open(s, vdir, NULL, NULL, VOL_SIZE, 0, &v2);
    is_int(e, -EBUSY, "a second writable open: EBUSY");
    ok(error_message() && strstr(error_message(), "in use"), "says it is in use");

    /* ---- random writes, trims and zero-writes ---- */
    for (int i = 0; i < 3000; i++) {
        e = random_op(v, ref, VOL_SIZE, scratch);
        if (e < 0)
            break;
        if (i % 500 == 0 && volume_flush(v) < 0)
            e = -EIO;
        if (i % 97 == 0) {
            uint64_t len = 1 + rnd() % 300000, off = rnd() % (VOL_SIZE - len);
            if (volume_read(v, buf, len, off) < 0 || memcmp(buf, ref + off, len) != 0)
                e = -EBADMSG;
        }
        if (e < 0)
            break;
    }
    is_int(e, 0, "3000 random writes, trims and zero-writes, with reads in between");
    ok(read_equals(v, ref, VOL_SIZE), "the volume equals the reference");
    ok(status_consistent(v, ref, VOL_SIZE), "block status agrees with the contents");
    volume_stats(v, &st);
    ok(st.blocks_written > 0 && st.blocks_zeroed > 0 && st.flushes > 0,
       "counters: %llu blocks written, %llu zeroed, %llu flushes",
       (unsigned long long)st.blocks_written, (unsigned long long)st.blocks_zeroed,
       (unsigned long long)st.flushes);
    is_int(volume_close(v), 0, "closed");
    v = NULL;

    blockmap_load(s, &base_id, &copy);
    is_int(volume_open(s, vdir, copy, &base_id, VOL_SIZE, 0, &v), 0, "reopened");
    ok(read_equals(v, ref, VOL_SIZE), "it reads back the same");
    volume_stats(v, &st);
    is_int(st.chunks_fetched, 0, "from the saved cache: nothing fetched");

    /* ---- an incremental snapshot ---- */
    struct blockmap *none = NULL;
    struct digest none_id;
    is_int(volume_snapshot_progress(v, stop_progress, NULL, &none_id, &none, &ss), -ECANCELED,
           "a progress callback's error stops a snapshot");
    ok(none == NULL, "and returns no map");
    size_t before = store_chunks(s);
    struct progress_log pl = {.monotone = true};
    e = volume_snapshot_progress(v, on_progress, &pl, &snap_id, &snap, &ss);
    is_int(e, 0, "snapshot of the volume");
    ok(pl.calls > 1 && pl.monotone && pl.last_done == ss.blocks_dirty &&
           pl.last_total == ss.blocks_dirty,
       "progress was reported %llu times, up to %llu of %llu blocks",
       (unsigned long long)pl.calls, (unsigned long long)pl.last_done,
       (unsigned long long)ss.blocks_dirty);
    ok(snap && map_equals(s, snap, ref, VOL_SIZE), "snapshot_read() of it equals the reference");
    ok(digest_equal(&snap->parent, &base_id), "its parent is the base");
    is_int(store_chunks(s) - before, ss.chunks_new, "it stored %llu new chunks",
           (unsigned long long)ss.chunks_new);
    is_int(volume_close(v), 0, "closed");
    v = NULL;

    /* A volume over that snapshot: one block changed stores few chunks. */
    snprintf(vdir, sizeof(vdir), "%s/vol-2", tmpdir);
    blockmap_load(s, &snap_id, &copy);
    e = volume_open(s, vdir, copy, &snap_id, 16 * MiB, VOLUME_OPEN_CREATE, &v);
    is_int(e, 0, "a 16 MiB volume over the snapshot");
    memset(scratch, 0x5a, 4096);
    volume_write(v, scratch, 100, 3 * MiB + 4096 * 3 + 7, false);
    memcpy(ref + 3 * MiB + 4096 * 3 + 7, scratch, 100);
    before = store_chunks(s);
    e = volume_snapshot(v, &snap2_id, &snap2, &ss);
    is_int(e, 0, "snapshot after a 100-byte write");
    is_int(ss.blocks_dirty, 1, "one dirty block");
    ok(ss.chunks_new >= 1 && ss.chunks_new <= 3, "1 to 3 new chunks (%llu)",
       (unsigned long long)ss.chunks_new);
    is_int(store_chunks(s) - before, ss.chunks_new, "the store grew by exactly those");
    ok(ss.bytes_read <= 2 * 1024 * 1024 + 4096, "read only the split chunk (%llu bytes)",
       (unsigned long long)ss.bytes_read);
    ok(ss.chunks_shared + 3 >= snap->n, "shared the other extents (%llu of %zu)",
       (unsigned long long)ss.chunks_shared, snap->n);
    ok(map_equals(s, snap2, ref, 16 * MiB), "it reads back");
    blockmap_free(snap2);
    snap2 = NULL;
    is_int(volume_close(v), 0, "closed");
    v = NULL;

    /* ---- threads writing disjoint ranges that share blocks ---- */
    snprintf(vdir, sizeof(vdir), "%s/vol-3", tmpdir);
    blockmap_load(s, &base_id, &copy);
    is_int(volume_open(s, vdir, copy, &base_id, VOL_SIZE, VOLUME_OPEN_CREATE, &v), 0,
           "a third volume");
    memset(ref, 0, VOL_SIZE);
    memcpy(ref, disk, DISK_SIZE);
    struct writer w[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        /* Boundaries in the middle of blocks: neighbours share a block. */
        w[i] = (struct writer){.v = v, .ref = ref, .from = i * 3 * MiB + (i ? 1000 : 0),
                               .to = (i + 1) * 3 * MiB + (i < 3 ? 1000 : 0),
                               .seed = 1234567ULL * (i + 1)};
        pthread_create(&th[i], NULL, writer_main, &w[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    ok(w[0].error == 0 && w[1].error == 0 && w[2].error == 0 && w[3].error == 0,
       "4 threads wrote 1600 requests");
    ok(read_equals(v, ref, VOL_SIZE), "every thread's bytes are there");
    is_int(volume_close(v), 0, "closed");
    blockmap_load(s, &base_id, &copy);
    is_int(volume_open(s, vdir, copy, &base_id, VOL_SIZE, VOLUME_OPEN_READ_ONLY, &v), 0,
           "reopened read-only");
    ok(read_equals(v, ref, VOL_SIZE), "it reads back the same");
    is_int(volume_write(v, buf, 1, 0, false), -EROFS, "a write: EROFS");
    is_int(volume_close(v), 0, "closed");
    v = NULL;

    /* ---- a blank volume ---- */
    snprintf(vdir, sizeof(vdir), "%s/vol-4", tmpdir);
    is_int(volume_open(s, vdir, NULL, NULL, 4 * MiB, VOLUME_OPEN_CREATE, &v), 0,
           "a blank volume");
    memset(ref, 0, 4 * MiB);
    ok(read_equals(v, ref, 4 * MiB), "reads zeros");
    bool alloc, zero;
    uint64_t run;
    volume_block_status(v, 0, 4 * MiB, &alloc, &zero, &run);
    ok(!alloc && zero && run == 4 * MiB, "one unallocated zero run");
    fill(scratch, 8192);
    volume_write(v, scratch, 8192, 65536, true);
    memcpy(ref + 65536, scratch, 8192);
    volume_block_status(v, 65536, 4 * MiB - 65536, &alloc, &zero, &run);
    ok(alloc && !zero && run == 8192, "the written blocks are allocated");
    e = volume_snapshot(v, &snap2_id, &snap2, &ss);
    ok(e == 0 && snap2->n >= 1 && map_equals(s, snap2, ref, 4 * MiB),
       "its snapshot holds only what was written");
    blockmap_free(snap2);
    snap2 = NULL;
    is_int(volume_close(v), 0, "closed");
    v = NULL;
    struct stat bst;
    snprintf(path, sizeof(path), "%s/bitmap", vdir);
    ok(stat(path, &bst) == 0 && bst.st_size == 96 + 24,
       "its bitmap is sparse: one record for the one word written (%lld bytes)",
       (long long)bst.st_size);
    is_int(volume_open(s, vdir, NULL, NULL, 3 * MiB, 0, &v), -EINVAL,
           "opening it smaller than its bitmap: EINVAL");
    is_int(volume_open(s, vdir, NULL, NULL, 5000, 0, &v), -EINVAL,
           "a size that is not whole blocks: EINVAL");

    /* A damaged bitmap is refused, not read as empty. */
    snprintf(path, sizeof(path), "%s/bitmap", vdir);
    int fd = open(path, O_WRONLY);
    ok(fd >= 0 && pwrite(fd, "\xff", 1, 100) == 1 && close(fd) == 0, "damaged the bitmap");
    is_int(volume_open(s, vdir, NULL, NULL, 4 * MiB, 0, &v), -EBADMSG,
           "a corrupt bitmap: EBADMSG");

    /* ---- cold reads from four threads at once: each chunk fetched once ---- */
    blockmap_load(s, &base_id, &copy);
    is_int(volume_open_snapshot(s, tmpdir, copy, &base_id, &v), 0, "a cold view");
    struct reader rd[4];
    pthread_t rth[4];
    for (int i = 0; i < 4; i++) {
        rd[i] = (struct reader){.v = v, .ref = disk, .size = DISK_SIZE};
        pthread_create(&rth[i], NULL, reader_main, &rd[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(rth[i], NULL);
    ok(!rd[0].error && !rd[1].error && !rd[2].error && !rd[3].error,
       "4 threads read the whole disk at once, correctly");
    volume_stats(v, &st);
    ok(st.chunks_fetched == base->n && st.bytes_fetched == blockmap_data_bytes(base),
       "every chunk was fetched exactly once (%llu of %zu)",
       (unsigned long long)st.chunks_fetched, base->n);
    volume_close(v);
    v = NULL;

    /* ---- a snapshot view ---- */
    blockmap_load(s, &base_id, &copy);
    is_int(volume_open_snapshot(s, tmpdir, copy, &base_id, &v), 0, "a view of the snapshot");
    is_int(volume_size(v), DISK_SIZE, "exactly the snapshot's size");
    ok(read_equals(v, disk, DISK_SIZE), "reads the disk");
    ok(status_consistent(v, disk, DISK_SIZE), "block status agrees");
    is_int(volume_write(v, buf, 1, 0, false), -EROFS, "a write: EROFS");
    is_int(volume_cache(v, DISK_SIZE, 0), 0, "prefetch");
    volume_stats(v, &st);
    is_int(st.bytes_fetched, blockmap_data_bytes(base), "each chunk fetched once");
    volume_close(v);
    v = NULL;

    /* A damaged chunk is an error, never data. */
    blockmap_load(s, &base_id, &copy);
    char hex[DIGEST_HEX_SIZE];
    digest_to_hex(&base->ext[0].id, hex);
    snprintf(cmd, sizeof(cmd), "f=$(find %s/store -name '%s*' | head -1); "
             "printf 'XXXX' | dd of=\"$f\" bs=1 seek=40 conv=notrunc 2>/dev/null",
             tmpdir, hex);
    ok(system(cmd) == 0, "damaged the first chunk");
    is_int(volume_open_snapshot(s, tmpdir, copy, &base_id, &v), 0, "a view again");
    e = volume_read(v, buf, 4096, base->ext[0].block * 4096);
    is_int(e, -EBADMSG, "reading the damaged chunk: EBADMSG");
    volume_close(v);

    blockmap_free(base);
    blockmap_free(snap);
    store_free(s);
    free(disk);
    free(ref);
    free(scratch);
    free(buf);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        return 1;
    return done_testing();
}
