/* A small HTTP/1.1 load generator for EC2 query-protocol servers (kiln,
 * moto_server): N client threads, one kept-alive connection each, every
 * request freshly SigV4-signed (kiln refuses a date more than five minutes
 * off, and a replayed signature would test nothing), per-request latency
 * from the first byte written to the last byte of the body read.
 *
 *   loadgen --url http://HOST:PORT --access-key A --secret-key S
 *           [--region R] [--clients N] [--duration S] [--warmup S]
 *           [--max-seconds S]
 *           --body 'Action=DescribeImages&Version=2016-11-15&...'
 *
 * Prints one line of key=value pairs on stdout:
 *   requests=N unfinished=N errors=N seconds=S rps=R p50_ms=A p99_ms=B
 *   max_ms=C bytes_per_response=N images=N
 * where `images` counts the <imageId> elements of the first response (a
 * cross-check of what the server answered).  Requests answered during the
 * warm-up are not counted; after --duration no new request starts and the
 * ones in flight are waited for and counted, so a slow server is measured
 * on whole requests (throughput: responses completed after the warm-up
 * divided by the time from the end of the warm-up to the last one).  Any
 * non-200 answer or broken connection is an error: the first one is
 * described on stderr and the exit status is 1.
 *
 * --max-seconds bounds a run against a server slower than the run can
 * wait for (moto_server takes minutes for some queries): when it expires,
 * the connections of requests still in flight are shut down and those
 * requests are counted as `unfinished`, with the time they had waited as
 * their latency.  Such latencies are lower bounds, and the true throughput
 * is at most (requests + unfinished) / seconds; run.sh reports them so.
 *
 * Signing uses kiln's own sigv4_sign() (src/api/sigv4.c), which
 * tests/unit/test-sigv4.c checks against AWS's published example; moto
 * does not check signatures, kiln checks every one.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/sigv4.h"
#include "common/cleanup.h"
#include "common/util.h"

#define CONTENT_TYPE "application/x-www-form-urlencoded; charset=utf-8"
#define MAX_HEAD 16384

struct options {
    char host[256]; /* as sent in Host: "127.0.0.1:8080" */
    char node[256], service[16];
    const char *akid, *secret, *region, *body;
    unsigned clients;
    double duration, warmup;
};

struct client {
    pthread_t thread;
    const struct options *o;
    struct addrinfo *ai;
    atomic_int fd;
    /* receive buffer */
    char *buf;
    size_t cap, len, off;
    /* results */
    uint64_t *lat_ns;
    size_t n_lat, cap_lat;
    uint64_t errors, bytes, responses, unfinished;
    long images; /* <imageId> count of the first response, -1 before */
};

static uint64_t warm_until_ns, stop_at_ns;
static atomic_bool failed_once, cut;
static atomic_uint running;

/* The first failure of the run, on stderr. */
static void report_failure(const char *what, const char *detail)
{
    if (!atomic_exchange(&failed_once, true))
        fprintf(stderr, "loadgen: %s: %s\n", what, detail);
}

static int connect_to(struct client *c)
{
    int one = 1;

    if (!c->buf) {
        c->cap = 65536;
        c->buf = xmalloc(c->cap);
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = socket(c->ai->ai_family, c->ai->ai_socktype | SOCK_CLOEXEC, c->ai->ai_protocol);
    if (c->fd < 0)
        return -errno;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, c->ai->ai_addr, c->ai->ai_addrlen) < 0) {
        int e = -errno;
        close(c->fd);
        c->fd = -1;
        return e;
    }
    c->len = c->off = 0;
    return 0;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -EPIPE;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Make at least `want` unread bytes available at c->buf + c->off.
 * Returns 0, or -EPIPE when the peer closed first. */
static int fill(struct client *c, size_t want)
{
    if (c->off && c->off == c->len)
        c->off = c->len = 0;
    while (c->len - c->off < want) {
        ssize_t r;

        if (c->off + want > c->cap) {
            if (c->off) {
                memmove(c->buf, c->buf + c->off, c->len - c->off);
                c->len -= c->off;
                c->off = 0;
            }
            if (want > c->cap) {
                c->cap = MAX(want, 2 * c->cap);
                c->buf = xrealloc(c->buf, c->cap);
            }
        }
        r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -EPIPE;
        c->len += (size_t)r;
    }
    return 0;
}

