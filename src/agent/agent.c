/* kiln-agent: the guest side of the agent protocol (proto.h,
 * docs/agent.md), a small static program that kiln's images start at boot
 * on the virtio-serial port org.kiln.agent.0.
 *
 * One thread, one poll loop: frames from the port are dispatched as they
 * complete; while a command runs, its stdout and stderr pipes are polled too
 * and forwarded as AGENT_OUTPUT frames.  One exec and one put may be in
 * progress at a time (other requests meanwhile get EBUSY).
 *
 * The host may go away and come back at any time (virtio-serial reports
 * POLLHUP while no host is connected): the agent then forgets any partial
 * frame and an unfinished put, lets a running command finish with its
 * output dropped, and waits for the next host.  Garbage before a frame (a
 * host that vanished mid-frame) is skipped by looking for the magic.
 *
 * Linked statically against libc only (musl where available): the tiny
 * image has no shared libraries.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/proto.h"

/* <linux/fs.h>, which musl's headers lack. */
#ifndef FIFREEZE
#define FIFREEZE _IOWR('X', 119, int)
#define FITHAW _IOWR('X', 120, int)
#endif

#define DEFAULT_PORT "/dev/virtio-ports/org.kiln.agent.0"
/* How long a write waits for a connected host that does not read.  A host
 * that is gone shows POLLHUP at once; a connected one may be slow (a loaded
 * machine, a sanitized client): dropping the rest of a frame to it would
 * desynchronise the stream (a GET's data short by a frame was seen with 5 s
 * under load), so the wait is long. */
#define WRITE_TIMEOUT_MS 60000

extern char **environ;

static const char *port_path = DEFAULT_PORT;
static int port = -1;
static uint8_t inbuf[AGENT_HEADER_SIZE + AGENT_MAX_PAYLOAD];
static size_t inlen;

static struct {
    bool active;
    uint32_t id;
    pid_t pid;
    int in, out, err; /* -1 when closed; `in` is non-blocking */
    /* Stdin the command has not taken yet: while there is some, no more
     * frames are read from the port (virtio-serial holds the host back),
     * so a command that writes before it reads cannot deadlock the agent. */
    uint8_t *pending;
    size_t pending_len, pending_off;
} job = { .in = -1, .out = -1, .err = -1 };

static struct {
    bool active;
    uint32_t id;
    int fd;
    int error; /* the first write error, reported at AGENT_PUT_END */
    char *path, *tmp;
} put = { .fd = -1 };

static void msleep(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Write a whole frame.  A host that is gone (POLLHUP), or that does not read
 * for WRITE_TIMEOUT_MS, loses the frame: the agent never blocks for ever on
 * the port. */
static void send_raw(const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(port, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pfd = { port, POLLOUT, 0 };
            if (poll(&pfd, 1, WRITE_TIMEOUT_MS) > 0 && !(pfd.revents & (POLLHUP | POLLERR)))
                continue;
        }
        return;
    }
}

static void send_msg(struct agent_msg *m)
{
    if (agent_msg_finish(m) == 0)
        send_raw(m->data, m->len);
    agent_msg_release(m);
}

static void reply_ok(uint32_t id)
{
    struct agent_msg m;

    agent_msg_init(&m, AGENT_OK, id);
    send_msg(&m);
}

