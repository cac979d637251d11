/* Private to src/api/: the request context handlers see, the action table,
 * the EC2 error vocabulary (mapped in errors.c) and small shared helpers. */
#ifndef KILN_API_INTERNAL_H
#define KILN_API_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "api/api.h"
#include "api/query.h"
#include "api/xml.h"

#define API_REQUEST_ID_SIZE 37 /* UUID v4 text with NUL */

/* true when s[0..len) is well-formed UTF-8 (no overlongs, surrogates or
 * code points beyond U+10FFFF). */
bool api_utf8_is_valid(const char *s, size_t len);

/* Fill buf with a random (version 4) UUID.  Returns 0 or -errno. */
int api_request_id(char buf[API_REQUEST_ID_SIZE]);

/* ---- errors (errors.c) ---- */

/* The kind of resource an operation was about, which turns a generic
 * condition (not found, malformed id, in use) into its EC2 code. */
enum api_resource {
    API_RES_NONE,
    API_RES_IMAGE,
    API_RES_SNAPSHOT,
    API_RES_VOLUME,
};

/* Conditions a handler or the server names explicitly; API_ERR_NONE means
 * "derive it from the errno". */
enum api_error {
    API_ERR_NONE,
    API_ERR_AUTH_FAILURE,
    API_ERR_UNAUTHORIZED,
    API_ERR_MISSING_ACTION,
    API_ERR_INVALID_ACTION,
    API_ERR_MISSING_PARAMETER,
    API_ERR_INVALID_PARAMETER_VALUE,
    API_ERR_INVALID_PARAMETER_COMBINATION,
    API_ERR_UNKNOWN_PARAMETER,
    API_ERR_MALFORMED_QUERY,
    API_ERR_UNSUPPORTED_VERSION,
    API_ERR_UNKNOWN_REGION,
    API_ERR_REQUEST_TOO_LARGE,
    API_ERR_METHOD_NOT_ALLOWED,
    API_ERR_DRY_RUN_OPERATION,
    API_ERR_NOT_FOUND,    /* with a resource kind */
    API_ERR_MALFORMED_ID, /* with a resource kind */
    API_ERR_IN_USE,       /* with a resource kind */
    API_ERR_DUPLICATE,    /* with a resource kind */
    API_ERR_OPERATION_NOT_PERMITTED,
    API_ERR_INTERNAL,
    API_ERR_UNAVAILABLE,
};

/* What goes on the wire for an error. */
struct api_error_reply {
    const char *code; /* EC2 error code */
    int status;       /* HTTP status */
    /* Whether the internal message may be shown to the client; when not,
     * `message` is the fixed public text and the detail only goes to the
     * log. */
    bool expose;
    const char *message;
};

/* THE mapping from (errno, explicit condition, resource kind) to an EC2
 * error code and HTTP status; docs/api.md lists it.  err is a -errno. */
void api_error_map(int err, enum api_error e, enum api_resource res,
                   struct api_error_reply *ret);

/* ---- requests and actions ---- */

struct api_server_state;

/* What a handler knows about the request.  Everything is borrowed for the
 * duration of the request. */
struct api_ctx {
    const char *request_id;
    const char *action;
    const char *account;  /* the 12-digit account the credential belongs to */
    const char *region;   /* from the credential scope, one of the server's */
    const char *data_dir; /* for region_open() (service.h) */
    const char *endpoint; /* "http://<Host header>", the URL the client used */
    const char *const *regions; /* every region served */
    size_t n_regions;
    bool dry_run;
    /* Set by api_fail() (or by the handler) to name the error precisely. */
    enum api_error error;
    enum api_resource resource;
};

/* Record an explicit error condition and a message for the client; returns
 * the matching -errno (-EINVAL for parameter errors), so that
 * `return api_fail(ctx, API_ERR_MISSING_PARAMETER, "...")` reads well. */
int api_fail(struct api_ctx *ctx, enum api_error e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A handler writes the members of its response into x (the envelope is
 * already open) and returns >= 0, or returns -errno having recorded the
 * error (api_fail() or error_set() plus ctx->resource). */
typedef int (*api_handler_fn)(struct api_ctx *ctx, const struct query *q, struct xml *x);

enum {
    /* The handler checks DryRun itself (after its own validation and
     * permission checks, via api_dry_run()); otherwise the dispatcher
     * answers DryRunOperation for it before calling it, which is right
     * for operations that only read. */
    API_ACTION_OWN_DRY_RUN = 1 << 0,
};

struct api_action {
    const char *name;
    api_handler_fn handler;
    unsigned flags;
};

/* The EC2 action named `name`, or NULL. */
const struct api_action *api_ec2_action_find(const char *name);

/* For handlers with API_ACTION_OWN_DRY_RUN: when the request is a dry run,
 * record DryRunOperation and return a negative value to return at once;
 * else 0. */
int api_dry_run(struct api_ctx *ctx);

#endif
