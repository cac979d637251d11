/* The image actions (the wire reference's sections 1, 2.1, 2.4 and 4):
 * RegisterImage, DescribeImages, DeregisterImage, Describe/Modify/
 * ResetImageAttribute, Enable/DisableImageDeprecation,
 * Enable/DisableImageDeregistrationProtection and Enable/DisableImage.
 *
 * Design notes:
 *
 * - Visibility: an image is visible to its owner, to everybody when it is
 *   public (launch permission group "all") and to the accounts it is shared
 *   with (user launch permissions).  A deregistered image is visible to
 *   nobody (kiln drops it at once instead of "after a short interval").
 *   An image the caller cannot see answers exactly like one that does not
 *   exist (InvalidAMIID.NotFound); one it can see but does not own answers
 *   AuthFailure to anything that would change it.
 *
 * - Tags are the owner's: other accounts, even ones an image is shared
 *   with or public to, see an empty tagSet and their tag filters match
 *   against no tags (EC2 does the same).
 *
 * - DescribeImages asks the registry for the candidates (ids, owners,
 *   ExecutableBy, deprecated and disabled rules) and applies visibility,
 *   filters and paging here, like DescribeSnapshots; the sort key
 *   (creation date, id) becomes the NextToken.
 *
 * - Every write is one registry transaction that also holds the checks it
 *   depends on (the snapshots RegisterImage maps, the snapshots
 *   DeregisterImage deletes), so a concurrent DeleteSnapshot or
 *   RegisterImage cannot slip in between.
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
#include "registry/images.h"
#include "service/service.h"

#define MS_PER_MINUTE (60 * 1000LL)
#define MS_PER_DAY (24 * 60 * MS_PER_MINUTE)
#define MS_PER_YEAR (365 * MS_PER_DAY)
/* Deregistration stays blocked this long after protection with cooldown
 * is disabled (reference 4.16). */
#define DEREGISTRATION_COOLDOWN_MS MS_PER_DAY

static int64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void image_freep(struct registry_image **p)
{
    registry_image_free(*p);
}

int api_image_id_check(struct api_ctx *ctx, const char *id)
{
    return api_id_check(ctx, API_RES_IMAGE, "ami", id);
}

int api_image_not_found(struct api_ctx *ctx, const char *const *ids, size_t n)
{
    _cleanup_free_ char *list = api_join_ids(ids, n);

    ctx->resource = API_RES_IMAGE;
    if (n > 1)
        return api_fail(ctx, API_ERR_NOT_FOUND, "The image ids '[%s]' do not exist", list);
    return api_fail(ctx, API_ERR_NOT_FOUND, "The image id '[%s]' does not exist", list);
}

/* Whether the caller may see img at all (see the design notes). */
static bool image_visible(const struct api_ctx *ctx, const struct registry_image *img)
{
    return api_image_access(ctx, img) != API_ACCESS_NONE;
}

/* Whether the caller owns img, deregistered or not. */
static bool image_owned(const struct api_ctx *ctx, const struct registry_image *img)
{
    return api_access_decide(ctx->account, img->owner, false, false) == API_ACCESS_OWNER;
}

/* The ImageId parameter: present and well formed. */
static int get_image_id(struct api_ctx *ctx, const struct query *q, const char **ret)
{
    const char *id = query_get(q, "ImageId");

    if (!id)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter ImageId");
    *ret = id;
    return api_image_id_check(ctx, id);
}

/* Load image `id` for a change by its owner: NotFound when the caller
 * cannot see it, AuthFailure when it can but does not own it,
 * InvalidAMIID.Unavailable when the owner deregistered it. */
static int load_owned(struct api_ctx *ctx, struct region *rg, const char *id,
                      struct registry_image **ret)
{
    struct registry_image *img = NULL;
    int r = rg ? registry_image_get(rg->reg, id, &img) : -ENOENT;

    if (r == -ENOENT)
        return api_image_not_found(ctx, &id, 1);
    if (r < 0)
        return r;
    if (img->state == IMAGE_DEREGISTERED && image_owned(ctx, img))
        r = api_fail(ctx, API_ERR_IMAGE_UNAVAILABLE, "The image id '[%s]' is no longer available",
                     id);
    else
        r = api_access_require(ctx, API_RES_IMAGE, id, api_image_access(ctx, img),
                               API_ACCESS_OWNER);
    if (r < 0) {
        registry_image_free(img);
        return r;
    }
    *ret = img;
    return 0;
}

/* Open the region and start a transaction; an empty region has no
 * images, so every id is NotFound there. */
static int begin_write(struct api_ctx *ctx, const char *id, struct region **ret_rg)
{
    int r = api_region_open(ctx, ret_rg);

    if (r < 0)
        return r;
    if (!*ret_rg)
        return api_image_not_found(ctx, &id, 1);
    return registry_begin((*ret_rg)->reg);
}

/* EC2's deprecationTime format: 2030-01-02T03:04:05Z (no milliseconds). */
static const char *format_time_seconds(int64_t ms, char *buf, size_t size)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    if (!gmtime_r(&t, &tm))
        memset(&tm, 0, sizeof(tm));
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return buf;
}

static const char *protection_string(const struct registry_image *img, int64_t now, char *buf,
                                     size_t size)
{
    char t[40];

    if (img->deregistration_protection)
        return img->deregistration_cooldown ? "enabled-with-cooldown" : "enabled-without-cooldown";
    if (img->deregistration_blocked_until > now) {
        snprintf(buf, size, "disabled-until %s",
                 format_time_seconds(img->deregistration_blocked_until, t, sizeof(t)));
        return buf;
    }
    return "disabled";
}

/* ---- the Image shape ---- */

static void write_device(struct xml *x, const struct registry_image_device *d)
{
    xml_open(x, "item");
    xml_element(x, "deviceName", d->device_name);
    if (d->virtual_name)
        xml_element(x, "virtualName", d->virtual_name);
    if (d->no_device) {
        xml_element(x, "noDevice", "");
    } else if (!d->virtual_name) {
        xml_open(x, "ebs");
        if (d->snapshot_id[0])
            xml_element(x, "snapshotId", d->snapshot_id);
        if (d->volume_size_gib)
            xml_element_int(x, "volumeSize", d->volume_size_gib);
        xml_element_bool(x, "deleteOnTermination", d->delete_on_termination);
        if (d->volume_type)
            xml_element(x, "volumeType", d->volume_type);
        if (d->iops)
            xml_element_int(x, "iops", d->iops);
        if (d->throughput)
            xml_element_int(x, "throughput", d->throughput);
        xml_element_bool(x, "encrypted", d->encrypted);
        xml_close(x);
    }
    xml_close(x);
}

static void write_devices(struct xml *x, const struct registry_image *img)
{
    xml_open(x, "blockDeviceMapping");
    for (size_t i = 0; i < img->n_devices; i++)
        write_device(x, &img->devices[i]);
    xml_close(x);
}