/* Read up to and including the next CRLF; *ret points at the line (NUL
 * terminated in the buffer, CRLF cut). */
static int read_line(struct client *c, char **ret)
{
    for (;;) {
        char *start = c->buf + c->off;
        char *nl = memchr(start, '\n', c->len - c->off);
        if (nl) {
            *nl = '\0';
            if (nl > start && nl[-1] == '\r')
                nl[-1] = '\0';
            c->off = (size_t)(nl + 1 - c->buf);
            *ret = start;
            return 0;
        }
        if (c->len - c->off >= MAX_HEAD)
            return -EPROTO;
        if (fill(c, c->len - c->off + 1) < 0)
            return -EPIPE;
    }
}

static long count_images(const char *p, size_t n)
{
    static const char tag[] = "<imageId>";
    const char *end = p + n;
    long k = 0;

    while ((p = memmem(p, (size_t)(end - p), tag, sizeof(tag) - 1))) {
        k++;
        p += sizeof(tag) - 1;
    }
    return k;
}

/* One response: status line, headers, body (Content-Length or chunked).
 * *ret_status gets the status, *ret_close whether the server closes. */
static int read_response(struct client *c, int *ret_status, bool *ret_close, size_t *ret_len)
{
    char *line;
    long long length = -1;
    bool chunked = false, close_after = false;
    size_t body = 0;
    int r;

    r = read_line(c, &line);
    if (r < 0)
        return r;
    if (strncmp(line, "HTTP/1.", 7) != 0 || strlen(line) < 12)
        return -EPROTO;
    *ret_status = atoi(line + 9);
    if (line[7] == '0')
        close_after = true;
    for (;;) {
        r = read_line(c, &line);
        if (r < 0)
            return r;
        if (!*line)
            break;
        if (strncasecmp(line, "content-length:", 15) == 0)
            length = atoll(line + 15);
        else if (strncasecmp(line, "transfer-encoding:", 18) == 0 && strcasestr(line, "chunked"))
            chunked = true;
        else if (strncasecmp(line, "connection:", 11) == 0 && strcasestr(line, "close"))
            close_after = true;
    }
    if (chunked) {
        for (;;) {
            unsigned long long n;
            r = read_line(c, &line);
            if (r < 0)
                return r;
            n = strtoull(line, NULL, 16);
            if (n == 0)
                break;
            r = fill(c, (size_t)n + 2);
            if (r < 0)
                return r;
            if (c->images < 0)
                c->images = count_images(c->buf + c->off, (size_t)n); /* first chunk */
            c->off += (size_t)n + 2;
            body += (size_t)n;
        }
        do { /* trailers up to the empty line */
            r = read_line(c, &line);
            if (r < 0)
                return r;
        } while (*line);
    } else if (length >= 0) {
        r = fill(c, (size_t)length);
        if (r < 0)
            return r;
        if (c->images < 0 && *ret_status == 200)
            c->images = count_images(c->buf + c->off, (size_t)length);
        if (*ret_status != 200) {
            char msg[512];
            snprintf(msg, sizeof(msg), "%.*s", (int)MIN((size_t)length, sizeof(msg) - 1),
                     c->buf + c->off);
            report_failure("error response", msg);
        }
        c->off += (size_t)length;
        body = (size_t)length;
    } else {
        /* Delimited by the close. */
        while (fill(c, c->len - c->off + 1) == 0)
            ;
        body = c->len - c->off;
        c->off = c->len;
        close_after = true;
    }
    *ret_close = close_after;
    *ret_len = body;
    return 0;
}

