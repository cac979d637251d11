/* Key pairs and security groups, as far as launching instances needs them:
 * CreateKeyPair, ImportKeyPair, DescribeKeyPairs, DeleteKeyPair;
 * CreateSecurityGroup, DescribeSecurityGroups, DeleteSecurityGroup,
 * AuthorizeSecurityGroupIngress.  Keys are made and parsed by
 * common/ssh-key.c; rows live in the region registry (registry/keypairs.h).
 * Security group rules are stored and described, not enforced (docs/api.md).
 * Neither resource takes TagSpecifications yet. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/internal.h"
#include "api/query.h"
#include "api/xml.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/ids.h"
#include "common/ssh-key.h"
#include "common/util.h"
#include "registry/keypairs.h"
#include "service/service.h"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

/* The names and ids a Describe asks for (KeyName.N and KeyPairId.N,
 * GroupName.N and GroupId.N).  Each must exist (wanted_check()); when any is
 * given, only those are described (wanted_match()). */
struct wanted {
    const char **names, **ids; /* borrowed from the query */
    size_t n_names, n_ids;
};

static void wanted_release(struct wanted *w)
{
    free(w->names);
    free(w->ids);
}

static int wanted_parse(struct api_ctx *ctx, const struct query *q, const char *names_param,
                        const char *ids_param, struct wanted *ret)
{
    struct wanted w = {0};
    int r = query_get_list(q, names_param, &w.names, &w.n_names);

    if (r >= 0)
        r = query_get_list(q, ids_param, &w.ids, &w.n_ids);
    if (r < 0) {
        wanted_release(&w);
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE, "%s",
                        error_message() ? error_message() : "malformed list");
    }
    *ret = w;
    return 0;
}

/* Every name and id of w must be the name or id of one of the n rows of
 * `rows` (each `size` bytes, with char arrays at name_off and id_off), or
 * InvalidXxx.NotFound "The <noun> '<want>' does not exist". */
static int wanted_check(struct api_ctx *ctx, const struct wanted *w, enum api_resource res,
                        const char *noun, const void *rows, size_t n, size_t size,
                        size_t name_off, size_t id_off)
{
    for (size_t i = 0; i < w->n_names + w->n_ids; i++) {
        bool by_name = i < w->n_names;
        const char *want = by_name ? w->names[i] : w->ids[i - w->n_names];
        bool found = false;
        for (size_t k = 0; k < n && !found; k++) {
            const char *row = (const char *)rows + k * size;
            found = strcmp(row + (by_name ? name_off : id_off), want) == 0;
        }
        if (!found) {
            ctx->resource = res;
            return api_fail(ctx, API_ERR_NOT_FOUND, "The %s '%.255s' does not exist", noun,
                            want);
        }
    }
    return 0;
}

static bool wanted_match(const struct wanted *w, const char *name, const char *id)
{
    return (!w->n_names || api_in_list(w->names, w->n_names, name)) &&
           (!w->n_ids || api_in_list(w->ids, w->n_ids, id));
}

/* ---- key pairs ---- */

static int key_name_param(struct api_ctx *ctx, const struct query *q, const char **ret)
{
    const char *name = query_get(q, "KeyName");

    if (!name)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter KeyName");
    if (!name[0] || strlen(name) > KEY_PAIR_NAME_MAX || !printable(name) ||
        !utf8_is_valid(name, strlen(name)))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Key name must be 1 to %d printable characters", KEY_PAIR_NAME_MAX);
    *ret = name;
    return 0;
}

/* Store a key pair made or imported for the caller: *ret_id gets its id. */
static int key_pair_store(struct api_ctx *ctx, const char *name, const struct ssh_key *k,
                          char ret_id[ID_MAX_SIZE])
{
    _cleanup_(region_freep) struct region *rg = NULL;
    struct registry_key_pair kp = {.type = k->type, .public_key = k->public_line};
    int r;

    if (strlen(k->fingerprint) > KEY_PAIR_FINGERPRINT_MAX)
        return error_set(EIO, "fingerprint too long");
    r = id_generate("key", kp.id, sizeof(kp.id));
    if (r < 0)
        return r;
    snprintf(kp.owner, sizeof(kp.owner), "%s", ctx->account);
    snprintf(kp.name, sizeof(kp.name), "%s", name);
    snprintf(kp.fingerprint, sizeof(kp.fingerprint), "%s", k->fingerprint);
    kp.create_time = now_ms();
    r = region_open(ctx->data_dir, ctx->region, false, &rg);
    if (r < 0)
        return r;
    r = registry_key_pair_insert(rg->reg, &kp);
    if (r == -EEXIST) {
        ctx->resource = API_RES_KEY_PAIR;
        return api_fail(ctx, API_ERR_DUPLICATE, "The keypair '%s' already exists.", name);
    }
    if (r < 0)
        return r;
    memcpy(ret_id, kp.id, ID_MAX_SIZE);
    return 0;
}