static void write_image(const struct api_ctx *ctx, struct xml *x, const struct registry_image *img,
                        const char *provider, int64_t now)
{
    char t[40], prot[64];
    _cleanup_free_ char *location = xasprintf("%s/%s", img->owner, img->name);

    xml_open(x, "item");
    xml_element(x, "imageId", img->id);
    xml_element(x, "imageLocation", location);
    xml_element(x, "imageState", image_state_to_string(img->state));
    xml_element(x, "imageOwnerId", img->owner);
    xml_element(x, "creationDate", api_format_time(img->creation_date, t, sizeof(t)));
    xml_element_bool(x, "isPublic", img->is_public);
    xml_element(x, "architecture", img->architecture);
    xml_element(x, "imageType", "machine");
    if (img->kernel_id[0])
        xml_element(x, "kernelId", img->kernel_id);
    if (img->ramdisk_id[0])
        xml_element(x, "ramdiskId", img->ramdisk_id);
    if (strcmp(img->owner, provider) == 0)
        xml_element(x, "imageOwnerAlias", SERVICE_PROVIDER_ACCOUNT);
    xml_element(x, "name", img->name);
    if (img->description)
        xml_element(x, "description", img->description);
    xml_element(x, "rootDeviceType", img->root_device_type ? img->root_device_type : "ebs");
    xml_element(x, "rootDeviceName", img->root_device_name);
    write_devices(x, img);
    xml_element(x, "virtualizationType", img->virtualization_type);
    if (image_owned(ctx, img))
        api_write_tag_set(x, img->tags, img->n_tags);
    else
        api_write_tag_set(x, NULL, 0);
    xml_element(x, "hypervisor", "xen");
    xml_element_bool(x, "enaSupport", img->ena_support);
    if (img->sriov_net_support)
        xml_element(x, "sriovNetSupport", img->sriov_net_support);
    if (img->boot_mode)
        xml_element(x, "bootMode", img->boot_mode);
    if (img->tpm_support)
        xml_element(x, "tpmSupport", img->tpm_support);
    xml_element(x, "platformDetails", "Linux/UNIX");
    xml_element(x, "usageOperation", "RunInstances");
    if (img->deprecation_time)
        xml_element(x, "deprecationTime", format_time_seconds(img->deprecation_time, t, sizeof(t)));
    if (img->imds_support)
        xml_element(x, "imdsSupport", img->imds_support);
    xml_element(x, "deregistrationProtection", protection_string(img, now, prot, sizeof(prot)));
    if (img->last_launched_time)
        xml_element(x, "lastLaunchedTime", api_format_time(img->last_launched_time, t, sizeof(t)));
    if (img->source_image_id[0])
        xml_element(x, "sourceImageId", img->source_image_id);
    if (img->source_region)
        xml_element(x, "sourceImageRegion", img->source_region);
    if (img->state_reason_code || img->state_reason_message) {
        xml_open(x, "stateReason");
        xml_element(x, "code", img->state_reason_code ? img->state_reason_code : "");
        xml_element(x, "message", img->state_reason_message ? img->state_reason_message : "");
        xml_close(x);
    }
    xml_close(x);
}

/* ---- RegisterImage ---- */

static const char *const architectures[] = {"i386",       "x86_64",    "arm64",
                                            "x86_64_mac", "arm64_mac", NULL};
static const char *const virtualization_types[] = {"hvm", "paravirtual", NULL};
static const char *const boot_modes[] = {"legacy-bios", "uefi", "uefi-preferred", NULL};
static const char *const volume_types[] = {"standard", "io1", "io2", "gp2",
                                           "gp3",      "sc1", "st1", NULL};
static const char *const v20[] = {"v2.0", NULL};
static const char *const simple[] = {"simple", NULL};

static bool in_set(const char *const *set, const char *v)
{
    for (; *set; set++)
        if (strcmp(*set, v) == 0)
            return true;
    return false;
}

/* An optional enumerated parameter: *ret is the value, or def when absent. */
static int get_enum(struct api_ctx *ctx, const struct query *q, const char *name,
                    const char *const *set, const char *def, const char **ret)
{
    const char *v = query_get(q, name);

    if (!v) {
        *ret = def;
        return 0;
    }
    if (!in_set(set, v))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Value (%.100s) for parameter %s is invalid", v, name);
    *ret = v;
    return 0;
}

static int get_u32(struct api_ctx *ctx, const struct query *q, const char *name, uint32_t max,
                   const char *label, uint32_t *ret)
{
    const char *v = query_get(q, name);
    unsigned long n;
    char *end;

    *ret = 0;
    if (!v)
        return 0;
    errno = 0;
    n = strtoul(v, &end, 10);
    if (v[0] < '0' || v[0] > '9' || *end || errno || n > max)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Value (%.40s) for parameter %s is invalid", v, label);
    *ret = (uint32_t)n;
    return 0;
}

struct tag_spec_tag {
    const char *key, *value;
};

struct register_args {
    struct registry_image img;
    struct registry_image_device *devices; /* strings borrowed from the query */
    size_t n_devices;
    struct registry_tag *image_tags; /* borrowed strings */
    size_t n_image_tags;
    struct registry_tag *snapshot_tags;
    size_t n_snapshot_tags;
};

static void register_args_release(struct register_args *a)
{
    free(a->devices);
    free(a->image_tags);
    free(a->snapshot_tags);
}

static int parse_device(struct api_ctx *ctx, const struct query_item *it,
                        struct registry_image_device *d)
{
    const struct query *f = &it->fields;
    const char *snap = query_get(f, "Ebs.SnapshotId");
    const char *type = query_get(f, "Ebs.VolumeType");
    char label[64];
    bool v;
    int r;

    memset(d, 0, sizeof(*d));
    d->device_name = (char *)query_get(f, "DeviceName");
    if (!d->device_name || !d->device_name[0])
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter BlockDeviceMapping.%lu.DeviceName",
                        it->index);
    if (snap) {
        if (!id_is_valid("snap", snap))
            return api_snapshot_id_check(ctx, snap);
        snprintf(d->snapshot_id, sizeof(d->snapshot_id), "%s", snap);
    }
    snprintf(label, sizeof(label), "BlockDeviceMapping.%lu.Ebs.VolumeSize", it->index);
    r = get_u32(ctx, f, "Ebs.VolumeSize", 65536, label, &d->volume_size_gib);
    if (r < 0)
        return r;
    if (type && !in_set(volume_types, type))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Value (%.40s) for parameter volumeType is invalid", type);
    d->volume_type = (char *)type;
    d->delete_on_termination = true;
    if (query_get(f, "Ebs.DeleteOnTermination")) {
        r = api_get_bool(ctx, f, "Ebs.DeleteOnTermination", &v);
        if (r < 0)
            return r;
        d->delete_on_termination = v;
    }
    r = api_get_bool(ctx, f, "Ebs.Encrypted", &v);
    if (r < 0)
        return r;
    if (v)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "kiln does not support encrypted volumes (BlockDeviceMapping.%lu)",
                        it->index);
    snprintf(label, sizeof(label), "BlockDeviceMapping.%lu.Ebs.Iops", it->index);
    r = get_u32(ctx, f, "Ebs.Iops", 256000, label, &d->iops);
    if (r < 0)
        return r;
    snprintf(label, sizeof(label), "BlockDeviceMapping.%lu.Ebs.Throughput", it->index);
    r = get_u32(ctx, f, "Ebs.Throughput", 2000, label, &d->throughput);
    if (r < 0)
        return r;
    d->virtual_name = (char *)query_get(f, "VirtualName");
    if (d->virtual_name) {
        const char *n = d->virtual_name;
        char *end;
        unsigned long k;
        if (strncmp(n, "ephemeral", 9) != 0 || n[9] < '0' || n[9] > '9' ||
            (k = strtoul(n + 9, &end, 10), *end) || k > 23)
            return api_fail(ctx, API_ERR_INVALID_BLOCK_DEVICE_MAPPING,
                            "Invalid virtual name '%.40s' (expecting ephemeral0 to ephemeral23)",
                            n);
        if (snap || d->volume_size_gib || type)
            return api_fail(ctx, API_ERR_INVALID_BLOCK_DEVICE_MAPPING,
                            "Block device mapping %.40s has both a virtual name and an EBS "
                            "volume",
                            d->device_name);
    }
    d->no_device = query_get(f, "NoDevice") != NULL;
    return 0;
}

