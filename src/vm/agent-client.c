/* The host side of the kiln-agent protocol (src/agent/proto.h,
 * docs/agent.md) over QEMU's unix socket for the virtio-serial port.
 *
 * One request at a time.  Each request gets a fresh id; frames with any
 * other id (left over from an earlier connection or a timed-out request)
 * are skipped, so a reconnect starts clean.  Every wait has a deadline;
 * every size the guest sends is checked against a cap before anything is
 * allocated for it.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent/proto.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "vm/vm.h"

#define MAX_OUTPUT (64ULL << 20)
#define MAX_GET (1ULL << 30)

struct agent_client {
    int fd;
    uint32_t next_id;
    uint8_t *buf; /* received bytes not yet taken as frames */
    size_t len, cap;
};

struct frame {
    struct agent_header h;
    uint8_t *payload; /* h.length bytes; caller frees */
};

void agent_client_free(struct agent_client *a)
{
    if (!a)
        return;
    if (a->fd >= 0)
        close(a->fd);
    free(a->buf);
    free(a);
}

void agent_exec_result_release(struct agent_exec_result *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

static int remaining_ms(uint64_t deadline)
{
    uint64_t now = now_ns();

    return now >= deadline ? 0 : (int)((deadline - now) / 1000000 + 1);
}

static uint64_t deadline_of(int timeout_ms)
{
    return now_ns() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000ULL;
}

static int send_msg(struct agent_client *a, struct agent_msg *m)
{
    int r = agent_msg_finish(m);

    if (r >= 0)
        r = write_all(a->fd, m->data, m->len, -1);
    agent_msg_release(m);
    return r < 0 ? error_set(r, "agent: cannot send a request: %s", strerror(-r)) : 0;
}

/* Send a frame while taking in whatever the agent sends meanwhile (kept
 * in a->buf for read_frame()): stdin going in and output coming out must
 * not wait for each other, or a command that writes before it reads would
 * stall both ends. */
static int send_msg_reading(struct agent_client *a, struct agent_msg *m, uint64_t deadline)
{
    size_t done = 0;
    int r = agent_msg_finish(m);

    while (r >= 0 && done < m->len) {
        struct pollfd pfd = { a->fd, POLLIN | POLLOUT, 0 };
        int pr = poll(&pfd, 1, remaining_ms(deadline));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0) {
            r = pr < 0 ? error_set(errno, "agent: poll: %m")
                       : error_set(ETIMEDOUT, "agent: the guest does not take its input");
            break;
        }
        if (pfd.revents & POLLIN) {
            if (a->len > (256ULL << 20)) {
                r = error_set(EFBIG, "agent: too much output while sending input");
                break;
            }
            if (a->cap - a->len < 65536) {
                a->cap = a->cap ? a->cap * 2 : 2 * (AGENT_HEADER_SIZE + AGENT_MAX_PAYLOAD);
                a->buf = xrealloc(a->buf, a->cap);
            }
            ssize_t n = recv(a->fd, a->buf + a->len, a->cap - a->len, MSG_DONTWAIT);
            if (n == 0) {
                r = error_set(ECONNRESET, "agent: the connection closed");
                break;
            }
            if (n > 0)
                a->len += (size_t)n;
        }
        if (pfd.revents & (POLLOUT | POLLERR | POLLHUP)) {
            ssize_t w = send(a->fd, m->data + done, m->len - done, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN && errno != EINTR) {
                r = error_set(errno, "agent: cannot send input: %m");
                break;
            }
            if (w > 0)
                done += (size_t)w;
        }
    }
    agent_msg_release(m);
    return r < 0 ? r : 0;
}

/* The next whole frame, within the deadline: -ETIMEDOUT, -ECONNRESET when
 * QEMU closed the socket. */
