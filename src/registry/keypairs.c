/* Key pair and security group rows (keypairs.h, migration 9). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "registry/internal.h"
#include "registry/keypairs.h"

static bool text_ok(const char *s, size_t size, size_t max)
{
    size_t n = strnlen(s, size);

    if (n == size || n == 0 || n > max)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

/* ---- key pairs ---- */

#define KEY_PAIR_COLUMNS "id, owner, name, key_type, fingerprint, public_key, create_time"

void registry_key_pair_list_free(struct registry_key_pair *list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++)
        free(list[i].public_key);
    free(list);
}

int registry_key_pair_insert(struct registry *reg, const struct registry_key_pair *kp)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    if (!memchr(kp->id, '\0', sizeof(kp->id)) || !id_is_valid("key", kp->id))
        return error_set(EINVAL, "malformed key pair id");
    if (!memchr(kp->owner, '\0', sizeof(kp->owner)) || !reg_account_is_valid(kp->owner))
        return error_set(EINVAL, "key pair '%s' has a malformed owner", kp->id);
    if (!text_ok(kp->name, sizeof(kp->name), KEY_PAIR_NAME_MAX))
        return error_set(EINVAL, "key pair '%s' has a malformed name", kp->id);
    if (!ssh_key_type_to_string(kp->type))
        return error_set(EINVAL, "key pair '%s' has an invalid type", kp->id);
    if (!text_ok(kp->fingerprint, sizeof(kp->fingerprint), KEY_PAIR_FINGERPRINT_MAX))
        return error_set(EINVAL, "key pair '%s' has a malformed fingerprint", kp->id);
    if (!kp->public_key || !kp->public_key[0] || strlen(kp->public_key) > SSH_KEY_MATERIAL_MAX)
        return error_set(EINVAL, "key pair '%s' has no public key", kp->id);
    r = reg_prepare(reg,
                    "INSERT INTO key_pairs (" KEY_PAIR_COLUMNS ")"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, kp->id);
    reg_bind_text(st, 2, kp->owner);
    reg_bind_text(st, 3, kp->name);
    reg_bind_text(st, 4, ssh_key_type_to_string(kp->type));
    reg_bind_text(st, 5, kp->fingerprint);
    reg_bind_text(st, 6, kp->public_key);
    sqlite3_bind_int64(st, 7, kp->create_time);
    r = reg_step_done(reg, st, "cannot insert key pair '%s'", kp->name);
    if (r == -EEXIST)
        return error_set(EEXIST, "the key pair '%s' already exists", kp->name);
    return r < 0 ? r : 0;
}

static int read_key_pair(struct registry *reg, sqlite3_stmt *st, void *slot, void *data)
{
    struct registry_key_pair *kp = slot;

    (void)data;
    kp->public_key = reg_column_strdup(st, 5);
    kp->create_time = sqlite3_column_int64(st, 6);
    if (!reg_column_copy(st, 0, kp->id, sizeof(kp->id)) || !id_is_valid("key", kp->id) ||
        !reg_column_copy(st, 1, kp->owner, sizeof(kp->owner)) ||
        !reg_column_copy(st, 2, kp->name, sizeof(kp->name)) ||
        ssh_key_type_from_string((const char *)sqlite3_column_text(st, 3), &kp->type) < 0 ||
        !reg_column_copy(st, 4, kp->fingerprint, sizeof(kp->fingerprint)) || !kp->public_key)
        return error_set(EBADMSG, "registry '%s' holds a malformed key pair", reg->path);
    return 0;
}

static void release_key_pairs(void *list, size_t n)
{
    registry_key_pair_list_free(list, n);
}

