/* Instances: RunInstances, DescribeInstances, DescribeInstanceStatus,
 * StopInstances, StartInstances, RebootInstances, TerminateInstances,
 * GetConsoleOutput, DescribeInstanceAttribute.
 *
 * Requests are validated here (ids, parameters, the image's visibility and
 * state, the key pair, the groups, user data, metadata options, the root
 * device override); the instance manager of this `kiln serve`
 * (service/instances.h) registers and runs them.  Describe* read the
 * registry through a read-only handle of their own.
 *
 * Addresses (docs/api.md, "Instances"): privateIpAddress and ipAddress both
 * report the instance's loopback address 127.100.x.y, where the host
 * reaches the guest's port 22 (ssh and Packer connect to either); inside
 * the guest the address is 169.254.0.15 (the metadata's local-ipv4). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "api/internal.h"
#include "api/query.h"
#include "api/xml.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/hash.h"
#include "common/ids.h"
#include "common/util.h"
#include "registry/images.h"
#include "registry/instances.h"
#include "registry/jobs.h"
#include "registry/keypairs.h"
#include "registry/volumes.h"
#include "service/instance-types.h"
#include "service/instances.h"
#include "service/service.h"

#define DEFAULT_INSTANCE_TYPE "t3.micro"
#define CONSOLE_OUTPUT_MAX (64 * 1024)

/* ---- shared ---- */

static int manager(struct api_ctx *ctx, struct instance_manager **ret)
{
    *ret = instance_manager_get();
    if (!*ret)
        return api_fail(ctx, API_ERR_UNAVAILABLE, "no instance manager runs in this server");
    return 0;
}

/* Map an error of the manager to the request: -ENOSPC is
 * InsufficientInstanceCapacity, a state refusal IncorrectInstanceState. */
static int manager_error(struct api_ctx *ctx, int e)
{
    const char *msg = error_message();

    if (e == -ENOSPC)
        return api_fail(ctx, API_ERR_INSUFFICIENT_CAPACITY, "Insufficient capacity: %s",
                        msg ? msg : "the host is full");
    if (e == -EINVAL && msg && strstr(msg, "not in a state")) {
        ctx->resource = API_RES_INSTANCE;
        return api_fail(ctx, API_ERR_IN_USE, "%s", msg);
    }
    ctx->resource = API_RES_INSTANCE;
    return e;
}

/* The caller's, and not terminated longer ago than the retention period
 * (a row instance_manager_expire() has not deleted yet is gone already). */
