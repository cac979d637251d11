/* Instances in the region registry: the `instances` table (migration 9,
 * docs/formats.md) with typed insert, get, list, state update and delete,
 * and the allocation of each instance's loopback address.
 *
 * A row is an instance's metadata; its running parts (QEMU, the NBD export
 * of its root volume, the console log) live in
 * DATA/regions/<r>/instances/<id>/ and belong to the service layer.
 *
 * Every value is checked before it is stored (-EINVAL naming the field),
 * the schema checks it again, and a row read back is checked once more
 * (-EBADMSG).  Rows from _get and _list belong to the caller.
 */
#ifndef KILN_REGISTRY_INSTANCES_H
#define KILN_REGISTRY_INSTANCES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cleanup.h"
#include "registry/registry.h"

/* EC2's instance states; the value is EC2's state code. */
enum instance_state {
    INSTANCE_PENDING = 0,
    INSTANCE_RUNNING = 16,
    INSTANCE_SHUTTING_DOWN = 32,
    INSTANCE_TERMINATED = 48,
    INSTANCE_STOPPING = 64,
    INSTANCE_STOPPED = 80,
};

/* "pending", "running", "shutting-down", "terminated", "stopping",
 * "stopped"; NULL for anything else. */
const char *instance_state_to_string(enum instance_state s);
/* 0, or -EINVAL for an unknown string. */
int instance_state_from_string(const char *s, enum instance_state *ret);

#define INSTANCE_TYPE_MAX 32
#define INSTANCE_ZONE_MAX 64
#define INSTANCE_KEY_NAME_MAX 255
#define INSTANCE_USER_DATA_MAX 16384 /* decoded bytes, EC2's limit */
#define INSTANCE_REASON_CODE_MAX 64
#define INSTANCE_REASON_MESSAGE_MAX 1024
#define INSTANCE_DEVICE_MAX 64
#define INSTANCE_CLIENT_TOKEN_MAX 64
#define INSTANCE_ADDRESS_SIZE 16 /* "127.255.255.254" and a NUL */

/* The loopback addresses instances get, 127.100.0.2 upwards
 * (registry_instance_address_allocate). */
#define INSTANCE_ADDRESS_FIRST_OCTET 127
#define INSTANCE_ADDRESS_SECOND_OCTET 100

struct registry_instance {
    char id[ID_MAX_SIZE]; /* i-<17 hex> */
    char owner[ACCOUNT_ID_SIZE];
    char reservation_id[ID_MAX_SIZE]; /* r-<17 hex> */
    int launch_index;                 /* AmiLaunchIndex: 0.. within the reservation */
    char image_id[ID_MAX_SIZE];
    char instance_type[INSTANCE_TYPE_MAX + 1];
    enum instance_state state;
    char reason_code[INSTANCE_REASON_CODE_MAX + 1]; /* StateReason, "" when none */
    char reason_message[INSTANCE_REASON_MESSAGE_MAX + 1];
    int64_t launch_time; /* unix milliseconds */
    char availability_zone[INSTANCE_ZONE_MAX + 1];
    char key_name[INSTANCE_KEY_NAME_MAX + 1]; /* "" without a key pair */
    uint8_t *user_data;                       /* decoded; NULL when none */
    size_t user_data_len;
    char address[INSTANCE_ADDRESS_SIZE]; /* 127.x.y.z */
    char root_device_name[INSTANCE_DEVICE_MAX + 1];
    char root_volume_id[ID_MAX_SIZE]; /* "" before it exists */
    bool root_delete_on_termination;
    bool http_tokens_required; /* MetadataOptions */
    bool http_endpoint_enabled;
    int http_hop_limit;                               /* 1..64 */
    char client_token[INSTANCE_CLIENT_TOKEN_MAX + 1]; /* "" when none */
    int64_t terminated_time; /* unix ms it became `terminated` (migration 10), 0 otherwise;
                              * set by _set_state (and _insert of a terminated row) */
};

void registry_instance_free(struct registry_instance *in);
void registry_instance_list_free(struct registry_instance **list, size_t n);
DEFINE_CLEANUP_FREE(struct registry_instance, registry_instance_free)

/* Insert a new row.  -EEXIST if the id, or the address among instances
 * not terminated, is taken; -EINVAL for a bad field. */
int registry_instance_insert(struct registry *reg, const struct registry_instance *in);

/* -ENOENT if absent, -EINVAL for a malformed id. */
int registry_instance_get(struct registry *reg, const char *id, struct registry_instance **ret);

/* Set the state and its reason (either may be NULL or "" for none) and the
 * root volume id (NULL leaves it; "" clears it).  The first change to
 * `terminated` records now as terminated_time; any other state clears it.
 * -ENOENT if absent. */
int registry_instance_set_state(struct registry *reg, const char *id, enum instance_state state,
                                const char *reason_code, const char *reason_message,
                                const char *root_volume_id);

/* Delete the row, its tags and its security group links.  -ENOENT if
 * absent. */
int registry_instance_delete(struct registry *reg, const char *id);

/* Every row, ordered by launch time, then reservation, launch index. */
int registry_instance_list(struct registry *reg, struct registry_instance ***ret, size_t *ret_n);

/* The lowest loopback address 127.100.x.y (y 2..254) that no instance
 * outside `terminated` holds.  Call it in the transaction that inserts the
 * row: the unique index refuses a second holder anyway (-EEXIST).
 * -ENOSPC when all 256 * 253 are taken. */
int registry_instance_address_allocate(struct registry *reg, char ret[INSTANCE_ADDRESS_SIZE]);

/* Link instance `id` to the security groups ids[n] (replacing its links),
 * in one transaction: -ENOENT for an instance or group that does not
 * exist, -EINVAL for a malformed id. */
int registry_instance_security_groups_set(struct registry *reg, const char *id,
                                          const char *const *ids, size_t n);

/* The ids of the security groups of instance `id`, sorted; *ret is an
 * array of n strings, freed with registry_instance_security_groups_free(). */
int registry_instance_security_groups(struct registry *reg, const char *id, char ***ret,
                                      size_t *ret_n);
void registry_instance_security_groups_free(char **ids, size_t n);

#endif
