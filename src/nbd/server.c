/* The NBD server: listening sockets, connections, the handshake loop and
 * the transmission loop.  Protocol decisions live in proto.c; this file
 * moves bytes and calls the backend.
 *
 * Concurrency (design notes):
 *   - One accept thread per server.  Each connection gets a thread that
 *     runs the handshake and then becomes the first of `threads` request
 *     threads of that connection (nbdkit's model).
 *   - A request thread takes the connection's read lock, reads one request
 *     header (and a WRITE's payload), releases the lock, validates the
 *     request, calls the backend, and sends the whole reply under the
 *     connection's write lock with one sendmsg().  So a QD1 client pays no
 *     hand-off between threads, and a QD16 client gets `threads` requests
 *     in flight; replies may go out of order, as the protocol allows.
 *     A small read with nothing else queued keeps the read lock while it
 *     runs (worker_main()): at QD1 one thread then serves every request
 *     and no other thread is woken.
 *   - Each request thread owns its buffers (grown on demand up to
 *     NBD_MAX_BLOCK, then reused): no allocation per request.
 *   - A connection that breaks the protocol (bad magic, an oversized
 *     WRITE payload) is shut down; requests already read still finish.
 *     Nothing a client sends can stop the server or touch another
 *     connection.
 *   - Shutdown: stop accepting, shut the read side of every connection
 *     (blocked readers see end of file), let requests in flight finish
 *     and be answered, wait for the connections to close, flush.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "nbd/nbd.h"
#include "nbd/proto.h"

#define DEFAULT_THREADS 8
#define MAX_THREADS 64
#define DEFAULT_MAX_CONNECTIONS 64
#define MAX_CHUNKS 64 /* content chunks of one structured READ reply */
#define SHUTDOWN_GRACE_S 30
#define DEFAULT_HANDSHAKE_TIMEOUT_MS 30000
#define KEEP_MAX (128U << 10) /* see worker_main() */

struct conn;

struct nbd_server {
    struct nbd_backend be;
    struct nbd_export_info ex;
    char *name, *description, *socket_path;
    int unix_fd, tcp_fd;
    int wake[2];
    unsigned port;
    int threads, max_conns, handshake_timeout_ms;
    bool accepting; /* the accept thread runs */
    pthread_t accept_thread;

    pthread_mutex_t lock; /* the fields below */
    pthread_cond_t cond;
    struct conn *conns;
    int n_conns;
    bool stopping, shut_down;
    int shutdown_result;
    uint64_t next_id;

    _Atomic uint64_t st_connections, st_requests, st_errors, st_protocol;
};

struct conn {
    struct nbd_server *srv;
    struct conn *next;
    int fd;
    uint64_t id;
    struct nbd_session sess;
    pthread_mutex_t rlock; /* reading requests */
    pthread_mutex_t wlock; /* writing replies */
    atomic_bool dead;      /* stop reading requests */
};

struct worker {
    struct conn *c;
    pthread_t thread;
    uint8_t *buf;
    size_t cap;
    struct nbd_extent ext[MAX_CHUNKS];
    uint8_t hdr[MAX_CHUNKS + 1][32];
    struct iovec iov[2 * MAX_CHUNKS + 2];
};

/* ---- socket I/O ---- */

/* Read exactly len bytes: 0, or -EPIPE at end of file, or -errno. */
static int recv_all(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len) {
        ssize_t n = recv(fd, p, len, 0);
        if (n == 0)
            return -EPIPE;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int send_iov(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)n };
        ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

static int send_all(int fd, const void *buf, size_t len)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    return send_iov(fd, &iov, 1);
}

/* Stop reading from a connection; hard also stops writing to it. */
static void conn_kill(struct conn *c, bool hard)
{
    atomic_store(&c->dead, true);
    shutdown(c->fd, hard ? SHUT_RDWR : SHUT_RD);
}