static bool row_visible(const struct api_ctx *ctx, const struct registry_instance *row)
{
    struct timespec ts;

    if (strcmp(row->owner, ctx->account) != 0)
        return false;
    clock_gettime(CLOCK_REALTIME, &ts);
    return !instance_expired(row, instance_manager_terminated_retention_ms(instance_manager_get()),
                             (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/* InstanceId.N: each well formed (InvalidInstanceID.Malformed). */
static int instance_ids(struct api_ctx *ctx, const struct query *q, bool required,
                        const char ***ret, size_t *ret_n)
{
    const char **ids = NULL;
    size_t n = 0;
    int r = query_get_list(q, "InstanceId", &ids, &n);

    if (r < 0)
        return r;
    if (required && n == 0)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter InstanceId");
    for (size_t i = 0; i < n; i++) {
        r = api_id_check(ctx, API_RES_INSTANCE, "i", ids[i]);
        if (r < 0) {
            free(ids);
            return r;
        }
    }
    *ret = ids;
    *ret_n = n;
    return 0;
}

/* The caller's rows among ids[0..n) (all of them, or NotFound naming
 * those that are missing), in the order asked. */
static int load_rows(struct api_ctx *ctx, struct region *rg, const char **ids, size_t n,
                     struct registry_instance ***ret)
{
    struct registry_instance **rows = xcalloc(n ? n : 1, sizeof(*rows));
    _cleanup_free_ const char **missing = xcalloc(n ? n : 1, sizeof(*missing));
    size_t n_missing = 0;
    int r = 0;

    for (size_t i = 0; i < n; i++) {
        int g = rg ? registry_instance_get(rg->reg, ids[i], &rows[i]) : -ENOENT;
        if (g < 0 && g != -ENOENT) {
            r = g;
            break;
        }
        if (g == -ENOENT || !row_visible(ctx, rows[i])) {
            if (!api_in_list(missing, n_missing, ids[i]))
                missing[n_missing++] = ids[i];
        }
    }
    if (r >= 0 && n_missing)
        r = api_not_found(ctx, API_RES_INSTANCE, missing, n_missing);
    if (r < 0) {
        registry_instance_list_free(rows, n);
        return r;
    }
    *ret = rows;
    return 0;
}

static void write_state(struct xml *x, const char *name, enum instance_state s)
{
    xml_open(x, name);
    xml_element_int(x, "code", (int)s);
    xml_element(x, "name", instance_state_to_string(s));
    xml_close(x);
}

static bool has_address(const struct registry_instance *row)
{
    return row->state != INSTANCE_TERMINATED && row->state != INSTANCE_SHUTTING_DOWN;
}

static const char *const instance_filters[] = {
    "instance-id",
    "instance-state-name",
    "instance-state-code",
    "image-id",
    "instance-type",
    "key-name",
    "reservation-id",
    "private-ip-address",
    "ip-address",
    "availability-zone",
    "owner-id",
    "root-device-name",
    "root-device-type",
    "architecture",
    "launch-index",
    "vpc-id",
    "subnet-id",
    "tag:",
    "tag-key",
    NULL,
};

/* An instance is in the default VPC's subnet (vpcs.c) until it is
 * terminated, as on EC2. */
static bool in_vpc(const struct registry_instance *row)
{
    return row->state != INSTANCE_TERMINATED;
}

static bool match_fields(const struct api_ctx *ctx, const struct api_filters *fs,
                         const struct registry_instance *row)
{
    char code[16], idx[16], vpc[ID_MAX_SIZE] = "", subnet[ID_MAX_SIZE] = "";
    const char *addr = has_address(row) ? row->address : "";

    if (in_vpc(row)) {
        api_default_vpc_id(ctx, vpc);
        api_default_subnet_id(ctx, subnet);
    }

    snprintf(code, sizeof(code), "%d", (int)row->state);
    snprintf(idx, sizeof(idx), "%d", row->launch_index);
    return api_filters_match(fs, "instance-id", row->id) &&
           api_filters_match(fs, "instance-state-name", instance_state_to_string(row->state)) &&
           api_filters_match(fs, "instance-state-code", code) &&
           api_filters_match(fs, "image-id", row->image_id) &&
           api_filters_match(fs, "instance-type", row->instance_type) &&
           api_filters_match(fs, "key-name", row->key_name) &&
           api_filters_match(fs, "reservation-id", row->reservation_id) &&
           api_filters_match(fs, "private-ip-address", addr) &&
           api_filters_match(fs, "ip-address", addr) &&
           api_filters_match(fs, "availability-zone", row->availability_zone) &&
           api_filters_match(fs, "owner-id", row->owner) &&
           api_filters_match(fs, "root-device-name", row->root_device_name) &&
           api_filters_match(fs, "root-device-type", "ebs") &&
           api_filters_match(fs, "architecture", "x86_64") &&
           api_filters_match(fs, "launch-index", idx) && api_filters_match(fs, "vpc-id", vpc) &&
           api_filters_match(fs, "subnet-id", subnet);
}

/* The blockDeviceMapping of an instance (DescribeInstances, and
 * DescribeInstanceAttribute's blockDeviceMapping): its root volume,
 * attached at launch, until the instance is terminated. */
static void write_block_device_mapping(struct xml *x, const struct registry_instance *row)
{
    char when[64];

    xml_open(x, "blockDeviceMapping");
    if (row->root_volume_id[0] && row->state != INSTANCE_TERMINATED) {
        xml_open(x, "item");
        xml_element(x, "deviceName", row->root_device_name);
        xml_open(x, "ebs");
        xml_element(x, "volumeId", row->root_volume_id);
        xml_element(x, "status", "attached");
        xml_element(x, "attachTime", api_format_time(row->launch_time, when, sizeof(when)));
        xml_element_bool(x, "deleteOnTermination", row->root_delete_on_termination);
        xml_close(x);
        xml_close(x);
    }
    xml_close(x);
}

/* One <item> of an instancesSet. */
static int write_instance(const struct api_ctx *ctx, struct xml *x, struct region *rg,
                          const struct registry_instance *row, const struct registry_tag *tags,
                          size_t n_tags)
{
    char when[64], id[ID_MAX_SIZE];
    char **sgs = NULL;
    size_t n_sgs = 0;
    int r;

    r = registry_instance_security_groups(rg->reg, row->id, &sgs, &n_sgs);
    if (r < 0)
        return r;
    xml_open(x, "item");
    xml_element(x, "instanceId", row->id);
    xml_element(x, "imageId", row->image_id);
    write_state(x, "instanceState", row->state);
    xml_element(x, "privateDnsName", "");
    xml_element(x, "dnsName", "");
    xml_element(x, "reason", row->reason_message);
    if (row->key_name[0])
        xml_element(x, "keyName", row->key_name);
    xml_element_int(x, "amiLaunchIndex", row->launch_index);
    xml_open(x, "productCodes");
    xml_close(x);
    xml_element(x, "instanceType", row->instance_type);
    xml_element(x, "launchTime", api_format_time(row->launch_time, when, sizeof(when)));
    xml_open(x, "placement");
    xml_element(x, "availabilityZone", row->availability_zone);
    xml_element(x, "groupName", "");
    xml_element(x, "tenancy", "default");
    xml_close(x);
    xml_open(x, "monitoring");
    xml_element(x, "state", "disabled");
    xml_close(x);
    if (in_vpc(row)) {
        api_default_subnet_id(ctx, id);
        xml_element(x, "subnetId", id);
        api_default_vpc_id(ctx, id);
        xml_element(x, "vpcId", id);
    }
    if (has_address(row)) {
        xml_element(x, "privateIpAddress", row->address);
        xml_element(x, "ipAddress", row->address);
    }
    xml_open(x, "groupSet");
    for (size_t i = 0; i < n_sgs; i++) {
        xml_open(x, "item");
        xml_element(x, "groupId", sgs[i]);
        xml_close(x);
    }
    xml_close(x);
    if (row->reason_code[0]) {
        xml_open(x, "stateReason");
        xml_element(x, "code", row->reason_code);
        xml_element(x, "message", row->reason_message);
        xml_close(x);
    }
    xml_element(x, "architecture", "x86_64");
    xml_element(x, "rootDeviceType", "ebs");
    xml_element(x, "rootDeviceName", row->root_device_name);
    write_block_device_mapping(x, row);
    xml_element(x, "virtualizationType", "hvm");
    if (row->client_token[0])
        xml_element(x, "clientToken", row->client_token);
    api_write_tag_set(x, tags, n_tags);
    xml_element(x, "hypervisor", "xen");
    xml_element_bool(x, "ebsOptimized", false);
    xml_element(x, "bootMode", "legacy-bios");
    xml_element(x, "platformDetails", "Linux/UNIX");
    xml_open(x, "metadataOptions");
    xml_element(x, "state", "applied");
    xml_element(x, "httpTokens", row->http_tokens_required ? "required" : "optional");
    xml_element_int(x, "httpPutResponseHopLimit", row->http_hop_limit);
    xml_element(x, "httpEndpoint", row->http_endpoint_enabled ? "enabled" : "disabled");
    xml_element(x, "httpProtocolIpv6", "disabled");
    xml_element(x, "instanceMetadataTags", "disabled");
    xml_close(x);
    xml_close(x);
    registry_instance_security_groups_free(sgs, n_sgs);
    return 0;
}

/* ---- RunInstances ---- */

static int decode_user_data(struct api_ctx *ctx, const char *b64, uint8_t **ret, size_t *ret_n)
{
    uint8_t *out;
    size_t n;
    int r;

    if (b64[0] == '\0') {
        *ret = NULL;
        *ret_n = 0;
        return 0;
    }
    r = api_base64_decode(b64, INSTANCE_USER_DATA_MAX, &out, &n);
    if (r == -EMSGSIZE)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "User data must be base64 of at most %d bytes", INSTANCE_USER_DATA_MAX);
    if (r < 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Invalid BASE64 encoding of user data.");
    if (n > INSTANCE_USER_DATA_MAX) {
        free(out);
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE, "User data is limited to %d bytes",
                        INSTANCE_USER_DATA_MAX);
    }
    *ret = out;
    *ret_n = n;
    return 0;
}

static int count_param(struct api_ctx *ctx, const struct query *q, const char *name, unsigned *ret)
{
    const char *v = query_get(q, name);
    char *end;
    unsigned long n;

    if (!v)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER, "The request must contain the parameter %s",
                        name);
    errno = 0;
    n = strtoul(v, &end, 10);
    if (errno || !*v || *end || n < 1 || n > 1000)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Value (%.20s) for parameter %s is invalid. Expected a number from 1", v,
                        name);
    *ret = (unsigned)n;
    return 0;
}

