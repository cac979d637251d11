/* A small QMP client: greeting, capabilities negotiation, commands without
 * arguments, events noted on the way.
 *
 * QEMU writes one JSON object per line.  qmp_message_parse() is a strict
 * JSON parser (pure, fuzzed by tests/fuzz/fuzz-qmp.c) that validates the
 * whole text and keeps only what kiln acts on: the kind of message, an
 * event's name, an error's class and description, query-status's answer
 * and a string "id".  Anything QEMU could send is bounded: a line over
 * 1 MiB or nesting over 32 levels is refused, never trusted.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "vm/vm.h"

#define MAX_MESSAGE (1U << 20)
#define MAX_DEPTH 32

/* ---- the parser ---- */

struct parser {
    const char *p, *end;
    struct qmp_message *m;
    bool greeting, has_return, has_error;
};

enum ctx { CTX_NONE, CTX_TOP, CTX_ERROR, CTX_RETURN };

static void skip_ws(struct parser *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int hex4(const char *p, unsigned *ret)
{
    unsigned v = 0;

    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -EBADMSG;
    }
    *ret = v;
    return 0;
}

static void put_utf8(char *out, size_t *n, unsigned cp)
{
    if (cp < 0x80) {
        out[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*n)++] = (char)(0xc0 | cp >> 6);
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out[(*n)++] = (char)(0xe0 | cp >> 12);
        out[(*n)++] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        out[(*n)++] = (char)(0xf0 | cp >> 18);
        out[(*n)++] = (char)(0x80 | (cp >> 12 & 0x3f));
        out[(*n)++] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    }
}

/* A string at s->p (the opening quote); *ret (may be NULL: validate only)
 * gets it unescaped.  A \u0000 is refused: kiln's strings are C strings. */
static int parse_string(struct parser *s, char **ret)
{
    const char *start;
    char *out;
    size_t n = 0;

    if (s->p >= s->end || *s->p != '"')
        return -EBADMSG;
    start = ++s->p;
    while (s->p < s->end && *s->p != '"') {
        if ((unsigned char)*s->p < 0x20)
            return -EBADMSG;
        if (*s->p == '\\')
            s->p++;
        s->p++;
    }
    if (s->p >= s->end)
        return -EBADMSG;
    /* Unescaping never makes a string longer than its escaped form. */
    out = xmalloc((size_t)(s->p - start) + 1);
    for (const char *q = start; q < s->p; q++) {
        if (*q != '\\') {
            out[n++] = *q;
            continue;
        }
        q++;
        switch (*q) {
        case '"': out[n++] = '"'; break;
        case '\\': out[n++] = '\\'; break;
        case '/': out[n++] = '/'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (s->p - q < 5 || hex4(q + 1, &cp) < 0)
                goto bad;
            q += 4;
            if (cp >= 0xd800 && cp < 0xdc00) {
                if (s->p - q < 7 || q[1] != '\\' || q[2] != 'u' || hex4(q + 3, &lo) < 0 ||
                    lo < 0xdc00 || lo >= 0xe000)
                    goto bad;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                q += 6;
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                goto bad;
            }
            if (cp == 0)
                goto bad;
            /* "\uXXXX" is 6 bytes, at most 3 of UTF-8; a pair is 12 for 4. */
            put_utf8(out, &n, cp);
            break;
        }
        default:
            goto bad;
        }
    }
    out[n] = 0;
    s->p++;
    if (ret)
        *ret = out;
    else
        free(out);
    return 0;
bad:
    free(out);
    return -EBADMSG;
}

static int parse_value(struct parser *s, int depth, enum ctx ctx, const char *key);

static int parse_number(struct parser *s)
{
    const char *start = s->p;

    if (s->p < s->end && *s->p == '-')
        s->p++;
    if (s->p >= s->end)
        return -EBADMSG;
    if (*s->p == '0') {
        s->p++;
    } else if (*s->p >= '1' && *s->p <= '9') {
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
            s->p++;
    } else {
        return -EBADMSG;
    }
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (s->p >= s->end || *s->p < '0' || *s->p > '9')
            return -EBADMSG;
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
            s->p++;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (s->p >= s->end || *s->p < '0' || *s->p > '9')
            return -EBADMSG;
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
            s->p++;
    }
    return s->p > start ? 0 : -EBADMSG;
}

static int literal(struct parser *s, const char *word)
{
    size_t n = strlen(word);

    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return -EBADMSG;
    s->p += n;
    return 0;
}

/* Keep a string member the message's kind needs; a repeated member keeps
 * the last value. */
static void keep(char **slot, char *v)
{
    free(*slot);
    *slot = v;
}

