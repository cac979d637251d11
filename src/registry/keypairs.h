/* Key pairs and security groups in the region registry (migration 9,
 * docs/formats.md): the `key_pairs`, `security_groups` and
 * `security_group_rules` tables.  Values are checked before they are
 * stored (-EINVAL naming the field) and rows read back are checked again
 * (-EBADMSG).  Lists belong to the caller. */
#ifndef KILN_REGISTRY_KEYPAIRS_H
#define KILN_REGISTRY_KEYPAIRS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cleanup.h"
#include "common/ssh-key.h"
#include "registry/registry.h"

#define KEY_PAIR_NAME_MAX 255
#define KEY_PAIR_FINGERPRINT_MAX 128

struct registry_key_pair {
    char id[ID_MAX_SIZE]; /* key-<17 hex> */
    char owner[ACCOUNT_ID_SIZE];
    char name[KEY_PAIR_NAME_MAX + 1];
    enum ssh_key_type type;
    char fingerprint[KEY_PAIR_FINGERPRINT_MAX + 1];
    char *public_key;    /* OpenSSH public key line */
    int64_t create_time; /* unix milliseconds */
};

void registry_key_pair_list_free(struct registry_key_pair *list, size_t n);

/* Insert a new key pair.  -EEXIST when the owner has one of that name (or
 * the id is taken), -EINVAL for a bad field. */
int registry_key_pair_insert(struct registry *reg, const struct registry_key_pair *kp);

/* The owner's key pairs, by name. */
int registry_key_pair_list(struct registry *reg, const char *owner, struct registry_key_pair **ret,
                           size_t *ret_n);

/* Delete the owner's key pair with `name` or, when name is NULL, with
 * `id`, and its tags.  -ENOENT if there is none. */
int registry_key_pair_delete(struct registry *reg, const char *owner, const char *name,
                             const char *id);

#define SECURITY_GROUP_NAME_MAX 255
#define SECURITY_GROUP_DESCRIPTION_MAX 255
#define SECURITY_GROUP_CIDR_MAX 18

struct registry_security_group_rule {
    char ip_protocol[8];    /* "tcp", "udp", "icmp", "-1" */
    int from_port, to_port; /* -1 .. 65535 */
    char cidr_ip[SECURITY_GROUP_CIDR_MAX + 1];
};

struct registry_security_group {
    char id[ID_MAX_SIZE]; /* sg-<17 hex> */
    char owner[ACCOUNT_ID_SIZE];
    char name[SECURITY_GROUP_NAME_MAX + 1];
    char description[SECURITY_GROUP_DESCRIPTION_MAX + 1];
    int64_t create_time;
    struct registry_security_group_rule *rules; /* ingress, in key order */
    size_t n_rules;
};

void registry_security_group_list_free(struct registry_security_group *list, size_t n);

/* -EEXIST when the owner has a group of that name, -EINVAL for a bad
 * field. */
int registry_security_group_insert(struct registry *reg, const struct registry_security_group *g);

/* The owner's groups with their rules, by create time then id. */
int registry_security_group_list(struct registry *reg, const char *owner,
                                 struct registry_security_group **ret, size_t *ret_n);

/* Add ingress rules to group `id` in one transaction: -EEXIST if one is
 * there already (nothing is added), -ENOENT no such group, -EINVAL a bad
 * rule (protocol, ports, "a.b.c.d/n"). */
int registry_security_group_rules_add(struct registry *reg, const char *id,
                                      const struct registry_security_group_rule *rules, size_t n);

/* Delete the group, its rules and tags: -ENOENT if absent, -EBUSY while an
 * instance that is not terminated uses it. */
int registry_security_group_delete(struct registry *reg, const char *id);

#endif