static int metadata_options(struct api_ctx *ctx, const struct query *q,
                            const struct registry_image *img, struct instance_launch *l)
{
    const char *tokens = query_get(q, "MetadataOptions.HttpTokens");
    const char *endpoint = query_get(q, "MetadataOptions.HttpEndpoint");
    const char *hops = query_get(q, "MetadataOptions.HttpPutResponseHopLimit");

    /* an image that says imds-support v2.0 launches with tokens required */
    l->http_tokens_required = img->imds_support && strcmp(img->imds_support, "v2.0") == 0;
    l->http_endpoint_enabled = true;
    l->http_hop_limit = img->imds_support ? 2 : 1;
    if (tokens) {
        if (strcmp(tokens, "required") != 0 && strcmp(tokens, "optional") != 0)
            return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                            "Value (%.40s) for parameter MetadataOptions.HttpTokens is "
                            "invalid. Expected 'optional' or 'required'",
                            tokens);
        l->http_tokens_required = tokens[0] == 'r';
    }
    if (endpoint) {
        if (strcmp(endpoint, "enabled") != 0 && strcmp(endpoint, "disabled") != 0)
            return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                            "Value (%.40s) for parameter MetadataOptions.HttpEndpoint is "
                            "invalid. Expected 'enabled' or 'disabled'",
                            endpoint);
        l->http_endpoint_enabled = endpoint[0] == 'e';
    }
    if (hops) {
        char *end;
        long h = strtol(hops, &end, 10);
        if (!*hops || *end || h < 1 || h > 64)
            return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                            "Value (%.20s) for parameter MetadataOptions."
                            "HttpPutResponseHopLimit is invalid. Expected 1 to 64",
                            hops);
        l->http_hop_limit = (int)h;
    }
    return 0;
}

/* BlockDeviceMapping.N: only the root device may be overridden (size,
 * DeleteOnTermination, gp3). */
static int root_override(struct api_ctx *ctx, struct region *rg, const struct query *q,
                         const struct registry_image *img, struct instance_launch *l)
{
    struct query_item *items = NULL;
    size_t n = 0;
    int r = query_get_structs(q, "BlockDeviceMapping", &items, &n);

    if (r < 0)
        return r;
    l->root_size_gib = 0;
    l->root_delete_on_termination = -1;
    for (size_t i = 0; i < n && r >= 0; i++) {
        const struct query *f = &items[i].fields;
        const char *dev = query_get(f, "DeviceName");
        const char *size = query_get(f, "Ebs.VolumeSize");
        const char *dot = query_get(f, "Ebs.DeleteOnTermination");
        const char *type = query_get(f, "Ebs.VolumeType");
        const char *enc = query_get(f, "Ebs.Encrypted");
        const char *snap = query_get(f, "Ebs.SnapshotId");

        if (!dev) {
            r = api_fail(ctx, API_ERR_MISSING_PARAMETER,
                         "The request must contain the parameter BlockDeviceMapping.%lu."
                         "DeviceName",
                         items[i].index);
            break;
        }
        if (!img->root_device_name || strcmp(dev, img->root_device_name) != 0) {
            r = api_fail(ctx, API_ERR_INVALID_BLOCK_DEVICE_MAPPING,
                         "kiln launches with the root device only: '%.64s' is not the "
                         "image's root device (%s)",
                         dev, img->root_device_name ? img->root_device_name : "none");
            break;
        }
        if (type && strcmp(type, "gp3") != 0) {
            r = api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                         "Volume type '%.20s' is not supported (only gp3)", type);
            break;
        }
        if (enc && strcmp(enc, "true") == 0) {
            r = api_fail(ctx, API_ERR_INVALID_BLOCK_DEVICE_MAPPING,
                         "kiln does not support encrypted volumes");
            break;
        }
        if (dot) {
            bool b;
            if (query_parse_bool(dot, &b) < 0) {
                r = api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                             "Value (%.20s) for parameter DeleteOnTermination is invalid", dot);
                break;
            }
            l->root_delete_on_termination = b;
        }
        const struct registry_image_device *d = NULL;
        for (size_t k = 0; k < img->n_devices; k++)
            if (strcmp(img->devices[k].device_name, dev) == 0)
                d = &img->devices[k];
        if (snap && (!d || strcmp(snap, d->snapshot_id) != 0)) {
            r = api_fail(ctx, API_ERR_INVALID_BLOCK_DEVICE_MAPPING,
                         "the root device's snapshot cannot be replaced ('%.32s')", snap);
            break;
        }
        if (size) {
            char *end;
            unsigned long gib = strtoul(size, &end, 10);
            struct registry_snapshot *s = NULL;
            uint32_t min = d ? d->volume_size_gib : 0;
            if (!*size || *end || gib < 1 || gib > VOLUME_SIZE_GIB_MAX) {
                r = api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                             "Value (%.20s) for parameter VolumeSize is invalid", size);
                break;
            }
            if (d && d->snapshot_id[0] && registry_snapshot_get(rg->reg, d->snapshot_id, &s) == 0) {
                if (s->volume_size_gib > min)
                    min = s->volume_size_gib;
                registry_snapshot_free(s);
            }
            if (gib < min) {
                r = api_fail(ctx, API_ERR_INVALID_BLOCK_DEVICE_MAPPING,
                             "Volume of size %lu GiB is smaller than snapshot '%s', expect "
                             "size >= %u",
                             gib, d ? d->snapshot_id : "", min);
                break;
            }
            l->root_size_gib = (uint32_t)gib;
        }
    }
    query_items_free(items, n);
    return r;
}