static int read_frame(struct agent_client *a, uint64_t deadline, struct frame *ret)
{
    for (;;) {
        size_t skip = agent_resync(a->buf, a->len);
        if (skip) {
            memmove(a->buf, a->buf + skip, a->len - skip);
            a->len -= skip;
        }
        if (a->len >= AGENT_HEADER_SIZE) {
            struct agent_header h;
            if (agent_header_decode(a->buf, &h) < 0) {
                memmove(a->buf, a->buf + 1, --a->len); /* not a frame: resync */
                continue;
            }
            if (a->len - AGENT_HEADER_SIZE >= h.length) {
                ret->h = h;
                ret->payload = xmalloc(h.length + 1);
                memcpy(ret->payload, a->buf + AGENT_HEADER_SIZE, h.length);
                a->len -= AGENT_HEADER_SIZE + h.length;
                memmove(a->buf, a->buf + AGENT_HEADER_SIZE + h.length, a->len);
                return 0;
            }
        }
        if (a->cap - a->len < 65536) {
            a->cap = a->cap ? a->cap * 2 : 2 * (AGENT_HEADER_SIZE + AGENT_MAX_PAYLOAD);
            a->buf = xrealloc(a->buf, a->cap);
        }
        struct pollfd pfd = { a->fd, POLLIN, 0 };
        int pr = poll(&pfd, 1, remaining_ms(deadline));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0)
            return error_set(errno, "agent: poll: %m");
        if (pr == 0)
            return error_set(ETIMEDOUT, "agent: no answer from the guest");
        ssize_t n = read(a->fd, a->buf + a->len, a->cap - a->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return error_set(errno, "agent: read: %m");
        if (n == 0)
            return error_set(ECONNRESET, "agent: the connection closed");
        a->len += (size_t)n;
    }
}

/* The next frame for request `id` (others are dropped). */
static int read_reply(struct agent_client *a, uint32_t id, uint64_t deadline, struct frame *ret)
{
    for (;;) {
        int r = read_frame(a, deadline, ret);
        if (r < 0)
            return r;
        if (ret->h.id == id)
            return 0;
        free(ret->payload);
    }
}

/* An AGENT_ERROR frame as an errno with the agent's message. */
static int agent_error(const struct frame *f, const char *what)
{
    _cleanup_free_ char *msg = NULL;
    uint32_t e;

    if (agent_error_parse(f->payload, f->h.length, &e, &msg) < 0)
        return error_set(EPROTO, "agent: a malformed error answer to %s", what);
    if (e == 0 || e > 4095)
        e = EIO;
    return error_set((int)e, "agent: %s: %s", what, msg);
}

static int unexpected(const struct frame *f, const char *what)
{
    return error_set(EPROTO, "agent: unexpected answer 0x%x to %s", f->h.type, what);
}

/* Wait for AGENT_OK (or an error) for request id. */
static int expect_ok(struct agent_client *a, uint32_t id, uint64_t deadline, const char *what)
{
    struct frame f;
    int r = read_reply(a, id, deadline, &f);

    if (r < 0)
        return r;
    if (f.h.type == AGENT_OK && f.h.length == 0)
        r = 0;
    else if (f.h.type == AGENT_ERROR)
        r = agent_error(&f, what);
    else
        r = unexpected(&f, what);
    free(f.payload);
    return r;
}

int agent_client_connect(const char *socket_path, int timeout_ms, struct agent_client **ret,
                         char **ret_description)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    uint64_t deadline = deadline_of(timeout_ms);
    _cleanup_(agent_client_freep) struct agent_client *a = NULL;
    uint32_t rnd = 0;
    int r;

    if (strlen(socket_path) >= sizeof(sa.sun_path))
        return error_set(ENAMETOOLONG, "agent: socket path '%s' is too long", socket_path);
    memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
    a = xcalloc(1, sizeof(*a));
    a->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (a->fd < 0)
        return error_set(errno, "agent: socket: %m");
    /* QEMU may not have created its socket yet: retry until the deadline. */
    while (connect(a->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        struct timespec ts = { 0, 100 * 1000000L };
        if ((e != ENOENT && e != ECONNREFUSED) || now_ns() >= deadline)
            return error_set(e, "agent: cannot connect to '%s': %s", socket_path, strerror(e));
        nanosleep(&ts, NULL);
    }
    /* Ids start at a random point: frames of an earlier connection are
     * unlikely to carry the ids this one uses. */
    random_bytes(&rnd, sizeof(rnd));
    a->next_id = (rnd & 0x7fffffff) | 1;
    for (;;) {
        struct agent_msg m;
        struct frame f;
        uint32_t id = a->next_id++;
        uint64_t round = now_ns() + 1000000000ULL;

        agent_msg_init(&m, AGENT_HELLO, id);
        agent_msg_put_u32(&m, AGENT_VERSION);
        r = send_msg(a, &m);
        if (r < 0)
            return r;
        r = read_reply(a, id, round < deadline ? round : deadline, &f);
        if (r == -ETIMEDOUT && now_ns() < deadline)
            continue; /* the guest may still be booting: say hello again */
        if (r < 0)
            return r == -ETIMEDOUT ? error_set(ETIMEDOUT, "agent: no hello from the guest "
                                                         "within %d ms", timeout_ms)
                                   : r;
        if (f.h.type == AGENT_ERROR) {
            r = agent_error(&f, "hello");
            free(f.payload);
            return r;
        }
        struct agent_cursor c = { f.payload, f.h.length };
        uint32_t version;
        char *desc = NULL;
        if (f.h.type != AGENT_HELLO_REPLY || agent_get_u32(&c, &version) < 0 ||
            agent_get_string(&c, AGENT_MAX_STRING, &desc) < 0 || agent_get_end(&c) < 0) {
            free(desc);
            r = unexpected(&f, "hello");
            free(f.payload);
            return r;
        }
        free(f.payload);
        if (version != AGENT_VERSION) {
            free(desc);
            return error_set(EPROTO, "agent: the guest speaks version %u, kiln %u", version,
                             AGENT_VERSION);
        }
        if (ret_description)
            *ret_description = desc;
        else
            free(desc);
        *ret = TAKE_PTR(a);
        return 0;
    }
}

