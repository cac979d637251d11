/* The EC2 query protocol's parameters: an application/x-www-form-urlencoded
 * body or URL query string decoded into an ordered list of (key, value)
 * pairs, and the accessors the protocol's flattened shapes need: scalars
 * (`ImageId`), 1-based lists (`ImageId.N`) and lists of structures
 * (`Filter.N.Name` with `Filter.N.Value.M`).
 *
 * Every size that comes from the client is capped: the number of pairs, the
 * length of a key and of a value, and the number of list entries.  Keys and
 * values are valid UTF-8 without NUL bytes after decoding; anything else is
 * refused with -EINVAL and a message (error_set()).
 */
#ifndef KILN_API_QUERY_H
#define KILN_API_QUERY_H

#include <stdbool.h>
#include <stddef.h>

#define QUERY_MAX_PARAMS 10000
#define QUERY_MAX_KEY_SIZE 512
#define QUERY_MAX_VALUE_SIZE (1024 * 1024)
#define QUERY_MAX_LIST 1000
/* List indices are positive decimal numbers of at most this many digits. */
#define QUERY_MAX_INDEX 999999999UL

struct query_param {
    char *key;
    char *value;
};

/* An ordered list of decoded parameters.  A query from query_parse() owns
 * its strings; one from query_get_structs() borrows them from its parent and
 * stays valid only as long as the parent does. */
struct query {
    struct query_param *params;
    size_t n;
    bool borrowed;
};

/* One element of a list of structures: `Prefix.<index>.` stripped from the
 * keys of `fields`. */
struct query_item {
    unsigned long index;
    struct query fields;
};

/* Decode `len` bytes of form-encoded text (not necessarily NUL-terminated):
 * pairs separated by '&', key and value by the first '=', '+' is a space,
 * %XX a byte.  Empty pairs ("a=1&&b=2") are skipped; a pair without '='
 * has an empty value.  Returns 0 and fills *ret (release with
 * query_release()), or -EINVAL for a bad escape, invalid UTF-8, a NUL byte,
 * an empty key or a cap exceeded. */
int query_parse(const char *s, size_t len, struct query *ret);

/* Free what query_parse() allocated (the array only, for a borrowed query).
 * Leaves *q empty; accepts an empty query. */
void query_release(struct query *q);

/* Append the pairs of `from` to `to`, moving ownership; `from` is left
 * empty.  Returns 0 or -EINVAL when the cap on pairs would be exceeded. */
int query_merge(struct query *to, struct query *from);

/* The value of the first pair whose key is exactly `key`, or NULL.
 * Borrowed from q. */
const char *query_get(const struct query *q, const char *key);

/* -EINVAL (with a message naming it) if any key appears twice, else 0. */
int query_check_unique(const struct query *q);

/* The list `Prefix.1`, `Prefix.2`, ... in numeric order of the index,
 * gaps tolerated.  *ret_values is a new array (free() it) of strings
 * borrowed from q, NULL when the list is empty.  Returns 0, or -EINVAL for
 * an index that is not a positive decimal number without leading zeros,
 * a repeated index or more than QUERY_MAX_LIST entries. */
int query_get_list(const struct query *q, const char *prefix, const char ***ret_values,
                   size_t *ret_n);

/* The list of structures `Prefix.N.Field...` in numeric order of N.
 * *ret_items is a new array (query_items_free()) whose fields borrow from q.
 * Returns 0 or -EINVAL as for query_get_list(). */
int query_get_structs(const struct query *q, const char *prefix, struct query_item **ret_items,
                      size_t *ret_n);

/* Free an array from query_get_structs(); accepts NULL. */
void query_items_free(struct query_item *items, size_t n);

/* Decode s (NUL-terminated) as a boolean the way botocore sends them:
 * exactly "true" or "false".  Returns 0 or -EINVAL. */
int query_parse_bool(const char *s, bool *ret);

#endif
