/* Layer cache keys: the canonical encoding of a step tree, the digests of
 * its input files, HMAC of sensitive values (bake/cache-key.h).
 *
 * Encoding (version 1; any change needs a new domain string, since keys
 * are stored in the registry):
 *   null  'n'             bool 't' | 'f'         int 'i' <8 bytes BE>
 *   string 's' <u64 BE len> <bytes>
 *   sensitive string 'h' <32 bytes HMAC-SHA-256(secret, value)>
 *   list  'l' <u64 BE n> items...
 *   map   'm' <u64 BE n> (<u64 BE keylen> <key> value)... sorted by key bytes
 *   file  'F' <path> <u32 BE mode> <32 bytes SHA-256 of content>
 *   dir   'D' <path> <u32 BE mode> <u64 BE n> entries...   (sorted names)
 *   link  'L' <path> <target>
 * where <path> and <target> are <u64 BE len> <bytes>.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bake/cache-key.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/json.h"
#include "common/util.h"

static void put_u64(struct sha256_ctx *ctx, uint64_t v)
{
    uint8_t b[8];

    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (uint8_t)v;
    sha256_update(ctx, b, sizeof(b));
}

static void put_u32(struct sha256_ctx *ctx, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};

    sha256_update(ctx, b, sizeof(b));
}

static void put_bytes(struct sha256_ctx *ctx, const void *p, size_t len)
{
    put_u64(ctx, len);
    sha256_update(ctx, p, len);
}

static void put_tag(struct sha256_ctx *ctx, char tag)
{
    sha256_update(ctx, &tag, 1);
}

/* HMAC-SHA-256 (RFC 2104) with a 32-byte key. */
static void hmac_sha256(const struct bake_cache_secret *key, const void *data, size_t len,
                        struct digest *ret)
{
    uint8_t ipad[64], opad[64];
    struct digest inner;
    struct sha256_ctx *ctx = sha256_new();

    memset(ipad, 0x36, sizeof(ipad));
    memset(opad, 0x5c, sizeof(opad));
    for (size_t i = 0; i < sizeof(key->b); i++) {
        ipad[i] ^= key->b[i];
        opad[i] ^= key->b[i];
    }
    sha256_update(ctx, ipad, sizeof(ipad));
    sha256_update(ctx, data, len);
    sha256_final(ctx, &inner);
    sha256_update(ctx, opad, sizeof(opad));
    sha256_update(ctx, inner.b, sizeof(inner.b));
    sha256_final(ctx, ret);
    sha256_free(ctx);
}

static bool ignored_field(const char *key)
{
    static const char *const ignored[] = BAKE_CACHE_IGNORED_FIELDS;

    for (size_t i = 0; i < ARRAY_SIZE(ignored); i++)
        if (strcmp(key, ignored[i]) == 0)
            return true;
    return false;
}

static int compare_keys(const char *a, const char *b)
{
    return strcmp(a, b); /* byte order: strcmp compares as unsigned char */
}

/* Sort indices of a map's keys (insertion sort on an index array; maps
 * in templates are small). */
static size_t *sorted_indices(const struct bake_value *v)
{
    size_t *idx = xcalloc(v->len ? v->len : 1, sizeof(*idx));

    for (size_t i = 0; i < v->len; i++) {
        size_t j = i;
        while (j > 0 && compare_keys(v->keys[idx[j - 1]], v->keys[i]) > 0) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = i;
    }
    return idx;
}

