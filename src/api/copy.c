/* CopyImage and CopySnapshot (the wire reference's sections 1, 3 and 4):
 * copies from a served region into the region the request is signed for,
 * over service_image_copy() and service_snapshot_copy() (src/service/
 * copy.c, which owns the ordering and what moves).
 *
 * Design notes:
 *
 * - The destination is the signed region, always.  CopySnapshot's
 *   DestinationRegion (which botocore fills in, with a PresignedUrl, when
 *   the source region differs) must name that region; the PresignedUrl is
 *   accepted and ignored: one server holds every region, so it has no use
 *   for a request signed for the source region.
 *
 * - The caller must be able to see the source (an image it owns, one that
 *   is public or shared with it; a snapshot it owns): anything else is
 *   NotFound, as in DescribeImages.  An image it does not own is copied
 *   only when it may also read every mapped snapshot (createVolumePermission
 *   for it or "all"), as in EC2; else AuthFailure.  The copy belongs to the
 *   caller, is private, and has new ids.
 *
 * - CopyImageTags copies the source image's tags only when the caller owns
 *   it (the tags are the owner's); TagSpecification tags are added and
 *   replace copied tags with the same key.
 *
 * - Asynchronous, as EC2: the handler registers the new rows `pending`
 *   with a job (service_*_copy_start()) and answers with the new id; the
 *   job runner of `kiln serve` copies the data and makes them `available`
 *   / `completed`, or `failed` / `error` with the reason (src/service/
 *   copy.c, jobs.c).
 *
 * - ClientToken (CopyImage; the only served action EC2 gives one): the
 *   first successful request of an account with a token records the token,
 *   a digest of its parameters and the new image id, in the transaction
 *   that accepts the copy.  The same token again with the same parameters
 *   answers that id and copies nothing; with other parameters it is
 *   IdempotentParameterMismatch.  The digest covers Action and every
 *   parameter except ClientToken, Version, DryRun and X-Amz-* (query
 *   signing), sorted by name (client-token.c).  A failed request records
 *   nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/ids.h"
#include "common/hash.h"
#include "common/util.h"
#include "registry/images.h"
#include "registry/jobs.h"
#include "service/service.h"

#define DESCRIPTION_MAX 255

struct tag_list {
    struct registry_tag *t; /* strings borrowed */
    size_t n;
};

/* SourceRegion: present and one of the regions served. */
static int get_source_region(struct api_ctx *ctx, const struct query *q, const char **ret)
{
    const char *v = query_get(q, "SourceRegion");

    if (!v)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter SourceRegion");
    if (!api_in_list(ctx->regions, ctx->n_regions, v))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Invalid source region: '%.100s' is not a region this server serves", v);
    *ret = v;
    return 0;
}

static int check_common(struct api_ctx *ctx, const struct query *q, const char **ret_desc)
{
    const char *desc = query_get(q, "Description");
    bool encrypted;
    int r;

    if (desc && strlen(desc) > DESCRIPTION_MAX)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Value for parameter Description is too long (at most %d characters)",
                        DESCRIPTION_MAX);
    r = api_get_bool(ctx, q, "Encrypted", &encrypted);
    if (r < 0)
        return r;
    if (encrypted)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "kiln does not support encrypted copies (Encrypted)");
    *ret_desc = desc;
    return 0;
}

/* Open a served region read-only; NULL (and 0) when it has no data. */
static int open_source(struct api_ctx *ctx, const char *name, struct region **ret)
{
    int r = region_open(ctx->data_dir, name, true, ret);

    if (r == -ENOENT) {
        *ret = NULL;
        return 0;
    }
    return r;
}

/* ---- CopyImage ---- */