static int parse_register(struct api_ctx *ctx, const struct query *q, struct register_args *a)
{
    struct registry_image *img = &a->img;
    struct query_item *items = NULL;
    size_t n_items = 0;
    const char *v, *arch, *virt, *boot, *imds, *tpm, *sriov;
    int r;

    img->name = (char *)query_get(q, "Name");
    if (!img->name)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter Name");
    if (!image_name_is_valid(img->name))
        return api_fail(ctx, API_ERR_AMI_NAME_MALFORMED,
                        "AMI names must be between 3 and 128 characters long, and may contain "
                        "letters, numbers, spaces, '(', ')', '[', ']', '.', '/', '-', '\'', '@' "
                        "and '_' ('%.130s')",
                        img->name);
    img->description = (char *)query_get(q, "Description");
    if (img->description && strlen(img->description) > IMAGE_DESCRIPTION_MAX)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Description must be at most %d characters long", IMAGE_DESCRIPTION_MAX);
    if (query_get(q, "ImageLocation"))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "kiln registers images from snapshots only: ImageLocation (S3 "
                        "manifests) is not supported");
    if (query_get(q, "KernelId") || query_get(q, "RamdiskId"))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "kiln does not support kernel or ramdisk images");
    if (query_get(q, "BillingProduct.1"))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "kiln does not support billing products");
    if (query_get(q, "UefiData"))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE, "kiln does not support UefiData");
    r = get_enum(ctx, q, "Architecture", architectures, "x86_64", &arch);
    if (r == 0)
        r = get_enum(ctx, q, "VirtualizationType", virtualization_types, "hvm", &virt);
    if (r == 0)
        r = get_enum(ctx, q, "BootMode", boot_modes, NULL, &boot);
    if (r == 0)
        r = get_enum(ctx, q, "ImdsSupport", v20, NULL, &imds);
    if (r == 0)
        r = get_enum(ctx, q, "TpmSupport", v20, NULL, &tpm);
    if (r == 0)
        r = get_enum(ctx, q, "SriovNetSupport", simple, NULL, &sriov);
    if (r == 0)
        r = api_get_bool(ctx, q, "EnaSupport", &img->ena_support);
    if (r < 0)
        return r;
    v = query_get(q, "RootDeviceName");
    img->root_device_name = (char *)(v ? v : "/dev/xvda");
    if (!img->root_device_name[0] || strlen(img->root_device_name) > 64)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Value (%.64s) for parameter rootDeviceName is invalid",
                        img->root_device_name);
    img->root_device_type = (char *)"ebs";
    /* The registry copies what it is given; these borrow from the query
     * and the constant tables. */
    img->architecture = (char *)arch;
    img->virtualization_type = (char *)virt;
    img->boot_mode = (char *)boot;
    img->imds_support = (char *)imds;
    img->tpm_support = (char *)tpm;
    img->sriov_net_support = (char *)sriov;

    r = query_get_structs(q, "BlockDeviceMapping", &items, &n_items);
    if (r < 0)
        return r;
    if (n_items == 0) {
        r = api_fail(ctx, API_ERR_MISSING_PARAMETER,
                     "The request must contain the parameter BlockDeviceMapping (kiln "
                     "registers images from snapshots)");
        goto out;
    }
    if (n_items > IMAGE_DEVICES_MAX) {
        r = api_fail(ctx, API_ERR_INVALID_BLOCK_DEVICE_MAPPING,
                     "At most %d block device mappings are allowed", IMAGE_DEVICES_MAX);
        goto out;
    }
    a->devices = xcalloc(n_items, sizeof(*a->devices));
    for (size_t i = 0; i < n_items; i++) {
        r = parse_device(ctx, &items[i], &a->devices[i]);
        if (r < 0)
            goto out;
        for (size_t k = 0; k < i; k++)
            if (strcmp(a->devices[k].device_name, a->devices[i].device_name) == 0) {
                r = api_fail(ctx, API_ERR_INVALID_BLOCK_DEVICE_MAPPING,
                             "The device '%.64s' is used in more than one block device mapping",
                             a->devices[i].device_name);
                goto out;
            }
        a->n_devices++;
    }
    {
        const struct registry_image_device *root = NULL;
        for (size_t i = 0; i < a->n_devices; i++)
            if (strcmp(a->devices[i].device_name, img->root_device_name) == 0)
                root = &a->devices[i];
        if (!root || !root->snapshot_id[0] || root->no_device) {
            r = api_fail(ctx, API_ERR_INVALID_BLOCK_DEVICE_MAPPING,
                         "The root device '%.64s' needs a block device mapping with "
                         "Ebs.SnapshotId",
                         img->root_device_name);
            goto out;
        }
    }
    img->devices = a->devices;
    img->n_devices = a->n_devices;
    /* TagSpecification.N: the image, or every snapshot the image maps. */
    const struct api_tag_target targets[] = {
        {"image", &a->image_tags, &a->n_image_tags},
        {"snapshot", &a->snapshot_tags, &a->n_snapshot_tags},
    };
    r = api_tag_specs_parse(ctx, q, targets, 2);
out:
    query_items_free(items, n_items);
    return r;
}

/* Every mapped snapshot exists, is the caller's or shared with the caller
 * (createVolumePermission: api_snapshot_access()) and completed; sizes
 * are filled in from the snapshots and checked against them. */
static int check_mapped_snapshots(struct api_ctx *ctx, struct region *rg, struct register_args *a)
{
    for (size_t i = 0; i < a->n_devices; i++) {
        struct registry_image_device *d = &a->devices[i];
        struct registry_snapshot *s = NULL;
        const char *sid = d->snapshot_id;
        enum api_access access = API_ACCESS_NONE;
        int r;

        if (!sid[0])
            continue;
        r = registry_snapshot_get(rg->reg, sid, &s);
        if (r == 0)
            r = api_snapshot_access(ctx, rg, s, &access);
        if (r == -ENOENT ||
            (r == 0 && (access == API_ACCESS_NONE || s->state != SNAPSHOT_COMPLETED))) {
            registry_snapshot_free(s);
            return api_snapshot_not_found(ctx, &sid, 1);
        }
        if (r < 0) {
            registry_snapshot_free(s);
            return r;
        }
        /* Tags are the owner's: a shared snapshot takes none. */
        if (a->n_snapshot_tags && access != API_ACCESS_OWNER) {
            registry_snapshot_free(s);
            return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                            "Cannot tag snapshot '%s': it belongs to another account", sid);
        }
        if (d->volume_size_gib == 0) {
            d->volume_size_gib = s->volume_size_gib;
        } else if (d->volume_size_gib < s->volume_size_gib) {
            uint32_t need = s->volume_size_gib;
            registry_snapshot_free(s);
            return api_fail(ctx, API_ERR_INVALID_BLOCK_DEVICE_MAPPING,
                            "Volume of size %" PRIu32 "GB is smaller than snapshot '%s', "
                            "expect size >= %" PRIu32 "GB",
                            d->volume_size_gib, sid, need);
        }
        registry_snapshot_free(s);
    }
    return 0;
}

int api_image_name_check(struct api_ctx *ctx, struct region *rg, const char *name)
{
    const char *owners[] = {ctx->account}, *names[] = {name};
    /* A valid name has no '*', '?' or backslash, so as a pattern it
     * matches itself only: one index lookup, not every image the owner
     * has (which made registering N images cost N^2). */
    struct image_query iq = {
        .owners = owners,
        .n_owners = 1,
        .names = names,
        .n_names = 1,
        .include_deprecated = true,
        .include_disabled = true,
        .caller = ctx->account,
    };
    struct registry_image **list = NULL;
    char *token = NULL;
    size_t n = 0;
    int r = registry_image_list(rg->reg, &iq, &list, &n, &token);

    if (r < 0)
        return r;
    free(token);
    r = 0;
    for (size_t i = 0; i < n && r == 0; i++)
        if (list[i]->state != IMAGE_DEREGISTERED && strcmp(list[i]->name, name) == 0) {
            ctx->resource = API_RES_IMAGE;
            r = api_fail(ctx, API_ERR_DUPLICATE, "AMI name %s is already in use by AMI %s", name,
                         list[i]->id);
        }
    registry_image_list_free(list, n);
    return r;
}