int registry_key_pair_list(struct registry *reg, const char *owner, struct registry_key_pair **ret,
                           size_t *ret_n)
{
    static const struct reg_collector c = {
        .size = sizeof(struct registry_key_pair),
        .read = read_key_pair,
        .release = release_key_pairs,
        .what = "key pairs",
    };
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    void *list;
    int r;

    r = reg_prepare(
        reg, "SELECT " KEY_PAIR_COLUMNS " FROM key_pairs WHERE owner = ?1 ORDER BY name", &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, owner);
    r = reg_collect(reg, st, &c, NULL, &list, ret_n);
    if (r < 0)
        return r;
    *ret = list;
    return 0;
}

int registry_key_pair_delete(struct registry *reg, const char *owner, const char *name,
                             const char *id)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    char found[ID_MAX_SIZE];
    int r, rc;

    r = reg_prepare(reg,
                    "SELECT id FROM key_pairs WHERE owner = ?1"
                    " AND (CASE WHEN ?2 IS NOT NULL THEN name = ?2 ELSE id = ?3 END)",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, owner);
    reg_bind_text(st, 2, name);
    reg_bind_text(st, 3, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return error_set(ENOENT, "the key pair '%s' does not exist", name ? name : id ? id : "");
    if (rc != SQLITE_ROW)
        return reg_fail(reg, rc, "cannot read key pairs");
    if (!reg_column_copy(st, 0, found, sizeof(found)))
        return error_set(EBADMSG, "registry '%s' holds a malformed key pair id", reg->path);
    sqlite3_reset(st);
    return reg_delete_resource(reg, "DELETE FROM key_pairs WHERE id = ?1", "key pair", found, NULL);
}

/* ---- security groups ---- */

void registry_security_group_list_free(struct registry_security_group *list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++)
        free(list[i].rules);
    free(list);
}

int registry_security_group_insert(struct registry *reg, const struct registry_security_group *g)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    if (!memchr(g->id, '\0', sizeof(g->id)) || !id_is_valid("sg", g->id))
        return error_set(EINVAL, "malformed security group id");
    if (!memchr(g->owner, '\0', sizeof(g->owner)) || !reg_account_is_valid(g->owner))
        return error_set(EINVAL, "security group '%s' has a malformed owner", g->id);
    if (!text_ok(g->name, sizeof(g->name), SECURITY_GROUP_NAME_MAX))
        return error_set(EINVAL, "security group '%s' has a malformed name", g->id);
    if (!text_ok(g->description, sizeof(g->description), SECURITY_GROUP_DESCRIPTION_MAX))
        return error_set(EINVAL, "security group '%s' has a malformed description", g->id);
    r = reg_prepare(reg,
                    "INSERT INTO security_groups (id, owner, name, description, create_time)"
                    " VALUES (?1, ?2, ?3, ?4, ?5)",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, g->id);
    reg_bind_text(st, 2, g->owner);
    reg_bind_text(st, 3, g->name);
    reg_bind_text(st, 4, g->description);
    sqlite3_bind_int64(st, 5, g->create_time);
    r = reg_step_done(reg, st, "cannot insert security group '%s'", g->name);
    if (r == -EEXIST)
        return error_set(EEXIST, "the security group '%s' already exists", g->name);
    return r < 0 ? r : 0;
}

static int read_rules(struct registry *reg, struct registry_security_group *g)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    size_t cap = 0;
    int r, rc;

    r = reg_prepare(reg,
                    "SELECT ip_protocol, from_port, to_port, cidr_ip FROM security_group_rules"
                    " WHERE group_id = ?1 ORDER BY ip_protocol, from_port, to_port, cidr_ip",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, g->id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct registry_security_group_rule *rule;
        if (g->n_rules == cap) {
            cap = cap ? 2 * cap : 4;
            g->rules = xrealloc(g->rules, cap * sizeof(*g->rules));
        }
        rule = &g->rules[g->n_rules];
        if (!reg_column_copy(st, 0, rule->ip_protocol, sizeof(rule->ip_protocol)) ||
            !reg_column_copy(st, 3, rule->cidr_ip, sizeof(rule->cidr_ip)))
            return error_set(EBADMSG, "security group '%s' has a malformed rule", g->id);
        rule->from_port = sqlite3_column_int(st, 1);
        rule->to_port = sqlite3_column_int(st, 2);
        g->n_rules++;
    }
    if (rc != SQLITE_DONE)
        return reg_fail(reg, rc, "cannot read the rules of security group '%s'", g->id);
    return 0;
}

