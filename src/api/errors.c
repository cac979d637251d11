/* The one place where an internal error becomes an EC2 error code and HTTP
 * status (the wire reference's section 3.3; the list is in docs/api.md).
 *
 * Rules: client mistakes are 4xx and never 5xx (clients retry 5xx); their
 * message is the one the handler recorded, which names the parameter or
 * the id.  Server faults are 500/503 with a fixed message, the detail
 * going to the log under the request id only.  Authentication failures
 * are all the same 401 AuthFailure, whatever check failed. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "api/internal.h"
#include "common/ids.h"
#include "common/error.h"

#define AUTH_MESSAGE "AWS was not able to validate the provided access credentials"
#define INTERNAL_MESSAGE "An internal error has occurred"

struct entry {
    const char *code;
    int status;
    bool expose;
};

static const struct entry fixed[] = {
    [API_ERR_AUTH_FAILURE] = { "AuthFailure", 401, false },
    [API_ERR_UNAUTHORIZED] = { "UnauthorizedOperation", 403, true },
    [API_ERR_MISSING_ACTION] = { "MissingAction", 400, true },
    [API_ERR_INVALID_ACTION] = { "InvalidAction", 400, true },
    [API_ERR_MISSING_PARAMETER] = { "MissingParameter", 400, true },
    [API_ERR_INVALID_PARAMETER_VALUE] = { "InvalidParameterValue", 400, true },
    [API_ERR_INVALID_PARAMETER_COMBINATION] = { "InvalidParameterCombination", 400, true },
    [API_ERR_UNKNOWN_PARAMETER] = { "UnknownParameter", 400, true },
    [API_ERR_MALFORMED_QUERY] = { "MalformedQueryString", 400, true },
    [API_ERR_UNSUPPORTED_VERSION] = { "InvalidParameterValue", 400, true },
    [API_ERR_UNKNOWN_REGION] = { "InvalidParameterValue", 400, true },
    [API_ERR_REQUEST_TOO_LARGE] = { "RequestEntityTooLarge", 413, true },
    [API_ERR_METHOD_NOT_ALLOWED] = { "InvalidAction", 405, true },
    [API_ERR_DRY_RUN_OPERATION] = { "DryRunOperation", 412, false },
    [API_ERR_OPERATION_NOT_PERMITTED] = { "OperationNotPermitted", 400, true },
    [API_ERR_INVALID_ID] = { "InvalidID", 400, true },
    [API_ERR_INVALID_PAGINATION_TOKEN] = { "InvalidPaginationToken", 400, true },
    [API_ERR_TAG_LIMIT_EXCEEDED] = { "TagLimitExceeded", 400, true },
    [API_ERR_RESOURCE_AUTH_FAILURE] = { "AuthFailure", 400, true },
    [API_ERR_IMAGE_UNAVAILABLE] = { "InvalidAMIID.Unavailable", 400, true },
    [API_ERR_AMI_NAME_MALFORMED] = { "InvalidAMIName.Malformed", 400, true },
    [API_ERR_INVALID_BLOCK_DEVICE_MAPPING] = { "InvalidBlockDeviceMapping", 400, true },
    [API_ERR_IDEMPOTENT_MISMATCH] = { "IdempotentParameterMismatch", 400, true },
    [API_ERR_KEY_FORMAT] = { "InvalidKey.Format", 400, true },
    [API_ERR_PERMISSION_DUPLICATE] = { "InvalidPermission.Duplicate", 400, true },
    [API_ERR_INSUFFICIENT_CAPACITY] = { "InsufficientInstanceCapacity", 500, true },
    [API_ERR_INTERNAL] = { "InternalError", 500, false },
    [API_ERR_UNAVAILABLE] = { "Unavailable", 503, false },
};

/* Codes that depend on the resource: [condition][resource]. */
static const char *const by_resource[][API_RES_COUNT] = {
    [API_ERR_NOT_FOUND] = { "InvalidParameterValue", "InvalidAMIID.NotFound",
                            "InvalidSnapshot.NotFound", "InvalidVolume.NotFound",
                            "InvalidInstanceID.NotFound", "InvalidKeyPair.NotFound",
                            "InvalidGroup.NotFound", "InvalidVpcID.NotFound",
                            "InvalidSubnetID.NotFound" },
    [API_ERR_MALFORMED_ID] = { "InvalidParameterValue", "InvalidAMIID.Malformed",
                               "InvalidSnapshotID.Malformed", "InvalidVolumeID.Malformed",
                               "InvalidInstanceID.Malformed", "InvalidParameterValue",
                               "InvalidGroupId.Malformed", "InvalidVpcID.Malformed",
                               "InvalidSubnetID.Malformed" },
    [API_ERR_IN_USE] = { "IncorrectState", "InvalidAMIID.InUse", "InvalidSnapshot.InUse",
                         "VolumeInUse", "IncorrectInstanceState", "InvalidParameterValue",
                         "DependencyViolation", "DependencyViolation", "DependencyViolation" },
    [API_ERR_DUPLICATE] = { "InvalidParameterValue", "InvalidAMIName.Duplicate",
                            "InvalidParameterValue", "InvalidParameterValue",
                            "InvalidParameterValue", "InvalidKeyPair.Duplicate",
                            "InvalidGroup.Duplicate", "InvalidParameterValue",
                            "InvalidParameterValue" },
};

