/* Unit tests for the chunk store: put/get/has, dedup, verification on read
 * (-EBADMSG for a flipped byte, a truncated or empty file), the encoded
 * header, maps, listing, removal, temporaries and intent-file recovery. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "store/store.h"
#include "tap.h"

static char root[256];

static char *chunk_path(const struct digest *id)
{
    char hex[DIGEST_HEX_SIZE];

    digest_to_hex(id, hex);
    return xasprintf("%s/chunks/%.2s/%s", root, hex, hex);
}

static int count_intents(void)
{
    char *dir = xasprintf("%s/tmp", root);
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;

    while (d && (de = readdir(d)))
        n += strncmp(de->d_name, "intent-", 7) == 0;
    if (d)
        closedir(d);
    free(dir);
    return n;
}

static int count_fn(const struct store_object_info *info, void *ud)
{
    (*(int *)ud)++;
    return 0;
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)((i / 7 + seed * 31) ^ (i >> 9));
}

int main(void)
{
    struct store *s;
    static uint8_t data[65536], out[65536];
    struct digest id, id2;
    size_t stored = 0;
    int n;

    snprintf(root, sizeof(root), "/tmp/kiln-test-store.%d", (int)getpid());
    is_int(store_open(root, NULL, &s), 0, "open creates the store");

    fill(data, sizeof(data), 1);
    sha256(data, sizeof(data), &id);
    is_int(store_chunk_put(s, &id, data, sizeof(data), &stored), 1, "first put writes");
    ok(stored > 16 && stored < sizeof(data), "chunk is compressed (%zu bytes)", stored);
    is_int(store_chunk_put(s, &id, data, sizeof(data), NULL), 0, "second put is a no-op");
    is_int(store_has(s, STORE_CHUNK, &id), 1, "has");
    is_int(store_chunk_get(s, &id, out, sizeof(out)), sizeof(data), "get returns the length");
    ok(memcmp(data, out, sizeof(data)) == 0, "get returns the data");
    is_int(store_chunk_get(s, &id, out, 100), -EFBIG, "small buffer is -EFBIG");

    uint32_t plain;
    uint64_t enc;
    ok(store_stat(s, STORE_CHUNK, &id, &plain, &enc) == 0 && plain == sizeof(data) &&
           enc == stored,
       "stat reads the header");

    /* Incompressible data is stored as is. */
    for (size_t i = 0; i < 4096; i++)
        data[i] = (uint8_t)(rand() >> 7);
    sha256(data, 4096, &id2);
    is_int(store_chunk_put(s, &id2, data, 4096, &stored), 1, "random chunk written");
    is_int(stored, 4096 + 16, "random chunk stored uncompressed");
    is_int(store_chunk_get(s, &id2, out, sizeof(out)), 4096, "random chunk reads back");
    ok(memcmp(data, out, 4096) == 0, "random chunk content");

    struct digest absent;
    sha256("nothing", 7, &absent);
    is_int(store_chunk_get(s, &absent, out, sizeof(out)), -ENOENT, "absent chunk is -ENOENT");
    is_int(store_has(s, STORE_CHUNK, &absent), 0, "absent chunk: has is 0");

    /* Damage: flip one byte of the payload. */
    char *p = chunk_path(&id2);
    int fd = open(p, O_RDWR);
    uint8_t byte;
    ok(pread(fd, &byte, 1, 100) == 1, "read a payload byte");
    byte ^= 0x40;
    ok(pwrite(fd, &byte, 1, 100) == 1, "flip it");
    close(fd);
    is_int(store_chunk_get(s, &id2, out, sizeof(out)), -EBADMSG, "flipped byte is -EBADMSG");
    /* Truncated, then empty. */
    ok(truncate(p, 50) == 0, "truncate to 50 bytes");
    is_int(store_chunk_get(s, &id2, out, sizeof(out)), -EBADMSG, "truncated is -EBADMSG");
    ok(truncate(p, 0) == 0, "truncate to 0 bytes");
    is_int(store_chunk_get(s, &id2, out, sizeof(out)), -EBADMSG, "empty is -EBADMSG");
    is_int(store_remove(s, STORE_CHUNK, &id2), 0, "remove the damaged chunk");
    /* Damage in the compressed chunk's header. */
    char *p1 = chunk_path(&id);
    fd = open(p1, O_RDWR);
    ok(pwrite(fd, "X", 1, 0) == 1, "break the magic");
    close(fd);
    is_int(store_chunk_get(s, &id, out, sizeof(out)), -EBADMSG, "bad magic is -EBADMSG");
    is_int(store_remove(s, STORE_CHUNK, &id), 0, "remove");
    is_int(store_remove(s, STORE_CHUNK, &id), -ENOENT, "remove twice is -ENOENT");
    fill(data, sizeof(data), 1);
    is_int(store_chunk_put(s, &id, data, sizeof(data), NULL), 1, "put after remove writes");
    free(p1);

    /* A chunk stored under a wrong id is never served. */
    struct digest wrong = id;
    wrong.b[0] ^= 1;
    is_int(store_chunk_put(s, &wrong, data, sizeof(data), NULL), 1, "put under a wrong id");
    is_int(store_chunk_get(s, &wrong, out, sizeof(out)), -EBADMSG,
           "reading it back is -EBADMSG");
    is_int(store_remove(s, STORE_CHUNK, &wrong), 0, "remove it");
    is_int(store_chunk_put(s, &id, data, 0, NULL), -EINVAL, "empty chunk refused");

    /* Maps. */
    struct digest mid;
    void *mbuf;
    size_t mlen;
    is_int(store_map_put(s, "hello map", 9, &mid), 1, "map put");
    ok(store_map_get(s, &mid, &mbuf, &mlen) == 0 && mlen == 9 && memcmp(mbuf, "hello map", 9) == 0,
       "map get");
    free(mbuf);

    /* A damaged map object that claims a huge plaintext: refused, not
     * allocated (a 24-byte file must not make fsck abort). */
    {
        struct digest fake;
        uint8_t obj[24] = { 'K', 'L', 'N', 'O', 1, 1, 1, 0 };
        uint32_t claimed = 1U << 30, payload = 8;
        memcpy(obj + 8, &claimed, 4);
        memcpy(obj + 12, &payload, 4);
        memcpy(obj + 16, "\x28\xb5\x2f\xfd\0\0\0\0", 8); /* a zstd magic, no content size */
        sha256("fake map", 8, &fake);
        char hex[DIGEST_HEX_SIZE];
        digest_to_hex(&fake, hex);
        char *dir = xasprintf("%s/maps/%.2s", root, hex);
        char *path = xasprintf("%s/%s", dir, hex);
        mkdir(dir, 0755);
        fd = open(path, O_WRONLY | O_CREAT, 0444);
        ok(fd >= 0 && write(fd, obj, sizeof(obj)) == (ssize_t)sizeof(obj), "write a lying map");
        close(fd);
        void *mb = NULL;
        size_t ml = 0;
        is_int(store_map_get(s, &fake, &mb, &ml), -EBADMSG, "a map lying about its size is -EBADMSG");
        ok(mb == NULL, "nothing returned");
        unlink(path);
        free(path);
        free(dir);
    }

    n = 0;
    store_list(s, STORE_CHUNK, count_fn, &n);
    is_int(n, 1, "one chunk listed");
    n = 0;
    store_list(s, STORE_MAP, count_fn, &n);
    is_int(n, 1, "one map listed");

    /* Locks: shared is compatible with shared, not with exclusive. */
    struct store *s2;
    store_open(root, NULL, &s2);
    is_int(store_lock(s, false, 0), 0, "shared lock");
    is_int(store_lock(s2, false, 0), 0, "second shared lock");
    store_unlock(s2);
    is_int(store_lock(s2, true, 50), -EBUSY, "exclusive lock waits for shared");
    store_unlock(s);
    is_int(store_lock(s2, true, 0), 0, "exclusive lock once released");
    store_unlock(s2);

    /* Recovery: a torn chunk under an intent file its writer no longer holds. */
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 13);
    struct digest torn;
    sha256(data, sizeof(data), &torn);
    is_int(store_chunk_put(s2, &torn, data, sizeof(data), NULL), 1, "unsynced put");
    store_free(s2); /* dies without store_sync: intent file stays */
    char *tp = chunk_path(&torn);
    ok(truncate(tp, 0) == 0, "tear it as a power cut can"); /* name durable, data not */
    is_int(store_recover(s), 1, "recovery removes the torn chunk");
    is_int(store_has(s, STORE_CHUNK, &torn), 0, "torn chunk is gone");
    is_int(store_has(s, STORE_CHUNK, &id), 1, "good chunk kept");
    is_int(store_recover(s), 0, "second recovery finds nothing");
    free(tp);

    /* Temporaries: old *.tmp files in tmp/ are swept. */
    char *tmpf = xasprintf("%s/tmp/123.4.tmp", root);
    fd = open(tmpf, O_WRONLY | O_CREAT, 0644);
    ok(write(fd, "partial", 7) == 7, "write a stale temporary");
    close(fd);
    uint64_t files, bytes;
    store_sweep_temporaries(s, 3600, false, &files, &bytes);
    is_int(files, 0, "young temporary kept");
    /* Age it for real: with a grace of 0 a file whose mtime the kernel's
     * clock put a second ahead of time(NULL) would be kept (seen in CI). */
    struct timespec aged[2] = { { time(NULL) - 7200, 0 }, { time(NULL) - 7200, 0 } };
    ok(utimensat(AT_FDCWD, tmpf, aged, 0) == 0, "age the temporary by two hours");
    store_sweep_temporaries(s, 3600, false, &files, &bytes);
    ok(files == 1 && bytes == 7, "old temporary swept");
    free(tmpf);

    /* A live writer's intent file survives another process's recovery. */
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 7 + 1);
    struct digest live;
    sha256(data, sizeof(data), &live);
    is_int(store_chunk_put(s, &live, data, sizeof(data), NULL), 1, "unsynced put by a live writer");
    is_int(count_intents(), 1, "its intent file exists");
    store_open(root, NULL, &s2);
    is_int(store_recover(s2), 0, "recovery finds nothing stale");
    is_int(count_intents(), 1, "the live writer's intent file is kept");
    store_free(s2);
    is_int(store_sync(s), 0, "sync");
    is_int(count_intents(), 0, "sync removes the intent file");

    /* The fallback without O_TMPFILE, with a stale temporary of an earlier
     * process lying around: a put still writes the object. */
    setenv("KILN_NO_TMPFILE", "1", 1);
    store_open(root, NULL, &s2);
    unsetenv("KILN_NO_TMPFILE");
    char *stale = xasprintf("%s/tmp/%d.0.00000000.tmp", root, (int)getpid());
    fd = open(stale, O_WRONLY | O_CREAT, 0644);
    close(fd);
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 11 + 3);
    struct digest fb;
    sha256(data, sizeof(data), &fb);
    is_int(store_chunk_put(s2, &fb, data, sizeof(data), NULL), 1, "fallback put writes");
    is_int(store_chunk_get(s2, &fb, out, sizeof(out)), sizeof(data), "fallback object reads back");
    is_int(store_chunk_put(s2, &fb, data, sizeof(data), NULL), 0, "fallback put: present");
    store_sync(s2);
    store_free(s2);
    unlink(stale);
    free(stale);

    store_free(s);
    store_free(NULL);
    free(p);

    char *cmd = xasprintf("rm -rf %s", root);
    ok(system(cmd) == 0, "clean up");
    free(cmd);
    return done_testing();
}
