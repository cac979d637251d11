/* The strict JSON reader: see json.h. */
#include "common/json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/hash.h"
#include "common/strbuf.h"
#include "common/util.h"

struct parser {
    const char *s;
    size_t len, pos;
};

static int fail(struct parser *p, const char *what)
{
    return error_set(EINVAL, "malformed JSON at offset %zu: %s", p->pos, what);
}

static void skip_ws(struct parser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                               p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

static bool literal(struct parser *p, const char *word)
{
    size_t n = strlen(word);

    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
        return false;
    p->pos += n;
    return true;
}

static int hex4(struct parser *p, unsigned *ret)
{
    unsigned v = 0;

    if (p->len - p->pos < 4)
        return fail(p, "short \\u escape");
    for (int i = 0; i < 4; i++) {
        int h = hex_value(p->s[p->pos + (size_t)i]);
        if (h < 0)
            return fail(p, "bad \\u escape");
        v = v << 4 | (unsigned)h;
    }
    p->pos += 4;
    *ret = v;
    return 0;
}

static void put_utf8(struct strbuf *b, unsigned cp)
{
    char o[4];

    if (cp < 0x80) {
        strbuf_addc(b, (char)cp);
    } else if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        strbuf_add(b, o, 2);
    } else if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        strbuf_add(b, o, 3);
    } else {
        o[0] = (char)(0xf0 | cp >> 18);
        o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[3] = (char)(0x80 | (cp & 0x3f));
        strbuf_add(b, o, 4);
    }
}