/* SecurityGroupId.N and SecurityGroup.N (names): each the caller's. */
static int security_groups(struct api_ctx *ctx, struct region *rg, const struct query *q,
                           const char ***ret_ids, const char ***ret_names, size_t *ret_n,
                           struct registry_security_group **ret_list, size_t *ret_list_n)
{
    _cleanup_free_ const char **ids = NULL, **names = NULL;
    struct registry_security_group *list = NULL;
    size_t n_ids = 0, n_names = 0, n_list = 0, n = 0;
    const char **out_ids, **out_names;
    int r;

    r = query_get_list(q, "SecurityGroupId", &ids, &n_ids);
    if (r == 0)
        r = query_get_list(q, "SecurityGroup", &names, &n_names);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n_ids; i++) {
        r = api_id_check(ctx, API_RES_SECURITY_GROUP, "sg", ids[i]);
        if (r < 0)
            return r;
    }
    r = registry_security_group_list(rg->reg, ctx->account, &list, &n_list);
    if (r < 0)
        return r;
    out_ids = xcalloc(n_ids + n_names + 1, sizeof(*out_ids));
    out_names = xcalloc(n_ids + n_names + 1, sizeof(*out_names));
    for (size_t i = 0; i < n_ids + n_names && r >= 0; i++) {
        const char *want = i < n_ids ? ids[i] : names[i - n_ids];
        size_t k;
        for (k = 0; k < n_list; k++)
            if (strcmp(i < n_ids ? list[k].id : list[k].name, want) == 0)
                break;
        if (k == n_list) {
            ctx->resource = API_RES_SECURITY_GROUP;
            r = api_fail(ctx, API_ERR_NOT_FOUND, "The security group '%.255s' does not exist",
                         want);
            break;
        }
        if (!api_in_list(out_ids, n, list[k].id)) {
            out_ids[n] = list[k].id;
            out_names[n] = list[k].name;
            n++;
        }
    }
    if (r < 0) {
        free(out_ids);
        free(out_names);
        registry_security_group_list_free(list, n_list);
        return r;
    }
    *ret_ids = out_ids;
    *ret_names = out_names;
    *ret_n = n;
    *ret_list = list;
    *ret_list_n = n_list;
    return 0;
}

/* SubnetId and NetworkInterface.N (docs/api.md, "The default VPC"): a
 * subnet, where given, is the caller's default subnet (an empty one is
 * none, as EC2 takes it: Packer sends SubnetId= without subnet_id); at most one
 * interface, device 0, a new one (no NetworkInterfaceId), and not beside
 * an instance-level SubnetId or groups.  ret->groups is the query whose
 * SecurityGroupId.N names the groups: q, or the interface's fields (then
 * owned by ret). */
struct network {
    struct query_item *items;
    size_t n;
    const struct query *groups;
};

static void network_release(struct network *nw)
{
    query_items_free(nw->items, nw->n);
}

static int network_parse(struct api_ctx *ctx, const struct query *q, struct network *ret)
{
    const char *subnet = query_get(q, "SubnetId");
    const struct query *f;
    const char *v;
    bool b;
    int r;

    ret->groups = q;
    if (subnet && !subnet[0])
        subnet = NULL;
    if (subnet && (r = api_subnet_check(ctx, subnet)) < 0)
        return r;
    r = query_get_structs(q, "NetworkInterface", &ret->items, &ret->n);
    if (r < 0 || ret->n == 0)
        return r;
    if (ret->n > 1)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "kiln instances have one network interface (%zu given)", ret->n);
    f = &ret->items[0].fields;
    if (subnet || query_get(q, "SecurityGroupId.1") || query_get(q, "SecurityGroup.1"))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_COMBINATION,
                        "Network interfaces and an instance-level subnet ID or security groups "
                        "may not be specified on the same request");
    if ((v = query_get(f, "DeviceIndex")) && strcmp(v, "0") != 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "NetworkInterface.%lu.DeviceIndex must be 0 (the only interface)",
                        ret->items[0].index);
    if (query_get(f, "NetworkInterfaceId"))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "NetworkInterface.%lu.NetworkInterfaceId: kiln has no network "
                        "interfaces to attach",
                        ret->items[0].index);
    if ((v = query_get(f, "AssociatePublicIpAddress")) && query_parse_bool(v, &b) < 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "NetworkInterface.%lu.AssociatePublicIpAddress must be true or false",
                        ret->items[0].index);
    if ((v = query_get(f, "DeleteOnTermination")) && query_parse_bool(v, &b) < 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "NetworkInterface.%lu.DeleteOnTermination must be true or false",
                        ret->items[0].index);
    if ((v = query_get(f, "SubnetId")) && v[0] && (r = api_subnet_check(ctx, v)) < 0)
        return r;
    ret->groups = f;
    return 0;
}

/* ---- RunInstances' ClientToken ---- */

/* The instances of `reservation` the caller owns, in launch order. */
static int reservation_ids(struct api_ctx *ctx, struct region *rg, const char *reservation,
                           char (**ret)[ID_MAX_SIZE], size_t *ret_n)
{
    struct registry_instance **all = NULL;
    char(*ids)[ID_MAX_SIZE] = NULL;
    size_t n_all = 0, n = 0;
    int r = registry_instance_list(rg->reg, &all, &n_all);

    for (size_t k = 0; k < n_all && r >= 0; k++)
        if (strcmp(all[k]->reservation_id, reservation) == 0 && row_visible(ctx, all[k])) {
            ids = xrealloc(ids, (n + 1) * sizeof(*ids));
            memcpy(ids[n++], all[k]->id, ID_MAX_SIZE);
        }
    registry_instance_list_free(all, n_all);
    if (r < 0) {
        free(ids);
        return r;
    }
    *ret = ids;
    *ret_n = n;
    return 0;
}

/* A ClientToken seen before: 1 and the first launch's reservation (and its
 * instances) when this request repeats it, 0 when the token is new,
 * IdempotentParameterMismatch when it was used with other parameters.
 * Launches recorded before client_tokens held RunInstances' tokens are
 * found by the token of their rows (their parameters are not known). */