/* Send a reply under the write lock; a failure kills the connection. */
static void conn_send(struct conn *c, struct iovec *iov, int n)
{
    int r;

    pthread_mutex_lock(&c->wlock);
    r = send_iov(c->fd, iov, n);
    pthread_mutex_unlock(&c->wlock);
    if (r < 0) {
        log_debug("nbd: connection %" PRIu64 ": cannot send a reply: %s", c->id, strerror(-r));
        conn_kill(c, true);
    }
}

/* ---- handshake ---- */

static void set_recv_timeout(int fd, int ms)
{
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

/* Returns 1 to enter transmission, 0 to close.  A client that stays silent
 * for the handshake timeout is dropped: idle connections must not use up
 * the connection limit. */
static int handshake(struct conn *c)
{
    struct nbd_server *srv = c->srv;
    struct nbd_buf out = { 0 };
    _cleanup_free_ uint8_t *data = NULL;
    uint8_t hdr[NBD_OPTION_HEADER_SIZE];
    int result = 0, r = 0;

    set_recv_timeout(c->fd, srv->handshake_timeout_ms);
    nbd_greeting(&out);
    if ((r = send_all(c->fd, out.data, out.len)) < 0)
        goto done;
    if ((r = recv_all(c->fd, hdr, 4)) < 0)
        goto done;
    if (nbd_client_flags_parse(hdr, &c->sess) < 0) {
        log_warning("nbd: connection %" PRIu64 ": unknown client flags 0x%08x, closing", c->id,
                    nbd_get32(hdr));
        atomic_fetch_add(&srv->st_protocol, 1);
        goto done;
    }
    data = xmalloc(NBD_OPTION_MAX);
    for (;;) {
        uint32_t option, len;

        if ((r = recv_all(c->fd, hdr, sizeof(hdr))) < 0)
            goto done;
        r = nbd_option_header_parse(hdr, &option, &len);
        if (r < 0) {
            log_warning("nbd: connection %" PRIu64 ": %s during the handshake, closing", c->id,
                        r == -E2BIG ? "an option longer than 64 KiB" : "bad option magic");
            atomic_fetch_add(&srv->st_protocol, 1);
            goto done;
        }
        if ((r = recv_all(c->fd, data, len)) < 0)
            goto done;
        out.len = 0;
        r = nbd_option_handle(&c->sess, &srv->ex, option, data, len, &out);
        log_debug("nbd: connection %" PRIu64 ": option %s (%u), %u bytes", c->id,
                  nbd_option_name(option), option, len);
        if (out.len && send_all(c->fd, out.data, out.len) < 0)
            goto done;
        if (r == NBD_OPTION_TRANSMISSION) {
            result = 1;
            goto done;
        }
        if (r == NBD_OPTION_CLOSE)
            goto done;
        if (c->sess.n_options > NBD_OPTIONS_MAX) {
            log_warning("nbd: connection %" PRIu64 ": more than %d options, closing", c->id,
                        NBD_OPTIONS_MAX);
            atomic_fetch_add(&srv->st_protocol, 1);
            goto done;
        }
    }
done:
    if (r == -EAGAIN) {
        log_warning("nbd: connection %" PRIu64 ": silent for %d ms in the handshake, closing",
                    c->id, srv->handshake_timeout_ms);
        result = 0;
    }
    if (result)
        set_recv_timeout(c->fd, 0); /* transmission: a client may idle */
    nbd_buf_release(&out);
    return result;
}

/* ---- transmission ---- */

static int worker_buf(struct worker *w, size_t len)
{
    if (len > w->cap) {
        size_t cap = w->cap ? w->cap : 64 << 10;
        while (cap < len)
            cap *= 2;
        free(w->buf);
        w->buf = xmalloc(cap);
        w->cap = cap;
    }
    return 0;
}

static void reply_simple(struct worker *w, const struct nbd_request *rq, uint32_t err,
                         const void *data, uint32_t len)
{
    struct iovec iov[2];

    nbd_put32(w->hdr[0], NBD_SIMPLE_REPLY_MAGIC);
    nbd_put32(w->hdr[0] + 4, err);
    nbd_put64(w->hdr[0] + 8, rq->cookie);
    iov[0] = (struct iovec){ w->hdr[0], NBD_SIMPLE_REPLY_SIZE };
    iov[1] = (struct iovec){ (void *)data, len };
    conn_send(w->c, iov, data && len ? 2 : 1);
}

static void chunk_header(uint8_t *p, uint16_t flags, uint16_t type, uint64_t cookie,
                         uint32_t len)
{
    nbd_put32(p, NBD_STRUCTURED_REPLY_MAGIC);
    nbd_put16(p + 4, flags);
    nbd_put16(p + 6, type);
    nbd_put64(p + 8, cookie);
    nbd_put32(p + 16, len);
}

/* An error reply: a structured error chunk carrying the message when
 * structured replies were negotiated, else a simple reply. */
static void reply_error(struct worker *w, const struct nbd_request *rq, uint32_t err,
                        const char *msg)
{
    struct conn *c = w->c;

    atomic_fetch_add(&c->srv->st_errors, 1);
    log_debug("nbd: connection %" PRIu64 ": %s offset %" PRIu64 " length %u: error %u%s%s",
              c->id, nbd_cmd_name(rq->type), rq->offset, rq->count, err, msg ? ": " : "",
              msg ? msg : "");
    if (!c->sess.structured) {
        reply_simple(w, rq, err, NULL, 0);
        return;
    }
    size_t n = msg ? MIN(strlen(msg), (size_t)NBD_STRING_MAX) : 0;
    struct iovec iov[2];
    chunk_header(w->hdr[0], NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, rq->cookie,
                 (uint32_t)(6 + n));
    nbd_put32(w->hdr[0] + 20, err);
    nbd_put16(w->hdr[0] + 24, (uint16_t)n);
    iov[0] = (struct iovec){ w->hdr[0], 26 };
    iov[1] = (struct iovec){ (void *)msg, n };
    conn_send(c, iov, n ? 2 : 1);
}

/* Reply to a backend failure `r` (-errno). */
static void reply_backend_error(struct worker *w, const struct nbd_request *rq, int r)
{
    char buf[512];
    const char *msg = error_describe(r, buf, sizeof(buf));

    log_warning("nbd: connection %" PRIu64 ": %s at offset %" PRIu64 " (%u bytes) failed: %s",
                w->c->id, nbd_cmd_name(rq->type), rq->offset, rq->count, msg);
    reply_error(w, rq, nbd_errno(r), msg);
}

/* Consecutive extents of [offset, offset + count) from the backend,
 * clipped to the range, at most `max` of them (merged where the flags
 * agree).  With `cover` (a READ) the range is covered to its end: what the
 * backend did not describe is data.  Without it (BLOCK_STATUS) the answer
 * may stop short, as the protocol allows; it has at least one extent. */
static size_t get_extents(struct worker *w, uint64_t offset, uint32_t count, size_t max,
                          bool cover)
{
    const struct nbd_backend *be = &w->c->srv->be;
    uint64_t pos = offset, end = offset + count;
    size_t n = 0;

    while (be->ops->extents && pos < end && n < max) {
        int r = be->ops->extents(be->handle, (uint32_t)(end - pos), pos, w->ext + n, max - n);
        if (r <= 0)
            break;
        size_t got = 0;
        for (; got < (size_t)r && pos < end; got++) {
            struct nbd_extent *e = &w->ext[n + got];
            if (e->offset != pos || e->length == 0)
                break; /* not what was asked: report the rest as data */
            e->length = MIN(e->length, end - pos);
            pos += e->length;
        }
        if (got == 0)
            break;
        n += got;
    }
    if (pos < end && (cover || n == 0)) {
        if (n == max)
            n--, pos = w->ext[n].offset; /* fold the last into the data tail */
        w->ext[n++] = (struct nbd_extent){ .offset = pos, .length = end - pos, .flags = 0 };
    }
    /* Merge neighbours with the same flags. */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m && w->ext[m - 1].flags == w->ext[i].flags)
            w->ext[m - 1].length += w->ext[i].length;
        else
            w->ext[m++] = w->ext[i];
    }
    return m;
}

