/* Form-encoded parameter parsing and the EC2 list accessors: see query.h.
 * Parsing is one pass over the input into freshly allocated strings; the
 * accessors scan the pairs (a request carries at most QUERY_MAX_PARAMS) and
 * sort what they collect by index. */
#include "api/query.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/hash.h"
#include "common/util.h"

/* Decode s[0..len) into a new string.  `what` names it in messages. */
static int decode(const char *s, size_t len, size_t cap, const char *what, char **ret)
{
    _cleanup_free_ char *out = NULL;
    size_t o = 0;

    if (len > 3 * cap)
        return error_set(EINVAL, "%s longer than %zu bytes", what, cap);
    out = xmalloc(len + 1);
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (len - i < 3 || hex_value(s[i + 1]) < 0 || hex_value(s[i + 2]) < 0)
                return error_set(EINVAL, "%s: invalid percent escape '%.*s'", what,
                                 (int)MIN(len - i, (size_t)3), s + i);
            c = (char)(hex_value(s[i + 1]) << 4 | hex_value(s[i + 2]));
            i += 2;
        }
        if (c == '\0')
            return error_set(EINVAL, "%s contains a NUL byte", what);
        out[o++] = c;
    }
    out[o] = '\0';
    if (o > cap)
        return error_set(EINVAL, "%s longer than %zu bytes", what, cap);
    if (!utf8_is_valid(out, o))
        return error_set(EINVAL, "%s is not valid UTF-8", what);
    *ret = TAKE_PTR(out);
    return 0;
}

void query_release(struct query *q)
{
    if (!q->borrowed)
        for (size_t i = 0; i < q->n; i++) {
            free(q->params[i].key);
            free(q->params[i].value);
        }
    free(q->params);
    q->params = NULL;
    q->n = 0;
}

int query_parse(const char *s, size_t len, struct query *ret)
{
    struct query q = { 0 };
    size_t alloc = 0, pos = 0;
    int r;

    while (pos < len) {
        const char *amp = memchr(s + pos, '&', len - pos);
        size_t end = amp ? (size_t)(amp - s) : len;
        const char *eq = memchr(s + pos, '=', end - pos);
        size_t klen = eq ? (size_t)(eq - (s + pos)) : end - pos;
        char *key = NULL, *value = NULL;

        if (end == pos) {
            pos = end + 1;
            continue;
        }
        if (q.n == QUERY_MAX_PARAMS) {
            query_release(&q);
            return error_set(EINVAL, "more than %d parameters", QUERY_MAX_PARAMS);
        }
        r = decode(s + pos, klen, QUERY_MAX_KEY_SIZE, "parameter name", &key);
        if (r == 0 && key[0] == '\0') {
            free(key);
            r = error_set(EINVAL, "empty parameter name");
        }
        if (r == 0 && eq) {
            r = decode(eq + 1, end - (size_t)(eq + 1 - s), QUERY_MAX_VALUE_SIZE, "value", &value);
            if (r < 0) {
                /* Name the parameter whose value was refused. */
                char msg[256];
                snprintf(msg, sizeof(msg), "%s", error_message() ? error_message() : "bad value");
                r = error_set(EINVAL, "parameter '%.100s': %s", key, msg);
                free(key);
            }
        } else if (r == 0) {
            value = xstrdup("");
        }
        if (r < 0) {
            query_release(&q);
            return r;
        }
        if (q.n == alloc) {
            alloc = alloc ? 2 * alloc : 16;
            q.params = xrealloc(q.params, alloc * sizeof(*q.params));
        }
        q.params[q.n].key = key;
        q.params[q.n].value = value;
        q.n++;
        pos = end + 1;
    }
    *ret = q;
    return 0;
}

int query_merge(struct query *to, struct query *from)
{
    if (to->borrowed || from->borrowed)
        return error_set(EINVAL, "cannot merge borrowed parameters");
    if (to->n + from->n > QUERY_MAX_PARAMS)
        return error_set(EINVAL, "more than %d parameters", QUERY_MAX_PARAMS);
    if (from->n == 0)
        return 0;
    to->params = xrealloc(to->params, (to->n + from->n) * sizeof(*to->params));
    memcpy(to->params + to->n, from->params, from->n * sizeof(*from->params));
    to->n += from->n;
    free(from->params);
    from->params = NULL;
    from->n = 0;
    return 0;
}

const char *query_get(const struct query *q, const char *key)
{
    for (size_t i = 0; i < q->n; i++)
        if (strcmp(q->params[i].key, key) == 0)
            return q->params[i].value;
    return NULL;
}

static int cmp_keys(const void *a, const void *b)
{
    return strcmp((*(const struct query_param *const *)a)->key,
                  (*(const struct query_param *const *)b)->key);
}

int query_check_unique(const struct query *q)
{
    _cleanup_free_ const struct query_param **v = NULL;

    if (q->n < 2)
        return 0;
    v = xmalloc(q->n * sizeof(*v));
    for (size_t i = 0; i < q->n; i++)
        v[i] = &q->params[i];
    qsort(v, q->n, sizeof(*v), cmp_keys);
    for (size_t i = 1; i < q->n; i++)
        if (strcmp(v[i - 1]->key, v[i]->key) == 0)
            return error_set(EINVAL, "parameter '%.100s' given more than once", v[i]->key);
    return 0;
}

