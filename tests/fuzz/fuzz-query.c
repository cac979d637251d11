/* Fuzz target for the EC2 parameter parser (src/api/query.c): any bytes
 * either parse into pairs that are valid UTF-8 without NUL, within the
 * caps, or are refused with a message; the list accessors then never
 * return more than QUERY_MAX_LIST entries, in index order. */
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "api/query.h"
#include "common/error.h"
#include "common/util.h"
#include "fuzz.h"

static void check_query(const struct query *q, int depth)
{
    const char **v = NULL;
    struct query_item *items = NULL;
    size_t n = 0;

    for (size_t i = 0; i < q->n; i++)
        if (!utf8_is_valid(q->params[i].key, strlen(q->params[i].key)) ||
            !utf8_is_valid(q->params[i].value, strlen(q->params[i].value)))
            abort();
    (void)query_check_unique(q);
    (void)query_get(q, "Action");
    if (query_get_list(q, "Id", &v, &n) == 0) {
        if (n > QUERY_MAX_LIST || (n == 0) != (v == NULL))
            abort();
        free(v);
    }
    if (depth < 2 && query_get_structs(q, "Filter", &items, &n) == 0) {
        if (n > QUERY_MAX_LIST)
            abort();
        for (size_t i = 0; i < n; i++) {
            if (i && items[i].index <= items[i - 1].index)
                abort();
            check_query(&items[i].fields, depth + 1);
        }
        query_items_free(items, n);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct query q;

    error_clear();
    if (query_parse((const char *)data, size, &q) < 0) {
        if (!error_message())
            abort(); /* every refusal says why */
        return 0;
    }
    if (q.n > QUERY_MAX_PARAMS)
        abort();
    check_query(&q, 0);
    query_release(&q);
    return 0;
}
