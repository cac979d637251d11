/* The tag actions: CreateTags, DeleteTags and DescribeTags (the wire
 * reference's 4.36), for the resources kiln has: snapshots, images and
 * volumes (resource type `volume`; another account's volume is
 * InvalidVolume.NotFound, as everywhere else).
 *
 * Rules enforced here, before anything is written: keys are 1 to 128
 * characters and do not start with "aws:" (reserved), values at most 256
 * characters, at most 50 tags per resource after the change.  Only the
 * owner of a resource may tag it or see its tags; to anybody else it does
 * not exist.  A CreateTags or DeleteTags over several resources is one
 * registry transaction: all of it happens or none of it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/ids.h"
#include "common/util.h"
#include "registry/images.h"
#include "registry/instances.h"
#include "service/service.h"

#define TAG_KEY_MAX 128
#define TAG_VALUE_MAX 256
#define TAGS_PER_RESOURCE_MAX API_TAGS_PER_RESOURCE_MAX

/* Characters (code points) in a UTF-8 string the query parser validated. */
static size_t utf8_length(const char *s)
{
    size_t n = 0;

    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            n++;
    return n;
}

static int check_key(struct api_ctx *ctx, const char *key)
{
    size_t n = utf8_length(key);

    if (n == 0 || n > TAG_KEY_MAX)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Tag key must be between 1 and %d characters long", TAG_KEY_MAX);
    if (strncmp(key, "aws:", 4) == 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Tag keys starting with 'aws:' are reserved for internal use");
    /* kiln's own (kiln:bake-build, kiln:egress, ...): set and removed by
     * kiln only, so that its janitor and the instances' network can trust them */
    if (strncmp(key, "kiln:", 5) == 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Tag keys starting with 'kiln:' are reserved for kiln");
    return 0;
}

static int check_value(struct api_ctx *ctx, const char *value)
{
    if (utf8_length(value) > TAG_VALUE_MAX)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Tag value cannot be longer than %d characters", TAG_VALUE_MAX);
    return 0;
}

/* Check that every id is well formed and of a kind that can be tagged. */
static int check_resource_ids(struct api_ctx *ctx, const char **ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strncmp(ids[i], "snap-", 5) == 0) {
            int r = api_snapshot_id_check(ctx, ids[i]);
            if (r < 0)
                return r;
            continue;
        }
        if (strncmp(ids[i], "ami-", 4) == 0) {
            int r = api_image_id_check(ctx, ids[i]);
            if (r < 0)
                return r;
            continue;
        }
        if (strncmp(ids[i], "vol-", 4) == 0) {
            int r = api_id_check(ctx, API_RES_VOLUME, "vol", ids[i]);
            if (r < 0)
                return r;
            continue;
        }
        if (strncmp(ids[i], "i-", 2) == 0) {
            int r = api_id_check(ctx, API_RES_INSTANCE, "i", ids[i]);
            if (r < 0)
                return r;
            continue;
        }
        return api_fail(ctx, API_ERR_INVALID_ID, "The ID '%.100s' is not valid", ids[i]);
    }
    return 0;
}

/* Every image among ids exists and is the caller's (a deregistered one
 * does not exist); else InvalidAMIID.NotFound naming the ones that are
 * not.  An image shared with the caller is not the caller's to tag. */
static int check_images_visible(struct api_ctx *ctx, struct region *rg, const char **ids,
                                size_t n)
{
    _cleanup_free_ const char **missing = xcalloc(n ? n : 1, sizeof(*missing));
    size_t n_missing = 0;

    for (size_t i = 0; i < n; i++) {
        struct registry_image *img = NULL;
        int r;

        if (strncmp(ids[i], "ami-", 4) != 0)
            continue;
        r = rg ? registry_image_get(rg->reg, ids[i], &img) : -ENOENT;
        if (r < 0 && r != -ENOENT)
            return r;
        if (r == -ENOENT || img->state == IMAGE_DEREGISTERED ||
            strcmp(img->owner, ctx->account) != 0)
            if (!api_in_list(missing, n_missing, ids[i]))
                missing[n_missing++] = ids[i];
        registry_image_free(img);
    }
    if (n_missing)
        return api_image_not_found(ctx, missing, n_missing);
    return 0;
}