static int register_image(struct api_ctx *ctx, struct region *rg, struct register_args *a)
{
    int r = check_mapped_snapshots(ctx, rg, a);

    if (r == 0)
        r = api_image_name_check(ctx, rg, a->img.name);
    if (r == 0)
        r = api_dry_run(ctx);
    if (r < 0)
        return r;
    r = id_generate("ami", a->img.id, sizeof(a->img.id));
    if (r < 0)
        return r;
    snprintf(a->img.owner, sizeof(a->img.owner), "%s", ctx->account);
    a->img.state = IMAGE_AVAILABLE;
    a->img.creation_date = wall_ms();
    r = registry_image_insert(rg->reg, &a->img, a->image_tags, a->n_image_tags);
    if (r == -EEXIST) {
        ctx->resource = API_RES_IMAGE;
        return api_fail(ctx, API_ERR_DUPLICATE, "AMI name %s is already in use", a->img.name);
    }
    if (r < 0)
        return r;
    /* Snapshot tags go on every distinct mapped snapshot. */
    for (size_t i = 0; i < a->n_devices && a->n_snapshot_tags; i++) {
        const char *sid = a->devices[i].snapshot_id;
        struct registry_tag *now = NULL;
        size_t n_now = 0;
        bool seen = false;

        if (!sid[0])
            continue;
        for (size_t k = 0; k < i && !seen; k++)
            seen = strcmp(a->devices[k].snapshot_id, sid) == 0;
        if (seen)
            continue;
        for (size_t k = 0; k < a->n_snapshot_tags; k++) {
            r = registry_tag_set(rg->reg, sid, a->snapshot_tags[k].key, a->snapshot_tags[k].value);
            if (r < 0)
                return r;
        }
        r = registry_tag_list(rg->reg, sid, &now, &n_now);
        if (r < 0)
            return r;
        registry_tag_list_free(now, n_now);
        if (n_now > API_TAGS_PER_RESOURCE_MAX)
            return api_fail(ctx, API_ERR_TAG_LIMIT_EXCEEDED,
                            "The maximum number of tags per resource (%d) would be exceeded "
                            "for '%s'",
                            API_TAGS_PER_RESOURCE_MAX, sid);
    }
    return 0;
}

int api_register_image(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    struct register_args a = {0};
    int r;

    r = parse_register(ctx, q, &a);
    if (r < 0)
        goto out;
    r = api_region_open(ctx, &rg);
    if (r < 0)
        goto out;
    if (!rg) {
        /* An empty region has no snapshots to map. */
        const char *sid = a.devices[0].snapshot_id;
        for (size_t i = 0; i < a.n_devices; i++)
            if (a.devices[i].snapshot_id[0])
                sid = a.devices[i].snapshot_id;
        r = api_snapshot_not_found(ctx, &sid, 1);
        goto out;
    }
    r = registry_begin(rg->reg);
    if (r < 0)
        goto out;
    r = registry_end(rg->reg, register_image(ctx, rg, &a));
    if (r < 0)
        goto out;
    xml_element(x, "imageId", a.img.id);
    r = 0;
out:
    register_args_release(&a);
    return r;
}

/* ---- DescribeImages ---- */

static const char *const image_filters[] = {
    "architecture",
    "block-device-mapping.delete-on-termination",
    "block-device-mapping.device-name",
    "block-device-mapping.encrypted",
    "block-device-mapping.snapshot-id",
    "block-device-mapping.volume-size",
    "block-device-mapping.volume-type",
    "boot-mode",
    "creation-date",
    "deprecation-time",
    "description",
    "ena-support",
    "hypervisor",
    "image-id",
    "image-type",
    "imds-support",
    "is-public",
    "kernel-id",
    "manifest-location",
    "name",
    "owner-alias",
    "owner-id",
    "platform",
    "product-code",
    "product-code.type",
    "ramdisk-id",
    "root-device-name",
    "root-device-type",
    "source-image-id",
    "source-image-region",
    "source-instance-id",
    "sriov-net-support",
    "state",
    "state-reason-code",
    "state-reason-message",
    "tag-key",
    "tag:",
    "tpm-support",
    "virtualization-type",
    NULL,
};

/* Filters that look at several values of one image (its devices, its
 * tag keys): each filter with `name` must match one of the values. */
static bool match_any(const struct api_filters *fs, const char *name, const char *const *values,
                      size_t n)
{
    for (size_t i = 0; i < fs->n; i++) {
        bool ok = false;
        if (strcmp(fs->f[i].name, name) != 0)
            continue;
        for (size_t k = 0; k < n && !ok; k++)
            ok = api_filter_match_one(&fs->f[i], values[k]);
        if (!ok)
            return false;
    }
    return true;
}

static bool has_device_filter(const struct api_filters *fs)
{
    for (size_t i = 0; i < fs->n; i++)
        if (strncmp(fs->f[i].name, "block-device-mapping.", 21) == 0)
            return true;
    return false;
}

static bool match_devices(const struct api_filters *fs, const struct registry_image *img)
{
    size_t n = img->n_devices;
    _cleanup_free_ const char **names = xcalloc(n + 1, sizeof(*names));
    _cleanup_free_ const char **snaps = xcalloc(n + 1, sizeof(*snaps));
    _cleanup_free_ const char **types = xcalloc(n + 1, sizeof(*types));
    _cleanup_free_ const char **dots = xcalloc(n + 1, sizeof(*dots));
    _cleanup_free_ const char **encs = xcalloc(n + 1, sizeof(*encs));
    _cleanup_free_ char *sizes = xcalloc(n + 1, 16);
    _cleanup_free_ const char **size_ptrs = xcalloc(n + 1, sizeof(*size_ptrs));
    size_t n_snaps = 0, n_types = 0, n_sizes = 0;

    for (size_t i = 0; i < n; i++) {
        const struct registry_image_device *d = &img->devices[i];
        names[i] = d->device_name;
        if (d->snapshot_id[0])
            snaps[n_snaps++] = d->snapshot_id;
        if (d->volume_type)
            types[n_types++] = d->volume_type;
        if (d->volume_size_gib) {
            snprintf(sizes + 16 * n_sizes, 16, "%" PRIu32, d->volume_size_gib);
            size_ptrs[n_sizes] = sizes + 16 * n_sizes;
            n_sizes++;
        }
        dots[i] = d->delete_on_termination ? "true" : "false";
        encs[i] = d->encrypted ? "true" : "false";
    }
    return match_any(fs, "block-device-mapping.device-name", names, n) &&
           match_any(fs, "block-device-mapping.snapshot-id", snaps, n_snaps) &&
           match_any(fs, "block-device-mapping.volume-type", types, n_types) &&
           match_any(fs, "block-device-mapping.volume-size", size_ptrs, n_sizes) &&
           match_any(fs, "block-device-mapping.delete-on-termination", dots, n) &&
           match_any(fs, "block-device-mapping.encrypted", encs, n);
}