static int append(char **buf, size_t *len, const uint8_t *p, size_t n, uint64_t cap)
{
    if (*len + n > cap)
        return -EFBIG;
    *buf = xrealloc(*buf, *len + n + 1);
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

int agent_client_exec(struct agent_client *a, char *const *argv, const void *in, size_t in_len,
                      int timeout_ms, struct agent_exec_result *ret)
{
    uint64_t deadline = deadline_of(timeout_ms);
    struct agent_exec_result res = { 0 };
    uint32_t id = a->next_id++;
    struct agent_msg m;
    struct frame f;
    int r;

    r = agent_exec_encode(&m, id, in ? AGENT_EXEC_STDIN : 0, argv, NULL);
    if (r < 0) {
        agent_msg_release(&m);
        return error_set(r == -EINVAL ? EINVAL : r, "agent: cannot encode the command");
    }
    r = send_msg(a, &m);
    if (r < 0)
        return r;
    r = read_reply(a, id, deadline, &f);
    if (r < 0)
        return r;
    if (f.h.type == AGENT_ERROR) {
        r = agent_error(&f, argv[0]);
        free(f.payload);
        return r;
    }
    if (f.h.type != AGENT_EXEC_STARTED) {
        r = unexpected(&f, "exec");
        free(f.payload);
        return r;
    }
    free(f.payload);
    if (in) {
        const uint8_t *p = in;
        size_t left = in_len;
        while (left > 0) {
            size_t n = left < AGENT_CHUNK ? left : AGENT_CHUNK;
            agent_msg_init(&m, AGENT_STDIN, id);
            agent_msg_put_bytes(&m, p, n);
            r = send_msg_reading(a, &m, deadline);
            if (r < 0)
                return r;
            p += n;
            left -= n;
        }
        agent_msg_init(&m, AGENT_STDIN, id); /* the end of input: an empty chunk */
        r = send_msg_reading(a, &m, deadline);
        if (r < 0)
            return r;
    }
    for (;;) {
        struct agent_cursor c;
        uint32_t stream, how, code;

        r = read_reply(a, id, deadline, &f);
        if (r < 0)
            goto fail;
        c = (struct agent_cursor){ f.payload, f.h.length };
        if (f.h.type == AGENT_OUTPUT && agent_get_u32(&c, &stream) == 0 &&
            (stream == 1 || stream == 2)) {
            r = stream == 1 ? append(&res.out, &res.out_len, c.p, c.left, MAX_OUTPUT)
                            : append(&res.err, &res.err_len, c.p, c.left, MAX_OUTPUT);
            free(f.payload);
            if (r < 0) {
                r = error_set(EFBIG, "agent: '%s' wrote more than %llu bytes", argv[0],
                              (unsigned long long)MAX_OUTPUT);
                goto fail;
            }
            continue;
        }
        if (f.h.type == AGENT_EXIT && agent_get_u32(&c, &how) == 0 &&
            agent_get_u32(&c, &code) == 0 && agent_get_end(&c) == 0 && how <= 1 && code < 256) {
            free(f.payload);
            res.signaled = how == 1;
            res.code = (int)code;
            if (!res.out)
                res.out = xstrdup("");
            if (!res.err)
                res.err = xstrdup("");
            *ret = res;
            return 0;
        }
        r = f.h.type == AGENT_ERROR ? agent_error(&f, argv[0]) : unexpected(&f, "exec");
        free(f.payload);
        goto fail;
    }
fail:
    agent_exec_result_release(&res);
    return r;
}

int agent_client_put(struct agent_client *a, const char *path, unsigned mode, const void *data,
                     size_t len, bool durable, int timeout_ms)
{
    uint64_t deadline = deadline_of(timeout_ms);
    uint32_t id = a->next_id++;
    const uint8_t *p = data;
    struct agent_msg m;
    int r;

    if (path[0] != '/' || strlen(path) > AGENT_MAX_STRING || mode > 07777)
        return error_set(EINVAL, "agent: put needs an absolute path and a mode, not '%s' %o",
                         path, mode);
    agent_msg_init(&m, AGENT_PUT, id);
    agent_msg_put_u32(&m, mode);
    agent_msg_put_string(&m, path);
    if ((r = send_msg(a, &m)) < 0 || (r = expect_ok(a, id, deadline, path)) < 0)
        return r;
    while (len > 0) {
        size_t n = len < AGENT_CHUNK ? len : AGENT_CHUNK;
        agent_msg_init(&m, AGENT_PUT_DATA, id);
        agent_msg_put_bytes(&m, p, n);
        if ((r = send_msg(a, &m)) < 0)
            return r;
        p += n;
        len -= n;
    }
    agent_msg_init(&m, AGENT_PUT_END, id);
    agent_msg_put_u32(&m, durable ? AGENT_PUT_FSYNC : 0);
    if ((r = send_msg(a, &m)) < 0)
        return r;
    return expect_ok(a, id, deadline, path);
}

int agent_client_get(struct agent_client *a, const char *path, int timeout_ms, void **ret_data,
                     size_t *ret_len, unsigned *ret_mode)
{
    uint64_t deadline = deadline_of(timeout_ms);
    uint32_t id = a->next_id++;
    _cleanup_free_ char *buf = NULL;
    size_t len = 0;
    struct agent_msg m;
    struct frame f;
    int r;

    if (strlen(path) > AGENT_MAX_STRING)
        return error_set(EINVAL, "agent: path too long");
    agent_msg_init(&m, AGENT_GET, id);
    agent_msg_put_string(&m, path);
    if ((r = send_msg(a, &m)) < 0)
        return r;
    for (;;) {
        r = read_reply(a, id, deadline, &f);
        if (r < 0)
            return r;
        if (f.h.type == AGENT_DATA) {
            r = append(&buf, &len, f.payload, f.h.length, MAX_GET);
            free(f.payload);
            if (r < 0)
                return error_set(EFBIG, "agent: '%s' is larger than %llu bytes", path,
                                 (unsigned long long)MAX_GET);
            continue;
        }
        struct agent_cursor c = { f.payload, f.h.length };
        uint32_t mode;
        uint64_t size;
        if (f.h.type == AGENT_DATA_END && agent_get_u32(&c, &mode) == 0 &&
            agent_get_u64(&c, &size) == 0 && agent_get_end(&c) == 0) {
            free(f.payload);
            if (size != len)
                return error_set(EPROTO, "agent: '%s': %llu bytes announced, %zu received",
                                 path, (unsigned long long)size, len);
            if (!buf)
                buf = xstrdup("");
            *ret_data = TAKE_PTR(buf);
            *ret_len = len;
            if (ret_mode)
                *ret_mode = mode & 07777;
            return 0;
        }
        r = f.h.type == AGENT_ERROR ? agent_error(&f, path) : unexpected(&f, "get");
        free(f.payload);
        return r;
    }
}

static int simple(struct agent_client *a, uint16_t type, const char *arg, int has_u32,
                  uint32_t u, int timeout_ms, const char *what)
{
    uint32_t id = a->next_id++;
    struct agent_msg m;
    int r;

    agent_msg_init(&m, type, id);
    if (has_u32)
        agent_msg_put_u32(&m, u);
    if (arg)
        agent_msg_put_string(&m, arg);
    if ((r = send_msg(a, &m)) < 0)
        return r;
    return expect_ok(a, id, deadline_of(timeout_ms), what);
}

int agent_client_sync(struct agent_client *a, int timeout_ms)
{
    return simple(a, AGENT_SYNC, NULL, 0, 0, timeout_ms, "sync");
}

int agent_client_freeze(struct agent_client *a, const char *mount_point, bool freeze,
                        int timeout_ms)
{
    if (strlen(mount_point) > AGENT_MAX_STRING)
        return error_set(EINVAL, "agent: path too long");
    return simple(a, freeze ? AGENT_FREEZE : AGENT_THAW, mount_point, 0, 0, timeout_ms,
                  freeze ? "freeze" : "thaw");
}

int agent_client_shutdown(struct agent_client *a, bool reboot, int timeout_ms)
{
    return simple(a, AGENT_SHUTDOWN, NULL, 1,
                  reboot ? AGENT_SHUTDOWN_REBOOT : AGENT_SHUTDOWN_POWEROFF, timeout_ms,
                  "shutdown");
}