static void do_read(struct worker *w, const struct nbd_request *rq)
{
    const struct nbd_backend *be = &w->c->srv->be;
    int r;

    worker_buf(w, rq->count);
    if (!w->c->sess.structured) {
        r = be->ops->pread(be->handle, w->buf, rq->count, rq->offset);
        if (r < 0)
            reply_backend_error(w, rq, r);
        else
            reply_simple(w, rq, 0, w->buf, rq->count);
        return;
    }
    /* Structured: holes as OFFSET_HOLE chunks, data as OFFSET_DATA chunks
     * read straight into the reply buffer; all read before any is sent,
     * so an error is one error chunk and never half a reply. */
    size_t n = get_extents(w, rq->offset, rq->count, MAX_CHUNKS, true);
    int niov = 0;
    for (size_t i = 0; i < n; i++) {
        const struct nbd_extent *e = &w->ext[i];
        uint8_t *h = w->hdr[i];
        uint16_t flags = i + 1 == n ? NBD_REPLY_FLAG_DONE : 0;
        if (e->flags & NBD_STATE_ZERO) {
            chunk_header(h, flags, NBD_REPLY_TYPE_OFFSET_HOLE, rq->cookie, 12);
            nbd_put64(h + 20, e->offset);
            nbd_put32(h + 28, (uint32_t)e->length);
            w->iov[niov++] = (struct iovec){ h, 32 };
            continue;
        }
        uint8_t *dst = w->buf + (e->offset - rq->offset);
        r = be->ops->pread(be->handle, dst, (uint32_t)e->length, e->offset);
        if (r < 0) {
            reply_backend_error(w, rq, r);
            return;
        }
        chunk_header(h, flags, NBD_REPLY_TYPE_OFFSET_DATA, rq->cookie,
                     (uint32_t)(8 + e->length));
        nbd_put64(h + 20, e->offset);
        w->iov[niov++] = (struct iovec){ h, 28 };
        w->iov[niov++] = (struct iovec){ dst, (size_t)e->length };
    }
    conn_send(w->c, w->iov, niov);
}