/* tag:KEY and tag-key over the tags the caller may see. */
static bool match_image(const struct api_ctx *ctx, const struct api_filters *fs,
                        const struct registry_image *img, const char *provider)
{
    char created[40] = "", deprecated[40] = "";
    _cleanup_free_ char *location = NULL;
    bool owned = image_owned(ctx, img);

    if (!fs->n)
        return true;
    /* Only the provider's images have an owner alias; nothing here has a
     * platform, product codes, a kernel or ramdisk, or was made from an
     * instance. */
    if (api_filters_has(fs, "owner-alias") &&
        (strcmp(img->owner, provider) != 0 ||
         !api_filters_match(fs, "owner-alias", SERVICE_PROVIDER_ACCOUNT)))
        return false;
    if (api_filters_has(fs, "platform") || api_filters_has(fs, "product-code") ||
        api_filters_has(fs, "product-code.type") || api_filters_has(fs, "kernel-id") ||
        api_filters_has(fs, "ramdisk-id") || api_filters_has(fs, "source-instance-id"))
        return false;
    if ((api_filters_has(fs, "boot-mode") && !img->boot_mode) ||
        (api_filters_has(fs, "sriov-net-support") && !img->sriov_net_support) ||
        (api_filters_has(fs, "imds-support") && !img->imds_support) ||
        (api_filters_has(fs, "tpm-support") && !img->tpm_support) ||
        (api_filters_has(fs, "deprecation-time") && !img->deprecation_time) ||
        (api_filters_has(fs, "source-image-id") && !img->source_image_id[0]) ||
        (api_filters_has(fs, "source-image-region") && !img->source_region) ||
        (api_filters_has(fs, "state-reason-code") && !img->state_reason_code) ||
        (api_filters_has(fs, "state-reason-message") && !img->state_reason_message))
        return false;
    /* Formatted only when a filter looks at them: this runs for every
     * candidate. */
    if (api_filters_has(fs, "creation-date"))
        api_format_time(img->creation_date, created, sizeof(created));
    if (api_filters_has(fs, "deprecation-time"))
        format_time_seconds(img->deprecation_time, deprecated, sizeof(deprecated));
    location = api_filters_has(fs, "manifest-location") ? xasprintf("%s/%s", img->owner, img->name)
                                                        : xstrdup("");
    return api_filters_match(fs, "architecture", img->architecture) &&
           api_filters_match(fs, "creation-date", created) &&
           api_filters_match(fs, "deprecation-time", deprecated) &&
           api_filters_match(fs, "description", img->description ? img->description : "") &&
           api_filters_match(fs, "ena-support", img->ena_support ? "true" : "false") &&
           api_filters_match(fs, "hypervisor", "xen") &&
           api_filters_match(fs, "image-id", img->id) &&
           api_filters_match(fs, "image-type", "machine") &&
           api_filters_match(fs, "is-public", img->is_public ? "true" : "false") &&
           api_filters_match(fs, "manifest-location", location) &&
           api_filters_match(fs, "name", img->name) &&
           api_filters_match(fs, "owner-id", img->owner) &&
           api_filters_match(fs, "root-device-name", img->root_device_name) &&
           api_filters_match(fs, "root-device-type",
                             img->root_device_type ? img->root_device_type : "ebs") &&
           api_filters_match(fs, "state", image_state_to_string(img->state)) &&
           api_filters_match(fs, "virtualization-type", img->virtualization_type) &&
           (!img->boot_mode || api_filters_match(fs, "boot-mode", img->boot_mode)) &&
           (!img->sriov_net_support ||
            api_filters_match(fs, "sriov-net-support", img->sriov_net_support)) &&
           (!img->imds_support || api_filters_match(fs, "imds-support", img->imds_support)) &&
           (!img->tpm_support || api_filters_match(fs, "tpm-support", img->tpm_support)) &&
           (!img->source_image_id[0] ||
            api_filters_match(fs, "source-image-id", img->source_image_id)) &&
           (!img->source_region ||
            api_filters_match(fs, "source-image-region", img->source_region)) &&
           (!img->state_reason_code ||
            api_filters_match(fs, "state-reason-code", img->state_reason_code)) &&
           (!img->state_reason_message ||
            api_filters_match(fs, "state-reason-message", img->state_reason_message)) &&
           (!has_device_filter(fs) || match_devices(fs, img)) &&
           (owned ? api_filters_match_tags(fs, img->tags, img->n_tags)
                  : api_filters_match_tags(fs, NULL, 0));
}

/* What DescribeImages hands the registry besides ids and owners: the name
 * and tag filters, as registry patterns (images.h) that match at least
 * what the API's patterns match, so that the registry returns the few
 * candidates instead of every image, and match_image() still decides.
 * The API's patterns are fnmatch's without escapes: '*' and '?' wildcards,
 * '[' a bracket expression, a backslash literal. */
struct prefilter {
    const char *const *names;
    size_t n_names;
    struct image_tag_filter *tags;
    size_t n_tags;
    char **owned; /* every string and array allocated here */
    size_t n_owned;
};

static void *prefilter_own(struct prefilter *p, void *mem)
{
    p->owned[p->n_owned++] = mem;
    return mem;
}

/* The registry pattern for API pattern `v`, or NULL when there is none
 * simple enough: a bracket expression, or a non-ASCII byte (where '?'
 * may mean a byte to one and a character to the other).  A backslash
 * becomes an escaped backslash; '?' becomes '*', a superset whatever a
 * character is. */
static char *prefilter_pattern(const char *v)
{
    char *out = xmalloc(2 * strlen(v) + 1), *o = out;

    for (const unsigned char *c = (const unsigned char *)v; *c; c++) {
        if (*c == '[' || *c >= 0x80) {
            free(out);
            return NULL;
        }
        if (*c == '\\')
            *o++ = '\\';
        *o++ = *c == '?' ? '*' : (char)*c;
    }
    *o = '\0';
    return out;
}

/* Registry patterns for every value of `f` into a new array (owned by p),
 * or NULL when one of them has none: the filter is then left to
 * match_image() alone. */
static const char **prefilter_values(struct prefilter *p, const struct api_filter *f)
{
    const char **vals = prefilter_own(p, xcalloc(f->n_values + 1, sizeof(*vals)));

    for (size_t i = 0; i < f->n_values; i++) {
        char *g = prefilter_pattern(f->values[i]);
        if (!g)
            return NULL;
        vals[i] = prefilter_own(p, g);
    }
    return vals;
}

/* Fill p from the filters: the first "name" filter (the registry ORs one
 * list of names), and every tag:KEY and tag-key filter (ANDed, as the API
 * does).  A filter without values matches nothing in the API; it is not
 * passed on (the registry reads an empty list as "no restriction"). */
static void prefilter_build(struct prefilter *p, const struct api_filters *fs)
{
    size_t n_strings = 0;

    for (size_t i = 0; i < fs->n; i++)
        n_strings += fs->f[i].n_values + 1;
    p->owned = xcalloc(n_strings + 1, sizeof(*p->owned));
    p->tags = prefilter_own(p, xcalloc(fs->n + 1, sizeof(*p->tags)));
    for (size_t i = 0; i < fs->n; i++) {
        const struct api_filter *f = &fs->f[i];
        bool is_tag = strncmp(f->name, "tag:", 4) == 0, is_key = strcmp(f->name, "tag-key") == 0;
        const char **vals;

        if (!f->n_values || (strcmp(f->name, "name") != 0 && !is_tag && !is_key))
            continue;
        if (!is_tag && !is_key && p->n_names)
            continue;
        vals = prefilter_values(p, f);
        if (!vals)
            continue;
        if (is_tag || is_key) {
            p->tags[p->n_tags++] = (struct image_tag_filter){
                .key = is_tag ? f->name + 4 : NULL, .values = vals, .n_values = f->n_values};
        } else {
            p->names = vals;
            p->n_names = f->n_values;
        }
    }
}

static void prefilter_release(struct prefilter *p)
{
    for (size_t i = 0; i < p->n_owned; i++)
        free(p->owned[i]);
    free(p->owned);
}

