/* SigV4 verification: see sigv4.h.  The order of checks is fixed: parse,
 * date and scope rules, the secret's lookup, then the signature, so that
 * the cheap, key-independent refusals never reach the credential store.
 * The comparison of signatures is constant-time (CRYPTO_memcmp). */
#include "api/sigv4.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "api/internal.h"
#include "api/query.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/hash.h"
#include "common/util.h"

#define AUTH_FAIL(...) error_set(EACCES, __VA_ARGS__)

/* ---- parsing ---- */

static bool is_lower_token(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-' ||
              s[i] == '_' || s[i] == '.'))
            return false;
    return true;
}

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

/* Fill auth from the three components, copying them into auth->buf. */
static int fill_auth(struct sigv4_auth *auth, const char *cred, size_t cred_len,
                     const char *signed_headers, size_t sh_len, const char *sig, size_t sig_len)
{
    char *p = auth->buf, *parts[5];
    size_t np = 0;

    if (cred_len + sh_len + sig_len + 3 > sizeof(auth->buf))
        return AUTH_FAIL("authorization too long");
    memcpy(p, cred, cred_len);
    p[cred_len] = '\0';
    for (char *s = p;; s++) {
        if (np == 5)
            return AUTH_FAIL("credential '%.200s' has too many parts", p);
        parts[np++] = s;
        s = strchr(s, '/');
        if (!s)
            break;
        *s = '\0';
    }
    if (np != 5)
        return AUTH_FAIL("credential must be AKID/yyyymmdd/region/service/aws4_request");
    size_t akid_len = strlen(parts[0]);
    if (akid_len == 0 || akid_len >= SIGV4_KEY_ID_SIZE)
        return AUTH_FAIL("credential has an empty or too long access key id");
    for (size_t i = 0; i < akid_len; i++)
        if (!isalnum((unsigned char)parts[0][i]))
            return AUTH_FAIL("access key id '%.128s' has characters other than letters and digits",
                             parts[0]);
    if (strlen(parts[1]) != 8 || !all_digits(parts[1], 8))
        return AUTH_FAIL("credential scope date '%.20s' is not yyyymmdd", parts[1]);
    if (strlen(parts[2]) >= SIGV4_SCOPE_PART_SIZE || !is_lower_token(parts[2], strlen(parts[2])))
        return AUTH_FAIL("credential scope region '%.64s' is malformed", parts[2]);
    if (strlen(parts[3]) >= SIGV4_SCOPE_PART_SIZE || !is_lower_token(parts[3], strlen(parts[3])))
        return AUTH_FAIL("credential scope service '%.64s' is malformed", parts[3]);
    if (strcmp(parts[4], "aws4_request") != 0)
        return AUTH_FAIL("credential scope does not end in 'aws4_request'");
    auth->access_key_id = parts[0];
    auth->date = parts[1];
    auth->region = parts[2];
    auth->service = parts[3];

    p += cred_len + 1;
    memcpy(p, signed_headers, sh_len);
    p[sh_len] = '\0';
    auth->signed_headers = p;
    /* Lowercase names, strictly ascending: the canonical order. */
    const char *prev = NULL;
    size_t prev_len = 0;
    for (const char *s = p;;) {
        const char *e = strchr(s, ';');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        for (size_t i = 0; i < n; i++)
            if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-' ||
                  s[i] == '_'))
                return AUTH_FAIL("signed header names must be lowercase tokens: '%.200s'", p);
        if (n == 0)
            return AUTH_FAIL("empty name in signed headers '%.200s'", p);
        if (prev) {
            int c = strncmp(prev, s, MIN(prev_len, n));
            if (c > 0 || (c == 0 && prev_len >= n))
                return AUTH_FAIL("signed headers '%.200s' are not sorted and distinct", p);
        }
        prev = s;
        prev_len = n;
        if (!e)
            break;
        s = e + 1;
    }

    p += sh_len + 1;
    if (sig_len != 64)
        return AUTH_FAIL("signature is not 64 hex digits");
    for (size_t i = 0; i < sig_len; i++)
        if (!isdigit((unsigned char)sig[i]) && !(sig[i] >= 'a' && sig[i] <= 'f'))
            return AUTH_FAIL("signature is not 64 lowercase hex digits");
    memcpy(p, sig, sig_len);
    p[sig_len] = '\0';
    auth->signature = p;
    return 0;
}