/* Every volume among ids exists and is the caller's; else
 * InvalidVolume.NotFound naming the ones that are not. */
static int check_volumes_visible(struct api_ctx *ctx, struct region *rg, const char **ids,
                                 size_t n)
{
    _cleanup_free_ const char **missing = xcalloc(n ? n : 1, sizeof(*missing));
    size_t n_missing = 0;

    for (size_t i = 0; i < n; i++) {
        struct registry_volume *v = NULL;
        int r;

        if (strncmp(ids[i], "vol-", 4) != 0)
            continue;
        r = rg ? registry_volume_get(rg->reg, ids[i], &v) : -ENOENT;
        if (r < 0 && r != -ENOENT)
            return r;
        if (r == -ENOENT || strcmp(v->owner, ctx->account) != 0)
            if (!api_in_list(missing, n_missing, ids[i]))
                missing[n_missing++] = ids[i];
        registry_volume_free(v);
    }
    if (n_missing)
        return api_not_found(ctx, API_RES_VOLUME, missing, n_missing);
    return 0;
}

/* Every instance among ids exists and is the caller's (terminated ones
 * too, as EC2 while it shows them); else InvalidInstanceID.NotFound. */
static int check_instances_visible(struct api_ctx *ctx, struct region *rg, const char **ids,
                                   size_t n)
{
    _cleanup_free_ const char **missing = xcalloc(n ? n : 1, sizeof(*missing));
    size_t n_missing = 0;

    for (size_t i = 0; i < n; i++) {
        struct registry_instance *in = NULL;
        int r;

        if (strncmp(ids[i], "i-", 2) != 0)
            continue;
        r = rg ? registry_instance_get(rg->reg, ids[i], &in) : -ENOENT;
        if (r < 0 && r != -ENOENT)
            return r;
        if (r == -ENOENT || strcmp(in->owner, ctx->account) != 0)
            if (!api_in_list(missing, n_missing, ids[i]))
                missing[n_missing++] = ids[i];
        registry_instance_free(in);
    }
    if (n_missing)
        return api_not_found(ctx, API_RES_INSTANCE, missing, n_missing);
    return 0;
}

/* Every resource exists and is the caller's; else NotFound naming the
 * ones that are not.  rg may be NULL (an empty region). */
static int check_resources_visible(struct api_ctx *ctx, struct region *rg, const char **ids,
                                   size_t n)
{
    _cleanup_free_ const char **missing = xcalloc(n ? n : 1, sizeof(*missing));
    size_t n_missing = 0;
    int r0 = check_images_visible(ctx, rg, ids, n);

    if (r0 >= 0)
        r0 = check_volumes_visible(ctx, rg, ids, n);
    if (r0 >= 0)
        r0 = check_instances_visible(ctx, rg, ids, n);
    if (r0 < 0)
        return r0;
    for (size_t i = 0; i < n; i++) {
        struct registry_snapshot *s = NULL;
        int r;

        if (strncmp(ids[i], "ami-", 4) == 0 || strncmp(ids[i], "vol-", 4) == 0 ||
            strncmp(ids[i], "i-", 2) == 0)
            continue;
        r = rg ? registry_snapshot_get(rg->reg, ids[i], &s) : -ENOENT;

        if (r < 0 && r != -ENOENT)
            return r;
        if (r == -ENOENT || !api_snapshot_visible(ctx, s))
            if (!api_in_list(missing, n_missing, ids[i]))
                missing[n_missing++] = ids[i];
        registry_snapshot_free(s);
    }
    if (n_missing)
        return api_snapshot_not_found(ctx, missing, n_missing);
    return 0;
}

int api_tag_check(struct api_ctx *ctx, const char *key, const char *value)
{
    int r = check_key(ctx, key);

    if (r == 0 && value)
        r = check_value(ctx, value);
    return r;
}

void api_tags_add(struct registry_tag **tags, size_t *n, const char *key, const char *value)
{
    size_t j;

    for (j = 0; j < *n; j++)
        if (strcmp((*tags)[j].key, key) == 0)
            break;
    if (j == *n)
        *tags = xrealloc(*tags, ++*n * sizeof(**tags));
    (*tags)[j].key = (char *)key;
    (*tags)[j].value = (char *)(value ? value : "");
}