static int read_security_group(struct registry *reg, sqlite3_stmt *st, void *slot, void *data)
{
    struct registry_security_group *g = slot;

    (void)data;
    g->create_time = sqlite3_column_int64(st, 4);
    if (!reg_column_copy(st, 0, g->id, sizeof(g->id)) || !id_is_valid("sg", g->id) ||
        !reg_column_copy(st, 1, g->owner, sizeof(g->owner)) ||
        !reg_column_copy(st, 2, g->name, sizeof(g->name)) ||
        !reg_column_copy(st, 3, g->description, sizeof(g->description)))
        return error_set(EBADMSG, "registry '%s' holds a malformed security group", reg->path);
    return 0;
}

static void release_security_groups(void *list, size_t n)
{
    registry_security_group_list_free(list, n);
}

int registry_security_group_list(struct registry *reg, const char *owner,
                                 struct registry_security_group **ret, size_t *ret_n)
{
    static const struct reg_collector c = {
        .size = sizeof(struct registry_security_group),
        .read = read_security_group,
        .release = release_security_groups,
        .what = "security groups",
    };
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    struct registry_security_group *list;
    void *rows;
    size_t n;
    int r;

    r = reg_prepare(reg,
                    "SELECT id, owner, name, description, create_time FROM security_groups"
                    " WHERE owner = ?1 ORDER BY create_time, id",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, owner);
    r = reg_collect(reg, st, &c, NULL, &rows, &n);
    if (r < 0)
        return r;
    list = rows;
    sqlite3_reset(st);
    for (size_t i = 0; i < n; i++) {
        r = read_rules(reg, &list[i]);
        if (r < 0) {
            registry_security_group_list_free(list, n);
            return r;
        }
    }
    *ret = list;
    *ret_n = n;
    return 0;
}

/* "a.b.c.d/n", canonical: each part 0..255 without leading zeros, n 0..32. */
static bool cidr_is_valid(const char *s)
{
    unsigned a, b, c, d, n;
    int end = 0;
    char back[SECURITY_GROUP_CIDR_MAX + 2];

    if (sscanf(s, "%3u.%3u.%3u.%3u/%2u%n", &a, &b, &c, &d, &n, &end) != 5 || s[end] || a > 255 ||
        b > 255 || c > 255 || d > 255 || n > 32)
        return false;
    snprintf(back, sizeof(back), "%u.%u.%u.%u/%u", a, b, c, d, n);
    return strcmp(back, s) == 0;
}

static int rule_validate(const char *id, const struct registry_security_group_rule *rule)
{
    static const char *const protocols[] = {"tcp", "udp", "icmp", "-1"};
    bool known = false;

    for (size_t i = 0; i < ARRAY_SIZE(protocols); i++)
        known |= memchr(rule->ip_protocol, '\0', sizeof(rule->ip_protocol)) &&
                 strcmp(rule->ip_protocol, protocols[i]) == 0;
    if (!known)
        return error_set(EINVAL, "security group '%s': unknown protocol (tcp, udp, icmp, -1)", id);
    if (rule->from_port < -1 || rule->from_port > 65535 || rule->to_port < -1 ||
        rule->to_port > 65535 ||
        (strcmp(rule->ip_protocol, "tcp") == 0 || strcmp(rule->ip_protocol, "udp") == 0
             ? rule->from_port < 0 || rule->to_port < rule->from_port
             : false))
        return error_set(EINVAL, "security group '%s': invalid port range %d-%d", id,
                         rule->from_port, rule->to_port);
    if (!memchr(rule->cidr_ip, '\0', sizeof(rule->cidr_ip)) || !cidr_is_valid(rule->cidr_ip))
        return error_set(EINVAL, "security group '%s': invalid CIDR '%.*s'", id,
                         (int)sizeof(rule->cidr_ip) - 1, rule->cidr_ip);
    return 0;
}