static int sign_and_send(struct client *c)
{
    const struct options *o = c->o;
    char amz_date[17], date[9], sig[65], head[2048], len[24];
    struct sigv4_header h[3];
    struct sigv4_request rq;
    time_t t = time(NULL);
    struct tm tm;
    size_t body_len = strlen(o->body);
    int n, r;

    gmtime_r(&t, &tm);
    strftime(amz_date, sizeof(amz_date), "%Y%m%dT%H%M%SZ", &tm);
    snprintf(date, sizeof(date), "%.8s", amz_date);
    snprintf(len, sizeof(len), "%zu", body_len);
    h[0] = (struct sigv4_header){"Content-Type", CONTENT_TYPE};
    h[1] = (struct sigv4_header){"Host", o->host};
    h[2] = (struct sigv4_header){"X-Amz-Date", amz_date};
    rq = (struct sigv4_request){.method = "POST",
                                .path = "/",
                                .query = "",
                                .headers = h,
                                .n_headers = 3,
                                .body = o->body,
                                .body_len = body_len};
    r = sigv4_sign(&rq, o->secret, amz_date, o->region, "ec2", "content-type;host;x-amz-date",
                   false, sig);
    if (r < 0)
        return r;
    n = snprintf(head, sizeof(head),
                 "POST / HTTP/1.1\r\nHost: %s\r\nContent-Type: " CONTENT_TYPE "\r\n"
                 "X-Amz-Date: %s\r\nAuthorization: " SIGV4_ALGORITHM
                 " Credential=%s/%s/%s/ec2/aws4_request, SignedHeaders=content-type;host;"
                 "x-amz-date, Signature=%s\r\nContent-Length: %s\r\n\r\n",
                 o->host, amz_date, o->akid, date, o->region, sig, len);
    if (n < 0 || (size_t)n >= sizeof(head))
        return -ENAMETOOLONG;
    r = send_all(c->fd, head, (size_t)n);
    if (r == 0)
        r = send_all(c->fd, o->body, body_len);
    return r;
}

static void record(struct client *c, uint64_t ns)
{
    if (c->n_lat == c->cap_lat) {
        c->cap_lat = c->cap_lat ? 2 * c->cap_lat : 1024;
        c->lat_ns = xrealloc(c->lat_ns, c->cap_lat * sizeof(*c->lat_ns));
    }
    c->lat_ns[c->n_lat++] = ns;
}

