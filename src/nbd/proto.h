/* The NBD wire protocol: constants, and the pure parsers and encoders the
 * server is built from (proto.c).
 *
 * Everything here works on bytes in memory and never touches a socket, so
 * that the fuzz target (tests/fuzz/fuzz-nbd.c) drives exactly the code the
 * server runs: the option handler (handshake phase) and the request parser
 * and validator (transmission phase).  The protocol is
 * NetworkBlockDevice/nbd doc/proto.md; docs/nbd.md says what kiln supports.
 */
#ifndef KILN_NBD_PROTO_H
#define KILN_NBD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- handshake ---- */
#define NBD_MAGIC 0x4e42444d41474943ULL    /* "NBDMAGIC" */
#define NBD_IHAVEOPT 0x49484156454f5054ULL /* "IHAVEOPT" */
#define NBD_REP_MAGIC 0x3e889045565a9ULL

#define NBD_FLAG_FIXED_NEWSTYLE (1U << 0)
#define NBD_FLAG_NO_ZEROES (1U << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1U << 0)
#define NBD_FLAG_C_NO_ZEROES (1U << 1)

/* transmission flags */
#define NBD_FLAG_HAS_FLAGS (1U << 0)
#define NBD_FLAG_READ_ONLY (1U << 1)
#define NBD_FLAG_SEND_FLUSH (1U << 2)
#define NBD_FLAG_SEND_FUA (1U << 3)
#define NBD_FLAG_ROTATIONAL (1U << 4)
#define NBD_FLAG_SEND_TRIM (1U << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1U << 6)
#define NBD_FLAG_SEND_DF (1U << 7)
#define NBD_FLAG_CAN_MULTI_CONN (1U << 8)
#define NBD_FLAG_SEND_CACHE (1U << 10)

enum {
    NBD_OPT_EXPORT_NAME = 1,
    NBD_OPT_ABORT = 2,
    NBD_OPT_LIST = 3,
    NBD_OPT_STARTTLS = 5,
    NBD_OPT_INFO = 6,
    NBD_OPT_GO = 7,
    NBD_OPT_STRUCTURED_REPLY = 8,
    NBD_OPT_LIST_META_CONTEXT = 9,
    NBD_OPT_SET_META_CONTEXT = 10,
};

#define NBD_REP_ACK 1U
#define NBD_REP_SERVER 2U
#define NBD_REP_INFO 3U
#define NBD_REP_META_CONTEXT 4U
#define NBD_REP_ERR(n) ((1U << 31) | (n))
#define NBD_REP_ERR_UNSUP NBD_REP_ERR(1)
#define NBD_REP_ERR_POLICY NBD_REP_ERR(2)
#define NBD_REP_ERR_INVALID NBD_REP_ERR(3)
#define NBD_REP_ERR_UNKNOWN NBD_REP_ERR(6)
#define NBD_REP_ERR_SHUTDOWN NBD_REP_ERR(7)
#define NBD_REP_ERR_TOO_BIG NBD_REP_ERR(9)

#define NBD_INFO_EXPORT 0
#define NBD_INFO_NAME 1
#define NBD_INFO_DESCRIPTION 2
#define NBD_INFO_BLOCK_SIZE 3

/* ---- transmission ---- */
#define NBD_REQUEST_MAGIC 0x25609513U
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698U
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efU

enum {
    NBD_CMD_READ = 0,
    NBD_CMD_WRITE = 1,
    NBD_CMD_DISC = 2,
    NBD_CMD_FLUSH = 3,
    NBD_CMD_TRIM = 4,
    NBD_CMD_CACHE = 5,
    NBD_CMD_WRITE_ZEROES = 6,
    NBD_CMD_BLOCK_STATUS = 7,
};

#define NBD_CMD_FLAG_FUA (1U << 0)
#define NBD_CMD_FLAG_NO_HOLE (1U << 1)
#define NBD_CMD_FLAG_DF (1U << 2)
#define NBD_CMD_FLAG_REQ_ONE (1U << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1U << 4)

#define NBD_REPLY_FLAG_DONE (1U << 0)
#define NBD_REPLY_TYPE_NONE 0
#define NBD_REPLY_TYPE_OFFSET_DATA 1
#define NBD_REPLY_TYPE_OFFSET_HOLE 2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_ERROR ((1U << 15) | 1)

#define NBD_STATE_HOLE (1U << 0)
#define NBD_STATE_ZERO (1U << 1)

