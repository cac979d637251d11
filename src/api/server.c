/* The HTTP side of the API server: libmicrohttpd, one thread per
 * connection, and the request pipeline every EC2 call goes through:
 *
 *   method and size checks (before the body is read)
 *   -> SigV4 over the raw request (401 AuthFailure)
 *   -> region from the credential scope, one of ours (400)
 *   -> parameters from the query string and the form body (400)
 *   -> Action and Version (400) -> DryRun -> the action's handler
 *   -> XML envelope, or the error envelope via api_error_map()
 *
 * Every response carries the request id (a UUID v4) in x-amzn-RequestId
 * and in the body, and every log line about a request starts with it.
 *
 * Design notes, shutdown: api_server_shutdown() quiesces the daemon (no
 * new connections), marks responses "Connection: close" so that kept-alive
 * clients go away, waits for the count of requests in flight (counted from
 * the handler's first call to the completion callback) to reach zero, and
 * only then stops the daemon, so no accepted request is cut off unless the
 * timeout expires.
 */
#include "api/api.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "api/internal.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "service/service.h"

#define MAX_HEADERS 128
#define DEFAULT_MAX_CONNECTIONS 256
#define DEFAULT_SHUTDOWN_TIMEOUT 30
#define CONNECTION_TIMEOUT 120 /* seconds of client silence */

static const char *const default_regions[] = { "us-east-1", "us-west-2" };

struct api_server {
    struct api_server_options opts;
    const char *const *regions;
    size_t n_regions;
    struct MHD_Daemon *daemon;
    MHD_socket quiesced_fd;
    unsigned port;
    atomic_int in_flight;
    atomic_bool stopping;
    bool stopped;
};

/* One HTTP request, from the URI callback to the completion callback. */
struct request {
    struct api_server *srv;
    char *uri;
    char rid[API_REQUEST_ID_SIZE];
    struct strbuf body;
    bool started, counted, too_large;
    bool ebs;        /* a path of the EBS direct API */
    size_t max_body; /* this request's body cap */
    uint64_t t0;
};