static const struct api_tag_target *tag_target(const struct api_tag_target *targets, size_t n,
                                               const char *type)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(targets[i].type, type) == 0)
            return &targets[i];
    return NULL;
}

int api_tag_specs_parse(struct api_ctx *ctx, const struct query *q,
                        const struct api_tag_target *targets, size_t n)
{
    struct query_item *specs = NULL;
    size_t n_specs = 0;
    int r;

    r = query_get_structs(q, "TagSpecification", &specs, &n_specs);
    if (r < 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE, "%s",
                        error_message() ? error_message() : "malformed list");
    for (size_t i = 0; i < n_specs && r >= 0; i++) {
        const char *type = query_get(&specs[i].fields, "ResourceType");
        const struct api_tag_target *t;
        struct query_item *items = NULL;
        size_t n_items = 0;

        if (!type) {
            r = api_fail(ctx, API_ERR_MISSING_PARAMETER,
                         "The request must contain the parameter "
                         "TagSpecification.%lu.ResourceType",
                         specs[i].index);
            break;
        }
        t = tag_target(targets, n, type);
        if (!t) {
            r = api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                         "'%.40s' is not a valid taggable resource type for this operation.", type);
            break;
        }
        r = query_get_structs(&specs[i].fields, "Tag", &items, &n_items);
        if (r < 0)
            r = api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE, "%s",
                         error_message() ? error_message() : "malformed list");
        for (size_t k = 0; r >= 0 && k < n_items; k++) {
            const char *key = query_get(&items[k].fields, "Key");
            const char *value = query_get(&items[k].fields, "Value");

            if (!key) {
                r = api_fail(ctx, API_ERR_MISSING_PARAMETER,
                             "The request must contain the parameter "
                             "TagSpecification.%lu.Tag.%lu.Key",
                             specs[i].index, items[k].index);
                break;
            }
            r = api_tag_check(ctx, key, value);
            if (r >= 0)
                api_tags_add(t->tags, t->n_tags, key, value);
        }
        query_items_free(items, n_items);
        if (r >= 0 && *t->n_tags > API_TAGS_PER_RESOURCE_MAX)
            r = api_fail(ctx, API_ERR_TAG_LIMIT_EXCEEDED,
                         "The maximum number of tags per resource (%d) would be exceeded",
                         API_TAGS_PER_RESOURCE_MAX);
    }
    query_items_free(specs, n_specs);
    if (r < 0) {
        for (size_t i = 0; i < n; i++) {
            free(*targets[i].tags);
            *targets[i].tags = NULL;
            *targets[i].n_tags = 0;
        }
        return r;
    }
    return 0;
}

struct tag_arg {
    const char *key;
    const char *value; /* NULL: absent */
};

/* Tag.N.Key / Tag.N.Value; *ret is a new array (free()). */
static int parse_tags(struct api_ctx *ctx, const struct query *q, bool create,
                      struct tag_arg **ret, size_t *ret_n)
{
    struct query_item *items = NULL;
    _cleanup_free_ struct tag_arg *tags = NULL;
    size_t n;
    int r;

    r = query_get_structs(q, "Tag", &items, &n);
    if (r < 0)
        return r;
    tags = xcalloc(n ? n : 1, sizeof(*tags));
    for (size_t i = 0; i < n; i++) {
        tags[i].key = query_get(&items[i].fields, "Key");
        tags[i].value = query_get(&items[i].fields, "Value");
        if (!tags[i].key) {
            r = api_fail(ctx, API_ERR_MISSING_PARAMETER,
                         "The request must contain the parameter Tag.%lu.Key", items[i].index);
            goto out;
        }
        r = check_key(ctx, tags[i].key);
        if (r == 0 && tags[i].value)
            r = check_value(ctx, tags[i].value);
        if (r < 0)
            goto out;
    }
    if (create && n == 0) {
        r = api_fail(ctx, API_ERR_MISSING_PARAMETER,
                     "The request must contain the parameter Tag");
        goto out;
    }
    *ret = TAKE_PTR(tags);
    *ret_n = n;
    r = 0;
out:
    query_items_free(items, n);
    return r;
}

