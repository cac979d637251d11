/* A small strict JSON reader, shared by the EBS direct API (StartSnapshot
 * bodies, a few hundred bytes) and the bake templates (src/bake/).  It
 * builds a tree and is written for being right, not fast: RFC 8259 exactly
 * (no comments, no trailing commas, no leading zeros, no control characters
 * in strings), UTF-8 checked, \u escapes with surrogate pairs, duplicate
 * object keys refused, nesting capped at JSON_MAX_DEPTH and the input at
 * JSON_MAX_INPUT.  Every refusal is -EINVAL with a message naming the
 * offset.  tests/fuzz/fuzz-json.c is its fuzz target.  The string writer for
 * the EBS rest-json responses, json_write_string(), lives in
 * src/api/json-write.c (declared in src/api/internal.h).
 */
#ifndef KILN_COMMON_JSON_H
#define KILN_COMMON_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "common/cleanup.h"

#define JSON_MAX_DEPTH 32
#define JSON_MAX_INPUT (1024 * 1024)

enum json_type {
    JSON_NULL,
    JSON_BOOL,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
};

struct json_value {
    enum json_type type;
    bool boolean;
    double number;
    bool is_integer; /* a number written without fraction or exponent that fits int64 */
    int64_t integer;
    char *string; /* JSON_STRING: NUL-terminated UTF-8 without NUL bytes */
    size_t len;
    /* JSON_ARRAY: n items; JSON_OBJECT: n items, keys[i] naming items[i] */
    size_t n;
    struct json_value *items;
    char **keys;
};

/* Parse exactly one JSON text (surrounding white space allowed) from
 * s[0..len).  Returns 0 and a tree to free with json_free(), or -EINVAL
 * with a message. */
int json_parse(const char *s, size_t len, struct json_value **ret);
void json_free(struct json_value *v);
DEFINE_CLEANUP_FREE(struct json_value, json_free)

/* The member `key` of object v, or NULL (also when v is not an object). */
const struct json_value *json_get(const struct json_value *v, const char *key);

/* "object", "string", ...: for messages. */
const char *json_type_name(enum json_type t);

/* Write `s` (NULL: "") to f as a JSON string literal: quotes, backslashes
 * and control characters escaped. */
void json_fput_string(FILE *f, const char *s);

/* Write v to f as compact JSON text (numbers: integers as such, others
 * with 17 significant digits). */
void json_fput_value(FILE *f, const struct json_value *v);

#endif