static void do_block_status(struct worker *w, const struct nbd_request *rq)
{
    size_t max = (rq->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : MAX_CHUNKS;
    size_t n = get_extents(w, rq->offset, rq->count, max, false);
    uint8_t *p;

    /* 20-byte chunk header, context id, then 8 bytes a descriptor: the
     * worker buffer holds it (n <= MAX_CHUNKS). */
    worker_buf(w, 24 + 8 * MAX_CHUNKS);
    p = w->buf;
    chunk_header(p, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, rq->cookie,
                 (uint32_t)(4 + 8 * n));
    nbd_put32(p + 20, NBD_META_BASE_ALLOCATION);
    for (size_t i = 0; i < n; i++) {
        nbd_put32(p + 24 + 8 * i, (uint32_t)w->ext[i].length);
        nbd_put32(p + 28 + 8 * i, w->ext[i].flags & (NBD_STATE_HOLE | NBD_STATE_ZERO));
    }
    struct iovec iov = { p, 24 + 8 * n };
    conn_send(w->c, &iov, 1);
}

/* WRITE_ZEROES for a backend without a zero callback: write zeros. */
static int write_zeros(struct worker *w, const struct nbd_request *rq, bool fua)
{
    const struct nbd_backend *be = &w->c->srv->be;
    uint64_t pos = rq->offset, end = rq->offset + rq->count;
    size_t step = 1 << 20;
    int r;

    worker_buf(w, step);
    memset(w->buf, 0, step);
    while (pos < end) {
        uint32_t n = (uint32_t)MIN((uint64_t)step, end - pos);
        r = be->ops->pwrite(be->handle, w->buf, n, pos, fua && pos + n == end);
        if (r < 0)
            return r;
        pos += n;
    }
    return 0;
}

static void handle(struct worker *w, const struct nbd_request *rq)
{
    struct conn *c = w->c;
    struct nbd_server *srv = c->srv;
    const struct nbd_backend *be = &srv->be;
    bool fua = rq->flags & NBD_CMD_FLAG_FUA;
    const char *why = NULL;
    uint32_t err;
    int r = 0;

    atomic_fetch_add(&srv->st_requests, 1);
    err = nbd_request_validate(rq, &srv->ex, &c->sess, &why);
    if (err) {
        reply_error(w, rq, err, why);
        return;
    }
    error_clear();
    switch (rq->type) {
    case NBD_CMD_READ:
        do_read(w, rq);
        return;
    case NBD_CMD_BLOCK_STATUS:
        do_block_status(w, rq);
        return;
    case NBD_CMD_WRITE:
        r = be->ops->pwrite(be->handle, w->buf, rq->count, rq->offset, fua);
        break;
    case NBD_CMD_FLUSH:
        r = be->ops->flush && !be->read_only ? be->ops->flush(be->handle) : 0;
        break;
    case NBD_CMD_TRIM:
        r = be->ops->trim(be->handle, rq->count, rq->offset, fua);
        break;
    case NBD_CMD_WRITE_ZEROES:
        if (be->ops->zero)
            r = be->ops->zero(be->handle, rq->count, rq->offset,
                              !(rq->flags & NBD_CMD_FLAG_NO_HOLE), fua);
        else
            r = write_zeros(w, rq, fua);
        break;
    case NBD_CMD_CACHE:
        r = be->ops->cache ? be->ops->cache(be->handle, rq->count, rq->offset) : 0;
        break;
    }
    if (r < 0)
        reply_backend_error(w, rq, r);
    else
        reply_simple(w, rq, 0, NULL, 0);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct conn *c = w->c;
    uint8_t hdr[NBD_REQUEST_SIZE];
    struct nbd_request rq;
    bool holding = false;
    int r;

    for (;;) {
        if (!holding)
            pthread_mutex_lock(&c->rlock);
        holding = false;
        if (atomic_load(&c->dead)) {
            pthread_mutex_unlock(&c->rlock);
            break;
        }
        r = recv_all(c->fd, hdr, sizeof(hdr));
        if (r < 0) {
            /* The client went away (or the server is stopping). */
            atomic_store(&c->dead, true);
            pthread_mutex_unlock(&c->rlock);
            break;
        }
        if (nbd_request_parse(hdr, &rq) < 0) {
            log_warning("nbd: connection %" PRIu64 ": bad request magic 0x%08x, closing",
                        c->id, nbd_get32(hdr));
            atomic_fetch_add(&c->srv->st_protocol, 1);
            conn_kill(c, true);
            pthread_mutex_unlock(&c->rlock);
            break;
        }
        if (rq.type == NBD_CMD_DISC) {
            log_debug("nbd: connection %" PRIu64 ": disconnect requested", c->id);
            conn_kill(c, false);
            pthread_mutex_unlock(&c->rlock);
            break;
        }
        if (rq.type == NBD_CMD_WRITE) {
            if (rq.count > NBD_MAX_BLOCK) {
                /* The payload cannot be skipped cheaply: the spec lets
                 * the server drop the connection. */
                log_warning("nbd: connection %" PRIu64 ": WRITE of %u bytes exceeds the "
                            "%u-byte maximum, closing",
                            c->id, rq.count, NBD_MAX_BLOCK);
                atomic_fetch_add(&c->srv->st_protocol, 1);
                conn_kill(c, true);
                pthread_mutex_unlock(&c->rlock);
                break;
            }
            worker_buf(w, rq.count);
            r = recv_all(c->fd, w->buf, rq.count);
            if (r < 0) {
                conn_kill(c, false);
                pthread_mutex_unlock(&c->rlock);
                break;
            }
        }
        /* Keep the read lock through a small READ or BLOCK_STATUS when
         * nothing more is queued on the socket (a QD1 client): handing it
         * over would wake another thread only for it to sleep in recv(),
         * which costs more than such a request.  Anything else, or with
         * more requests queued, lets the next thread read at once. */
        int queued = 1;
        if ((rq.type == NBD_CMD_READ || rq.type == NBD_CMD_BLOCK_STATUS) &&
            rq.count <= KEEP_MAX && ioctl(c->fd, FIONREAD, &queued) == 0 && queued == 0)
            holding = true;
        else
            pthread_mutex_unlock(&c->rlock);
        handle(w, &rq);
    }
    return NULL;
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    struct nbd_server *srv = c->srv;
    struct worker *ws;
    int n = 0;

    if (handshake(c)) {
        log_info("nbd: connection %" PRIu64 ": serving '%s'%s%s", c->id, srv->ex.name,
                 c->sess.structured ? ", structured replies" : "",
                 c->sess.base_allocation ? ", base:allocation" : "");
        ws = xcalloc((size_t)srv->threads, sizeof(*ws));
        for (n = 0; n < srv->threads; n++) {
            ws[n].c = c;
            if (n > 0 && pthread_create(&ws[n].thread, NULL, worker_main, &ws[n]) != 0)
                break;
        }
        worker_main(&ws[0]);
        for (int i = 1; i < n; i++)
            pthread_join(ws[i].thread, NULL);
        for (int i = 0; i < srv->threads; i++)
            free(ws[i].buf);
        free(ws);
    }
    log_info("nbd: connection %" PRIu64 ": closed", c->id);

    pthread_mutex_lock(&srv->lock);
    for (struct conn **p = &srv->conns; *p; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    close(c->fd);
    srv->n_conns--;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
    pthread_mutex_destroy(&c->rlock);
    pthread_mutex_destroy(&c->wlock);
    free(c);
    return NULL;
}

/* ---- listening ---- */

static void accept_one(struct nbd_server *srv, int lfd)
{
    pthread_attr_t attr;
    pthread_t t;
    struct conn *c;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

    if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            log_warning("nbd: accept failed: %s", strerror(errno));
        return;
    }
    if (lfd == srv->tcp_fd) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    pthread_mutex_lock(&srv->lock);
    if (srv->stopping || srv->n_conns >= srv->max_conns) {
        pthread_mutex_unlock(&srv->lock);
        log_warning("nbd: refusing a connection: %s",
                    srv->stopping ? "shutting down" : "too many connections");
        close(fd);
        return;
    }
    c = xcalloc(1, sizeof(*c));
    c->srv = srv;
    c->fd = fd;
    c->id = ++srv->next_id;
    pthread_mutex_init(&c->rlock, NULL);
    pthread_mutex_init(&c->wlock, NULL);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, conn_main, c) != 0) {
        pthread_mutex_unlock(&srv->lock);
        pthread_attr_destroy(&attr);
        log_warning("nbd: cannot start a connection thread");
        close(fd);
        free(c);
        return;
    }
    pthread_attr_destroy(&attr);
    c->next = srv->conns;
    srv->conns = c;
    srv->n_conns++;
    atomic_fetch_add(&srv->st_connections, 1);
    pthread_mutex_unlock(&srv->lock);
}