int api_request_id(char buf[API_REQUEST_ID_SIZE])
{
    uint8_t b[16];
    int r = random_bytes(b, sizeof(b));

    if (r < 0)
        return r;
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(buf, API_REQUEST_ID_SIZE,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return 0;
}

/* ---- responses ---- */

static enum MHD_Result send_xml(struct request *rq, struct MHD_Connection *c, int status,
                                struct xml *x)
{
    size_t len;
    char *doc = xml_steal(x, &len);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, doc, MHD_RESPMEM_MUST_FREE);
    enum MHD_Result ret;

    if (!resp) {
        free(doc);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/xml;charset=UTF-8");
    MHD_add_response_header(resp, "x-amzn-RequestId", rq->rid);
    MHD_add_response_header(resp, "Server", "kiln");
    if (atomic_load(&rq->srv->stopping))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Answer with the error envelope for err (a -errno) and the explicit
 * condition e; log what the client is not told. */
static enum MHD_Result send_error(struct request *rq, struct MHD_Connection *c, int err,
                                  enum api_error e, enum api_resource res, const char *what)
{
    struct api_error_reply reply;
    struct xml x;
    char detail[600];

    api_error_map(err, e, res, &reply);
    error_describe(err, detail, sizeof(detail));
    if (reply.status >= 500)
        log_error("%s: %s: %s", rq->rid, what, detail);
    else if (reply.status == 401)
        log_warning("%s: authentication failed: %s", rq->rid, detail);
    else
        log_info("%s: %s: %s %s", rq->rid, what, reply.code, detail);
    xml_init(&x);
    xml_ec2_error(&x, reply.code, reply.expose ? detail : reply.message, rq->rid);
    log_info("%s: %s -> %d %s (%.1f ms)", rq->rid, what, reply.status, reply.code,
             (double)(now_ns() - rq->t0) / 1e6);
    return send_xml(rq, c, reply.status, &x);
}

/* Answer an EBS direct API request (rest-json: JSON or raw block bytes). */
static enum MHD_Result send_ebs(struct request *rq, struct MHD_Connection *c,
                                struct api_ebs_response *resp, const char *what)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    r = MHD_create_response_from_buffer(resp->body_len, resp->body ? resp->body : (void *)"",
                                        resp->body ? MHD_RESPMEM_MUST_FREE
                                                   : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        api_ebs_response_release(resp);
        return MHD_NO;
    }
    resp->body = NULL;
    MHD_add_response_header(r, "Content-Type",
                            resp->content_type ? resp->content_type : "application/json");
    for (size_t i = 0; i < resp->n_headers; i++)
        MHD_add_response_header(r, resp->headers[i].name, resp->headers[i].value);
    MHD_add_response_header(r, "x-amzn-RequestId", rq->rid);
    MHD_add_response_header(r, "Server", "kiln");
    if (atomic_load(&rq->srv->stopping))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    log_info("%s: %s -> %d%s%s (%.1f ms)", rq->rid, what, resp->status,
             resp->error_code ? " " : "", resp->error_code ? resp->error_code : "",
             (double)(now_ns() - rq->t0) / 1e6);
    ret = MHD_queue_response(c, (unsigned)resp->status, r);
    MHD_destroy_response(r);
    return ret;
}

/* An error before the EBS handler runs (authentication, region, size). */
static enum MHD_Result send_ebs_error(struct request *rq, struct MHD_Connection *c, int status,
                                      const char *code, const char *reason, int err,
                                      const char *what)
{
    struct api_ebs_response resp = { 0 };
    char detail[600];

    error_describe(err, detail, sizeof(detail));
    if (status == 403)
        log_warning("%s: authentication failed: %s", rq->rid, detail);
    if (status == 403)
        api_ebs_auth_failure(&resp, "The request signature or credentials are not valid for "
                                    "the EBS direct API.");
    else
        api_ebs_fail(&resp, status, code, reason, detail);
    return send_ebs(rq, c, &resp, what);
}

/* ---- request pipeline ---- */

struct header_list {
    struct sigv4_header h[MAX_HEADERS];
    size_t n;
    bool overflow;
};

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    struct header_list *l = cls;

    if (l->n == MAX_HEADERS) {
        l->overflow = true;
        return MHD_NO;
    }
    l->h[l->n].name = key;
    l->h[l->n].value = value ? value : "";
    l->n++;
    return MHD_YES;
}

static bool region_served(const struct api_server *s, const char *name)
{
    for (size_t i = 0; i < s->n_regions; i++)
        if (strcmp(s->regions[i], name) == 0)
            return true;
    return false;
}

static void region_list(const struct api_server *s, char *buf, size_t size)
{
    size_t o = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < s->n_regions && o < size; i++)
        o += (size_t)snprintf(buf + o, size - o, "%s%s", i ? ", " : "", s->regions[i]);
}

/* The authenticated caller and the server's settings, for a handler.
 * Returns the endpoint URL ctx->endpoint points at (the caller frees it). */
static char *fill_ctx(struct api_ctx *ctx, const struct api_server *srv,
                      const struct sigv4_result *auth, struct MHD_Connection *c)
{
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    char *endpoint = xasprintf("http://%s", host && *host ? host : srv->opts.listen);

    ctx->account = auth->account;
    ctx->region = auth->region;
    ctx->data_dir = srv->opts.data_dir;
    ctx->endpoint = endpoint;
    ctx->regions = srv->regions;
    ctx->n_regions = srv->n_regions;
    return endpoint;
}

static enum MHD_Result process(struct request *rq, struct MHD_Connection *c, const char *method)
{
    struct api_server *srv = rq->srv;
    struct header_list hl = { .n = 0 };
    struct sigv4_result auth;
    struct query params = { 0 }, body_params = { 0 };
    struct api_ctx ctx = { .request_id = rq->rid };
    const struct api_action *act;
    const char *raw_query, *action, *version, *dry;
    _cleanup_free_ char *path = NULL, *endpoint = NULL;
    char what[320], regions[512];
    struct xml x;
    enum MHD_Result ret;
    int r;

