/* kiln's EC2-compatible API server: the EC2 query protocol (form-encoded
 * requests, XML responses) over HTTP/1.1 (libmicrohttpd), every request
 * SigV4-verified, dispatched on Action through one action table, every
 * error mapped to an EC2 code and HTTP status in one place (errors.c).
 * Wire reference: ../shared/reference/ec2-api.md, section 3; what kiln
 * supports and where it differs from AWS: docs/api.md.
 *
 * Concurrency: one thread per connection, so a slow request never blocks
 * another; handlers share nothing but the options, which are read-only
 * while the server runs.
 */
#ifndef KILN_API_API_H
#define KILN_API_API_H

#include <stddef.h>

#include "api/sigv4.h"

#define API_DEFAULT_LISTEN "127.0.0.1:8773"
#define API_DEFAULT_MAX_BODY (1024 * 1024)
#define API_VERSION "2016-11-15"
#define API_MAX_REGIONS 64

struct api_server_options {
    const char *listen;     /* "ADDR:PORT" or "[V6ADDR]:PORT"; NULL: the default */
    const char *data_dir;   /* the data directory handlers open regions in */
    /* Credentials: the secret and account of an access key id (sigv4.h). */
    sigv4_lookup_fn lookup;
    void *ud;
    /* The regions served (valid region names); NULL/0: us-east-1 and
     * us-west-2. */
    const char *const *regions;
    size_t n_regions;
    size_t max_body;        /* 0: API_DEFAULT_MAX_BODY */
    unsigned max_connections; /* 0: 256 */
    unsigned shutdown_timeout; /* seconds to wait for in-flight requests; 0: 30 */
};

struct api_server;

/* Start serving in background threads.  The options (and the strings they
 * point to) must outlive the server.  Returns 0 and the server, or -errno
 * with a message (bad listen address, address in use). */
int api_server_new(const struct api_server_options *opts, struct api_server **ret);

/* The port actually listened on (useful with port 0). */
unsigned api_server_port(const struct api_server *s);

/* The regions served (the options' list, or the default one); borrowed. */
const char *const *api_server_regions(const struct api_server *s, size_t *ret_n);

/* Stop accepting connections, wait up to shutdown_timeout seconds for the
 * requests in flight to finish, then stop.  Returns 0, or -ETIMEDOUT when
 * requests were still running at the deadline (they are cut off). */
int api_server_shutdown(struct api_server *s);

/* Shut down (if still running) and free; accepts NULL. */
void api_server_free(struct api_server *s);

#endif