int sigv4_parse_authorization(const char *value, struct sigv4_auth *ret)
{
    static const char *const names[] = { "Credential", "SignedHeaders", "Signature" };
    const char *val[3] = { NULL, NULL, NULL };
    size_t len[3] = { 0, 0, 0 };
    size_t alg = strlen(SIGV4_ALGORITHM);
    const char *p;

    if (strlen(value) >= sizeof(ret->buf))
        return AUTH_FAIL("authorization header too long");
    if (strncmp(value, SIGV4_ALGORITHM, alg) != 0 || value[alg] != ' ')
        return AUTH_FAIL("authorization header does not start with '" SIGV4_ALGORITHM " '");
    p = value + alg;
    for (;;) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *eq = strchr(p, '=');
        if (!eq)
            return AUTH_FAIL("authorization component without '='");
        const char *end = strchr(eq, ',');
        size_t n = end ? (size_t)(end - (eq + 1)) : strlen(eq + 1);
        size_t klen = (size_t)(eq - p);
        size_t k;
        for (k = 0; k < 3; k++)
            if (strlen(names[k]) == klen && strncmp(p, names[k], klen) == 0)
                break;
        if (k == 3)
            return AUTH_FAIL("unknown authorization component '%.*s'", (int)MIN(klen, 40), p);
        if (val[k])
            return AUTH_FAIL("authorization component '%s' given twice", names[k]);
        val[k] = eq + 1;
        len[k] = n;
        while (len[k] && val[k][len[k] - 1] == ' ')
            len[k]--;
        if (!end)
            break;
        p = end + 1;
    }
    for (size_t k = 0; k < 3; k++)
        if (!val[k])
            return AUTH_FAIL("authorization header has no '%s'", names[k]);
    return fill_auth(ret, val[0], len[0], val[1], len[1], val[2], len[2]);
}

/* ---- canonical request ---- */

static bool unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~';
}

static void uri_encode(struct strbuf *b, const char *s, size_t n, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            strbuf_addc(b, (char)c);
        } else {
            char e[3] = { '%', hex[c >> 4], hex[c & 15] };
            strbuf_add(b, e, 3);
        }
    }
}

/* The canonical URI: dot segments and empty segments removed (as botocore
 * normalises), then each byte RFC3986-encoded with '/' kept.  The raw path
 * is encoded again, as SigV4 prescribes for every service but S3. */
static void canonical_uri(struct strbuf *b, const char *path)
{
    _cleanup_free_ const char **segs = NULL;
    _cleanup_free_ size_t *lens = NULL;
    size_t n = 0, cap = 0;
    bool trailing;

    if (!path || !*path) {
        strbuf_addc(b, '/');
        return;
    }
    trailing = path[strlen(path) - 1] == '/';
    for (const char *s = path; *s;) {
        const char *e = strchr(s, '/');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == 0 || (len == 1 && s[0] == '.')) {
            /* skip */
        } else if (len == 2 && s[0] == '.' && s[1] == '.') {
            if (n)
                n--;
        } else {
            if (n == cap) {
                cap = cap ? 2 * cap : 8;
                segs = xrealloc(segs, cap * sizeof(*segs));
                lens = xrealloc(lens, cap * sizeof(*lens));
            }
            segs[n] = s;
            lens[n++] = len;
        }
        if (!e)
            break;
        s = e + 1;
    }
    strbuf_addc(b, '/');
    for (size_t i = 0; i < n; i++) {
        if (i)
            strbuf_addc(b, '/');
        uri_encode(b, segs[i], lens[i], false);
    }
    if (trailing && n)
        strbuf_addc(b, '/');
}