    error_clear();
    snprintf(what, sizeof(what), "%s %.100s", method, rq->uri);
    {
        const char *q = strchr(rq->uri, '?');
        path = q ? strndup(rq->uri, (size_t)(q - rq->uri)) : xstrdup(rq->uri);
        if (!path)
            abort();
        raw_query = q ? q + 1 : "";
    }
    MHD_get_connection_values(c, MHD_HEADER_KIND, collect_header, &hl);
    if (hl.overflow)
        return send_error(rq, c, error_set(EINVAL, "more than %d headers", MAX_HEADERS),
                          API_ERR_INVALID_PARAMETER_VALUE, API_RES_NONE, what);

    /* Authentication, over the request exactly as received. */
    struct sigv4_request sreq = {
        .method = method, .path = path, .query = raw_query, .headers = hl.h,
        .n_headers = hl.n, .body = rq->body.data, .body_len = rq->body.len, .now = time(NULL),
    };
    r = sigv4_verify(&sreq, srv->opts.lookup, srv->opts.ud, &auth);
    if (api_ebs_path(path)) {
        /* The EBS direct API: rest-json errors, service `ebs`. */
        if (r == 0 && strcmp(auth.service, "ebs") != 0)
            r = error_set(EACCES, "credential scope service '%s' is not 'ebs'", auth.service);
        if (r == 0 && auth.unsigned_payload &&
            (strcmp(method, "PUT") != 0 || !auth.checksum_signed))
            r = error_set(EACCES, "UNSIGNED-PAYLOAD is accepted only for PutSnapshotBlock "
                                  "with a signed x-amz-checksum");
        if (r == -EACCES)
            return send_ebs_error(rq, c, 403, NULL, NULL, r, what);
        if (r < 0)
            return send_ebs_error(rq, c, 500, "InternalServerException", NULL, r, what);
        if (!region_served(srv, auth.region)) {
            region_list(srv, regions, sizeof(regions));
            return send_ebs_error(rq, c, 400, "ValidationException", "INVALID_PARAMETER_VALUE",
                                  error_set(EINVAL,
                                            "The region '%s' (from the request's credential "
                                            "scope) is not served by this endpoint; its "
                                            "regions are: %s", auth.region, regions),
                                  what);
        }
        snprintf(what, sizeof(what), "%s %.100s (%s, %s)", method, rq->uri, auth.account,
                 auth.region);
        struct api_ebs_request erq = {
            .method = method, .path = path, .query = raw_query, .headers = hl.h,
            .n_headers = hl.n, .body = rq->body.data, .body_len = rq->body.len,
        };
        struct api_ebs_response eresp = { 0 };
        endpoint = fill_ctx(&ctx, srv, &auth, c);
        api_ebs_handle(&ctx, &erq, &eresp);
        if (ctx.action)
            snprintf(what, sizeof(what), "%s %.60s (%s, %s)", ctx.action, path, auth.account,
                     auth.region);
        return send_ebs(rq, c, &eresp, what);
    }
    if (r == -EACCES)
        return send_error(rq, c, r, API_ERR_AUTH_FAILURE, API_RES_NONE, what);
    if (r < 0)
        return send_error(rq, c, r, API_ERR_INTERNAL, API_RES_NONE, what);
    if (auth.unsigned_payload)
        return send_error(rq, c,
                          error_set(EACCES, "UNSIGNED-PAYLOAD is not accepted for EC2 requests"),
                          API_ERR_AUTH_FAILURE, API_RES_NONE, what);
    if (strcmp(auth.service, "ec2") != 0)
        return send_error(rq, c,
                          error_set(EACCES, "credential scope service '%s' is not 'ec2'",
                                    auth.service),
                          API_ERR_AUTH_FAILURE, API_RES_NONE, what);
    if (!region_served(srv, auth.region)) {
        region_list(srv, regions, sizeof(regions));
        return send_error(rq, c,
                          error_set(EINVAL,
                                    "The region '%s' (from the request's credential scope) is "
                                    "not served by this endpoint; its regions are: %s",
                                    auth.region, regions),
                          API_ERR_UNKNOWN_REGION, API_RES_NONE, what);
    }
    snprintf(what, sizeof(what), "%s %.100s (%s, %s)", method, rq->uri, auth.account,
             auth.region);
    if (strcmp(path, "/") != 0)
        return send_error(rq, c, error_set(EINVAL, "no EC2 operations under '%.100s'", path),
                          API_ERR_INVALID_ACTION, API_RES_NONE, what);