int api_create_key_pair(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    const char *name = NULL, *type_s = query_get(q, "KeyType");
    const char *format = query_get(q, "KeyFormat");
    enum ssh_key_type type = SSH_KEY_RSA;
    struct ssh_key k = {0};
    char id[ID_MAX_SIZE];
    int r = key_name_param(ctx, q, &name);

    if (r < 0)
        return r;
    if (type_s && ssh_key_type_from_string(type_s, &type) < 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Value (%.40s) for parameter keyType is invalid. "
                        "Valid values: rsa, ed25519",
                        type_s);
    if (format && strcmp(format, "pem") != 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Key format '%.20s' is not supported: kiln writes pem", format);
    r = api_dry_run(ctx);
    if (r < 0)
        return r;
    r = ssh_key_generate(type, &k);
    if (r >= 0)
        r = key_pair_store(ctx, name, &k, id);
    if (r >= 0) {
        xml_element(x, "keyName", name);
        xml_element(x, "keyFingerprint", k.fingerprint);
        xml_element(x, "keyMaterial", k.private_pem);
        xml_element(x, "keyPairId", id);
    }
    ssh_key_release(&k);
    return r < 0 ? r : 0;
}

/* PublicKeyMaterial is a blob: base64 on the wire (boto3 and the CLI
 * encode it). */
static int decode_material(struct api_ctx *ctx, const char *b64, uint8_t **ret, size_t *ret_n)
{
    int r = api_base64_decode(b64, SSH_KEY_MATERIAL_MAX, ret, ret_n);

    if (r == -EMSGSIZE)
        return api_fail(ctx, API_ERR_KEY_FORMAT,
                        "Key is not in valid OpenSSH public key format (PublicKeyMaterial "
                        "must be base64 of at most %d bytes)",
                        SSH_KEY_MATERIAL_MAX);
    if (r < 0)
        return api_fail(ctx, API_ERR_KEY_FORMAT,
                        "Key is not in valid OpenSSH public key format (PublicKeyMaterial "
                        "is not base64)");
    return 0;
}

int api_import_key_pair(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    const char *name = NULL, *material = query_get(q, "PublicKeyMaterial");
    _cleanup_free_ uint8_t *raw = NULL;
    struct ssh_key k = {0};
    char id[ID_MAX_SIZE];
    size_t n = 0;
    int r = key_name_param(ctx, q, &name);

    if (r < 0)
        return r;
    if (!material)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter PublicKeyMaterial");
    r = decode_material(ctx, material, &raw, &n);
    if (r < 0)
        return r;
    r = ssh_key_import(raw, n, &k);
    if (r < 0)
        return api_fail(ctx, API_ERR_KEY_FORMAT,
                        "Key is not in valid OpenSSH public key format: %s",
                        error_message() ? error_message() : "unreadable");
    r = api_dry_run(ctx);
    if (r >= 0)
        r = key_pair_store(ctx, name, &k, id);
    if (r >= 0) {
        xml_element(x, "keyName", name);
        xml_element(x, "keyFingerprint", k.fingerprint);
        xml_element(x, "keyPairId", id);
    }
    ssh_key_release(&k);
    return r < 0 ? r : 0;
}

int api_describe_key_pairs(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    static const char *const known[] = {"key-name", "key-pair-id", "fingerprint", "key-type", NULL};
    _cleanup_(region_freep) struct region *rg = NULL;
    _cleanup_(wanted_release) struct wanted w = {0};
    struct registry_key_pair *list = NULL;
    size_t n = 0;
    struct api_filters fs;
    bool with_public = false;
    char t[64];
    int r;

    r = wanted_parse(ctx, q, "KeyName", "KeyPairId", &w);
    if (r < 0)
        return r;
    r = api_get_bool(ctx, q, "IncludePublicKey", &with_public);
    if (r < 0)
        return r;
    r = api_filters_parse(ctx, q, known, &fs);
    if (r < 0)
        return r;
    r = api_region_open(ctx, &rg);
    if (r >= 0 && rg)
        r = registry_key_pair_list(rg->reg, ctx->account, &list, &n);
    if (r >= 0)
        r = wanted_check(ctx, &w, API_RES_KEY_PAIR, "key pair", list, n, sizeof(*list),
                         offsetof(struct registry_key_pair, name),
                         offsetof(struct registry_key_pair, id));
    if (r >= 0) {
        xml_open(x, "keySet");
        for (size_t k = 0; k < n; k++) {
            const struct registry_key_pair *kp = &list[k];
            const char *type = ssh_key_type_to_string(kp->type);
            if (!wanted_match(&w, kp->name, kp->id) ||
                !api_filters_match(&fs, "key-name", kp->name) ||
                !api_filters_match(&fs, "key-pair-id", kp->id) ||
                !api_filters_match(&fs, "fingerprint", kp->fingerprint) ||
                !api_filters_match(&fs, "key-type", type))
                continue;
            xml_open(x, "item");
            xml_element(x, "keyPairId", kp->id);
            xml_element(x, "keyName", kp->name);
            xml_element(x, "keyFingerprint", kp->fingerprint);
            xml_element(x, "keyType", type);
            xml_open(x, "tagSet");
            xml_close(x);
            if (with_public)
                xml_element(x, "publicKey", kp->public_key);
            xml_element(x, "createTime", api_format_time(kp->create_time, t, sizeof(t)));
            xml_close(x);
        }
        xml_close(x);
    }
    registry_key_pair_list_free(list, n);
    api_filters_release(&fs);
    return r < 0 ? r : 0;
}

int api_delete_key_pair(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    const char *name = query_get(q, "KeyName"), *id = query_get(q, "KeyPairId");
    int r;

    if (!name && !id)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter KeyName or KeyPairId");
    if (id && !name && !id_is_valid("key", id))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Invalid id: \"%.100s\" (expecting \"key-...\")", id);
    r = api_dry_run(ctx);
    if (r < 0)
        return r;
    r = api_region_open(ctx, &rg);
    if (r < 0)
        return r;
    if (rg) {
        region_free(rg);
        rg = NULL;
        r = region_open(ctx->data_dir, ctx->region, false, &rg);
        if (r < 0)
            return r;
        r = registry_key_pair_delete(rg->reg, ctx->account, name, name ? NULL : id);
        /* EC2's DeleteKeyPair succeeds for a key pair that is not there. */
        if (r < 0 && r != -ENOENT)
            return r;
    }
    xml_element_bool(x, "return", true);
    return 0;
}

