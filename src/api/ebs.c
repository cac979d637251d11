/* The EBS direct API (service `ebs`, rest-json, 2019-11-02) on the EC2
 * listener: StartSnapshot, PutSnapshotBlock, CompleteSnapshot,
 * ListSnapshotBlocks, ListChangedBlocks and GetSnapshotBlock over paths
 * under /snapshots (the wire reference's section 5).  server.c routes
 * those paths here after SigV4; this file validates each request fully
 * (path, query, headers, JSON body, block bytes) before the service layer
 * (src/service/ebs.c) looks anything up, and maps every failure to the
 * rest-json error vocabulary in one place (fail_errno()): the HTTP status,
 * the header x-amzn-ErrorType and a body {"message", "reason", "__type"}.
 *
 * Design notes (tokens): block tokens and page tokens are opaque to
 * clients and checked here: base64 of a version byte, the block index (and
 * for block tokens the expiry time) and 16 bytes of HMAC-SHA256 under the
 * region's secret (service_ebs_token_key()) over those fields and the
 * snapshot ids they belong to.  A token for another snapshot, another
 * index, a forged or expired one is refused (INVALID_BLOCK_TOKEN,
 * INVALID_PAGE_TOKEN) and no state is kept per token.
 *
 * Design notes (access): the owner reads and writes its snapshots; an
 * account a createVolumePermission names may list and read blocks; any
 * other account, and everyone for public snapshots (the EBS direct API
 * does not serve them), gets ResourceNotFoundException, as for a snapshot
 * that does not exist.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "api/internal.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/ids.h"
#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "registry/ebs-uploads.h"
#include "service/service.h"

#define JSON_BODY_MAX (64 * 1024)
#define MAX_RESULTS_MIN 100
#define MAX_RESULTS_MAX 10000
#define TOKEN_LIFETIME (24 * 3600) /* seconds a block token is good for */
#define TOKEN_MAC_SIZE 16
#define TOKEN_VERSION 1
#define TAGS_MAX 50

/* One call: the request, the response being built and the error. */
struct call {
    struct api_ctx *ctx;
    const struct api_ebs_request *rq;
    struct api_ebs_response *resp;
    struct query q;
};

/* ---- responses and the error map ---- */