static void *accept_main(void *arg)
{
    struct nbd_server *srv = arg;

    for (;;) {
        struct pollfd p[3] = {
            { .fd = srv->wake[0], .events = POLLIN },
            { .fd = srv->unix_fd, .events = POLLIN },
            { .fd = srv->tcp_fd, .events = POLLIN },
        };
        if (poll(p, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            log_error("nbd: poll failed: %s", strerror(errno));
            break;
        }
        if (p[0].revents)
            break;
        if (p[1].revents & POLLIN)
            accept_one(srv, srv->unix_fd);
        if (p[2].revents & POLLIN)
            accept_one(srv, srv->tcp_fd);
    }
    return NULL;
}

static int listen_unix(struct nbd_server *srv, const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct stat st;
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path))
        return error_set(ENAMETOOLONG, "socket path '%s' is too long (at most %zu bytes)", path,
                         sizeof(sa.sun_path) - 1);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return error_set(EEXIST, "'%s' exists and is not a socket", path);
        /* A socket somebody still listens on is theirs; a stale one goes. */
        _cleanup_close_ int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            return error_set(EADDRINUSE, "socket '%s' is in use by another server", path);
        unlink(path);
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return error_set(errno, "cannot create a unix socket: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0) {
        int e = errno;
        close(fd);
        return error_set(e, "cannot listen on '%s': %s", path, strerror(e));
    }
    srv->unix_fd = fd;
    srv->socket_path = xstrdup(path);
    return 0;
}

