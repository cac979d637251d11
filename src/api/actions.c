/* The EC2 action table and the actions that describe the server itself:
 * DescribeRegions, DescribeAvailabilityZones, DescribeAccountAttributes.
 * Image and snapshot actions (issue 3) add their rows to the table here and
 * their handlers in files of their own (snapshots.c, tags.c); the shared
 * Describe* helpers are in filters.c. */
#include <stdio.h>
#include <string.h>

#include "api/internal.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"

/* ---- DescribeRegions ---- */

#define OPT_IN_NOT_REQUIRED "opt-in-not-required"

static int describe_regions(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    static const char *const known[] = { "endpoint", "region-name", "opt-in-status", NULL };
    _cleanup_free_ const char **names = NULL;
    struct api_filters fs;
    size_t n;
    bool all;
    int r;

    r = api_get_bool(ctx, q, "AllRegions", &all);
    if (r < 0)
        return r;
    r = query_get_list(q, "RegionName", &names, &n);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++)
        if (!api_in_list(ctx->regions, ctx->n_regions, names[i]))
            return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE, "Invalid region: %.100s",
                            names[i]);
    r = api_filters_parse(ctx, q, known, &fs);
    if (r < 0)
        return r;
    xml_open(x, "regionInfo");
    for (size_t i = 0; i < ctx->n_regions; i++) {
        const char *name = ctx->regions[i];
        if (n && !api_in_list(names, n, name))
            continue;
        if (!api_filters_match(&fs, "region-name", name) ||
            !api_filters_match(&fs, "endpoint", ctx->endpoint) ||
            !api_filters_match(&fs, "opt-in-status", OPT_IN_NOT_REQUIRED))
            continue;
        xml_open(x, "item");
        xml_element(x, "regionName", name);
        xml_element(x, "regionEndpoint", ctx->endpoint);
        xml_element(x, "optInStatus", OPT_IN_NOT_REQUIRED);
        xml_close(x);
    }
    xml_close(x);
    api_filters_release(&fs);
    return 0;
}

/* ---- DescribeAvailabilityZones ---- */

/* kiln has one zone per region: "<region>a", id "<region>-az1". */
static int describe_availability_zones(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    static const char *const known[] = { "group-name", "message", "opt-in-status", "region-name",
                                         "state", "zone-id", "zone-name", "zone-type", NULL };
    _cleanup_free_ const char **names = NULL, **ids = NULL;
    struct api_filters fs;
    char zone[80], zone_id[80];
    size_t n_names, n_ids;
    bool all;
    int r;

    r = api_get_bool(ctx, q, "AllAvailabilityZones", &all);
    if (r < 0)
        return r;
    r = query_get_list(q, "ZoneName", &names, &n_names);
    if (r == 0)
        r = query_get_list(q, "ZoneId", &ids, &n_ids);
    if (r < 0)
        return r;
    snprintf(zone, sizeof(zone), "%sa", ctx->region);
    snprintf(zone_id, sizeof(zone_id), "%s-az1", ctx->region);
    for (size_t i = 0; i < n_names; i++)
        if (strcmp(names[i], zone) != 0)
            return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                            "The zone '%.100s' does not exist.", names[i]);
    for (size_t i = 0; i < n_ids; i++)
        if (strcmp(ids[i], zone_id) != 0)
            return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                            "The zone ID '%.100s' does not exist.", ids[i]);
    r = api_filters_parse(ctx, q, known, &fs);
    if (r < 0)
        return r;
    xml_open(x, "availabilityZoneInfo");
    if (api_filters_match(&fs, "zone-name", zone) && api_filters_match(&fs, "zone-id", zone_id) &&
        api_filters_match(&fs, "region-name", ctx->region) &&
        api_filters_match(&fs, "group-name", ctx->region) &&
        api_filters_match(&fs, "state", "available") &&
        api_filters_match(&fs, "zone-type", "availability-zone") &&
        api_filters_match(&fs, "opt-in-status", OPT_IN_NOT_REQUIRED) &&
        api_filters_match(&fs, "message", "")) {
        xml_open(x, "item");
        xml_element(x, "optInStatus", OPT_IN_NOT_REQUIRED);
        xml_element(x, "zoneName", zone);
        xml_element(x, "zoneId", zone_id);
        xml_element(x, "groupName", ctx->region);
        xml_element(x, "networkBorderGroup", ctx->region);
        xml_element(x, "zoneType", "availability-zone");
        xml_element(x, "zoneState", "available");
        xml_element(x, "regionName", ctx->region);
        xml_open(x, "messageSet");
        xml_close(x);
        xml_close(x);
    }
    xml_close(x);
    api_filters_release(&fs);
    return 0;
}

/* ---- DescribeAccountAttributes ---- */

static const struct {
    const char *name;
    const char *value;
} account_attributes[] = {
    { "supported-platforms", "VPC" },
    { "default-vpc", NULL }, /* the caller's default VPC (vpcs.c) */
    { "max-instances", "20" },
    { "vpc-max-security-groups-per-interface", "5" },
    { "max-elastic-ips", "5" },
    { "vpc-max-elastic-ips", "5" },
};

static int describe_account_attributes(struct api_ctx *ctx, const struct query *q,
                                       struct xml *x)
{
    _cleanup_free_ const char **names = NULL;
    char vpc[ID_MAX_SIZE];
    size_t n;
    int r;

