/* Parameters shared by the Describe* actions: Filter.N lists and EC2
 * wildcard matching, optional booleans, base64 blobs, and
 * MaxResults/NextToken paging with its opaque tokens (declared in
 * internal.h). */
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "api/internal.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/hash.h"
#include "common/util.h"
#include "registry/registry.h"
#include "service/service.h"

void api_filters_release(struct api_filters *fs)
{
    for (size_t i = 0; i < fs->n; i++)
        free(fs->f[i].values);
    free(fs->f);
    query_items_free(fs->items, fs->n);
}

/* Parse Filter.N.Name / Filter.N.Value.M; every name must be one of
 * `known` (NULL-terminated). */
int api_filters_parse(struct api_ctx *ctx, const struct query *q, const char *const *known,
                      struct api_filters *ret)
{
    struct api_filters fs = { 0 };
    int r;

    r = query_get_structs(q, "Filter", &fs.items, &fs.n);
    if (r < 0)
        return r;
    fs.f = xcalloc(fs.n ? fs.n : 1, sizeof(*fs.f));
    for (size_t i = 0; i < fs.n; i++) {
        struct api_filter *f = &fs.f[i];
        size_t k;

        f->name = query_get(&fs.items[i].fields, "Name");
        if (!f->name) {
            r = api_fail(ctx, API_ERR_MISSING_PARAMETER,
                         "The request must contain the parameter Filter.%lu.Name",
                         fs.items[i].index);
            goto fail;
        }
        for (k = 0; known[k]; k++) {
            size_t len = strlen(known[k]);
            if (strcmp(known[k], f->name) == 0)
                break;
            if (len && known[k][len - 1] == ':' && strncmp(known[k], f->name, len) == 0 &&
                f->name[len])
                break;
        }
        if (!known[k]) {
            r = api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE, "The filter '%.100s' is invalid",
                         f->name);
            goto fail;
        }
        r = query_get_list(&fs.items[i].fields, "Value", &f->values, &f->n_values);
        if (r < 0)
            goto fail;
    }
    *ret = fs;
    return 0;
fail:
    api_filters_release(&fs);
    return r;
}

/* true when every filter named `name` has a value matching `v` (EC2
 * wildcards: * and ?).  Filters with other names do not apply. */
bool api_filter_match_one(const struct api_filter *f, const char *v)
{
    for (size_t k = 0; k < f->n_values; k++)
        if (fnmatch(f->values[k], v, FNM_NOESCAPE) == 0)
            return true;
    return false;
}

bool api_filters_match(const struct api_filters *fs, const char *name, const char *v)
{
    for (size_t i = 0; i < fs->n; i++) {
        if (strcmp(fs->f[i].name, name) != 0)
            continue;
        if (!api_filter_match_one(&fs->f[i], v))
            return false;
    }
    return true;
}

bool api_filters_has(const struct api_filters *fs, const char *name)
{
    for (size_t i = 0; i < fs->n; i++)
        if (strcmp(fs->f[i].name, name) == 0)
            return true;
    return false;
}

static bool is_tag_filter(const char *name)
{
    return strncmp(name, "tag:", 4) == 0 || strcmp(name, "tag-key") == 0;
}

bool api_filters_need_tags(const struct api_filters *fs)
{
    for (size_t i = 0; i < fs->n; i++)
        if (is_tag_filter(fs->f[i].name))
            return true;
    return false;
}

bool api_filters_match_tags(const struct api_filters *fs, const struct registry_tag *tags,
                            size_t n)
{
    for (size_t i = 0; i < fs->n; i++) {
        const struct api_filter *f = &fs->f[i];
        bool ok = false;

        if (!is_tag_filter(f->name))
            continue;
        /* tag:KEY: the tag is there and its value matches; tag-key: some
         * key matches. */
        for (size_t k = 0; k < n && !ok; k++)
            ok = f->name[3] == ':' ? strcmp(tags[k].key, f->name + 4) == 0 &&
                                         api_filter_match_one(f, tags[k].value)
                                   : api_filter_match_one(f, tags[k].key);
        if (!ok)
            return false;
    }
    return true;
}

bool api_in_list(const char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0)
            return true;
    return false;
}

/* An optional boolean parameter. */
int api_base64_decode(const char *b64, size_t max, uint8_t **ret, size_t *ret_n)
{
    size_t n = strlen(b64), pad = 0;
    uint8_t *out;
    int got;

    if (n == 0 || n % 4 || n > 4 * ((max + 2) / 3))
        return -EMSGSIZE;
    if (b64[n - 1] == '=')
        pad = b64[n - 2] == '=' ? 2 : 1;
    out = xmalloc(n / 4 * 3 + 1);
    got = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)n);
    if (got < 0 || (size_t)got < pad) {
        free(out);
        return -EINVAL;
    }
    *ret = out;
    *ret_n = (size_t)got - pad;
    return 0;
}

int api_get_bool(struct api_ctx *ctx, const struct query *q, const char *name, bool *ret)
{
    const char *v = query_get(q, name);

    *ret = false;
    if (v && query_parse_bool(v, ret) < 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Value (%.100s) for parameter %s is invalid. Expected: 'true' or 'false'",
                        v, name);
    return 0;
}


