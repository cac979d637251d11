/* CreateImage: an instance captured as a new image, over
 * service_image_create() (src/service/create-image.c) and the instance
 * manager of `kiln serve` (src/service/instances.h).
 *
 * Design notes:
 *
 * - Every parameter is checked before the instance is touched; the
 *   instance's owner, its state and the name's uniqueness are checked
 *   inside the manager's hook (the instance held: it cannot change state
 *   meanwhile), and DryRun answers after those checks.
 *
 * - NoReboot=true, or an instance that is stopped (or stopping, pending):
 *   one hook does everything, through the root volume the manager holds
 *   open (the guest's / frozen by its agent when it answers) or the closed
 *   volume.
 *
 * - NoReboot=false on a running instance (EC2's default): a clean reboot
 *   for a consistent file system.  The manager is called outside any hook
 *   (a hook must not change the state of the instance it holds):
 *   instance_manager_stop(wait), then the capture in a hook (the closed
 *   volume), then instance_manager_start(), which runs whether or not the
 *   capture succeeded.  A start that fails is logged and leaves the
 *   instance stopped with its state reason; the image stands.
 *
 * - The image is `available` when CreateImage answers (the capture reads
 *   only what the instance wrote: docs/api.md).  BlockDeviceMapping.N is
 *   accepted and ignored: the image maps the root volume only.
 *
 * - Without a manager in the process (no `kiln serve`: nothing runs), the
 *   instance's row is read from the registry and a stopped instance is
 *   captured from its closed volume.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/log.h"
#include "registry/images.h"
#include "registry/instances.h"
#include "service/create-image.h"
#include "service/instances.h"
#include "service/service.h"

struct create_args {
    const char *instance_id;
    const char *name;
    const char *description;
    bool no_reboot;
    struct registry_tag *image_tags, *snapshot_tags;
    size_t n_image_tags, n_snapshot_tags;
};

struct hook {
    struct api_ctx *ctx;
    const struct create_args *a;
    bool check_only;  /* the first look of the reboot form: no capture */
    bool ran;         /* the hook ran (its -ENOENT is not the manager's) */
    bool needs_reboot; /* running and !NoReboot: stop, capture, start */
    struct service_image_create_result res;
};

static int instance_not_found(struct api_ctx *ctx, const char *id)
{
    return api_not_found(ctx, API_RES_INSTANCE, &id, 1);
}

/* The checks every form makes with the instance held: the caller's, not
 * terminated, the name free; then DryRun. */
static int check_instance(struct hook *h, const struct registry_instance *row,
                          struct region *rg)
{
    struct api_ctx *ctx = h->ctx;
    int r;

    if (strcmp(row->owner, ctx->account) != 0)
        return instance_not_found(ctx, h->a->instance_id);
    if (row->state == INSTANCE_TERMINATED || row->state == INSTANCE_SHUTTING_DOWN) {
        ctx->resource = API_RES_INSTANCE;
        return api_fail(ctx, API_ERR_IN_USE,
                        "The instance '%s' is not in a state from which it can be imaged "
                        "(it is %s)",
                        row->id, instance_state_to_string(row->state));
    }
    if (!row->root_volume_id[0]) {
        ctx->resource = API_RES_INSTANCE;
        return api_fail(ctx, API_ERR_IN_USE, "The instance '%s' has no root volume yet",
                        row->id);
    }
    r = api_image_name_check(ctx, rg, h->a->name);
    if (r == 0)
        r = api_dry_run(ctx);
    return r;
}

static int capture(struct hook *h, const struct registry_instance *row, struct region *rg,
                   struct volume *root, const char *agent_socket)
{
    struct api_ctx *ctx = h->ctx;
    const struct create_args *a = h->a;
    struct service_image_create_options o = {
        .owner = ctx->account,
        .name = a->name,
        .description = a->description,
        .image_tags = a->image_tags,
        .n_image_tags = a->n_image_tags,
        .snapshot_tags = a->snapshot_tags,
        .n_snapshot_tags = a->n_snapshot_tags,
    };
    int r = service_image_create(rg, row, root, agent_socket, &o, &h->res);

    if (r == -EEXIST) {
        ctx->resource = API_RES_IMAGE;
        return api_fail(ctx, API_ERR_DUPLICATE, "AMI name %s is already in use", a->name);
    }
    if (r == -EBUSY) {
        ctx->resource = API_RES_INSTANCE;
        return api_fail(ctx, API_ERR_IN_USE,
                        "The root volume of instance '%s' is open for writing by another "
                        "process",
                        row->id);
    }
    if (r < 0)
        return r;
    log_info("CreateImage: instance '%s' captured as image '%s' (snapshot '%s', %llu new "
             "bytes%s)",
             row->id, h->res.image_id, h->res.snapshot_id, (unsigned long long)h->res.bytes_new,
             h->res.frozen ? ", file system frozen" : "");
    return 0;
}