static int token_find(struct api_ctx *ctx, struct region *rg, const struct service_client_token *t,
                      char reservation[ID_MAX_SIZE], char (**ret)[ID_MAX_SIZE], size_t *ret_n)
{
    int r = api_client_token_check(ctx, rg->reg, t, reservation);

    if (r < 0)
        return r;
    if (reservation[0] != '\0') {
        r = reservation_ids(ctx, rg, reservation, ret, ret_n);
        return r < 0 ? r : 1;
    }
    {
        struct registry_instance **all = NULL;
        size_t n_all = 0;
        bool found = false;
        r = registry_instance_list(rg->reg, &all, &n_all);
        for (size_t i = 0; i < n_all && r >= 0 && !found; i++)
            if (row_visible(ctx, all[i]) && strcmp(all[i]->client_token, t->token) == 0) {
                memcpy(reservation, all[i]->reservation_id, ID_MAX_SIZE);
                found = true;
            }
        registry_instance_list_free(all, n_all);
        if (r < 0 || !found)
            return r;
    }
    r = reservation_ids(ctx, rg, reservation, ret, ret_n);
    return r < 0 ? r : 1;
}

int api_run_instances(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    const char *image_id = query_get(q, "ImageId");
    const char *type_name = query_get(q, "InstanceType");
    const char *key_name = query_get(q, "KeyName");
    const char *user_data = query_get(q, "UserData");
    const char *token = query_get(q, "ClientToken");
    _cleanup_(region_freep) struct region *rg = NULL;
    _cleanup_free_ uint8_t *ud = NULL;
    _cleanup_free_ const char **sg_ids = NULL, **sg_names = NULL;
    _cleanup_free_ struct registry_tag *itags = NULL, *vtags = NULL;
    _cleanup_(network_release) struct network nw = {0};
    struct registry_security_group *groups = NULL;
    struct registry_key_pair *keys = NULL;
    struct registry_image *img = NULL;
    char(*ids)[ID_MAX_SIZE] = NULL;
    struct instance_launch l = {0};
    struct service_client_token ct = {0};
    struct instance_manager *m;
    bool launched = false;
    char reservation[ID_MAX_SIZE];
    size_t n_ud = 0, n_sg = 0, n_groups = 0, n_keys = 0, n_itags = 0, n_vtags = 0, n = 0;
    int r;

    r = manager(ctx, &m);
    if (r < 0)
        return r;
    if (!image_id)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter ImageId");
    r = api_image_id_check(ctx, image_id);
    if (r < 0)
        return r;
    if ((r = count_param(ctx, q, "MinCount", &l.min_count)) < 0 ||
        (r = count_param(ctx, q, "MaxCount", &l.max_count)) < 0)
        return r;
    if (l.min_count > l.max_count)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "MinCount (%u) must be less than or equal to MaxCount (%u)", l.min_count,
                        l.max_count);
    if (!type_name)
        type_name = DEFAULT_INSTANCE_TYPE;
    if (!instance_type_find(type_name))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "The instance type '%.40s' does not exist (docs/api.md lists them)",
                        type_name);
    if (token && !client_token_is_valid(token))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Value for parameter ClientToken is invalid: 1 to %d printable ASCII "
                        "characters",
                        INSTANCE_CLIENT_TOKEN_MAX);
    if (user_data && (r = decode_user_data(ctx, user_data, &ud, &n_ud)) < 0)
        return r;
    r = network_parse(ctx, q, &nw);
    if (r < 0)
        return r;
    {
        struct api_tag_target t[] = {{"instance", &itags, &n_itags}, {"volume", &vtags, &n_vtags}};
        r = api_tag_specs_parse(ctx, q, t, 2);
        if (r < 0)
            return r;
    }

    r = api_region_open(ctx, &rg);
    if (r < 0)
        return r;
    if (!rg) {
        ctx->resource = API_RES_IMAGE;
        return api_image_not_found(ctx, &image_id, 1);
    }
    /* the image: visible (a deregistered or disabled one, another
     * account's private one: NotFound), then available */
    r = registry_image_get(rg->reg, image_id, &img);
    if (r == -ENOENT || (r == 0 && (api_image_access(ctx, img) == API_ACCESS_NONE ||
                                    img->state == IMAGE_DISABLED))) {
        r = api_image_not_found(ctx, &image_id, 1);
        goto out;
    }
    if (r < 0)
        goto out;
    if (img->state != IMAGE_AVAILABLE) {
        r = api_fail(ctx, API_ERR_IMAGE_UNAVAILABLE, "The image id '[%s]' is not available (%s)",
                     image_id, image_state_to_string(img->state));
        goto out;
    }
    r = metadata_options(ctx, q, img, &l);
    if (r >= 0)
        r = root_override(ctx, rg, q, img, &l);
    if (r >= 0)
        r = security_groups(ctx, rg, nw.groups, &sg_ids, &sg_names, &n_sg, &groups, &n_groups);
    if (r < 0)
        goto out;
    if (key_name) {
        size_t k;
        r = registry_key_pair_list(rg->reg, ctx->account, &keys, &n_keys);
        if (r < 0)
            goto out;
        for (k = 0; k < n_keys; k++)
            if (strcmp(keys[k].name, key_name) == 0)
                break;
        if (k == n_keys) {
            ctx->resource = API_RES_KEY_PAIR;
            r = api_fail(ctx, API_ERR_NOT_FOUND, "The key pair '%.255s' does not exist", key_name);
            goto out;
        }
        l.key_name = keys[k].name;
        l.public_key = keys[k].public_key;
    }
    r = api_dry_run(ctx);
    if (r < 0)
        goto out;
    if (token) {
        /* a ClientToken seen before: answer that launch again (an SDK's
         * retry after a lost answer launches nothing new), or refuse other
         * parameters under it */
        ct.account = ctx->account;
        ct.token = token;
        ct.action = ctx->action;
        api_params_digest(q, &ct.params);
        l.token = &ct;
        r = token_find(ctx, rg, &ct, reservation, &ids, &n);
        if (r < 0)
            goto out;
        if (r > 0)
            goto answer;
    }

    l.owner = ctx->account;
    l.image_id = image_id;
    l.instance_type = type_name;
    l.security_group_ids = sg_ids;
    l.security_group_names = sg_names;
    l.n_security_groups = n_sg;
    l.user_data = ud;
    l.user_data_len = n_ud;
    l.instance_tags = itags;
    l.n_instance_tags = n_itags;
    l.volume_tags = vtags;
    l.n_volume_tags = n_vtags;
    l.client_token = token;
    r = instance_manager_launch(m, ctx->region, &l, reservation, &ids, &n);
    if (r == -EALREADY) {
        /* a concurrent request with the token won: answer as it did */
        error_clear();
        r = token_find(ctx, rg, &ct, reservation, &ids, &n);
        if (r == 0)
            r = error_set(EIO, "client token '%s' was recorded but cannot be read", token);
        if (r < 0)
            goto out;
        goto answer;
    }
    if (r < 0) {
        r = manager_error(ctx, r);
        if (r == -ENOENT || r == -EAGAIN) {
            ctx->resource = API_RES_IMAGE;
            r = api_fail(ctx, r == -ENOENT ? API_ERR_NOT_FOUND : API_ERR_IMAGE_UNAVAILABLE, "%s",
                         error_message() ? error_message() : "image unavailable");
        }
        goto out;
    }
    launched = true;
