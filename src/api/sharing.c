/* Sharing: the snapshot attribute actions (DescribeSnapshotAttribute,
 * ModifySnapshotAttribute, ResetSnapshotAttribute: createVolumePermission,
 * the wire reference's 2.4 and 4.25) and image block public access
 * (Enable/Disable/GetImageBlockPublicAccessState, 4.23).
 *
 * Design notes:
 *
 * - Permissions live in the region registry's snapshot_permissions table
 *   (registry/snapshot-permissions.h).  Only the owner reads or changes
 *   them: an account that sees the snapshot through a permission gets
 *   AuthFailure (as for an image's launchPermission, images.c), any other
 *   account InvalidSnapshot.NotFound (the snapshot does not exist for it).
 *
 * - Image block public access is per account and region, a registry
 *   setting "image-block-public-access:<account>" holding the state
 *   ("block-new-sharing"; absent or "unblocked" means unblocked).  Unlike
 *   AWS, new accounts start unblocked and the change takes effect at once.
 *   ModifyImageAttribute (images.c) asks api_image_public_sharing_blocked()
 *   before adding the group "all"; images that are already public stay so.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "registry/snapshot-permissions.h"
#include "service/service.h"

/* EC2 caps one ModifySnapshotAttribute at 500 changes (reference 4.25). */
static const struct api_permission_form create_volume_permission = {
    .param = "CreateVolumePermission",
    .attribute = "createVolumePermission",
    .max = 500,
};

/* The SnapshotId parameter: present and well formed. */
static int get_snapshot_id(struct api_ctx *ctx, const struct query *q, const char **ret)
{
    const char *id = query_get(q, "SnapshotId");

    if (!id)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter SnapshotId");
    *ret = id;
    return api_snapshot_id_check(ctx, id);
}

/* The Attribute parameter, one of createVolumePermission and productCodes
 * (`changeable`: only createVolumePermission). */
static int get_attribute(struct api_ctx *ctx, const struct query *q, bool changeable,
                         const char **ret)
{
    const char *attr = query_get(q, "Attribute");

    if (!attr)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter Attribute");
    if (strcmp(attr, "createVolumePermission") != 0 &&
        (changeable || strcmp(attr, "productCodes") != 0))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Value (%.100s) for parameter attribute is invalid%s", attr,
                        changeable ? ": only createVolumePermission can be changed" : "");
    *ret = attr;
    return 0;
}

/* Load snapshot `id` for the attribute actions: NotFound unless the caller
 * can see it; AuthFailure when it can but `need_owner` and it is not its. */
static int load_snapshot(struct api_ctx *ctx, struct region *rg, const char *id, bool need_owner,
                         struct registry_snapshot **ret)
{
    struct registry_snapshot *s = NULL;
    enum api_access access = API_ACCESS_NONE;
    int r = rg ? registry_snapshot_get(rg->reg, id, &s) : -ENOENT;

    if (r == 0)
        r = api_snapshot_access(ctx, rg, s, &access);
    if (r == -ENOENT)
        r = 0; /* access stays NONE: NotFound */
    if (r == 0)
        r = api_access_require(ctx, API_RES_SNAPSHOT, id, access,
                               need_owner ? API_ACCESS_OWNER : API_ACCESS_SHARED);
    if (r < 0) {
        registry_snapshot_free(s);
        return r;
    }
    *ret = s;
    return 0;
}

/* Run `change` on the caller's snapshot `id` in one transaction, after
 * the owner check (load_snapshot()) and the DryRun answer. */
typedef int (*snapshot_change_fn)(struct registry *reg, const char *id, const void *arg);

static int change_owned_snapshot(struct api_ctx *ctx, const char *id, snapshot_change_fn change,
                                 const void *arg)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    struct registry_snapshot *s = NULL;
    int r = api_region_open(ctx, &rg);

    if (r < 0)
        return r;
    if (!rg)
        return api_snapshot_not_found(ctx, &id, 1);
    r = registry_begin(rg->reg);
    if (r < 0)
        return r;
    r = load_snapshot(ctx, rg, id, true, &s);
    registry_snapshot_free(s);
    if (r == 0)
        r = api_dry_run(ctx);
    if (r == 0)
        r = change(rg->reg, id, arg);
    return registry_end(rg->reg, r);
}

/* ---- DescribeSnapshotAttribute ---- */

