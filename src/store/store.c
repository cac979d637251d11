/* The chunk store: object encoding, compression and verification over a
 * backend (see store.h for the contract, internal.h for backends).
 *
 * Encoded object (little-endian; docs/formats.md):
 *   0  4  magic "KLNO"
 *   4  1  format version (1)
 *   5  1  codec: 0 stored as is, 1 zstd frame
 *   6  1  kind: 0 chunk, 1 block map
 *   7  1  reserved, 0
 *   8  4  plaintext length
 *   12 4  payload length (= object size - 16)
 *   16 .. payload
 * The object's name is the SHA-256 of the plaintext.  A payload that zstd
 * does not shrink is stored as is.
 */
#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <zstd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "store/internal.h"

#define OBJ_MAGIC "KLNO"
#define OBJ_HEADER_SIZE 16
#define OBJ_VERSION 1
#define CODEC_NONE 0
#define CODEC_ZSTD 1
#define DEFAULT_LEVEL 2

struct store {
    const struct store_backend *backend;
    void *priv;
    int level;
    bool read_only;
    char *location;
};

/* zstd contexts are per thread: workers compress and decompress in
 * parallel.  Freed when the thread exits. */
struct codec_ctx {
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    int level;
    uint8_t *objbuf; /* room for the largest encoded chunk, for reads */
};

/* The largest encoded chunk. */
#define CHUNK_OBJ_MAX (OBJ_HEADER_SIZE + ZSTD_COMPRESSBOUND(STORE_CHUNK_MAX))

static pthread_key_t codec_key;
static pthread_once_t codec_once = PTHREAD_ONCE_INIT;

static void codec_free(void *p)
{
    struct codec_ctx *c = p;

    ZSTD_freeCCtx(c->cctx);
    ZSTD_freeDCtx(c->dctx);
    free(c->objbuf);
    free(c);
}

static void codec_key_init(void)
{
    pthread_key_create(&codec_key, codec_free);
}

static struct codec_ctx *codec_get(void)
{
    struct codec_ctx *c;

    pthread_once(&codec_once, codec_key_init);
    c = pthread_getspecific(codec_key);
    if (!c) {
        c = xcalloc(1, sizeof(*c));
        c->cctx = ZSTD_createCCtx();
        c->dctx = ZSTD_createDCtx();
        c->objbuf = xmalloc(CHUNK_OBJ_MAX);
        if (!c->cctx || !c->dctx)
            abort();
        pthread_setspecific(codec_key, c);
    }
    return c;
}

int store_open(const char *dir, const struct store_options *opts, struct store **ret)
{
    _cleanup_free_ struct store *s = xcalloc(1, sizeof(*s));
    int r;

    s->backend = &store_backend_dir;
    s->read_only = opts && opts->read_only;
    s->level = opts && opts->compression_level ? opts->compression_level : DEFAULT_LEVEL;
    r = s->backend->open(dir, s->read_only, &s->priv);
    if (r < 0)
        return r;
    s->location = xstrdup(dir);
    *ret = TAKE_PTR(s);
    return 0;
}

void store_free(struct store *s)
{
    if (!s)
        return;
    s->backend->close(s->priv);
    free(s->location);
    free(s);
}

static void put_header(uint8_t *h, enum store_kind kind, int codec, uint32_t plain_len,
                       uint32_t payload_len)
{
    memcpy(h, OBJ_MAGIC, 4);
    h[4] = OBJ_VERSION;
    h[5] = (uint8_t)codec;
    h[6] = (uint8_t)kind;
    h[7] = 0;
    plain_len = htole32(plain_len);
    payload_len = htole32(payload_len);
    memcpy(h + 8, &plain_len, 4);
    memcpy(h + 12, &payload_len, 4);
}

/* Encode plaintext into a freshly allocated object. */
static int encode(struct store *s, enum store_kind kind, const void *data, size_t len,
                  uint8_t **ret, size_t *ret_len)
{
    struct codec_ctx *c = codec_get();
    size_t bound = ZSTD_compressBound(len);
    uint8_t *obj = xmalloc(OBJ_HEADER_SIZE + MAX(bound, len));
    size_t n;

    if (c->level != s->level) {
        ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_compressionLevel, s->level);
        c->level = s->level;
    }
    n = ZSTD_compress2(c->cctx, obj + OBJ_HEADER_SIZE, bound, data, len);
    if (!ZSTD_isError(n) && n < len) {
        put_header(obj, kind, CODEC_ZSTD, (uint32_t)len, (uint32_t)n);
    } else {
        memcpy(obj + OBJ_HEADER_SIZE, data, len);
        n = len;
        put_header(obj, kind, CODEC_NONE, (uint32_t)len, (uint32_t)len);
    }
    *ret = obj;
    *ret_len = OBJ_HEADER_SIZE + n;
    return 0;
}