int api_describe_images(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_free_ const char **ids = NULL, **owners = NULL, **users = NULL, **accounts = NULL;
    _cleanup_free_ const char **missing = NULL;
    _cleanup_free_ char *after = NULL, *token = NULL;
    struct region *rg = NULL; /* kept open between requests: region-cache.c */
    struct registry_image **rows = NULL;
    struct api_filters fs = {0};
    struct prefilter pf = {0};
    size_t n_ids, n_owners, n_users, n_accounts = 0, n_rows = 0, max, n_missing = 0;
    char provider[ACCOUNT_ID_SIZE];
    bool include_deprecated, include_disabled;
    int64_t now = wall_ms();
    int r;

    r = query_get_list(q, "ImageId", &ids, &n_ids);
    if (r == 0)
        r = query_get_list(q, "Owner", &owners, &n_owners);
    if (r == 0)
        r = query_get_list(q, "ExecutableBy", &users, &n_users);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n_ids; i++) {
        r = api_image_id_check(ctx, ids[i]);
        if (r < 0)
            return r;
    }
    r = api_owners_resolve(ctx, owners, n_owners, provider, &accounts, &n_accounts);
    if (r == 0)
        r = api_users_resolve(ctx, users, n_users);
    if (r == 0)
        r = api_get_bool(ctx, q, "IncludeDeprecated", &include_deprecated);
    if (r == 0)
        r = api_get_bool(ctx, q, "IncludeDisabled", &include_disabled);
    if (r == 0)
        r = api_paging_parse(ctx, q, n_ids > 0, "imageIds", &max, &after);
    if (r < 0)
        return r;
    r = api_filters_parse(ctx, q, image_filters, &fs);
    if (r < 0)
        return r;
    r = api_dry_run(ctx);
    if (r < 0)
        goto out;
    r = api_region_acquire(ctx, &rg);
    if (r < 0)
        goto out;
    /* Ids asked for must be told apart from missing ones, below, so the
     * registry filters only lists. */
    if (!n_ids)
        prefilter_build(&pf, &fs);
    /* Only aliases asked for: they own nothing here. */
    if (rg && !(n_owners && n_accounts == 0)) {
        struct image_query iq = {
            .ids = ids,
            .n_ids = n_ids,
            .owners = accounts,
            .n_owners = n_accounts,
            .executable_by = users,
            .n_executable_by = n_users,
            .names = pf.names,
            .n_names = pf.n_names,
            .tags = pf.tags,
            .n_tags = pf.n_tags,
            .include_deprecated = include_deprecated,
            .caller = ctx->account,
            .now = now,
            /* Disabled images asked for by id are left out below, so
             * that they are not reported missing. */
            .include_disabled = include_disabled || n_ids,
        };
        _cleanup_free_ char *unused = NULL;
        r = registry_image_list(rg->reg, &iq, &rows, &n_rows, &unused);
        if (r < 0)
            goto out;
    }

    if (n_ids) {
        missing = xcalloc(n_ids, sizeof(*missing));
        for (size_t i = 0; i < n_ids; i++) {
            bool found = false;
            for (size_t k = 0; k < n_rows && !found; k++)
                found = strcmp(rows[k]->id, ids[i]) == 0 && image_visible(ctx, rows[k]);
            if (!found && !api_in_list(missing, n_missing, ids[i]))
                missing[n_missing++] = ids[i];
        }
        /* Asked for by id but excluded by Owner or ExecutableBy is an
         * empty answer, not an error: only report what does not exist
         * for the caller at all. */
        for (size_t i = 0; rg && i < n_missing;) {
            struct registry_image *img = NULL;
            int g = registry_image_get(rg->reg, missing[i], &img);
            bool exists = g == 0 && image_visible(ctx, img);
            registry_image_free(img);
            if (g < 0 && g != -ENOENT) {
                r = g;
                goto out;
            }
            if (exists)
                missing[i] = missing[--n_missing];
            else
                i++;
        }
        if (n_missing) {
            r = api_image_not_found(ctx, missing, n_missing);
            goto out;
        }
    }

    xml_open(x, "imagesSet");
    {
        size_t written = 0;
        char key[64] = "";

        for (size_t i = 0; i < n_rows; i++) {
            const struct registry_image *img = rows[i];
            char k[64];

            if (!image_visible(ctx, img))
                continue;
            if (img->state == IMAGE_DISABLED && !include_disabled)
                continue;
            if (!match_image(ctx, &fs, img, provider))
                continue;
            snprintf(k, sizeof(k), "%020" PRId64 ".%s", img->creation_date, img->id);
            if (after && strcmp(k, after) <= 0)
                continue;
            if (max && written == max) {
                token = api_token_make(key);
                break;
            }
            write_image(ctx, x, img, provider, now);
            written++;
            snprintf(key, sizeof(key), "%s", k);
        }
    }
    xml_close(x);
    if (token)
        xml_element(x, "nextToken", token);
    r = 0;
out:
    registry_image_list_free(rows, n_rows);
    api_region_release(rg, r >= 0);
    prefilter_release(&pf);
    api_filters_release(&fs);
    return r;
}

/* ---- DeregisterImage ---- */

static const char *delete_associated(struct api_ctx *ctx, struct region *rg, const char *sid)
{
    struct registry_snapshot *s = NULL;
    size_t users = 0;
    int r = registry_snapshot_get(rg->reg, sid, &s);

    if (r == -ENOENT)
        return "client-error";
    if (r < 0)
        return "internal-error";
    if (!api_snapshot_visible(ctx, s)) {
        registry_snapshot_free(s);
        return "missing-permissions";
    }
    registry_snapshot_free(s);
    r = registry_snapshot_in_use_by_images(rg->reg, sid, &users);
    if (r < 0)
        return "internal-error";
    if (users > 0)
        return "skipped";
    r = service_snapshot_delete(rg, sid);
    if (r < 0)
        return r == -ENOENT ? "client-error" : "internal-error";
    return "success";
}

static int deregister_image(struct api_ctx *ctx, struct region *rg, const char *id,
                            bool delete_snapshots, struct xml *x)
{
    _cleanup_(image_freep) struct registry_image *img = NULL;
    struct registry_image_update u = {.set = IMAGE_SET_STATE, .state = IMAGE_DEREGISTERED};
    int64_t now = wall_ms();
    int r;

    r = load_owned(ctx, rg, id, &img);
    if (r < 0)
        return r;
    if (img->deregistration_protection || img->deregistration_blocked_until > now)
        return api_fail(ctx, API_ERR_OPERATION_NOT_PERMITTED,
                        "Image %s has deregistration protection %s; disable it with "
                        "DisableImageDeregistrationProtection first",
                        id, img->deregistration_protection ? "enabled" : "in its cooldown period");
    r = api_dry_run(ctx);
    if (r < 0)
        return r;
    r = registry_image_update(rg->reg, id, &u);
    if (r < 0)
        return r;
    xml_element_bool(x, "return", true);
    if (!delete_snapshots)
        return 0;
    xml_open(x, "deleteSnapshotResultSet");
    for (size_t i = 0; i < img->n_devices; i++) {
        const char *sid = img->devices[i].snapshot_id;
        bool seen = false;

        if (!sid[0])
            continue;
        for (size_t k = 0; k < i && !seen; k++)
            seen = strcmp(img->devices[k].snapshot_id, sid) == 0;
        if (seen)
            continue;
        xml_open(x, "item");
        xml_element(x, "snapshotId", sid);
        xml_element(x, "returnCode", delete_associated(ctx, rg, sid));
        xml_close(x);
    }
    xml_close(x);
    return 0;
}

int api_deregister_image(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    const char *id = NULL;
    bool delete_snapshots;
    int r;

    r = get_image_id(ctx, q, &id);
    if (r == 0)
        r = api_get_bool(ctx, q, "DeleteAssociatedSnapshots", &delete_snapshots);
    if (r == 0)
        r = begin_write(ctx, id, &rg);
    if (r < 0)
        return r;
    return registry_end(rg->reg, deregister_image(ctx, rg, id, delete_snapshots, x));
}

/* ---- DescribeImageAttribute ---- */

static const char *const image_attributes[] = {
    "description",
    "kernel",
    "ramdisk",
    "launchPermission",
    "productCodes",
    "blockDeviceMapping",
    "sriovNetSupport",
    "bootMode",
    "tpmSupport",
    "uefiData",
    "lastLaunchedTime",
    "imdsSupport",
    "deregistrationProtection",
    NULL,
};

static void write_value(struct xml *x, const char *name, const char *value)
{
    xml_open(x, name);
    if (value)
        xml_element(x, "value", value);
    xml_close(x);
}