struct qpair {
    char *k, *v;
};

static int cmp_qpair(const void *a, const void *b)
{
    const struct qpair *x = a, *y = b;
    int c = strcmp(x->k, y->k);
    return c ? c : strcmp(x->v, y->v);
}

/* Percent-decode ('+' is a space) and RFC3986-encode again. */
static int recode(const char *s, size_t n, char **ret)
{
    struct strbuf b = { 0 };

    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (n - i < 3 || hex_value(s[i + 1]) < 0 || hex_value(s[i + 2]) < 0) {
                strbuf_release(&b);
                return AUTH_FAIL("malformed percent escape in the query string");
            }
            c = (char)(hex_value(s[i + 1]) << 4 | hex_value(s[i + 2]));
            i += 2;
        }
        uri_encode(&b, &c, 1, false);
    }
    *ret = strbuf_steal(&b);
    return 0;
}

static int canonical_query(struct strbuf *b, const char *query, bool query_auth)
{
    struct qpair *v = NULL;
    size_t n = 0, cap = 0;
    int r = 0;

    for (const char *s = query ? query : ""; *s;) {
        const char *e = strchr(s, '&');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        const char *eq = memchr(s, '=', len);
        size_t klen = eq ? (size_t)(eq - s) : len;
        if (len > 0 && !(query_auth && klen == 15 && strncmp(s, "X-Amz-Signature", 15) == 0)) {
            if (n == QUERY_MAX_PARAMS) {
                r = AUTH_FAIL("more than %d query parameters", QUERY_MAX_PARAMS);
                break;
            }
            if (n == cap) {
                cap = cap ? 2 * cap : 16;
                v = xrealloc(v, cap * sizeof(*v));
            }
            v[n].k = v[n].v = NULL;
            r = recode(s, klen, &v[n].k);
            if (r == 0)
                r = eq ? recode(eq + 1, len - klen - 1, &v[n].v) : recode("", 0, &v[n].v);
            n++;
            if (r < 0)
                break;
        }
        if (!e)
            break;
        s = e + 1;
    }
    if (r == 0) {
        if (n) /* an empty query has no array (qsort wants one) */
            qsort(v, n, sizeof(*v), cmp_qpair);
        for (size_t i = 0; i < n; i++)
            strbuf_printf(b, "%s%s=%s", i ? "&" : "", v[i].k, v[i].v);
    }
    for (size_t i = 0; i < n; i++) {
        free(v[i].k);
        free(v[i].v);
    }
    free(v);
    return r;
}

/* Append a header value trimmed, with inner runs of whitespace collapsed to
 * one space. */
static void add_trimmed(struct strbuf *b, const char *v)
{
    bool space = false, started = false;

    for (; *v; v++) {
        if (*v == ' ' || *v == '\t') {
            space = started;
            continue;
        }
        if (space)
            strbuf_addc(b, ' ');
        space = false;
        started = true;
        strbuf_addc(b, *v);
    }
}

static const char *find_header(const struct sigv4_request *req, const char *name, size_t n,
                               size_t from, size_t *ret_pos)
{
    for (size_t i = from; i < req->n_headers; i++)
        if (strlen(req->headers[i].name) == n && strncasecmp(req->headers[i].name, name, n) == 0) {
            *ret_pos = i;
            return req->headers[i].value ? req->headers[i].value : "";
        }
    return NULL;
}