/* A string literal at p->pos (the opening quote). */
static int parse_string(struct parser *p, char **ret, size_t *ret_len)
{
    struct strbuf b = { 0 }; /* bounded by the input, which json_parse() caps */
    size_t start;
    int r;

    p->pos++;
    for (;;) {
        if (p->pos >= p->len) {
            r = fail(p, "unterminated string");
            goto fail;
        }
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20) {
            r = fail(p, "control character in a string");
            goto fail;
        }
        if (c != '\\') {
            /* A run of plain bytes, checked as UTF-8 as a whole. */
            start = p->pos;
            while (p->pos < p->len && p->s[p->pos] != '"' && p->s[p->pos] != '\\' &&
                   (unsigned char)p->s[p->pos] >= 0x20)
                p->pos++;
            if (!utf8_is_valid(p->s + start, p->pos - start)) {
                p->pos = start;
                r = fail(p, "invalid UTF-8 in a string");
                goto fail;
            }
            strbuf_add(&b, p->s + start, p->pos - start);
            continue;
        }
        p->pos++;
        if (p->pos >= p->len) {
            r = fail(p, "unterminated escape");
            goto fail;
        }
        c = (unsigned char)p->s[p->pos++];
        switch (c) {
        case '"': strbuf_addc(&b, '"'); break;
        case '\\': strbuf_addc(&b, '\\'); break;
        case '/': strbuf_addc(&b, '/'); break;
        case 'b': strbuf_addc(&b, '\b'); break;
        case 'f': strbuf_addc(&b, '\f'); break;
        case 'n': strbuf_addc(&b, '\n'); break;
        case 'r': strbuf_addc(&b, '\r'); break;
        case 't': strbuf_addc(&b, '\t'); break;
        case 'u': {
            unsigned cp, lo;
            r = hex4(p, &cp);
            if (r < 0)
                goto fail;
            if (cp >= 0xdc00 && cp <= 0xdfff) {
                r = fail(p, "unpaired low surrogate");
                goto fail;
            }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (!literal(p, "\\u")) {
                    r = fail(p, "unpaired high surrogate");
                    goto fail;
                }
                r = hex4(p, &lo);
                if (r < 0)
                    goto fail;
                if (lo < 0xdc00 || lo > 0xdfff) {
                    r = fail(p, "high surrogate without a low one");
                    goto fail;
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (cp == 0) {
                r = fail(p, "NUL character in a string");
                goto fail;
            }
            put_utf8(&b, cp);
            break;
        }
        default:
            p->pos--;
            r = fail(p, "unknown escape");
            goto fail;
        }
    }
    *ret_len = b.len;
    *ret = strbuf_steal(&b);
    return 0;
fail:
    strbuf_release(&b);
    return r;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int parse_number(struct parser *p, struct json_value *v)
{
    size_t start = p->pos;
    bool integral = true;
    char buf[64];
    char *end;

    if (p->s[p->pos] == '-')
        p->pos++;
    if (p->pos >= p->len || !is_digit(p->s[p->pos]))
        return fail(p, "expected a digit");
    if (p->s[p->pos] == '0')
        p->pos++;
    else
        while (p->pos < p->len && is_digit(p->s[p->pos]))
            p->pos++;
    if (p->pos < p->len && p->s[p->pos] == '.') {
        integral = false;
        p->pos++;
        if (p->pos >= p->len || !is_digit(p->s[p->pos]))
            return fail(p, "expected a digit after '.'");
        while (p->pos < p->len && is_digit(p->s[p->pos]))
            p->pos++;
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        integral = false;
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
            p->pos++;
        if (p->pos >= p->len || !is_digit(p->s[p->pos]))
            return fail(p, "expected a digit in the exponent");
        while (p->pos < p->len && is_digit(p->s[p->pos]))
            p->pos++;
    }
    if (p->pos - start >= sizeof(buf)) {
        p->pos = start;
        return fail(p, "number too long");
    }
    memcpy(buf, p->s + start, p->pos - start);
    buf[p->pos - start] = '\0';
    v->type = JSON_NUMBER;
    v->number = strtod(buf, NULL);
    if (!isfinite(v->number)) {
        p->pos = start;
        return fail(p, "number out of range");
    }
    if (integral) {
        errno = 0;
        long long i = strtoll(buf, &end, 10);
        if (errno == 0 && *end == '\0') {
            v->is_integer = true;
            v->integer = i;
        }
    }
    return 0;
}

static void value_release(struct json_value *v)
{
    free(v->string);
    for (size_t i = 0; i < v->n; i++) {
        value_release(&v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
}

static int parse_value(struct parser *p, struct json_value *v, int depth);

static int parse_container(struct parser *p, struct json_value *v, int depth, bool object)
{
    size_t cap = 0;
    char close = object ? '}' : ']';
    int r;

    if (depth >= JSON_MAX_DEPTH)
        return fail(p, "nested too deeply");
    v->type = object ? JSON_OBJECT : JSON_ARRAY;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return 0;
    }
    for (;;) {
        char *key = NULL;
        size_t klen;

        skip_ws(p);
        if (object) {
            if (p->pos >= p->len || p->s[p->pos] != '"')
                return fail(p, "expected a member name");
            r = parse_string(p, &key, &klen);
            if (r < 0)
                return r;
            for (size_t i = 0; i < v->n; i++)
                if (strcmp(v->keys[i], key) == 0) {
                    free(key);
                    return fail(p, "duplicate member name");
                }
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') {
                free(key);
                return fail(p, "expected ':'");
            }
            p->pos++;
        }
        if (v->n == cap) {
            cap = cap ? 2 * cap : 4;
            v->items = xrealloc(v->items, cap * sizeof(*v->items));
            if (object)
                v->keys = xrealloc(v->keys, cap * sizeof(*v->keys));
        }
        memset(&v->items[v->n], 0, sizeof(v->items[v->n]));
        if (object)
            v->keys[v->n] = key;
        v->n++;
        r = parse_value(p, &v->items[v->n - 1], depth + 1);
        if (r < 0)
            return r;
        skip_ws(p);
        if (p->pos >= p->len)
            return fail(p, object ? "unterminated object" : "unterminated array");
        if (p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->s[p->pos] == close) {
            p->pos++;
            return 0;
        }
        return fail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int parse_value(struct parser *p, struct json_value *v, int depth)
{
    skip_ws(p);
    if (p->pos >= p->len)
        return fail(p, "expected a value");
    switch (p->s[p->pos]) {
    case '{': return parse_container(p, v, depth, true);
    case '[': return parse_container(p, v, depth, false);
    case '"':
        v->type = JSON_STRING;
        return parse_string(p, &v->string, &v->len);
    case 't':
    case 'f':
    case 'n':
        if (literal(p, "true")) {
            v->type = JSON_BOOL;
            v->boolean = true;
        } else if (literal(p, "false")) {
            v->type = JSON_BOOL;
        } else if (literal(p, "null")) {
            v->type = JSON_NULL;
        } else {
            return fail(p, "unknown literal");
        }
        return 0;
    default:
        if (p->s[p->pos] == '-' || is_digit(p->s[p->pos]))
            return parse_number(p, v);
        return fail(p, "unexpected character");
    }
}

int json_parse(const char *s, size_t len, struct json_value **ret)
{
    struct parser p = { .s = s, .len = len };
    struct json_value *v;
    int r;

    if (len > JSON_MAX_INPUT)
        return error_set(EINVAL, "JSON document of %zu bytes is larger than %d", len,
                         JSON_MAX_INPUT);
    v = xcalloc(1, sizeof(*v));
    r = parse_value(&p, v, 0);
    if (r == 0) {
        skip_ws(&p);
        if (p.pos != p.len)
            r = fail(&p, "trailing characters after the value");
    }
    if (r < 0) {
        json_free(v);
        return r;
    }
    *ret = v;
    return 0;
}

void json_free(struct json_value *v)
{
    if (!v)
        return;
    value_release(v);
    free(v);
}

const struct json_value *json_get(const struct json_value *v, const char *key)
{
    if (!v || v->type != JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < v->n; i++)
        if (strcmp(v->keys[i], key) == 0)
            return &v->items[i];
    return NULL;
}

const char *json_type_name(enum json_type t)
{
    switch (t) {
    case JSON_NULL: return "null";
    case JSON_BOOL: return "boolean";
    case JSON_NUMBER: return "number";
    case JSON_STRING: return "string";
    case JSON_ARRAY: return "array";
    case JSON_OBJECT: return "object";
    }
    return "value";
}

void json_fput_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

void json_fput_value(FILE *f, const struct json_value *v)
{
    switch (v->type) {
    case JSON_NULL: fputs("null", f); break;
    case JSON_BOOL: fputs(v->boolean ? "true" : "false", f); break;
    case JSON_NUMBER:
        if (v->is_integer)
            fprintf(f, "%lld", (long long)v->integer);
        else
            fprintf(f, "%.17g", v->number);
        break;
    case JSON_STRING: json_fput_string(f, v->string); break;
    case JSON_ARRAY:
        fputc('[', f);
        for (size_t i = 0; i < v->n; i++) {
            if (i)
                fputs(", ", f);
            json_fput_value(f, &v->items[i]);
        }
        fputc(']', f);
        break;
    case JSON_OBJECT:
        fputc('{', f);
        for (size_t i = 0; i < v->n; i++) {
            if (i)
                fputs(", ", f);
            json_fput_string(f, v->keys[i]);
            fputs(": ", f);
            json_fput_value(f, &v->items[i]);
        }
        fputc('}', f);
        break;
    }
}