int api_describe_snapshot_attribute(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    _cleanup_free_ struct registry_permission *perms = NULL;
    struct registry_snapshot *s = NULL;
    const char *id = NULL, *attr = NULL;
    bool cvp;
    size_t n = 0;
    int r;

    r = get_snapshot_id(ctx, q, &id);
    if (r == 0)
        r = get_attribute(ctx, q, false, &attr);
    if (r == 0)
        r = api_dry_run(ctx);
    if (r == 0)
        r = api_region_open(ctx, &rg);
    if (r < 0)
        return r;
    cvp = strcmp(attr, "createVolumePermission") == 0;
    r = load_snapshot(ctx, rg, id, cvp, &s);
    if (r < 0)
        return r;
    registry_snapshot_free(s);
    if (cvp) {
        r = registry_snapshot_permission_list(rg->reg, id, &perms, &n);
        if (r < 0)
            return r;
    }
    xml_element(x, "snapshotId", id);
    if (cvp) {
        xml_open(x, "createVolumePermission");
        for (size_t i = 0; i < n; i++) {
            xml_open(x, "item");
            xml_element(x, perms[i].kind == REGISTRY_PERMISSION_GROUP ? "group" : "userId",
                        perms[i].value);
            xml_close(x);
        }
        xml_close(x);
    } else {
        /* kiln has no product codes. */
        xml_open(x, "productCodes");
        xml_close(x);
    }
    return 0;
}

/* ---- ModifySnapshotAttribute ---- */

/* Whether every UserId.N and UserGroup.N of q repeats an Add entry of
 * changes: what Packer (aws-sdk-go's ModifySnapshotAttributeInput with
 * UserIds and CreateVolumePermission.Add) sends and EC2 accepts.  Returns
 * 1 when they all do, 0 when one does not, or -errno. */
static int legacy_repeats_adds(const struct query *q, const struct api_permission_changes *changes)
{
    static const struct {
        const char *param;
        enum registry_permission_kind kind;
    } lists[] = {{"UserId", REGISTRY_PERMISSION_USER}, {"UserGroup", REGISTRY_PERMISSION_GROUP}};

    for (size_t l = 0; l < ARRAY_SIZE(lists); l++) {
        _cleanup_free_ const char **v = NULL;
        size_t n = 0;
        int r = query_get_list(q, lists[l].param, &v, &n);

        if (r < 0)
            return r;
        for (size_t i = 0; i < n; i++) {
            bool found = false;
            for (size_t k = 0; k < changes->n && !found; k++)
                found = changes->v[k].add && changes->v[k].kind == lists[l].kind &&
                        strcmp(changes->v[k].value, v[i]) == 0;
            if (!found)
                return 0;
        }
    }
    return 1;
}

static int apply_changes(struct registry *reg, const char *id, const void *arg)
{
    const struct api_permission_changes *changes = arg;
    int r = 0;

    for (size_t i = 0; i < changes->n && r >= 0; i++) {
        const struct api_permission_change *c = &changes->v[i];
        r = c->add ? registry_snapshot_permission_add(reg, id, c->kind, c->value)
                   : registry_snapshot_permission_remove(reg, id, c->kind, c->value);
    }
    return r;
}

int api_modify_snapshot_attribute(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_(api_permission_changes_release) struct api_permission_changes changes = { 0 };
    const char *id = NULL, *attr = query_get(q, "Attribute");
    int r;

    r = get_snapshot_id(ctx, q, &id);
    if (r < 0)
        return r;
    if (api_permission_form_used(q, &create_volume_permission)) {
        if (attr && strcmp(attr, "createVolumePermission") != 0)
            return api_fail(ctx, API_ERR_INVALID_PARAMETER_COMBINATION,
                            "CreateVolumePermission cannot be combined with Attribute %.40s", attr);
        if (query_get(q, "OperationType"))
            return api_fail(ctx, API_ERR_INVALID_PARAMETER_COMBINATION,
                            "CreateVolumePermission cannot be combined with OperationType");
        r = api_permission_parse_structured(ctx, q, &create_volume_permission, &changes);
        if (r < 0)
            return r;
        r = legacy_repeats_adds(q, &changes);
        if (r < 0)
            return r;
        if (r == 0)
            return api_fail(ctx, API_ERR_INVALID_PARAMETER_COMBINATION,
                            "UserId.N and UserGroup.N beside CreateVolumePermission may only "
                            "repeat its Add entries");
        if (changes.n == 0)
            return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                            "The request must contain CreateVolumePermission.Add.N or "
                            "CreateVolumePermission.Remove.N");
    } else {
        r = get_attribute(ctx, q, true, &attr);
        if (r == 0)
            r = api_permission_parse_legacy(ctx, q, &create_volume_permission, &changes);
        if (r < 0)
            return r;
    }
    if (changes.adds && changes.removes)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_COMBINATION,
                        "ModifySnapshotAttribute either adds or removes permissions, not both");
    r = change_owned_snapshot(ctx, id, apply_changes, &changes);
    if (r < 0)
        return r;
    xml_element_bool(x, "return", true);
    return 0;
}

