/* The instance metadata service: HTTP parsing and answers (pure), the
 * per-instance files, and the per-connection server.  See imds.h and
 * docs/imds.md. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/strbuf.h"
#include "common/util.h"
#include "imds/imds.h"

#define HEAD_MAX (16 * 1024)
#define BODY_MAX (64 * 1024)
#define INSTANCE_MAX (1024 * 1024)
#define TTL_MAX 21600
#define IDLE_MS 10000

/* ---- the instance file ---- */

struct field {
    const char *name;
    size_t offset;
    bool required;
};

#define F(n, req) { #n, offsetof(struct imds_instance, n), req }
static const struct field string_fields[] = {
    F(instance_id, true),      F(image_id, true),       F(instance_type, true),
    F(availability_zone, true), F(region, true),        F(account_id, true),
    F(private_ip, true),       F(mac, true),            F(reservation_id, true),
    F(launch_time, true),      F(root_device_name, false), F(key_name, false),
    F(public_key, false),      F(security_groups, false), F(security_group_ids, false),
};
#undef F

static char **field_ptr(struct imds_instance *in, const struct field *f)
{
    return (char **)((char *)in + f->offset);
}

static const char *field_get(const struct imds_instance *in, const struct field *f)
{
    return *(char *const *)((const char *)in + f->offset);
}

void imds_instance_release(struct imds_instance *in)
{
    if (!in)
        return;
    for (size_t i = 0; i < ARRAY_SIZE(string_fields); i++)
        free(*field_ptr(in, &string_fields[i]));
    free(in->user_data);
    memset(in, 0, sizeof(*in));
}

static void add_hex_line(struct strbuf *b, const char *name, const void *data, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *p = data;
    strbuf_adds(b, name);
    strbuf_adds(b, " ");
    for (size_t i = 0; i < len; i++) {
        char two[2] = { hex[p[i] >> 4], hex[p[i] & 15] };
        strbuf_add(b, two, 2);
    }
    strbuf_adds(b, "\n");
}

/* A value the metadata tree can carry: no control characters except the
 * newline that separates list items, and only where lists are allowed. */
static bool value_ok(const char *s, bool list)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 && !(list && *s == '\n'))
            return false;
    return true;
}

static int instance_check(const struct imds_instance *in)
{
    for (size_t i = 0; i < ARRAY_SIZE(string_fields); i++) {
        const struct field *f = &string_fields[i];
        const char *v = field_get(in, f);
        if (f->required && (!v || !*v))
            return error_set(EINVAL, "instance metadata lacks '%s'", f->name);
        bool list = !strcmp(f->name, "security_groups") || !strcmp(f->name, "security_group_ids");
        if (v && !value_ok(v, list))
            return error_set(EINVAL, "instance metadata '%s' contains a control character",
                             f->name);
    }
    if (in->key_name && *in->key_name && (!in->public_key || !*in->public_key))
        return error_set(EINVAL, "instance metadata has key name '%s' without its public key",
                         in->key_name);
    return 0;
}