    /* Parameters: the query string's, then the body's. */
    r = query_parse(raw_query, strlen(raw_query), &params);
    if (r == 0 && rq->body.len) {
        r = query_parse(rq->body.data, rq->body.len, &body_params);
        if (r == 0)
            r = query_merge(&params, &body_params);
        query_release(&body_params);
    }
    if (r == 0)
        r = query_check_unique(&params);
    if (r < 0) {
        query_release(&params);
        return send_error(rq, c, r, API_ERR_MALFORMED_QUERY, API_RES_NONE, what);
    }

    action = query_get(&params, "Action");
    version = query_get(&params, "Version");
    ctx.action = action;
    if (!action || !*action) {
        r = api_fail(&ctx, API_ERR_MISSING_ACTION, "The request must contain the parameter Action");
    } else if (!version) {
        r = api_fail(&ctx, API_ERR_MISSING_PARAMETER,
                     "The request must contain the parameter Version");
    } else if (strcmp(version, API_VERSION) != 0) {
        r = api_fail(&ctx, API_ERR_UNSUPPORTED_VERSION,
                     "Version '%.40s' is not supported; this endpoint speaks " API_VERSION,
                     version);
    } else if (!(act = api_ec2_action_find(action))) {
        r = api_fail(&ctx, API_ERR_INVALID_ACTION,
                     "The action %.100s is not valid for this web service.", action);
    } else {
        r = 0;
    }
    if (r < 0)
        goto fail;
    snprintf(what, sizeof(what), "%s (%s, %s)", action, auth.account, auth.region);

    dry = query_get(&params, "DryRun");
    if (dry && query_parse_bool(dry, &ctx.dry_run) < 0) {
        r = api_fail(&ctx, API_ERR_INVALID_PARAMETER_VALUE,
                     "Value (%.40s) for parameter DryRun is invalid. Expected: 'true' or 'false'",
                     dry);
        goto fail;
    }
    if (ctx.dry_run && !(act->flags & API_ACTION_OWN_DRY_RUN)) {
        r = api_dry_run(&ctx);
        goto fail;
    }

    endpoint = fill_ctx(&ctx, srv, &auth, c);

    xml_init(&x);
    {
        char root[128];
        snprintf(root, sizeof(root), "%sResponse", action);
        xml_ec2_begin(&x, root, rq->rid);
        r = act->handler(&ctx, &params, &x);
        if (r >= 0)
            xml_close(&x);
    }
    if (r < 0) {
        xml_release(&x);
        goto fail;
    }
    query_release(&params);
    log_info("%s: %s -> 200 (%.1f ms)", rq->rid, what, (double)(now_ns() - rq->t0) / 1e6);
    return send_xml(rq, c, 200, &x);

fail:
    ret = send_error(rq, c, r, ctx.error, ctx.resource, what);
    query_release(&params);
    return ret;
}