int api_describe_image_attribute(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    _cleanup_(image_freep) struct registry_image *img = NULL;
    const char *id = NULL, *attr = query_get(q, "Attribute");
    char t[40], prot[64];
    int r;

    r = get_image_id(ctx, q, &id);
    if (r < 0)
        return r;
    if (!attr)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter Attribute");
    if (!in_set(image_attributes, attr))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Value (%.100s) for parameter attribute is invalid. Unknown attribute.",
                        attr);
    r = api_dry_run(ctx);
    if (r < 0)
        return r;
    r = api_region_open(ctx, &rg);
    if (r < 0)
        return r;
    r = rg ? registry_image_get(rg->reg, id, &img) : -ENOENT;
    if (r == -ENOENT)
        return api_image_not_found(ctx, &id, 1);
    if (r < 0)
        return r;
    /* Who else may launch it is the owner's business. */
    r = api_access_require(ctx, API_RES_IMAGE, id, api_image_access(ctx, img),
                           strcmp(attr, "launchPermission") == 0 ? API_ACCESS_OWNER
                                                                 : API_ACCESS_SHARED);
    if (r < 0)
        return r;

    xml_element(x, "imageId", img->id);
    if (strcmp(attr, "description") == 0) {
        write_value(x, "description", img->description);
    } else if (strcmp(attr, "kernel") == 0) {
        write_value(x, "kernel", img->kernel_id[0] ? img->kernel_id : NULL);
    } else if (strcmp(attr, "ramdisk") == 0) {
        write_value(x, "ramdisk", img->ramdisk_id[0] ? img->ramdisk_id : NULL);
    } else if (strcmp(attr, "launchPermission") == 0) {
        xml_open(x, "launchPermission");
        for (size_t i = 0; i < img->n_permissions; i++) {
            xml_open(x, "item");
            if (img->permissions[i].kind == REGISTRY_PERMISSION_GROUP)
                xml_element(x, "group", img->permissions[i].value);
            else
                xml_element(x, "userId", img->permissions[i].value);
            xml_close(x);
        }
        xml_close(x);
    } else if (strcmp(attr, "productCodes") == 0) {
        xml_open(x, "productCodes");
        xml_close(x);
    } else if (strcmp(attr, "blockDeviceMapping") == 0) {
        write_devices(x, img);
    } else if (strcmp(attr, "sriovNetSupport") == 0) {
        write_value(x, "sriovNetSupport", img->sriov_net_support);
    } else if (strcmp(attr, "bootMode") == 0) {
        write_value(x, "bootMode", img->boot_mode);
    } else if (strcmp(attr, "tpmSupport") == 0) {
        write_value(x, "tpmSupport", img->tpm_support);
    } else if (strcmp(attr, "uefiData") == 0) {
        write_value(x, "uefiData", NULL);
    } else if (strcmp(attr, "lastLaunchedTime") == 0) {
        write_value(x, "lastLaunchedTime",
                    img->last_launched_time ? api_format_time(img->last_launched_time, t, sizeof(t))
                                            : NULL);
    } else if (strcmp(attr, "imdsSupport") == 0) {
        write_value(x, "imdsSupport", img->imds_support);
    } else {
        write_value(x, "deregistrationProtection",
                    protection_string(img, wall_ms(), prot, sizeof(prot)));
    }
    return 0;
}

/* ---- ModifyImageAttribute ---- */

static const struct api_permission_form launch_permission = {
    .param = "LaunchPermission",
    .attribute = "launchPermission",
    .organizations = true,
};

enum modify_what { MODIFY_NONE, MODIFY_PERMISSIONS, MODIFY_DESCRIPTION, MODIFY_IMDS };

int api_modify_image_attribute(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    _cleanup_(image_freep) struct registry_image *img = NULL;
    _cleanup_(api_permission_changes_release) struct api_permission_changes changes = { 0 };
    const char *id = NULL, *attr = query_get(q, "Attribute");
    const char *value = NULL;
    enum modify_what what = MODIFY_NONE;
    size_t n_kinds = 0;
    bool has_lp, has_desc, has_imds;
    int r;

    r = get_image_id(ctx, q, &id);
    if (r < 0)
        return r;
    if (query_get(q, "ProductCode.1") || (attr && strcmp(attr, "productCodes") == 0))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE, "Product codes are not supported");
    has_lp = api_permission_form_used(q, &launch_permission);
    has_desc = query_get(q, "Description.Value") != NULL;
    has_imds = query_get(q, "ImdsSupport.Value") != NULL;
    n_kinds = (size_t)has_lp + has_desc + has_imds + (attr != NULL);
    if (attr && ((has_lp && strcmp(attr, "launchPermission") == 0) ||
                 (has_desc && strcmp(attr, "description") == 0) ||
                 (has_imds && strcmp(attr, "imdsSupport") == 0)))
        n_kinds--;
    if (n_kinds > 1)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_COMBINATION,
                        "ModifyImageAttribute changes one attribute per call");

    if (has_lp) {
        what = MODIFY_PERMISSIONS;
        r = api_permission_parse_structured(ctx, q, &launch_permission, &changes);
        if (r < 0)
            return r;
    } else if (has_desc) {
        what = MODIFY_DESCRIPTION;
        value = query_get(q, "Description.Value");
    } else if (has_imds) {
        what = MODIFY_IMDS;
        value = query_get(q, "ImdsSupport.Value");
    } else if (attr) {
        if (strcmp(attr, "launchPermission") == 0) {
            what = MODIFY_PERMISSIONS;
            r = api_permission_parse_legacy(ctx, q, &launch_permission, &changes);
            if (r < 0)
                return r;
        } else if (strcmp(attr, "description") == 0 || strcmp(attr, "imdsSupport") == 0) {
            what = attr[0] == 'd' ? MODIFY_DESCRIPTION : MODIFY_IMDS;
            value = query_get(q, "Value");
            if (!value)
                return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                                "The request must contain the parameter Value");
        } else if (in_set(image_attributes, attr)) {
            return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                            "The attribute '%.40s' cannot be modified: only description, "
                            "imdsSupport and launchPermission can",
                            attr);
        } else {
            return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                            "Value (%.100s) for parameter attribute is invalid. Unknown "
                            "attribute.",
                            attr);
        }
    } else {
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter Attribute, LaunchPermission, "
                        "Description or ImdsSupport");
    }
    if (what == MODIFY_DESCRIPTION && strlen(value) > IMAGE_DESCRIPTION_MAX)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Description must be at most %d characters long", IMAGE_DESCRIPTION_MAX);
    if (what == MODIFY_IMDS && strcmp(value, "v2.0") != 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Value (%.40s) for parameter imdsSupport is invalid (expecting v2.0)",
                        value);

    r = begin_write(ctx, id, &rg);
    if (r < 0)
        return r;
    r = load_owned(ctx, rg, id, &img);
    if (r == 0 && what == MODIFY_PERMISSIONS && img->state == IMAGE_DISABLED && changes.adds)
        r = api_fail(ctx, API_ERR_OPERATION_NOT_PERMITTED,
                     "The image %s is disabled: enable it before sharing it", id);
    /* Image block public access (sharing.c): no new public sharing while
     * blocked; images already public stay so. */
    for (size_t i = 0; r == 0 && what == MODIFY_PERMISSIONS && i < changes.n; i++) {
        bool blocked = false;

        if (!changes.v[i].add || changes.v[i].kind != REGISTRY_PERMISSION_GROUP)
            continue;
        r = api_image_public_sharing_blocked(ctx, rg, &blocked);
        if (r == 0 && blocked)
            r = api_fail(ctx, API_ERR_OPERATION_NOT_PERMITTED,
                         "You can't publicly share this image because block public access for "
                         "AMIs is enabled for this account. To publicly share the image, you "
                         "must call the DisableImageBlockPublicAccess API.");
    }
    if (r == 0)
        r = api_dry_run(ctx);
    if (r == 0) {
        struct registry_image_update u = {0};
        switch (what) {
        case MODIFY_PERMISSIONS:
            for (size_t i = 0; i < changes.n && r >= 0; i++) {
                const struct api_permission_change *c = &changes.v[i];
                r = c->add ? registry_image_permission_add(rg->reg, id, c->kind, c->value)
                           : registry_image_permission_remove(rg->reg, id, c->kind, c->value);
            }
            break;
        case MODIFY_DESCRIPTION:
            u.set = IMAGE_SET_DESCRIPTION;
            u.description = value;
            r = registry_image_update(rg->reg, id, &u);
            break;
        case MODIFY_IMDS:
            u.set = IMAGE_SET_IMDS_SUPPORT;
            u.imds_support = value;
            r = registry_image_update(rg->reg, id, &u);
            break;
        case MODIFY_NONE: break;
        }
    }
    r = registry_end(rg->reg, r);
    if (r < 0)
        return r;
    xml_element_bool(x, "return", true);
    return 0;
}