int imds_instance_format(const struct imds_instance *in, char **ret_text, size_t *ret_len)
{
    int r = instance_check(in);
    if (r < 0)
        return r;
    struct strbuf b = { 0 };
    for (size_t i = 0; i < ARRAY_SIZE(string_fields); i++) {
        const char *v = field_get(in, &string_fields[i]);
        if (v && *v)
            add_hex_line(&b, string_fields[i].name, v, strlen(v));
    }
    if (in->user_data)
        add_hex_line(&b, "user_data", in->user_data, in->user_data_len);
    if (in->tokens_required)
        strbuf_adds(&b, "tokens_required 31\n");
    if (in->endpoint_disabled)
        strbuf_adds(&b, "endpoint_disabled 31\n");
    if (b.len > INSTANCE_MAX) {
        free(b.data);
        return error_set(EINVAL, "instance metadata is over 1 MiB");
    }
    *ret_text = b.data;
    *ret_len = b.len;
    return 0;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int imds_instance_parse(const char *text, size_t len, struct imds_instance *ret)
{
    struct imds_instance in = { 0 };
    bool seen_user_data = false, seen_req = false, seen_dis = false;
    size_t pos = 0;
    int r;

    if (len > INSTANCE_MAX)
        return error_set(EBADMSG, "instance metadata is over 1 MiB");
    while (pos < len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        if (!nl) {
            r = error_set(EBADMSG, "instance metadata: last line unterminated");
            goto fail;
        }
        size_t ll = (size_t)(nl - line);
        pos += ll + 1;
        const char *sp = memchr(line, ' ', ll);
        if (!sp) {
            r = error_set(EBADMSG, "instance metadata: a line without a value");
            goto fail;
        }
        size_t nlen = (size_t)(sp - line);
        const char *hex = sp + 1;
        size_t hlen = ll - nlen - 1;
        if (hlen % 2) {
            r = error_set(EBADMSG, "instance metadata: odd hex length");
            goto fail;
        }
        uint8_t *val = xmalloc(hlen / 2 + 1);
        for (size_t i = 0; i < hlen / 2; i++) {
            int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
            if (hi < 0 || lo < 0) {
                free(val);
                r = error_set(EBADMSG, "instance metadata: bad hex digit");
                goto fail;
            }
            val[i] = (uint8_t)(hi << 4 | lo);
        }
        val[hlen / 2] = '\0';
        size_t vlen = hlen / 2;

        bool known = false;
        for (size_t i = 0; i < ARRAY_SIZE(string_fields); i++) {
            const struct field *f = &string_fields[i];
            if (strlen(f->name) != nlen || memcmp(f->name, line, nlen))
                continue;
            known = true;
            char **p = field_ptr(&in, f);
            if (*p || memchr(val, '\0', vlen) || vlen == 0) {
                free(val);
                r = error_set(EBADMSG, "instance metadata: '%s' repeated, empty or with a NUL",
                              f->name);
                goto fail;
            }
            *p = (char *)val;
        }
        if (!known && nlen == 9 && !memcmp(line, "user_data", 9) && !seen_user_data) {
            known = seen_user_data = true;
            in.user_data = val;
            in.user_data_len = vlen;
        } else if (!known && nlen == 15 && !memcmp(line, "tokens_required", 15) && !seen_req &&
                   vlen == 1 && val[0] == '1') {
            known = seen_req = in.tokens_required = true;
            free(val);
        } else if (!known && nlen == 17 && !memcmp(line, "endpoint_disabled", 17) && !seen_dis &&
                   vlen == 1 && val[0] == '1') {
            known = seen_dis = in.endpoint_disabled = true;
            free(val);
        } else if (!known) {
            free(val);
            r = error_set(EBADMSG, "instance metadata: unknown or repeated line '%.*s'",
                          (int)MIN(nlen, (size_t)64), line);
            goto fail;
        }
    }
    r = instance_check(&in);
    if (r < 0) {
        r = error_set(EBADMSG, "%s", error_message());
        goto fail;
    }
    *ret = in;
    return 0;
fail:
    imds_instance_release(&in);
    return r;
}

/* ---- tokens ---- */

static void token_mac(const uint8_t key[IMDS_KEY_SIZE], unsigned long long expiry, char hex[65])
{
    char msg[64];
    int n = snprintf(msg, sizeof(msg), "kiln-imds-token %llu", expiry);
    uint8_t mac[32];
    unsigned mlen = sizeof(mac);
    HMAC(EVP_sha256(), key, IMDS_KEY_SIZE, (const uint8_t *)msg, (size_t)n, mac, &mlen);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
}

void imds_token_make(const uint8_t key[IMDS_KEY_SIZE], time_t now, unsigned ttl, char ret[96])
{
    unsigned long long expiry = (unsigned long long)now + ttl;
    char hex[65];
    token_mac(key, expiry, hex);
    snprintf(ret, 96, "%llu.%s", expiry, hex);
}

int imds_token_verify(const uint8_t key[IMDS_KEY_SIZE], time_t now, const char *token)
{
    unsigned long long expiry = 0;
    const char *p = token;
    if (*p < '0' || *p > '9')
        return -EACCES;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (expiry > (ULLONG_MAX - 9) / 10)
            return -EACCES;
        expiry = expiry * 10 + (unsigned long long)(*p - '0');
    }
    if (*p != '.' || strlen(p + 1) != 64)
        return -EACCES;
    char hex[65];
    token_mac(key, expiry, hex);
    if (CRYPTO_memcmp(hex, p + 1, 64) != 0)
        return -EACCES;
    if ((unsigned long long)now >= expiry)
        return -EACCES;
    return 0;
}

/* ---- the request parser ---- */

static bool header_is(const char *name, size_t nlen, const char *want)
{
    return strlen(want) == nlen && !strncasecmp(name, want, nlen);
}

static void copy_value(char *dst, size_t size, const char *v, size_t vlen, bool *too_long)
{
    if (vlen >= size) {
        *too_long = true;
        vlen = 0;
    }
    memcpy(dst, v, vlen);
    dst[vlen] = '\0';
}