answer:
    /* the reservation with every instance as registered: a new launch's
     * `pending` (as EC2 answers, even when a guest's boot already failed
     * meanwhile); a repeated token's as they are now */
    xml_element(x, "reservationId", reservation);
    xml_element(x, "ownerId", ctx->account);
    xml_open(x, "groupSet");
    xml_close(x);
    xml_open(x, "instancesSet");
    for (size_t i = 0; i < n && r >= 0; i++) {
        struct registry_instance *row = NULL;
        struct registry_tag *tags = NULL;
        size_t nt = 0;
        /* a fresh read: the handle may predate the launch's commit */
        r = registry_instance_get(rg->reg, ids[i], &row);
        if (r >= 0 && launched) {
            row->state = INSTANCE_PENDING;
            row->reason_code[0] = row->reason_message[0] = '\0';
        }
        if (r >= 0)
            r = registry_tag_list(rg->reg, ids[i], &tags, &nt);
        if (r >= 0)
            r = write_instance(ctx, x, rg, row, tags, nt);
        registry_tag_list_free(tags, nt);
        registry_instance_free(row);
    }
    xml_close(x);
out:
    free(ids);
    registry_image_free(img);
    registry_key_pair_list_free(keys, n_keys);
    registry_security_group_list_free(groups, n_groups);
    return r;
}

/* ---- DescribeInstances ---- */

static void paging_key(const struct registry_instance *row, char *buf, size_t size)
{
    snprintf(buf, size, "%020" PRId64 ".%s.%06d", row->launch_time, row->reservation_id,
             row->launch_index);
}

int api_describe_instances(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_free_ const char **ids = NULL;
    _cleanup_free_ char *after = NULL;
    _cleanup_(region_freep) struct region *rg = NULL;
    struct registry_instance **rows = NULL;
    struct api_filters fs = {0};
    size_t n_ids = 0, n_rows = 0, max = 0, shown = 0;
    bool more = false;
    char last[128] = "";
    int r;

    r = instance_ids(ctx, q, false, &ids, &n_ids);
    if (r < 0)
        return r;
    r = api_paging_parse(ctx, q, n_ids > 0, "instanceIds", &max, &after);
    if (r < 0)
        return r;
    r = api_filters_parse(ctx, q, instance_filters, &fs);
    if (r < 0)
        return r;
    r = api_dry_run(ctx);
    if (r < 0)
        goto out;
    /* terminated instances past the retention period go now (they are
     * invisible already: row_visible()); a failure only delays that */
    if (instance_manager_get() &&
        instance_manager_expire(instance_manager_get(), ctx->region, 0) < 0)
        error_clear();
    r = api_region_open(ctx, &rg);
    if (r < 0)
        goto out;
    if (n_ids) {
        struct registry_instance **asked = NULL;
        r = load_rows(ctx, rg, ids, n_ids, &asked);
        if (r < 0)
            goto out;
        rows = asked;
        n_rows = n_ids;
    } else if (rg) {
        r = registry_instance_list(rg->reg, &rows, &n_rows);
        if (r < 0)
            goto out;
    }
    xml_open(x, "reservationSet");
    const char *open_reservation = NULL;
    for (size_t i = 0; i < n_rows; i++) {
        struct registry_instance *row = rows[i];
        struct registry_tag *tags = NULL;
        size_t nt = 0;
        char key[128];

        if (!row || !row_visible(ctx, row) || !match_fields(ctx, &fs, row))
            continue;
        /* repeated ids: once */
        bool dup = false;
        for (size_t k = 0; k < i && !dup; k++)
            dup = rows[k] && strcmp(rows[k]->id, row->id) == 0;
        if (dup)
            continue;
        paging_key(row, key, sizeof(key));
        if (after && strcmp(key, after) <= 0)
            continue;
        r = registry_tag_list(rg->reg, row->id, &tags, &nt);
        if (r < 0)
            break;
        if (!api_filters_match_tags(&fs, tags, nt)) {
            registry_tag_list_free(tags, nt);
            continue;
        }
        if (max && shown == max) {
            registry_tag_list_free(tags, nt);
            more = true;
            break;
        }
        if (!open_reservation || strcmp(open_reservation, row->reservation_id) != 0) {
            if (open_reservation) {
                xml_close(x); /* instancesSet */
                xml_close(x); /* item */
            }
            xml_open(x, "item");
            xml_element(x, "reservationId", row->reservation_id);
            xml_element(x, "ownerId", row->owner);
            xml_open(x, "groupSet");
            xml_close(x);
            xml_open(x, "instancesSet");
            open_reservation = row->reservation_id;
        }
        r = write_instance(ctx, x, rg, row, tags, nt);
        registry_tag_list_free(tags, nt);
        if (r < 0)
            break;
        shown++;
        snprintf(last, sizeof(last), "%s", key);
    }
    if (open_reservation) {
        xml_close(x);
        xml_close(x);
    }
    xml_close(x);
    if (r >= 0 && more) {
        _cleanup_free_ char *tok = api_token_make(last);
        xml_element(x, "nextToken", tok);
    }
out:
    registry_instance_list_free(rows, n_rows);
    api_filters_release(&fs);
    return r < 0 ? r : 0;
}

/* ---- DescribeInstanceStatus ---- */

/* One of DescribeInstanceStatus' systemStatus and instanceStatus: "ok"
 * with its reachability check passed while the instance runs, else
 * "not-applicable" with no details. */