static int listen_tcp(struct nbd_server *srv, const char *addr)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t sl = sizeof(sa);
    _cleanup_free_ char *host = xstrdup(addr);
    char *colon = strrchr(host, ':'), *end;
    unsigned long port;
    int fd, one = 1;

    if (!colon)
        return error_set(EINVAL, "TCP address '%s' is not ADDR:PORT", addr);
    *colon = '\0';
    port = strtoul(colon + 1, &end, 10);
    if (!colon[1] || *end || port > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return error_set(EINVAL, "TCP address '%s' is not IPV4-ADDRESS:PORT", addr);
    sa.sin_port = htons((uint16_t)port);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return error_set(errno, "cannot create a TCP socket: %s", strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
        int e = errno;
        close(fd);
        return error_set(e, "cannot listen on '%s': %s", addr, strerror(e));
    }
    srv->tcp_fd = fd;
    srv->port = ntohs(sa.sin_port);
    return 0;
}

int nbd_server_new(const struct nbd_server_options *opts, struct nbd_backend *backend,
                   struct nbd_server **ret)
{
    struct nbd_server *srv;
    const struct nbd_backend_ops *ops = backend->ops;
    uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_CACHE;
    int r;

    if (!ops || !ops->pread)
        return error_set(EINVAL, "an NBD backend needs a pread callback");
    if (!opts->socket_path && !opts->tcp_listen)
        return error_set(EINVAL, "nothing to listen on: give a socket path or a TCP address");
    if (opts->threads < 0 || opts->threads > MAX_THREADS)
        return error_set(EINVAL, "threads must be from 1 to %d", MAX_THREADS);
    if (strlen(opts->export_name) > NBD_STRING_MAX)
        return error_set(EINVAL, "export name longer than %d bytes", NBD_STRING_MAX);