int imds_request_parse(const char *buf, size_t len, struct imds_request *ret, size_t *ret_used)
{
    struct imds_request rq;
    memset(&rq, 0, sizeof(rq));

    /* find the end of the head */
    size_t head = 0;
    for (size_t i = 0; i + 3 < len && i < HEAD_MAX; i++)
        if (!memcmp(buf + i, "\r\n\r\n", 4)) {
            head = i + 4;
            break;
        }
    if (!head) {
        if (len >= HEAD_MAX + 3)
            return error_set(EMSGSIZE, "request head is over 16 KiB");
        return -EAGAIN;
    }

    /* the request line */
    const char *line = buf;
    const char *eol = memchr(line, '\r', head);
    if (!eol || eol[1] != '\n')
        return error_set(EBADMSG, "bad request line");
    size_t ll = (size_t)(eol - line);
    const char *sp1 = memchr(line, ' ', ll);
    if (!sp1)
        return error_set(EBADMSG, "bad request line");
    size_t mlen = (size_t)(sp1 - line);
    const char *target = sp1 + 1;
    const char *sp2 = memchr(target, ' ', (size_t)(eol - target));
    if (!sp2 || sp2 == target)
        return error_set(EBADMSG, "bad request line");
    const char *version = sp2 + 1;
    size_t vlen = (size_t)(eol - version);
    if (vlen != 8 || memcmp(version, "HTTP/1.", 7) || (version[7] != '0' && version[7] != '1'))
        return error_set(EBADMSG, "not HTTP/1.x");
    rq.close = version[7] == '0';
    if (mlen == 3 && !memcmp(line, "GET", 3))
        rq.method = IMDS_GET;
    else if (mlen == 4 && !memcmp(line, "HEAD", 4))
        rq.method = IMDS_HEAD;
    else if (mlen == 3 && !memcmp(line, "PUT", 3))
        rq.method = IMDS_PUT;
    else
        rq.method = IMDS_OTHER;
    for (size_t i = 0; i < mlen; i++)
        if (line[i] < 'A' || line[i] > 'Z')
            return error_set(EBADMSG, "bad method");
    size_t tlen = (size_t)(sp2 - target);
    const char *q = memchr(target, '?', tlen);
    if (q)
        tlen = (size_t)(q - target);
    if (tlen >= sizeof(rq.path))
        return error_set(EMSGSIZE, "request path is over 1023 bytes");
    for (size_t i = 0; i < tlen; i++)
        if ((unsigned char)target[i] <= 0x20 || (unsigned char)target[i] >= 0x7f)
            return error_set(EBADMSG, "bad character in the request path");
    memcpy(rq.path, target, tlen);
    rq.path[tlen] = '\0';

    /* headers */
    size_t content_length = 0;
    bool has_length = false;
    const char *p = eol + 2;
    const char *end = buf + head - 2; /* the final empty line */
    while (p < end) {
        const char *e = memchr(p, '\r', (size_t)(end - p) + 1);
        if (!e || e[1] != '\n')
            return error_set(EBADMSG, "bad header line");
        const char *colon = memchr(p, ':', (size_t)(e - p));
        if (!colon || colon == p)
            return error_set(EBADMSG, "bad header line");
        for (const char *c = p; c < colon; c++)
            if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
                return error_set(EBADMSG, "bad header name");
        size_t nlen = (size_t)(colon - p);
        const char *v = colon + 1;
        while (v < e && (*v == ' ' || *v == '\t'))
            v++;
        const char *ve = e;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t valen = (size_t)(ve - v);
        for (size_t i = 0; i < valen; i++)
            if ((unsigned char)v[i] < 0x20 && v[i] != '\t')
                return error_set(EBADMSG, "bad header value");
        if (header_is(p, nlen, "X-aws-ec2-metadata-token")) {
            rq.has_token = true;
            copy_value(rq.token, sizeof(rq.token), v, valen, &rq.token_too_long);
        } else if (header_is(p, nlen, "X-aws-ec2-metadata-token-ttl-seconds")) {
            rq.has_ttl = true;
            copy_value(rq.ttl, sizeof(rq.ttl), v, valen, &rq.ttl_too_long);
        } else if (header_is(p, nlen, "X-Forwarded-For")) {
            rq.forwarded = true;
        } else if (header_is(p, nlen, "Connection")) {
            if (valen == 5 && !strncasecmp(v, "close", 5))
                rq.close = true;
            else if (valen == 10 && !strncasecmp(v, "keep-alive", 10))
                rq.close = false;
        } else if (header_is(p, nlen, "Transfer-Encoding")) {
            return error_set(EBADMSG, "chunked request bodies are not accepted");
        } else if (header_is(p, nlen, "Content-Length")) {
            if (has_length || valen == 0 || valen > 6)
                return error_set(valen > 6 ? EMSGSIZE : EBADMSG, "bad Content-Length");
            size_t n = 0;
            for (size_t i = 0; i < valen; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return error_set(EBADMSG, "bad Content-Length");
                n = n * 10 + (size_t)(v[i] - '0');
            }
            if (n > BODY_MAX)
                return error_set(EMSGSIZE, "request body is over 64 KiB");
            has_length = true;
            content_length = n;
        }
        p = e + 2;
    }
    if (len - head < content_length)
        return -EAGAIN;
    *ret = rq;
    *ret_used = head + content_length;
    return 0;
}

