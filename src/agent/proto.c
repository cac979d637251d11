/* The kiln-agent wire protocol as pure functions (see proto.h).  Built into
 * both kiln-agent and the host's kiln-vm library: libc only. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent/proto.h"

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

int agent_header_decode(const uint8_t *buf, struct agent_header *ret)
{
    struct agent_header h;

    if (be32(buf) != AGENT_MAGIC)
        return -EBADMSG;
    h.type = (uint16_t)(buf[4] << 8 | buf[5]);
    h.flags = (uint16_t)(buf[6] << 8 | buf[7]);
    h.id = be32(buf + 8);
    h.length = be32(buf + 12);
    if (h.flags != 0)
        return -EBADMSG;
    if (h.length > AGENT_MAX_PAYLOAD)
        return -EMSGSIZE;
    *ret = h;
    return 0;
}

void agent_header_encode(uint8_t *buf, uint16_t type, uint32_t id, uint32_t length)
{
    put_be32(buf, AGENT_MAGIC);
    buf[4] = type >> 8;
    buf[5] = type & 0xff;
    buf[6] = buf[7] = 0;
    put_be32(buf + 8, id);
    put_be32(buf + 12, length);
}

size_t agent_resync(const uint8_t *buf, size_t len)
{
    static const uint8_t magic[4] = { 0x4b, 0x41, 0x47, 0x31 };

    for (size_t i = 0; i < len; i++) {
        size_t n = len - i < 4 ? len - i : 4;
        if (memcmp(buf + i, magic, n) == 0)
            return i;
    }
    return len;
}

/* ---- building ---- */

void agent_msg_init(struct agent_msg *m, uint16_t type, uint32_t id)
{
    m->cap = 256;
    m->data = malloc(m->cap);
    m->len = AGENT_HEADER_SIZE;
    m->failed = !m->data;
    if (m->data)
        agent_header_encode(m->data, type, id, 0);
}

void agent_msg_put_bytes(struct agent_msg *m, const void *p, size_t n)
{
    if (m->failed)
        return;
    if (n > AGENT_MAX_PAYLOAD || m->len - AGENT_HEADER_SIZE + n > AGENT_MAX_PAYLOAD) {
        m->failed = true;
        return;
    }
    if (m->len + n > m->cap) {
        size_t cap = m->cap;
        while (cap < m->len + n)
            cap *= 2;
        uint8_t *d = realloc(m->data, cap);
        if (!d) {
            m->failed = true;
            return;
        }
        m->data = d;
        m->cap = cap;
    }
    if (n)
        memcpy(m->data + m->len, p, n);
    m->len += n;
}

void agent_msg_put_u32(struct agent_msg *m, uint32_t v)
{
    uint8_t b[4];

    put_be32(b, v);
    agent_msg_put_bytes(m, b, 4);
}

void agent_msg_put_u64(struct agent_msg *m, uint64_t v)
{
    agent_msg_put_u32(m, (uint32_t)(v >> 32));
    agent_msg_put_u32(m, (uint32_t)v);
}

void agent_msg_put_string(struct agent_msg *m, const char *s)
{
    size_t n = strlen(s);

    if (n > AGENT_MAX_PAYLOAD) {
        m->failed = true;
        return;
    }
    agent_msg_put_u32(m, (uint32_t)n);
    agent_msg_put_bytes(m, s, n);
}

int agent_msg_finish(struct agent_msg *m)
{
    if (!m->data)
        return -ENOMEM;
    if (m->failed)
        return -EMSGSIZE;
    put_be32(m->data + 12, (uint32_t)(m->len - AGENT_HEADER_SIZE));
    return 0;
}

void agent_msg_release(struct agent_msg *m)
{
    free(m->data);
    m->data = NULL;
    m->len = m->cap = 0;
}

/* ---- reading ---- */

int agent_get_u32(struct agent_cursor *c, uint32_t *ret)
{
    if (c->left < 4)
        return -EBADMSG;
    *ret = be32(c->p);
    c->p += 4;
    c->left -= 4;
    return 0;
}