/* ---- pagination ---- */

/* Tokens are the sort key of the last item returned, in lowercase hex:
 * opaque to clients, safe in query strings, and different on every page
 * because the key advances (botocore refuses a token seen twice). */
#define TOKEN_MAX_KEY 2048

char *api_token_make(const char *key)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(key);
    char *t = xmalloc(2 * n + 1);

    for (size_t i = 0; i < n; i++) {
        t[2 * i] = hex[(unsigned char)key[i] >> 4];
        t[2 * i + 1] = hex[(unsigned char)key[i] & 15];
    }
    t[2 * n] = '\0';
    return t;
}

/* Decode a token; NULL when it is not one of ours. */
static char *token_parse(const char *t)
{
    size_t n = strlen(t);
    char *key;

    if (n == 0 || n % 2 || n / 2 > TOKEN_MAX_KEY)
        return NULL;
    key = xmalloc(n / 2 + 1);
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hex_value(t[2 * i]), lo = hex_value(t[2 * i + 1]);
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(key);
            return NULL;
        }
        key[i] = (char)(hi << 4 | lo);
    }
    key[n / 2] = '\0';
    return key;
}

int api_paging_parse(struct api_ctx *ctx, const struct query *q, bool have_ids,
                     const char *ids_param, size_t *ret_max, char **ret_after)
{
    const char *max = query_get(q, "MaxResults");
    const char *token = query_get(q, "NextToken");
    unsigned long v = 0;
    char *after = NULL;

    if (max) {
        char *end;
        errno = 0;
        v = strtoul(max, &end, 10);
        if (max[0] < '0' || max[0] > '9' || *end || errno || v < API_MAX_RESULTS_MIN)
            return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                            "Value ( %.40s ) for parameter maxResults is invalid. Expecting a "
                            "value greater than %d.",
                            max, API_MAX_RESULTS_MIN - 1);
        if (v > API_MAX_RESULTS_MAX)
            v = API_MAX_RESULTS_MAX;
        if (have_ids)
            return api_fail(ctx, API_ERR_INVALID_PARAMETER_COMBINATION,
                            "The parameter %s cannot be used with the parameter maxResults",
                            ids_param);
    }
    if (token && token[0]) {
        after = token_parse(token);
        if (!after)
            return api_fail(ctx, API_ERR_INVALID_PAGINATION_TOKEN,
                            "Invalid pagination token: '%.100s'", token);
    }
    *ret_max = v;
    *ret_after = after;
    return 0;
}

/* ---- owners ---- */

bool api_is_account_id(const char *s)
{
    return strlen(s) == 12 && strspn(s, "0123456789") == 12;
}

int api_provider_account(const struct api_ctx *ctx, char ret[ACCOUNT_ID_SIZE])
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static char *cached_dir;
    static char cached_id[ACCOUNT_ID_SIZE];
    char id[ACCOUNT_ID_SIZE];
    bool hit = false;
    int r;

    ret[0] = '\0';
    if (!ctx->data_dir)
        return 0;
    pthread_mutex_lock(&lock);
    if (cached_dir && strcmp(cached_dir, ctx->data_dir) == 0) {
        memcpy(ret, cached_id, ACCOUNT_ID_SIZE);
        hit = true;
    }
    pthread_mutex_unlock(&lock);
    if (hit)
        return 0;
    r = service_provider_account(ctx->data_dir, id);
    if (r < 0)
        return r;
    pthread_mutex_lock(&lock);
    free(cached_dir);
    cached_dir = xstrdup(ctx->data_dir);
    memcpy(cached_id, id, ACCOUNT_ID_SIZE);
    pthread_mutex_unlock(&lock);
    memcpy(ret, id, ACCOUNT_ID_SIZE);
    return 0;
}

/* AWS's own aliases: nothing here is theirs.  kiln's alias is the provider
 * account's name, SERVICE_PROVIDER_ACCOUNT. */
static bool is_aws_owner_alias(const char *o)
{
    return strcmp(o, "amazon") == 0 || strcmp(o, "aws-marketplace") == 0 ||
           strcmp(o, "aws-backup-vault") == 0;
}

int api_owners_resolve(struct api_ctx *ctx, const char **owners, size_t n,
                       char ret_provider[ACCOUNT_ID_SIZE], const char ***ret, size_t *ret_n)
{
    _cleanup_free_ const char **accounts = NULL;
    const char *provider = ret_provider; /* the alias resolves to it: it outlives us */
    size_t k = 0;
    int r = api_provider_account(ctx, ret_provider);

    if (r < 0)
        return r;
    accounts = xcalloc(n + 1, sizeof(*accounts));
    for (size_t i = 0; i < n; i++) {
        const char *o = owners[i];
        if (is_aws_owner_alias(o))
            continue;
        if (strcmp(o, SERVICE_PROVIDER_ACCOUNT) == 0) {
            if (!provider[0])
                continue;
            o = provider;
        } else if (strcmp(o, "self") == 0) {
            o = ctx->account;
        } else if (!api_is_account_id(o)) {
            return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                            "Invalid owner: '%.100s' (expecting 'self', an alias or a 12-digit "
                            "account id)",
                            o);
        }
        accounts[k++] = o;
    }
    *ret = TAKE_PTR(accounts);
    *ret_n = k;
    return 0;
}