int sigv4_canonical_request(const struct sigv4_request *req, const char *signed_headers,
                            bool query_auth, char **ret)
{
    struct strbuf b = { 0 };
    const char *content_sha;
    size_t pos;
    int r;

    strbuf_adds(&b, req->method);
    strbuf_addc(&b, '\n');
    canonical_uri(&b, req->path);
    strbuf_addc(&b, '\n');
    r = canonical_query(&b, req->query, query_auth);
    if (r < 0)
        goto fail;
    strbuf_addc(&b, '\n');
    for (const char *s = signed_headers;;) {
        const char *e = strchr(s, ';');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        const char *v = find_header(req, s, n, 0, &pos);
        if (!v) {
            r = AUTH_FAIL("signed header '%.*s' is not in the request", (int)MIN(n, 64), s);
            goto fail;
        }
        strbuf_add(&b, s, n);
        strbuf_addc(&b, ':');
        add_trimmed(&b, v);
        /* Repeated headers: values joined with commas. */
        while ((v = find_header(req, s, n, pos + 1, &pos))) {
            strbuf_addc(&b, ',');
            add_trimmed(&b, v);
        }
        strbuf_addc(&b, '\n');
        if (!e)
            break;
        s = e + 1;
    }
    strbuf_addc(&b, '\n');
    strbuf_adds(&b, signed_headers);
    strbuf_addc(&b, '\n');
    content_sha = find_header(req, "x-amz-content-sha256", 20, 0, &pos);
    if (content_sha) {
        strbuf_adds(&b, content_sha);
    } else {
        struct digest d;
        char hex[DIGEST_HEX_SIZE];
        sha256(req->body ? req->body : "", req->body_len, &d);
        strbuf_adds(&b, digest_to_hex(&d, hex));
    }
    *ret = strbuf_steal(&b);
    return 0;
fail:
    strbuf_release(&b);
    return r;
}

/* ---- signing ---- */

static void hmac(const void *key, size_t klen, const char *msg, uint8_t out[32])
{
    unsigned int n = 32;

    HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out, &n);
}

int sigv4_sign(const struct sigv4_request *req, const char *secret, const char *amz_date,
               const char *region, const char *service, const char *signed_headers,
               bool query_auth, char ret_signature[65])
{
    _cleanup_free_ char *creq = NULL, *key0 = NULL, *sts = NULL;
    struct digest d;
    char hex[DIGEST_HEX_SIZE], date[9];
    uint8_t k[32], sig[32];
    int r;

    if (strlen(amz_date) != 16)
        return AUTH_FAIL("malformed X-Amz-Date '%.32s'", amz_date);
    r = sigv4_canonical_request(req, signed_headers, query_auth, &creq);
    if (r < 0)
        return r;
    snprintf(date, sizeof(date), "%.8s", amz_date);
    sha256(creq, strlen(creq), &d);
    sts = xasprintf(SIGV4_ALGORITHM "\n%s\n%s/%s/%s/aws4_request\n%s", amz_date, date, region,
                    service, digest_to_hex(&d, hex));
    key0 = xasprintf("AWS4%s", secret);
    hmac(key0, strlen(key0), date, k);
    hmac(k, 32, region, k);
    hmac(k, 32, service, k);
    hmac(k, 32, "aws4_request", k);
    hmac(k, 32, sts, sig);
    hex_encode(sig, 32, ret_signature);
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(key0, strlen(key0));
    return 0;
}

/* ---- verification ---- */

/* Parse YYYYMMDDTHHMMSSZ strictly. */
static int parse_amz_date(const char *s, time_t *ret)
{
    struct tm tm = { 0 };

    if (strlen(s) != 16 || s[8] != 'T' || s[15] != 'Z' || !all_digits(s, 8) ||
        !all_digits(s + 9, 6))
        return AUTH_FAIL("X-Amz-Date '%.32s' is not YYYYMMDDTHHMMSSZ", s);
    tm.tm_year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0') - 1900;
    tm.tm_mon = (s[4] - '0') * 10 + (s[5] - '0') - 1;
    tm.tm_mday = (s[6] - '0') * 10 + (s[7] - '0');
    tm.tm_hour = (s[9] - '0') * 10 + (s[10] - '0');
    tm.tm_min = (s[11] - '0') * 10 + (s[12] - '0');
    tm.tm_sec = (s[13] - '0') * 10 + (s[14] - '0');
    if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
        tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
        return AUTH_FAIL("X-Amz-Date '%.32s' is not a valid time", s);
    *ret = timegm(&tm);
    return 0;
}