int api_copy_image(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_(region_freep) struct region *src = NULL;
    _cleanup_(region_freep) struct region *dst = NULL;
    struct registry_image *img = NULL;
    struct tag_list image_tags = {0}, snapshot_tags = {0}, all_tags = {0};
    struct service_image_copy_options o = {.owner = ctx->account};
    struct service_client_token token = { 0 };
    const char *id = query_get(q, "SourceImageId");
    const char *region = NULL, *desc = NULL;
    char new_id[ID_MAX_SIZE] = "";
    bool copy_tags;
    int r;

    if (!id)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter SourceImageId");
    r = api_image_id_check(ctx, id);
    if (r < 0)
        return r;
    r = get_source_region(ctx, q, &region);
    if (r < 0)
        return r;
    o.name = query_get(q, "Name");
    if (!o.name)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter Name");
    if (!image_name_is_valid(o.name))
        return api_fail(ctx, API_ERR_AMI_NAME_MALFORMED,
                        "AMI names must be between 3 and 128 characters long, and may contain "
                        "letters, numbers, '(', ')', '.', '-', '/' and '_'");
    r = check_common(ctx, q, &desc);
    if (r < 0)
        return r;
    o.description = desc;
    r = api_get_bool(ctx, q, "CopyImageTags", &copy_tags);
    if (r < 0)
        return r;
    {
        const struct api_tag_target targets[] = {
            {"image", &image_tags.t, &image_tags.n},
            {"snapshot", &snapshot_tags.t, &snapshot_tags.n},
        };
        r = api_tag_specs_parse(ctx, q, targets, 2);
    }
    if (r < 0)
        goto out;
    token.token = query_get(q, "ClientToken");
    if (token.token) {
        if (!client_token_is_valid(token.token)) {
            r = api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                         "Value for parameter ClientToken is invalid: 1 to %d printable ASCII "
                         "characters",
                         CLIENT_TOKEN_MAX);
            goto out;
        }
        token.account = ctx->account;
        token.action = ctx->action;
        api_params_digest(q, &token.params);
        o.token = &token;
    }
    /* A repeated request answers the first one's id, whatever happened to
     * its source since (EC2's idempotency).  A dry run records nothing. */
    if (o.token && !ctx->dry_run) {
        r = region_open(ctx->data_dir, ctx->region, false, &dst);
        if (r >= 0)
            r = api_client_token_check(ctx, dst->reg, &token, new_id);
        if (r < 0)
            goto out;
        if (new_id[0]) {
            xml_element(x, "imageId", new_id);
            goto out;
        }
        region_free(TAKE_PTR(dst));
    }

    r = open_source(ctx, region, &src);
    if (r < 0)
        goto out;
    r = src ? registry_image_get(src->reg, id, &img) : -ENOENT;
    if (r == -ENOENT || (r == 0 && !api_image_visible(ctx, img))) {
        r = api_image_not_found(ctx, &id, 1);
        goto out;
    }
    if (r < 0)
        goto out;
    if (img->state != IMAGE_AVAILABLE) {
        r = api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                     "Image '%s' is %s; only an available image can be copied", id,
                     image_state_to_string(img->state));
        goto out;
    }
    /* Copied tags first: TagSpecification replaces the same keys. */
    if (copy_tags && strcmp(img->owner, ctx->account) == 0)
        for (size_t i = 0; i < img->n_tags; i++)
            api_tags_add(&all_tags.t, &all_tags.n, img->tags[i].key, img->tags[i].value);
    for (size_t i = 0; i < image_tags.n; i++)
        api_tags_add(&all_tags.t, &all_tags.n, image_tags.t[i].key, image_tags.t[i].value);
    if (all_tags.n > API_TAGS_PER_RESOURCE_MAX) {
        r = api_fail(ctx, API_ERR_TAG_LIMIT_EXCEEDED,
                     "The maximum number of tags per resource (%d) would be exceeded",
                     API_TAGS_PER_RESOURCE_MAX);
        goto out;
    }
    r = api_dry_run(ctx);
    if (r < 0)
        goto out;

    o.image_tags = all_tags.t;
    o.n_image_tags = all_tags.n;
    o.snapshot_tags = snapshot_tags.t;
    o.n_snapshot_tags = snapshot_tags.n;
    r = region_open(ctx->data_dir, ctx->region, false, &dst);
    if (r < 0)
        goto out;
    r = service_image_copy_start(src, id, dst, &o, new_id);
    if ((r == -EALREADY || r == -EEXIST) && o.token) {
        /* A concurrent request with the same token may have won (its
         * image then holds the name too): answer as it did. */
        int e = api_client_token_check(ctx, dst->reg, &token, new_id);
        if (e < 0 || new_id[0])
            r = e;
        else if (r == -EALREADY)
            r = error_set(EIO, "client token '%s' is recorded and cannot be read",
                          token.token);
    }
    if (r == -EEXIST)
        r = api_fail(ctx, API_ERR_DUPLICATE, "AMI name %s is already in use", o.name);
    else if (r == -EACCES)
        r = api_fail(ctx, API_ERR_RESOURCE_AUTH_FAILURE, "%s", error_message());
    if (r < 0) {
        ctx->resource = API_RES_IMAGE;
        goto out;
    }
    service_jobs_notify();
    xml_element(x, "imageId", new_id);
    r = 0;
