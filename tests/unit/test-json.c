/* The strict JSON reader (src/common/json.c): what StartSnapshot bodies look
 * like parses into the expected tree; every kind of malformed input is
 * refused with a message; strings round-trip through json_write_string(). */
#include <errno.h>
#include <string.h>

#include "api/internal.h"
#include "common/error.h"
#include "common/json.h"
#include "tap.h"

static void refused(const char *text, const char *what)
{
    struct json_value *v = NULL;

    error_clear();
    is_int(json_parse(text, strlen(text), &v), -EINVAL, "refused: %s", what);
    ok(v == NULL && error_message() && strstr(error_message(), "JSON"), "  with a message: %s",
       error_message() ? error_message() : "(none)");
    json_free(v);
}

static void roundtrip(const char *s, const char *want_literal)
{
    struct strbuf b = { 0 };
    struct json_value *v = NULL;

    json_write_string(&b, s);
    is_str(b.data, want_literal, "write %s", want_literal);
    is_int(json_parse(b.data, b.len, &v), 0, "  parses back");
    ok(v && v->type == JSON_STRING && strcmp(v->string, s) == 0, "  to the same string");
    json_free(v);
    strbuf_release(&b);
}

int main(void)
{
    const char *doc = "{\"VolumeSize\": 8, \"Description\": \"d\\u00e9\\ud83d\\ude00\","
                      " \"Tags\": [{\"Key\": \"k\", \"Value\": \"v\"}], \"Timeout\": 60,"
                      " \"Encrypted\": false, \"KmsKeyArn\": null, \"x\": -1.5e3}";
    struct json_value *v = NULL;
    const struct json_value *t;

    is_int(json_parse(doc, strlen(doc), &v), 0, "a StartSnapshot body parses");
    if (!v)
        return done_testing();
    is_int(v->type, JSON_OBJECT, "an object");
    is_int(v->n, 7, "of 7 members");
    t = json_get(v, "VolumeSize");
    ok(t && t->type == JSON_NUMBER && t->is_integer && t->integer == 8, "VolumeSize 8");
    t = json_get(v, "Description");
    is_str(t ? t->string : NULL, "d\xc3\xa9\xf0\x9f\x98\x80", "escapes decode to UTF-8");
    t = json_get(v, "Tags");
    ok(t && t->type == JSON_ARRAY && t->n == 1, "Tags: one item");
    t = t ? json_get(&t->items[0], "Value") : NULL;
    is_str(t ? t->string : NULL, "v", "its Value");
    t = json_get(v, "Encrypted");
    ok(t && t->type == JSON_BOOL && !t->boolean, "Encrypted false");
    t = json_get(v, "KmsKeyArn");
    ok(t && t->type == JSON_NULL, "null");
    t = json_get(v, "x");
    ok(t && t->type == JSON_NUMBER && !t->is_integer && t->number == -1500, "-1.5e3");
    ok(json_get(v, "missing") == NULL, "an absent member is NULL");
    json_free(v);

    const char *big = "9223372036854775808";
    is_int(json_parse(big, strlen(big), &v), 0, "2^63 parses");
    ok(v && !v->is_integer, "but is not an int64");
    json_free(v);

    refused("", "empty input");
    refused("{", "an unterminated object");
    refused("[1,]", "a trailing comma");
    refused("{\"a\":1,}", "a trailing comma in an object");
    refused("{\"a\":1,\"a\":2}", "a duplicate member");
    refused("01", "a leading zero");
    refused("1.", "a bare decimal point");
    refused("-", "a lone minus");
    refused("1e400", "a number out of range");
    refused("\"\\ud800\"", "a lone high surrogate");
    refused("\"\\udc00\"", "a lone low surrogate");
    refused("\"\\u0000\"", "an escaped NUL");
    refused("\"\\x\"", "an unknown escape");
    refused("\"a\x01\"", "a control character");
    refused("\"\xc3\x28\"", "invalid UTF-8");
    refused("\"\xed\xa0\x80\"", "an encoded surrogate");
    refused("true false", "two values");
    refused("tru", "a cut literal");
    refused("{'a':1}", "single quotes");
    refused("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
            "]]]]]]]]]]]]]]]]]]]]]]]]]",
            "nesting deeper than 32");
    {
        const char nul[] = "{\"a\":\0}";
        error_clear();
        is_int(json_parse(nul, sizeof(nul) - 1, &v), -EINVAL, "refused: a NUL byte");
    }

    roundtrip("plain", "\"plain\"");
    roundtrip("q\"b\\s/", "\"q\\\"b\\\\s/\"");
    roundtrip("tab\tnl\n\x01", "\"tab\\u0009nl\\u000a\\u0001\"");
    roundtrip("caf\xc3\xa9", "\"caf\xc3\xa9\"");
    {
        struct strbuf b = { 0 };
        json_write_string(&b, "bad\xff");
        is_str(b.data, "\"bad\xef\xbf\xbd\"", "invalid UTF-8 is written as U+FFFD");
        strbuf_release(&b);
    }
    return done_testing();
}