static void reply_error(uint32_t id, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reply_error(uint32_t id, int err, const char *fmt, ...)
{
    struct agent_msg m;
    char text[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    agent_msg_init(&m, AGENT_ERROR, id);
    agent_msg_put_u32(&m, (uint32_t)(err < 0 ? -err : err));
    agent_msg_put_string(&m, text);
    send_msg(&m);
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void put_abort(void)
{
    if (!put.active)
        return;
    close_fd(&put.fd);
    unlink(put.tmp);
    free(put.path);
    free(put.tmp);
    put.path = put.tmp = NULL;
    put.active = false;
}

/* ---- requests ---- */

static void do_hello(const struct agent_header *h, struct agent_cursor *c)
{
    struct agent_msg m;
    struct utsname u;
    uint32_t version;
    char desc[400];

    if (agent_get_u32(c, &version) < 0 || agent_get_end(c) < 0) {
        reply_error(h->id, EPROTO, "malformed hello");
        return;
    }
    if (uname(&u) < 0)
        memset(&u, 0, sizeof(u));
    snprintf(desc, sizeof(desc), "kiln-agent %u on %s %s %s", AGENT_VERSION, u.sysname,
             u.release, u.machine);
    agent_msg_init(&m, AGENT_HELLO_REPLY, h->id);
    agent_msg_put_u32(&m, AGENT_VERSION);
    agent_msg_put_string(&m, desc);
    send_msg(&m);
}

static void do_exec(const struct agent_header *h, const uint8_t *payload)
{
    struct agent_exec_request e;
    int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 }, status[2] = { -1, -1 };
    int r, child_errno = 0;
    struct agent_msg m;
    pid_t pid;

    r = agent_exec_parse(payload, h->length, &e);
    if (r < 0) {
        reply_error(h->id, -r, "malformed exec request");
        return;
    }
    if (((e.flags & AGENT_EXEC_STDIN) && pipe2(in, O_CLOEXEC) < 0) || pipe2(out, O_CLOEXEC) < 0 ||
        pipe2(err, O_CLOEXEC) < 0 || pipe2(status, O_CLOEXEC) < 0) {
        r = errno;
        reply_error(h->id, r, "cannot create pipes: %s", strerror(r));
        goto fail;
    }
    pid = fork();
    if (pid < 0) {
        r = errno;
        reply_error(h->id, r, "cannot fork: %s", strerror(r));
        goto fail;
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);
        setsid();
        signal(SIGPIPE, SIG_DFL);
        dup2(in[0] >= 0 ? in[0] : null, 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        execvpe(e.argv[0], e.argv, e.env[0] ? e.env : environ);
        r = errno;
        if (write(status[1], &r, sizeof(r)) < 0)
            _exit(126);
        _exit(127);
    }
    close_fd(&status[1]);
    /* The status pipe closes on a successful exec (O_CLOEXEC); an errno
     * on it means the program could not be run. */
    while (read(status[0], &child_errno, sizeof(child_errno)) < 0 && errno == EINTR)
        ;
    close_fd(&status[0]);
    close_fd(&in[0]);
    close_fd(&out[1]);
    close_fd(&err[1]);
    if (child_errno) {
        waitpid(pid, NULL, 0);
        reply_error(h->id, child_errno, "cannot run '%s': %s", e.argv[0], strerror(child_errno));
        goto fail;
    }
    agent_exec_request_release(&e);
    job.active = true;
    job.id = h->id;
    job.pid = pid;
    job.in = in[1];
    if (job.in >= 0)
        fcntl(job.in, F_SETFL, fcntl(job.in, F_GETFL) | O_NONBLOCK);
    job.out = out[0];
    job.err = err[0];
    agent_msg_init(&m, AGENT_EXEC_STARTED, h->id);
    agent_msg_put_u32(&m, (uint32_t)pid);
    send_msg(&m);
    return;
fail:
    agent_exec_request_release(&e);
    for (int i = 0; i < 2; i++) {
        close_fd(&in[i]);
        close_fd(&out[i]);
        close_fd(&err[i]);
        close_fd(&status[i]);
    }
}

static void drop_pending(void)
{
    free(job.pending);
    job.pending = NULL;
    job.pending_len = job.pending_off = 0;
}

/* Write stdin to the command without blocking; keep what it does not take
 * yet in job.pending. */
static void feed_stdin(const uint8_t *p, size_t n)
{
    size_t done = 0;

    while (job.in >= 0 && done < n) {
        ssize_t w = write(job.in, p + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            uint8_t *copy = malloc(n - done);
            if (!copy) {
                close_fd(&job.in); /* cannot keep it: the command sees EOF */
                return;
            }
            memcpy(copy, p + done, n - done);
            job.pending = copy;
            job.pending_len = n - done;
            job.pending_off = 0;
            return;
        }
        if (w <= 0) {
            close_fd(&job.in); /* the command closed its input: drop the rest */
            return;
        }
        done += (size_t)w;
    }
}

static void feed_pending(void)
{
    uint8_t *buf = job.pending;
    size_t off = job.pending_off, len = job.pending_len;

    job.pending = NULL;
    feed_stdin(buf + off, len - off);
    free(buf);
}

static void do_stdin(const struct agent_header *h, const uint8_t *payload)
{
    if (!job.active || h->id != job.id) {
        reply_error(h->id, ENOENT, "no command %u is running", h->id);
        return;
    }
    if (h->length == 0) {
        close_fd(&job.in);
        return;
    }
    feed_stdin(payload, h->length);
}

static void job_output(int *fd, uint32_t stream)
{
    static uint8_t buf[AGENT_CHUNK];
    struct agent_msg m;
    ssize_t n = read(*fd, buf, sizeof(buf));

    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        close_fd(fd);
        return;
    }
    agent_msg_init(&m, AGENT_OUTPUT, job.id);
    agent_msg_put_u32(&m, stream);
    agent_msg_put_bytes(&m, buf, (size_t)n);
    send_msg(&m);
}

static void job_finish(void)
{
    struct agent_msg m;
    int status = 0;

    while (waitpid(job.pid, &status, 0) < 0 && errno == EINTR)
        ;
    drop_pending();
    close_fd(&job.in);
    agent_msg_init(&m, AGENT_EXIT, job.id);
    agent_msg_put_u32(&m, WIFSIGNALED(status) ? 1 : 0);
    agent_msg_put_u32(&m, (uint32_t)(WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status)));
    send_msg(&m);
    job.active = false;
}