/* ---- security groups ---- */

static int group_text_param(struct api_ctx *ctx, const struct query *q, const char *param,
                            const char **ret)
{
    const char *v = query_get(q, param);

    if (!v)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER, "The request must contain the parameter %s",
                        param);
    if (!v[0] || strlen(v) > SECURITY_GROUP_NAME_MAX || !printable(v) ||
        !utf8_is_valid(v, strlen(v)))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "%s must be 1 to %d printable characters", param, SECURITY_GROUP_NAME_MAX);
    *ret = v;
    return 0;
}

int api_create_security_group(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    struct registry_security_group g = {0};
    const char *name = NULL, *description = NULL, *vpc = query_get(q, "VpcId");
    int r = group_text_param(ctx, q, "GroupName", &name);

    if (r >= 0)
        r = group_text_param(ctx, q, "GroupDescription", &description);
    /* every group is in the default VPC (vpcs.c), named or not; an empty
     * VpcId is none (Packer 1.6.6 sends VpcId= without vpc_id) */
    if (r >= 0 && vpc && vpc[0])
        r = api_vpc_check(ctx, vpc);
    if (r < 0)
        return r;
    if (strncmp(name, "sg-", 3) == 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Group names may not be in the format sg-*");
    r = api_dry_run(ctx);
    if (r < 0)
        return r;
    r = id_generate("sg", g.id, sizeof(g.id));
    if (r < 0)
        return r;
    snprintf(g.owner, sizeof(g.owner), "%s", ctx->account);
    snprintf(g.name, sizeof(g.name), "%s", name);
    snprintf(g.description, sizeof(g.description), "%s", description);
    g.create_time = now_ms();
    r = region_open(ctx->data_dir, ctx->region, false, &rg);
    if (r < 0)
        return r;
    r = registry_security_group_insert(rg->reg, &g);
    if (r == -EEXIST) {
        ctx->resource = API_RES_SECURITY_GROUP;
        return api_fail(ctx, API_ERR_DUPLICATE, "The security group '%s' already exists", name);
    }
    if (r < 0)
        return r;
    xml_element_bool(x, "return", true);
    xml_element(x, "groupId", g.id);
    return 0;
}

/* The caller's group named by GroupId or GroupName: *ret_i indexes list. */
static int find_group(struct api_ctx *ctx, const struct query *q,
                      const struct registry_security_group *list, size_t n, size_t *ret_i)
{
    const char *id = query_get(q, "GroupId"), *name = query_get(q, "GroupName");

    if (!id && !name)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter GroupId or GroupName");
    if (id) {
        int r = api_id_check(ctx, API_RES_SECURITY_GROUP, "sg", id);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < n; i++)
        if (id ? strcmp(list[i].id, id) == 0 : strcmp(list[i].name, name) == 0) {
            *ret_i = i;
            return 0;
        }
    ctx->resource = API_RES_SECURITY_GROUP;
    if (id)
        return api_fail(ctx, API_ERR_NOT_FOUND, "The security group '%s' does not exist", id);
    return api_fail(ctx, API_ERR_NOT_FOUND,
                    "The security group '%.255s' does not exist in default VPC", name);
}

static void write_group(struct xml *x, const struct registry_security_group *g, const char *vpc)
{
    xml_open(x, "item");
    xml_element(x, "ownerId", g->owner);
    xml_element(x, "groupName", g->name);
    xml_element(x, "groupId", g->id);
    xml_element(x, "groupDescription", g->description);
    xml_element(x, "vpcId", vpc);
    xml_open(x, "ipPermissions");
    for (size_t i = 0; i < g->n_rules; i++) {
        const struct registry_security_group_rule *rule = &g->rules[i];
        xml_open(x, "item");
        xml_element(x, "ipProtocol", rule->ip_protocol);
        if (strcmp(rule->ip_protocol, "-1") != 0) {
            xml_element_int(x, "fromPort", rule->from_port);
            xml_element_int(x, "toPort", rule->to_port);
        }
        xml_open(x, "groups");
        xml_close(x);
        xml_open(x, "ipRanges");
        xml_open(x, "item");
        xml_element(x, "cidrIp", rule->cidr_ip);
        xml_close(x);
        xml_close(x);
        xml_open(x, "ipv6Ranges");
        xml_close(x);
        xml_open(x, "prefixListIds");
        xml_close(x);
        xml_close(x);
    }
    xml_close(x);
    /* Egress is EC2's default and is not modelled: everything out. */
    xml_open(x, "ipPermissionsEgress");
    xml_open(x, "item");
    xml_element(x, "ipProtocol", "-1");
    xml_open(x, "groups");
    xml_close(x);
    xml_open(x, "ipRanges");
    xml_open(x, "item");
    xml_element(x, "cidrIp", "0.0.0.0/0");
    xml_close(x);
    xml_close(x);
    xml_open(x, "ipv6Ranges");
    xml_close(x);
    xml_open(x, "prefixListIds");
    xml_close(x);
    xml_close(x);
    xml_close(x);
    xml_open(x, "tagSet");
    xml_close(x);
    xml_close(x);
}

int api_describe_security_groups(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    static const char *const known[] = {"group-name", "group-id", "description",
                                        "owner-id",   "vpc-id",   NULL};
    _cleanup_(region_freep) struct region *rg = NULL;
    _cleanup_(wanted_release) struct wanted w = {0};
    struct registry_security_group *list = NULL;
    size_t n = 0;
    struct api_filters fs;
    char vpc[ID_MAX_SIZE];
    int r;

    api_default_vpc_id(ctx, vpc);
    r = wanted_parse(ctx, q, "GroupName", "GroupId", &w);
    if (r < 0)
        return r;
    for (size_t i = 0; i < w.n_ids; i++) {
        r = api_id_check(ctx, API_RES_SECURITY_GROUP, "sg", w.ids[i]);
        if (r < 0)
            return r;
    }
    r = api_filters_parse(ctx, q, known, &fs);
    if (r < 0)
        return r;
    r = api_region_open(ctx, &rg);
    if (r >= 0 && rg)
        r = registry_security_group_list(rg->reg, ctx->account, &list, &n);
    if (r >= 0)
        r = wanted_check(ctx, &w, API_RES_SECURITY_GROUP, "security group", list, n,
                         sizeof(*list), offsetof(struct registry_security_group, name),
                         offsetof(struct registry_security_group, id));
    if (r >= 0) {
        xml_open(x, "securityGroupInfo");
        for (size_t k = 0; k < n; k++) {
            const struct registry_security_group *g = &list[k];
            if (!wanted_match(&w, g->name, g->id) ||
                !api_filters_match(&fs, "group-name", g->name) ||
                !api_filters_match(&fs, "group-id", g->id) ||
                !api_filters_match(&fs, "description", g->description) ||
                !api_filters_match(&fs, "owner-id", g->owner) ||
                !api_filters_match(&fs, "vpc-id", vpc))
                continue;
            write_group(x, g, vpc);
        }
        xml_close(x);
    }
    registry_security_group_list_free(list, n);
    api_filters_release(&fs);
    return r < 0 ? r : 0;
}

/* Open the region for writing and find the caller's group. */
static int open_group(struct api_ctx *ctx, const struct query *q, struct region **ret_rg,
                      struct registry_security_group **ret_list, size_t *ret_n, size_t *ret_i)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    struct registry_security_group *list = NULL;
    size_t n = 0;
    int r = region_open(ctx->data_dir, ctx->region, false, &rg);

    if (r < 0)
        return r;
    r = registry_security_group_list(rg->reg, ctx->account, &list, &n);
    if (r < 0)
        return r;
    r = find_group(ctx, q, list, n, ret_i);
    if (r < 0) {
        registry_security_group_list_free(list, n);
        return r;
    }
    *ret_rg = TAKE_PTR(rg);
    *ret_list = list;
    *ret_n = n;
    return 0;
}

