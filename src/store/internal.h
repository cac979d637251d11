/* The backend table behind the chunk store.  Only src/store/ includes this.
 *
 * A backend keeps encoded objects (see store.c for the encoding) under
 * (kind, digest) names and knows nothing of compression or verification.
 * Filled with designated initialisers; every callback is mandatory unless
 * marked optional.  All return >= 0 or -errno.
 */
#ifndef KILN_STORE_INTERNAL_H
#define KILN_STORE_INTERNAL_H

#include "store/store.h"

struct store_backend {
    const char *name;

    int (*open)(const char *location, bool read_only, void **ret_priv);
    void (*close)(void *priv);

    /* Store `len` bytes atomically under (kind, id): the object is either
     * absent or complete, never partial.  `durable`: make it durable before
     * returning (otherwise sync() does).  1 written, 0 already present. */
    int (*put)(void *priv, enum store_kind kind, const struct digest *id, const void *data,
               size_t len, bool durable);

    /* Read up to bufsize bytes of the object from offset 0; returns the
     * object's full size (which may exceed bufsize) or -ENOENT. */
    ssize_t (*get)(void *priv, enum store_kind kind, const struct digest *id, void *buf,
                   size_t bufsize);

    /* Size of the object, or -ENOENT. */
    int (*stat)(void *priv, enum store_kind kind, const struct digest *id,
                uint64_t *ret_size, time_t *ret_mtime);

    int (*remove)(void *priv, enum store_kind kind, const struct digest *id);
    int (*list)(void *priv, enum store_kind kind, store_list_fn fn, void *userdata);

    /* Make all objects put so far durable. */
    int (*sync)(void *priv);

    /* Writer lock (shared) and gc lock (exclusive). */
    int (*lock)(void *priv, bool exclusive, int timeout_ms);
    void (*unlock)(void *priv);

    /* Optional: remove temporaries older than grace seconds. */
    int (*sweep_temporaries)(void *priv, time_t grace, bool dry_run, uint64_t *ret_files,
                             uint64_t *ret_bytes);

    /* Optional: objects that may be torn because their writer died before
     * sync(); fn is called for each (chunks first, then maps).  Then
     * recovery_needed() tells whether there was anything to recover, and
     * finish_recovery() forgets the evidence (the stale intent records
     * found by the walk, and only those) when `success`, or keeps it for
     * the next attempt. */
    int (*recovery_candidates)(void *priv, enum store_kind kind, store_list_fn fn,
                               void *userdata);
    bool (*recovery_needed)(void *priv);
    void (*finish_recovery)(void *priv, bool success);
};

extern const struct store_backend store_backend_dir;

#endif