static void do_put(const struct agent_header *h, struct agent_cursor *c)
{
    uint32_t mode;
    char *path = NULL;
    int r;

    if (agent_get_u32(c, &mode) < 0 || agent_get_string(c, AGENT_MAX_STRING, &path) < 0 ||
        agent_get_end(c) < 0 || path[0] != '/' || (mode & ~07777U)) {
        free(path);
        reply_error(h->id, EINVAL, "malformed put request (an absolute path and a mode)");
        return;
    }
    put_abort();
    put.tmp = malloc(strlen(path) + 32);
    if (!put.tmp) {
        free(path);
        reply_error(h->id, ENOMEM, "out of memory");
        return;
    }
    snprintf(put.tmp, strlen(path) + 32, "%s.kiln-agent-%d", path, (int)getpid());
    put.fd = open(put.tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, (mode_t)mode);
    if (put.fd < 0) {
        r = errno;
        reply_error(h->id, r, "cannot create '%s': %s", path, strerror(r));
        free(path);
        free(put.tmp);
        put.tmp = NULL;
        return;
    }
    fchmod(put.fd, (mode_t)mode); /* whatever the umask */
    put.active = true;
    put.id = h->id;
    put.path = path;
    put.error = 0;
    reply_ok(h->id);
}

static void do_put_data(const struct agent_header *h, const uint8_t *payload)
{
    size_t done = 0;

    if (!put.active || h->id != put.id)
        return; /* reported at AGENT_PUT_END */
    while (!put.error && done < h->length) {
        ssize_t w = write(put.fd, payload + done, h->length - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            put.error = w < 0 ? errno : EIO;
        else
            done += (size_t)w;
    }
}

static int fsync_parent(const char *path)
{
    char dir[AGENT_MAX_STRING + 1];
    const char *slash = strrchr(path, '/');
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    int fd, r = 0;

    memcpy(dir, path, n);
    dir[n] = 0;
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0)
        r = errno;
    if (fd >= 0)
        close(fd);
    return r;
}

