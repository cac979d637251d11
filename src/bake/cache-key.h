/* Layer cache keys (docs/baking.md, "Journal, janitor and layer cache";
 * the reference design's section 5.5).
 *
 *     K_0 = SHA-256("kiln-bake-base/1" || root block map id of the source)
 *     K_i = SHA-256("kiln-bake-layer/1" || K_{i-1} || canonical(step_i)
 *                   || canonical(env) || inputs(step_i))
 *
 * The step is given as a generic value tree (struct bake_value), so this
 * module does not depend on the template structs: the template module (or
 * the driver) converts an interpolated step into a tree.  The canonical
 * encoding is independent of key order and whitespace: every value is a
 * type byte and a length-prefixed body, map entries are sorted by key
 * bytes, and duplicate keys are refused.  At the top level of a step the
 * fields that do not change what the step does are left out
 * (BAKE_CACHE_IGNORED_FIELDS).  A string marked `sensitive` contributes
 * HMAC-SHA-256(secret, value) instead of the value: the value never enters
 * a key (nor the registry), yet changing it still changes the key.  The
 * secret is per data directory (bake_cache_secret_load()); keys are thus
 * not comparable across data directories, which is also what keeps a
 * leaked key from being a guessing oracle for the secret value.
 *
 * Input files (a step's `source`, `script`, `scripts`) are named by paths
 * relative to a base directory (the template's).  Each contributes its
 * relative path, its kind, its permission bits (mode & 07777) and its
 * content's SHA-256; a directory contributes its entries in sorted name
 * order, recursively; a symlink contributes its target (not followed).
 * Other file types are refused.  Ownership and times do not count.
 *
 * Functions return >= 0 or -errno with a message (error_set()) naming the
 * value's path in the tree (`steps value.inline[2]`) or the file.
 */
#ifndef KILN_BAKE_CACHE_KEY_H
#define KILN_BAKE_CACHE_KEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/hash.h"

/* Top-level step fields that do not enter the key. */
#define BAKE_CACHE_IGNORED_FIELDS                                                                  \
    {                                                                                              \
        "name", "description", "pause_before", "timeout", "max_retries", "cache"                   \
    }

#define BAKE_CACHE_DEPTH_MAX 64     /* nesting of values and of directories */
#define BAKE_CACHE_FILES_MAX 100000 /* files walked for one step */

enum bake_value_type {
    BAKE_VALUE_NULL,
    BAKE_VALUE_BOOL,
    BAKE_VALUE_INT,    /* JSON numbers without fraction or exponent */
    BAKE_VALUE_STRING, /* may hold any bytes, len gives its length */
    BAKE_VALUE_LIST,
    BAKE_VALUE_MAP,
};

/* A borrowed view: the tree is owned by whoever built it. */
struct bake_value {
    enum bake_value_type type;
    bool boolean;
    int64_t integer;
    const char *string;             /* STRING */
    size_t len;                     /* STRING: bytes; LIST and MAP: entries */
    bool sensitive;                 /* STRING: enters the key as an HMAC only */
    const struct bake_value *items; /* LIST and MAP values */
    const char *const *keys;        /* MAP keys (NUL-terminated), parallel to items */
};

struct json_value;

/* A tree copied from a parsed JSON value (common/json.h), for a step the
 * template module keeps as JSON after interpolation: numbers must be
 * integers (-EINVAL naming the place otherwise), no string is sensitive
 * (the caller sets `sensitive` on the strings that come from sensitive
 * variables).  The copy borrows the strings and keys of `json`, which must
 * outlive it; free it with bake_value_free(). */
int bake_value_from_json(const struct json_value *json, const char *where, struct bake_value **ret);
void bake_value_free(struct bake_value *v);

struct bake_cache_secret {
    uint8_t b[32];
};

/* Read the per-data-directory secret at `path`, creating it (32 random
 * bytes, mode 0600, written to a temp file, fsynced, renamed, directory
 * fsynced) when absent.  -EBADMSG a file of the wrong size. */
int bake_cache_secret_load(const char *path, struct bake_cache_secret *ret);

/* K_0 from the source image's root snapshot block map id. */
void bake_cache_key_base(const struct digest *root_map_id, struct digest *ret);

/* Append the canonical encoding of `v` to the hash (exposed for tests and
 * for a step digest in the manifest).  `top` drops the ignored fields of a
 * step's top-level map.  `where` names the value in messages.  -EINVAL a
 * duplicate key, an invalid type, nesting over BAKE_CACHE_DEPTH_MAX, a
 * sensitive value without a secret. */
int bake_cache_encode(struct sha256_ctx *ctx, const struct bake_value *v, bool top,
                      const struct bake_cache_secret *secret, const char *where);

/* Hash the input files `inputs[n]` (relative paths under `base_dir`) into
 * ctx, in the given order (the order of the step's fields is meaning). */
int bake_cache_hash_inputs(struct sha256_ctx *ctx, const char *base_dir, const char *const *inputs,
                           size_t n);

/* K_i from K_{i-1} (`prev`), the interpolated step, the execution
 * environment (architecture, root volume size and layout, agent protocol
 * major version, as a tree; may be NULL), and the step's input files.
 * `secret` may be NULL when the step holds no sensitive value. */
int bake_cache_key_step(const struct digest *prev, const struct bake_value *step,
                        const struct bake_value *env, const char *base_dir,
                        const char *const *inputs, size_t n_inputs,
                        const struct bake_cache_secret *secret, struct digest *ret);

#endif
