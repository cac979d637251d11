/* ClientToken, shared by the actions that take one (CopyImage in copy.c,
 * RunInstances in instances.c): the digest of what a request asks for,
 * and the check of a token against what client_tokens recorded for it.
 *
 * Design notes:
 *
 * - The digest covers every parameter except ClientToken, Version, DryRun
 *   and X-Amz-* (query signing), Action included, sorted by name.  Keys
 *   are unique (the server refuses repeats), so the order is total.  Each
 *   parameter is hashed as "LEN:LEN:KEYVALUE": lengths first, so no two
 *   different lists hash the same text.  The digest is stored
 *   (client_tokens.params): changing it makes every recorded token a
 *   mismatch, so it must not change.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "common/error.h"
#include "common/hash.h"
#include "common/util.h"
#include "registry/jobs.h"
#include "service/service.h"

static bool digest_skips(const char *key)
{
    return strcmp(key, "ClientToken") == 0 || strcmp(key, "Version") == 0 ||
           strcmp(key, "DryRun") == 0 || strncmp(key, "X-Amz-", 6) == 0;
}

static int param_cmp(const void *a, const void *b)
{
    const struct query_param *x = *(const struct query_param *const *)a;
    const struct query_param *y = *(const struct query_param *const *)b;

    return strcmp(x->key, y->key);
}

void api_params_digest(const struct query *q, struct digest *ret)
{
    const struct query_param **p = xcalloc(q->n + 1, sizeof(*p));
    struct sha256_ctx *h = sha256_new();
    size_t n = 0;

    for (size_t i = 0; i < q->n; i++)
        if (!digest_skips(q->params[i].key))
            p[n++] = &q->params[i];
    qsort(p, n, sizeof(*p), param_cmp);
    for (size_t i = 0; i < n; i++) {
        char len[48];
        snprintf(len, sizeof(len), "%zu:%zu:", strlen(p[i]->key), strlen(p[i]->value));
        sha256_update(h, len, strlen(len));
        sha256_update(h, p[i]->key, strlen(p[i]->key));
        sha256_update(h, p[i]->value, strlen(p[i]->value));
    }
    sha256_final(h, ret);
    sha256_free(h);
    free(p);
}

int api_client_token_check(struct api_ctx *ctx, struct registry *reg,
                           const struct service_client_token *t, char ret_id[ID_MAX_SIZE])
{
    struct registry_client_token rec;
    int r = registry_client_token_get(reg, t->account, t->token, &rec);

    if (r == -ENOENT) {
        error_clear();
        ret_id[0] = '\0';
        return 0;
    }
    if (r < 0)
        return r;
    if (strcmp(rec.action, t->action) != 0 || !digest_equal(&rec.params, &t->params))
        return api_fail(ctx, API_ERR_IDEMPOTENT_MISMATCH,
                        "The client token '%.64s' was already used for a request with other "
                        "parameters (%s %s)",
                        t->token, rec.action, rec.resource_id);
    memcpy(ret_id, rec.resource_id, ID_MAX_SIZE);
    return 0;
}