static void do_put_end(const struct agent_header *h, struct agent_cursor *c)
{
    uint32_t flags;
    int r;

    if (agent_get_u32(c, &flags) < 0 || agent_get_end(c) < 0 || (flags & ~AGENT_PUT_FSYNC)) {
        reply_error(h->id, EINVAL, "malformed put end");
        return;
    }
    if (!put.active || h->id != put.id) {
        reply_error(h->id, ENOENT, "no put %u in progress", h->id);
        return;
    }
    r = put.error;
    if (!r && (flags & AGENT_PUT_FSYNC) && fsync(put.fd) < 0)
        r = errno;
    if (close(put.fd) < 0 && !r)
        r = errno;
    put.fd = -1;
    if (!r && rename(put.tmp, put.path) < 0)
        r = errno;
    if (!r && (flags & AGENT_PUT_FSYNC))
        r = fsync_parent(put.path);
    if (r)
        reply_error(h->id, r, "cannot write '%s': %s", put.path, strerror(r));
    else
        reply_ok(h->id);
    put.active = true; /* put_abort() frees; the rename made the unlink a no-op */
    put_abort();
}

static void do_get(const struct agent_header *h, struct agent_cursor *c)
{
    static uint8_t buf[AGENT_CHUNK];
    struct agent_msg m;
    char *path = NULL;
    struct stat st;
    uint64_t total = 0;
    int fd, r;

    if (agent_get_string(c, AGENT_MAX_STRING, &path) < 0 || agent_get_end(c) < 0) {
        free(path);
        reply_error(h->id, EINVAL, "malformed get request");
        return;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0 || fstat(fd, &st) < 0) {
        r = errno;
        reply_error(h->id, r, "cannot open '%s': %s", path, strerror(r));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        reply_error(h->id, EINVAL, "'%s' is not a regular file", path);
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = errno;
            reply_error(h->id, r, "cannot read '%s': %s", path, strerror(r));
            goto out;
        }
        if (n == 0)
            break;
        agent_msg_init(&m, AGENT_DATA, h->id);
        agent_msg_put_bytes(&m, buf, (size_t)n);
        send_msg(&m);
        total += (uint64_t)n;
    }
    agent_msg_init(&m, AGENT_DATA_END, h->id);
    agent_msg_put_u32(&m, st.st_mode & 07777);
    agent_msg_put_u64(&m, total);
    send_msg(&m);
out:
    if (fd >= 0)
        close(fd);
    free(path);
}

static void do_freeze(const struct agent_header *h, struct agent_cursor *c)
{
    char *path = NULL;
    int fd, r = 0;

    if (agent_get_string(c, AGENT_MAX_STRING, &path) < 0 || agent_get_end(c) < 0) {
        free(path);
        reply_error(h->id, EINVAL, "malformed freeze request");
        return;
    }
    fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || ioctl(fd, h->type == AGENT_FREEZE ? FIFREEZE : FITHAW, 0) < 0)
        r = errno;
    if (fd >= 0)
        close(fd);
    if (r)
        reply_error(h->id, r, "cannot %s '%s': %s", h->type == AGENT_FREEZE ? "freeze" : "thaw",
                    path, strerror(r));
    else
        reply_ok(h->id);
    free(path);
}

static void do_shutdown(const struct agent_header *h, struct agent_cursor *c)
{
    uint32_t how;

    if (agent_get_u32(c, &how) < 0 || agent_get_end(c) < 0 || how > AGENT_SHUTDOWN_REBOOT) {
        reply_error(h->id, EINVAL, "malformed shutdown request");
        return;
    }
    reply_ok(h->id);
    fprintf(stderr, "kiln-agent: %s requested by the host\n",
            how == AGENT_SHUTDOWN_REBOOT ? "reboot" : "power-off");
    kill(-1, SIGTERM);
    msleep(200);
    sync();
    mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL);
    sync();
    reboot(how == AGENT_SHUTDOWN_REBOOT ? RB_AUTOBOOT : RB_POWER_OFF);
    reply_error(h->id, errno, "reboot failed: %s", strerror(errno));
}

