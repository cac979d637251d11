/* The default VPC and its one subnet: DescribeVpcs, DescribeSubnets, and
 * the ids and checks the other handlers use (RunInstances' SubnetId,
 * CreateSecurityGroup's VpcId, the vpcId and subnetId DescribeInstances
 * and DescribeSecurityGroups report, DescribeAccountAttributes'
 * default-vpc).
 *
 * Design notes (docs/api.md, "The default VPC"):
 * - kiln has no virtual networks.  Every instance is alone on QEMU user
 *   networking; the host reaches its port 22 at its own loopback address
 *   in 127.100.0.0/16.  That range is what the default VPC and its subnet
 *   describe, so that clients which pick the instance's address by its
 *   VPC (Packer's amazon-ebs, without ssh_interface) find the address ssh
 *   reaches.
 * - Each account has one default VPC per region, as in EC2, and nothing
 *   else: CreateVpc and CreateSubnet do not exist.  The ids are derived
 *   (SHA-256 of account and region), so nothing is stored and they are
 *   stable across restarts: "vpc-" and "subnet-" with 17 hex digits (the
 *   CIDR block's association id likewise, "vpc-cidr-assoc-").
 * - The subnet is the whole VPC (EC2 allows a subnet as large as its
 *   VPC), default for the region's one zone, public IP on launch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "common/cleanup.h"
#include "common/hash.h"
#include "common/ids.h"
#include "common/util.h"

#define CIDR API_DEFAULT_VPC_CIDR
/* 2^16 addresses less the 5 EC2 reserves in every subnet (docs/api.md:
 * the running instances are not subtracted). */
#define SUBNET_FREE_ADDRESSES "65531"

static void derive_id(const struct api_ctx *ctx, const char *prefix, char *ret, size_t size)
{
    char text[128], hex[DIGEST_HEX_SIZE];
    struct digest d;
    int n =
        snprintf(text, sizeof(text), "kiln default %s\n%s\n%s", prefix, ctx->account, ctx->region);

    sha256(text, (size_t)n < sizeof(text) ? (size_t)n : sizeof(text) - 1, &d);
    digest_to_hex(&d, hex);
    snprintf(ret, size, "%s-%.17s", prefix, hex);
}

void api_default_vpc_id(const struct api_ctx *ctx, char ret[ID_MAX_SIZE])
{
    derive_id(ctx, "vpc", ret, ID_MAX_SIZE);
}

void api_default_subnet_id(const struct api_ctx *ctx, char ret[ID_MAX_SIZE])
{
    derive_id(ctx, "subnet", ret, ID_MAX_SIZE);
}

/* A well-formed id of `res` that must be the derived one. */
static int check_id(struct api_ctx *ctx, enum api_resource res, const char *prefix, const char *id,
                    const char *ours)
{
    int r = api_id_check(ctx, res, prefix, id);

    if (r < 0)
        return r;
    if (strcmp(id, ours) != 0)
        return api_not_found(ctx, res, &id, 1);
    return 0;
}

int api_vpc_check(struct api_ctx *ctx, const char *id)
{
    char vpc[ID_MAX_SIZE];

    api_default_vpc_id(ctx, vpc);
    return check_id(ctx, API_RES_VPC, "vpc", id, vpc);
}

int api_subnet_check(struct api_ctx *ctx, const char *id)
{
    char subnet[ID_MAX_SIZE];

    api_default_subnet_id(ctx, subnet);
    return check_id(ctx, API_RES_SUBNET, "subnet", id, subnet);
}

/* What a Describe of the one item asks: its Id.N list (each must be the
 * derived id: NotFound or Malformed), its filters, the page token. */
struct listing {
    const char **ids;
    size_t n_ids;
    struct api_filters fs;
    char *after;
};

static void listing_release(struct listing *l)
{
    free(l->ids);
    api_filters_release(&l->fs);
    free(l->after);
}

static int listing_parse(struct api_ctx *ctx, const struct query *q, const char *ids_param,
                         const char *const *known, enum api_resource res, const char *prefix,
                         const char *ours, struct listing *ret)
{
    size_t max;
    int r;

    memset(ret, 0, sizeof(*ret));
    r = query_get_list(q, ids_param, &ret->ids, &ret->n_ids);
    if (r < 0)
        return r;
    for (size_t i = 0; i < ret->n_ids; i++) {
        r = check_id(ctx, res, prefix, ret->ids[i], ours);
        if (r < 0)
            return r;
    }
    r = api_paging_parse(ctx, q, ret->n_ids > 0, ids_param, &max, &ret->after);
    if (r < 0)
        return r;
    return api_filters_parse(ctx, q, known, &ret->fs);
}

/* ---- DescribeVpcs ---- */

