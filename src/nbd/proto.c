/* The NBD wire protocol as pure functions over bytes: the greeting, the
 * option handler of the fixed newstyle handshake, the request parser and
 * validator, and the one errno -> NBD error map.  No I/O happens here;
 * server.c moves the bytes.  See proto.h and docs/nbd.md.
 */
#include <errno.h>
#include <string.h>

#include "common/util.h"
#include "nbd/proto.h"

void nbd_buf_release(struct nbd_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static uint8_t *buf_grow(struct nbd_buf *b, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
    }
    uint8_t *p = b->data + b->len;
    b->len += n;
    return p;
}

static void buf_put(struct nbd_buf *b, const void *p, size_t n)
{
    if (n)
        memcpy(buf_grow(b, n), p, n);
}

void nbd_greeting(struct nbd_buf *out)
{
    uint8_t *p = buf_grow(out, 18);

    nbd_put64(p, NBD_MAGIC);
    nbd_put64(p + 8, NBD_IHAVEOPT);
    nbd_put16(p + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
}

int nbd_client_flags_parse(const uint8_t buf[4], struct nbd_session *s)
{
    uint32_t f = nbd_get32(buf);

    if (f & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
        return -EPROTO;
    s->client_flags = f;
    s->no_zeroes = f & NBD_FLAG_C_NO_ZEROES;
    return 0;
}

int nbd_option_header_parse(const uint8_t buf[NBD_OPTION_HEADER_SIZE], uint32_t *ret_option,
                            uint32_t *ret_len)
{
    uint32_t len;

    if (nbd_get64(buf) != NBD_IHAVEOPT)
        return -EPROTO;
    len = nbd_get32(buf + 12);
    if (len > NBD_OPTION_MAX)
        return -E2BIG;
    *ret_option = nbd_get32(buf + 8);
    *ret_len = len;
    return 0;
}

/* One option reply: header and `len` bytes of data. */
static void reply(struct nbd_buf *out, uint32_t option, uint32_t type, const void *data,
                  uint32_t len)
{
    uint8_t *p = buf_grow(out, 20);

    nbd_put64(p, NBD_REP_MAGIC);
    nbd_put32(p + 8, option);
    nbd_put32(p + 12, type);
    nbd_put32(p + 16, len);
    buf_put(out, data, len);
}

/* An error reply with a message for the human at the client. */
static void reply_error(struct nbd_buf *out, uint32_t option, uint32_t type, const char *msg)
{
    reply(out, option, type, msg, (uint32_t)strlen(msg));
}

static bool name_matches(const struct nbd_export_info *ex, const uint8_t *name, uint32_t len)
{
    return len == 0 || (len == strlen(ex->name) && memcmp(name, ex->name, len) == 0);
}

static void reply_info_string(struct nbd_buf *out, uint32_t option, uint16_t type,
                              const char *s)
{
    size_t n = strlen(s);
    uint8_t *p;

    if (n > NBD_STRING_MAX)
        n = NBD_STRING_MAX;
    p = buf_grow(out, 20 + 2 + n);
    nbd_put64(p, NBD_REP_MAGIC);
    nbd_put32(p + 8, option);
    nbd_put32(p + 12, NBD_REP_INFO);
    nbd_put32(p + 16, (uint32_t)(2 + n));
    nbd_put16(p + 20, type);
    memcpy(p + 22, s, n);
}

/* NBD_OPT_INFO and NBD_OPT_GO: name length, name, count, info requests. */
static int opt_info_go(struct nbd_session *s, const struct nbd_export_info *ex, uint32_t option,
                       const uint8_t *d, uint32_t len, struct nbd_buf *out)
{
    uint32_t namelen;
    uint16_t nreq;
    bool want_name = false, want_desc = false;
    uint8_t info[14];

    if (len < 6 || (namelen = nbd_get32(d)) > len - 6 || namelen > NBD_STRING_MAX) {
        reply_error(out, option, NBD_REP_ERR_INVALID, "malformed export name");
        return NBD_OPTION_CONTINUE;
    }
    nreq = nbd_get16(d + 4 + namelen);
    if ((uint32_t)nreq * 2 != len - 6 - namelen) {
        reply_error(out, option, NBD_REP_ERR_INVALID, "malformed information request list");
        return NBD_OPTION_CONTINUE;
    }
    if (!name_matches(ex, d + 4, namelen)) {
        reply_error(out, option, NBD_REP_ERR_UNKNOWN, "no such export");
        return NBD_OPTION_CONTINUE;
    }
    for (uint16_t i = 0; i < nreq; i++) {
        uint16_t t = nbd_get16(d + 6 + namelen + 2 * i);
        want_name |= t == NBD_INFO_NAME;
        want_desc |= t == NBD_INFO_DESCRIPTION;
    }
    nbd_put16(info, NBD_INFO_EXPORT);
    nbd_put64(info + 2, ex->size);
    nbd_put16(info + 10, ex->tflags);
    reply(out, option, NBD_REP_INFO, info, 12);
    /* Always sent: kiln's maximum is below the default "unlimited". */
    nbd_put16(info, NBD_INFO_BLOCK_SIZE);
    nbd_put32(info + 2, NBD_MIN_BLOCK);
    nbd_put32(info + 6, NBD_PREF_BLOCK);
    nbd_put32(info + 10, NBD_MAX_BLOCK);
    reply(out, option, NBD_REP_INFO, info, 14);
    if (want_name)
        reply_info_string(out, option, NBD_INFO_NAME, ex->name);
    if (want_desc && ex->description)
        reply_info_string(out, option, NBD_INFO_DESCRIPTION, ex->description);
    reply(out, option, NBD_REP_ACK, NULL, 0);
    return option == NBD_OPT_GO ? NBD_OPTION_TRANSMISSION : NBD_OPTION_CONTINUE;
}

static void reply_meta(struct nbd_buf *out, uint32_t option, uint32_t id, const char *name)
{
    size_t n = strlen(name);
    uint8_t *p = buf_grow(out, 20 + 4 + n);

    nbd_put64(p, NBD_REP_MAGIC);
    nbd_put32(p + 8, option);
    nbd_put32(p + 12, NBD_REP_META_CONTEXT);
    nbd_put32(p + 16, (uint32_t)(4 + n));
    nbd_put32(p + 20, id);
    memcpy(p + 24, name, n);
}

/* NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: export name
 * length, name, query count, queries (length, string).  kiln knows one
 * context, base:allocation. */
static int opt_meta(struct nbd_session *s, const struct nbd_export_info *ex, uint32_t option,
                    const uint8_t *d, uint32_t len, struct nbd_buf *out)
{
    bool set = option == NBD_OPT_SET_META_CONTEXT;
    uint32_t namelen, nq, pos;
    bool match = false;

    if (set)
        s->base_allocation = false; /* replaced even when this fails */
    if (!s->structured) {
        reply_error(out, option, NBD_REP_ERR_INVALID, "structured replies not negotiated");
        return NBD_OPTION_CONTINUE;
    }
    if (len < 8 || (namelen = nbd_get32(d)) > len - 8 || namelen > NBD_STRING_MAX) {
        reply_error(out, option, NBD_REP_ERR_INVALID, "malformed export name");
        return NBD_OPTION_CONTINUE;
    }
    nq = nbd_get32(d + 4 + namelen);
    pos = 8 + namelen;
    /* Check the whole request before answering any of it. */
    for (uint32_t i = 0; i < nq; i++) {
        uint32_t ql;
        if (len - pos < 4 || (ql = nbd_get32(d + pos)) > len - pos - 4 ||
            ql > NBD_STRING_MAX) {
            reply_error(out, option, NBD_REP_ERR_INVALID, "malformed query list");
            return NBD_OPTION_CONTINUE;
        }
        const uint8_t *q = d + pos + 4;
        if (ql == strlen("base:allocation") && memcmp(q, "base:allocation", ql) == 0)
            match = true;
        else if (!set && ql == 5 && memcmp(q, "base:", 5) == 0)
            match = true; /* the namespace as a wildcard, LIST only */
        pos += 4 + ql;
    }
    if (pos != len) {
        reply_error(out, option, NBD_REP_ERR_INVALID, "trailing bytes after the queries");
        return NBD_OPTION_CONTINUE;
    }
    if (!name_matches(ex, d + 4, namelen)) {
        reply_error(out, option, NBD_REP_ERR_UNKNOWN, "no such export");
        return NBD_OPTION_CONTINUE;
    }
    if (nq == 0 && !set)
        match = true; /* LIST with no query: every context */
    if (match) {
        reply_meta(out, option, set ? NBD_META_BASE_ALLOCATION : 0, "base:allocation");
        if (set)
            s->base_allocation = true;
    }
    reply(out, option, NBD_REP_ACK, NULL, 0);
    return NBD_OPTION_CONTINUE;
}

int nbd_option_handle(struct nbd_session *s, const struct nbd_export_info *ex, uint32_t option,
                      const uint8_t *data, uint32_t len, struct nbd_buf *out)
{
    s->n_options++;
    switch (option) {
    case NBD_OPT_EXPORT_NAME: {
        uint8_t *p;
        /* No way to say no: a wrong name closes the connection. */
        if (!name_matches(ex, data, len))
            return NBD_OPTION_CLOSE;
        p = buf_grow(out, 10);
        nbd_put64(p, ex->size);
        nbd_put16(p + 8, ex->tflags);
        if (!s->no_zeroes)
            memset(buf_grow(out, 124), 0, 124);
        return NBD_OPTION_TRANSMISSION;
    }
    case NBD_OPT_ABORT:
        reply(out, option, NBD_REP_ACK, NULL, 0);
        return NBD_OPTION_CLOSE;
    case NBD_OPT_LIST: {
        size_t n = strlen(ex->name);
        uint8_t *p;
        if (len) {
            reply_error(out, option, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
            return NBD_OPTION_CONTINUE;
        }
        p = buf_grow(out, 20 + 4 + n);
        nbd_put64(p, NBD_REP_MAGIC);
        nbd_put32(p + 8, option);
        nbd_put32(p + 12, NBD_REP_SERVER);
        nbd_put32(p + 16, (uint32_t)(4 + n));
        nbd_put32(p + 20, (uint32_t)n);
        memcpy(p + 24, ex->name, n);
        reply(out, option, NBD_REP_ACK, NULL, 0);
        return NBD_OPTION_CONTINUE;
    }
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        return opt_info_go(s, ex, option, data, len, out);
    case NBD_OPT_STRUCTURED_REPLY:
        if (len) {
            reply_error(out, option, NBD_REP_ERR_INVALID,
                        "NBD_OPT_STRUCTURED_REPLY takes no data");
            return NBD_OPTION_CONTINUE;
        }
        s->structured = true;
        reply(out, option, NBD_REP_ACK, NULL, 0);
        return NBD_OPTION_CONTINUE;
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        return opt_meta(s, ex, option, data, len, out);
    case NBD_OPT_STARTTLS:
        reply_error(out, option, NBD_REP_ERR_POLICY, "TLS is not supported");
        return NBD_OPTION_CONTINUE;
    default:
        reply_error(out, option, NBD_REP_ERR_UNSUP, "unknown option");
        return NBD_OPTION_CONTINUE;
    }
}

int nbd_request_parse(const uint8_t buf[NBD_REQUEST_SIZE], struct nbd_request *ret)
{
    if (nbd_get32(buf) != NBD_REQUEST_MAGIC)
        return -EPROTO;
    ret->flags = nbd_get16(buf + 4);
    ret->type = nbd_get16(buf + 6);
    ret->cookie = nbd_get64(buf + 8);
    ret->offset = nbd_get64(buf + 16);
    ret->count = nbd_get32(buf + 24);
    return 0;
}

#define REFUSE(err, why)                                                      \
    do {                                                                      \
        if (ret_why)                                                          \
            *ret_why = (why);                                                 \
        return (err);                                                         \
    } while (0)

uint32_t nbd_request_validate(const struct nbd_request *rq, const struct nbd_export_info *ex,
                              const struct nbd_session *s, const char **ret_why)
{
    bool ro = ex->tflags & NBD_FLAG_READ_ONLY;
    uint16_t allowed = (ex->tflags & NBD_FLAG_SEND_FUA) ? NBD_CMD_FLAG_FUA : 0;
    bool ranged = true;

    switch (rq->type) {
    case NBD_CMD_READ:
        break;
    case NBD_CMD_WRITE:
    case NBD_CMD_TRIM:
        if (ro)
            REFUSE(NBD_EPERM, "the export is read-only");
        if (rq->type == NBD_CMD_TRIM && !(ex->tflags & NBD_FLAG_SEND_TRIM))
            REFUSE(NBD_EINVAL, "trim is not supported by this export");
        break;
    case NBD_CMD_WRITE_ZEROES:
        if (ro)
            REFUSE(NBD_EPERM, "the export is read-only");
        if (!(ex->tflags & NBD_FLAG_SEND_WRITE_ZEROES))
            REFUSE(NBD_EINVAL, "write zeroes is not supported by this export");
        allowed |= NBD_CMD_FLAG_NO_HOLE;
        break;
    case NBD_CMD_CACHE:
        if (!(ex->tflags & NBD_FLAG_SEND_CACHE))
            REFUSE(NBD_EINVAL, "cache is not supported by this export");
        break;
    case NBD_CMD_BLOCK_STATUS:
        if (!s->structured || !s->base_allocation)
            REFUSE(NBD_EINVAL, "block status needs base:allocation selected in the handshake");
        allowed |= NBD_CMD_FLAG_REQ_ONE;
        break;
    case NBD_CMD_FLUSH:
        if (!(ex->tflags & NBD_FLAG_SEND_FLUSH))
            REFUSE(NBD_EINVAL, "flush is not supported by this export");
        if (rq->offset || rq->count)
            REFUSE(NBD_EINVAL, "flush with a nonzero offset or length");
        ranged = false;
        break;
    case NBD_CMD_DISC:
        return 0;
    default:
        REFUSE(NBD_EINVAL, "unknown command");
    }
    if (rq->flags & ~allowed)
        REFUSE(NBD_EINVAL, "a command flag not valid for this command");
    if (!ranged)
        return 0;
    if (rq->count == 0)
        REFUSE(NBD_EINVAL, "zero length");
    if (rq->offset > ex->size || rq->count > ex->size - rq->offset)
        REFUSE(rq->type == NBD_CMD_WRITE || rq->type == NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC
                                                                            : NBD_EINVAL,
               "offset and length reach past the end of the export");
    /* Payloads are capped; TRIM, WRITE_ZEROES, CACHE and BLOCK_STATUS
     * carry none and take any length within the export. */
    if ((rq->type == NBD_CMD_READ || rq->type == NBD_CMD_WRITE) && rq->count > NBD_MAX_BLOCK)
        REFUSE(NBD_EINVAL, "length above the 32 MiB maximum block size");
    return 0;
}

uint32_t nbd_errno(int err)
{
    switch (err < 0 ? -err : err) {
    case 0:
        return 0;
    case EPERM:
    case EROFS:
    case EACCES:
        return NBD_EPERM;
    case ENOMEM:
        return NBD_ENOMEM;
    case EINVAL:
    case ERANGE:
        return NBD_EINVAL;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return NBD_ENOSPC;
    case EOVERFLOW:
        return NBD_EOVERFLOW;
    case ENOTSUP:
        return NBD_ENOTSUP;
    case ESHUTDOWN:
        return NBD_ESHUTDOWN;
    default: /* EIO, EBADMSG (a corrupt chunk), ENOENT (a missing one), ... */
        return NBD_EIO;
    }
}

const char *nbd_cmd_name(uint16_t type)
{
    static const char *const names[] = { "READ",  "WRITE", "DISC",         "FLUSH",
                                         "TRIM",  "CACHE", "WRITE_ZEROES", "BLOCK_STATUS" };
    return type < sizeof(names) / sizeof(names[0]) ? names[type] : "unknown";
}

const char *nbd_option_name(uint32_t option)
{
    static const char *const names[] = { NULL,   "EXPORT_NAME", "ABORT",   "LIST",
                                         NULL,   "STARTTLS",    "INFO",    "GO",
                                         "STRUCTURED_REPLY",    "LIST_META_CONTEXT",
                                         "SET_META_CONTEXT" };
    if (option < sizeof(names) / sizeof(names[0]) && names[option])
        return names[option];
    return "unknown";
}