int agent_get_u64(struct agent_cursor *c, uint64_t *ret)
{
    uint32_t hi, lo;

    if (c->left < 8)
        return -EBADMSG;
    agent_get_u32(c, &hi);
    agent_get_u32(c, &lo);
    *ret = (uint64_t)hi << 32 | lo;
    return 0;
}

int agent_get_string(struct agent_cursor *c, size_t max, char **ret)
{
    struct agent_cursor save = *c;
    uint32_t n;
    char *s;

    if (agent_get_u32(c, &n) < 0)
        return -EBADMSG;
    if (n > max) {
        *c = save;
        return -EMSGSIZE;
    }
    if (n > c->left || memchr(c->p, 0, n)) {
        *c = save;
        return -EBADMSG;
    }
    s = malloc((size_t)n + 1);
    if (!s) {
        *c = save;
        return -ENOMEM;
    }
    memcpy(s, c->p, n);
    s[n] = 0;
    c->p += n;
    c->left -= n;
    *ret = s;
    return 0;
}

int agent_get_end(const struct agent_cursor *c)
{
    return c->left ? -EBADMSG : 0;
}

void agent_strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

static int get_strv(struct agent_cursor *c, uint32_t min, char ***ret)
{
    uint32_t n;
    char **v;
    int r;

    if (agent_get_u32(c, &n) < 0)
        return -EBADMSG;
    if (n < min)
        return -EBADMSG;
    if (n > AGENT_MAX_ARGS)
        return -EMSGSIZE;
    /* Each entry takes at least its 4-byte length. */
    if ((size_t)n * 4 > c->left)
        return -EBADMSG;
    v = calloc((size_t)n + 1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        r = agent_get_string(c, AGENT_MAX_STRING, &v[i]);
        if (r < 0) {
            agent_strv_free(v);
            return r;
        }
    }
    *ret = v;
    return 0;
}

int agent_exec_parse(const uint8_t *p, size_t len, struct agent_exec_request *ret)
{
    struct agent_cursor c = { p, len };
    struct agent_exec_request e = { 0 };
    int r;

    if (agent_get_u32(&c, &e.flags) < 0)
        return -EBADMSG;
    if (e.flags & ~AGENT_EXEC_STDIN)
        return -EBADMSG;
    r = get_strv(&c, 1, &e.argv);
    if (r < 0)
        return r;
    r = get_strv(&c, 0, &e.env);
    if (r >= 0 && e.argv[0][0] == 0)
        r = -EBADMSG; /* an empty program name */
    if (r >= 0)
        r = agent_get_end(&c);
    if (r < 0) {
        agent_exec_request_release(&e);
        return r;
    }
    *ret = e;
    return 0;
}

void agent_exec_request_release(struct agent_exec_request *e)
{
    agent_strv_free(e->argv);
    agent_strv_free(e->env);
    e->argv = e->env = NULL;
}

int agent_exec_encode(struct agent_msg *m, uint32_t id, uint32_t flags, char *const *argv,
                      char *const *env)
{
    uint32_t n = 0;

    agent_msg_init(m, AGENT_EXEC, id);
    agent_msg_put_u32(m, flags);
    while (argv && argv[n])
        n++;
    if (n == 0 || n > AGENT_MAX_ARGS)
        return -EINVAL;
    agent_msg_put_u32(m, n);
    for (uint32_t i = 0; i < n; i++)
        agent_msg_put_string(m, argv[i]);
    n = 0;
    while (env && env[n])
        n++;
    if (n > AGENT_MAX_ARGS)
        return -EINVAL;
    agent_msg_put_u32(m, n);
    for (uint32_t i = 0; i < n; i++)
        agent_msg_put_string(m, env[i]);
    return agent_msg_finish(m);
}

int agent_error_parse(const uint8_t *p, size_t len, uint32_t *ret_errno, char **ret_message)
{
    struct agent_cursor c = { p, len };
    uint32_t e;
    char *msg;
    int r;

    if (agent_get_u32(&c, &e) < 0)
        return -EBADMSG;
    r = agent_get_string(&c, AGENT_MAX_STRING, &msg);
    if (r < 0)
        return r;
    if (agent_get_end(&c) < 0) {
        free(msg);
        return -EBADMSG;
    }
    *ret_errno = e;
    *ret_message = msg;
    return 0;
}