static void add_header(struct api_ebs_response *resp, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_header(struct api_ebs_response *resp, const char *name, const char *fmt, ...)
{
    va_list ap;

    if (resp->n_headers == API_EBS_MAX_HEADERS)
        return;
    resp->headers[resp->n_headers].name = name;
    va_start(ap, fmt);
    vsnprintf(resp->headers[resp->n_headers].value, sizeof(resp->headers[0].value), fmt, ap);
    va_end(ap);
    resp->n_headers++;
}

static void set_json(struct api_ebs_response *resp, int status, struct strbuf *b)
{
    free(resp->body);
    resp->status = status;
    resp->body_len = b->len;
    resp->body = strbuf_steal(b);
    resp->content_type = "application/json";
}

void api_ebs_response_release(struct api_ebs_response *resp)
{
    free(resp->body);
    resp->body = NULL;
}

/* The error reply: status, x-amzn-ErrorType and the JSON body.  `reason`
 * may be NULL.  Returns -EINVAL so handlers can `return fail(...)`. */
static int reply_error(struct api_ebs_response *resp, int status, const char *code,
                       const char *reason, const char *message)
{
    struct strbuf b = { 0 };

    resp->n_headers = 0;
    resp->error_code = code;
    add_header(resp, "x-amzn-ErrorType", "%s", code);
    /* The reference's lowercase members, and the model's capitalised
     * ones, which botocore reads into the error (response["Reason"]). */
    strbuf_adds(&b, "{\"__type\":");
    json_write_string(&b, code);
    strbuf_adds(&b, ",\"message\":");
    json_write_string(&b, message);
    strbuf_adds(&b, ",\"Message\":");
    json_write_string(&b, message);
    if (reason) {
        strbuf_adds(&b, ",\"reason\":");
        json_write_string(&b, reason);
        strbuf_adds(&b, ",\"Reason\":");
        json_write_string(&b, reason);
    }
    strbuf_adds(&b, "}");
    set_json(resp, status, &b);
    return -EINVAL;
}

static int fail(struct call *c, int status, const char *code, const char *reason,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int fail(struct call *c, int status, const char *code, const char *reason,
                const char *fmt, ...)
{
    char msg[700];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return reply_error(c->resp, status, code, reason, msg);
}

#define VALIDATION(c, reason, ...) fail(c, 400, "ValidationException", reason, __VA_ARGS__)

/* THE mapping of a service error (-errno with a message) to the wire.
 * `reason` is the ValidationException reason this operation gives a bad
 * value (may be NULL). */
static int fail_errno(struct call *c, int err, const char *reason)
{
    char detail[600];

    error_describe(err, detail, sizeof(detail));
    switch (-err) {
    case ENOENT:
        return fail(c, 404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND", "%s", detail);
    case EEXIST:
        return fail(c, 409, "ConflictException", NULL, "%s", detail);
    case EACCES:
        return fail(c, 403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT", "%s", detail);
    case ERANGE:
        return VALIDATION(c, "INVALID_BLOCK", "%s", detail);
    case ETIMEDOUT:
        return VALIDATION(c, "WRITE_REQUEST_TIMEOUT", "%s", detail);
    case EROFS:
        return VALIDATION(c, NULL, "%s", detail);
    case EINVAL:
    case EMSGSIZE:
        return VALIDATION(c, reason, "%s", detail);
    case EBUSY:
        return fail(c, 400, "ConcurrentLimitExceededException", NULL, "%s", detail);
    default:
        log_error("%s: %s", c->ctx->request_id, detail);
        return fail(c, 500, "InternalServerException", NULL,
                    "An internal error has occurred (request %s).", c->ctx->request_id);
    }
}

void api_ebs_auth_failure(struct api_ebs_response *resp, const char *message)
{
    reply_error(resp, 403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT", message);
}

void api_ebs_fail(struct api_ebs_response *resp, int status, const char *code,
                  const char *reason, const char *message)
{
    reply_error(resp, status, code, reason, message);
}

/* ---- request helpers ---- */

static const char *header(const struct call *c, const char *name)
{
    for (size_t i = 0; i < c->rq->n_headers; i++)
        if (strcasecmp(c->rq->headers[i].name, name) == 0)
            return c->rq->headers[i].value;
    return NULL;
}

/* A decimal in [min, max], all digits, no sign or leading junk. */
static bool parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
    uint64_t v = 0;

    if (!s || !*s || strlen(s) > 20)
        return false;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (v < min || v > max)
        return false;
    *ret = v;
    return true;
}

static void json_key(struct strbuf *b, bool *first, const char *key)
{
    if (!*first)
        strbuf_addc(b, ',');
    *first = false;
    json_write_string(b, key);
    strbuf_addc(b, ':');
}

static double epoch(int64_t ms)
{
    return (double)ms / 1000.0;
}

/* Open the request's region: writable for the calls that write. */
static int open_region(struct call *c, bool writable, struct region **ret)
{
    int r = region_open(c->ctx->data_dir, c->ctx->region, !writable, ret);

    if (r == -ENOENT) {
        *ret = NULL;
        return 0;
    }
    return r;
}

/* A snapshot the caller may read (owner, or named by a permission), with
 * its expiry checked first.  Any other is ResourceNotFoundException. */
static int readable_snapshot(struct call *c, struct region *rg, const char *id,
                             struct registry_snapshot **ret)
{
    struct registry_snapshot *row = NULL;
    bool ok = false;
    int r;

    if (!id_is_valid("snap", id))
        return VALIDATION(c, "INVALID_SNAPSHOT_ID", "The snapshot id '%.64s' is malformed.", id);
    if (!rg)
        return fail(c, 404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND",
                    "The snapshot '%s' does not exist.", id);
    r = service_ebs_expire(rg, id, NULL);
    if (r < 0)
        return fail_errno(c, r, NULL);
    r = registry_snapshot_get(rg->reg, id, &row);
    if (r == 0)
        r = service_ebs_readable(rg, row, c->ctx->account, &ok);
    if (r == -ENOENT || (r == 0 && !ok)) {
        registry_snapshot_free(row);
        return fail(c, 404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND",
                    "The snapshot '%s' does not exist.", id);
    }
    if (r < 0) {
        registry_snapshot_free(row);
        return fail_errno(c, r, NULL);
    }
    *ret = row;
    return 0;
}

/* The block map of a readable, completed snapshot. */
static int completed_snapshot(struct call *c, struct region *rg, const char *id,
                              struct registry_snapshot **ret_row, struct blockmap **ret_map)
{
    struct registry_snapshot *row = NULL;
    int r = readable_snapshot(c, rg, id, &row);

    if (r < 0)
        return r;
    if (row->state != SNAPSHOT_COMPLETED || !row->has_map) {
        r = VALIDATION(c, "INVALID_SNAPSHOT_ID", "The snapshot '%s' is %s, not completed.", id,
                       snapshot_state_to_string(row->state));
        registry_snapshot_free(row);
        return r;
    }
    r = blockmap_load(rg->store, &row->map_id, ret_map);
    if (r < 0) {
        registry_snapshot_free(row);
        return fail_errno(c, r, NULL);
    }
    *ret_row = row;
    return 0;
}

/* ---- tokens ---- */

/* mac = HMAC(key, kind | ids | fields)[0..16) */
static void token_mac(const uint8_t key[32], const char *kind, const char *id1, const char *id2,
                      const uint8_t *fields, size_t n, uint8_t mac[TOKEN_MAC_SIZE])
{
    struct strbuf b = { 0 };
    uint8_t full[32];
    unsigned len = sizeof(full);

    strbuf_printf(&b, "%s|%s|%s|", kind, id1, id2 ? id2 : "");
    strbuf_add(&b, fields, n);
    HMAC(EVP_sha256(), key, 32, (const unsigned char *)b.data, b.len, full, &len);
    memcpy(mac, full, TOKEN_MAC_SIZE);
    strbuf_release(&b);
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* Encode version | fields | mac as base64 into out (>= 4 * ceil(n / 3) + 1). */
static void token_encode(const char *kind, const uint8_t key[32], const char *id1,
                         const char *id2, const uint8_t *fields, size_t n, char *out)
{
    uint8_t raw[64];

    raw[0] = TOKEN_VERSION;
    memcpy(raw + 1, fields, n);
    token_mac(key, kind, id1, id2, raw, 1 + n, raw + 1 + n);
    EVP_EncodeBlock((unsigned char *)out, raw, (int)(1 + n + TOKEN_MAC_SIZE));
}

/* Decode and check a token of `n` field bytes; false for anything else. */
static bool token_decode(const char *kind, const uint8_t key[32], const char *id1,
                         const char *id2, const char *s, uint8_t *fields, size_t n)
{
    size_t raw_len = 1 + n + TOKEN_MAC_SIZE;
    size_t text_len = 4 * DIV_ROUND_UP(raw_len, 3);
    uint8_t raw[64], mac[TOKEN_MAC_SIZE];
    char again[96];

    if (!s || strlen(s) != text_len || text_len >= sizeof(again))
        return false;
    if (EVP_DecodeBlock(raw, (const unsigned char *)s, (int)text_len) < (int)raw_len)
        return false;
    EVP_EncodeBlock((unsigned char *)again, raw, (int)raw_len);
    if (strcmp(again, s) != 0 || raw[0] != TOKEN_VERSION)
        return false;
    token_mac(key, kind, id1, id2, raw, 1 + n, mac);
    if (CRYPTO_memcmp(mac, raw + 1 + n, TOKEN_MAC_SIZE) != 0)
        return false;
    memcpy(fields, raw + 1, n);
    return true;
}

static void block_token(const uint8_t key[32], const char *snap, uint64_t index,
                        int64_t expiry, char out[64])
{
    uint8_t f[16];

    put_be64(f, index);
    put_be64(f + 8, (uint64_t)expiry);
    token_encode("block", key, snap, NULL, f, sizeof(f), out);
}

static void page_token(const uint8_t key[32], const char *op, const char *snap,
                       const char *first, uint64_t next, char out[64])
{
    uint8_t f[8];
    char kind[32];

    snprintf(kind, sizeof(kind), "page-%s", op);
    put_be64(f, next);
    token_encode(kind, key, snap, first, f, sizeof(f), out);
}

/* ---- the paging parameters of both list calls ---- */

struct paging {
    size_t max;
    uint64_t start;
};

static int parse_paging(struct call *c, const uint8_t key[32], const char *op, const char *snap,
                        const char *first, struct paging *ret)
{
    const char *max = query_get(&c->q, "maxResults"), *tok = query_get(&c->q, "pageToken");
    const char *start = query_get(&c->q, "startingBlockIndex");
    uint64_t v;

    ret->max = MAX_RESULTS_MAX;
    ret->start = 0;
    if (max) {
        if (!parse_u64(max, MAX_RESULTS_MIN, MAX_RESULTS_MAX, &v))
            return VALIDATION(c, "INVALID_PARAMETER_VALUE",
                              "maxResults '%.40s' is not a number from %d to %d.", max,
                              MAX_RESULTS_MIN, MAX_RESULTS_MAX);
        ret->max = (size_t)v;
    }
    if (start) {
        if (!parse_u64(start, 0, INT64_MAX, &v))
            return VALIDATION(c, "INVALID_PARAMETER_VALUE",
                              "startingBlockIndex '%.40s' is not a block index.", start);
        ret->start = v;
    }
    if (tok) {
        uint8_t f[8];
        char kind[32];
        snprintf(kind, sizeof(kind), "page-%s", op);
        if (!token_decode(kind, key, snap, first, tok, f, sizeof(f)))
            return VALIDATION(c, "INVALID_PAGE_TOKEN",
                              "The page token is not valid for this snapshot and call.");
        ret->start = get_be64(f); /* a page token overrides startingBlockIndex */
    }
    return 0;
}

/* Write the members every list page carries. */
static void list_tail(struct strbuf *b, const struct registry_snapshot *row, int64_t expiry,
                      const char *next)
{
    strbuf_printf(b, ",\"ExpiryTime\":%.3f,\"VolumeSize\":%u,\"BlockSize\":%u",
                   (double)expiry, row->volume_size_gib, EBS_BLOCK_SIZE);
    if (next) {
        strbuf_adds(b, ",\"NextToken\":");
        json_write_string(b, next);
    }
    strbuf_adds(b, "}");
}

/* The snapshot id and block index of /snapshots/{id}/blocks/{index}. */
static int check_block_path(struct call *c, const char *snap, const char *index_s,
                            uint64_t *ret_index)
{
    if (!id_is_valid("snap", snap))
        return VALIDATION(c, "INVALID_SNAPSHOT_ID", "The snapshot id '%.64s' is malformed.", snap);
    if (!parse_u64(index_s, 0, INT32_MAX, ret_index))
        return VALIDATION(c, "INVALID_BLOCK", "Block index '%.40s' is not a number from 0 to %d.",
                          index_s, INT32_MAX);
    return 0;
}

/* ---- StartSnapshot ---- */

static const char *const start_members[] = {
    "VolumeSize", "ParentSnapshotId", "Tags", "Description", "ClientToken",
    "Encrypted", "KmsKeyArn", "Timeout", NULL,
};

static int start_snapshot(struct call *c)
{
    _cleanup_(json_freep) struct json_value *doc = NULL;
    _cleanup_(region_freep) struct region *rg = NULL;
    _cleanup_free_ struct registry_tag *tags = NULL;
    struct registry_tag *rtags = NULL;
    size_t n_rtags = 0;
    struct service_ebs_start_options o = { .owner = c->ctx->account };
    struct registry_snapshot *row = NULL;
    const struct json_value *v;
    struct strbuf b = { 0 };
    bool first = true;
    int r;

    if (!c->rq->body_len)
        return VALIDATION(c, "INVALID_PARAMETER_VALUE", "StartSnapshot needs a JSON body.");
    r = json_parse(c->rq->body, c->rq->body_len, &doc);
    if (r < 0)
        return VALIDATION(c, "INVALID_PARAMETER_VALUE", "%s", error_message());
    if (doc->type != JSON_OBJECT)
        return VALIDATION(c, "INVALID_PARAMETER_VALUE", "The body is a JSON %s, not an object.",
                          json_type_name(doc->type));
    for (size_t i = 0; i < doc->n; i++) {
        bool known = false;
        for (size_t k = 0; start_members[k]; k++)
            known = known || strcmp(doc->keys[i], start_members[k]) == 0;
        if (!known)
            return VALIDATION(c, "INVALID_PARAMETER_VALUE", "Unknown parameter '%.64s'.",
                              doc->keys[i]);
    }

    v = json_get(doc, "VolumeSize");
    if (!v)
        return VALIDATION(c, "INVALID_VOLUME_SIZE", "VolumeSize is required.");
    if (v->type != JSON_NUMBER || !v->is_integer || v->integer < 1 ||
        v->integer > EBS_VOLUME_MAX_GIB)
        return VALIDATION(c, "INVALID_VOLUME_SIZE", "VolumeSize must be a whole number of GiB "
                          "from 1 to %d.", EBS_VOLUME_MAX_GIB);
    o.volume_size_gib = (uint64_t)v->integer;

    if ((v = json_get(doc, "ParentSnapshotId"))) {
        if (v->type != JSON_STRING || !id_is_valid("snap", v->string))
            return VALIDATION(c, "INVALID_SNAPSHOT_ID", "ParentSnapshotId is not a snapshot id.");
        o.parent_id = v->string;
    }
    if ((v = json_get(doc, "Encrypted"))) {
        if (v->type != JSON_BOOL)
            return VALIDATION(c, "INVALID_PARAMETER_VALUE", "Encrypted must be a boolean.");
        if (o.parent_id)
            return VALIDATION(c, "INVALID_PARAMETER_VALUE",
                              "Encrypted cannot be given with ParentSnapshotId: a child "
                              "snapshot has its parent's encryption.");
        if (v->boolean)
            return VALIDATION(c, "INVALID_PARAMETER_VALUE",
                              "kiln does not encrypt snapshots; Encrypted must be false.");
    }
    if (json_get(doc, "KmsKeyArn"))
        return VALIDATION(c, "INVALID_CUSTOMER_KEY", "kiln does not encrypt snapshots: "
                          "KmsKeyArn is not supported.");
    if ((v = json_get(doc, "Description"))) {
        if (v->type != JSON_STRING || v->len > 255)
            return VALIDATION(c, "INVALID_PARAMETER_VALUE",
                              "Description must be a string of at most 255 characters.");
        o.description = v->string;
    }
    if ((v = json_get(doc, "Timeout"))) {
        if (v->type != JSON_NUMBER || !v->is_integer || v->integer < EBS_TIMEOUT_MIN ||
            v->integer > EBS_TIMEOUT_MAX)
            return VALIDATION(c, "INVALID_PARAMETER_VALUE",
                              "Timeout must be a whole number of minutes from %d to %d.",
                              EBS_TIMEOUT_MIN, EBS_TIMEOUT_MAX);
        o.timeout_minutes = (int)v->integer;
    }
    if ((v = json_get(doc, "ClientToken"))) {
        if (v->type != JSON_STRING || v->len < 1 || v->len > EBS_CLIENT_TOKEN_MAX)
            return VALIDATION(c, "INVALID_PARAMETER_VALUE",
                              "ClientToken must be a string of 1 to %d characters.",
                              EBS_CLIENT_TOKEN_MAX);
        o.client_token = v->string;
    }
    if ((v = json_get(doc, "Tags"))) {
        if (v->type != JSON_ARRAY || v->n > TAGS_MAX)
            return VALIDATION(c, "INVALID_TAG", "Tags must be a list of at most %d tags.",
                              TAGS_MAX);
        tags = xcalloc(v->n ? v->n : 1, sizeof(*tags));
        for (size_t i = 0; i < v->n; i++) {
            const struct json_value *t = &v->items[i], *k = json_get(t, "Key"),
                                    *val = json_get(t, "Value");
            if (t->type != JSON_OBJECT || !k || k->type != JSON_STRING || k->len < 1 ||
                k->len > 127 || (val && (val->type != JSON_STRING || val->len > 255)) ||
                t->n != 1u + (val != NULL))
                return VALIDATION(c, "INVALID_TAG", "Tag %zu must be {\"Key\": 1 to 127 "
                                  "characters, \"Value\": at most 255}.", i + 1);
            if (strncasecmp(k->string, "aws:", 4) == 0)
                return VALIDATION(c, "INVALID_TAG", "Tag keys starting with 'aws:' are "
                                  "reserved: '%.127s'.", k->string);
            for (size_t j = 0; j < i; j++)
                if (strcmp(tags[j].key, k->string) == 0)
                    return VALIDATION(c, "INVALID_TAG", "Tag key '%.127s' is given twice.",
                                      k->string);
            tags[i].key = k->string;
            tags[i].value = val ? val->string : (char *)"";
        }
        o.tags = tags;
        o.n_tags = v->n;
    }

    r = open_region(c, true, &rg);
    if (r == 0)
        r = service_ebs_expire(rg, NULL, NULL);
    if (r == 0)
        r = service_ebs_start(rg, &o, &row);
    if (r < 0)
        return fail_errno(c, r, "INVALID_PARAMETER_VALUE");

    r = registry_tag_list(rg->reg, row->id, &rtags, &n_rtags);
    if (r < 0) {
        registry_snapshot_free(row);
        return fail_errno(c, r, NULL);
    }
    strbuf_adds(&b, "{");
    json_key(&b, &first, "SnapshotId");
    json_write_string(&b, row->id);
    json_key(&b, &first, "OwnerId");
    json_write_string(&b, row->owner);
    json_key(&b, &first, "Status");
    json_write_string(&b, snapshot_state_to_string(row->state));
    json_key(&b, &first, "StartTime");
    strbuf_printf(&b, "%.3f", epoch(row->start_time));
    json_key(&b, &first, "VolumeSize");
    strbuf_printf(&b, "%u", row->volume_size_gib);
    json_key(&b, &first, "BlockSize");
    strbuf_printf(&b, "%u", EBS_BLOCK_SIZE);
    json_key(&b, &first, "Tags");
    strbuf_adds(&b, "[");
    for (size_t i = 0; i < n_rtags; i++) {
        strbuf_adds(&b, i ? ",{\"Key\":" : "{\"Key\":");
        json_write_string(&b, rtags[i].key);
        strbuf_adds(&b, ",\"Value\":");
        json_write_string(&b, rtags[i].value);
        strbuf_adds(&b, "}");
    }
    strbuf_adds(&b, "]");
    if (row->parent_id[0]) {
        json_key(&b, &first, "ParentSnapshotId");
        json_write_string(&b, row->parent_id);
    }
    if (row->description) {
        json_key(&b, &first, "Description");
        json_write_string(&b, row->description);
    }
    json_key(&b, &first, "SseType");
    json_write_string(&b, "none");
    strbuf_adds(&b, "}");
    registry_tag_list_free(rtags, n_rtags);
    registry_snapshot_free(row);
    set_json(c->resp, 201, &b);
    return 0;
}

/* ---- PutSnapshotBlock ---- */

static int put_block(struct call *c, const char *snap, const char *index_s)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    const char *len_s = header(c, "x-amz-Data-Length"), *sum = header(c, "x-amz-Checksum");
    const char *alg = header(c, "x-amz-Checksum-Algorithm"), *prog = header(c, "x-amz-Progress");
    char server_sum[EBS_CHECKSUM_SIZE];
    struct digest want;
    uint64_t index, len, progress = 0;
    int r;

    /* Everything about the request is checked before the snapshot is
     * looked up, and nothing is stored unless all of it holds. */
    r = check_block_path(c, snap, index_s, &index);
    if (r < 0)
        return r;
    if (!len_s)
        return VALIDATION(c, "INVALID_PARAMETER_VALUE", "x-amz-Data-Length is required.");
    if (!parse_u64(len_s, 0, UINT32_MAX, &len) || len != EBS_BLOCK_SIZE)
        return VALIDATION(c, "INVALID_PARAMETER_VALUE",
                          "x-amz-Data-Length is %.40s; a block is exactly %u bytes.", len_s,
                          EBS_BLOCK_SIZE);
    if (c->rq->body_len != len)
        return VALIDATION(c, "INVALID_PARAMETER_VALUE",
                          "The body is %zu bytes but x-amz-Data-Length says %" PRIu64 ".",
                          c->rq->body_len, len);
    if (!alg || strcmp(alg, "SHA256") != 0)
        return VALIDATION(c, "INVALID_PARAMETER_VALUE",
                          "x-amz-Checksum-Algorithm must be SHA256.");
    if (!sum)
        return VALIDATION(c, "INVALID_PARAMETER_VALUE", "x-amz-Checksum is required.");
    if (service_ebs_checksum_parse(sum, &want) < 0)
        return VALIDATION(c, "INVALID_PARAMETER_VALUE", "%s", error_message());
    if (prog && !parse_u64(prog, 0, 100, &progress))
        return VALIDATION(c, "INVALID_PARAMETER_VALUE",
                          "x-amz-Progress '%.40s' is not a number from 0 to 100.", prog);

    r = open_region(c, false, &rg);
    if (r < 0)
        return fail_errno(c, r, NULL);
    if (!rg)
        return fail(c, 404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND",
                    "The snapshot '%s' does not exist.", snap);
    r = service_ebs_expire(rg, snap, NULL);
    if (r == 0)
        r = service_ebs_put_block(rg, c->ctx->account, snap, index, c->rq->body,
                                  c->rq->body_len, &want, prog ? (int)progress : -1, server_sum);
    if (r < 0)
        return fail_errno(c, r, "INVALID_PARAMETER_VALUE");
    c->resp->status = 201;
    add_header(c->resp, "x-amz-Checksum", "%s", server_sum);
    add_header(c->resp, "x-amz-Checksum-Algorithm", "SHA256");
    c->resp->content_type = "application/json";
    return 0;
}

/* ---- CompleteSnapshot ---- */

static int complete_snapshot(struct call *c, const char *snap)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    const char *count_s = header(c, "x-amz-ChangedBlocksCount"), *sum = header(c, "x-amz-Checksum");
    const char *alg = header(c, "x-amz-Checksum-Algorithm");
    const char *method = header(c, "x-amz-Checksum-Aggregation-Method");
    enum snapshot_state state = SNAPSHOT_PENDING;
    struct digest agg;
    struct strbuf b = { 0 };
    uint64_t count;
    int r;

    if (!id_is_valid("snap", snap))
        return VALIDATION(c, "INVALID_SNAPSHOT_ID", "The snapshot id '%.64s' is malformed.", snap);
    if (!count_s)
        return VALIDATION(c, "INVALID_PARAMETER_VALUE", "x-amz-ChangedBlocksCount is required.");
    if (!parse_u64(count_s, 0, INT32_MAX, &count))
        return VALIDATION(c, "INVALID_PARAMETER_VALUE",
                          "x-amz-ChangedBlocksCount '%.40s' is not a count.", count_s);
    if (sum) {
        if (service_ebs_checksum_parse(sum, &agg) < 0)
            return VALIDATION(c, "INVALID_PARAMETER_VALUE", "%s", error_message());
        if (alg && strcmp(alg, "SHA256") != 0)
            return VALIDATION(c, "INVALID_PARAMETER_VALUE",
                              "x-amz-Checksum-Algorithm must be SHA256.");
        if (method && strcmp(method, "LINEAR") != 0)
            return VALIDATION(c, "INVALID_PARAMETER_VALUE",
                              "x-amz-Checksum-Aggregation-Method must be LINEAR.");
    } else if (alg || method) {
        return VALIDATION(c, "INVALID_PARAMETER_VALUE",
                          "A checksum algorithm or aggregation method needs x-amz-Checksum.");
    }
    if (c->rq->body_len)
        return VALIDATION(c, "INVALID_PARAMETER_VALUE", "CompleteSnapshot takes no body.");

    r = open_region(c, true, &rg);
    if (r == 0)
        r = service_ebs_expire(rg, snap, NULL);
    if (r == 0)
        r = service_ebs_complete(rg, c->ctx->account, snap, count, sum ? &agg : NULL, &state);
    if (r < 0)
        return fail_errno(c, r, "INVALID_PARAMETER_VALUE");
    strbuf_adds(&b, "{\"Status\":");
    json_write_string(&b, snapshot_state_to_string(state));
    strbuf_adds(&b, "}");
    set_json(c->resp, 202, &b);
    return 0;
}

/* ---- ListSnapshotBlocks ---- */

static int list_blocks(struct call *c, const char *snap)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    _cleanup_(blockmap_freep) struct blockmap *map = NULL;
    _cleanup_free_ uint64_t *blocks = NULL;
    struct registry_snapshot *row = NULL;
    struct strbuf b = { 0 };
    struct paging pg;
    uint8_t key[32];
    char tok[64], next[64];
    int64_t expiry = (int64_t)time(NULL) + TOKEN_LIFETIME;
    size_t n = 0;
    bool more = false;
    int r;

    r = open_region(c, false, &rg);
    if (r < 0)
        return fail_errno(c, r, NULL);
    r = completed_snapshot(c, rg, snap, &row, &map);
    if (r < 0)
        return r;
    r = service_ebs_token_key(rg, key);
    if (r == 0)
        r = parse_paging(c, key, "blocks", snap, NULL, &pg) < 0 ? 1 : 0;
    if (r == 0)
        r = service_ebs_blocks(map, pg.start, pg.max, &blocks, &n, &more);
    if (r != 0) {
        registry_snapshot_free(row);
        return r < 0 ? fail_errno(c, r, NULL) : -EINVAL;
    }
    strbuf_adds(&b, "{\"Blocks\":[");
    for (size_t i = 0; i < n; i++) {
        block_token(key, snap, blocks[i], expiry, tok);
        strbuf_printf(&b, "%s{\"BlockIndex\":%" PRIu64 ",\"BlockToken\":", i ? "," : "",
                       blocks[i]);
        json_write_string(&b, tok);
        strbuf_adds(&b, "}");
    }
    strbuf_adds(&b, "]");
    if (more)
        page_token(key, "blocks", snap, NULL, blocks[n - 1] + 1, next);
    list_tail(&b, row, expiry, more ? next : NULL);
    registry_snapshot_free(row);
    set_json(c->resp, 200, &b);
    return 0;
}

/* ---- ListChangedBlocks ---- */

static int list_changed_blocks(struct call *c, const char *second)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    _cleanup_(blockmap_freep) struct blockmap *m1 = NULL;
    _cleanup_(blockmap_freep) struct blockmap *m2 = NULL;
    _cleanup_free_ uint64_t *changed = NULL;
    struct registry_snapshot *row1 = NULL, *row2 = NULL;
    const char *first = query_get(&c->q, "firstSnapshotId");
    struct strbuf b = { 0 };
    struct paging pg;
    uint8_t key[32];
    char tok[64], next[64];
    int64_t expiry = (int64_t)time(NULL) + TOKEN_LIFETIME;
    size_t n = 0;
    bool more = false, related = true;
    int r;

    if (first && !id_is_valid("snap", first))
        return VALIDATION(c, "INVALID_SNAPSHOT_ID", "firstSnapshotId '%.64s' is malformed.",
                          first);
    r = open_region(c, false, &rg);
    if (r < 0)
        return fail_errno(c, r, NULL);
    r = completed_snapshot(c, rg, second, &row2, &m2);
    if (r < 0)
        return r;
    if (first) {
        r = completed_snapshot(c, rg, first, &row1, &m1);
        if (r < 0)
            goto out;
        r = service_ebs_related(rg, first, second, &related);
        if (r < 0) {
            r = fail_errno(c, r, NULL);
            goto out;
        }
        if (!related) {
            r = VALIDATION(c, "UNRELATED_SNAPSHOTS",
                           "The snapshots '%s' and '%s' are not of the same lineage.", first,
                           second);
            goto out;
        }
    }
    r = service_ebs_token_key(rg, key);
    if (r < 0) {
        r = fail_errno(c, r, NULL);
        goto out;
    }
    r = parse_paging(c, key, "changed", second, first, &pg);
    if (r < 0)
        goto out;
    /* Only this page's blocks are read (without a first snapshot, every
     * block of the second counts). */
    r = service_ebs_changed_blocks(rg, m1, m2, pg.start, pg.max, &changed, &n, &more);
    if (r < 0) {
        r = fail_errno(c, r, NULL);
        goto out;
    }
    strbuf_adds(&b, "{\"ChangedBlocks\":[");
    for (size_t i = 0; i < n; i++) {
        uint64_t k = changed[i];
        strbuf_printf(&b, "%s{\"BlockIndex\":%" PRIu64, i ? "," : "", k);
        if (m1 && service_ebs_block_present(m1, k)) {
            block_token(key, first, k, expiry, tok);
            strbuf_adds(&b, ",\"FirstBlockToken\":");
            json_write_string(&b, tok);
        }
        if (service_ebs_block_present(m2, k)) {
            block_token(key, second, k, expiry, tok);
            strbuf_adds(&b, ",\"SecondBlockToken\":");
            json_write_string(&b, tok);
        }
        strbuf_adds(&b, "}");
    }
    strbuf_adds(&b, "]");
    if (more)
        page_token(key, "changed", second, first, changed[n - 1] + 1, next);
    list_tail(&b, row2, expiry, more ? next : NULL);
    set_json(c->resp, 200, &b);
    r = 0;
out:
    registry_snapshot_free(row1);
    registry_snapshot_free(row2);
    return r;
}

/* ---- GetSnapshotBlock ---- */

static int get_block(struct call *c, const char *snap, const char *index_s)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    _cleanup_(blockmap_freep) struct blockmap *map = NULL;
    struct registry_snapshot *row = NULL;
    const char *tok = query_get(&c->q, "blockToken");
    uint8_t key[32], f[16];
    char sum[EBS_CHECKSUM_SIZE];
    struct digest d;
    uint64_t index;
    uint8_t *buf;
    int r;

    r = check_block_path(c, snap, index_s, &index);
    if (r < 0)
        return r;
    if (!tok)
        return VALIDATION(c, "INVALID_BLOCK_TOKEN", "blockToken is required.");
    r = open_region(c, false, &rg);
    if (r < 0)
        return fail_errno(c, r, NULL);
    r = completed_snapshot(c, rg, snap, &row, &map);
    if (r < 0)
        return r;
    registry_snapshot_free(row);
    r = service_ebs_token_key(rg, key);
    if (r < 0)
        return fail_errno(c, r, NULL);
    if (!token_decode("block", key, snap, NULL, tok, f, sizeof(f)) || get_be64(f) != index)
        return VALIDATION(c, "INVALID_BLOCK_TOKEN",
                          "The block token is not valid for block %" PRIu64 " of '%s'.", index,
                          snap);
    if ((int64_t)get_be64(f + 8) < (int64_t)time(NULL))
        return VALIDATION(c, "INVALID_BLOCK_TOKEN", "The block token has expired.");
    buf = xmalloc(EBS_BLOCK_SIZE);
    r = service_ebs_read_block(rg, map, index, buf);
    if (r < 0) {
        free(buf);
        return fail_errno(c, r, NULL);
    }
    sha256(buf, EBS_BLOCK_SIZE, &d);
    service_ebs_checksum_format(&d, sum);
    free(c->resp->body);
    c->resp->status = 200;
    c->resp->body = buf;
    c->resp->body_len = EBS_BLOCK_SIZE;
    c->resp->content_type = "application/octet-stream";
    add_header(c->resp, "x-amz-Data-Length", "%u", EBS_BLOCK_SIZE);
    add_header(c->resp, "x-amz-Checksum", "%s", sum);
    add_header(c->resp, "x-amz-Checksum-Algorithm", "SHA256");
    return 0;
}

