/* The kiln-agent wire protocol: frames, message types and the pure
 * encoders and parsers both ends are built from (proto.c).
 *
 * This file and proto.c are compiled twice: into kiln-agent (a static
 * program inside the guest, libc only) and into the host's kiln-vm library
 * (src/vm/agent-client.c).  So nothing here touches a file descriptor or
 * calls anything outside libc, and the fuzz target (tests/fuzz/fuzz-agent.c)
 * drives exactly the code both ends run.  docs/agent.md is the protocol's
 * description; keep the two in step.
 *
 * A frame is a 16-byte header, all integers big-endian:
 *
 *   u32 magic  "KAG1"      u16 type   u16 flags (0)
 *   u32 id     request id  u32 length of the payload (<= AGENT_MAX_PAYLOAD)
 *
 * followed by `length` payload bytes.  Strings in payloads are a u32 length
 * and that many bytes (no NUL inside, none at the end).
 *
 * Parsers return >= 0 or -errno: -EBADMSG for malformed bytes (bad magic,
 * truncated or trailing payload, a NUL in a string), -EMSGSIZE for a length
 * over a limit.  They never read past the buffer they are given.
 */
#ifndef KILN_AGENT_PROTO_H
#define KILN_AGENT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_MAGIC 0x4b414731U /* "KAG1" */
#define AGENT_VERSION 1U
#define AGENT_HEADER_SIZE 16
#define AGENT_MAX_PAYLOAD (1U << 20) /* any frame */
#define AGENT_CHUNK (64U << 10)      /* data, output and stdin chunks */
#define AGENT_MAX_ARGS 256           /* argv and env entries, each */
#define AGENT_MAX_STRING 4096        /* one argv, env or path string */

/* The host sends requests (< 0x8000); the agent answers (>= 0x8000) with
 * the request's id. */
enum agent_type {
    AGENT_HELLO = 1,     /* u32 version */
    AGENT_EXEC = 2,      /* u32 flags (AGENT_EXEC_STDIN), argv, env (string lists) */
    AGENT_STDIN = 3,     /* bytes for the running exec; empty = end of input */
    AGENT_PUT = 4,       /* u32 mode, string path: start writing a file */
    AGENT_PUT_DATA = 5,  /* bytes, appended */
    AGENT_PUT_END = 6,   /* u32 flags (AGENT_PUT_FSYNC): close and rename into place */
    AGENT_GET = 7,       /* string path */
    AGENT_SYNC = 8,      /* empty: sync() */
    AGENT_FREEZE = 9,    /* string mount point: FIFREEZE */
    AGENT_THAW = 10,     /* string mount point: FITHAW */
    AGENT_SHUTDOWN = 11, /* u32 AGENT_SHUTDOWN_POWEROFF or _REBOOT */

    AGENT_OK = 0x8000,          /* empty */
    AGENT_HELLO_REPLY = 0x8001, /* u32 version, string description (uname) */
    AGENT_EXEC_STARTED = 0x8002, /* u32 pid */
    AGENT_OUTPUT = 0x8003,      /* u32 stream (1 stdout, 2 stderr), bytes */
    AGENT_EXIT = 0x8004,        /* u32 how (0 exited, 1 killed by signal), u32 code */
    AGENT_DATA = 0x8005,        /* bytes of a file being got */
    AGENT_DATA_END = 0x8006,    /* u32 mode, u64 size: the file was all sent */
    AGENT_ERROR = 0x80ff,       /* u32 errno (Linux numbering), string message */
};

#define AGENT_EXEC_STDIN 1U   /* stdin follows in AGENT_STDIN frames; else /dev/null */
#define AGENT_PUT_FSYNC 1U    /* fsync the file and its directory */
#define AGENT_SHUTDOWN_POWEROFF 0U
#define AGENT_SHUTDOWN_REBOOT 1U

struct agent_header {
    uint16_t type;
    uint16_t flags;
    uint32_t id;
    uint32_t length;
};

/* Decode a header from the first AGENT_HEADER_SIZE bytes of buf: -EBADMSG
 * for a bad magic or non-zero flags, -EMSGSIZE for a length over
 * AGENT_MAX_PAYLOAD. */
int agent_header_decode(const uint8_t *buf, struct agent_header *ret);
void agent_header_encode(uint8_t *buf, uint16_t type, uint32_t id, uint32_t length);

/* The offset of the first possible frame start in buf (the first byte of
 * the magic, or where a partial magic at the end begins): used to skip
 * garbage left by a peer that went away mid-frame. */
size_t agent_resync(const uint8_t *buf, size_t len);

/* ---- building a frame ---- */

/* A frame under construction: header space first, then the payload. */
struct agent_msg {
    uint8_t *data;
    size_t len, cap;
    bool failed; /* out of memory or over AGENT_MAX_PAYLOAD */
};

void agent_msg_init(struct agent_msg *m, uint16_t type, uint32_t id);
void agent_msg_put_u32(struct agent_msg *m, uint32_t v);
void agent_msg_put_u64(struct agent_msg *m, uint64_t v);
void agent_msg_put_bytes(struct agent_msg *m, const void *p, size_t n);
void agent_msg_put_string(struct agent_msg *m, const char *s);
/* Fill in the length: 0, or -ENOMEM / -EMSGSIZE if any put failed. */
int agent_msg_finish(struct agent_msg *m);
void agent_msg_release(struct agent_msg *m);

/* ---- reading a payload ---- */

struct agent_cursor {
    const uint8_t *p;
    size_t left;
};

int agent_get_u32(struct agent_cursor *c, uint32_t *ret);
int agent_get_u64(struct agent_cursor *c, uint64_t *ret);
/* A string of at most `max` bytes with no NUL, copied to a new
 * NUL-terminated buffer (caller frees). */
int agent_get_string(struct agent_cursor *c, size_t max, char **ret);
/* -EBADMSG unless the payload was consumed exactly. */
int agent_get_end(const struct agent_cursor *c);

/* An AGENT_EXEC payload: argv (1..AGENT_MAX_ARGS entries) and env (0..)
 * as NULL-terminated arrays the caller frees with agent_strv_free(). */
struct agent_exec_request {
    uint32_t flags;
    char **argv;
    char **env;
};
int agent_exec_parse(const uint8_t *p, size_t len, struct agent_exec_request *ret);
void agent_exec_request_release(struct agent_exec_request *e);
/* Encode an AGENT_EXEC frame (env may be NULL). */
int agent_exec_encode(struct agent_msg *m, uint32_t id, uint32_t flags, char *const *argv,
                      char *const *env);

/* An AGENT_ERROR payload: errno and message (caller frees). */
int agent_error_parse(const uint8_t *p, size_t len, uint32_t *ret_errno, char **ret_message);

void agent_strv_free(char **v);

#endif