/* ---- answers ---- */

static const char *const versions[] = {
    "1.0",        "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15",
    "2008-02-01", "2008-09-01", "2009-04-04", "2011-01-01", "2011-05-01", "2012-01-12",
    "2014-02-25", "2014-11-05", "2015-10-20", "2016-04-01", "2016-06-30", "2016-09-02",
    "2018-03-28", "2018-08-17", "2018-09-24", "2019-10-01", "2020-10-27", "2021-01-03",
    "2021-03-23", "2021-07-15", "2022-09-24",
};

static void response(struct strbuf *out, int status, const char *reason, const char *ctype,
                     const char *extra_headers, const void *body, size_t blen, bool head_only,
                     bool close)
{
    strbuf_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                       "Server: EC2ws\r\nConnection: %s\r\n%s\r\n",
                  status, reason, ctype, blen, close ? "close" : "keep-alive",
                  extra_headers ? extra_headers : "");
    if (!head_only)
        strbuf_add(out, body, blen);
}

static void error_page(struct strbuf *out, int status, const char *reason, bool head_only,
                       bool close)
{
    struct strbuf b = { 0 };
    strbuf_printf(&b,
                  "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n"
                  "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n"
                  "\t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n"
                  "<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n"
                  " <head>\n  <title>%d - %s</title>\n </head>\n <body>\n  <h1>%d - %s</h1>\n"
                  " </body>\n</html>\n",
                  status, reason, status, reason);
    response(out, status, reason, "text/html", NULL, b.data, b.len, head_only, close);
    free(b.data);
}

/* The hostname AWS derives from a private address: ip-10-0-0-15.REGION.compute.internal
 * (us-east-1 uses ec2.internal). */
static char *local_hostname(const struct imds_instance *in)
{
    _cleanup_free_ char *dashed = xstrdup(in->private_ip);
    for (char *c = dashed; *c; c++)
        if (*c == '.')
            *c = '-';
    if (!strcmp(in->region, "us-east-1"))
        return xasprintf("ip-%s.ec2.internal", dashed);
    return xasprintf("ip-%s.%s.compute.internal", dashed, in->region);
}

static void json_string(struct strbuf *b, const char *s)
{
    strbuf_adds(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            strbuf_printf(b, "\\%c", c);
        else if (c < 0x20)
            strbuf_printf(b, "\\u%04x", c);
        else
            strbuf_add(b, s, 1);
    }
    strbuf_adds(b, "\"");
}

static char *identity_document(const struct imds_instance *in)
{
    struct strbuf b = { 0 };
    strbuf_adds(&b, "{\n  \"accountId\" : ");
    json_string(&b, in->account_id);
    strbuf_adds(&b, ",\n  \"architecture\" : \"x86_64\",\n  \"availabilityZone\" : ");
    json_string(&b, in->availability_zone);
    strbuf_adds(&b, ",\n  \"billingProducts\" : null,\n  \"devpayProductCodes\" : null,\n"
                    "  \"marketplaceProductCodes\" : null,\n  \"imageId\" : ");
    json_string(&b, in->image_id);
    strbuf_adds(&b, ",\n  \"instanceId\" : ");
    json_string(&b, in->instance_id);
    strbuf_adds(&b, ",\n  \"instanceType\" : ");
    json_string(&b, in->instance_type);
    strbuf_adds(&b, ",\n  \"kernelId\" : null,\n  \"pendingTime\" : ");
    json_string(&b, in->launch_time);
    strbuf_adds(&b, ",\n  \"privateIp\" : ");
    json_string(&b, in->private_ip);
    strbuf_adds(&b, ",\n  \"ramdiskId\" : null,\n  \"region\" : ");
    json_string(&b, in->region);
    strbuf_adds(&b, ",\n  \"version\" : \"2017-09-30\"\n}");
    return b.data;
}