static int encode(struct sha256_ctx *ctx, const struct bake_value *v, bool top,
                  const struct bake_cache_secret *secret, char *where, size_t where_size,
                  size_t where_len, unsigned depth)
{
    int r;

    if (depth > BAKE_CACHE_DEPTH_MAX)
        return error_set(EINVAL, "'%s' nests deeper than %d levels", where, BAKE_CACHE_DEPTH_MAX);
    switch (v->type) {
    case BAKE_VALUE_NULL: put_tag(ctx, 'n'); return 0;
    case BAKE_VALUE_BOOL: put_tag(ctx, v->boolean ? 't' : 'f'); return 0;
    case BAKE_VALUE_INT:
        put_tag(ctx, 'i');
        put_u64(ctx, (uint64_t)v->integer);
        return 0;
    case BAKE_VALUE_STRING:
        if (!v->string && v->len)
            return error_set(EINVAL, "'%s' is a string without bytes", where);
        if (v->sensitive) {
            struct digest mac;
            if (!secret)
                return error_set(EINVAL, "'%s' is sensitive and no cache secret was given", where);
            hmac_sha256(secret, v->string ? v->string : "", v->len, &mac);
            put_tag(ctx, 'h');
            sha256_update(ctx, mac.b, sizeof(mac.b));
            return 0;
        }
        put_tag(ctx, 's');
        put_bytes(ctx, v->string ? v->string : "", v->len);
        return 0;
    case BAKE_VALUE_LIST:
        if (v->len && !v->items)
            return error_set(EINVAL, "'%s' is a list without items", where);
        put_tag(ctx, 'l');
        put_u64(ctx, v->len);
        for (size_t i = 0; i < v->len; i++) {
            snprintf(where + where_len, where_size - where_len, "[%zu]", i);
            r = encode(ctx, &v->items[i], false, secret, where, where_size, strlen(where),
                       depth + 1);
            where[where_len] = '\0';
            if (r < 0)
                return r;
        }
        return 0;
    case BAKE_VALUE_MAP: {
        _cleanup_free_ size_t *idx = NULL;
        size_t n = 0;

        if (v->len && (!v->items || !v->keys))
            return error_set(EINVAL, "'%s' is a map without entries", where);
        for (size_t i = 0; i < v->len; i++)
            if (!v->keys[i])
                return error_set(EINVAL, "'%s' has a map entry without a key", where);
        idx = sorted_indices(v);
        for (size_t i = 0; i < v->len; i++) {
            if (i > 0 && strcmp(v->keys[idx[i - 1]], v->keys[idx[i]]) == 0)
                return error_set(EINVAL, "'%s' has the key '%s' twice", where, v->keys[idx[i]]);
            if (!(top && ignored_field(v->keys[idx[i]])))
                n++;
        }
        put_tag(ctx, 'm');
        put_u64(ctx, n);
        for (size_t i = 0; i < v->len; i++) {
            const char *key = v->keys[idx[i]];
            if (top && ignored_field(key))
                continue;
            put_bytes(ctx, key, strlen(key));
            snprintf(where + where_len, where_size - where_len, "%s%s", where_len ? "." : "", key);
            r = encode(ctx, &v->items[idx[i]], false, secret, where, where_size, strlen(where),
                       depth + 1);
            where[where_len] = '\0';
            if (r < 0)
                return r;
        }
        return 0;
    }
    }
    return error_set(EINVAL, "'%s' has an invalid value type %d", where, (int)v->type);
}

int bake_cache_encode(struct sha256_ctx *ctx, const struct bake_value *v, bool top,
                      const struct bake_cache_secret *secret, const char *where)
{
    char path[512];

    snprintf(path, sizeof(path), "%s", where ? where : "");
    return encode(ctx, v, top, secret, path, sizeof(path), strlen(path), 0);
}

void bake_cache_key_base(const struct digest *root_map_id, struct digest *ret)
{
    static const char domain[] = "kiln-bake-base/1";
    struct sha256_ctx *ctx = sha256_new();

    sha256_update(ctx, domain, sizeof(domain) - 1);
    sha256_update(ctx, root_map_id->b, sizeof(root_map_id->b));
    sha256_final(ctx, ret);
    sha256_free(ctx);
}

/* ---- input files --------------------------------------------------------- */

struct walk {
    struct sha256_ctx *ctx;
    size_t files;
};

