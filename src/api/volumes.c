/* The volume actions: CreateVolume, DescribeVolumes, DeleteVolume,
 * ModifyVolume (grow) and CreateSnapshot of a volume, over the service
 * functions of src/service/volumes.c.
 *
 * Design notes:
 *
 * - Visibility: a volume is its owner's; to every other account it does
 *   not exist (InvalidVolume.NotFound).  CreateVolume from a snapshot needs
 *   the snapshot to be usable by the caller (owned, or shared through a
 *   createVolumePermission or public), else InvalidSnapshot.NotFound.
 *
 * - Every parameter is checked before anything is written, and DryRun
 *   answers after those checks.  Writes open the region writable for the
 *   one request.
 *
 * - Timing: a volume is `available` as soon as CreateVolume answers
 *   (creating one copies nothing), but the answer says `creating`, as
 *   EC2's does (clients wait with the volume_available waiter).
 *   CreateSnapshot captures the volume's data before it answers (point in
 *   time: only what was written to the volume is read and chunked) and
 *   answers with the snapshot `pending`; the job runner of `kiln serve`
 *   verifies the new chunks and makes it `completed`
 *   (service_volume_snapshot_start()).  A volume attached to a running
 *   instance is open in this process (the instance manager serves it to
 *   QEMU): it is snapshotted through that handle, inside the manager's
 *   hook (instance_manager_with_volume()), and answers `completed`.
 *   ModifyVolume's modification is `completed` at once (a larger size is
 *   only a number: the new blocks read as zeros).
 *
 * - Paging: volumes are listed by (create time, id); a NextToken is the
 *   key of the last volume of the previous page.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/internal.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/ids.h"
#include "common/util.h"
#include "service/instances.h"
#include "service/service.h"
#include "volume/volume.h"

#define GiB (1ULL << 30)

static const char *const volume_filters[] = {
    "attachment.attach-time", "attachment.delete-on-termination", "attachment.device",
    "attachment.instance-id", "attachment.status", "availability-zone", "create-time",
    "encrypted", "multi-attach-enabled", "fast-restored", "size", "snapshot-id", "status",
    "volume-id", "volume-type", "tag:", "tag-key", NULL,
};

static int volume_id_check(struct api_ctx *ctx, const char *id)
{
    return api_id_check(ctx, API_RES_VOLUME, "vol", id);
}

static int volume_not_found(struct api_ctx *ctx, const char *const *ids, size_t n)
{
    return api_not_found(ctx, API_RES_VOLUME, ids, n);
}

/* An optional positive integer parameter no larger than max (0 when
 * absent). */
static int get_uint(struct api_ctx *ctx, const struct query *q, const char *name, long max,
                    long *ret)
{
    const char *v = query_get(q, name);
    char *end;

    *ret = 0;
    if (!v)
        return 0;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < 1 || n > max)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Value (%.40s) for parameter %s is invalid. Expected a number from 1 to "
                        "%ld.",
                        v, name, max);
    *ret = n;
    return 0;
}

static int set_tags(struct region *rg, const char *id, const struct registry_tag *tags,
                    size_t n)
{
    int r = 0;

    if (n == 0)
        return 0;
    r = registry_begin(rg->reg);
    for (size_t i = 0; r >= 0 && i < n; i++)
        r = registry_tag_set(rg->reg, id, tags[i].key, tags[i].value);
    if (r >= 0)
        r = registry_commit(rg->reg);
    if (r < 0)
        registry_rollback(rg->reg);
    return r < 0 ? r : 0;
}

/* The members of one volume (CreateVolume's answer, DescribeVolumes'
 * item); `state` overrides the row's (NULL: the row's). */