    api_default_vpc_id(ctx, vpc);
    r = query_get_list(q, "AttributeName", &names, &n);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++) {
        size_t k;
        for (k = 0; k < ARRAY_SIZE(account_attributes); k++)
            if (strcmp(names[i], account_attributes[k].name) == 0)
                break;
        if (k == ARRAY_SIZE(account_attributes))
            return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                            "Value (%.100s) for parameter attributeName is invalid",
                            names[i]);
    }
    xml_open(x, "accountAttributeSet");
    for (size_t k = 0; k < ARRAY_SIZE(account_attributes); k++) {
        if (n && !api_in_list(names, n, account_attributes[k].name))
            continue;
        xml_open(x, "item");
        xml_element(x, "attributeName", account_attributes[k].name);
        xml_open(x, "attributeValueSet");
        xml_open(x, "item");
        xml_element(x, "attributeValue",
                    account_attributes[k].value ? account_attributes[k].value : vpc);
        xml_close(x);
        xml_close(x);
        xml_close(x);
    }
    xml_close(x);
    return 0;
}

/* ---- the table ---- */

static const struct api_action ec2_actions[] = {
    { .name = "AuthorizeSecurityGroupIngress", .handler = api_authorize_security_group_ingress,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "CopyImage", .handler = api_copy_image, .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "CopySnapshot", .handler = api_copy_snapshot, .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "CreateImage", .handler = api_create_image, .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "CreateKeyPair", .handler = api_create_key_pair,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "CreateSecurityGroup", .handler = api_create_security_group,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "CreateSnapshot", .handler = api_create_snapshot, .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "CreateTags", .handler = api_create_tags, .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "CreateVolume", .handler = api_create_volume, .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "DeleteKeyPair", .handler = api_delete_key_pair,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "DeleteSecurityGroup", .handler = api_delete_security_group,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "DeleteSnapshot", .handler = api_delete_snapshot,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "DeleteTags", .handler = api_delete_tags, .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "DeleteVolume", .handler = api_delete_volume, .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "DeregisterImage", .handler = api_deregister_image,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "DescribeAccountAttributes", .handler = describe_account_attributes },
    { .name = "DescribeAvailabilityZones", .handler = describe_availability_zones },
    { .name = "DescribeImageAttribute", .handler = api_describe_image_attribute,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "DescribeImages", .handler = api_describe_images, .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "DescribeInstanceAttribute", .handler = api_describe_instance_attribute,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "DescribeInstanceStatus", .handler = api_describe_instance_status },
    { .name = "DescribeInstances", .handler = api_describe_instances,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "DescribeKeyPairs", .handler = api_describe_key_pairs },
    { .name = "DescribeRegions", .handler = describe_regions },
    { .name = "DescribeSecurityGroups", .handler = api_describe_security_groups },
    { .name = "DescribeSnapshotAttribute", .handler = api_describe_snapshot_attribute,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "DescribeSnapshots", .handler = api_describe_snapshots,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "DescribeSubnets", .handler = api_describe_subnets },
    { .name = "DescribeTags", .handler = api_describe_tags, .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "DescribeVolumeAttribute", .handler = api_describe_volume_attribute,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "DescribeVolumes", .handler = api_describe_volumes,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "DescribeVpcs", .handler = api_describe_vpcs },
    { .name = "DisableImage", .handler = api_disable_image, .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "DisableImageBlockPublicAccess", .handler = api_disable_image_block_public_access,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "DisableImageDeprecation", .handler = api_disable_image_deprecation,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "DisableImageDeregistrationProtection",
      .handler = api_disable_image_deregistration_protection, .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "EnableImage", .handler = api_enable_image, .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "EnableImageBlockPublicAccess", .handler = api_enable_image_block_public_access,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "EnableImageDeprecation", .handler = api_enable_image_deprecation,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "EnableImageDeregistrationProtection",
      .handler = api_enable_image_deregistration_protection, .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "GetConsoleOutput", .handler = api_get_console_output },
    { .name = "GetImageBlockPublicAccessState",
      .handler = api_get_image_block_public_access_state },
    { .name = "ImportKeyPair", .handler = api_import_key_pair,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "ModifyImageAttribute", .handler = api_modify_image_attribute,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "ModifyVolume", .handler = api_modify_volume, .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "ModifySnapshotAttribute", .handler = api_modify_snapshot_attribute,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "RebootInstances", .handler = api_reboot_instances,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "RegisterImage", .handler = api_register_image, .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "ResetImageAttribute", .handler = api_reset_image_attribute,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "ResetSnapshotAttribute", .handler = api_reset_snapshot_attribute,
      .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "RunInstances", .handler = api_run_instances, .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "StartInstances", .handler = api_start_instances, .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "StopInstances", .handler = api_stop_instances, .flags = API_ACTION_OWN_DRY_RUN },
    { .name = "TerminateInstances", .handler = api_terminate_instances,
      .flags = API_ACTION_OWN_DRY_RUN },
};

const struct api_action *api_ec2_action_find(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(ec2_actions); i++)
        if (strcmp(ec2_actions[i].name, name) == 0)
            return &ec2_actions[i];
    return NULL;
}