/* If key is "<prefix>.<index>" followed by NUL (or by '.' when `dot`),
 * return 1 and the index and where the rest starts; 0 if it is not in the
 * list at all; -EINVAL for a malformed index. */
static int match_index(const char *key, const char *prefix, size_t plen, bool dot,
                       unsigned long *ret_index, const char **ret_rest)
{
    const char *p;
    unsigned long idx = 0;
    size_t digits = 0;

    if (strncmp(key, prefix, plen) != 0 || key[plen] != '.')
        return 0;
    p = key + plen + 1;
    while (*p >= '0' && *p <= '9') {
        if (++digits > 9)
            return error_set(EINVAL, "parameter '%.100s': list index too large", key);
        idx = idx * 10 + (unsigned long)(*p - '0');
        p++;
    }
    if (dot ? *p != '.' : *p != '\0') {
        /* "Prefix.Other" is another parameter, not a list entry, unless it
         * started with digits. */
        if (digits == 0)
            return 0;
        return dot ? 0 : error_set(EINVAL, "parameter '%.100s': malformed list index", key);
    }
    if (digits == 0 || idx == 0 || key[plen + 1] == '0')
        return error_set(EINVAL, "parameter '%.100s': list indices are 1, 2, 3, ...", key);
    *ret_index = idx;
    *ret_rest = dot ? p + 1 : p;
    return 1;
}

struct indexed {
    unsigned long index;
    size_t pos; /* position in the query, to keep the sort stable */
    const struct query_param *param;
    const char *rest;
};

static int cmp_indexed(const void *a, const void *b)
{
    const struct indexed *x = a, *y = b;

    if (x->index != y->index)
        return x->index < y->index ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Collect the pairs of list `prefix`, sorted by index. */
static int collect(const struct query *q, const char *prefix, bool dot, struct indexed **ret,
                   size_t *ret_n)
{
    _cleanup_free_ struct indexed *v = NULL;
    size_t n = 0, plen = strlen(prefix);

    for (size_t i = 0; i < q->n; i++) {
        unsigned long idx = 0;
        const char *rest = NULL;
        int r = match_index(q->params[i].key, prefix, plen, dot, &idx, &rest);
        if (r < 0)
            return r;
        if (r == 0)
            continue;
        if (!v)
            v = xmalloc(q->n * sizeof(*v));
        v[n++] = (struct indexed){ idx, i, &q->params[i], rest };
    }
    if (n > 1)
        qsort(v, n, sizeof(*v), cmp_indexed);
    *ret = TAKE_PTR(v);
    *ret_n = n;
    return 0;
}

int query_get_list(const struct query *q, const char *prefix, const char ***ret_values,
                   size_t *ret_n)
{
    _cleanup_free_ struct indexed *v = NULL;
    const char **values = NULL;
    size_t n;
    int r;

    r = collect(q, prefix, false, &v, &n);
    if (r < 0)
        return r;
    if (n > QUERY_MAX_LIST)
        return error_set(EINVAL, "list '%.100s' has more than %d entries", prefix,
                         QUERY_MAX_LIST);
    for (size_t i = 1; i < n; i++)
        if (v[i].index == v[i - 1].index)
            return error_set(EINVAL, "parameter '%.100s' given more than once",
                             v[i].param->key);
    if (n) {
        values = xmalloc(n * sizeof(*values));
        for (size_t i = 0; i < n; i++)
            values[i] = v[i].param->value;
    }
    *ret_values = values;
    *ret_n = n;
    return 0;
}

void query_items_free(struct query_item *items, size_t n)
{
    if (!items)
        return;
    for (size_t i = 0; i < n; i++)
        query_release(&items[i].fields);
    free(items);
}

int query_get_structs(const struct query *q, const char *prefix, struct query_item **ret_items,
                      size_t *ret_n)
{
    _cleanup_free_ struct indexed *v = NULL;
    struct query_item *items = NULL;
    size_t n, groups = 0;
    int r;

    r = collect(q, prefix, true, &v, &n);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || v[i].index != v[i - 1].index)
            groups++;
    if (groups > QUERY_MAX_LIST)
        return error_set(EINVAL, "list '%.100s' has more than %d entries", prefix,
                         QUERY_MAX_LIST);
    if (groups)
        items = xcalloc(groups, sizeof(*items));
    for (size_t i = 0, g = 0; i < n; g++) {
        size_t j = i;
        while (j < n && v[j].index == v[i].index)
            j++;
        items[g].index = v[i].index;
        items[g].fields.borrowed = true;
        items[g].fields.n = j - i;
        items[g].fields.params = xmalloc((j - i) * sizeof(struct query_param));
        for (size_t k = i; k < j; k++) {
            /* The borrowed key is the suffix after "Prefix.N.". */
            items[g].fields.params[k - i].key = (char *)v[k].rest;
            items[g].fields.params[k - i].value = v[k].param->value;
        }
        i = j;
    }
    *ret_items = items;
    *ret_n = groups;
    return 0;
}

int query_parse_bool(const char *s, bool *ret)
{
    if (strcmp(s, "true") == 0)
        *ret = true;
    else if (strcmp(s, "false") == 0)
        *ret = false;
    else
        return error_set(EINVAL, "'%.100s' is not a boolean (true or false)", s);
    return 0;
}