int api_delete_security_group(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    struct registry_security_group *list = NULL;
    size_t n = 0, i = 0;
    char id[ID_MAX_SIZE];
    int r = open_group(ctx, q, &rg, &list, &n, &i);

    if (r < 0)
        return r;
    memcpy(id, list[i].id, sizeof(id));
    registry_security_group_list_free(list, n);
    r = api_dry_run(ctx);
    if (r < 0)
        return r;
    r = registry_security_group_delete(rg->reg, id);
    if (r == -EBUSY) {
        ctx->resource = API_RES_SECURITY_GROUP;
        return api_fail(ctx, API_ERR_IN_USE, "resource %s has a dependent object", id);
    }
    if (r < 0)
        return r;
    xml_element_bool(x, "return", true);
    xml_element(x, "groupId", id);
    return 0;
}

static int port_param(struct api_ctx *ctx, const struct query *q, const char *name, int *ret)
{
    const char *v = query_get(q, name);
    char *end;
    long p;

    if (!v) {
        *ret = -1;
        return 0;
    }
    errno = 0;
    p = strtol(v, &end, 10);
    if (!v[0] || *end || errno || p < -1 || p > 65535)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Invalid value '%.20s' for %s: a port is -1 to 65535", v, name);
    *ret = (int)p;
    return 0;
}