/* One node of the tree: a leaf's value, or a directory's listing. */
struct node {
    bool found;
    struct strbuf body;
};

/* The listing of `dir` (no trailing slash): each leaf path under it adds
 * its first component, a directory once, with a slash. */
struct tree {
    const char *want;    /* the path asked for, relative to meta-data/, no trailing slash */
    bool want_dir;       /* it ended with a slash (or is the root) */
    struct node *n;
    char *seen[64];      /* listed names, to list each once */
    size_t nseen;
};

static void leaf(struct tree *t, const char *path, const char *value)
{
    size_t wl = strlen(t->want);
    if (!strcmp(path, t->want)) {
        if (!t->want_dir) {
            t->n->found = true;
            strbuf_adds(&t->n->body, value);
        }
        return;
    }
    /* under the directory asked for? */
    const char *rest;
    if (wl == 0)
        rest = path;
    else if (!strncmp(path, t->want, wl) && path[wl] == '/')
        rest = path + wl + 1;
    else
        return;
    const char *slash = strchr(rest, '/');
    size_t nl = slash ? (size_t)(slash - rest) + 1 : strlen(rest);
    for (size_t i = 0; i < t->nseen; i++)
        if (strlen(t->seen[i]) == nl && !strncmp(t->seen[i], rest, nl))
            return;
    if (t->nseen == ARRAY_SIZE(t->seen))
        return;
    t->seen[t->nseen++] = strndup(rest, nl);
    if (t->n->found)
        strbuf_adds(&t->n->body, "\n");
    t->n->found = true;
    strbuf_add(&t->n->body, rest, nl);
}

static void list_leaves(struct tree *t, const char *prefix, const char *lines)
{
    /* a list value (one per line) is one leaf with newlines */
    leaf(t, prefix, lines);
}

static void meta_data(const struct imds_instance *in, struct tree *t)
{
    _cleanup_free_ char *host = local_hostname(in);
    const char *root = in->root_device_name ? in->root_device_name : "/dev/xvda";
    leaf(t, "ami-id", in->image_id);
    leaf(t, "ami-launch-index", "0");
    leaf(t, "ami-manifest-path", "(unknown)");
    leaf(t, "block-device-mapping/ami", root);
    leaf(t, "block-device-mapping/root", root);
    leaf(t, "hostname", host);
    leaf(t, "instance-action", "none");
    leaf(t, "instance-id", in->instance_id);
    leaf(t, "instance-type", in->instance_type);
    leaf(t, "local-hostname", host);
    leaf(t, "local-ipv4", in->private_ip);
    leaf(t, "mac", in->mac);
    _cleanup_free_ char *m = xasprintf("network/interfaces/macs/%s", in->mac);
    struct {
        const char *name, *value;
    } nic[] = {
        { "device-number", "0" },
        { "local-hostname", host },
        { "local-ipv4s", in->private_ip },
        { "mac", in->mac },
        { "owner-id", in->account_id },
        { "security-group-ids", in->security_group_ids },
        { "security-groups", in->security_groups },
    };
    for (size_t i = 0; i < ARRAY_SIZE(nic); i++) {
        if (!nic[i].value || !*nic[i].value)
            continue;
        _cleanup_free_ char *p = xasprintf("%s/%s", m, nic[i].name);
        list_leaves(t, p, nic[i].value);
    }
    leaf(t, "placement/availability-zone", in->availability_zone);
    leaf(t, "placement/region", in->region);
    if (in->key_name && *in->key_name) {
        /* AWS lists public-keys/ as "0=KEYNAME"; public-keys/0/ lists the
         * formats.  A listing entry that is not a path: special. */
        if (!strcmp(t->want, "public-keys") && t->want_dir) {
            t->n->found = true;
            if (t->n->body.len)
                strbuf_adds(&t->n->body, "\n");
            strbuf_printf(&t->n->body, "0=%s", in->key_name);
        } else if (!strcmp(t->want, "public-keys/0") && t->want_dir) {
            t->n->found = true;
            strbuf_adds(&t->n->body, "openssh-key");
        } else if (!strcmp(t->want, "public-keys/0/openssh-key") && !t->want_dir) {
            t->n->found = true;
            strbuf_adds(&t->n->body, in->public_key);
        } else if (!t->want_dir || strncmp(t->want, "public-keys", 11)) {
            /* the root listing shows "public-keys/" */
            if (!*t->want && t->want_dir)
                leaf(t, "public-keys/0/openssh-key", in->public_key);
        }
    }
    leaf(t, "reservation-id", in->reservation_id);
    if (in->security_groups && *in->security_groups)
        list_leaves(t, "security-groups", in->security_groups);
    leaf(t, "services/domain", "amazonaws.com");
    leaf(t, "services/partition", "aws");
}