struct obj_header {
    int codec;
    uint32_t plain_len;
    uint32_t payload_len;
};

static int parse_header(const uint8_t *h, size_t objlen, enum store_kind kind, size_t max,
                        struct obj_header *ret)
{
    uint32_t plain, payload;

    if (objlen < OBJ_HEADER_SIZE || memcmp(h, OBJ_MAGIC, 4) != 0)
        return -EBADMSG;
    if (h[4] != OBJ_VERSION || h[6] != (uint8_t)kind || h[7] != 0)
        return -EBADMSG;
    if (h[5] != CODEC_NONE && h[5] != CODEC_ZSTD)
        return -EBADMSG;
    memcpy(&plain, h + 8, 4);
    memcpy(&payload, h + 12, 4);
    plain = le32toh(plain);
    payload = le32toh(payload);
    if (plain > max || (uint64_t)payload + OBJ_HEADER_SIZE != objlen)
        return -EBADMSG;
    if (h[5] == CODEC_NONE && payload != plain)
        return -EBADMSG;
    ret->codec = h[5];
    ret->plain_len = plain;
    ret->payload_len = payload;
    return 0;
}

/* Decode an object into out (at least hdr->plain_len bytes) and verify. */
static int decode(const struct obj_header *hdr, const uint8_t *obj, const struct digest *id,
                  void *out)
{
    struct digest got;

    if (hdr->codec == CODEC_ZSTD) {
        struct codec_ctx *c = codec_get();
        size_t n = ZSTD_decompressDCtx(c->dctx, out, hdr->plain_len, obj + OBJ_HEADER_SIZE,
                                       hdr->payload_len);
        if (ZSTD_isError(n) || n != hdr->plain_len)
            return -EBADMSG;
    } else {
        memcpy(out, obj + OBJ_HEADER_SIZE, hdr->plain_len);
    }
    sha256(out, hdr->plain_len, &got);
    if (!digest_equal(&got, id))
        return -EBADMSG;
    return 0;
}

int store_chunk_put(struct store *s, const struct digest *id, const void *data, size_t len,
                    size_t *ret_stored)
{
    _cleanup_free_ uint8_t *obj = NULL;
    size_t objlen;
    int r;

    if (len == 0 || len > STORE_CHUNK_MAX)
        return -EINVAL;
    /* Cheap check first: most puts of an incremental import are present. */
    r = store_has(s, STORE_CHUNK, id);
    if (r != 0)
        return r < 0 ? r : 0;
    encode(s, STORE_CHUNK, data, len, &obj, &objlen);
    r = s->backend->put(s->priv, STORE_CHUNK, id, obj, objlen, false);
    if (r > 0 && ret_stored)
        *ret_stored = objlen;
    return r;
}

ssize_t store_chunk_get(struct store *s, const struct digest *id, void *buf, size_t bufsize)
{
    uint8_t *obj = codec_get()->objbuf;
    size_t cap = CHUNK_OBJ_MAX;
    struct obj_header hdr;
    ssize_t n;
    int r;

    n = s->backend->get(s->priv, STORE_CHUNK, id, obj, cap);
    if (n < 0)
        return n;
    if ((size_t)n > cap)
        return -EBADMSG;
    r = parse_header(obj, (size_t)n, STORE_CHUNK, STORE_CHUNK_MAX, &hdr);
    if (r < 0)
        return r;
    if (hdr.plain_len > bufsize)
        return -EFBIG;
    r = decode(&hdr, obj, id, buf);
    if (r < 0)
        return r;
    return hdr.plain_len;
}

int store_has(struct store *s, enum store_kind kind, const struct digest *id)
{
    int r = s->backend->stat(s->priv, kind, id, NULL, NULL);

    if (r == -ENOENT)
        return 0;
    return r < 0 ? r : 1;
}

int store_map_put(struct store *s, const void *data, size_t len, struct digest *ret_id)
{
    _cleanup_free_ uint8_t *obj = NULL;
    struct digest id;
    size_t objlen;
    int r;

    if (len > STORE_MAP_MAX)
        return error_set(EFBIG, "block map of %zu bytes exceeds the store's limit", len);
    sha256(data, len, &id);
    encode(s, STORE_MAP, data, len, &obj, &objlen);
    r = s->backend->put(s->priv, STORE_MAP, &id, obj, objlen, true);
    if (r < 0)
        return r;
    *ret_id = id;
    return r;
}