static void write_volume_fields(struct xml *x, const struct registry_volume *v,
                                const char *state, const struct registry_tag *tags,
                                size_t n_tags)
{
    char t[40];

    xml_element(x, "volumeId", v->id);
    xml_element_int(x, "size", v->size_gib);
    xml_element(x, "snapshotId", v->snapshot_id);
    xml_element(x, "availabilityZone", v->availability_zone);
    xml_element(x, "status", state ? state : volume_state_to_string(v->state));
    xml_element(x, "createTime", api_format_time(v->create_time, t, sizeof(t)));
    xml_open(x, "attachmentSet");
    if (v->instance_id[0]) {
        xml_open(x, "item");
        xml_element(x, "volumeId", v->id);
        xml_element(x, "instanceId", v->instance_id);
        xml_element(x, "device", v->device);
        xml_element(x, "status", "attached");
        xml_element(x, "attachTime", api_format_time(v->attach_time, t, sizeof(t)));
        xml_element_bool(x, "deleteOnTermination", false);
        xml_close(x);
    }
    xml_close(x);
    xml_element(x, "volumeType", v->volume_type);
    xml_element_int(x, "iops", v->iops);
    xml_element_int(x, "throughput", v->throughput);
    xml_element_bool(x, "encrypted", false);
    xml_element_bool(x, "multiAttachEnabled", false);
    api_write_tag_set(x, tags, n_tags);
}

/* ---- CreateVolume ---- */

int api_create_volume(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    _cleanup_free_ struct registry_tag *tags = NULL;
    _cleanup_free_ char *zone = xasprintf("%sa", ctx->region);
    _cleanup_(registry_volume_freep) struct registry_volume *v = NULL;
    struct registry_snapshot *snap = NULL;
    const char *az = query_get(q, "AvailabilityZone");
    const char *snap_id = query_get(q, "SnapshotId");
    const char *type = query_get(q, "VolumeType");
    size_t n_tags = 0;
    long size = 0, iops = 0, throughput = 0;
    bool encrypted = false, multi = false;
    char id[ID_MAX_SIZE];
    int r;

    if (!az || !*az)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter AvailabilityZone");
    if (strcmp(az, zone) != 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Invalid availability zone: [%.64s]", az);
    r = get_uint(ctx, q, "Size", VOLUME_SIZE_GIB_MAX, &size);
    if (r == 0)
        r = get_uint(ctx, q, "Iops", 16000, &iops);
    if (r == 0)
        r = get_uint(ctx, q, "Throughput", 1000, &throughput);
    if (r == 0)
        r = api_get_bool(ctx, q, "Encrypted", &encrypted);
    if (r == 0)
        r = api_get_bool(ctx, q, "MultiAttachEnabled", &multi);
    if (r < 0)
        return r;
    if (iops && iops < 3000)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Volume iops of %ld is too low; minimum is 3000.", iops);
    if (throughput && throughput < 125)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Volume throughput of %ld is too low; minimum is 125.", throughput);
    if (encrypted)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "kiln does not support encrypted volumes (Encrypted)");
    if (multi)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "kiln does not support Multi-Attach (MultiAttachEnabled)");
    if (type && strcmp(type, "gp3") != 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Volume type '%.20s' is not supported: kiln offers gp3", type);
    if (!snap_id && !size)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter size or snapshotId");
    if (snap_id && (r = api_snapshot_id_check(ctx, snap_id)) < 0)
        return r;
    r = api_tag_specs_parse(ctx, q, &(struct api_tag_target){"volume", &tags, &n_tags}, 1);
    if (r < 0)
        return r;

    r = region_open(ctx->data_dir, ctx->region, false, &rg);
    if (r < 0)
        return r;
    if (snap_id) {
        enum api_access acc = API_ACCESS_NONE;
        r = registry_snapshot_get(rg->reg, snap_id, &snap);
        if (r == 0)
            r = api_snapshot_access(ctx, rg, snap, &acc);
        if (r == -ENOENT || (r == 0 && acc == API_ACCESS_NONE))
            r = api_snapshot_not_found(ctx, &snap_id, 1);
        if (r == 0 && snap->state != SNAPSHOT_COMPLETED)
            r = api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                         "Snapshot '%s' is %s; a volume needs a completed snapshot.", snap_id,
                         snapshot_state_to_string(snap->state));
        if (r == 0) {
            uint64_t need = DIV_ROUND_UP(snap->volume_size, GiB);
            if (need == 0)
                need = 1;
            if (size && (uint64_t)size < need)
                r = api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                             "Volume of %ldGiB is too small; minimum is %" PRIu64 "GiB.", size,
                             need);
        }
        registry_snapshot_free(snap);
        if (r < 0)
            return r;
    }
    r = api_dry_run(ctx);
    if (r < 0)
        return r;

    struct service_volume_create_options o = {
        .owner = ctx->account, .snapshot_id = snap_id, .size_gib = (uint32_t)size,
        .availability_zone = az, .iops = (int)iops, .throughput = (int)throughput,
    };
    r = service_volume_create(rg, &o, id);
    if (r < 0)
        return r;
    r = set_tags(rg, id, tags, n_tags);
    if (r == 0)
        r = service_volume_get(rg, id, &v);
    if (r < 0)
        return r;
    /* EC2 answers `creating`; the volume is `available` from the next
     * DescribeVolumes on (what the volume_available waiter expects). */
    write_volume_fields(x, v, "creating", tags, n_tags);
    return 0;
}

