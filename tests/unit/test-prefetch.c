/* Boot profiles and prefetch (src/volume/profile.c) over a real chunk store
 * in a temporary directory, with every chunk fetch slowed by
 * KILN_FETCH_DELAY_US: a profile's encode/parse and save/load round trip,
 * corrupt, truncated and foreign profiles refused (and ignored by
 * volume_boot_start(), which records instead), a recording that keeps the
 * first-touch order, and prefetch with concurrent readers: the right bytes,
 * each chunk fetched once, hits counted. */
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
#define DISK_SIZE (8 * MiB)

static char tmpdir[] = "/tmp/kiln-test-prefetch.XXXXXX";
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Random data with a hole in the middle. */
static int make_disk(const char *path, uint8_t *data)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    for (size_t i = 0; i < DISK_SIZE; i++)
        data[i] = (uint8_t)(rnd() >> 24);
    memset(data + 3 * MiB, 0, MiB);
    if (fd < 0 || write(fd, data, DISK_SIZE) != (ssize_t)DISK_SIZE)
        return -1;
    return close(fd);
}

static int open_volume(struct store *s, const struct digest *id, const char *name,
                       struct volume **ret)
{
    char dir[600];
    struct blockmap *m = NULL;
    int e = blockmap_load(s, id, &m);
    if (e < 0)
        return e;
    snprintf(dir, sizeof(dir), "%s/%s", tmpdir, name);
    return volume_open(s, dir, m, id, DISK_SIZE, VOLUME_OPEN_CREATE, ret);
}

static int write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, data, len) != (ssize_t)len)
        return -1;
    return close(fd);
}

struct reader {
    struct volume *v;
    const uint8_t *ref;
    uint64_t seed;
    bool ok;
};

