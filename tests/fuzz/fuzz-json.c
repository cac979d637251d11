/* Fuzz target for the strict JSON reader (src/common/json.c): any bytes
 * either parse into a tree whose strings are valid UTF-8 without NUL, no
 * deeper than JSON_MAX_DEPTH, with distinct member names, or are refused
 * with a message; a string written back with json_write_string() parses
 * again to the same string. */
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "common/error.h"
#include "common/json.h"
#include "common/util.h"
#include "fuzz.h"

static void check(const struct json_value *v, int depth)
{
    if (depth > JSON_MAX_DEPTH)
        abort();
    switch (v->type) {
    case JSON_STRING: {
        struct strbuf b = { 0 };
        struct json_value *again = NULL;
        if (!v->string || strlen(v->string) != v->len ||
            !utf8_is_valid(v->string, v->len))
            abort();
        json_write_string(&b, v->string);
        if (json_parse(b.data, b.len, &again) < 0 || again->type != JSON_STRING ||
            strcmp(again->string, v->string) != 0)
            abort();
        json_free(again);
        strbuf_release(&b);
        break;
    }
    case JSON_OBJECT:
        for (size_t i = 0; i < v->n; i++) {
            if (!utf8_is_valid(v->keys[i], strlen(v->keys[i])))
                abort();
            for (size_t j = 0; j < i; j++)
                if (strcmp(v->keys[i], v->keys[j]) == 0)
                    abort();
            if (json_get(v, v->keys[i]) != &v->items[i])
                abort();
        }
        /* fall through */
    case JSON_ARRAY:
        for (size_t i = 0; i < v->n; i++)
            check(&v->items[i], depth + 1);
        break;
    case JSON_NUMBER:
        /* Both conversions round the same integer to nearest. */
        if (v->is_integer && (double)v->integer != v->number)
            abort();
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct json_value *v = NULL;

    error_clear();
    if (json_parse((const char *)data, size, &v) < 0) {
        if (!error_message())
            abort(); /* every refusal says why */
        return 0;
    }
    check(v, 0);
    json_free(v);
    return 0;
}