static int create_hook(const struct instance_view *iv, void *ud)
{
    struct hook *h = ud;
    bool running = iv->row->state == INSTANCE_RUNNING || iv->row->state == INSTANCE_PENDING;
    int r;

    h->ran = true;
    r = check_instance(h, iv->row, iv->region);
    if (r < 0)
        return r;
    if (h->check_only && running && !h->a->no_reboot) {
        h->needs_reboot = true;
        return 0;
    }
    return capture(h, iv->row, iv->region, iv->root, iv->agent_socket);
}

/* No manager in this process: only a stopped instance can be captured. */
static int create_offline(struct hook *h)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    _cleanup_(registry_instance_freep) struct registry_instance *row = NULL;
    struct api_ctx *ctx = h->ctx;
    int r = api_region_open(ctx, &rg);

    if (r < 0)
        return r;
    if (!rg)
        return instance_not_found(ctx, h->a->instance_id);
    r = registry_instance_get(rg->reg, h->a->instance_id, &row);
    if (r == -ENOENT)
        return instance_not_found(ctx, h->a->instance_id);
    if (r < 0)
        return r;
    region_free(rg);
    rg = NULL;
    r = region_open(ctx->data_dir, ctx->region, false, &rg);
    if (r < 0)
        return r;
    r = check_instance(h, row, rg);
    if (r < 0)
        return r;
    if (row->state != INSTANCE_STOPPED) {
        ctx->resource = API_RES_INSTANCE;
        return api_fail(ctx, API_ERR_IN_USE,
                        "The instance '%s' is %s and no instance manager runs here",
                        row->id, instance_state_to_string(row->state));
    }
    return capture(h, row, rg, NULL, NULL);
}

static int parse_args(struct api_ctx *ctx, const struct query *q, struct create_args *a)
{
    int r;

    a->instance_id = query_get(q, "InstanceId");
    if (!a->instance_id || !*a->instance_id)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter InstanceId");
    r = api_id_check(ctx, API_RES_INSTANCE, "i", a->instance_id);
    if (r < 0)
        return r;
    a->name = query_get(q, "Name");
    if (!a->name)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter Name");
    if (!image_name_is_valid(a->name))
        return api_fail(ctx, API_ERR_AMI_NAME_MALFORMED,
                        "AMI names must be between 3 and 128 characters long, and may contain "
                        "letters, numbers, spaces, '(', ')', '[', ']', '.', '/', '-', '\'', '@' "
                        "and '_' ('%.130s')",
                        a->name);
    a->description = query_get(q, "Description");
    if (a->description && strlen(a->description) > IMAGE_DESCRIPTION_MAX)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Description must be at most %d characters long", IMAGE_DESCRIPTION_MAX);
    r = api_get_bool(ctx, q, "NoReboot", &a->no_reboot);
    if (r < 0)
        return r;
    const struct api_tag_target targets[] = {
        {"image", &a->image_tags, &a->n_image_tags},
        {"snapshot", &a->snapshot_tags, &a->n_snapshot_tags},
    };
    return api_tag_specs_parse(ctx, q, targets, 2);
}

int api_create_image(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    struct instance_manager *m = instance_manager_get();
    struct create_args a = {0};
    struct hook h = {.ctx = ctx, .a = &a};
    int r = parse_args(ctx, q, &a);

    if (r < 0)
        goto out;
    if (!m) {
        r = create_offline(&h);
        goto done;
    }
    h.check_only = !a.no_reboot;
    r = instance_manager_with_instance(m, ctx->region, a.instance_id, create_hook, &h);
    if (r == -ENOENT && !h.ran)
        r = instance_not_found(ctx, a.instance_id);
    if (r < 0 || !h.needs_reboot)
        goto done;

    /* The clean reboot: stop, capture the closed volume, start again. */
    r = instance_manager_stop(m, ctx->region, a.instance_id, false, true);
    if (r < 0) {
        char why[512];
        snprintf(why, sizeof(why), "%s", error_message() ? error_message() : strerror(-r));
        ctx->resource = API_RES_INSTANCE;
        r = api_fail(ctx, API_ERR_IN_USE, "Cannot stop instance '%s' for CreateImage: %s",
                     a.instance_id, why);
        goto done;
    }
    h.check_only = false;
    h.ran = false;
    r = instance_manager_with_instance(m, ctx->region, a.instance_id, create_hook, &h);
    if (r == -ENOENT && !h.ran)
        r = instance_not_found(ctx, a.instance_id);
    {
        char why[512];
        snprintf(why, sizeof(why), "%s", error_message() ? error_message() : "");
        int s = instance_manager_start(m, ctx->region, a.instance_id);
        if (s < 0)
            log_warning("CreateImage: instance '%s' stayed stopped after its capture: %s",
                        a.instance_id, error_message() ? error_message() : strerror(-s));
        if (r < 0)
            error_set(r, "%s", why); /* the capture's message, not the start's */
    }
done:
    if (r >= 0) {
        xml_element(x, "imageId", h.res.image_id);
        r = 0;
    }
out:
    free(a.image_tags);
    free(a.snapshot_tags);
    return r;
}