static void write_status(struct xml *x, const char *name, enum instance_state state)
{
    xml_open(x, name);
    xml_element(x, "status", state == INSTANCE_RUNNING ? "ok" : "not-applicable");
    xml_open(x, "details");
    if (state == INSTANCE_RUNNING) {
        xml_open(x, "item");
        xml_element(x, "name", "reachability");
        xml_element(x, "status", "passed");
        xml_close(x);
    }
    xml_close(x);
    xml_close(x);
}

int api_describe_instance_status(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    static const char *const known[] = {"instance-state-name", "instance-state-code",
                                        "availability-zone", NULL};
    _cleanup_free_ const char **ids = NULL;
    _cleanup_(region_freep) struct region *rg = NULL;
    struct registry_instance **rows = NULL;
    struct api_filters fs = {0};
    size_t n_ids = 0, n_rows = 0;
    bool all = false;
    int r;

    r = instance_ids(ctx, q, false, &ids, &n_ids);
    if (r >= 0)
        r = api_get_bool(ctx, q, "IncludeAllInstances", &all);
    if (r >= 0)
        r = api_filters_parse(ctx, q, known, &fs);
    if (r < 0)
        return r;
    r = api_region_open(ctx, &rg);
    if (r < 0)
        goto out;
    if (n_ids) {
        r = load_rows(ctx, rg, ids, n_ids, &rows);
        if (r < 0)
            goto out;
        n_rows = n_ids;
    } else if (rg) {
        r = registry_instance_list(rg->reg, &rows, &n_rows);
        if (r < 0)
            goto out;
    }
    xml_open(x, "instanceStatusSet");
    for (size_t i = 0; i < n_rows; i++) {
        const struct registry_instance *row = rows[i];
        char code[16];
        if (!row || !row_visible(ctx, row) || (!all && row->state != INSTANCE_RUNNING))
            continue;
        snprintf(code, sizeof(code), "%d", (int)row->state);
        if (!api_filters_match(&fs, "instance-state-name", instance_state_to_string(row->state)) ||
            !api_filters_match(&fs, "instance-state-code", code) ||
            !api_filters_match(&fs, "availability-zone", row->availability_zone))
            continue;
        xml_open(x, "item");
        xml_element(x, "instanceId", row->id);
        xml_element(x, "availabilityZone", row->availability_zone);
        write_state(x, "instanceState", row->state);
        write_status(x, "systemStatus", row->state);
        write_status(x, "instanceStatus", row->state);
        xml_open(x, "eventsSet");
        xml_close(x);
        xml_close(x);
    }
    xml_close(x);
out:
    registry_instance_list_free(rows, n_rows);
    api_filters_release(&fs);
    return r < 0 ? r : 0;
}

/* ---- Stop, Start, Reboot, Terminate ---- */

enum change { CHANGE_STOP, CHANGE_START, CHANGE_REBOOT, CHANGE_TERMINATE };

static int state_change(struct api_ctx *ctx, const struct query *q, struct xml *x, enum change what)
{
    _cleanup_free_ const char **ids = NULL;
    _cleanup_(region_freep) struct region *rg = NULL;
    struct registry_instance **rows = NULL;
    struct instance_manager *m;
    enum instance_state *before = NULL;
    size_t n_ids = 0;
    bool force = false;
    int r;

    r = manager(ctx, &m);
    if (r >= 0)
        r = instance_ids(ctx, q, true, &ids, &n_ids);
    if (r >= 0 && what == CHANGE_STOP)
        r = api_get_bool(ctx, q, "Force", &force);
    if (r < 0)
        return r;
    r = api_region_open(ctx, &rg);
    if (r >= 0)
        r = load_rows(ctx, rg, ids, n_ids, &rows);
    if (r < 0)
        return r;
    /* refuse the whole request when one instance cannot make the change
     * (as EC2 does), before changing any */
    for (size_t i = 0; i < n_ids && r >= 0; i++) {
        enum instance_state s = rows[i]->state;
        bool bad = false;
        switch (what) {
        case CHANGE_STOP: bad = s == INSTANCE_TERMINATED || s == INSTANCE_SHUTTING_DOWN; break;
        case CHANGE_START:
            bad = s == INSTANCE_TERMINATED || s == INSTANCE_SHUTTING_DOWN || s == INSTANCE_STOPPING;
            break;
        case CHANGE_REBOOT: bad = s != INSTANCE_RUNNING && s != INSTANCE_PENDING; break;
        case CHANGE_TERMINATE: break;
        }
        if (bad) {
            ctx->resource = API_RES_INSTANCE;
            r = api_fail(ctx, API_ERR_IN_USE,
                         "The instance '%s' is not in a state from which it can be %s.",
                         rows[i]->id,
                         what == CHANGE_STOP    ? "stopped"
                         : what == CHANGE_START ? "started"
                                                : "rebooted");
        }
    }
    if (r >= 0)
        r = api_dry_run(ctx);
    if (r < 0)
        goto out;
    before = xcalloc(n_ids, sizeof(*before));
    for (size_t i = 0; i < n_ids && r >= 0; i++) {
        const char *id = rows[i]->id;
        before[i] = rows[i]->state;
        switch (what) {
        case CHANGE_STOP: r = instance_manager_stop(m, ctx->region, id, force, false); break;
        case CHANGE_START: r = instance_manager_start(m, ctx->region, id); break;
        case CHANGE_REBOOT:
            if (rows[i]->state == INSTANCE_RUNNING)
                r = instance_manager_reboot(m, ctx->region, id);
            break;
        case CHANGE_TERMINATE: r = instance_manager_terminate(m, ctx->region, id, false); break;
        }
        if (r < 0)
            r = manager_error(ctx, r);
    }
    if (r < 0)
        goto out;
    if (what == CHANGE_REBOOT) {
        xml_element_bool(x, "return", true);
        goto out;
    }
    xml_open(x, "instancesSet");
    for (size_t i = 0; i < n_ids; i++) {
        struct registry_instance *now = NULL;
        /* a fresh handle sees the manager's commits */
        r = registry_instance_get(rg->reg, ids[i], &now);
        if (r < 0)
            break;
        xml_open(x, "item");
        xml_element(x, "instanceId", now->id);
        write_state(x, "currentState", now->state);
        write_state(x, "previousState", before[i]);
        xml_close(x);
        registry_instance_free(now);
    }
    xml_close(x);
out:
    free(before);
    registry_instance_list_free(rows, n_ids);
    return r < 0 ? r : 0;
}

int api_stop_instances(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    return state_change(ctx, q, x, CHANGE_STOP);
}