static int hash_file_content(int fd, const char *path, struct digest *ret)
{
    struct sha256_ctx *ctx = sha256_new();
    char buf[65536];
    int r = 0;

    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            r = error_set(errno, "cannot read input file '%s': %s", path, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        sha256_update(ctx, buf, (size_t)n);
    }
    if (r == 0)
        sha256_final(ctx, ret);
    sha256_free(ctx);
    return r;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* `full` is the path to open, `rel` the path that enters the key. */
static int walk_path(struct walk *w, const char *full, const char *rel, unsigned depth)
{
    struct stat st;

    if (depth > BAKE_CACHE_DEPTH_MAX)
        return error_set(EINVAL, "input '%s' nests deeper than %d directories", full,
                         BAKE_CACHE_DEPTH_MAX);
    if (++w->files > BAKE_CACHE_FILES_MAX)
        return error_set(E2BIG, "inputs hold more than %d files (at '%s')", BAKE_CACHE_FILES_MAX,
                         full);
    if (lstat(full, &st) < 0)
        return error_set(errno, "cannot stat input '%s': %s", full, strerror(errno));
    if (S_ISREG(st.st_mode)) {
        _cleanup_close_ int fd = open(full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        struct digest d;
        int r;

        if (fd < 0)
            return error_set(errno, "cannot open input '%s': %s", full, strerror(errno));
        r = hash_file_content(fd, full, &d);
        if (r < 0)
            return r;
        put_tag(w->ctx, 'F');
        put_bytes(w->ctx, rel, strlen(rel));
        put_u32(w->ctx, (uint32_t)(st.st_mode & 07777));
        sha256_update(w->ctx, d.b, sizeof(d.b));
        return 0;
    }
    if (S_ISLNK(st.st_mode)) {
        char target[4096];
        ssize_t n = readlink(full, target, sizeof(target));

        if (n < 0)
            return error_set(errno, "cannot read link '%s': %s", full, strerror(errno));
        if ((size_t)n >= sizeof(target))
            return error_set(ENAMETOOLONG, "link '%s' has a target too long", full);
        put_tag(w->ctx, 'L');
        put_bytes(w->ctx, rel, strlen(rel));
        put_bytes(w->ctx, target, (size_t)n);
        return 0;
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *dir = opendir(full);
        char **names = NULL;
        size_t n = 0, cap = 0;
        struct dirent *de;
        int r = 0;

        if (!dir)
            return error_set(errno, "cannot open input directory '%s': %s", full, strerror(errno));
        while ((errno = 0, de = readdir(dir))) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            if (n >= BAKE_CACHE_FILES_MAX) {
                r = error_set(E2BIG, "input directory '%s' holds more than %d entries", full,
                              BAKE_CACHE_FILES_MAX);
                break;
            }
            if (n == cap) {
                cap = cap ? 2 * cap : 16;
                names = xrealloc(names, cap * sizeof(*names));
            }
            names[n++] = xstrdup(de->d_name);
        }
        if (!r && errno)
            r = error_set(errno, "cannot list input directory '%s': %s", full, strerror(errno));
        closedir(dir);
        if (!r) {
            qsort(names, n, sizeof(*names), compare_names);
            put_tag(w->ctx, 'D');
            put_bytes(w->ctx, rel, strlen(rel));
            put_u32(w->ctx, (uint32_t)(st.st_mode & 07777));
            put_u64(w->ctx, n);
        }
        for (size_t i = 0; !r && i < n; i++) {
            _cleanup_free_ char *f = xasprintf("%s/%s", full, names[i]);
            _cleanup_free_ char *rl = xasprintf("%s/%s", rel, names[i]);
            r = walk_path(w, f, rl, depth + 1);
        }
        for (size_t i = 0; i < n; i++)
            free(names[i]);
        free(names);
        return r;
    }
    return error_set(EINVAL, "input '%s' is neither a file, a directory nor a symlink", full);
}

int bake_cache_hash_inputs(struct sha256_ctx *ctx, const char *base_dir, const char *const *inputs,
                           size_t n)
{
    struct walk w = {.ctx = ctx};

    put_u64(ctx, n);
    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ char *full = NULL;
        int r;

        if (!inputs[i] || !inputs[i][0])
            return error_set(EINVAL, "input %zu has an empty path", i);
        full = inputs[i][0] == '/' || !base_dir ? xstrdup(inputs[i])
                                                : xasprintf("%s/%s", base_dir, inputs[i]);
        r = walk_path(&w, full, inputs[i], 0);
        if (r < 0)
            return r;
    }
    return 0;
}

int bake_cache_key_step(const struct digest *prev, const struct bake_value *step,
                        const struct bake_value *env, const char *base_dir,
                        const char *const *inputs, size_t n_inputs,
                        const struct bake_cache_secret *secret, struct digest *ret)
{
    static const char domain[] = "kiln-bake-layer/1";
    static const struct bake_value null_value = {.type = BAKE_VALUE_NULL};
    struct sha256_ctx *ctx = sha256_new();
    int r;

    sha256_update(ctx, domain, sizeof(domain) - 1);
    sha256_update(ctx, prev->b, sizeof(prev->b));
    r = bake_cache_encode(ctx, step, true, secret, "step");
    if (r >= 0)
        r = bake_cache_encode(ctx, env ? env : &null_value, false, secret, "env");
    if (r >= 0)
        r = bake_cache_hash_inputs(ctx, base_dir, inputs, n_inputs);
    if (r >= 0)
        sha256_final(ctx, ret);
    sha256_free(ctx);
    return r < 0 ? r : 0;
}

/* ---- from JSON ---------------------------------------------------------- */

/* Release what copy() allocated under v (not v itself). */
static void value_release(struct bake_value *v)
{
    if (v->type != BAKE_VALUE_LIST && v->type != BAKE_VALUE_MAP)
        return;
    for (size_t i = 0; v->items && i < v->len; i++)
        value_release((struct bake_value *)&v->items[i]);
    free((void *)v->items);
    v->items = NULL;
}

