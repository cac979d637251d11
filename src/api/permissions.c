/* Who may use a resource, and the requests that change that: the one
 * visibility rule for images, snapshots (and what the EBS direct API
 * reads), the answer an operation gives when the caller falls short of
 * it, and the one parser of permission changes that ModifyImageAttribute
 * (launchPermission) and ModifySnapshotAttribute (createVolumePermission)
 * share.
 *
 * Design notes:
 *
 * - The rule: the owner may do anything; an account named by a user
 *   permission, or anybody when the group "all" is there, may see the
 *   resource and use it (launch it, create volumes from it, read its
 *   blocks) but not change it; everybody else cannot see it at all.
 *   What "see" means per resource (a deregistered image is seen by nobody)
 *   is in the resource's own access function below.
 *
 * - The answer: a caller that cannot see a resource gets exactly what a
 *   missing one gets (the resource's NotFound), so that ids do not leak;
 *   one that sees it but needs to own it gets AuthFailure.
 *
 * - The two request forms (reference 4.24 and 4.25): the structured one,
 *   `<Param>.Add.N.UserId|Group` and `<Param>.Remove.N...`, and the legacy
 *   one, `OperationType=add|remove` with `UserId.N` and `UserGroup.N`.  A
 *   value is checked as it is read (the group is "all", a user a 12-digit
 *   account), so one bad value refuses the whole request before anything
 *   is written.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "registry/images.h"
#include "registry/snapshot-permissions.h"
#include "service/service.h"

/* ---- access ---- */

enum api_access api_access_decide(const char *account, const char *owner, bool user_permission,
                                  bool is_public)
{
    if (account && owner && strcmp(account, owner) == 0)
        return API_ACCESS_OWNER;
    return user_permission || is_public ? API_ACCESS_SHARED : API_ACCESS_NONE;
}

enum api_access api_image_access(const struct api_ctx *ctx, const struct registry_image *img)
{
    bool user = false;

    /* kiln drops a deregistered image at once, for its owner too. */
    if (img->state == IMAGE_DEREGISTERED)
        return API_ACCESS_NONE;
    for (size_t i = 0; i < img->n_permissions && !user; i++)
        user = img->permissions[i].kind == REGISTRY_PERMISSION_USER &&
               strcmp(img->permissions[i].value, ctx->account) == 0;
    return api_access_decide(ctx->account, img->owner, user, img->is_public);
}

int api_snapshot_access(const struct api_ctx *ctx, struct region *rg,
                        const struct registry_snapshot *s, enum api_access *ret)
{
    bool user = false, pub = false;
    int r;

    /* The owner needs no permission: spare the query. */
    if (api_access_decide(ctx->account, s->owner, false, false) == API_ACCESS_OWNER) {
        *ret = API_ACCESS_OWNER;
        return 0;
    }
    r = registry_snapshot_permission_check(rg->reg, s->id, ctx->account, &user, &pub);
    if (r < 0)
        return r;
    *ret = api_access_decide(ctx->account, s->owner, user, pub);
    return 0;
}

bool api_snapshot_visible(const struct api_ctx *ctx, const struct registry_snapshot *s)
{
    return api_access_decide(ctx->account, s->owner, false, false) == API_ACCESS_OWNER;
}

bool api_image_visible(const struct api_ctx *ctx, const struct registry_image *img)
{
    return api_image_access(ctx, img) != API_ACCESS_NONE;
}

static const char *resource_name(enum api_resource res)
{
    switch (res) {
    case API_RES_IMAGE: return "image";
    case API_RES_SNAPSHOT: return "snapshot";
    case API_RES_VOLUME: return "volume";
    case API_RES_INSTANCE: return "instance ID";
    case API_RES_KEY_PAIR: return "key pair";
    case API_RES_SECURITY_GROUP: return "security group";
    case API_RES_VPC: return "vpc ID";
    case API_RES_SUBNET: return "subnet ID";
    case API_RES_NONE: break;
    }
    return "resource";
}

int api_not_found(struct api_ctx *ctx, enum api_resource res, const char *const *ids, size_t n)
{
    _cleanup_free_ char *list = NULL;

    switch (res) {
    case API_RES_IMAGE: return api_image_not_found(ctx, ids, n);
    case API_RES_SNAPSHOT: return api_snapshot_not_found(ctx, ids, n);
    case API_RES_VOLUME:
    case API_RES_INSTANCE:
    case API_RES_KEY_PAIR:
    case API_RES_SECURITY_GROUP:
    case API_RES_VPC:
    case API_RES_SUBNET:
    case API_RES_NONE: break;
    }
    list = api_join_ids(ids, n);
    ctx->resource = res;
    return api_fail(ctx, API_ERR_NOT_FOUND, "The %s%s '%s' do%s not exist.", resource_name(res),
                    n > 1 ? "s" : "", list, n > 1 ? "" : "es");
}