/* ---- ResetSnapshotAttribute ---- */

static int clear_permissions(struct registry *reg, const char *id, const void *arg)
{
    (void)arg;
    return registry_snapshot_permission_clear(reg, id);
}

int api_reset_snapshot_attribute(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    const char *id = NULL, *attr = NULL;
    int r;

    r = get_snapshot_id(ctx, q, &id);
    if (r == 0)
        r = get_attribute(ctx, q, true, &attr);
    if (r == 0)
        r = change_owned_snapshot(ctx, id, clear_permissions, NULL);
    if (r < 0)
        return r;
    xml_element_bool(x, "return", true);
    return 0;
}

/* ---- image block public access ---- */

#define BPA_BLOCKED "block-new-sharing"
#define BPA_UNBLOCKED "unblocked"

static void bpa_key(const struct api_ctx *ctx, char *buf, size_t size)
{
    snprintf(buf, size, "image-block-public-access:%s", ctx->account);
}

int api_image_public_sharing_blocked(const struct api_ctx *ctx, struct region *rg, bool *ret)
{
    _cleanup_free_ char *value = NULL;
    char key[64];
    int r;

    if (!rg) {
        *ret = false;
        return 0;
    }
    bpa_key(ctx, key, sizeof(key));
    r = registry_setting_get(rg->reg, key, &value);
    if (r == -ENOENT) {
        *ret = false;
        return 0;
    }
    if (r < 0)
        return r;
    *ret = strcmp(value, BPA_BLOCKED) == 0;
    return 0;
}

/* Store the state; Enable creates the region when it holds no data yet,
 * Disable has nothing to undo there. */
static int bpa_set(struct api_ctx *ctx, bool blocked)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    char key[64];
    int r;

    r = api_region_open(ctx, &rg);
    if (r == 0 && !rg && blocked)
        r = region_open(ctx->data_dir, ctx->region, false, &rg);
    if (r < 0)
        return r;
    if (!rg)
        return 0;
    bpa_key(ctx, key, sizeof(key));
    return registry_setting_set(rg->reg, key, blocked ? BPA_BLOCKED : BPA_UNBLOCKED);
}

int api_enable_image_block_public_access(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    const char *state = query_get(q, "ImageBlockPublicAccessState");
    int r;

    if (!state)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter ImageBlockPublicAccessState");
    if (strcmp(state, BPA_BLOCKED) != 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Value (%.40s) for parameter imageBlockPublicAccessState is invalid "
                        "(expecting " BPA_BLOCKED ")",
                        state);
    r = api_dry_run(ctx);
    if (r == 0)
        r = bpa_set(ctx, true);
    if (r < 0)
        return r;
    xml_element(x, "imageBlockPublicAccessState", BPA_BLOCKED);
    return 0;
}

int api_disable_image_block_public_access(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    int r;

    (void)q;
    r = api_dry_run(ctx);
    if (r == 0)
        r = bpa_set(ctx, false);
    if (r < 0)
        return r;
    xml_element(x, "imageBlockPublicAccessState", BPA_UNBLOCKED);
    return 0;
}

int api_get_image_block_public_access_state(struct api_ctx *ctx, const struct query *q,
                                            struct xml *x)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    bool blocked = false;
    int r;

    (void)q;
    r = api_region_open(ctx, &rg);
    if (r == 0)
        r = api_image_public_sharing_blocked(ctx, rg, &blocked);
    if (r < 0)
        return r;
    xml_element(x, "imageBlockPublicAccessState", blocked ? BPA_BLOCKED : BPA_UNBLOCKED);
    xml_element(x, "managedBy", "account");
    return 0;
}