static int get_resource_ids(struct api_ctx *ctx, const struct query *q, const char ***ret,
                            size_t *ret_n)
{
    int r = query_get_list(q, "ResourceId", ret, ret_n);

    if (r < 0)
        return r;
    if (*ret_n == 0)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter ResourceId");
    return check_resource_ids(ctx, *ret, *ret_n);
}

/* Open the region and start the transaction both tag writers need. */
static int begin_write(struct api_ctx *ctx, struct region **ret_rg)
{
    int r = api_region_open(ctx, ret_rg);

    if (r < 0 || !*ret_rg)
        return r;
    return registry_begin((*ret_rg)->reg);
}

/* ---- CreateTags ---- */

static int create_tags(struct api_ctx *ctx, struct region *rg, const char **ids, size_t n_ids,
                       const struct tag_arg *tags, size_t n_tags)
{
    int r;

    for (size_t i = 0; i < n_ids; i++) {
        struct registry_tag *now = NULL;
        size_t n_now = 0;

        for (size_t k = 0; k < n_tags; k++) {
            r = registry_tag_set(rg->reg, ids[i], tags[k].key, tags[k].value);
            if (r < 0)
                return r;
        }
        r = registry_tag_list(rg->reg, ids[i], &now, &n_now);
        if (r < 0)
            return r;
        registry_tag_list_free(now, n_now);
        if (n_now > TAGS_PER_RESOURCE_MAX)
            return api_fail(ctx, API_ERR_TAG_LIMIT_EXCEEDED,
                            "The maximum number of tags per resource (%d) would be exceeded "
                            "for '%s'",
                            TAGS_PER_RESOURCE_MAX, ids[i]);
    }
    return 0;
}

typedef int (*tag_write_fn)(struct api_ctx *ctx, struct region *rg, const char **ids,
                            size_t n_ids, const struct tag_arg *tags, size_t n_tags);

/* CreateTags (create) and DeleteTags: parse the ids and tags, then, in
 * one registry transaction, check that the caller owns every resource,
 * answer DryRun and `write` them. */
static int tag_write(struct api_ctx *ctx, const struct query *q, struct xml *x, bool create,
                     tag_write_fn write)
{
    _cleanup_free_ const char **ids = NULL;
    _cleanup_free_ struct tag_arg *tags = NULL;
    _cleanup_(region_freep) struct region *rg = NULL;
    size_t n_ids = 0, n_tags = 0;
    int r;

    r = get_resource_ids(ctx, q, &ids, &n_ids);
    if (r == 0)
        r = parse_tags(ctx, q, create, &tags, &n_tags);
    if (r < 0)
        return r;
    r = begin_write(ctx, &rg);
    if (r < 0)
        return r;
    if (!rg)
        return check_resources_visible(ctx, NULL, ids, n_ids);
    r = check_resources_visible(ctx, rg, ids, n_ids);
    if (r == 0)
        r = api_dry_run(ctx);
    if (r == 0)
        r = write(ctx, rg, ids, n_ids, tags, n_tags);
    r = registry_end(rg->reg, r);
    if (r < 0)
        return r;
    xml_element_bool(x, "return", true);
    return 0;
}

int api_create_tags(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    return tag_write(ctx, q, x, true, create_tags);
}

/* ---- DeleteTags ---- */