static int parse_member_value(struct parser *s, int depth, enum ctx ctx, const char *key)
{
    struct qmp_message *m = s->m;
    char **slot = NULL;
    char *v = NULL;
    int r;

    skip_ws(s);
    if (ctx == CTX_TOP && s->p < s->end && *s->p == '"') {
        if (strcmp(key, "event") == 0)
            slot = &m->event;
        else if (strcmp(key, "id") == 0)
            slot = &m->id;
    } else if (ctx == CTX_ERROR && s->p < s->end && *s->p == '"') {
        if (strcmp(key, "class") == 0)
            slot = &m->error_class;
        else if (strcmp(key, "desc") == 0)
            slot = &m->error_desc;
    } else if (ctx == CTX_RETURN && s->p < s->end && *s->p == '"' && strcmp(key, "status") == 0) {
        slot = &m->status;
    }
    if (slot) {
        r = parse_string(s, &v);
        if (r < 0)
            return r;
        keep(slot, v);
        return 0;
    }
    if (ctx == CTX_RETURN && strcmp(key, "running") == 0) {
        if (literal(s, "true") == 0) {
            m->running = true;
            return 0;
        }
    }
    enum ctx sub = CTX_NONE;
    if (ctx == CTX_TOP) {
        if (strcmp(key, "error") == 0) {
            s->has_error = true;
            sub = CTX_ERROR;
        } else if (strcmp(key, "return") == 0) {
            s->has_return = true;
            sub = CTX_RETURN;
        } else if (strcmp(key, "QMP") == 0) {
            s->greeting = true;
        } else if (strcmp(key, "event") == 0) {
            return -EBADMSG; /* an event's name must be a string */
        }
    }
    return parse_value(s, depth, sub, key);
}

static int parse_object(struct parser *s, int depth, enum ctx ctx)
{
    int r;

    s->p++; /* '{' */
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 0;
    }
    for (;;) {
        _cleanup_free_ char *key = NULL;
        skip_ws(s);
        r = parse_string(s, &key);
        if (r < 0)
            return r;
        skip_ws(s);
        if (s->p >= s->end || *s->p != ':')
            return -EBADMSG;
        s->p++;
        r = parse_member_value(s, depth + 1, ctx, key);
        if (r < 0)
            return r;
        skip_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            return 0;
        }
        return -EBADMSG;
    }
}

static int parse_array(struct parser *s, int depth)
{
    int r;

    s->p++; /* '[' */
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return 0;
    }
    for (;;) {
        r = parse_value(s, depth + 1, CTX_NONE, "");
        if (r < 0)
            return r;
        skip_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            return 0;
        }
        return -EBADMSG;
    }
}

static int parse_value(struct parser *s, int depth, enum ctx ctx, const char *key)
{
    if (depth > MAX_DEPTH)
        return -EMSGSIZE;
    skip_ws(s);
    if (s->p >= s->end)
        return -EBADMSG;
    switch (*s->p) {
    case '{':
        return parse_object(s, depth, ctx);
    case '[':
        return parse_array(s, depth);
    case '"':
        return parse_string(s, NULL);
    case 't':
        return literal(s, "true");
    case 'f':
        return literal(s, "false");
    case 'n':
        return literal(s, "null");
    default:
        return parse_number(s);
    }
}

void qmp_message_release(struct qmp_message *m)
{
    free(m->event);
    free(m->error_class);
    free(m->error_desc);
    free(m->status);
    free(m->id);
    memset(m, 0, sizeof(*m));
}

int qmp_message_parse(const char *text, size_t len, struct qmp_message *ret)
{
    struct qmp_message m = { 0 };
    struct parser s = { text, text + len, &m, false, false, false };
    int r, kinds;

    if (len > MAX_MESSAGE)
        return -EMSGSIZE;
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '{')
        return -EBADMSG;
    r = parse_value(&s, 0, CTX_TOP, "");
    skip_ws(&s);
    if (r >= 0 && s.p != s.end)
        r = -EBADMSG;
    kinds = s.greeting + s.has_return + s.has_error + (m.event != NULL);
    if (r >= 0 && kinds != 1)
        r = -EBADMSG; /* exactly one of QMP, return, error, event */
    if (r >= 0 && s.has_error && (!m.error_class || !m.error_desc))
        r = -EBADMSG;
    if (r < 0) {
        qmp_message_release(&m);
        return r;
    }
    m.kind = s.greeting ? QMP_GREETING : s.has_return ? QMP_RETURN : s.has_error ? QMP_ERROR
                                                                               : QMP_EVENT;
    *ret = m;
    return 0;
}