/* ---- routing ---- */

bool api_ebs_path(const char *path)
{
    return strcmp(path, "/snapshots") == 0 || strncmp(path, "/snapshots/", 11) == 0;
}

size_t api_ebs_max_body(const char *method, const char *path)
{
    return strcmp(method, "PUT") == 0 ? EBS_BLOCK_SIZE : JSON_BODY_MAX;
}

/* Split the path into at most 5 segments (no empty ones; percent escapes
 * are not expected in ids and indexes and are refused). */
static int split(const char *path, char seg[5][72], size_t *ret_n)
{
    size_t n = 0;

    for (const char *s = path + 1; *s;) {
        const char *e = strchr(s, '/');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == 0 || len >= sizeof(seg[0]) || n == 5 || memchr(s, '%', len))
            return -EINVAL;
        memcpy(seg[n], s, len);
        seg[n][len] = '\0';
        n++;
        if (!e)
            break;
        s = e + 1;
    }
    *ret_n = n;
    return 0;
}

void api_ebs_handle(struct api_ctx *ctx, const struct api_ebs_request *rq,
                    struct api_ebs_response *resp)
{
    struct call c = { .ctx = ctx, .rq = rq, .resp = resp };
    char seg[5][72];
    size_t n = 0;
    const char *m = rq->method;
    bool get = strcmp(m, "GET") == 0, post = strcmp(m, "POST") == 0, put = strcmp(m, "PUT") == 0;
    int r;