/* One IpPermissions item (or the legacy top-level form) into rules. */
static int parse_permission(struct api_ctx *ctx, const struct query *f,
                            struct registry_security_group_rule **rules, size_t *n)
{
    const char *proto = query_get(f, "IpProtocol");
    struct query_item *ranges = NULL;
    size_t n_ranges = 0;
    int from, to, r;

    if (!proto)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter IpProtocol");
    if (strcmp(proto, "6") == 0)
        proto = "tcp";
    else if (strcmp(proto, "17") == 0)
        proto = "udp";
    else if (strcmp(proto, "1") == 0)
        proto = "icmp";
    else if (strcmp(proto, "all") == 0)
        proto = "-1";
    if (strcmp(proto, "tcp") && strcmp(proto, "udp") && strcmp(proto, "icmp") &&
        strcmp(proto, "-1"))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE,
                        "Invalid value '%.20s' for IP protocol. Unknown protocol.", proto);
    r = port_param(ctx, f, "FromPort", &from);
    if (r >= 0)
        r = port_param(ctx, f, "ToPort", &to);
    if (r < 0)
        return r;
    if (strcmp(proto, "-1") == 0)
        from = to = -1;
    else if ((strcmp(proto, "tcp") == 0 || strcmp(proto, "udp") == 0) && (from < 0 || to < from))
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE, "Invalid port range %d-%d for %s",
                        from, to, proto);
    r = query_get_structs(f, "IpRanges", &ranges, &n_ranges);
    if (r < 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE, "%s",
                        error_message() ? error_message() : "malformed list");
    const char *legacy = query_get(f, "CidrIp");
    for (size_t i = 0; r >= 0 && i < n_ranges + (legacy ? 1 : 0); i++) {
        const char *cidr = i < n_ranges ? query_get(&ranges[i].fields, "CidrIp") : legacy;
        struct registry_security_group_rule *rule;
        if (!cidr) {
            r = api_fail(ctx, API_ERR_MISSING_PARAMETER,
                         "The request must contain the parameter IpRanges.%lu.CidrIp",
                         ranges[i].index);
            break;
        }
        if (strlen(cidr) > SECURITY_GROUP_CIDR_MAX) {
            r = api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE, "CIDR block %.40s is malformed",
                         cidr);
            break;
        }
        *rules = xrealloc(*rules, (*n + 1) * sizeof(**rules));
        rule = &(*rules)[(*n)++];
        memset(rule, 0, sizeof(*rule));
        snprintf(rule->ip_protocol, sizeof(rule->ip_protocol), "%s", proto);
        rule->from_port = from;
        rule->to_port = to;
        snprintf(rule->cidr_ip, sizeof(rule->cidr_ip), "%s", cidr);
    }
    query_items_free(ranges, n_ranges);
    return r;
}