/* ---- the client ---- */

struct qmp {
    int fd;
    char *buf;
    size_t len, cap;
    bool shutdown_seen;
};

void qmp_free(struct qmp *q)
{
    if (!q)
        return;
    if (q->fd >= 0)
        close(q->fd);
    free(q->buf);
    free(q);
}

bool qmp_saw_shutdown(const struct qmp *q)
{
    return q->shutdown_seen;
}

static int remaining_ms(uint64_t deadline)
{
    uint64_t now = now_ns();

    return now >= deadline ? 0 : (int)((deadline - now) / 1000000 + 1);
}

/* The next message (a line), within the deadline.  -ECONNRESET when QEMU
 * closed the connection. */
static int read_message(struct qmp *q, uint64_t deadline, struct qmp_message *ret)
{
    for (;;) {
        char *nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - q->buf);
            int r = qmp_message_parse(q->buf, n, ret);
            memmove(q->buf, nl + 1, q->len - n - 1);
            q->len -= n + 1;
            if (r < 0)
                return error_set(EPROTO, "qmp: QEMU sent a malformed message");
            if (ret->kind == QMP_EVENT && ret->event && strcmp(ret->event, "SHUTDOWN") == 0)
                q->shutdown_seen = true;
            return 0;
        }
        if (q->len >= MAX_MESSAGE)
            return error_set(EPROTO, "qmp: a message over %u bytes", MAX_MESSAGE);
        if (q->cap - q->len < 65536) {
            q->cap = q->cap ? q->cap * 2 : 131072;
            q->buf = xrealloc(q->buf, q->cap);
        }
        struct pollfd pfd = { q->fd, POLLIN, 0 };
        int pr = poll(&pfd, 1, remaining_ms(deadline));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0)
            return error_set(errno, "qmp: poll: %m");
        if (pr == 0)
            return error_set(ETIMEDOUT, "qmp: no answer from QEMU");
        ssize_t n = read(q->fd, q->buf + q->len, q->cap - q->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return error_set(errno, "qmp: read: %m");
        if (n == 0)
            return error_set(ECONNRESET, "qmp: QEMU closed the connection");
        q->len += (size_t)n;
    }
}

static int send_command(struct qmp *q, const char *command)
{
    _cleanup_free_ char *line = NULL;

    for (const char *c = command; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || *c == '-' || *c == '_'))
            return error_set(EINVAL, "qmp: '%s' is not a command name", command);
    line = xasprintf("{\"execute\": \"%s\"}\n", command);
    int r = write_all(q->fd, line, strlen(line), -1);
    return r < 0 ? error_set(r, "qmp: cannot send '%s': %s", command, strerror(-r)) : 0;
}

int qmp_execute(struct qmp *q, const char *command, int timeout_ms, struct qmp_message *ret)
{
    uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;
    bool quit = strcmp(command, "quit") == 0;
    int r = send_command(q, command);

    if (r < 0)
        return r;
    for (;;) {
        struct qmp_message m;
        r = read_message(q, deadline, &m);
        if (r == -ECONNRESET && quit)
            return 0;
        if (r < 0)
            return r;
        if (m.kind == QMP_EVENT || m.kind == QMP_GREETING) {
            qmp_message_release(&m);
            continue;
        }
        if (m.kind == QMP_ERROR) {
            r = error_set(EIO, "qmp: '%s' failed: %s (%s)", command, m.error_desc,
                          m.error_class);
            qmp_message_release(&m);
            return r;
        }
        if (ret)
            *ret = m;
        else
            qmp_message_release(&m);
        return 0;
    }
}

int qmp_connect(const char *socket_path, int timeout_ms, struct qmp **ret)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;
    _cleanup_(qmp_freep) struct qmp *q = NULL;
    struct qmp_message m;
    int r;

    if (strlen(socket_path) >= sizeof(sa.sun_path))
        return error_set(ENAMETOOLONG, "qmp: socket path '%s' is too long", socket_path);
    memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
    q = xcalloc(1, sizeof(*q));
    q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (q->fd < 0)
        return error_set(errno, "qmp: socket: %m");
    if (connect(q->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return error_set(errno, "qmp: cannot connect to '%s': %m", socket_path);
    r = read_message(q, deadline, &m);
    if (r < 0)
        return r;
    if (m.kind != QMP_GREETING) {
        qmp_message_release(&m);
        return error_set(EPROTO, "qmp: '%s' did not greet with QMP", socket_path);
    }
    qmp_message_release(&m);
    r = qmp_execute(q, "qmp_capabilities", remaining_ms(deadline), NULL);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(q);
    return 0;
}