/* NBD error values (not the host's errno values: nbd_errno() maps). */
#define NBD_EPERM 1
#define NBD_EIO 5
#define NBD_ENOMEM 12
#define NBD_EINVAL 22
#define NBD_ENOSPC 28
#define NBD_EOVERFLOW 75
#define NBD_ENOTSUP 95
#define NBD_ESHUTDOWN 108

#define NBD_OPTION_HEADER_SIZE 16 /* IHAVEOPT, option, length */
#define NBD_REQUEST_SIZE 28
#define NBD_SIMPLE_REPLY_SIZE 16
#define NBD_STRUCTURED_REPLY_SIZE 20

/* Limits kiln enforces. */
#define NBD_OPTION_MAX (64U << 10)  /* option data; longer: hard disconnect */
#define NBD_STRING_MAX 4096          /* export names, queries (the spec's) */
#define NBD_MIN_BLOCK 1U
#define NBD_PREF_BLOCK 4096U
#define NBD_MAX_BLOCK (32U << 20)    /* READ and WRITE payloads */
#define NBD_OPTIONS_MAX 1024         /* options per handshake */

/* The context id kiln gives base:allocation. */
#define NBD_META_BASE_ALLOCATION 1

/* What the server tells clients about its one export. */
struct nbd_export_info {
    const char *name;        /* canonical name; "" (the default) also selects it */
    const char *description; /* may be NULL */
    uint64_t size;
    uint16_t tflags;         /* transmission flags (NBD_FLAG_*) */
};

/* Negotiated state of one connection. */
struct nbd_session {
    uint32_t client_flags;
    bool no_zeroes;
    bool structured;     /* NBD_OPT_STRUCTURED_REPLY acknowledged */
    bool base_allocation; /* base:allocation selected */
    unsigned n_options;
};

/* A growable output buffer for option replies (small, bounded sizes). */
struct nbd_buf {
    uint8_t *data;
    size_t len, cap;
};

void nbd_buf_release(struct nbd_buf *b);

/* Handshake: the server's greeting (18 bytes) into out. */
void nbd_greeting(struct nbd_buf *out);

/* Check the client's 4-byte flags: 0, or -EPROTO (unknown flags: the
 * server must close the connection). */
int nbd_client_flags_parse(const uint8_t buf[4], struct nbd_session *s);

/* Parse a 16-byte option header: 0, or -EPROTO for a bad magic,
 * -E2BIG when the data is longer than NBD_OPTION_MAX. */
int nbd_option_header_parse(const uint8_t buf[NBD_OPTION_HEADER_SIZE], uint32_t *ret_option,
                            uint32_t *ret_len);

enum nbd_option_result {
    NBD_OPTION_CONTINUE,     /* more options follow */
    NBD_OPTION_TRANSMISSION, /* GO or EXPORT_NAME accepted: transmission */
    NBD_OPTION_CLOSE,        /* close the connection (ABORT, bad EXPORT_NAME) */
};

/* Handle one option with its data (any bytes): append the reply bytes to
 * `out`, update the session.  Returns an nbd_option_result. */
int nbd_option_handle(struct nbd_session *s, const struct nbd_export_info *ex, uint32_t option,
                      const uint8_t *data, uint32_t len, struct nbd_buf *out);

struct nbd_request {
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint64_t offset;
    uint32_t count;
};

/* Parse a 28-byte request header: 0, or -EPROTO (bad magic). */
int nbd_request_parse(const uint8_t buf[NBD_REQUEST_SIZE], struct nbd_request *ret);

/* Validate a parsed request against the export and the session before
 * dispatch: 0 if it may run, else the NBD error (NBD_EINVAL, NBD_EPERM,
 * NBD_ENOSPC) to reply with, and *ret_why (may be NULL) says why (a static
 * string for the client and the log). */
uint32_t nbd_request_validate(const struct nbd_request *rq, const struct nbd_export_info *ex,
                              const struct nbd_session *s, const char **ret_why);

/* The one errno -> NBD error map (positive or negative errno). */
uint32_t nbd_errno(int err);

/* Name of a command or option for logs ("READ", "GO", "unknown"). */
const char *nbd_cmd_name(uint16_t type);
const char *nbd_option_name(uint32_t option);

/* Big-endian helpers. */
static inline void nbd_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void nbd_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline void nbd_put64(uint8_t *p, uint64_t v)
{
    nbd_put32(p, (uint32_t)(v >> 32));
    nbd_put32(p + 4, (uint32_t)v);
}
static inline uint16_t nbd_get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}
static inline uint32_t nbd_get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t nbd_get64(const uint8_t *p)
{
    return ((uint64_t)nbd_get32(p) << 32) | nbd_get32(p + 4);
}

#endif