    srv = xcalloc(1, sizeof(*srv));
    srv->be = *backend;
    if (!ops->pwrite)
        srv->be.read_only = true;
    if (srv->be.read_only) {
        f |= NBD_FLAG_READ_ONLY;
    } else {
        f |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_WRITE_ZEROES;
        if (ops->trim)
            f |= NBD_FLAG_SEND_TRIM;
    }
    if (srv->be.can_multi_conn)
        f |= NBD_FLAG_CAN_MULTI_CONN;
    srv->name = xstrdup(opts->export_name);
    srv->description = opts->description ? xstrdup(opts->description) : NULL;
    srv->ex = (struct nbd_export_info){ .name = srv->name, .description = srv->description,
                                        .size = backend->size, .tflags = f };
    srv->threads = opts->threads ? opts->threads : DEFAULT_THREADS;
    srv->max_conns = opts->max_connections > 0 ? opts->max_connections : DEFAULT_MAX_CONNECTIONS;
    srv->handshake_timeout_ms = opts->handshake_timeout_ms > 0 ? opts->handshake_timeout_ms
                                                               : DEFAULT_HANDSHAKE_TIMEOUT_MS;
    srv->unix_fd = srv->tcp_fd = srv->wake[0] = srv->wake[1] = -1;
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->cond, NULL);
    /* The server owns the backend from here on, failure or not. */
    backend->ops = NULL;
    backend->handle = NULL;

    if (pipe2(srv->wake, O_CLOEXEC) < 0) {
        r = error_set(errno, "cannot create a pipe: %s", strerror(errno));
        goto fail;
    }
    if (opts->socket_path && (r = listen_unix(srv, opts->socket_path)) < 0)
        goto fail;
    if (opts->tcp_listen && (r = listen_tcp(srv, opts->tcp_listen)) < 0)
        goto fail;
    if (pthread_create(&srv->accept_thread, NULL, accept_main, srv) != 0) {
        r = error_set(EAGAIN, "cannot start the accept thread");
        goto fail;
    }
    srv->accepting = true;
    *ret = srv;
    return 0;