int api_describe_vpcs(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    static const char *const known[] = {"cidr",
                                        "cidr-block-association.cidr-block",
                                        "cidr-block-association.state",
                                        "dhcp-options-id",
                                        "is-default",
                                        "isDefault",
                                        "owner-id",
                                        "state",
                                        "vpc-id",
                                        "tag:",
                                        "tag-key",
                                        NULL};
    _cleanup_(listing_release) struct listing l = {0};
    char vpc[ID_MAX_SIZE], assoc[ID_MAX_SIZE + 16]; /* "vpc-cidr-assoc-" */
    const struct api_filters *fs = &l.fs;
    int r;

    api_default_vpc_id(ctx, vpc);
    derive_id(ctx, "vpc-cidr-assoc", assoc, sizeof(assoc));
    r = listing_parse(ctx, q, "VpcId", known, API_RES_VPC, "vpc", vpc, &l);
    if (r < 0)
        return r;
    xml_open(x, "vpcSet");
    if ((!l.after || strcmp(vpc, l.after) > 0) && api_filters_match(fs, "vpc-id", vpc) &&
        api_filters_match(fs, "cidr", CIDR) &&
        api_filters_match(fs, "cidr-block-association.cidr-block", CIDR) &&
        api_filters_match(fs, "cidr-block-association.state", "associated") &&
        api_filters_match(fs, "dhcp-options-id", "default") &&
        api_filters_match(fs, "is-default", "true") && api_filters_match(fs, "isDefault", "true") &&
        api_filters_match(fs, "owner-id", ctx->account) &&
        api_filters_match(fs, "state", "available") && api_filters_match_tags(fs, NULL, 0)) {
        xml_open(x, "item");
        xml_element(x, "vpcId", vpc);
        xml_element(x, "ownerId", ctx->account);
        xml_element(x, "state", "available");
        xml_element(x, "cidrBlock", CIDR);
        xml_open(x, "cidrBlockAssociationSet");
        xml_open(x, "item");
        xml_element(x, "cidrBlock", CIDR);
        xml_element(x, "associationId", assoc);
        xml_open(x, "cidrBlockState");
        xml_element(x, "state", "associated");
        xml_close(x);
        xml_close(x);
        xml_close(x);
        xml_element(x, "dhcpOptionsId", "default");
        xml_element(x, "instanceTenancy", "default");
        xml_element_bool(x, "isDefault", true);
        xml_close(x);
    }
    xml_close(x);
    return 0;
}

/* ---- DescribeSubnets ---- */

int api_describe_subnets(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    static const char *const known[] = {"availability-zone",
                                        "availabilityZone",
                                        "availability-zone-id",
                                        "availabilityZoneId",
                                        "available-ip-address-count",
                                        "cidr",
                                        "cidr-block",
                                        "cidrBlock",
                                        "default-for-az",
                                        "defaultForAz",
                                        "map-public-ip-on-launch",
                                        "owner-id",
                                        "state",
                                        "subnet-arn",
                                        "subnet-id",
                                        "vpc-id",
                                        "tag:",
                                        "tag-key",
                                        NULL};
    _cleanup_(listing_release) struct listing l = {0};
    char vpc[ID_MAX_SIZE], subnet[ID_MAX_SIZE], zone[80], zone_id[80], arn[200];
    const struct api_filters *fs = &l.fs;
    int r;

    api_default_vpc_id(ctx, vpc);
    api_default_subnet_id(ctx, subnet);
    r = listing_parse(ctx, q, "SubnetId", known, API_RES_SUBNET, "subnet", subnet, &l);
    if (r < 0)
        return r;
    /* the zone DescribeAvailabilityZones answers */
    snprintf(zone, sizeof(zone), "%sa", ctx->region);
    snprintf(zone_id, sizeof(zone_id), "%s-az1", ctx->region);
    snprintf(arn, sizeof(arn), "arn:aws:ec2:%s:%s:subnet/%s", ctx->region, ctx->account, subnet);
    xml_open(x, "subnetSet");
    if ((!l.after || strcmp(subnet, l.after) > 0) && api_filters_match(fs, "subnet-id", subnet) &&
        api_filters_match(fs, "subnet-arn", arn) && api_filters_match(fs, "vpc-id", vpc) &&
        api_filters_match(fs, "availability-zone", zone) &&
        api_filters_match(fs, "availabilityZone", zone) &&
        api_filters_match(fs, "availability-zone-id", zone_id) &&
        api_filters_match(fs, "availabilityZoneId", zone_id) &&
        api_filters_match(fs, "available-ip-address-count", SUBNET_FREE_ADDRESSES) &&
        api_filters_match(fs, "cidr", CIDR) && api_filters_match(fs, "cidr-block", CIDR) &&
        api_filters_match(fs, "cidrBlock", CIDR) &&
        api_filters_match(fs, "default-for-az", "true") &&
        api_filters_match(fs, "defaultForAz", "true") &&
        api_filters_match(fs, "map-public-ip-on-launch", "true") &&
        api_filters_match(fs, "owner-id", ctx->account) &&
        api_filters_match(fs, "state", "available") && api_filters_match_tags(fs, NULL, 0)) {
        xml_open(x, "item");
        xml_element(x, "subnetId", subnet);
        xml_element(x, "subnetArn", arn);
        xml_element(x, "state", "available");
        xml_element(x, "ownerId", ctx->account);
        xml_element(x, "vpcId", vpc);
        xml_element(x, "cidrBlock", CIDR);
        xml_open(x, "ipv6CidrBlockAssociationSet");
        xml_close(x);
        xml_element(x, "availableIpAddressCount", SUBNET_FREE_ADDRESSES);
        xml_element(x, "availabilityZone", zone);
        xml_element(x, "availabilityZoneId", zone_id);
        xml_element_bool(x, "defaultForAz", true);
        xml_element_bool(x, "mapPublicIpOnLaunch", true);
        xml_element_bool(x, "assignIpv6AddressOnCreation", false);
        xml_close(x);
    }
    xml_close(x);
    return 0;
}