int store_map_get(struct store *s, const struct digest *id, void **ret, size_t *ret_len)
{
    _cleanup_free_ uint8_t *obj = NULL;
    _cleanup_free_ uint8_t *plain = NULL;
    struct obj_header hdr;
    uint64_t size;
    ssize_t n;
    int r;

    r = s->backend->stat(s->priv, STORE_MAP, id, &size, NULL);
    if (r < 0)
        return r;
    if (size < OBJ_HEADER_SIZE || size > OBJ_HEADER_SIZE + ZSTD_compressBound(STORE_MAP_MAX))
        return -EBADMSG;
    obj = xmalloc(size);
    n = s->backend->get(s->priv, STORE_MAP, id, obj, size);
    if (n < 0)
        return (int)n;
    if ((uint64_t)n != size)
        return -EBADMSG;
    r = parse_header(obj, size, STORE_MAP, STORE_MAP_MAX, &hdr);
    if (r < 0)
        return r;
    /* The length comes from the file: believe it only if the zstd frame
     * says the same, and do not abort if it cannot be had. */
    if (hdr.codec == CODEC_ZSTD &&
        ZSTD_getFrameContentSize(obj + OBJ_HEADER_SIZE, hdr.payload_len) != hdr.plain_len)
        return -EBADMSG;
    plain = malloc(hdr.plain_len ? hdr.plain_len : 1);
    if (!plain)
        return -ENOMEM;
    r = decode(&hdr, obj, id, plain);
    if (r < 0)
        return r;
    *ret_len = hdr.plain_len;
    *ret = TAKE_PTR(plain);
    return 0;
}

int store_remove(struct store *s, enum store_kind kind, const struct digest *id)
{
    if (s->read_only)
        return -EROFS;
    return s->backend->remove(s->priv, kind, id);
}

int store_list(struct store *s, enum store_kind kind, store_list_fn fn, void *userdata)
{
    return s->backend->list(s->priv, kind, fn, userdata);
}

int store_stat(struct store *s, enum store_kind kind, const struct digest *id,
               uint32_t *ret_plain_len, uint64_t *ret_stored_size)
{
    uint8_t h[OBJ_HEADER_SIZE];
    struct obj_header hdr;
    ssize_t n;
    int r;

    n = s->backend->get(s->priv, kind, id, h, sizeof(h));
    if (n < 0)
        return (int)n;
    if (n < OBJ_HEADER_SIZE)
        return -EBADMSG;
    r = parse_header(h, (size_t)n, kind, kind == STORE_MAP ? STORE_MAP_MAX : STORE_CHUNK_MAX,
                     &hdr);
    if (r < 0)
        return r;
    if (ret_plain_len)
        *ret_plain_len = hdr.plain_len;
    if (ret_stored_size)
        *ret_stored_size = (uint64_t)n;
    return 0;
}

int store_sync(struct store *s)
{
    return s->backend->sync(s->priv);
}

int store_lock(struct store *s, bool exclusive, int timeout_ms)
{
    int r = s->backend->lock(s->priv, exclusive, timeout_ms);

    if (r == -EBUSY)
        return error_set(EBUSY, "store '%s' is busy: %s", s->location,
                         exclusive ? "an import or export is running"
                                   : "garbage collection is running");
    return r;
}

void store_unlock(struct store *s)
{
    s->backend->unlock(s->priv);
}

int store_sweep_temporaries(struct store *s, time_t grace, bool dry_run, uint64_t *ret_files,
                            uint64_t *ret_bytes)
{
    *ret_files = 0;
    *ret_bytes = 0;
    if (!s->backend->sweep_temporaries)
        return 0;
    return s->backend->sweep_temporaries(s->priv, grace, dry_run, ret_files, ret_bytes);
}

struct recover_ctx {
    struct store *s;
    enum store_kind kind;
    int removed;
};

static int recover_one(const struct store_object_info *info, void *userdata)
{
    struct recover_ctx *c = userdata;
    int r;

    if (c->kind == STORE_CHUNK) {
        _cleanup_free_ uint8_t *buf = xmalloc(STORE_CHUNK_MAX);
        ssize_t n = store_chunk_get(c->s, &info->id, buf, STORE_CHUNK_MAX);
        r = n < 0 ? (int)n : 0;
    } else {
        _cleanup_free_ void *map = NULL;
        size_t len;
        r = store_map_get(c->s, &info->id, &map, &len);
    }
    if (r == -EBADMSG) {
        r = store_remove(c->s, c->kind, &info->id);
        if (r == 0)
            c->removed++;
    }
    /* Gone meanwhile is fine; anything else leaves the evidence in place
     * for the next attempt. */
    return r == -ENOENT ? 0 : r;
}

int store_recover(struct store *s)
{
    struct recover_ctx c = { .s = s };
    int r = 0;

    if (s->read_only || !s->backend->recovery_candidates)
        return 0;
    for (int k = STORE_CHUNK; k <= STORE_MAP && r == 0; k++) {
        c.kind = (enum store_kind)k;
        r = s->backend->recovery_candidates(s->priv, c.kind, recover_one, &c);
    }
    if (r == 0 && s->backend->recovery_needed(s->priv))
        r = store_sync(s); /* the removals, before the evidence goes */
    s->backend->finish_recovery(s->priv, r == 0);
    return r < 0 ? r : c.removed;
}