/* The body for a GET of `path` under a version ("latest" or a date). */
static bool lookup(const struct imds_instance *in, const char *rest, struct strbuf *body,
                   const char **ctype)
{
    *ctype = "text/plain";
    if (!*rest || !strcmp(rest, "/")) {
        strbuf_adds(body, "dynamic\nmeta-data");
        if (in->user_data)
            strbuf_adds(body, "\nuser-data");
        return true;
    }
    if (!strcmp(rest, "/user-data") || !strcmp(rest, "/user-data/")) {
        if (!in->user_data)
            return false;
        *ctype = "application/octet-stream";
        strbuf_add(body, in->user_data, in->user_data_len);
        return true;
    }
    if (!strcmp(rest, "/dynamic") || !strcmp(rest, "/dynamic/")) {
        strbuf_adds(body, "instance-identity/");
        return true;
    }
    if (!strcmp(rest, "/dynamic/instance-identity") ||
        !strcmp(rest, "/dynamic/instance-identity/")) {
        strbuf_adds(body, "document");
        return true;
    }
    if (!strcmp(rest, "/dynamic/instance-identity/document")) {
        _cleanup_free_ char *d = identity_document(in);
        *ctype = "application/json";
        strbuf_adds(body, d);
        return true;
    }
    if (strcmp(rest, "/meta-data") && strncmp(rest, "/meta-data/", 11))
        return false;
    const char *sub = rest[10] ? rest + 11 : "";
    /* no empty components, no dot components */
    size_t sl = strlen(sub);
    if (strstr(sub, "//") || !strcmp(sub, "/"))
        return false;
    char want[1024];
    snprintf(want, sizeof(want), "%s", sub);
    bool dir = sl == 0 || sub[sl - 1] == '/';
    if (sl && want[sl - 1] == '/')
        want[sl - 1] = '\0';
    struct node n = { 0 };
    struct tree t = { .want = want, .want_dir = dir, .n = &n };
    meta_data(in, &t);
    for (size_t i = 0; i < t.nseen; i++)
        free(t.seen[i]);
    if (!n.found) {
        /* a directory asked for without its slash: AWS answers the listing */
        if (!dir) {
            struct node n2 = { 0 };
            struct tree t2 = { .want = want, .want_dir = true, .n = &n2 };
            meta_data(in, &t2);
            for (size_t i = 0; i < t2.nseen; i++)
                free(t2.seen[i]);
            if (n2.found) {
                strbuf_add(body, n2.body.data, n2.body.len);
                free(n2.body.data);
                return true;
            }
            free(n2.body.data);
        }
        free(n.body.data);
        return false;
    }
    strbuf_add(body, n.body.data ? n.body.data : "", n.body.len);
    free(n.body.data);
    return true;
}