int api_start_instances(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    return state_change(ctx, q, x, CHANGE_START);
}

int api_reboot_instances(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    return state_change(ctx, q, x, CHANGE_REBOOT);
}

int api_terminate_instances(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    return state_change(ctx, q, x, CHANGE_TERMINATE);
}

/* ---- GetConsoleOutput ---- */

static char *base64(const uint8_t *data, size_t len)
{
    char *out = xmalloc(4 * ((len + 2) / 3) + 1);
    int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    out[n < 0 ? 0 : n] = '\0';
    return out;
}

/* The last CONSOLE_OUTPUT_MAX bytes of DIR/console.log ("" when none). */
static int read_console(struct api_ctx *ctx, const char *id, uint8_t **ret, size_t *ret_n)
{
    _cleanup_free_ char *path =
        xasprintf("%s/regions/%s/instances/%s/console.log", ctx->data_dir, ctx->region, id);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    uint8_t *buf;
    off_t off = 0;
    size_t len;
    ssize_t got;

    *ret = NULL;
    *ret_n = 0;
    if (fd < 0)
        return errno == ENOENT ? 0 : error_set(errno, "cannot open '%s': %m", path);
    if (fstat(fd, &st) < 0)
        return error_set(errno, "cannot stat '%s': %m", path);
    len = (size_t)st.st_size;
    if (len > CONSOLE_OUTPUT_MAX) {
        off = st.st_size - CONSOLE_OUTPUT_MAX;
        len = CONSOLE_OUTPUT_MAX;
    }
    buf = xmalloc(len + 1);
    got = pread_full(fd, buf, len, off);
    if (got < 0) {
        free(buf);
        return error_set(errno, "cannot read '%s': %m", path);
    }
    *ret = buf;
    *ret_n = (size_t)got;
    return 0;
}

int api_get_console_output(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    const char *id = query_get(q, "InstanceId");
    _cleanup_(region_freep) struct region *rg = NULL;
    struct registry_instance **rows = NULL;
    _cleanup_free_ uint8_t *data = NULL;
    _cleanup_free_ char *b64 = NULL;
    char when[64];
    size_t n = 0;
    bool latest = false;
    int r;

    if (!id)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter InstanceId");
    r = api_id_check(ctx, API_RES_INSTANCE, "i", id);
    if (r >= 0)
        r = api_get_bool(ctx, q, "Latest", &latest);
    if (r < 0)
        return r;
    r = api_region_open(ctx, &rg);
    if (r >= 0)
        r = load_rows(ctx, rg, &id, 1, &rows);
    if (r < 0)
        return r;
    r = read_console(ctx, id, &data, &n);
    if (r >= 0) {
        b64 = base64(data ? data : (const uint8_t *)"", n);
        xml_element(x, "instanceId", id);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        xml_element(
            x, "timestamp",
            api_format_time((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, when, sizeof(when)));
        xml_element(x, "output", b64);
    }
    registry_instance_list_free(rows, 1);
    return r;
}

/* ---- DescribeInstanceAttribute ---- */

int api_describe_instance_attribute(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    const char *id = query_get(q, "InstanceId");
    const char *attr = query_get(q, "Attribute");
    _cleanup_(region_freep) struct region *rg = NULL;
    struct registry_instance **rows = NULL;
    int r;

    if (!id || !attr)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameters InstanceId and Attribute");
    r = api_id_check(ctx, API_RES_INSTANCE, "i", id);
    if (r < 0)
        return r;
    static const char *const known[] = {
        "instanceType",
        "userData",
        "rootDeviceName",
        "blockDeviceMapping",
        "disableApiTermination",
        "instanceInitiatedShutdownBehavior",
        "groupSet",
        "disableApiStop",
        "kernel",
        "ramdisk",
        "ebsOptimized",
        NULL,
    };
    bool ok = false;
    for (size_t i = 0; known[i]; i++)
        ok = ok || strcmp(known[i], attr) == 0;
    if (!ok)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Value (%.40s) for parameter attribute is invalid. Unknown attribute.",
                        attr);
    r = api_dry_run(ctx);
    if (r < 0)
        return r;
    r = api_region_open(ctx, &rg);
    if (r >= 0)
        r = load_rows(ctx, rg, &id, 1, &rows);
    if (r < 0)
        return r;
    const struct registry_instance *row = rows[0];
    xml_element(x, "instanceId", row->id);
    if (strcmp(attr, "instanceType") == 0) {
        xml_open(x, "instanceType");
        xml_element(x, "value", row->instance_type);
        xml_close(x);
    } else if (strcmp(attr, "userData") == 0) {
        xml_open(x, "userData");
        if (row->user_data) {
            _cleanup_free_ char *b64 = base64(row->user_data, row->user_data_len);
            xml_element(x, "value", b64);
        }
        xml_close(x);
    } else if (strcmp(attr, "rootDeviceName") == 0) {
        xml_open(x, "rootDeviceName");
        xml_element(x, "value", row->root_device_name);
        xml_close(x);
    } else if (strcmp(attr, "blockDeviceMapping") == 0) {
        write_block_device_mapping(x, row);
    } else if (strcmp(attr, "disableApiTermination") == 0 || strcmp(attr, "disableApiStop") == 0 ||
               strcmp(attr, "ebsOptimized") == 0) {
        xml_open(x, attr);
        xml_element_bool(x, "value", false);
        xml_close(x);
    } else if (strcmp(attr, "instanceInitiatedShutdownBehavior") == 0) {
        xml_open(x, "instanceInitiatedShutdownBehavior");
        xml_element(x, "value", "stop");
        xml_close(x);
    } else if (strcmp(attr, "groupSet") == 0) {
        char **sgs = NULL;
        size_t n_sgs = 0;
        r = registry_instance_security_groups(rg->reg, row->id, &sgs, &n_sgs);
        if (r >= 0) {
            xml_open(x, "groupSet");
            for (size_t i = 0; i < n_sgs; i++) {
                xml_open(x, "item");
                xml_element(x, "groupId", sgs[i]);
                xml_close(x);
            }
            xml_close(x);
            registry_instance_security_groups_free(sgs, n_sgs);
        }
    } else {
        xml_open(x, attr);
        xml_close(x);
    }
    registry_instance_list_free(rows, 1);
    return r < 0 ? r : 0;
}