/* ---- libmicrohttpd callbacks ---- */

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    struct request *rq = xcalloc(1, sizeof(*rq));

    rq->srv = cls;
    rq->uri = xstrdup(uri && *uri ? uri : "/");
    rq->t0 = now_ns();
    if (api_request_id(rq->rid) < 0)
        snprintf(rq->rid, sizeof(rq->rid), "00000000-0000-4000-8000-000000000000");
    return rq;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct request *rq = *con_cls;

    if (!rq)
        return;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        log_info("%s: request ended early (%d)", rq->rid, (int)toe);
    if (rq->counted)
        atomic_fetch_sub(&rq->srv->in_flight, 1);
    strbuf_release(&rq->body);
    free(rq->uri);
    free(rq);
    *con_cls = NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct api_server *srv = cls;
    struct request *rq = *con_cls;

    if (!rq) /* cannot happen: on_uri runs first */
        return MHD_NO;
    if (!rq->started) {
        const char *cl;

        rq->started = true;
        rq->counted = true;
        atomic_fetch_add(&srv->in_flight, 1);
        error_clear();
        /* The EBS direct API (paths under /snapshots) has its own methods
         * and a body cap per route: one block for PUT, small JSON else. */
        rq->ebs = api_ebs_path(url);
        rq->max_body = rq->ebs ? api_ebs_max_body(method, url) : srv->opts.max_body;
        if (rq->ebs && strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0 &&
            strcmp(method, "PUT") != 0)
            return send_ebs_error(rq, c, 405, "ValidationException", "INVALID_PARAMETER_VALUE",
                                  error_set(EINVAL, "method %.20s is not supported here",
                                            method), method);
        if (!rq->ebs && strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
            return send_error(rq, c,
                              error_set(EINVAL, "method %.20s is not supported; use POST or GET",
                                        method),
                              API_ERR_METHOD_NOT_ALLOWED, API_RES_NONE, method);
        cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > rq->max_body) {
            int e = error_set(EMSGSIZE, "The request body of %.20s bytes exceeds the limit of "
                                        "%zu bytes", cl, rq->max_body);
            if (rq->ebs)
                return send_ebs_error(rq, c, 400, "ValidationException",
                                      "INVALID_PARAMETER_VALUE", e, method);
            return send_error(rq, c, e, API_ERR_REQUEST_TOO_LARGE, API_RES_NONE, method);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        /* A chunked body has no Content-Length to check up front: keep
         * reading but stop storing once it is too large. */
        if (!rq->too_large && rq->body.len + *upload_data_size > rq->max_body) {
            rq->too_large = true;
            strbuf_release(&rq->body);
        }
        if (!rq->too_large)
            strbuf_add(&rq->body, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (rq->too_large && rq->ebs)
        return send_ebs_error(rq, c, 400, "ValidationException", "INVALID_PARAMETER_VALUE",
                              error_set(EMSGSIZE, "The request body exceeds the limit of %zu "
                                                  "bytes", rq->max_body), method);
    if (rq->too_large)
        return send_error(rq, c,
                          error_set(EMSGSIZE, "The request body exceeds the limit of %zu bytes",
                                    rq->max_body),
                          API_ERR_REQUEST_TOO_LARGE, API_RES_NONE, method);
    return process(rq, c, method);
}

__attribute__((format(printf, 2, 0)))
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = '\0';
    log_info("http: %s", msg);
}

/* ---- lifecycle ---- */

/* "ADDR:PORT" or "[V6]:PORT" to a socket address. */
static int parse_listen(const char *listen, struct sockaddr_storage *ret, bool *ret_v6)
{
    _cleanup_free_ char *host = NULL;
    const char *port;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
    struct addrinfo *ai = NULL;
    int r;

    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':')
            return error_set(EINVAL, "listen address '%s' is not [ADDR]:PORT", listen);
        host = strndup(listen + 1, (size_t)(close - listen - 1));
        port = close + 2;
    } else {
        const char *colon = strrchr(listen, ':');
        if (!colon)
            return error_set(EINVAL, "listen address '%s' is not ADDR:PORT", listen);
        host = strndup(listen, (size_t)(colon - listen));
        port = colon + 1;
    }
    if (!host)
        return -ENOMEM;
    if (!*port || strspn(port, "0123456789") != strlen(port) || atoi(port) > 65535)
        return error_set(EINVAL, "listen address '%s': bad port '%s'", listen, port);
    r = getaddrinfo(*host ? host : NULL, port, &hints, &ai);
    if (r != 0)
        return error_set(EINVAL, "listen address '%s': %s", listen, gai_strerror(r));
    memcpy(ret, ai->ai_addr, ai->ai_addrlen);
    *ret_v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    return 0;
}