out:
    registry_image_free(img);
    free(image_tags.t);
    free(snapshot_tags.t);
    free(all_tags.t);
    return r;
}

/* ---- CopySnapshot ---- */

int api_copy_snapshot(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_(region_freep) struct region *src = NULL;
    _cleanup_(region_freep) struct region *dst = NULL;
    struct registry_snapshot *row = NULL;
    struct tag_list tags = {0};
    const char *id = query_get(q, "SourceSnapshotId");
    const char *dest = query_get(q, "DestinationRegion");
    const char *region = NULL, *desc = NULL;
    char new_id[ID_MAX_SIZE];
    int r;

    if (!id)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter SourceSnapshotId");
    r = api_snapshot_id_check(ctx, id);
    if (r < 0)
        return r;
    r = get_source_region(ctx, q, &region);
    if (r < 0)
        return r;
    if (dest && strcmp(dest, ctx->region) != 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "DestinationRegion '%.100s' must be the region the request is sent to "
                        "('%s')",
                        dest, ctx->region);
    /* PresignedUrl: accepted and ignored (see the design notes). */
    r = check_common(ctx, q, &desc);
    if (r < 0)
        return r;
    r = api_tag_specs_parse(ctx, q, &(struct api_tag_target){"snapshot", &tags.t, &tags.n}, 1);
    if (r < 0)
        goto out;

    r = open_source(ctx, region, &src);
    if (r < 0)
        goto out;
    r = src ? registry_snapshot_get(src->reg, id, &row) : -ENOENT;
    if (r == -ENOENT || (r == 0 && !api_snapshot_visible(ctx, row))) {
        r = api_snapshot_not_found(ctx, &id, 1);
        goto out;
    }
    if (r < 0)
        goto out;
    if (row->state != SNAPSHOT_COMPLETED) {
        r = api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                     "Snapshot '%s' is %s; only a completed snapshot can be copied", id,
                     snapshot_state_to_string(row->state));
        goto out;
    }
    r = api_dry_run(ctx);
    if (r < 0)
        goto out;

    r = region_open(ctx->data_dir, ctx->region, false, &dst);
    if (r < 0)
        goto out;
    {
        struct service_snapshot_copy_options so = {
            .owner = ctx->account, .description = desc, .tags = tags.t, .n_tags = tags.n,
        };
        r = service_snapshot_copy_start(src, id, dst, &so, new_id);
    }
    if (r < 0) {
        ctx->resource = API_RES_SNAPSHOT;
        goto out;
    }
    service_jobs_notify();
    api_write_tag_set(x, tags.t, tags.n);
    xml_element(x, "snapshotId", new_id);
    r = 0;
out:
    registry_snapshot_free(row);
    free(tags.t);
    return r;
}
