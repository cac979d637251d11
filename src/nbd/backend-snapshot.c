/* A completed snapshot served read-only over NBD, lazily: nothing is
 * materialised.  A read walks the block map; holes are zeros; each extent's
 * chunk comes from a cache of decoded chunks, or is fetched from the store
 * (digest verified, decompressed) on a miss.
 *
 * The cache (design notes): entries are keyed by extent index (the map is
 * immutable for the backend's life) and hold one decoded chunk each; at
 * most `max_bytes` of chunk data are held, least recently used first out.
 * One mutex guards the table and the LRU list; an entry is reference
 * counted, so the copy out of it happens outside the lock and eviction
 * never frees an entry a reader still copies from.  Two threads missing on
 * the same chunk both fetch it; the second insert is dropped.  Concurrent
 * reads scale: the lock is held for a hash lookup and a list splice only.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "nbd/nbd.h"
#include "nbd/proto.h"
#include "snapshot/snapshot.h"

#define DEFAULT_CACHE_BYTES (64U << 20)

struct centry {
    size_t key;                 /* extent index */
    struct centry *hnext;       /* hash chain */
    struct centry *prev, *next; /* LRU list, most recent first */
    atomic_int ref;             /* the table's reference + readers' */
    uint32_t len;
    uint8_t data[];
};

struct snap_backend {
    struct store *store;
    struct blockmap *map;

    pthread_mutex_t lock;
    struct centry **buckets;
    size_t nbuckets; /* power of two */
    struct centry *head, *tail;
    size_t bytes, max_bytes;

    _Atomic uint64_t hits, misses, fetched;
};

static void centry_unref(struct centry *e)
{
    if (atomic_fetch_sub(&e->ref, 1) == 1)
        free(e);
}

static size_t bucket_of(const struct snap_backend *b, size_t key)
{
    return (key * 0x9e3779b97f4a7c15ULL >> 20) & (b->nbuckets - 1);
}