int api_authorize_security_group_ingress(struct api_ctx *ctx, const struct query *q, struct xml *x)
{
    _cleanup_(region_freep) struct region *rg = NULL;
    _cleanup_free_ struct registry_security_group_rule *rules = NULL;
    struct registry_security_group *list = NULL;
    struct query_item *perms = NULL;
    size_t n_perms = 0, n_rules = 0, n = 0, i = 0;
    char id[ID_MAX_SIZE];
    int r;

    r = query_get_structs(q, "IpPermissions", &perms, &n_perms);
    if (r < 0)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE, "%s",
                        error_message() ? error_message() : "malformed list");
    for (size_t k = 0; r >= 0 && k < n_perms; k++)
        r = parse_permission(ctx, &perms[k].fields, &rules, &n_rules);
    query_items_free(perms, n_perms);
    if (r >= 0 && query_get(q, "IpProtocol"))
        r = parse_permission(ctx, q, &rules, &n_rules);
    if (r < 0)
        return r;
    if (n_rules == 0)
        return api_fail(ctx, API_ERR_MISSING_PARAMETER,
                        "The request must contain the parameter ipPermissions "
                        "(kiln stores CIDR rules only)");
    r = open_group(ctx, q, &rg, &list, &n, &i);
    if (r < 0)
        return r;
    memcpy(id, list[i].id, sizeof(id));
    registry_security_group_list_free(list, n);
    r = api_dry_run(ctx);
    if (r < 0)
        return r;
    r = registry_security_group_rules_add(rg->reg, id, rules, n_rules);
    if (r == -EEXIST)
        return api_fail(ctx, API_ERR_PERMISSION_DUPLICATE, "%s", error_message());
    if (r == -EINVAL)
        return api_fail(ctx, API_ERR_INVALID_PARAMETER_VALUE, "%s", error_message());
    if (r < 0)
        return r;
    xml_element_bool(x, "return", true);
    return 0;
}