int api_users_resolve(struct api_ctx *ctx, const char **users, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(users[i], "self") == 0)
            users[i] = ctx->account;
        else if (strcmp(users[i], "all") != 0 && !api_is_account_id(users[i]))
            return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                            "Invalid user id: '%.100s' (expecting 'self', 'all' or a 12-digit "
                            "account id)",
                            users[i]);
    }
    return 0;
}

/* ---- explicit ids ---- */

int api_ids_must_exist(struct api_ctx *ctx, const char **ids, size_t n_ids, size_t n_rows,
                       bool (*seen)(const void *ud, size_t k, const char *id), const void *ud,
                       int (*not_found)(struct api_ctx *ctx, const char *const *ids, size_t n))
{
    _cleanup_free_ const char **missing = NULL;
    size_t n_missing = 0;

    if (!n_ids)
        return 0;
    missing = xcalloc(n_ids, sizeof(*missing));
    for (size_t i = 0; i < n_ids; i++) {
        bool found = false;
        for (size_t k = 0; k < n_rows && !found; k++)
            found = seen(ud, k, ids[i]);
        if (!found && !api_in_list(missing, n_missing, ids[i]))
            missing[n_missing++] = ids[i];
    }
    return n_missing ? not_found(ctx, missing, n_missing) : 0;
}

/* ---- the Describe preamble ---- */

int api_describe_begin(struct api_ctx *ctx, const struct query *q, bool have_ids,
                       const char *ids_param, const char *const *known, struct api_describe *d)
{
    struct api_describe b = {0};
    int r;

    r = api_paging_parse(ctx, q, have_ids, ids_param, &b.max, &b.after);
    if (r < 0)
        return r;
    r = api_filters_parse(ctx, q, known, &b.fs);
    if (r >= 0)
        r = api_dry_run(ctx);
    if (r >= 0)
        r = api_region_open(ctx, &b.rg);
    if (r < 0) {
        api_describe_release(&b);
        return r;
    }
    *d = b;
    return 0;
}

void api_describe_release(struct api_describe *d)
{
    region_free(d->rg);
    d->rg = NULL;
    api_filters_release(&d->fs);
    d->fs = (struct api_filters){0};
    free(d->after);
    d->after = NULL;
}

/* ---- paged listings ---- */

void api_candidates_init(struct api_candidates *cs, size_t n_rows)
{
    cs->c = xcalloc(n_rows ? n_rows : 1, sizeof(*cs->c));
    cs->n = 0;
}

static int candidate_load_tags(struct region *rg, struct api_candidate *c)
{
    int r;

    if (c->tags_loaded)
        return 0;
    if (c->owned) {
        r = registry_tag_list(rg->reg, c->id, &c->tags, &c->n_tags);
        if (r < 0)
            return r;
    }
    c->tags_loaded = true;
    return 0;
}

int api_candidates_add(struct api_candidates *cs, struct region *rg, const struct api_filters *fs,
                       const char *after, int64_t time, const char *id, void *row, bool owned)
{
    struct api_candidate *c = &cs->c[cs->n];
    int r;

    snprintf(c->key, sizeof(c->key), "%020" PRId64 ".%s", time, id);
    if (after && strcmp(c->key, after) <= 0)
        return 0;
    c->row = row;
    c->id = id;
    c->owned = owned;
    if (api_filters_need_tags(fs)) {
        r = candidate_load_tags(rg, c);
        if (r < 0) {
            memset(c, 0, sizeof(*c));
            return r;
        }
        if (!api_filters_match_tags(fs, c->tags, c->n_tags)) {
            registry_tag_list_free(c->tags, c->n_tags);
            memset(c, 0, sizeof(*c));
            return 0;
        }
    }
    cs->n++;
    return 1;
}

int api_candidates_page(struct api_candidates *cs, struct region *rg, size_t max, size_t *ret_n)
{
    size_t n_page = max && cs->n > max ? max : cs->n;
    int r;

    for (size_t i = 0; i < n_page; i++) {
        r = candidate_load_tags(rg, &cs->c[i]);
        if (r < 0)
            return r;
    }
    *ret_n = n_page;
    return 0;
}

void api_candidates_write_token(struct xml *x, const struct api_candidates *cs, size_t n_page)
{
    if (n_page < cs->n) {
        _cleanup_free_ char *token = api_token_make(cs->c[n_page - 1].key);
        xml_element(x, "nextToken", token);
    }
}

void api_candidates_release(struct api_candidates *cs)
{
    for (size_t i = 0; cs->c && i < cs->n; i++)
        registry_tag_list_free(cs->c[i].tags, cs->c[i].n_tags);
    free(cs->c);
    cs->c = NULL;
    cs->n = 0;
}