/* Read the whole disk in 64 KiB pieces in a shuffled order, comparing. */
static void *reader_main(void *arg)
{
    struct reader *rd = arg;
    size_t n = DISK_SIZE / 65536;
    size_t *order = malloc(n * sizeof(*order));
    uint8_t *buf = malloc(65536);
    uint64_t st = rd->seed;

    rd->ok = order && buf;
    for (size_t i = 0; rd->ok && i < n; i++)
        order[i] = i;
    for (size_t i = n - 1; rd->ok && i > 0; i--) {
        st ^= st << 13;
        st ^= st >> 7;
        st ^= st << 17;
        size_t j = st % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (size_t i = 0; rd->ok && i < n; i++) {
        uint64_t off = order[i] * 65536;
        if (volume_read(rd->v, buf, 65536, off) != 0 || memcmp(buf, rd->ref + off, 65536) != 0)
            rd->ok = false;
    }
    free(order);
    free(buf);
    return NULL;
}

int main(void)
{
    struct store *s = NULL;
    struct blockmap *base = NULL;
    struct digest base_id, other_id;
    struct volume *v = NULL;
    struct volume_profile *p = NULL, *q = NULL;
    struct volume_stats st;
    char path[700], prof[600];
    uint8_t *disk = malloc(DISK_SIZE), *buf = malloc(DISK_SIZE);
    uint8_t *enc = NULL;
    size_t enc_len;
    int e;

    /* Before the first volume opens: read once per process. */
    setenv("KILN_FETCH_DELAY_US", "300", 1);
    if (!mkdtemp(tmpdir) || !disk || !buf) {
        perror("setup");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/store", tmpdir);
    is_int(store_open(path, NULL, &s), 0, "opened a store");
    snprintf(path, sizeof(path), "%s/disk.raw", tmpdir);
    ok(make_disk(path, disk) == 0, "wrote a test disk");
    struct import_options io = { .format = IMAGE_FORMAT_RAW, .threads = 2 };
    struct import_stats is;
    is_int(snapshot_import(s, path, &io, &base_id, &base, &is), 0, "imported it");
    size_t nchunks = base->n;
    ok(nchunks > 20, "its map has %zu chunks", nchunks);
    memset(&other_id, 0x5a, sizeof(other_id));
    snprintf(prof, sizeof(prof), "%s/profiles/snap-0123456789abcdef0.profile", tmpdir);

    /* ---- the file ---- */
    char *pp = volume_profile_path("/d/regions/r", "snap-1");
    is_str(pp, "/d/regions/r/profiles/snap-1.profile", "the profile path of a snapshot");
    free(pp);
    p = calloc(1, sizeof(*p));
    p->base_id = base_id;
    p->n = 3;
    p->blocks = calloc(3, sizeof(uint64_t));
    p->blocks[0] = base->ext[5].block;
    p->blocks[1] = base->ext[0].block;
    p->blocks[2] = base->ext[2].block;
    volume_profile_encode(p, &enc, &enc_len);
    is_int(enc_len, 96 + 3 * 8, "encoded: a 96-byte header and 8 bytes per chunk");
    is_int(volume_profile_parse(enc, enc_len, &q), 0, "parses");
    ok(q && q->n == 3 && memcmp(q->blocks, p->blocks, 24) == 0 &&
           memcmp(&q->base_id, &base_id, sizeof(base_id)) == 0,
       "round trip: the same base and chunks in the same order");
    volume_profile_free(q);
    q = NULL;
    is_int(volume_profile_parse(enc, enc_len - 1, &q), -EBADMSG, "truncated: EBADMSG");
    enc[96 + 9] ^= 1;
    is_int(volume_profile_parse(enc, enc_len, &q), -EBADMSG, "a flipped bit: EBADMSG");
    ok(strstr(error_message(), "digest mismatch") != NULL, "says digest mismatch");
    enc[96 + 9] ^= 1;
    enc[8] = 2;
    is_int(volume_profile_parse(enc, enc_len, &q), -EBADMSG, "another version: EBADMSG");
    enc[8] = 1;
    is_int(volume_profile_parse("KILNVBM\0", 8, &q), -EBADMSG, "not a profile: EBADMSG");
    p->blocks[2] = p->blocks[0];
    free(enc);
    volume_profile_encode(p, &enc, &enc_len);
    is_int(volume_profile_parse(enc, enc_len, &q), -EBADMSG, "a chunk named twice: EBADMSG");
    p->blocks[2] = base->ext[2].block;
    free(enc);
    enc = NULL;

    is_int(volume_profile_load(prof, &base_id, &q), -ENOENT, "a missing profile: ENOENT");
    is_int(volume_profile_save(p, prof), 0, "saved (creating its directory)");
    snprintf(path, sizeof(path), "%s.tmp", prof);
    ok(access(path, F_OK) != 0, "no temporary file is left");
    is_int(volume_profile_load(prof, &base_id, &q), 0, "loads");
    ok(q && q->n == 3 && memcmp(q->blocks, p->blocks, 24) == 0, "save/load round trip");
    volume_profile_free(q);
    q = NULL;
    is_int(volume_profile_load(prof, &other_id, &q), -EBADMSG, "foreign (another base): EBADMSG");
    ok(strstr(error_message(), "another snapshot") != NULL, "says so: %s", error_message());

    /* ---- a corrupt profile is ignored: the boot records a new one ---- */
    ok(write_file(prof, "KILNBPF\0garbage", 15) == 0, "damaged the profile");
    is_int(open_volume(s, &base_id, "vol-rec", &v), 0, "opened a volume");
    is_int(volume_boot_start(v, prof, NULL), 0, "boot with a corrupt profile: recording");
    is_int(volume_prefetch_start(v, p, 2), -EINVAL, "no prefetch while recording");
    /* Read in a known order: chunks 7, 3, 7 again, then 0; a write
     * touching chunk 1 partially reads it too. */
    const struct blockmap_extent *x = base->ext;
    size_t want[] = { 7, 3, 0, 1 };
    e = volume_read(v, buf, 4096, x[7].block * 4096);
    e = e ?: volume_read(v, buf, 4096, x[3].block * 4096);
    e = e ?: volume_read(v, buf, 4096, (x[7].block + x[7].count - 1) * 4096);
    e = e ?: volume_read(v, buf, 100, x[0].block * 4096);
    e = e ?: volume_write(v, "kiln", 4, x[1].block * 4096 + 10, false);
    is_int(e, 0, "read and wrote");
    is_int(volume_boot_finish(v), 1, "finished: the profile is saved");
    is_int(volume_boot_finish(v), 0, "a second finish saves nothing");
    volume_stats(v, &st);
    is_int(st.prefetch_chunks, 0, "nothing was prefetched");
    is_int(volume_close(v), 0, "closed");
    v = NULL;
    is_int(volume_profile_load(prof, &base_id, &q), 0, "the recorded profile loads");
    bool same = q && q->n == 4;
    for (size_t i = 0; same && i < 4; i++)
        same = q->blocks[i] == x[want[i]].block;
    ok(same, "it lists the chunks in first-touch order, each once (%zu)", q ? q->n : 0);
    for (size_t i = 0; !same && q && i < q->n; i++)
        fprintf(stderr, "# entry %zu: block %llu\n", i, (unsigned long long)q->blocks[i]);
    for (size_t i = 0; !same && i < 9; i++)
        fprintf(stderr, "# chunk %zu: %llu+%u\n", i, (unsigned long long)x[i].block,
                (unsigned)x[i].count);
    volume_profile_free(q);
    q = NULL;

    /* A foreign profile (recorded over another map) is ignored too. */
    p->base_id = other_id;
    is_int(volume_profile_save(p, prof), 0, "wrote a profile of another snapshot");
    p->base_id = base_id;
    is_int(open_volume(s, &base_id, "vol-foreign", &v), 0, "opened a volume");
    is_int(volume_boot_start(v, prof, NULL), 0, "boot with a foreign profile: recording");
    is_int(volume_prefetch_start(v, p, 2), -EINVAL, "prefetch refused while recording");
    is_int(volume_close(v), 0, "closed without reading: the profile is left as it was");
    v = NULL;
    is_int(volume_profile_load(prof, &other_id, &q), 0, "(still the foreign one)");
    volume_profile_free(q);
    q = NULL;

    /* ---- record a whole read, then prefetch it with readers racing ---- */
    unlink(prof);
    is_int(open_volume(s, &base_id, "vol-first", &v), 0, "opened a first volume");
    is_int(volume_boot_start(v, prof, NULL), 0, "no profile yet: recording");
    is_int(volume_read(v, buf, DISK_SIZE, 0), 0, "read it all");
    ok(memcmp(buf, disk, DISK_SIZE) == 0, "the right bytes");
    is_int(volume_close(v), 0, "closed: saves the profile");
    v = NULL;
    is_int(volume_profile_load(prof, &base_id, &q), 0, "the profile loads");
    is_int(q ? q->n : 0, nchunks, "it names every chunk of the base");
    volume_profile_free(q);
    q = NULL;

    for (int round = 0; round < 3; round++) {
        char name[32];
        snprintf(name, sizeof(name), "vol-pf-%d", round);
        is_int(open_volume(s, &base_id, name, &v), 0, "round %d: a new volume", round);
        is_int(volume_boot_start(v, prof, &(struct volume_boot_options){ .threads = 3 }), 1,
               "the profile is there: prefetching");
        pthread_t th[2];
        struct reader rd[2] = { { v, disk, 11 + round, false }, { v, disk, 97 + round, false } };
        for (int t = 0; t < 2; t++)
            pthread_create(&th[t], NULL, reader_main, &rd[t]);
        for (int t = 0; t < 2; t++)
            pthread_join(th[t], NULL);
        ok(rd[0].ok && rd[1].ok, "two readers racing the prefetch read the right bytes");
        is_int(volume_prefetch_wait(v), 0, "the prefetch finished");
        volume_stats(v, &st);
        is_int(st.chunks_fetched, nchunks, "each chunk was fetched once (%zu)", nchunks);
        is_int(st.bytes_fetched, blockmap_data_bytes(base), "bytes fetched: the base's data");
        is_int(st.prefetch_hits + (st.chunks_fetched - st.prefetch_chunks), nchunks,
               "each chunk the readers needed was a prefetch hit (%llu) or their own fetch",
               (unsigned long long)st.prefetch_hits);
        is_int(volume_close(v), 0, "closed");
        v = NULL;
    }

    /* Prefetch first, read after: every chunk is a hit. */
    is_int(open_volume(s, &base_id, "vol-warm", &v), 0, "a volume to prefetch fully");
    is_int(volume_write(v, disk + x[4].block * 4096, 4096, x[4].block * 4096, false), 0, "wrote a block first");
    is_int(volume_boot_start(v, prof, NULL), 1, "prefetching");
    is_int(volume_prefetch_wait(v), 0, "waited for it");
    is_int(volume_read(v, buf, DISK_SIZE, 0), 0, "then read it all");
    ok(memcmp(buf, disk, DISK_SIZE) == 0, "the right bytes");
    volume_stats(v, &st);
    is_int(st.prefetch_chunks, nchunks, "the prefetcher fetched every chunk");
    is_int(st.chunks_fetched, nchunks, "and the reads none");
    is_int(st.prefetch_hits, nchunks, "every chunk was a prefetch hit");
    is_int(st.prefetch_errors, 0, "no prefetch errors");
    is_int(volume_close(v), 0, "closed");
    v = NULL;

    /* Entries that are not chunk starts are skipped. */
    p->blocks[1] = x[1].block + 1;
    is_int(open_volume(s, &base_id, "vol-skip", &v), 0, "a volume");
    is_int(volume_prefetch_start(v, p, 1), 0, "prefetch a profile with a bad entry");
    is_int(volume_prefetch_start(v, p, 1), -EINVAL, "a second prefetch: EINVAL");
    is_int(volume_prefetch_wait(v), 0, "done");
    volume_stats(v, &st);
    is_int(st.prefetch_chunks, 2, "the two good entries were prefetched");
    is_int(volume_close(v), 0, "closed");
    v = NULL;

    /* A blank volume has nothing to record or prefetch. */
    snprintf(path, sizeof(path), "%s/vol-blank", tmpdir);
    is_int(volume_open(s, path, NULL, NULL, MiB, VOLUME_OPEN_CREATE, &v), 0, "a blank volume");
    is_int(volume_boot_start(v, prof, NULL), 0, "boot start: nothing to do");
    is_int(volume_record_start(v, 0), -EINVAL, "recording a blank volume: EINVAL");
    is_int(volume_close(v), 0, "closed");

    volume_profile_free(p);
    blockmap_free(base);
    store_free(s);
    snprintf(path, sizeof(path), "rm -rf '%s'", tmpdir);
    if (system(path) != 0)
        fprintf(stderr, "cannot remove %s\n", tmpdir);
    free(disk);
    free(buf);
    return done_testing();
}