static int single_header(const struct sigv4_request *req, const char *name, const char **ret)
{
    size_t pos;
    const char *v = find_header(req, name, strlen(name), 0, &pos);

    if (v && find_header(req, name, strlen(name), pos + 1, &pos))
        return AUTH_FAIL("header '%s' given more than once", name);
    *ret = v;
    return 0;
}

/* Re-record the current message as an authentication failure. */
static int requalify(const char *what)
{
    char msg[512];

    snprintf(msg, sizeof(msg), "%s", error_message() ? error_message() : "invalid");
    return AUTH_FAIL("%s: %s", what, msg);
}

static bool list_has(const char *list, const char *name)
{
    size_t n = strlen(name);

    for (const char *s = list;;) {
        const char *e = strchr(s, ';');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == n && strncmp(s, name, n) == 0)
            return true;
        if (!e)
            return false;
        s = e + 1;
    }
}

int sigv4_verify(const struct sigv4_request *req, sigv4_lookup_fn lookup, void *ud,
                 struct sigv4_result *ret)
{
    struct sigv4_auth auth;
    struct query q = { 0 };
    const char *authorization, *amz_date, *token, *content_sha;
    char secret[SIGV4_SECRET_SIZE] = "", account[SIGV4_ACCOUNT_SIZE] = "", expected[65];
    bool query_auth;
    time_t t = 0;
    long long expires = 0;
    int r;