fail:
    nbd_server_free(srv);
    return r;
}

unsigned nbd_server_port(const struct nbd_server *srv)
{
    return srv->port;
}

int nbd_server_shutdown(struct nbd_server *srv)
{
    struct timespec deadline;
    bool forced = false;

    pthread_mutex_lock(&srv->lock);
    if (srv->shut_down) {
        pthread_mutex_unlock(&srv->lock);
        return srv->shutdown_result;
    }
    srv->stopping = true;
    pthread_mutex_unlock(&srv->lock);

    if (srv->accepting) {
        char b = 1;
        while (write(srv->wake[1], &b, 1) < 0 && errno == EINTR)
            ;
        pthread_join(srv->accept_thread, NULL);
        srv->accepting = false;
    }
    if (srv->unix_fd >= 0)
        close(srv->unix_fd);
    if (srv->tcp_fd >= 0)
        close(srv->tcp_fd);
    srv->unix_fd = srv->tcp_fd = -1;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += SHUTDOWN_GRACE_S;
    pthread_mutex_lock(&srv->lock);
    for (struct conn *c = srv->conns; c; c = c->next)
        shutdown(c->fd, SHUT_RD);
    while (srv->n_conns > 0) {
        if (pthread_cond_timedwait(&srv->cond, &srv->lock, &deadline) == ETIMEDOUT && !forced) {
            /* A client that does not read its replies: stop writing too. */
            log_warning("nbd: %d connection(s) still busy after %d s, closing them",
                        srv->n_conns, SHUTDOWN_GRACE_S);
            for (struct conn *c = srv->conns; c; c = c->next)
                shutdown(c->fd, SHUT_RDWR);
            forced = true;
        }
    }
    pthread_mutex_unlock(&srv->lock);

    srv->shutdown_result = 0;
    if (!srv->be.read_only && srv->be.ops && srv->be.ops->flush) {
        int r = srv->be.ops->flush(srv->be.handle);
        if (r < 0)
            srv->shutdown_result = r;
    }
    if (srv->socket_path)
        unlink(srv->socket_path);
    srv->shut_down = true;
    return srv->shutdown_result;
}

void nbd_server_free(struct nbd_server *srv)
{
    if (!srv)
        return;
    nbd_server_shutdown(srv);
    if (srv->be.ops && srv->be.ops->close)
        srv->be.ops->close(srv->be.handle);
    if (srv->wake[0] >= 0)
        close(srv->wake[0]);
    if (srv->wake[1] >= 0)
        close(srv->wake[1]);
    pthread_mutex_destroy(&srv->lock);
    pthread_cond_destroy(&srv->cond);
    free(srv->name);
    free(srv->description);
    free(srv->socket_path);
    free(srv);
}

void nbd_server_get_stats(struct nbd_server *srv, struct nbd_server_stats *ret)
{
    ret->connections = atomic_load(&srv->st_connections);
    ret->requests = atomic_load(&srv->st_requests);
    ret->errors = atomic_load(&srv->st_errors);
    ret->protocol_errors = atomic_load(&srv->st_protocol);
}