static void dispatch(const struct agent_header *h, const uint8_t *payload)
{
    struct agent_cursor c = { payload, h->length };

    if (h->type == AGENT_STDIN) {
        do_stdin(h, payload);
        return;
    }
    if (h->type == AGENT_PUT_DATA) {
        do_put_data(h, payload);
        return;
    }
    if (job.active && h->type != AGENT_HELLO) {
        reply_error(h->id, EBUSY, "command %u is still running", job.id);
        return;
    }
    switch (h->type) {
    case AGENT_HELLO:
        do_hello(h, &c);
        break;
    case AGENT_EXEC:
        do_exec(h, payload);
        break;
    case AGENT_PUT:
        do_put(h, &c);
        break;
    case AGENT_PUT_END:
        do_put_end(h, &c);
        break;
    case AGENT_GET:
        do_get(h, &c);
        break;
    case AGENT_SYNC:
        if (agent_get_end(&c) < 0) {
            reply_error(h->id, EINVAL, "malformed sync request");
            break;
        }
        sync();
        reply_ok(h->id);
        break;
    case AGENT_FREEZE:
    case AGENT_THAW:
        do_freeze(h, &c);
        break;
    case AGENT_SHUTDOWN:
        do_shutdown(h, &c);
        break;
    default:
        reply_error(h->id, EOPNOTSUPP, "unknown request type %u", h->type);
    }
}

/* Take every complete frame out of inbuf. */
static void process_input(void)
{
    size_t off = 0;

    for (;;) {
        struct agent_header h;
        int r;

        if (job.pending)
            break; /* the command's stdin first */
        off += agent_resync(inbuf + off, inlen - off);
        if (inlen - off < AGENT_HEADER_SIZE)
            break;
        r = agent_header_decode(inbuf + off, &h);
        if (r < 0) {
            off++; /* not a frame after all: look for the next magic */
            continue;
        }
        if (inlen - off - AGENT_HEADER_SIZE < h.length)
            break;
        dispatch(&h, inbuf + off + AGENT_HEADER_SIZE);
        off += AGENT_HEADER_SIZE + h.length;
    }
    memmove(inbuf, inbuf + off, inlen - off);
    inlen -= off;
}

static void host_gone(void)
{
    inlen = 0;
    put_abort();
}

int main(int argc, char **argv)
{
    bool hung_up = false;

    if (argc > 2 || (argc == 2 && argv[1][0] != '/')) {
        fprintf(stderr, "usage: kiln-agent [PORT-DEVICE]  (default %s)\n", DEFAULT_PORT);
        return 2;
    }
    if (argc == 2)
        port_path = argv[1];
    signal(SIGPIPE, SIG_IGN);
    while ((port = open(port_path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)) < 0) {
        fprintf(stderr, "kiln-agent: cannot open '%s': %s\n", port_path, strerror(errno));
        sleep(1);
    }
    fprintf(stderr, "kiln-agent: listening on %s\n", port_path);
    for (;;) {
        struct pollfd pfd[4] = { { port, POLLIN, 0 }, { job.out, POLLIN, 0 },
                                 { job.err, POLLIN, 0 },
                                 { job.pending ? job.in : -1, POLLOUT, 0 } };

        if (job.active && job.out < 0 && job.err < 0) {
            job_finish();
            process_input(); /* frames held back by pending stdin */
            continue;
        }
        if (job.pending && job.in < 0) {
            drop_pending();
            process_input();
            continue;
        }
        if (job.pending)
            pfd[0].fd = -1; /* read no more frames until the command takes its input */
        /* While no host is connected the port reports POLLHUP at once:
         * then wait 100 ms on the command's pipes alone before looking
         * at the port again. */
        if (hung_up)
            pfd[0].fd = -1;
        if (poll(pfd, 4, hung_up ? 100 : -1) < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        hung_up = false;
        if (job.pending && pfd[3].revents) {
            feed_pending();
            if (!job.pending)
                process_input();
        }
        if (job.out >= 0 && (pfd[1].revents & (POLLIN | POLLHUP)))
            job_output(&job.out, 1);
        if (job.err >= 0 && (pfd[2].revents & (POLLIN | POLLHUP)))
            job_output(&job.err, 2);
        if (pfd[0].revents & POLLIN) {
            ssize_t n = read(port, inbuf + inlen, sizeof(inbuf) - inlen);
            if (n > 0) {
                inlen += (size_t)n;
                process_input();
                continue;
            }
            if (n < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
        }
        if (pfd[0].revents & (POLLHUP | POLLERR | POLLIN)) {
            host_gone();
            hung_up = true;
        }
    }
}