/* The condition an errno stands for when the handler named none. */
static enum api_error from_errno(int err)
{
    switch (-err) {
    case EINVAL:
    case ERANGE:
    case ENAMETOOLONG:
        return API_ERR_INVALID_PARAMETER_VALUE;
    case ENOENT:
        return API_ERR_NOT_FOUND;
    case EEXIST:
        return API_ERR_DUPLICATE;
    case EROFS:
    case EPERM:
        return API_ERR_OPERATION_NOT_PERMITTED;
    case EACCES:
        return API_ERR_UNAUTHORIZED;
    /* A bare EBUSY is a lock held too long (the registry's busy timeout,
     * a store gc holds): retryable, so 503, which SDKs retry.  A resource
     * in use is named explicitly by its handler (API_ERR_IN_USE). */
    case EBUSY:
    case ENOSPC:
    case ETIMEDOUT:
    case EAGAIN:
        return API_ERR_UNAVAILABLE;
    case EMSGSIZE:
    case E2BIG:
        return API_ERR_REQUEST_TOO_LARGE;
    default: /* EBADMSG (corrupt data), EIO, ENOMEM, ...: our fault */
        return API_ERR_INTERNAL;
    }
}

void api_error_map(int err, enum api_error e, enum api_resource res,
                   struct api_error_reply *ret)
{
    if (e == API_ERR_NONE)
        e = from_errno(err);
    if ((unsigned)res >= API_RES_COUNT)
        res = API_RES_NONE;
    if (e == API_ERR_NOT_FOUND || e == API_ERR_MALFORMED_ID || e == API_ERR_IN_USE ||
        e == API_ERR_DUPLICATE) {
        ret->code = by_resource[e][res];
        ret->status = 400;
        ret->expose = true;
    } else if ((size_t)e < sizeof(fixed) / sizeof(fixed[0]) && fixed[e].code) {
        ret->code = fixed[e].code;
        ret->status = fixed[e].status;
        ret->expose = fixed[e].expose;
    } else {
        ret->code = "InternalError";
        ret->status = 500;
        ret->expose = false;
    }
    if (e == API_ERR_AUTH_FAILURE)
        ret->message = AUTH_MESSAGE;
    else if (e == API_ERR_DRY_RUN_OPERATION)
        ret->message = "Request would have succeeded, but DryRun flag is set.";
    else if (e == API_ERR_UNAVAILABLE)
        ret->message = "The service is unavailable. Please try again shortly.";
    else
        ret->message = INTERNAL_MESSAGE;
}

int api_fail(struct api_ctx *ctx, enum api_error e, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    int err;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ctx->error = e;
    switch (e) {
    case API_ERR_NOT_FOUND: err = ENOENT; break;
    case API_ERR_IN_USE: err = EBUSY; break;
    case API_ERR_DUPLICATE: err = EEXIST; break;
    case API_ERR_AUTH_FAILURE:
    case API_ERR_RESOURCE_AUTH_FAILURE:
    case API_ERR_UNAUTHORIZED: err = EACCES; break;
    case API_ERR_OPERATION_NOT_PERMITTED: err = EROFS; break;
    case API_ERR_TAG_LIMIT_EXCEEDED: err = ENOSPC; break;
    case API_ERR_DRY_RUN_OPERATION: err = EALREADY; break;
    case API_ERR_INTERNAL: err = EIO; break;
    case API_ERR_UNAVAILABLE: err = EAGAIN; break;
    default: err = EINVAL; break;
    }
    return error_set(err, "%s", msg);
}

int api_dry_run(struct api_ctx *ctx)
{
    if (!ctx->dry_run)
        return 0;
    return api_fail(ctx, API_ERR_DRY_RUN_OPERATION, "dry run");
}

int api_id_check(struct api_ctx *ctx, enum api_resource res, const char *prefix,
                 const char *id)
{
    if (id_is_valid(prefix, id))
        return 0;
    ctx->resource = res;
    return api_fail(ctx, API_ERR_MALFORMED_ID, "Invalid id: \"%.100s\" (expecting \"%s-...\")",
                    id, prefix);
}

char *api_join_ids(const char *const *ids, size_t n)
{
    struct strbuf b = { 0 };

    for (size_t i = 0; i < n && b.len < 300; i++)
        strbuf_printf(&b, "%s%s", i ? ", " : "", ids[i]);
    if (b.len >= 300)
        strbuf_adds(&b, ", ...");
    return strbuf_steal(&b);
}