/* ---- the owner-only switches ---- */

/* Run `change` on the caller's image named by ImageId in a transaction,
 * after validation and the DryRun answer. */
typedef int (*image_change_fn)(struct api_ctx *ctx, struct region *rg,
                               const struct registry_image *img, const void *arg, struct xml *x);

static int change_owned_image(struct api_ctx *ctx, const char *id, image_change_fn change,
                              const void *arg, struct xml *x)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    _cleanup_(image_freep) struct registry_image *img = NULL;
    int r = begin_write(ctx, id, &rg);

    if (r < 0)
        return r;
    r = load_owned(ctx, rg, id, &img);
    if (r == 0)
        r = api_dry_run(ctx);
    if (r == 0)
        r = change(ctx, rg, img, arg, x);
    return registry_end(rg->reg, r);
}

static int reset_permissions(struct api_ctx *ctx, struct region *rg,
                             const struct registry_image *img, const void *arg, struct xml *x)
{
    int r = registry_image_permission_clear(rg->reg, img->id);

    (void)ctx;
    (void)arg;
    if (r < 0)
        return r;
    xml_element_bool(x, "return", true);
    return 0;
}

int api_reset_image_attribute(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    const char *id = NULL, *attr = query_get(q, "Attribute");
    int r = get_image_id(ctx, q, &id);

    if (r < 0)
        return r;
    if (!attr)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter Attribute");
    if (strcmp(attr, "launchPermission") != 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Value (%.100s) for parameter attribute is invalid: only "
                        "launchPermission can be reset",
                        attr);
    return change_owned_image(ctx, id, reset_permissions, NULL, x);
}

/* DeprecateAt: ISO 8601 in UTC, "2030-01-02T03:04:05Z" with optional
 * fractional seconds (what botocore sends).  Unix ms rounded to the
 * nearest minute (reference 4.10). */
static int parse_deprecate_at(struct api_ctx *ctx, const char *s, int64_t *ret)
{
    struct tm tm = {0};
    int n = 0, year, mon, day, hour, min;
    double sec;
    time_t t;

    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%lf%n", &year, &mon, &day, &hour, &min, &sec, &n) != 6 ||
        strcmp(s + n, "Z") != 0 || mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 ||
        min > 59 || sec < 0 || sec >= 61)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Value (%.64s) for parameter DeprecateAt is invalid (expecting "
                        "YYYY-MM-DDThh:mm:ssZ)",
                        s);
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    t = timegm(&tm);
    *ret = ((int64_t)t * 1000 + (int64_t)(sec * 1000) + MS_PER_MINUTE / 2) / MS_PER_MINUTE *
           MS_PER_MINUTE;
    return 0;
}

static int set_deprecation(struct api_ctx *ctx, struct region *rg, const struct registry_image *img,
                           const void *arg, struct xml *x)
{
    struct registry_image_update u = {.set = IMAGE_SET_DEPRECATION};
    int64_t at = arg ? *(const int64_t *)arg : 0;
    int r;

    if (at && img->is_public && at > img->creation_date + 2 * MS_PER_YEAR)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "A public image can be deprecated at most 2 years after its creation");
    u.deprecation_time = at;
    r = registry_image_update(rg->reg, img->id, &u);
    if (r < 0)
        return r;
    xml_element_bool(x, "return", true);
    return 0;
}

int api_enable_image_deprecation(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    const char *id = NULL, *s = query_get(q, "DeprecateAt");
    int64_t at, now = wall_ms();
    int r = get_image_id(ctx, q, &id);

    if (r < 0)
        return r;
    if (!s)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter DeprecateAt");
    r = parse_deprecate_at(ctx, s, &at);
    if (r < 0)
        return r;
    if (at <= now)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE, "DeprecateAt must be in the future");
    if (at > now + 10 * MS_PER_YEAR)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "DeprecateAt must be at most 10 years from now");
    return change_owned_image(ctx, id, set_deprecation, &at, x);
}

int api_disable_image_deprecation(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    const char *id = NULL;
    int r = get_image_id(ctx, q, &id);

    if (r < 0)
        return r;
    return change_owned_image(ctx, id, set_deprecation, NULL, x);
}

static int set_protection(struct api_ctx *ctx, struct region *rg, const struct registry_image *img,
                          const void *arg, struct xml *x)
{
    const bool *p = arg; /* NULL: disable; else enable with cooldown *p */
    struct registry_image_update u = {.set = IMAGE_SET_DEREGISTRATION_PROTECTION};
    int r;

    (void)ctx;
    if (p) {
        u.deregistration_protection = true;
        u.deregistration_cooldown = *p;
        u.deregistration_blocked_until = 0;
    } else {
        u.deregistration_protection = false;
        u.deregistration_cooldown = false;
        u.deregistration_blocked_until =
            img->deregistration_protection && img->deregistration_cooldown
                ? wall_ms() + DEREGISTRATION_COOLDOWN_MS
                : img->deregistration_blocked_until;
    }
    r = registry_image_update(rg->reg, img->id, &u);
    if (r < 0)
        return r;
    xml_element(x, "return",
                !p   ? "disabled"
                : *p ? "enabled-with-cooldown"
                     : "enabled-without-cooldown");
    return 0;
}

int api_enable_image_deregistration_protection(struct api_ctx *ctx, const struct query *q,
                                               struct xml *x)
{
    const char *id = NULL;
    bool cooldown;
    int r = get_image_id(ctx, q, &id);

    if (r == 0)
        r = api_get_bool(ctx, q, "WithCooldown", &cooldown);
    if (r < 0)
        return r;
    return change_owned_image(ctx, id, set_protection, &cooldown, x);
}

int api_disable_image_deregistration_protection(struct api_ctx *ctx, const struct query *q,
                                                struct xml *x)
{
    const char *id = NULL;
    int r = get_image_id(ctx, q, &id);

    if (r < 0)
        return r;
    return change_owned_image(ctx, id, set_protection, NULL, x);
}

static int set_enabled(struct api_ctx *ctx, struct region *rg, const struct registry_image *img,
                       const void *arg, struct xml *x)
{
    bool enable = *(const bool *)arg;
    struct registry_image_update u = {.set = IMAGE_SET_STATE};
    int r;

    if (enable && img->state != IMAGE_DISABLED && img->state != IMAGE_AVAILABLE)
        return api_fail(ctx, API_ERR_OPERATION_NOT_PERMITTED,
                        "The image %s is %s and cannot be enabled", img->id,
                        image_state_to_string(img->state));
    if (!enable && img->state != IMAGE_AVAILABLE && img->state != IMAGE_DISABLED)
        return api_fail(ctx, API_ERR_OPERATION_NOT_PERMITTED,
                        "The image %s is %s and cannot be disabled", img->id,
                        image_state_to_string(img->state));
    if ((enable && img->state != IMAGE_AVAILABLE) || (!enable && img->state != IMAGE_DISABLED)) {
        u.state = enable ? IMAGE_AVAILABLE : IMAGE_DISABLED;
        r = registry_image_update(rg->reg, img->id, &u);
        if (r < 0)
            return r;
    }
    xml_element_bool(x, "return", true);
    return 0;
}

int api_enable_image(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    static const bool enable = true;
    const char *id = NULL;
    int r = get_image_id(ctx, q, &id);

    if (r < 0)
        return r;
    return change_owned_image(ctx, id, set_enabled, &enable, x);
}

int api_disable_image(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    static const bool enable = false;
    const char *id = NULL;
    int r = get_image_id(ctx, q, &id);

    if (r < 0)
        return r;
    return change_owned_image(ctx, id, set_enabled, &enable, x);
}