/* ---- DescribeVolumes ---- */

static bool match_fields(const struct api_filters *fs, const struct registry_volume *v)
{
    char size[16], t[40];

    snprintf(size, sizeof(size), "%u", v->size_gib);
    api_format_time(v->create_time, t, sizeof(t));
    if (api_filters_has(fs, "attachment.instance-id") ||
        api_filters_has(fs, "attachment.device") || api_filters_has(fs, "attachment.status") ||
        api_filters_has(fs, "attachment.attach-time") ||
        api_filters_has(fs, "attachment.delete-on-termination")) {
        if (!v->instance_id[0])
            return false;
        char at[40];
        api_format_time(v->attach_time, at, sizeof(at));
        if (!api_filters_match(fs, "attachment.instance-id", v->instance_id) ||
            !api_filters_match(fs, "attachment.device", v->device) ||
            !api_filters_match(fs, "attachment.status", "attached") ||
            !api_filters_match(fs, "attachment.attach-time", at) ||
            !api_filters_match(fs, "attachment.delete-on-termination", "false"))
            return false;
    }
    return api_filters_match(fs, "availability-zone", v->availability_zone) &&
           api_filters_match(fs, "create-time", t) && api_filters_match(fs, "encrypted", "false") &&
           api_filters_match(fs, "multi-attach-enabled", "false") &&
           api_filters_match(fs, "fast-restored", "false") &&
           api_filters_match(fs, "size", size) &&
           api_filters_match(fs, "snapshot-id", v->snapshot_id) &&
           api_filters_match(fs, "status", volume_state_to_string(v->state)) &&
           api_filters_match(fs, "volume-id", v->id) &&
           api_filters_match(fs, "volume-type", v->volume_type);
}

/* Row k of a DescribeVolumes is volume `id` and the caller's. */
struct seen_volumes {
    struct registry_volume *const *rows;
    const char *account;
};

static bool volume_seen(const void *ud, size_t k, const char *id)
{
    const struct seen_volumes *s = ud;

    return strcmp(s->rows[k]->owner, s->account) == 0 && strcmp(s->rows[k]->id, id) == 0;
}