    resp->status = 500;
    if (split(rq->path, seg, &n) < 0 || n == 0) {
        fail(&c, 404, "ResourceNotFoundException", NULL, "No EBS operation at '%.100s'.",
             rq->path);
        return;
    }
    r = query_parse(rq->query ? rq->query : "", rq->query ? strlen(rq->query) : 0, &c.q);
    if (r == 0)
        r = query_check_unique(&c.q);
    if (r < 0) {
        VALIDATION(&c, "INVALID_PARAMETER_VALUE", "%s", error_message());
        query_release(&c.q);
        return;
    }
    if (n == 1 && post) {
        ctx->action = "StartSnapshot";
        start_snapshot(&c);
    } else if (n == 4 && put && strcmp(seg[2], "blocks") == 0) {
        ctx->action = "PutSnapshotBlock";
        put_block(&c, seg[1], seg[3]);
    } else if (n == 3 && post && strcmp(seg[1], "completion") == 0) {
        ctx->action = "CompleteSnapshot";
        complete_snapshot(&c, seg[2]);
    } else if (n == 3 && get && strcmp(seg[2], "blocks") == 0) {
        ctx->action = "ListSnapshotBlocks";
        list_blocks(&c, seg[1]);
    } else if (n == 3 && get && strcmp(seg[2], "changedblocks") == 0) {
        ctx->action = "ListChangedBlocks";
        list_changed_blocks(&c, seg[1]);
    } else if (n == 4 && get && strcmp(seg[2], "blocks") == 0) {
        ctx->action = "GetSnapshotBlock";
        get_block(&c, seg[1], seg[3]);
    } else {
        fail(&c, 404, "ResourceNotFoundException", NULL, "No EBS operation for %s '%.100s'.", m,
             rq->path);
    }
    query_release(&c.q);
}

void api_ebs_sweep(const char *data_dir, const char *const *regions, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct region *rg = NULL;
        size_t expired = 0;
        int r = region_open(data_dir, regions[i], true, &rg);

        if (r == 0)
            r = service_ebs_expire(rg, NULL, &expired);
        if (r < 0 && r != -ENOENT)
            log_warning("region '%s': cannot check EBS uploads for their timeout: %s",
                        regions[i], error_message() ? error_message() : strerror(-r));
        else if (expired)
            log_info("region '%s': %zu EBS uploads timed out", regions[i], expired);
        region_free(rg);
    }
}