static void *run_client(void *arg)
{
    struct client *c = arg;
    bool connected = false;

    while (now_ns() < stop_at_ns && !atomic_load(&cut)) {
        uint64_t t0;
        int status = 0;
        bool close_after = false;
        size_t n = 0;
        int r;

        if (!connected) {
            r = connect_to(c);
            if (r < 0) {
                report_failure("cannot connect", strerror(-r));
                c->errors++;
                break;
            }
            connected = true;
        }
        t0 = now_ns();
        r = sign_and_send(c);
        if (r == 0)
            r = read_response(c, &status, &close_after, &n);
        if (r < 0 && atomic_load(&cut)) {
            record(c, now_ns() - t0); /* waited at least this long */
            c->unfinished++;
            break;
        }
        if (r < 0) {
            /* A kept-alive connection the server closed: reconnect once
             * quietly; a failure on a fresh one is an error. */
            report_failure("request failed", strerror(-r));
            c->errors++;
            connected = false;
            continue;
        }
        if (status != 200) {
            c->errors++;
        } else if (now_ns() >= warm_until_ns) { /* not answered during the warm-up */
            record(c, now_ns() - t0);
            c->bytes += n;
            c->responses++;
        }
        if (close_after)
            connected = false;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    atomic_fetch_sub(&running, 1);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n). */
static double pct_ms(const uint64_t *v, size_t n, double p)
{
    size_t k;

    if (!n)
        return 0;
    k = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return (double)v[k - 1] / 1e6;
}

static int parse_url(const char *url, struct options *o)
{
    const char *p = url, *slash, *colon;

    if (strncmp(p, "http://", 7) != 0)
        return -EINVAL;
    p += 7;
    slash = strchr(p, '/');
    snprintf(o->host, sizeof(o->host), "%.*s", (int)(slash ? slash - p : (long)strlen(p)), p);
    colon = strrchr(o->host, ':');
    if (!colon)
        return -EINVAL;
    snprintf(o->node, sizeof(o->node), "%.*s", (int)(colon - o->host), o->host);
    snprintf(o->service, sizeof(o->service), "%s", colon + 1);
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: loadgen --url http://HOST:PORT --access-key A --secret-key S "
                    "--body FORM [--region R] [--clients N] [--duration S] [--warmup S]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"url", required_argument, NULL, 'u'},         {"access-key", required_argument, NULL, 'a'},
        {"secret-key", required_argument, NULL, 's'},  {"region", required_argument, NULL, 'r'},
        {"clients", required_argument, NULL, 'c'},     {"duration", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, 'w'},      {"body", required_argument, NULL, 'b'},
        {"max-seconds", required_argument, NULL, 'm'}, {NULL, 0, NULL, 0},
    };
    struct options o = {.region = "us-east-1", .clients = 1, .duration = 10, .warmup = 1};
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    struct client *cl;
    const char *url = NULL;
    uint64_t *all, t_end, n_all = 0, errors = 0, bytes = 0, responses = 0, unfinished = 0;
    long images = -1;
    double secs, max_seconds = 0;
    int opt;

    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'u': url = optarg; break;
        case 'a': o.akid = optarg; break;
        case 's': o.secret = optarg; break;
        case 'r': o.region = optarg; break;
        case 'c': o.clients = (unsigned)atoi(optarg); break;
        case 'd': o.duration = atof(optarg); break;
        case 'w': o.warmup = atof(optarg); break;
        case 'b': o.body = optarg; break;
        case 'm': max_seconds = atof(optarg); break;
        default: usage();
        }
    }
    if (!url || !o.akid || !o.secret || !o.body || o.clients < 1 || o.clients > 1024 ||
        o.duration <= 0 || o.warmup < 0)
        usage();
    if (parse_url(url, &o) < 0) {
        fprintf(stderr, "loadgen: cannot parse '%s' (want http://HOST:PORT)\n", url);
        return 2;
    }
    if (getaddrinfo(o.node, o.service, &hints, &ai) != 0 || !ai) {
        fprintf(stderr, "loadgen: cannot resolve '%s'\n", o.host);
        return 2;
    }

    warm_until_ns = now_ns() + (uint64_t)(o.warmup * 1e9);
    stop_at_ns = warm_until_ns + (uint64_t)(o.duration * 1e9);
    cl = xcalloc(o.clients, sizeof(*cl));
    for (unsigned i = 0; i < o.clients; i++) {
        cl[i] = (struct client){.o = &o, .ai = ai, .fd = -1, .images = -1};
        atomic_fetch_add(&running, 1);
        if (pthread_create(&cl[i].thread, NULL, run_client, &cl[i]) != 0) {
            fprintf(stderr, "loadgen: cannot start thread %u\n", i);
            return 2;
        }
    }
    /* Wait for the clients, up to --max-seconds after the warm-up. */
    while (atomic_load(&running)) {
        struct timespec pause = {.tv_nsec = 20 * 1000 * 1000};
        if (max_seconds > 0 && now_ns() > warm_until_ns + (uint64_t)(max_seconds * 1e9)) {
            atomic_store(&cut, true);
            for (unsigned i = 0; i < o.clients; i++) {
                int fd = atomic_load(&cl[i].fd);
                if (fd >= 0)
                    shutdown(fd, SHUT_RDWR);
            }
        }
        nanosleep(&pause, NULL);
    }
    for (unsigned i = 0; i < o.clients; i++) {
        pthread_join(cl[i].thread, NULL);
        n_all += cl[i].n_lat;
        errors += cl[i].errors;
        unfinished += cl[i].unfinished;
        bytes += cl[i].bytes;
        responses += cl[i].responses;
        if (images < 0)
            images = cl[i].images;
    }
    t_end = now_ns();
    all = xcalloc(n_all ? n_all : 1, sizeof(*all));
    for (unsigned i = 0, k = 0; i < o.clients; i++) {
        memcpy(all + k, cl[i].lat_ns, cl[i].n_lat * sizeof(*all));
        k += (unsigned)cl[i].n_lat;
        free(cl[i].lat_ns);
        free(cl[i].buf);
    }
    qsort(all, n_all, sizeof(*all), cmp_u64);
    secs = (double)(t_end - warm_until_ns) / 1e9;
    /* n_all counts the unfinished requests' lower bounds too. */
    printf("requests=%llu unfinished=%llu errors=%llu seconds=%.2f rps=%.2f p50_ms=%.2f "
           "p99_ms=%.2f max_ms=%.2f bytes_per_response=%llu images=%ld\n",
           (unsigned long long)(n_all - unfinished), (unsigned long long)unfinished,
           (unsigned long long)errors, secs, (double)(n_all - unfinished) / secs,
           pct_ms(all, n_all, 50), pct_ms(all, n_all, 99), pct_ms(all, n_all, 100),
           (unsigned long long)(responses ? bytes / responses : 0), images);
    free(all);
    free(cl);
    freeaddrinfo(ai);
    return errors ? 1 : 0;
}