int api_describe_volumes(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_free_ const char **ids = NULL;
    struct api_candidates cs = {0};
    struct registry_volume **rows = NULL;
    struct api_describe d;
    struct region *rg;
    size_t n_ids = 0, n_rows = 0, n_page = 0;
    int r;

    r = query_get_list(q, "VolumeId", &ids, &n_ids);
    if (r < 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE, "%s",
                            error_message() ? error_message() : "malformed list");
    for (size_t i = 0; i < n_ids; i++) {
        r = volume_id_check(ctx, ids[i]);
        if (r < 0)
            return r;
    }
    r = api_describe_begin(ctx, q, n_ids > 0, "volumeIds", volume_filters, &d);
    if (r < 0)
        return r;
    rg = d.rg;
    if (rg) {
        r = registry_volume_list(rg->reg, &rows, &n_rows);
        if (r < 0)
            goto out;
    }

    /* Explicit ids must all name the caller's volumes. */
    r = api_ids_must_exist(ctx, ids, n_ids, n_rows, volume_seen,
                           &(struct seen_volumes){ rows, ctx->account }, volume_not_found);
    if (r < 0)
        goto out;

    api_candidates_init(&cs, n_rows);
    for (size_t k = 0; k < n_rows; k++) {
        struct registry_volume *v = rows[k];

        if (strcmp(v->owner, ctx->account) != 0 || (n_ids && !api_in_list(ids, n_ids, v->id)) ||
            !match_fields(&d.fs, v))
            continue;
        r = api_candidates_add(&cs, rg, &d.fs, d.after, v->create_time, v->id, v, true);
        if (r < 0)
            goto out;
    }
    r = api_candidates_page(&cs, rg, d.max, &n_page);
    if (r < 0)
        goto out;
    xml_open(x, "volumeSet");
    for (size_t i = 0; i < n_page; i++) {
        xml_open(x, "item");
        write_volume_fields(x, cs.c[i].row, NULL, cs.c[i].tags, cs.c[i].n_tags);
        xml_close(x);
    }
    xml_close(x);
    api_candidates_write_token(x, &cs, n_page);
    r = 0;
out:
    api_candidates_release(&cs);
    registry_volume_list_free(rows, n_rows);
    api_describe_release(&d);
    return r;
}

/* VolumeId: present and well formed. */
static int volume_id_param(struct api_ctx *ctx, const struct query *q, const char **ret_id)
{
    const char *id = query_get(q, "VolumeId");
    int r;

    if (!id || !*id)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter VolumeId");
    r = volume_id_check(ctx, id);
    if (r < 0)
        return r;
    *ret_id = id;
    return 0;
}

/* The caller's volume `id` from the region opened writable, or NotFound. */
static int open_own_volume(struct api_ctx *ctx, const char *id, struct region **ret_rg,
                           struct registry_volume **ret_v)
{
    struct registry_volume *v = NULL;
    int r = region_open(ctx->data_dir, ctx->region, false, ret_rg);

    if (r < 0)
        return r;
    r = registry_volume_get((*ret_rg)->reg, id, &v);
    if (r == -ENOENT || (r == 0 && strcmp(v->owner, ctx->account) != 0)) {
        registry_volume_free(v);
        return volume_not_found(ctx, &id, 1);
    }
    if (r < 0)
        return r;
    *ret_v = v;
    return 0;
}

/* ---- DeleteVolume ---- */

int api_delete_volume(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    _cleanup_(registry_volume_freep) struct registry_volume *v = NULL;
    const char *id = NULL;
    int r = volume_id_param(ctx, q, &id);

    if (r < 0)
        return r;
    r = open_own_volume(ctx, id, &rg, &v);
    if (r < 0)
        return r;
    if (v->instance_id[0] || v->state == VOLUME_IN_USE) {
        ctx->resource = API_RES_VOLUME;
        return api_fail(ctx, API_ERR_IN_USE, "Volume %s is currently attached to %s", id,
                        v->instance_id);
    }
    r = api_dry_run(ctx);
    if (r < 0)
        return r;
    r = service_volume_delete(rg, id);
    if (r == -EBUSY) {
        ctx->resource = API_RES_VOLUME;
        return api_fail(ctx, API_ERR_IN_USE, "Volume %s is in use", id);
    }
    if (r < 0)
        return r;
    xml_element_bool(x, "return", true);
    return 0;
}

/* ---- ModifyVolume ---- */