static int delete_tags(struct api_ctx *ctx, struct region *rg, const char **ids, size_t n_ids,
                       const struct tag_arg *tags, size_t n_tags)
{
    int r = 0;

    for (size_t i = 0; i < n_ids; i++) {
        if (n_tags == 0) {
            /* No Tag.N: every (user) tag of the resource goes. */
            struct registry_tag *now = NULL;
            size_t n_now = 0;

            r = registry_tag_list(rg->reg, ids[i], &now, &n_now);
            for (size_t k = 0; r >= 0 && k < n_now; k++)
                r = registry_tag_delete(rg->reg, ids[i], now[k].key, NULL);
            registry_tag_list_free(now, n_now);
            if (r < 0)
                return r;
            continue;
        }
        /* A key without a value deletes the tag whatever its value; with
         * a value (even empty) only when it matches. */
        for (size_t k = 0; k < n_tags; k++) {
            r = registry_tag_delete(rg->reg, ids[i], tags[k].key, tags[k].value);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

int api_delete_tags(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    return tag_write(ctx, q, x, false, delete_tags);
}

/* ---- DescribeTags ---- */

static const char *const tag_filters[] = {
    "key", "resource-id", "resource-type", "value", "tag:", NULL,
};

struct tag_row {
    const char *resource_id; /* borrowed from the snapshot, image or volume rows */
    const char *resource_type;
    struct registry_tag *tag; /* borrowed from the tag lists */
    char *sort_key; /* resource id, newline, key: ids of one kind have one length */
};

static int tag_row_cmp(const void *a, const void *b)
{
    return strcmp(((const struct tag_row *)a)->sort_key, ((const struct tag_row *)b)->sort_key);
}

struct tag_rows {
    struct tag_row *v;
    size_t n, cap;
};

/* Append the tags of one resource that pass the filters (the resource's
 * own, tag:KEY, then key and value per tag). */
static void add_resource(struct tag_rows *rows, const struct api_filters *fs, const char *id,
                         const char *type, struct registry_tag *tags, size_t n)
{
    if (!api_filters_match(fs, "resource-id", id) ||
        !api_filters_match(fs, "resource-type", type) || !api_filters_match_tags(fs, tags, n))
        return;
    for (size_t k = 0; k < n; k++) {
        struct registry_tag *t = &tags[k];
        if (!api_filters_match(fs, "key", t->key) || !api_filters_match(fs, "value", t->value))
            continue;
        if (rows->n == rows->cap) {
            rows->cap = rows->cap ? 2 * rows->cap : 64;
            rows->v = xrealloc(rows->v, rows->cap * sizeof(*rows->v));
        }
        rows->v[rows->n++] = (struct tag_row){
            .resource_id = id,
            .resource_type = type,
            .tag = t,
            .sort_key = xasprintf("%s\n%s", id, t->key),
        };
    }
}

int api_describe_tags(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    struct api_describe d;
    struct region *rg;
    struct registry_snapshot **rows = NULL;
    struct registry_image **images = NULL;
    struct registry_volume **vols = NULL;
    struct registry_instance **insts = NULL;
    struct registry_tag **itag_lists = NULL;
    size_t *itag_counts = NULL, n_insts = 0;
    struct registry_tag **tag_lists = NULL, **vtag_lists = NULL;
    size_t *tag_counts = NULL, *vtag_counts = NULL, n_vols = 0;
    struct tag_rows found = { 0 };
    struct tag_row *out;
    size_t n_rows = 0, n_images = 0, n_out, start = 0;
    int r;

    r = api_describe_begin(ctx, q, false, NULL, tag_filters, &d);
    if (r < 0)
        return r;
    rg = d.rg;
    if (rg) {
        r = registry_snapshot_list(rg->reg, &rows, &n_rows);
        if (r < 0)
            goto out;
    }
    tag_lists = xcalloc(n_rows ? n_rows : 1, sizeof(*tag_lists));
    tag_counts = xcalloc(n_rows ? n_rows : 1, sizeof(*tag_counts));
    for (size_t i = 0; i < n_rows; i++) {
        const struct registry_snapshot *s = rows[i];

        if (!api_snapshot_visible(ctx, s) || !api_filters_match(&d.fs, "resource-id", s->id) ||
            !api_filters_match(&d.fs, "resource-type", "snapshot"))
            continue;
        r = registry_tag_list(rg->reg, s->id, &tag_lists[i], &tag_counts[i]);
        if (r < 0)
            goto out;
        add_resource(&found, &d.fs, s->id, "snapshot", tag_lists[i], tag_counts[i]);
    }
    /* The caller's images (not deregistered), with their tags. */
    if (rg) {
        const char *owners[] = { ctx->account };
        struct image_query iq = {
            .owners = owners, .n_owners = 1, .include_deprecated = true,
            .include_disabled = true, .caller = ctx->account,
        };
        _cleanup_free_ char *unused = NULL;

        r = registry_image_list(rg->reg, &iq, &images, &n_images, &unused);
        if (r < 0)
            goto out;
    }
    for (size_t i = 0; i < n_images; i++) {
        struct registry_image *img = images[i];

        if (img->state != IMAGE_DEREGISTERED)
            add_resource(&found, &d.fs, img->id, "image", img->tags, img->n_tags);
    }
    /* The caller's volumes, with their tags. */
    if (rg) {
        r = registry_volume_list(rg->reg, &vols, &n_vols);
        if (r < 0)
            goto out;
    }
    vtag_lists = xcalloc(n_vols ? n_vols : 1, sizeof(*vtag_lists));
    vtag_counts = xcalloc(n_vols ? n_vols : 1, sizeof(*vtag_counts));
    for (size_t i = 0; i < n_vols; i++) {
        const struct registry_volume *v = vols[i];

        if (strcmp(v->owner, ctx->account) != 0 ||
            !api_filters_match(&d.fs, "resource-id", v->id) ||
            !api_filters_match(&d.fs, "resource-type", "volume"))
            continue;
        r = registry_tag_list(rg->reg, v->id, &vtag_lists[i], &vtag_counts[i]);
        if (r < 0)
            goto out;
        add_resource(&found, &d.fs, v->id, "volume", vtag_lists[i], vtag_counts[i]);
    }
    /* The caller's instances, with their tags. */
    if (rg) {
        r = registry_instance_list(rg->reg, &insts, &n_insts);
        if (r < 0)
            goto out;
    }
    itag_lists = xcalloc(n_insts ? n_insts : 1, sizeof(*itag_lists));
    itag_counts = xcalloc(n_insts ? n_insts : 1, sizeof(*itag_counts));
    for (size_t i = 0; i < n_insts; i++) {
        const struct registry_instance *in = insts[i];

        if (strcmp(in->owner, ctx->account) != 0 ||
            !api_filters_match(&d.fs, "resource-id", in->id) ||
            !api_filters_match(&d.fs, "resource-type", "instance"))
            continue;
        r = registry_tag_list(rg->reg, in->id, &itag_lists[i], &itag_counts[i]);
        if (r < 0)
            goto out;
        add_resource(&found, &d.fs, in->id, "instance", itag_lists[i], itag_counts[i]);
    }
    out = found.v;
    n_out = found.n;
    if (n_out)
        qsort(out, n_out, sizeof(*out), tag_row_cmp);
    if (d.after)
        while (start < n_out && strcmp(out[start].sort_key, d.after) <= 0)
            start++;
    {
        size_t end = d.max && n_out - start > d.max ? start + d.max : n_out;

        xml_open(x, "tagSet");
        for (size_t i = start; i < end; i++) {
            xml_open(x, "item");
            xml_element(x, "resourceId", out[i].resource_id);
            xml_element(x, "resourceType", out[i].resource_type);
            xml_element(x, "key", out[i].tag->key);
            xml_element(x, "value", out[i].tag->value);
            xml_close(x);
        }
        xml_close(x);
        if (end < n_out) {
            _cleanup_free_ char *token = api_token_make(out[end - 1].sort_key);
            xml_element(x, "nextToken", token);
        }
    }
    r = 0;
out:
    for (size_t i = 0; i < found.n; i++)
        free(found.v[i].sort_key);
    free(found.v);
    for (size_t i = 0; i < n_rows; i++)
        if (tag_lists)
            registry_tag_list_free(tag_lists[i], tag_counts[i]);
    free(tag_lists);
    free(tag_counts);
    for (size_t i = 0; i < n_vols; i++)
        if (vtag_lists)
            registry_tag_list_free(vtag_lists[i], vtag_counts[i]);
    free(vtag_lists);
    free(vtag_counts);
    registry_volume_list_free(vols, n_vols);
    for (size_t i = 0; i < n_insts; i++)
        if (itag_lists)
            registry_tag_list_free(itag_lists[i], itag_counts[i]);
    free(itag_lists);
    free(itag_counts);
    registry_instance_list_free(insts, n_insts);
    registry_snapshot_list_free(rows, n_rows);
    registry_image_list_free(images, n_images);
    api_describe_release(&d);
    return r;
}
