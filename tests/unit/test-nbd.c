/* NBD: the pure protocol functions (option handler, request validation,
 * errno map), the server driven by a small client written here against an
 * in-memory writable backend (a unit-test fixture: `kiln nbd` serves only
 * real snapshots), qemu-io against that fixture when qemu-io is installed,
 * and the snapshot backend over a real store. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"
#include "nbd/nbd.h"
#include "nbd/proto.h"
#include "snapshot/snapshot.h"
#include "tap.h"
#include "volume/volume.h"

static const char NAME[] = "snap-0123456789abcdef0";

/* ---- pure protocol ---- */

static void put_opt(struct nbd_buf *b, const void *p, size_t n)
{
    b->data = realloc(b->data, b->len + n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* Reply number `i` in out: its type, or 0 if there are fewer. */
static uint32_t reply_type(const struct nbd_buf *out, int i, uint32_t *ret_len)
{
    size_t pos = 0;
    for (;;) {
        if (out->len - pos < 20)
            return 0;
        uint32_t len = nbd_get32(out->data + pos + 16);
        if (i-- == 0) {
            if (ret_len)
                *ret_len = len;
            return nbd_get32(out->data + pos + 12);
        }
        pos += 20 + len;
    }
}

static int handle(struct nbd_session *s, const struct nbd_export_info *ex, uint32_t opt,
                  const struct nbd_buf *data, struct nbd_buf *out)
{
    out->len = 0;
    return nbd_option_handle(s, ex, opt, data ? data->data : NULL, data ? (uint32_t)data->len : 0,
                             out);
}

static void meta_request(struct nbd_buf *d, const char *name, int nq, const char **q)
{
    uint8_t b[4];
    d->len = 0;
    nbd_put32(b, (uint32_t)strlen(name));
    put_opt(d, b, 4);
    put_opt(d, name, strlen(name));
    nbd_put32(b, (uint32_t)nq);
    put_opt(d, b, 4);
    for (int i = 0; i < nq; i++) {
        nbd_put32(b, (uint32_t)strlen(q[i]));
        put_opt(d, b, 4);
        put_opt(d, q[i], strlen(q[i]));
    }
}

static void test_proto(void)
{
    struct nbd_export_info ex = { .name = NAME, .description = "d", .size = 1 << 20,
                                  .tflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY |
                                            NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_CACHE };
    struct nbd_session s = { 0 };
    struct nbd_buf out = { 0 }, d = { 0 };
    uint8_t b[8];
    uint32_t len;
    int r;

    nbd_greeting(&out);
    is_int(out.len, 18, "greeting is 18 bytes");
    ok(nbd_get64(out.data) == NBD_MAGIC && nbd_get64(out.data + 8) == NBD_IHAVEOPT,
       "greeting magics");
    nbd_put32(b, 0x4);
    is_int(nbd_client_flags_parse(b, &s), -EPROTO, "unknown client flag refused");
    nbd_put32(b, 3);
    is_int(nbd_client_flags_parse(b, &s), 0, "client flags accepted");
    ok(s.no_zeroes, "no zeroes negotiated");

    uint8_t h[16];
    nbd_put64(h, NBD_IHAVEOPT);
    nbd_put32(h + 8, 7);
    nbd_put32(h + 12, NBD_OPTION_MAX + 1);
    uint32_t o, l;
    is_int(nbd_option_header_parse(h, &o, &l), -E2BIG, "option longer than the cap refused");
    nbd_put64(h, 1);
    is_int(nbd_option_header_parse(h, &o, &l), -EPROTO, "bad option magic refused");

    r = handle(&s, &ex, 77, NULL, &out);
    ok(r == NBD_OPTION_CONTINUE && reply_type(&out, 0, NULL) == NBD_REP_ERR_UNSUP,
       "unknown option: NBD_REP_ERR_UNSUP, negotiation goes on");
    r = handle(&s, &ex, NBD_OPT_STARTTLS, NULL, &out);
    ok(reply_type(&out, 0, NULL) == NBD_REP_ERR_POLICY, "STARTTLS: policy error");

    const char *q[] = { "base:allocation" };
    meta_request(&d, NAME, 1, q);
    r = handle(&s, &ex, NBD_OPT_SET_META_CONTEXT, &d, &out);
    ok(reply_type(&out, 0, NULL) == NBD_REP_ERR_INVALID && !s.base_allocation,
       "SET_META_CONTEXT before structured replies: invalid");
    d.len = 0;
    put_opt(&d, "x", 1);
    r = handle(&s, &ex, NBD_OPT_STRUCTURED_REPLY, &d, &out);
    ok(reply_type(&out, 0, NULL) == NBD_REP_ERR_INVALID && !s.structured,
       "STRUCTURED_REPLY with data: invalid");
    r = handle(&s, &ex, NBD_OPT_STRUCTURED_REPLY, NULL, &out);
    ok(reply_type(&out, 0, NULL) == NBD_REP_ACK && s.structured, "structured replies");

    meta_request(&d, NAME, 1, q);
    r = handle(&s, &ex, NBD_OPT_SET_META_CONTEXT, &d, &out);
    ok(reply_type(&out, 0, &len) == NBD_REP_META_CONTEXT && len == 4 + 15 &&
           nbd_get32(out.data + 20) == NBD_META_BASE_ALLOCATION &&
           reply_type(&out, 1, NULL) == NBD_REP_ACK && s.base_allocation,
       "SET_META_CONTEXT base:allocation selects it");
    const char *q2[] = { "qemu:dirty-bitmap:x" };
    meta_request(&d, "", 1, q2);
    r = handle(&s, &ex, NBD_OPT_SET_META_CONTEXT, &d, &out);
    ok(reply_type(&out, 0, NULL) == NBD_REP_ACK && !s.base_allocation,
       "SET_META_CONTEXT of an unknown context selects none (and replaces)");
    const char *q3[] = { "base:" };
    meta_request(&d, "", 1, q3);
    r = handle(&s, &ex, NBD_OPT_LIST_META_CONTEXT, &d, &out);
    ok(reply_type(&out, 0, NULL) == NBD_REP_META_CONTEXT &&
           reply_type(&out, 1, NULL) == NBD_REP_ACK,
       "LIST_META_CONTEXT base: lists base:allocation");
    meta_request(&d, "", 1, q3);
    r = handle(&s, &ex, NBD_OPT_SET_META_CONTEXT, &d, &out);
    ok(reply_type(&out, 0, NULL) == NBD_REP_ACK && !s.base_allocation,
       "SET_META_CONTEXT base: selects nothing");
    meta_request(&d, "other", 1, q);
    r = handle(&s, &ex, NBD_OPT_SET_META_CONTEXT, &d, &out);
    ok(reply_type(&out, 0, NULL) == NBD_REP_ERR_UNKNOWN, "meta context of another export");
    meta_request(&d, NAME, 1, q);
    d.len -= 3; /* the query runs past the end */
    r = handle(&s, &ex, NBD_OPT_SET_META_CONTEXT, &d, &out);
    ok(reply_type(&out, 0, NULL) == NBD_REP_ERR_INVALID, "truncated query: invalid");

    r = handle(&s, &ex, NBD_OPT_LIST, NULL, &out);
    ok(reply_type(&out, 0, &len) == NBD_REP_SERVER && len == 4 + strlen(NAME) &&
           memcmp(out.data + 24, NAME, strlen(NAME)) == 0 &&
           reply_type(&out, 1, NULL) == NBD_REP_ACK,
       "LIST names the export");

    /* INFO with NAME and BLOCK_SIZE requests. */
    d.len = 0;
    nbd_put32(b, 0);
    put_opt(&d, b, 4);
    nbd_put16(b, 2);
    nbd_put16(b + 2, NBD_INFO_NAME);
    nbd_put16(b + 4, NBD_INFO_BLOCK_SIZE);
    put_opt(&d, b, 6);
    r = handle(&s, &ex, NBD_OPT_INFO, &d, &out);
    ok(r == NBD_OPTION_CONTINUE && reply_type(&out, 0, &len) == NBD_REP_INFO && len == 12 &&
           nbd_get64(out.data + 22) == ex.size && nbd_get16(out.data + 30) == ex.tflags,
       "INFO: NBD_INFO_EXPORT with size and flags");
    ok(reply_type(&out, 1, &len) == NBD_REP_INFO && len == 14 &&
           nbd_get32(out.data + 32 + 22 + 8) == NBD_MAX_BLOCK,
       "INFO: block sizes");
    ok(reply_type(&out, 2, NULL) == NBD_REP_INFO && reply_type(&out, 3, NULL) == NBD_REP_ACK,
       "INFO: name, then ACK");
    d.data[3] = 200; /* name length past the data */
    r = handle(&s, &ex, NBD_OPT_GO, &d, &out);
    ok(r == NBD_OPTION_CONTINUE && reply_type(&out, 0, NULL) == NBD_REP_ERR_INVALID,
       "GO with a bad name length: invalid, no transmission");
    d.len = 0;
    nbd_put32(b, 3);
    put_opt(&d, b, 4);
    put_opt(&d, "xyz", 3);
    nbd_put16(b, 0);
    put_opt(&d, b, 2);
    r = handle(&s, &ex, NBD_OPT_GO, &d, &out);
    ok(r == NBD_OPTION_CONTINUE && reply_type(&out, 0, NULL) == NBD_REP_ERR_UNKNOWN,
       "GO to an unknown export: unknown");

    d.len = 0;
    put_opt(&d, "nope", 4);
    is_int(handle(&s, &ex, NBD_OPT_EXPORT_NAME, &d, &out), NBD_OPTION_CLOSE,
           "EXPORT_NAME of an unknown export closes");
    r = handle(&s, &ex, NBD_OPT_EXPORT_NAME, NULL, &out);
    ok(r == NBD_OPTION_TRANSMISSION && out.len == 10, "EXPORT_NAME \"\": 10 bytes, no zeroes");
    s.no_zeroes = false;
    r = handle(&s, &ex, NBD_OPT_EXPORT_NAME, NULL, &out);
    is_int(out.len, 134, "EXPORT_NAME without NO_ZEROES: 124 zero bytes too");
    is_int(handle(&s, &ex, NBD_OPT_ABORT, NULL, &out), NBD_OPTION_CLOSE, "ABORT closes");
    ok(reply_type(&out, 0, NULL) == NBD_REP_ACK, "ABORT is acknowledged");

    /* Requests. */
    uint8_t rb[28];
    struct nbd_request rq;
    nbd_put32(rb, 0x25609514);
    is_int(nbd_request_parse(rb, &rq), -EPROTO, "bad request magic");
    nbd_put32(rb, NBD_REQUEST_MAGIC);
    nbd_put16(rb + 4, 1);
    nbd_put16(rb + 6, 7);
    nbd_put64(rb + 8, 42);
    nbd_put64(rb + 16, 4096);
    nbd_put32(rb + 24, 512);
    ok(nbd_request_parse(rb, &rq) == 0 && rq.flags == 1 && rq.type == 7 && rq.cookie == 42 &&
           rq.offset == 4096 && rq.count == 512,
       "request fields");

    struct nbd_session st = { .structured = true, .base_allocation = true };
#define V(t, f, o, c) nbd_request_validate(&(struct nbd_request){ f, t, 1, o, c }, &ex, &st, NULL)
    is_int(V(NBD_CMD_READ, 0, 0, 4096), 0, "read in range");
    is_int(V(NBD_CMD_READ, 0, (1 << 20) - 1, 1), 0, "read of the last byte");
    is_int(V(NBD_CMD_READ, 0, (1 << 20) - 1, 2), NBD_EINVAL, "read past the end: EINVAL");
    is_int(V(NBD_CMD_READ, 0, UINT64_MAX, 2), NBD_EINVAL, "offset overflow: EINVAL");
    is_int(V(NBD_CMD_READ, 0, 0, 0), NBD_EINVAL, "zero-length read: EINVAL");
    is_int(V(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 1), NBD_EINVAL, "DF not advertised: EINVAL");
    is_int(V(NBD_CMD_READ, NBD_CMD_FLAG_FUA, 0, 1), NBD_EINVAL, "FUA not advertised: EINVAL");
    is_int(V(NBD_CMD_WRITE, 0, 0, 1), NBD_EPERM, "write to read-only: EPERM");
    is_int(V(NBD_CMD_TRIM, 0, 0, 1), NBD_EPERM, "trim of read-only: EPERM");
    is_int(V(NBD_CMD_WRITE_ZEROES, 0, 0, 1), NBD_EPERM, "zero of read-only: EPERM");
    is_int(V(NBD_CMD_FLUSH, 0, 0, 0), 0, "flush");
    is_int(V(NBD_CMD_FLUSH, 0, 1, 0), NBD_EINVAL, "flush with an offset: EINVAL");
    is_int(V(NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 0, 1 << 20), 0, "block status");
    is_int(V(99, 0, 0, 1), NBD_EINVAL, "unknown command: EINVAL");
    is_int(V(NBD_CMD_CACHE, 0, 0, 1 << 20), 0, "cache");
    is_int(V(NBD_CMD_DISC, 0, 0, 0), 0, "disconnect");
    const char *why = NULL;
    nbd_request_validate(&(struct nbd_request){ 0, NBD_CMD_WRITE, 1, 0, 1 }, &ex, &st, &why);
    is_str(why, "the export is read-only", "a refusal says why");
    st.base_allocation = false;
    is_int(V(NBD_CMD_BLOCK_STATUS, 0, 0, 1), NBD_EINVAL, "block status without a context");
    ex.size = 1ULL << 40;
    ex.tflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_WRITE_ZEROES |
                NBD_FLAG_SEND_FLUSH;
    is_int(V(NBD_CMD_READ, 0, 0, NBD_MAX_BLOCK + 1), NBD_EINVAL, "read over the cap: EINVAL");
    is_int(V(NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 0, NBD_MAX_BLOCK), 0, "write with FUA");
    is_int(V(NBD_CMD_WRITE, 0, ex.size, 1), NBD_ENOSPC, "write past the end: ENOSPC");
    is_int(V(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE, 0, UINT32_MAX), 0,
           "write zeroes of 4 GiB (no payload, no cap)");
    is_int(V(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_FAST_ZERO, 0, 1), NBD_EINVAL,
           "FAST_ZERO not advertised: EINVAL");
    is_int(V(NBD_CMD_TRIM, 0, 0, 1), NBD_EINVAL, "trim not advertised: EINVAL");
    is_int(V(NBD_CMD_CACHE, 0, 0, 1), NBD_EINVAL, "cache not advertised: EINVAL");
#undef V
    is_int(nbd_errno(-EROFS), NBD_EPERM, "EROFS -> NBD_EPERM");
    is_int(nbd_errno(-EBADMSG), NBD_EIO, "EBADMSG -> NBD_EIO");
    is_int(nbd_errno(-ENOENT), NBD_EIO, "ENOENT -> NBD_EIO");
    is_int(nbd_errno(-EDQUOT), NBD_ENOSPC, "EDQUOT -> NBD_ENOSPC");
    is_int(nbd_errno(EINVAL), NBD_EINVAL, "EINVAL -> NBD_EINVAL");
    is_int(nbd_errno(-ESHUTDOWN), NBD_ESHUTDOWN, "ESHUTDOWN -> NBD_ESHUTDOWN");
    nbd_buf_release(&out);
    free(d.data);
}

/* ---- a writable in-memory backend (test fixture) ---- */

#define MEM_SIZE (8U << 20)

struct mem {
    pthread_mutex_t lock;
    uint8_t *data;
    uint8_t alloc[MEM_SIZE / 4096]; /* 1: block holds data */
    int flushes;
};

static int mem_pread(void *h, void *buf, uint32_t count, uint64_t offset)
{
    struct mem *m = h;
    pthread_mutex_lock(&m->lock);
    memcpy(buf, m->data + offset, count);
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static int mem_pwrite(void *h, const void *buf, uint32_t count, uint64_t offset, bool fua)
{
    struct mem *m = h;
    pthread_mutex_lock(&m->lock);
    memcpy(m->data + offset, buf, count);
    for (uint64_t b = offset / 4096; b <= (offset + count - 1) / 4096; b++)
        m->alloc[b] = 1;
    if (fua)
        m->flushes++;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static int mem_zero(void *h, uint32_t count, uint64_t offset, bool may_trim, bool fua)
{
    struct mem *m = h;
    pthread_mutex_lock(&m->lock);
    memset(m->data + offset, 0, count);
    /* Whole blocks become holes when allowed. */
    for (uint64_t b = DIV_ROUND_UP(offset, 4096); may_trim && (b + 1) * 4096 <= offset + count;
         b++)
        m->alloc[b] = 0;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static int mem_trim(void *h, uint32_t count, uint64_t offset, bool fua)
{
    return mem_zero(h, count, offset, true, fua);
}

static int mem_flush(void *h)
{
    struct mem *m = h;
    pthread_mutex_lock(&m->lock);
    m->flushes++;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static int mem_extents(void *h, uint32_t count, uint64_t offset, struct nbd_extent *ret,
                       size_t max)
{
    struct mem *m = h;
    uint64_t pos = offset, end = offset + count;
    size_t n = 0;
    pthread_mutex_lock(&m->lock);
    while (pos < end && n < max) {
        int a = m->alloc[pos / 4096];
        uint64_t to = (pos / 4096 + 1) * 4096;
        while (to < end && m->alloc[to / 4096] == a)
            to += 4096;
        ret[n++] = (struct nbd_extent){ pos, MIN(to, end) - pos,
                                        a ? 0 : NBD_STATE_HOLE | NBD_STATE_ZERO };
        pos = MIN(to, end);
    }
    pthread_mutex_unlock(&m->lock);
    return (int)n;
}

static int mem_fail_pread(void *h, void *buf, uint32_t count, uint64_t offset)
{
    if (offset <= 8192 && offset + count > 8192)
        return error_set(EBADMSG, "chunk 'x' at offset 8192 is corrupt (digest mismatch)");
    return mem_pread(h, buf, count, offset);
}

static const struct nbd_backend_ops mem_ops = {
    .name = "mem", .pread = mem_pread, .pwrite = mem_pwrite, .flush = mem_flush,
    .trim = mem_trim, .zero = mem_zero, .extents = mem_extents,
};
static const struct nbd_backend_ops mem_ro_ops = {
    .name = "mem-ro", .pread = mem_fail_pread, .extents = mem_extents,
};

/* ---- a small client ---- */

struct client {
    int fd;
    uint16_t tflags;
    uint64_t size;
    bool structured;
};

static int rd(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int wr(int fd, const void *buf, size_t n)
{
    return send(fd, buf, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

static int dial(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void send_opt(int fd, uint32_t opt, const void *data, uint32_t len)
{
    uint8_t h[16];
    nbd_put64(h, NBD_IHAVEOPT);
    nbd_put32(h + 8, opt);
    nbd_put32(h + 12, len);
    wr(fd, h, 16);
    if (len)
        wr(fd, data, len);
}

/* Read option replies until a final one; returns its type. */
static uint32_t read_opt_replies(struct client *c)
{
    for (;;) {
        uint8_t h[20], data[4096];
        if (rd(c->fd, h, 20) < 0)
            return 0;
        uint32_t type = nbd_get32(h + 12), len = nbd_get32(h + 16);
        if (len > sizeof(data) || rd(c->fd, data, len) < 0)
            return 0;
        if (type == NBD_REP_INFO && len >= 12 && nbd_get16(data) == NBD_INFO_EXPORT) {
            c->size = nbd_get64(data + 2);
            c->tflags = nbd_get16(data + 10);
        }
        if (type != NBD_REP_INFO && type != NBD_REP_META_CONTEXT && type != NBD_REP_SERVER)
            return type;
    }
}

static int client_open(struct client *c, const char *path, bool structured)
{
    uint8_t g[18], f[4];
    memset(c, 0, sizeof(*c));
    c->fd = dial(path);
    if (c->fd < 0 || rd(c->fd, g, 18) < 0)
        return -1;
    nbd_put32(f, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    wr(c->fd, f, 4);
    if (structured) {
        struct nbd_buf d = { 0 };
        const char *q[] = { "base:allocation" };
        send_opt(c->fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
        if (read_opt_replies(c) != NBD_REP_ACK)
            return -1;
        meta_request(&d, "", 1, q);
        send_opt(c->fd, NBD_OPT_SET_META_CONTEXT, d.data, (uint32_t)d.len);
        free(d.data);
        if (read_opt_replies(c) != NBD_REP_ACK)
            return -1;
        c->structured = true;
    }
    uint8_t go[6] = { 0 };
    send_opt(c->fd, NBD_OPT_GO, go, 6);
    return read_opt_replies(c) == NBD_REP_ACK ? 0 : -1;
}

static void send_req(struct client *c, uint16_t type, uint16_t flags, uint64_t cookie,
                     uint64_t off, uint32_t count, const void *payload)
{
    uint8_t h[28];
    nbd_put32(h, NBD_REQUEST_MAGIC);
    nbd_put16(h + 4, flags);
    nbd_put16(h + 6, type);
    nbd_put64(h + 8, cookie);
    nbd_put64(h + 16, off);
    nbd_put32(h + 24, count);
    wr(c->fd, h, 28);
    if (payload)
        wr(c->fd, payload, count);
}

struct result {
    uint64_t cookie;
    uint32_t error;
    int holes, data_chunks;
    uint32_t bs[2 * 64 + 2]; /* block status descriptors: length, flags */
    int nbs;
};

/* Read one whole reply (simple, or structured up to DONE) for a request
 * whose data (if READ) goes to buf at offset base.  -1: connection lost. */
static int read_reply(struct client *c, uint8_t *buf, uint64_t base, uint32_t read_len,
                      struct result *res)
{
    uint8_t h[20];
    memset(res, 0, sizeof(*res));
    if (rd(c->fd, h, 4) < 0)
        return -1;
    if (nbd_get32(h) == NBD_SIMPLE_REPLY_MAGIC) {
        if (rd(c->fd, h + 4, 12) < 0)
            return -1;
        res->error = nbd_get32(h + 4);
        res->cookie = nbd_get64(h + 8);
        if (!res->error && buf && rd(c->fd, buf, read_len) < 0)
            return -1;
        return 0;
    }
    if (nbd_get32(h) != NBD_STRUCTURED_REPLY_MAGIC)
        return -1;
    for (;;) {
        if (rd(c->fd, h + 4, 16) < 0)
            return -1;
        uint16_t flags = nbd_get16(h + 4), type = nbd_get16(h + 6);
        uint32_t len = nbd_get32(h + 16);
        res->cookie = nbd_get64(h + 8);
        uint8_t *p = xmalloc(len ? len : 1);
        if (rd(c->fd, p, len) < 0) {
            free(p);
            return -1;
        }
        if (type == NBD_REPLY_TYPE_OFFSET_DATA) {
            memcpy(buf + (nbd_get64(p) - base), p + 8, len - 8);
            res->data_chunks++;
        } else if (type == NBD_REPLY_TYPE_OFFSET_HOLE) {
            memset(buf + (nbd_get64(p) - base), 0, nbd_get32(p + 8));
            res->holes++;
        } else if (type == NBD_REPLY_TYPE_BLOCK_STATUS) {
            for (uint32_t i = 4; i + 8 <= len && res->nbs < 128; i += 8) {
                res->bs[res->nbs++] = nbd_get32(p + i);
                res->bs[res->nbs++] = nbd_get32(p + i + 4);
            }
            res->nbs /= 1; /* pairs */
        } else if (type & 0x8000) {
            res->error = nbd_get32(p);
        }
        free(p);
        if (flags & NBD_REPLY_FLAG_DONE)
            return 0;
        if (rd(c->fd, h, 4) < 0)
            return -1;
    }
}

static uint32_t do_req(struct client *c, uint16_t type, uint16_t flags, uint64_t off,
                       uint32_t count, void *buf, struct result *res)
{
    struct result r0;
    if (!res)
        res = &r0;
    send_req(c, type, flags, 7, off, count, type == NBD_CMD_WRITE ? buf : NULL);
    if (read_reply(c, type == NBD_CMD_READ ? buf : NULL, off, count, res) < 0)
        return 0xdead;
    return res->error;
}

static struct nbd_server *start(const char *sock, struct mem *m, const struct nbd_backend_ops *ops,
                                uint64_t size)
{
    struct nbd_backend be = { .ops = ops, .handle = m, .size = size, .can_multi_conn = true };
    struct nbd_server_options o = { .export_name = NAME, .socket_path = sock, .threads = 4 };
    struct nbd_server *srv = NULL;
    int r = nbd_server_new(&o, &be, &srv);
    ok(r == 0, "server starts on %s", sock);
    return srv;
}

struct hammer {
    const char *sock;
    int id;
    int bad;
};

static void *hammer_main(void *arg)
{
    struct hammer *hm = arg;
    struct client c;
    uint8_t w[8192], rbuf[8192];
    uint64_t base = (uint64_t)(hm->id + 1) << 20; /* a private MiB each */

    if (client_open(&c, hm->sock, hm->id & 1) < 0) {
        hm->bad++;
        return NULL;
    }
    for (int i = 0; i < 200; i++) {
        uint64_t off = base + (uint64_t)(i * 7919 % 120) * 8192;
        memset(w, (i + hm->id) & 0xff, sizeof(w));
        if (do_req(&c, NBD_CMD_WRITE, 0, off, sizeof(w), w, NULL) != 0 ||
            do_req(&c, NBD_CMD_READ, 0, off, sizeof(rbuf), rbuf, NULL) != 0 ||
            memcmp(w, rbuf, sizeof(w)) != 0)
            hm->bad++;
    }
    close(c.fd);
    return NULL;
}

static void test_server(const char *dir)
{
    char sock[256];
    struct mem *m = xcalloc(1, sizeof(*m));
    struct client c, c2;
    struct result res;
    uint8_t *buf = xmalloc(NBD_MAX_BLOCK), *pat = xmalloc(1 << 20);
    struct nbd_server *srv;

    pthread_mutex_init(&m->lock, NULL);
    m->data = xcalloc(1, MEM_SIZE);
    snprintf(sock, sizeof(sock), "%s/w.sock", dir);
    srv = start(sock, m, &mem_ops, MEM_SIZE);

    ok(client_open(&c, sock, true) == 0, "structured client negotiates");
    is_int(c.size, MEM_SIZE, "export size");
    ok((c.tflags & NBD_FLAG_READ_ONLY) == 0 && (c.tflags & NBD_FLAG_SEND_TRIM) &&
           (c.tflags & NBD_FLAG_SEND_WRITE_ZEROES) && (c.tflags & NBD_FLAG_SEND_FUA) &&
           (c.tflags & NBD_FLAG_CAN_MULTI_CONN),
       "writable transmission flags");
    for (int i = 0; i < 65536; i++)
        pat[i] = (uint8_t)(i * 31 + 7);
    is_int(do_req(&c, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 8192, 65536, pat, NULL), 0,
           "write 64 KiB with FUA");
    pthread_mutex_lock(&m->lock);
    ok(m->flushes == 1 && memcmp(m->data + 8192, pat, 65536) == 0, "the data is in the backend");
    pthread_mutex_unlock(&m->lock);
    memset(buf, 0xee, 1 << 20);
    is_int(do_req(&c, NBD_CMD_READ, 0, 0, 1 << 20, buf, &res), 0, "read 1 MiB back");
    ok(memcmp(buf + 8192, pat, 65536) == 0 && buf_is_zero(buf, 8192) &&
           buf_is_zero(buf + 8192 + 65536, (1 << 20) - 8192 - 65536),
       "read data and holes as written");
    ok(res.holes == 2 && res.data_chunks == 1, "holes as OFFSET_HOLE chunks (%d, %d data)",
       res.holes, res.data_chunks);
    is_int(do_req(&c, NBD_CMD_BLOCK_STATUS, 0, 0, 1 << 20, NULL, &res), 0, "block status");
    ok(res.nbs == 6 && res.bs[0] == 8192 && res.bs[1] == (NBD_STATE_HOLE | NBD_STATE_ZERO) &&
           res.bs[2] == 65536 && res.bs[3] == 0 && res.bs[4] == (1 << 20) - 8192 - 65536,
       "block status: hole, data, hole");
    is_int(do_req(&c, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 4096, 1 << 20, NULL, &res), 0,
           "block status, REQ_ONE");
    ok(res.nbs == 2 && res.bs[0] == 4096, "REQ_ONE: one extent");
    is_int(do_req(&c, NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE, 8192, 4096, NULL, NULL), 0,
           "write zeroes, NO_HOLE");
    is_int(do_req(&c, NBD_CMD_TRIM, 0, 12288, 8192, NULL, NULL), 0, "trim");
    do_req(&c, NBD_CMD_READ, 0, 8192, 65536, buf, NULL);
    ok(buf_is_zero(buf, 12288) && memcmp(buf + 12288, pat + 12288, 65536 - 12288) == 0,
       "zeroed and trimmed ranges read zeros, the rest is intact");
    is_int(do_req(&c, NBD_CMD_FLUSH, 0, 0, 0, NULL, NULL), 0, "flush");
    is_int(do_req(&c, NBD_CMD_CACHE, 0, 0, 4096, NULL, NULL), 0, "cache (no callback: success)");
    is_int(do_req(&c, NBD_CMD_READ, 0, MEM_SIZE - 512, 1024, buf, NULL), NBD_EINVAL,
           "read past the end: EINVAL");
    is_int(do_req(&c, NBD_CMD_WRITE, 0, MEM_SIZE - 2, 4, pat, NULL), NBD_ENOSPC,
           "write past the end: ENOSPC, payload consumed");
    is_int(do_req(&c, NBD_CMD_READ, 0, 0, NBD_MAX_BLOCK + 1, buf, NULL), NBD_EINVAL,
           "read over 32 MiB: EINVAL");
    is_int(do_req(&c, 42, 0, 0, 1, NULL, NULL), NBD_EINVAL, "unknown command: EINVAL");
    is_int(do_req(&c, NBD_CMD_READ, 0x40, 0, 1, buf, NULL), NBD_EINVAL,
           "unknown flag: EINVAL");
    is_int(do_req(&c, NBD_CMD_READ, 0, MEM_SIZE - 1, 1, buf, NULL), 0,
           "the connection still works");

    /* Pipelined requests on one connection: every cookie answered once. */
    int seen[16] = { 0 }, good = 1;
    for (int i = 0; i < 16; i++)
        send_req(&c, NBD_CMD_READ, 0, 100 + i, (uint64_t)i * 65536, 65536, NULL);
    for (int i = 0; i < 16; i++) {
        if (read_reply(&c, buf, 0, 65536, &res) < 0 || res.cookie < 100 || res.cookie >= 116) {
            good = 0;
            break;
        }
        seen[res.cookie - 100]++;
    }
    for (int i = 0; i < 16; i++)
        good &= seen[i] == 1;
    ok(good, "16 pipelined reads, each answered once");

    /* A simple-reply client on a second connection. */
    ok(client_open(&c2, sock, false) == 0, "simple client negotiates");
    is_int(do_req(&c2, NBD_CMD_READ, 0, 8192 + 32768, 4096, buf, NULL), 0, "simple read");
    ok(memcmp(buf, pat + 32768, 4096) == 0, "simple read data");
    is_int(do_req(&c2, NBD_CMD_BLOCK_STATUS, 0, 0, 4096, NULL, NULL), NBD_EINVAL,
           "block status without negotiation: EINVAL");

    /* Garbage on c2: the server drops that connection only. */
    wr(c2.fd, "GARBAGE GARBAGE GARBAGE GARBAGE", 28);
    ok(read(c2.fd, buf, 1) == 0, "bad magic: the server closes the connection");
    close(c2.fd);
    /* An oversized WRITE: dropped too. */
    ok(client_open(&c2, sock, false) == 0, "reconnect");
    send_req(&c2, NBD_CMD_WRITE, 0, 1, 0, NBD_MAX_BLOCK + 1, NULL);
    ok(read(c2.fd, buf, 1) == 0, "oversized write: connection closed");
    close(c2.fd);
    /* Disconnect in the middle of a WRITE payload. */
    ok(client_open(&c2, sock, true) == 0, "reconnect");
    send_req(&c2, NBD_CMD_WRITE, 0, 1, 0, 65536, NULL);
    wr(c2.fd, pat, 100);
    close(c2.fd);
    /* Requests before negotiation (a request header as client flags). */
    c2.fd = dial(sock);
    rd(c2.fd, buf, 18);
    send_req(&c2, NBD_CMD_READ, 0, 1, 0, 512, NULL);
    ok(read(c2.fd, buf, 1) <= 0, "a request before negotiation: closed");
    close(c2.fd);
    is_int(do_req(&c, NBD_CMD_READ, 0, 8192, 4096, buf, NULL), 0,
           "the first connection is unaffected");

    /* Parallel connections writing and reading their own ranges. */
    struct hammer hm[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        hm[i] = (struct hammer){ .sock = sock, .id = i };
        pthread_create(&t[i], NULL, hammer_main, &hm[i]);
    }
    int bad = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        bad += hm[i].bad;
    }
    is_int(bad, 0, "4 connections x 200 write+read, all verified");

    /* qemu-io against the fixture, verified in the backend. */
    if (access("/usr/bin/qemu-io", X_OK) == 0) {
        char cmd[1024];
        snprintf(cmd, sizeof(cmd),
                 "qemu-io -f raw -c 'write -P 0x5a 6M 256k' -c 'write -z 7M 64k' "
                 "-c 'read -P 0x5a 6M 256k' -c 'read -P 0 7M 64k' -c 'flush' "
                 "'nbd+unix:///?socket=%s' >/dev/null",
                 sock);
        is_int(system(cmd), 0, "qemu-io write, write -z, read -P, flush");
        int same = 1;
        pthread_mutex_lock(&m->lock); /* orders us after the server's writes */
        for (uint32_t i = 0; i < 256 * 1024; i++)
            same &= m->data[(6 << 20) + i] == 0x5a;
        pthread_mutex_unlock(&m->lock);
        ok(same, "qemu-io's pattern is in the backend");
    } else {
        ok(1, "# SKIP qemu-io not installed");
        ok(1, "# SKIP qemu-io not installed");
    }

    /* DISC: in-flight requests finish, then the connection closes. */
    send_req(&c, NBD_CMD_READ, 0, 9, 0, 4096, NULL);
    send_req(&c, NBD_CMD_DISC, 0, 10, 0, 0, NULL);
    ok(read_reply(&c, buf, 0, 4096, &res) == 0 && res.cookie == 9 && res.error == 0,
       "the read before DISC is answered");
    ok(read(c.fd, buf, 1) == 0, "then the connection closes");
    close(c.fd);

    struct nbd_server_stats st;
    nbd_server_get_stats(srv, &st);
    ok(st.protocol_errors >= 3, "protocol errors counted (%llu)",
       (unsigned long long)st.protocol_errors);
    pthread_mutex_lock(&m->lock);
    int flushes = m->flushes;
    pthread_mutex_unlock(&m->lock);
    is_int(nbd_server_shutdown(srv), 0, "shutdown");
    ok(m->flushes == flushes + 1, "shutdown flushes the backend");
    ok(access(sock, F_OK) != 0, "the socket is removed");
    nbd_server_free(srv);

    /* A read-only server whose backend fails at offset 0. */
    srv = start(sock, m, &mem_ro_ops, MEM_SIZE);
    ok(client_open(&c, sock, true) == 0, "read-only export");
    ok((c.tflags & NBD_FLAG_READ_ONLY) && !(c.tflags & NBD_FLAG_SEND_TRIM) &&
           !(c.tflags & NBD_FLAG_SEND_WRITE_ZEROES),
       "read-only transmission flags");
    is_int(do_req(&c, NBD_CMD_WRITE, 0, 0, 4, pat, NULL), NBD_EPERM, "write: EPERM");
    is_int(do_req(&c, NBD_CMD_TRIM, 0, 0, 4096, NULL, NULL), NBD_EPERM, "trim: EPERM");
    is_int(do_req(&c, NBD_CMD_READ, 0, 65536, 4096, buf, NULL), 0, "read works");
    is_int(do_req(&c, NBD_CMD_READ, 0, 8192, 8192, buf, NULL), NBD_EIO,
           "a backend error (EBADMSG) is an error chunk with NBD_EIO");
    close(c.fd);
    /* A second server on the same live socket is refused. */
    struct nbd_backend be2 = { .ops = &mem_ro_ops, .handle = m, .size = MEM_SIZE };
    struct nbd_server_options o2 = { .export_name = NAME, .socket_path = sock };
    struct nbd_server *srv2 = NULL;
    is_int(nbd_server_new(&o2, &be2, &srv2), -EADDRINUSE, "a socket in use is refused");
    nbd_server_free(srv);

    /* A client silent in the handshake is dropped after the timeout. */
    struct nbd_backend be3 = { .ops = &mem_ro_ops, .handle = m, .size = MEM_SIZE };
    struct nbd_server_options o3 = { .export_name = NAME, .socket_path = sock,
                                     .handshake_timeout_ms = 200 };
    ok(nbd_server_new(&o3, &be3, &srv) == 0, "a server with a 200 ms handshake timeout");
    c2.fd = dial(sock);
    struct timeval tv = { .tv_sec = 20 };
    setsockopt(c2.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ok(rd(c2.fd, buf, 18) == 0 && read(c2.fd, buf, 1) == 0,
       "a silent client is disconnected (not left to hold a connection slot)");
    close(c2.fd);
    ok(client_open(&c, sock, true) == 0 &&
           do_req(&c, NBD_CMD_READ, 0, 65536, 4096, buf, NULL) == 0,
       "a client that talks is served, and may idle in transmission");
    usleep(400 * 1000);
    is_int(do_req(&c, NBD_CMD_READ, 0, 65536, 4096, buf, NULL), 0,
           "after 400 ms idle the connection still works");
    close(c.fd);
    nbd_server_free(srv);

    free(m->data);
    pthread_mutex_destroy(&m->lock);
    free(m);
    free(buf);
    free(pat);
}

/* ---- the snapshot backend over a real store ---- */

static void test_snapshot_backend(const char *dir)
{
    char path[256], sdir[256];
    struct store *s = NULL;
    struct blockmap *map = NULL;
    struct digest id;
    struct import_options io = { .format = IMAGE_FORMAT_RAW, .threads = 2 };
    struct import_stats ist;
    uint64_t size = (16ULL << 20) + 1536;
    uint8_t *img = xcalloc(1, size), *got = xmalloc(size);
    int fd;

    /* Data at a few places, holes elsewhere, a partial last block. */
    for (uint64_t off = 0; off < size; off++) {
        bool data = off < 300000 || (off >= (5 << 20) && off < (5 << 20) + 4096 * 3) ||
                    off >= (16ULL << 20) - 8192;
        if (data)
            img[off] = (uint8_t)(off * 2654435761U >> 13) | 1;
    }
    snprintf(path, sizeof(path), "%s/img.raw", dir);
    fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    ok(fd >= 0 && write_all(fd, img, size, 0) == 0, "write the image");
    close(fd);
    snprintf(sdir, sizeof(sdir), "%s/store", dir);
    ok(store_open(sdir, NULL, &s) == 0, "open a store");
    ok(snapshot_import(s, path, &io, &id, &map, &ist) == 0, "import");

    struct nbd_backend be;
    /* A cache smaller than most chunks: exercises eviction and the
     * uncached path. */
    nbd_snapshot_backend_new(s, map, 256 << 10, &be);
    is_int(be.size, size, "backend size");
    ok(be.read_only && be.can_multi_conn, "read-only, multi-conn");
    int same = 1;
    for (uint64_t off = 0; off < size; off += 65536) {
        uint32_t n = (uint32_t)MIN((uint64_t)65536, size - off);
        same &= be.ops->pread(be.handle, got, n, off) == 0 && memcmp(got, img + off, n) == 0;
    }
    ok(same, "64 KiB reads match the image");
    same = 1;
    for (uint64_t off = 1; off + 12345 < size; off += 777777)
        same &= be.ops->pread(be.handle, got, 12345, off) == 0 &&
                memcmp(got, img + off, 12345) == 0;
    ok(same, "unaligned reads match");
    ok(be.ops->pread(be.handle, got, 4096, 0) == 0 && be.ops->pread(be.handle, got, 4096, 0) == 0,
       "read the first block twice");
    struct nbd_snapshot_cache_stats cs;
    nbd_snapshot_backend_stats(&be, &cs);
    ok(cs.hits > 0 && cs.misses > 0 && cs.cached_bytes <= 256 << 10,
       "cache: %llu hits, %llu misses, %llu bytes held", (unsigned long long)cs.hits,
       (unsigned long long)cs.misses, (unsigned long long)cs.cached_bytes);

    struct nbd_extent ext[16];
    int n = be.ops->extents(be.handle, (uint32_t)MIN(size, (uint64_t)UINT32_MAX), 0, ext, 16);
    ok(n >= 4 && ext[0].offset == 0 && ext[0].flags == 0 && ext[0].length == 303104 &&
           ext[1].flags == (NBD_STATE_HOLE | NBD_STATE_ZERO) && ext[2].offset == 5 << 20 &&
           ext[2].length == 3 * 4096 && ext[n - 1].flags == 0 &&
           ext[n - 1].offset + ext[n - 1].length == size,
       "extents: data, hole, data, hole, data to the partial end (%d)", n);
    is_int(be.ops->extents(be.handle, 4096, 4096 * 100, ext, 1), 1, "one extent when max is 1");
    ok(be.ops->cache(be.handle, 1 << 20, 0) == 0, "cache a range");
    be.ops->close(be.handle);

    /* A writable volume over the same snapshot, through the server. */
    char vdir[256], sock[256];
    struct volume *v = NULL;
    struct nbd_server *srv = NULL;
    struct client c;
    struct result res;
    uint64_t vsize = 32ULL << 20; /* grown past the snapshot */
    snprintf(vdir, sizeof(vdir), "%s/vol", dir);
    snprintf(sock, sizeof(sock), "%s/v.sock", dir);
    mkdir_p(vdir);
    blockmap_load(s, &id, &map);
    ok(volume_open(s, vdir, map, &id, vsize, VOLUME_OPEN_CREATE, &v) == 0, "open a volume");
    nbd_volume_backend_new(v, false, &be);
    ok(!be.read_only && be.ops->pwrite && be.ops->trim && be.size == vsize,
       "volume backend: writable, %llu bytes", (unsigned long long)be.size);
    struct nbd_server_options o = { .export_name = "vol-0123456789abcdef0", .socket_path = sock };
    ok(nbd_server_new(&o, &be, &srv) == 0, "serve the volume");
    ok(client_open(&c, sock, true) == 0, "negotiate");
    ok(c.tflags & NBD_FLAG_SEND_TRIM && c.tflags & NBD_FLAG_CAN_MULTI_CONN &&
           !(c.tflags & NBD_FLAG_READ_ONLY), "volume transmission flags");
    uint8_t *w = xmalloc(1 << 20);
    memset(w, 0x77, 1 << 20);
    is_int(do_req(&c, NBD_CMD_WRITE, 0, 100000, 70000, w, NULL), 0, "unaligned write");
    is_int(do_req(&c, NBD_CMD_WRITE_ZEROES, 0, 4096 * 100, 8192, NULL, NULL), 0, "write zeroes");
    is_int(do_req(&c, NBD_CMD_TRIM, NBD_CMD_FLAG_FUA, 5 << 20, 4096, NULL, NULL), 0, "trim");
    is_int(do_req(&c, NBD_CMD_WRITE, 0, 20 << 20, 4096, w, NULL), 0, "write past the snapshot");
    is_int(do_req(&c, NBD_CMD_FLUSH, 0, 0, 0, NULL, NULL), 0, "flush");
    memcpy(w, img, 300000); /* expected: the image, then our changes */
    memset(w + 100000, 0x77, 70000);
    memset(w + 4096 * 100, 0, 8192);
    is_int(do_req(&c, NBD_CMD_READ, 0, 0, 300000, got, NULL), 0, "read the start back");
    ok(memcmp(got, w, 300000) == 0, "base data, our write and our zeros");
    is_int(do_req(&c, NBD_CMD_READ, 0, 5 << 20, 12288, got, NULL), 0, "read the trimmed range");
    ok(buf_is_zero(got, 4096) && memcmp(got + 4096, img + (5 << 20) + 4096, 8192) == 0,
       "trimmed block reads zeros, its neighbours base data");
    is_int(do_req(&c, NBD_CMD_BLOCK_STATUS, 0, (16 << 20) + 8192, 8 << 20, NULL, &res), 0,
           "block status past the snapshot");
    ok(res.nbs >= 4 && (res.bs[1] & NBD_STATE_ZERO) && res.bs[0] == (4 << 20) - 8192 &&
           res.bs[2] == 4096 && res.bs[3] == 0,
       "zeros up to our write, then data (%u %u %u %u)", res.bs[0], res.bs[1], res.bs[2],
       res.bs[3]);
    if (access("/usr/bin/qemu-io", X_OK) == 0) {
        char cmd[1024];
        snprintf(cmd, sizeof(cmd),
                 "qemu-io -f raw -c 'write -P 0x3c 24M 1M' -c 'write -z 25M 64k' "
                 "-c 'discard 26M 64k' -c 'read -P 0x3c 24M 1M' -c 'read -P 0 25M 128k' "
                 "-c flush 'nbd+unix:///?socket=%s' > %s/qemu-io.out 2>&1 && "
                 "! grep -q 'verification failed' %s/qemu-io.out",
                 sock, dir, dir);
        is_int(system(cmd), 0, "qemu-io write/zero/discard/read patterns on a volume");
    } else {
        ok(1, "# SKIP qemu-io not installed");
    }
    close(c.fd);
    is_int(nbd_server_shutdown(srv), 0, "shutdown flushes the volume");
    nbd_server_free(srv);
    /* Reopened, the flushed writes are there. */
    blockmap_load(s, &id, &map);
    ok(volume_open(s, vdir, map, &id, vsize, 0, &v) == 0, "reopen the volume");
    ok(volume_read(v, got, 4096, 24 << 20) == 0 && got[0] == 0x3c && got[4095] == 0x3c,
       "qemu-io's write persisted");
    ok(volume_read(v, got, 70000, 100000) == 0 && got[0] == 0x77 && got[69999] == 0x77,
       "our write persisted");
    volume_close(v);
    free(w);
    store_free(s);
    free(img);
    free(got);
}

int main(void)
{
    char dir[] = "/tmp/kiln-test-nbd.XXXXXX";

    signal(SIGPIPE, SIG_IGN);
    if (!mkdtemp(dir))
        return 1;
    test_proto();
    test_server(dir);
    test_snapshot_backend(dir);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        ok(0, "remove the test directory");
    return done_testing();
}