static int copy(const struct json_value *j, struct bake_value *v, char *where, size_t size,
                size_t where_len, unsigned depth)
{
    struct bake_value *items;
    int r;

    memset(v, 0, sizeof(*v));
    if (depth > BAKE_CACHE_DEPTH_MAX)
        return error_set(EINVAL, "'%s' nests deeper than %d levels", where, BAKE_CACHE_DEPTH_MAX);
    switch (j->type) {
    case JSON_NULL: v->type = BAKE_VALUE_NULL; return 0;
    case JSON_BOOL:
        v->type = BAKE_VALUE_BOOL;
        v->boolean = j->boolean;
        return 0;
    case JSON_NUMBER:
        if (!j->is_integer)
            return error_set(EINVAL, "'%s' is a number that is not an integer", where);
        v->type = BAKE_VALUE_INT;
        v->integer = j->integer;
        return 0;
    case JSON_STRING:
        v->type = BAKE_VALUE_STRING;
        v->string = j->string ? j->string : "";
        v->len = j->string ? j->len : 0;
        return 0;
    case JSON_ARRAY:
    case JSON_OBJECT:
        v->type = j->type == JSON_ARRAY ? BAKE_VALUE_LIST : BAKE_VALUE_MAP;
        items = xcalloc(j->n ? j->n : 1, sizeof(*items));
        v->items = items;
        v->len = j->n;
        if (j->type == JSON_OBJECT)
            v->keys = (const char *const *)j->keys;
        for (size_t i = 0; i < j->n; i++) {
            if (j->type == JSON_ARRAY)
                snprintf(where + where_len, size - where_len, "[%zu]", i);
            else
                snprintf(where + where_len, size - where_len, "%s%s", where_len ? "." : "",
                         j->keys[i]);
            r = copy(&j->items[i], &items[i], where, size, strlen(where), depth + 1);
            where[where_len] = '\0';
            if (r < 0) {
                v->len = i + 1;
                value_release(v);
                return r;
            }
        }
        return 0;
    }
    return error_set(EINVAL, "'%s' has an invalid JSON type %d", where, (int)j->type);
}

int bake_value_from_json(const struct json_value *json, const char *where, struct bake_value **ret)
{
    struct bake_value *v = xcalloc(1, sizeof(*v));
    char path[512];
    int r;

    snprintf(path, sizeof(path), "%s", where ? where : "");
    r = copy(json, v, path, sizeof(path), strlen(path), 0);
    if (r < 0) {
        free(v);
        return r;
    }
    *ret = v;
    return 0;
}

void bake_value_free(struct bake_value *v)
{
    if (!v)
        return;
    value_release(v);
    free(v);
}

/* ---- the secret ------------------------------------------------------- */

int bake_cache_secret_load(const char *path, struct bake_cache_secret *ret)
{
    struct bake_cache_secret s;
    _cleanup_free_ char *tmp = NULL, *dir = NULL;
    int r;

    for (int attempt = 0; attempt < 2; attempt++) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        struct stat st;

        if (fd >= 0) {
            ssize_t n;
            if (fstat(fd, &st) < 0)
                return error_set(errno, "cannot stat cache secret '%s': %s", path, strerror(errno));
            if (st.st_size != (off_t)sizeof(s.b))
                return error_set(EBADMSG, "cache secret '%s' has %lld bytes, not %zu", path,
                                 (long long)st.st_size, sizeof(s.b));
            n = pread_full(fd, s.b, sizeof(s.b), 0);
            if (n < 0)
                return error_set((int)n, "cannot read cache secret '%s'", path);
            if ((size_t)n != sizeof(s.b))
                return error_set(EBADMSG, "cache secret '%s' is short", path);
            *ret = s;
            return 0;
        }
        if (errno != ENOENT || attempt > 0)
            return error_set(errno, "cannot open cache secret '%s': %s", path, strerror(errno));

        /* Create it: temp file, fsync, link into place (an existing one,
         * made by a concurrent process, wins), directory fsync. */
        r = random_bytes(s.b, sizeof(s.b));
        if (r < 0)
            return error_set(r, "cannot make a cache secret for '%s'", path);
        free(tmp);
        tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
        {
            _cleanup_close_ int out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (out < 0)
                return error_set(errno, "cannot create '%s': %s", tmp, strerror(errno));
            r = write_all(out, s.b, sizeof(s.b), 0);
            if (r >= 0 && fsync(out) < 0)
                r = -errno;
        }
        if (r >= 0 && link(tmp, path) < 0 && errno != EEXIST)
            r = -errno;
        unlink(tmp);
        if (r < 0)
            return error_set(r, "cannot write cache secret '%s': %s", path, strerror(-r));
        free(dir);
        dir = xstrdup(path);
        {
            char *slash = strrchr(dir, '/');
            if (slash == dir)
                slash[1] = '\0';
            else if (slash)
                *slash = '\0';
            else {
                free(dir);
                dir = xstrdup(".");
            }
        }
        r = fsync_dir(dir);
        if (r < 0)
            return error_set(r, "cannot sync the directory of cache secret '%s'", path);
        /* Read back what is in place (ours or a concurrent winner's). */
    }
    return error_set(EIO, "cannot load cache secret '%s'", path);
}
