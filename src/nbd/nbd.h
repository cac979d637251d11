/* kiln's NBD server: one export, served over unix sockets (and TCP on a
 * loopback address) to any number of connections, from a backend.
 *
 * The backend is a table of callbacks (after nbdkit's plugin struct) with
 * an opaque handle.  The server validates every request before it reaches
 * a backend (offset and length within the export, flags, read-only), so a
 * backend sees only requests that are in range.  Callbacks are called from
 * several threads at once (several requests of one connection run
 * concurrently, and connections run in parallel): a backend must be
 * thread-safe.  They return >= 0 or -errno (error_set() may add a message,
 * which structured replies carry to the client); the server maps errno to
 * NBD errors in one place (nbd_errno()).
 *
 * Capabilities follow from the table: a NULL pwrite makes the export
 * read-only, a NULL trim leaves NBD_FLAG_SEND_TRIM clear, a NULL zero
 * serves WRITE_ZEROES by writing zeros, a NULL extents reports everything
 * as data, a NULL cache answers CACHE with success and no effect.
 *
 * Backends: a completed snapshot (nbd_snapshot_backend_new, read-only,
 * served lazily from the chunk store through a bounded cache of decoded
 * chunks) and a volume (nbd_volume_backend_new, src/volume/).
 */
#ifndef KILN_NBD_NBD_H
#define KILN_NBD_NBD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cleanup.h"

struct blockmap;
struct store;

/* One extent of block status: `length` bytes from `offset` with
 * NBD_STATE_HOLE / NBD_STATE_ZERO flags (0: allocated data). */
struct nbd_extent {
    uint64_t offset;
    uint64_t length;
    uint32_t flags;
};

struct nbd_backend_ops {
    const char *name; /* for logs: "snapshot", "volume" */
    /* Read `count` bytes at `offset` into buf (holes read as zeros). */
    int (*pread)(void *h, void *buf, uint32_t count, uint64_t offset);
    /* Write; with fua the data is durable when this returns. */
    int (*pwrite)(void *h, const void *buf, uint32_t count, uint64_t offset, bool fua);
    /* Make every completed write durable. */
    int (*flush)(void *h);
    /* Discard (reads of the range may return zeros or old data). */
    int (*trim)(void *h, uint32_t count, uint64_t offset, bool fua);
    /* The range reads as zeros afterwards; may_trim: holes allowed. */
    int (*zero)(void *h, uint32_t count, uint64_t offset, bool may_trim, bool fua);
    /* Fetch the range into a local cache (a hint). */
    int (*cache)(void *h, uint32_t count, uint64_t offset);
    /* Describe [offset, offset + count) as consecutive extents starting at
     * `offset`: fill at most `max` (>= 1) into ret, at least one, and
     * return how many.  The last may end before offset + count (the
     * server asks again) or after it (the server clips). */
    int (*extents)(void *h, uint32_t count, uint64_t offset, struct nbd_extent *ret, size_t max);
    /* Release the handle (NULL: nothing to do). */
    void (*close)(void *h);
};

struct nbd_backend {
    const struct nbd_backend_ops *ops;
    void *handle;
    uint64_t size;
    bool read_only;      /* refuse writes even if ops->pwrite is set */
    bool can_multi_conn; /* flush on one connection covers writes of all */
};

/* ---- the server (server.c) ---- */

struct nbd_server;

struct nbd_server_options {
    const char *export_name;  /* the canonical name ("" also selects it) */
    const char *description;  /* may be NULL */
    const char *socket_path;  /* unix socket to create; NULL: none */
    const char *tcp_listen;   /* "127.0.0.1:PORT" (port 0: any); NULL: none */
    int threads;              /* request threads per connection; 0: default */
    int max_connections;      /* 0: default */
    int handshake_timeout_ms; /* a client silent this long in the handshake is
                               * dropped; 0: the default (30 s) */
};

/* Start serving `backend` (the server takes ownership of it and closes it
 * in nbd_server_free).  Listens before returning: clients may connect as
 * soon as this returns 0.  A socket path that exists is refused unless it
 * is a stale socket nobody listens on (-EADDRINUSE). */
int nbd_server_new(const struct nbd_server_options *opts, struct nbd_backend *backend,
                   struct nbd_server **ret);

/* The TCP port listened on (0 when not listening on TCP). */
unsigned nbd_server_port(const struct nbd_server *srv);

/* Stop: no new connections, the requests already read are finished and
 * answered, connections are closed, then the backend is flushed.  Returns
 * the flush's result.  Callable once, from any thread but a server one. */
int nbd_server_shutdown(struct nbd_server *srv);

/* Shut down (if not yet) and free; removes the unix socket.  NULL is ok. */
void nbd_server_free(struct nbd_server *srv);
DEFINE_CLEANUP_FREE(struct nbd_server, nbd_server_free)

struct nbd_server_stats {
    uint64_t connections;  /* accepted so far */
    uint64_t requests;     /* transmission requests handled */
    uint64_t errors;       /* of which answered with an error */
    uint64_t protocol_errors; /* connections dropped for breaking the protocol */
};

void nbd_server_get_stats(struct nbd_server *srv, struct nbd_server_stats *ret);

/* ---- backends ---- */

struct nbd_snapshot_cache_stats {
    uint64_t hits, misses;      /* chunk lookups */
    uint64_t bytes_fetched;     /* decoded bytes read from the store */
    uint64_t cached_bytes;      /* held now */
};

/* A completed snapshot as a read-only backend: reads go through the block
 * map and a cache (LRU, at most cache_bytes of decoded chunks, 0: 64 MiB)
 * to the store; holes read as zeros and report NBD_STATE_HOLE|ZERO.  Takes
 * ownership of `map`; `store` must outlive the backend (and the caller
 * holds its shared lock, so gc cannot remove chunks being served). */
int nbd_snapshot_backend_new(struct store *store, struct blockmap *map, size_t cache_bytes,
                             struct nbd_backend *ret);

/* The cache counters of a backend made by nbd_snapshot_backend_new (valid
 * until the server that took the backend is freed). */
void nbd_snapshot_backend_stats(const struct nbd_backend *b, struct nbd_snapshot_cache_stats *ret);

struct volume;

/* A volume (volume/volume.h) as a backend: every callback is the matching
 * volume_*() call.  Read-only when `read_only` or when the handle is.
 * Takes ownership of `v` (closed, which flushes, when the server is
 * freed). */
int nbd_volume_backend_new(struct volume *v, bool read_only, struct nbd_backend *ret);

#endif