int api_access_require(struct api_ctx *ctx, enum api_resource res, const char *id,
                       enum api_access have, enum api_access need)
{
    if (have >= need)
        return 0;
    if (have == API_ACCESS_NONE)
        return api_not_found(ctx, res, &id, 1);
    return api_fail(ctx, API_ERR_RESOURCE_AUTH_FAILURE, "Not authorized for %s:%s",
                    resource_name(res), id);
}

/* ---- permission changes ---- */

static int push(struct api_ctx *ctx, const struct api_permission_form *form,
                struct api_permission_changes *c, bool add, enum registry_permission_kind kind,
                const char *value)
{
    if (kind == REGISTRY_PERMISSION_GROUP && strcmp(value, "all") != 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Invalid group: '%.40s' (the only group is 'all')", value);
    if (kind == REGISTRY_PERMISSION_USER && !api_is_account_id(value))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Invalid user id: '%.40s' (expecting a 12-digit account id)", value);
    if (form->max && c->n >= form->max)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "At most %zu %s changes per call", form->max, form->attribute);
    c->v = xrealloc(c->v, (c->n + 1) * sizeof(*c->v));
    c->v[c->n++] = (struct api_permission_change){ .add = add, .kind = kind, .value = value };
    if (add)
        c->adds = true;
    else
        c->removes = true;
    return 0;
}

bool api_permission_form_used(const struct query *q, const struct api_permission_form *form)
{
    size_t len = strlen(form->param);

    for (size_t i = 0; i < q->n; i++)
        if (strncmp(q->params[i].key, form->param, len) == 0 && q->params[i].key[len] == '.')
            return true;
    return false;
}

/* <Param>.Add.N or <Param>.Remove.N, each with UserId, Group or both. */
static int parse_structured(struct api_ctx *ctx, const struct query *q,
                            const struct api_permission_form *form, bool add,
                            struct api_permission_changes *c)
{
    _cleanup_free_ char *prefix = xasprintf("%s.%s", form->param, add ? "Add" : "Remove");
    struct query_item *items = NULL;
    size_t n_items = 0;
    int r = query_get_structs(q, prefix, &items, &n_items);

    for (size_t i = 0; r >= 0 && i < n_items; i++) {
        const struct query *f = &items[i].fields;
        const char *user = query_get(f, "UserId");
        const char *group = query_get(f, "Group");

        if (form->organizations &&
            (query_get(f, "OrganizationArn") || query_get(f, "OrganizationalUnitArn"))) {
            r = api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                         "kiln has no organizations: share with account ids or the group 'all'");
            break;
        }
        if (!user && !group) {
            r = api_fail(ctx, API_ERR_MISSING_PARAMETER,
                         "The request must contain the parameter %s.%lu.UserId or .Group", prefix,
                         items[i].index);
            break;
        }
        if (user)
            r = push(ctx, form, c, add, REGISTRY_PERMISSION_USER, user);
        if (r >= 0 && group)
            r = push(ctx, form, c, add, REGISTRY_PERMISSION_GROUP, group);
    }
    query_items_free(items, n_items);
    return r < 0 ? r : 0;
}

int api_permission_parse_structured(struct api_ctx *ctx, const struct query *q,
                                    const struct api_permission_form *form,
                                    struct api_permission_changes *ret)
{
    int r = parse_structured(ctx, q, form, true, ret);

    if (r == 0)
        r = parse_structured(ctx, q, form, false, ret);
    return r;
}

int api_permission_parse_legacy(struct api_ctx *ctx, const struct query *q,
                                const struct api_permission_form *form,
                                struct api_permission_changes *ret)
{
    _cleanup_free_ const char **users = NULL, **groups = NULL;
    const char *op = query_get(q, "OperationType");
    size_t n_users = 0, n_groups = 0;
    bool add;
    int r;

    if (!op)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter OperationType");
    if (strcmp(op, "add") != 0 && strcmp(op, "remove") != 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Value (%.40s) for parameter operationType is invalid", op);
    add = strcmp(op, "add") == 0;
    r = query_get_list(q, "UserId", &users, &n_users);
    if (r == 0)
        r = query_get_list(q, "UserGroup", &groups, &n_groups);
    if (r < 0)
        return r;
    if (n_users + n_groups == 0)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter UserId or UserGroup");
    for (size_t i = 0; i < n_users && r == 0; i++)
        r = push(ctx, form, ret, add, REGISTRY_PERMISSION_USER, users[i]);
    for (size_t i = 0; i < n_groups && r == 0; i++)
        r = push(ctx, form, ret, add, REGISTRY_PERMISSION_GROUP, groups[i]);
    return r;
}

void api_permission_changes_release(struct api_permission_changes *c)
{
    free(c->v);
    *c = (struct api_permission_changes){ 0 };
}
