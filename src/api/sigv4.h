/* AWS Signature Version 4 verification, for both forms a client may use:
 * the Authorization header and query-string authentication (presigned
 * URLs).  The canonical request is built from the request exactly as it was
 * received (raw path and query, the received Host header including its
 * port, the raw body bytes), as the wire reference's section 3.4 says.
 *
 * Every failure returns -EACCES with a precise message (error_set()) for
 * the server's log; on the wire they all become 401 AuthFailure, so that a
 * client learns nothing about which check failed.
 */
#ifndef KILN_API_SIGV4_H
#define KILN_API_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SIGV4_MAX_SKEW 300                /* seconds either side of now */
#define SIGV4_MAX_EXPIRES (7 * 24 * 3600) /* longest X-Amz-Expires */
#define SIGV4_KEY_ID_SIZE 129             /* access key ids, with NUL */
#define SIGV4_SECRET_SIZE 129
#define SIGV4_ACCOUNT_SIZE 64
#define SIGV4_SCOPE_PART_SIZE 64          /* region and service names */

struct sigv4_header {
    const char *name; /* any case */
    const char *value;
};

/* A request as received.  Nothing is owned. */
struct sigv4_request {
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* raw (still percent-encoded) path, "/" for EC2 */
    const char *query;  /* raw query string without '?', or NULL */
    const struct sigv4_header *headers;
    size_t n_headers;
    const void *body;
    size_t body_len;
    time_t now;
};

/* Look up the secret of access key `akid`: write it (NUL-terminated) into
 * secret_out (size bytes) and the owning account into account_out
 * (SIGV4_ACCOUNT_SIZE bytes).  Returns 0, -ENOENT for an unknown key, or
 * another -errno. */
typedef int (*sigv4_lookup_fn)(const char *akid, char *secret_out, size_t size,
                               char *account_out, void *ud);

/* What a verified request was signed with: the credential scope. */
struct sigv4_result {
    char access_key_id[SIGV4_KEY_ID_SIZE];
    char account[SIGV4_ACCOUNT_SIZE];
    char region[SIGV4_SCOPE_PART_SIZE];
    char service[SIGV4_SCOPE_PART_SIZE];
    bool query_auth; /* signed in the query string */
    /* X-Amz-Content-SHA256 was UNSIGNED-PAYLOAD: the body is not covered
     * by the signature (the EBS direct API's PutSnapshotBlock, whose signed
     * x-amz-checksum header protects it instead; the caller decides where
     * that is acceptable).  Any other X-Amz-Content-SHA256 value must be
     * the body's hash, or the request fails. */
    bool unsigned_payload;
    bool checksum_signed; /* x-amz-checksum is among the signed headers */
};

/* The parts of an Authorization header (or of the X-Amz-* query
 * parameters).  Strings point into `buf`. */
struct sigv4_auth {
    char buf[2048];
    const char *access_key_id, *date, *region, *service; /* the scope */
    const char *signed_headers;                          /* "h1;h2;..." */
    const char *signature;                               /* 64 hex digits */
};

/* Parse an Authorization header value.  Returns 0, or -EACCES with a
 * message when it is not a well-formed AWS4-HMAC-SHA256 header (unknown
 * algorithm, missing or repeated component, malformed scope, signature not
 * 64 lowercase hex digits, signed header names not lowercase and sorted). */
int sigv4_parse_authorization(const char *value, struct sigv4_auth *ret);

/* Verify req.  Returns 0 and fills *ret, or -EACCES (a failed check, with
 * a message), or the -errno of lookup() for anything but an unknown key
 * (-ENOENT becomes -EACCES).  Checks, in order: exactly one of the two
 * forms, the scope's shape and service-independent rules, X-Amz-Date
 * within SIGV4_MAX_SKEW of now (and, for query auth, not expired), scope
 * date equal to the X-Amz-Date date, host signed, every signed header
 * present, the signature (constant-time compare). */
int sigv4_verify(const struct sigv4_request *req, sigv4_lookup_fn lookup, void *ud,
                 struct sigv4_result *ret);

/* The canonical request for req under `signed_headers` ("h1;h2"), with
 * X-Amz-Signature left out of the query when `query_auth`.  *ret is a new
 * string.  Returns 0 or -EACCES (a signed header missing, a malformed
 * query).  Exposed for tests and logs. */
int sigv4_canonical_request(const struct sigv4_request *req, const char *signed_headers,
                            bool query_auth, char **ret);

/* Compute the hex signature of req with `secret` for the given X-Amz-Date
 * (YYYYMMDDTHHMMSSZ), region and service, over `signed_headers`.  For
 * clients and tests; the server only verifies.  Returns 0 or -EACCES. */
int sigv4_sign(const struct sigv4_request *req, const char *secret, const char *amz_date,
               const char *region, const char *service, const char *signed_headers,
               bool query_auth, char ret_signature[65]);

#endif