static void lru_unlink(struct snap_backend *b, struct centry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        b->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        b->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(struct snap_backend *b, struct centry *e)
{
    e->prev = NULL;
    e->next = b->head;
    if (b->head)
        b->head->prev = e;
    b->head = e;
    if (!b->tail)
        b->tail = e;
}

/* Drop the least recently used entries until `need` more bytes fit.
 * Called with the lock held. */
static void evict(struct snap_backend *b, size_t need)
{
    while (b->tail && b->bytes + need > b->max_bytes) {
        struct centry *e = b->tail;
        struct centry **p = &b->buckets[bucket_of(b, e->key)];
        while (*p != e)
            p = &(*p)->hnext;
        *p = e->hnext;
        lru_unlink(b, e);
        b->bytes -= e->len;
        centry_unref(e);
    }
}

/* The decoded chunk of extent i, referenced (centry_unref when done). */
static int chunk_get(struct snap_backend *b, size_t i, struct centry **ret)
{
    const struct blockmap_extent *x = &b->map->ext[i];
    size_t want = (size_t)x->count * BLOCK_SIZE;
    struct centry *e, *other;
    char hex[DIGEST_HEX_SIZE];
    ssize_t n;

    pthread_mutex_lock(&b->lock);
    for (e = b->buckets[bucket_of(b, i)]; e; e = e->hnext) {
        if (e->key == i) {
            atomic_fetch_add(&e->ref, 1);
            lru_unlink(b, e);
            lru_push(b, e);
            pthread_mutex_unlock(&b->lock);
            atomic_fetch_add(&b->hits, 1);
            *ret = e;
            return 0;
        }
    }
    pthread_mutex_unlock(&b->lock);

    atomic_fetch_add(&b->misses, 1);
    if (want > STORE_CHUNK_MAX)
        return error_set(EBADMSG, "extent at block %llu claims %u blocks, more than a chunk holds",
                         (unsigned long long)x->block, x->count);
    e = xmalloc(sizeof(*e) + want);
    n = store_chunk_get(b->store, &x->id, e->data, want);
    if ((n >= 0 && (size_t)n != want) || n == -EFBIG)
        n = -EBADMSG;
    if (n < 0) {
        free(e);
        digest_to_hex(&x->id, hex);
        if (n == -EBADMSG)
            return error_set(EBADMSG, "chunk '%s' at offset %llu is corrupt (digest mismatch)",
                             hex, (unsigned long long)x->block * BLOCK_SIZE);
        if (n == -ENOENT)
            return error_set(ENOENT, "chunk '%s' at offset %llu is missing from the store", hex,
                             (unsigned long long)x->block * BLOCK_SIZE);
        return error_set((int)n, "cannot read chunk '%s': %s", hex, strerror((int)-n));
    }
    atomic_fetch_add(&b->fetched, (uint64_t)want);
    e->key = i;
    e->len = (uint32_t)want;
    e->prev = e->next = e->hnext = NULL;
    atomic_init(&e->ref, 2); /* the table's and ours */

    pthread_mutex_lock(&b->lock);
    for (other = b->buckets[bucket_of(b, i)]; other; other = other->hnext)
        if (other->key == i)
            break;
    if (other || want > b->max_bytes) {
        /* Another thread won the race, or it can never fit: serve it
         * uncached. */
        pthread_mutex_unlock(&b->lock);
        atomic_store(&e->ref, 1);
        *ret = e;
        return 0;
    }
    evict(b, want);
    e->hnext = b->buckets[bucket_of(b, i)];
    b->buckets[bucket_of(b, i)] = e;
    lru_push(b, e);
    b->bytes += want;
    pthread_mutex_unlock(&b->lock);
    *ret = e;
    return 0;
}

static int snap_pread(void *h, void *buf, uint32_t count, uint64_t offset)
{
    struct snap_backend *b = h;
    const struct blockmap *m = b->map;
    uint8_t *out = buf;
    uint64_t pos = offset, end = offset + count;
    int r;

    for (size_t i = blockmap_seek(m, offset / BLOCK_SIZE); i < m->n && pos < end; i++) {
        const struct blockmap_extent *x = &m->ext[i];
        uint64_t es = x->block * BLOCK_SIZE, ee = es + (uint64_t)x->count * BLOCK_SIZE;
        struct centry *e;

        if (es >= end)
            break;
        if (es > pos) {
            memset(out + (pos - offset), 0, es - pos);
            pos = es;
        }
        r = chunk_get(b, i, &e);
        if (r < 0)
            return r;
        uint64_t to = MIN(ee, end);
        memcpy(out + (pos - offset), e->data + (pos - es), to - pos);
        centry_unref(e);
        pos = to;
    }
    if (pos < end)
        memset(out + (pos - offset), 0, end - pos);
    return 0;
}

static int snap_extents(void *h, uint32_t count, uint64_t offset, struct nbd_extent *ret,
                        size_t max)
{
    struct snap_backend *b = h;
    const struct blockmap *m = b->map;
    uint64_t pos = offset, end = offset + count;
    size_t n = 0, i = blockmap_seek(m, offset / BLOCK_SIZE);

    while (pos < end && n < max) {
        uint64_t es = i < m->n ? m->ext[i].block * BLOCK_SIZE : m->volume_size;
        if (es > pos) {
            /* A hole up to the next extent (or the end of the volume). */
            uint64_t to = MIN(es, m->volume_size);
            ret[n++] = (struct nbd_extent){ pos, to - pos, NBD_STATE_HOLE | NBD_STATE_ZERO };
            pos = to;
            continue;
        }
        /* Data: this extent and every one adjoining it. */
        uint64_t to = es;
        while (i < m->n && m->ext[i].block * BLOCK_SIZE == to) {
            to += (uint64_t)m->ext[i].count * BLOCK_SIZE;
            i++;
        }
        to = MIN(to, m->volume_size);
        ret[n++] = (struct nbd_extent){ pos, to - pos, 0 };
        pos = to;
    }
    return (int)n;
}

static int snap_cache(void *h, uint32_t count, uint64_t offset)
{
    struct snap_backend *b = h;
    const struct blockmap *m = b->map;
    uint64_t end = offset + count;
    int r;

    for (size_t i = blockmap_seek(m, offset / BLOCK_SIZE); i < m->n; i++) {
        struct centry *e;
        if (m->ext[i].block * BLOCK_SIZE >= end)
            break;
        r = chunk_get(b, i, &e);
        if (r < 0)
            return r;
        centry_unref(e);
    }
    return 0;
}

static void snap_close(void *h)
{
    struct snap_backend *b = h;

    if (!b)
        return;
    for (struct centry *e = b->head, *next; e; e = next) {
        next = e->next;
        centry_unref(e);
    }
    free(b->buckets);
    blockmap_free(b->map);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

static const struct nbd_backend_ops snapshot_ops = {
    .name = "snapshot",
    .pread = snap_pread,
    .extents = snap_extents,
    .cache = snap_cache,
    .close = snap_close,
};

int nbd_snapshot_backend_new(struct store *store, struct blockmap *map, size_t cache_bytes,
                             struct nbd_backend *ret)
{
    struct snap_backend *b = xcalloc(1, sizeof(*b));
    size_t entries;

    b->store = store;
    b->map = map;
    b->max_bytes = cache_bytes ? cache_bytes : DEFAULT_CACHE_BYTES;
    /* Buckets for the most entries that fit (chunks are >= 4 KiB), capped. */
    entries = MIN(b->max_bytes / BLOCK_SIZE, (size_t)1 << 20);
    b->nbuckets = 64;
    while (b->nbuckets < entries)
        b->nbuckets *= 2;
    b->buckets = xcalloc(b->nbuckets, sizeof(*b->buckets));
    pthread_mutex_init(&b->lock, NULL);
    *ret = (struct nbd_backend){
        .ops = &snapshot_ops,
        .handle = b,
        .size = map->volume_size,
        .read_only = true,
        .can_multi_conn = true,
    };
    return 0;
}

void nbd_snapshot_backend_stats(const struct nbd_backend *be, struct nbd_snapshot_cache_stats *ret)
{
    struct snap_backend *b = be->handle;

    ret->hits = atomic_load(&b->hits);
    ret->misses = atomic_load(&b->misses);
    ret->bytes_fetched = atomic_load(&b->fetched);
    pthread_mutex_lock(&b->lock);
    ret->cached_bytes = b->bytes;
    pthread_mutex_unlock(&b->lock);
}