static int group_exists(struct registry *reg, const char *id)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = reg_prepare(reg, "SELECT 1 FROM security_groups WHERE id = ?1", &st), rc;

    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return error_set(ENOENT, "the security group '%s' does not exist", id);
    if (rc != SQLITE_ROW)
        return reg_fail(reg, rc, "cannot read security group '%s'", id);
    return 0;
}

int registry_security_group_rules_add(struct registry *reg, const char *id,
                                      const struct registry_security_group_rule *rules, size_t n)
{
    int r;

    if (!id || !id_is_valid("sg", id))
        return error_set(EINVAL, "malformed security group id '%s'", id ? id : "");
    for (size_t i = 0; i < n; i++) {
        r = rule_validate(id, &rules[i]);
        if (r < 0)
            return r;
    }
    r = registry_begin(reg);
    if (r < 0)
        return r;
    r = group_exists(reg, id);
    for (size_t i = 0; r >= 0 && i < n; i++) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        r = reg_prepare(reg,
                        "INSERT INTO security_group_rules"
                        " (group_id, ip_protocol, from_port, to_port, cidr_ip)"
                        " VALUES (?1, ?2, ?3, ?4, ?5)",
                        &st);
        if (r < 0)
            break;
        reg_bind_text(st, 1, id);
        reg_bind_text(st, 2, rules[i].ip_protocol);
        sqlite3_bind_int(st, 3, rules[i].from_port);
        sqlite3_bind_int(st, 4, rules[i].to_port);
        reg_bind_text(st, 5, rules[i].cidr_ip);
        r = reg_step_done(reg, st, "cannot add a rule to security group '%s'", id);
        if (r == -EEXIST)
            r = error_set(EEXIST, "the rule %s %d-%d from %s already exists in '%s'",
                          rules[i].ip_protocol, rules[i].from_port, rules[i].to_port,
                          rules[i].cidr_ip, id);
    }
    r = registry_end(reg, r);
    return r < 0 ? r : 0;
}

static int unlink_terminated(struct registry *reg, const char *id)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = reg_prepare(reg,
                        "DELETE FROM instance_security_groups WHERE group_id = ?1 AND"
                        " instance_id IN (SELECT id FROM instances WHERE state = 'terminated')",
                        &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    return reg_step_done(reg, st, "cannot unlink security group '%s'", id);
}

static int in_use(struct registry *reg, const char *id)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r = reg_prepare(reg,
                        "SELECT instance_id FROM instance_security_groups"
                        " WHERE group_id = ?1 LIMIT 1",
                        &st),
        rc;
    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        return error_set(EBUSY, "the security group '%s' is used by instance '%s'", id,
                         (const char *)sqlite3_column_text(st, 0));
    if (rc != SQLITE_DONE)
        return reg_fail(reg, rc, "cannot read the instances of security group '%s'", id);
    return 0;
}

int registry_security_group_delete(struct registry *reg, const char *id)
{
    int r;

    if (!id || !id_is_valid("sg", id))
        return error_set(EINVAL, "malformed security group id '%s'", id ? id : "");
    r = registry_begin(reg);
    if (r < 0)
        return r;
    r = group_exists(reg, id);
    if (r >= 0)
        r = unlink_terminated(reg, id);
    if (r >= 0)
        r = in_use(reg, id);
    if (r >= 0)
        r = reg_delete_resource(reg, "DELETE FROM security_groups WHERE id = ?1", "security group",
                                id, NULL);
    r = registry_end(reg, r);
    return r < 0 ? r : 0;
}