int api_server_new(const struct api_server_options *opts, struct api_server **ret)
{
    _cleanup_free_ struct api_server *s = NULL;
    struct sockaddr_storage addr = { 0 };
    const union MHD_DaemonInfo *info;
    bool v6 = false;
    unsigned flags;
    int r;

    if (!opts->lookup)
        return error_set(EINVAL, "the API server needs a credential lookup");
    s = xcalloc(1, sizeof(*s));
    s->opts = *opts;
    if (!s->opts.listen)
        s->opts.listen = API_DEFAULT_LISTEN;
    if (!s->opts.max_body)
        s->opts.max_body = API_DEFAULT_MAX_BODY;
    if (!s->opts.max_connections)
        s->opts.max_connections = DEFAULT_MAX_CONNECTIONS;
    if (!s->opts.shutdown_timeout)
        s->opts.shutdown_timeout = DEFAULT_SHUTDOWN_TIMEOUT;
    s->regions = opts->n_regions ? opts->regions : default_regions;
    s->n_regions = opts->n_regions ? opts->n_regions : ARRAY_SIZE(default_regions);
    if (s->n_regions > API_MAX_REGIONS)
        return error_set(EINVAL, "more than %d regions", API_MAX_REGIONS);
    for (size_t i = 0; i < s->n_regions; i++)
        if (!region_name_is_valid(s->regions[i]))
            return error_set(EINVAL, "invalid region name '%s'", s->regions[i]);
    r = parse_listen(s->opts.listen, &addr, &v6);
    if (r < 0)
        return r;
    /* EBS uploads whose Timeout passed while the server was down. */
    if (s->opts.data_dir)
        api_ebs_sweep(s->opts.data_dir, s->regions, s->n_regions);
    s->quiesced_fd = MHD_INVALID_SOCKET;

    flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
            MHD_USE_ITC | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_CONNECTION_LIMIT, s->opts.max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT,
        MHD_OPTION_END);
    if (!s->daemon)
        return error_set(EADDRINUSE, "cannot listen on '%s' (address in use or not local?)",
                         s->opts.listen);
    info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : 0;
    *ret = TAKE_PTR(s);
    return 0;
}

unsigned api_server_port(const struct api_server *s)
{
    return s->port;
}

const char *const *api_server_regions(const struct api_server *s, size_t *ret_n)
{
    *ret_n = s->n_regions;
    return s->regions;
}

int api_server_shutdown(struct api_server *s)
{
    uint64_t deadline;
    int r = 0;

    if (s->stopped)
        return 0;
    atomic_store(&s->stopping, true);
    s->quiesced_fd = MHD_quiesce_daemon(s->daemon);
    deadline = now_ns() + (uint64_t)s->opts.shutdown_timeout * 1000000000ull;
    while (atomic_load(&s->in_flight) > 0) {
        if (now_ns() > deadline) {
            r = error_set(ETIMEDOUT, "%d requests still running after %u seconds",
                          atomic_load(&s->in_flight), s->opts.shutdown_timeout);
            break;
        }
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    MHD_stop_daemon(s->daemon);
    if (s->quiesced_fd != MHD_INVALID_SOCKET)
        close(s->quiesced_fd);
    s->daemon = NULL;
    s->stopped = true;
    return r;
}

void api_server_free(struct api_server *s)
{
    if (!s)
        return;
    api_server_shutdown(s);
    free(s);
}