int imds_respond(const struct imds_instance *in, const uint8_t key[IMDS_KEY_SIZE], time_t now,
                 const struct imds_request *rq, char **ret, size_t *ret_len)
{
    struct strbuf out = { 0 };
    bool head_only = rq->method == IMDS_HEAD;
    bool close = rq->close;

    if (in->endpoint_disabled)
        return error_set(EACCES, "the metadata endpoint is disabled for '%s'", in->instance_id);

    if (!strcmp(rq->path, "/latest/api/token")) {
        if (rq->method != IMDS_PUT) {
            error_page(&out, 405, "Method Not Allowed", head_only, close);
            goto done;
        }
        if (rq->forwarded) {
            error_page(&out, 403, "Forbidden", false, close);
            goto done;
        }
        unsigned long ttl = 0;
        bool ok = rq->has_ttl && !rq->ttl_too_long && rq->ttl[0] && strlen(rq->ttl) <= 5;
        for (const char *c = rq->ttl; ok && *c; c++) {
            if (*c < '0' || *c > '9')
                ok = false;
            else
                ttl = ttl * 10 + (unsigned long)(*c - '0');
        }
        if (!ok || ttl < 1 || ttl > TTL_MAX) {
            error_page(&out, 400, "Bad Request", false, close);
            goto done;
        }
        char token[96], hdr[96];
        imds_token_make(key, now, (unsigned)ttl, token);
        snprintf(hdr, sizeof(hdr), "X-Aws-Ec2-Metadata-Token-Ttl-Seconds: %lu\r\n", ttl);
        response(&out, 200, "OK", "text/plain", hdr, token, strlen(token), false, close);
        goto done;
    }
    if (rq->method == IMDS_PUT || rq->method == IMDS_OTHER) {
        error_page(&out, 405, "Method Not Allowed", head_only, close);
        goto done;
    }
    /* IMDSv2: a token presented is always checked; without one, v1 is
     * allowed unless tokens are required */
    if (rq->has_token) {
        if (rq->token_too_long || imds_token_verify(key, now, rq->token) < 0) {
            error_page(&out, 401, "Unauthorized", head_only, close);
            goto done;
        }
    } else if (in->tokens_required) {
        error_page(&out, 401, "Unauthorized", head_only, close);
        goto done;
    }

    if (!strcmp(rq->path, "/")) {
        struct strbuf b = { 0 };
        for (size_t i = 0; i < ARRAY_SIZE(versions); i++)
            strbuf_printf(&b, "%s\n", versions[i]);
        strbuf_adds(&b, "latest");
        response(&out, 200, "OK", "text/plain", NULL, b.data, b.len, head_only, close);
        free(b.data);
        goto done;
    }
    const char *rest = NULL;
    if (!strncmp(rq->path, "/latest", 7) && (rq->path[7] == '/' || !rq->path[7]))
        rest = rq->path + 7;
    for (size_t i = 0; !rest && i < ARRAY_SIZE(versions); i++) {
        size_t vl = strlen(versions[i]);
        if (!strncmp(rq->path + 1, versions[i], vl) &&
            (rq->path[1 + vl] == '/' || !rq->path[1 + vl]))
            rest = rq->path + 1 + vl;
    }
    struct strbuf body = { 0 };
    const char *ctype;
    if (rest && lookup(in, rest, &body, &ctype))
        response(&out, 200, "OK", ctype, NULL, body.data ? body.data : "", body.len, head_only, close);
    else
        error_page(&out, 404, "Not Found", head_only, close);
    free(body.data);
done:
    *ret = out.data;
    *ret_len = out.len;
    return 0;
}

/* ---- files ---- */

static int write_file(const char *dir, const char *name, const void *data, size_t len,
                      mode_t mode)
{
    _cleanup_free_ char *path = xasprintf("%s/%s", dir, name);
    _cleanup_free_ char *tmp = xasprintf("%s/.%s.tmp", dir, name);
    _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return error_set(errno, "cannot create '%s': %s", tmp, strerror(errno));
    int r = write_all(fd, data, len, 0);
    if (r < 0 || fsync(fd) < 0) {
        r = r < 0 ? r : -errno;
        unlink(tmp);
        return error_set(-r, "cannot write '%s': %s", tmp, strerror(-r));
    }
    if (rename(tmp, path) < 0) {
        r = -errno;
        unlink(tmp);
        return error_set(-r, "cannot rename '%s': %s", tmp, strerror(-r));
    }
    return fsync_dir(dir);
}

static bool qemu_safe(const char *s)
{
    return !strpbrk(s, ", \"'\\\n\t");
}

int imds_netdev_options(const char *dir, const char *kiln, unsigned flags, char **ret_netdev)
{
    char self[PATH_MAX];
    if (!kiln) {
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n < 0)
            return error_set(errno, "cannot read /proc/self/exe: %s", strerror(errno));
        self[n] = '\0';
        kiln = self;
    }
    if (kiln[0] != '/' || dir[0] != '/')
        return error_set(EINVAL, "the kiln path '%s' and instance directory '%s' must be absolute",
                         kiln, dir);
    if (!qemu_safe(kiln) || !qemu_safe(dir))
        return error_set(EINVAL, "'%s' or '%s' contains a comma, space, quote or backslash",
                         kiln, dir);
    if (flags & ~IMDS_NET_EGRESS)
        return error_set(EINVAL, "unknown metadata network flags %#x", flags);
    /* restrict=on: slirp drops every connection the guest opens except
     * the guestfwd (DHCP is answered inside slirp; hostfwd still works).
     * Without it, slirp maps every address of its network but the DNS one
     * to the host's 127.0.0.1: see docs/imds.md. */
    *ret_netdev = xasprintf("net=169.254.0.0/16,host=169.254.0.2,dns=169.254.0.3,"
                            "dhcpstart=169.254.0.15,restrict=%s,"
                            "guestfwd=tcp:169.254.169.254:80-cmd:%s imds-serve %s",
                            flags & IMDS_NET_EGRESS ? "off" : "on", kiln, dir);
    return 0;
}