int api_modify_volume(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    _cleanup_(registry_volume_freep) struct registry_volume *v = NULL;
    const char *id = NULL, *type = query_get(q, "VolumeType");
    long size = 0, iops = 0, throughput = 0;
    char t[40];
    int r = volume_id_param(ctx, q, &id);

    if (r >= 0)
        r = get_uint(ctx, q, "Size", VOLUME_SIZE_GIB_MAX, &size);
    if (r >= 0)
        r = get_uint(ctx, q, "Iops", 16000, &iops);
    if (r >= 0)
        r = get_uint(ctx, q, "Throughput", 1000, &throughput);
    if (r < 0)
        return r;
    if (type && strcmp(type, "gp3") != 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Volume type '%.20s' is not supported: kiln offers gp3", type);
    if (query_get(q, "MultiAttachEnabled"))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "kiln does not support Multi-Attach (MultiAttachEnabled)");
    r = open_own_volume(ctx, id, &rg, &v);
    if (r < 0)
        return r;
    if ((iops && iops != v->iops) || (throughput && throughput != v->throughput))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "kiln changes only the size of a volume (Iops and Throughput are "
                        "%d and %d)",
                        v->iops, v->throughput);
    if (size && (uint32_t)size < v->size_gib)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "New size cannot be smaller than existing size (%uGiB).", v->size_gib);
    if (!size && !type && !iops && !throughput)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain at least one of Size, VolumeType, Iops or "
                        "Throughput");
    r = api_dry_run(ctx);
    if (r < 0)
        return r;
    uint32_t original = v->size_gib, target = size ? (uint32_t)size : v->size_gib;
    int64_t start = 0;
    {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        start = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    r = service_volume_grow(rg, id, target);
    if (r < 0)
        return r;
    xml_open(x, "volumeModification");
    xml_element(x, "volumeId", id);
    xml_element(x, "modificationState", "completed");
    xml_element_int(x, "targetSize", target);
    xml_element_int(x, "targetIops", v->iops);
    xml_element(x, "targetVolumeType", v->volume_type);
    xml_element_int(x, "targetThroughput", v->throughput);
    xml_element_bool(x, "targetMultiAttachEnabled", false);
    xml_element_int(x, "originalSize", original);
    xml_element_int(x, "originalIops", v->iops);
    xml_element(x, "originalVolumeType", v->volume_type);
    xml_element_int(x, "originalThroughput", v->throughput);
    xml_element_bool(x, "originalMultiAttachEnabled", false);
    xml_element(x, "progress", "100");
    xml_element(x, "startTime", api_format_time(start, t, sizeof(t)));
    xml_element(x, "endTime", api_format_time(start, t, sizeof(t)));
    xml_close(x);
    return 0;
}

/* ---- CreateSnapshot ---- */

struct attached_snapshot {
    const struct service_volume_snapshot_options *o;
    char *snap_id;
};

/* The hook for a volume attached to a running instance: the capture
 * through the manager's handle, completed when it returns (the handle's
 * writes are held off while the map is built; the guest is not frozen,
 * so the snapshot is crash-consistent, as EC2's of an attached volume). */
static int snapshot_attached(const struct instance_view *iv, void *ud)
{
    struct attached_snapshot *as = ud;

    if (!iv->root)
        return -ESRCH; /* stopped meanwhile: the ordinary path */
    return service_volume_snapshot_open(iv->region, iv->root, iv->root_volume_id, as->o,
                                        as->snap_id, NULL);
}