    r = single_header(req, "authorization", &authorization);
    if (r < 0)
        return r;
    r = single_header(req, "x-amz-security-token", &token);
    if (r < 0)
        return r;
    if (req->query && *req->query) {
        /* A query string that does not decode cannot carry query-string
         * authentication; with an Authorization header it is signed as
         * received and the server refuses it after verification, so that
         * a signed client learns what is wrong with it. */
        r = query_parse(req->query, strlen(req->query), &q);
        if (r < 0 && !authorization)
            return requalify("malformed query string");
    }
    query_auth = query_get(&q, "X-Amz-Algorithm") || query_get(&q, "X-Amz-Signature") ||
                 query_get(&q, "X-Amz-Credential");
    if (query_auth && authorization) {
        r = AUTH_FAIL("both an Authorization header and query-string authentication");
        goto out;
    }
    if (query_get(&q, "X-Amz-Security-Token"))
        token = query_get(&q, "X-Amz-Security-Token");
    if (token) {
        r = AUTH_FAIL("session credentials (X-Amz-Security-Token) are not supported");
        goto out;
    }
    if (query_auth) {
        const char *alg = query_get(&q, "X-Amz-Algorithm"), *cred = query_get(&q, "X-Amz-Credential");
        const char *sh = query_get(&q, "X-Amz-SignedHeaders"), *sig = query_get(&q, "X-Amz-Signature");
        const char *exp = query_get(&q, "X-Amz-Expires");
        char *end;

        r = query_check_unique(&q);
        if (r < 0) {
            r = requalify("query-string authentication");
            goto out;
        }
        if (!alg || strcmp(alg, SIGV4_ALGORITHM) != 0) {
            r = AUTH_FAIL("X-Amz-Algorithm is not '" SIGV4_ALGORITHM "'");
            goto out;
        }
        if (!cred || !sh || !sig || !exp || !query_get(&q, "X-Amz-Date")) {
            r = AUTH_FAIL("query-string authentication needs X-Amz-Credential, X-Amz-Date, "
                          "X-Amz-Expires, X-Amz-SignedHeaders and X-Amz-Signature");
            goto out;
        }
        r = fill_auth(&auth, cred, strlen(cred), sh, strlen(sh), sig, strlen(sig));
        if (r < 0)
            goto out;
        errno = 0;
        expires = strtoll(exp, &end, 10);
        if (!isdigit((unsigned char)exp[0]) || *end || errno || expires < 1 ||
            expires > SIGV4_MAX_EXPIRES) {
            r = AUTH_FAIL("X-Amz-Expires '%.20s' is not between 1 and %d", exp, SIGV4_MAX_EXPIRES);
            goto out;
        }
        amz_date = query_get(&q, "X-Amz-Date");
    } else {
        if (!authorization) {
            r = AUTH_FAIL("request is not signed: no Authorization header and no "
                          "X-Amz-Signature");
            goto out;
        }
        r = sigv4_parse_authorization(authorization, &auth);
        if (r < 0)
            goto out;
        r = single_header(req, "x-amz-date", &amz_date);
        if (r < 0)
            goto out;
        if (!amz_date) {
            r = AUTH_FAIL("no X-Amz-Date header");
            goto out;
        }
        if (!list_has(auth.signed_headers, "x-amz-date")) {
            r = AUTH_FAIL("x-amz-date is not a signed header");
            goto out;
        }
    }
    r = parse_amz_date(amz_date, &t);
    if (r < 0)
        goto out;
    if (strncmp(auth.date, amz_date, 8) != 0) {
        r = AUTH_FAIL("credential scope date %s differs from the date of X-Amz-Date %.16s",
                      auth.date, amz_date);
        goto out;
    }
    if (t > req->now + SIGV4_MAX_SKEW) {
        r = AUTH_FAIL("request time %.16s is %lld seconds ahead of the server's clock", amz_date,
                      (long long)(t - req->now));
        goto out;
    }
    if (!query_auth && t < req->now - SIGV4_MAX_SKEW) {
        r = AUTH_FAIL("request time %.16s is %lld seconds behind the server's clock (limit %d)",
                      amz_date, (long long)(req->now - t), SIGV4_MAX_SKEW);
        goto out;
    }
    if (query_auth && req->now > t + expires) {
        r = AUTH_FAIL("presigned request expired %lld seconds ago",
                      (long long)(req->now - t - expires));
        goto out;
    }
    if (!list_has(auth.signed_headers, "host")) {
        r = AUTH_FAIL("host is not a signed header");
        goto out;
    }
    r = lookup(auth.access_key_id, secret, sizeof(secret), account, ud);
    if (r == -ENOENT) {
        r = AUTH_FAIL("unknown access key id '%s'", auth.access_key_id);
        goto out;
    }
    if (r < 0)
        goto out;
    secret[sizeof(secret) - 1] = '\0';
    account[sizeof(account) - 1] = '\0';
    r = sigv4_sign(req, secret, amz_date, auth.region, auth.service, auth.signed_headers,
                   query_auth, expected);
    OPENSSL_cleanse(secret, sizeof(secret));
    if (r < 0)
        goto out;
    if (CRYPTO_memcmp(expected, auth.signature, 64) != 0) {
        r = AUTH_FAIL("signature mismatch for access key id '%s'", auth.access_key_id);
        goto out;
    }
    /* The signature covers X-Amz-Content-SHA256 in place of the body: it
     * must be the body's hash, unless it says the body is unsigned. */
    r = single_header(req, "x-amz-content-sha256", &content_sha);
    if (r < 0)
        goto out;
    ret->unsigned_payload = false;
    if (content_sha && strcmp(content_sha, "UNSIGNED-PAYLOAD") == 0) {
        ret->unsigned_payload = true;
    } else if (content_sha) {
        struct digest d;
        char hex[DIGEST_HEX_SIZE];
        sha256(req->body ? req->body : "", req->body_len, &d);
        if (strcasecmp(content_sha, digest_to_hex(&d, hex)) != 0) {
            r = AUTH_FAIL("X-Amz-Content-SHA256 does not match the body");
            goto out;
        }
    }
    ret->checksum_signed = list_has(auth.signed_headers, "x-amz-checksum");
    snprintf(ret->access_key_id, sizeof(ret->access_key_id), "%s", auth.access_key_id);
    snprintf(ret->account, sizeof(ret->account), "%s", account);
    snprintf(ret->region, sizeof(ret->region), "%s", auth.region);
    snprintf(ret->service, sizeof(ret->service), "%s", auth.service);
    ret->query_auth = query_auth;
    r = 0;
out:
    query_release(&q);
    return r;
}