int imds_instance_install(const char *dir, const struct imds_instance *in, const char *kiln,
                          unsigned flags, char **ret_netdev)
{
    _cleanup_free_ char *netdev = NULL;
    int r = imds_netdev_options(dir, kiln, flags, &netdev);
    if (r < 0)
        return r;
    _cleanup_free_ char *text = NULL;
    size_t len;
    r = imds_instance_format(in, &text, &len);
    if (r < 0)
        return r;
    uint8_t key[IMDS_KEY_SIZE];
    r = random_bytes(key, sizeof(key));
    if (r < 0)
        return r;
    r = write_file(dir, "imds.key", key, sizeof(key), 0600);
    if (r < 0)
        return r;
    r = write_file(dir, "imds.instance", text, len, 0600);
    if (r < 0)
        return r;
    *ret_netdev = TAKE_PTR(netdev);
    return 0;
}

int imds_instance_uninstall(const char *dir)
{
    static const char *const names[] = { "imds.instance", "imds.key" };
    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        _cleanup_free_ char *p = xasprintf("%s/%s", dir, names[i]);
        if (unlink(p) < 0 && errno != ENOENT)
            return error_set(errno, "cannot remove '%s': %s", p, strerror(errno));
    }
    return 0;
}

static int read_small(const char *path, size_t max, char **ret, size_t *ret_len)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return error_set(errno, "cannot open '%s': %s", path, strerror(errno));
    _cleanup_free_ char *b = xmalloc(max + 1);
    ssize_t n = pread_full(fd, b, max + 1, 0);
    if (n < 0)
        return error_set((int)-n, "cannot read '%s': %s", path, strerror((int)-n));
    if ((size_t)n > max)
        return error_set(EFBIG, "'%s' is over %zu bytes", path, max);
    *ret = TAKE_PTR(b);
    *ret_len = (size_t)n;
    return 0;
}

int imds_serve(const char *dir, int in_fd, int out_fd)
{
    _cleanup_free_ char *ipath = xasprintf("%s/imds.instance", dir);
    _cleanup_free_ char *kpath = xasprintf("%s/imds.key", dir);
    _cleanup_free_ char *text = NULL, *key = NULL;
    size_t tlen, klen;
    int r = read_small(ipath, INSTANCE_MAX, &text, &tlen);
    if (r < 0)
        return r;
    r = read_small(kpath, IMDS_KEY_SIZE, &key, &klen);
    if (r < 0)
        return r;
    if (klen != IMDS_KEY_SIZE)
        return error_set(EBADMSG, "'%s' is not a %d-byte key", kpath, IMDS_KEY_SIZE);
    struct imds_instance in;
    r = imds_instance_parse(text, tlen, &in);
    if (r < 0)
        return r;

    size_t cap = HEAD_MAX + BODY_MAX + 4, have = 0;
    _cleanup_free_ char *buf = xmalloc(cap);
    for (;;) {
        struct imds_request rq;
        size_t used;
        r = imds_request_parse(buf, have, &rq, &used);
        if (r == -EAGAIN) {
            if (have == cap) {
                r = error_set(EMSGSIZE, "request too large");
                break;
            }
            /* an idle or slow connection holds a process: 10 s, then close */
            struct pollfd pfd = { .fd = in_fd, .events = POLLIN };
            int pr = poll(&pfd, 1, IDLE_MS);
            if (pr < 0 && errno == EINTR)
                continue;
            if (pr <= 0) {
                r = pr < 0 ? error_set(errno, "poll: %s", strerror(errno)) : 0;
                break;
            }
            ssize_t n = read(in_fd, buf + have, cap - have);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                r = error_set(errno, "cannot read the request: %s", strerror(errno));
                break;
            }
            if (n == 0) {
                r = 0; /* the guest closed */
                break;
            }
            have += (size_t)n;
            continue;
        }
        if (r < 0) {
            const char *bad = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                              "Connection: close\r\n\r\n";
            (void)!write(out_fd, bad, strlen(bad));
            break;
        }
        _cleanup_free_ char *resp = NULL;
        size_t rlen;
        r = imds_respond(&in, (const uint8_t *)key, time(NULL), &rq, &resp, &rlen);
        if (r < 0)
            break;
        size_t off = 0;
        while (off < rlen) {
            ssize_t n = write(out_fd, resp + off, rlen - off);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                r = error_set(EPIPE, "cannot write the response");
                goto out;
            }
            off += (size_t)n;
        }
        memmove(buf, buf + used, have - used);
        have -= used;
        if (rq.close)
            break;
    }
out:
    imds_instance_release(&in);
    return r;
}