int api_create_snapshot(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    _cleanup_(registry_volume_freep) struct registry_volume *v = NULL;
    _cleanup_free_ struct registry_tag *tags = NULL;
    struct registry_snapshot *s = NULL;
    const char *id = NULL, *desc = query_get(q, "Description");
    size_t n_tags = 0;
    char snap_id[ID_MAX_SIZE], t[40], progress[8];
    int r = volume_id_param(ctx, q, &id);

    if (r < 0)
        return r;
    if (desc && strlen(desc) > 255)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "The description is longer than 255 characters");
    if (query_get(q, "OutpostArn") || query_get(q, "Location"))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "kiln keeps snapshots in the region (OutpostArn, Location)");
    r = api_tag_specs_parse(ctx, q, &(struct api_tag_target){"snapshot", &tags, &n_tags}, 1);
    if (r < 0)
        return r;
    r = open_own_volume(ctx, id, &rg, &v);
    if (r < 0)
        return r;
    r = api_dry_run(ctx);
    if (r < 0)
        return r;
    struct service_volume_snapshot_options o = { .owner = ctx->account, .description = desc };
    struct instance_manager *m = instance_manager_get();
    struct attached_snapshot as = { .o = &o, .snap_id = snap_id };
    /* A volume an instance runs on is open in this process (the instance
     * manager serves it over NBD): snapshot it through that handle.
     * Anything else (-ESRCH) takes the ordinary path. */
    r = m ? instance_manager_with_volume(m, ctx->region, id, snapshot_attached, &as) : -ESRCH;
    if (r == -ESRCH)
        r = service_volume_snapshot_start(rg, id, &o, snap_id);
    if (r == -EBUSY) {
        /* EC2 snapshots in-use volumes; kiln cannot hold another
         * process's writes off for a point-in-time capture (docs/api.md,
         * "Known differences"). */
        ctx->resource = API_RES_VOLUME;
        return api_fail(ctx, API_ERR_IN_USE,
                        "Volume %s is open for writing by another process (kiln nbd), "
                        "which kiln cannot pause for a point-in-time snapshot; stop that "
                        "process or snapshot the volume through it",
                        id);
    }
    if (r < 0)
        return r;
    r = set_tags(rg, snap_id, tags, n_tags);
    if (r == 0)
        r = registry_snapshot_get(rg->reg, snap_id, &s);
    if (r < 0)
        return r;
    snprintf(progress, sizeof(progress), "%d%%", s->progress);
    xml_element(x, "snapshotId", s->id);
    xml_element(x, "volumeId", id);
    xml_element(x, "status", snapshot_state_to_string(s->state));
    xml_element(x, "startTime", api_format_time(s->start_time, t, sizeof(t)));
    xml_element(x, "progress", progress);
    xml_element(x, "ownerId", s->owner);
    xml_element_int(x, "volumeSize", s->volume_size_gib);
    xml_element(x, "description", s->description ? s->description : "");
    xml_element_bool(x, "encrypted", false);
    xml_element(x, "storageTier", "standard");
    api_write_tag_set(x, tags, n_tags);
    registry_snapshot_free(s);
    return 0;
}

/* ---- DescribeVolumeAttribute ---- */

/* autoEnableIO (always false: kiln never suspends I/O) and productCodes
 * (always empty). */
int api_describe_volume_attribute(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    _cleanup_(registry_volume_freep) struct registry_volume *v = NULL;
    const char *id = NULL, *attr = query_get(q, "Attribute");
    int r = volume_id_param(ctx, q, &id);

    if (r < 0)
        return r;
    if (!attr || !*attr)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter Attribute");
    if (strcmp(attr, "autoEnableIO") != 0 && strcmp(attr, "productCodes") != 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Value (%.40s) for parameter attribute is invalid. Expected "
                        "autoEnableIO or productCodes.",
                        attr);
    r = api_region_open(ctx, &rg);
    if (r < 0)
        return r;
    if (rg)
        r = registry_volume_get(rg->reg, id, &v);
    if (!rg || r == -ENOENT || (r == 0 && strcmp(v->owner, ctx->account) != 0))
        return volume_not_found(ctx, &id, 1);
    if (r < 0)
        return r;
    r = api_dry_run(ctx);
    if (r < 0)
        return r;
    xml_element(x, "volumeId", id);
    if (strcmp(attr, "autoEnableIO") == 0) {
        xml_open(x, "autoEnableIO");
        xml_element_bool(x, "value", false);
        xml_close(x);
    } else {
        xml_open(x, "productCodes");
        xml_close(x);
    }
    return 0;
}
