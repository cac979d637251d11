/* Machine images in the region registry: the `images`,
 * `image_block_devices` and `image_launch_permissions` tables of schema
 * version 2 (docs/formats.md), with typed insert, get, list, update and
 * delete for the EC2 API (RegisterImage, DescribeImages, DeregisterImage,
 * ModifyImageAttribute and the rest).
 *
 * The registry checks every value it stores (-EINVAL with a message naming
 * the field) and the schema checks them again; the EC2 rules that depend on
 * who asks (ownership, "self", block public access, deprecation limits) are
 * the API's.  Every write is one transaction (a savepoint inside a
 * caller's registry_begin()).
 *
 * Public: an image is public exactly when it has the launch permission
 * group "all" (EC2's Image.Public); there is no separate column, so the
 * flag and the permission list never disagree.  Disabled: a state, as in
 * EC2 ("disabled"), not a separate flag.
 *
 * Ownership: struct registry_image and everything it points at belong to
 * the caller of _get and _list; free with registry_image_free() or
 * registry_image_list_free().  _insert copies what it is given.
 */
#ifndef KILN_REGISTRY_IMAGES_H
#define KILN_REGISTRY_IMAGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry/permissions.h"
#include "registry/registry.h"

/* EC2's image states (reference 4.6), in this order. */
enum image_state {
    IMAGE_PENDING,
    IMAGE_AVAILABLE,
    IMAGE_INVALID,
    IMAGE_DEREGISTERED,
    IMAGE_TRANSIENT,
    IMAGE_FAILED,
    IMAGE_ERROR,
    IMAGE_DISABLED,
};

/* "pending", "available", ...; NULL for a value outside the enum. */
const char *image_state_to_string(enum image_state s);
/* 0, or -EINVAL for an unknown string. */
int image_state_from_string(const char *s, enum image_state *ret);

/* Limits on what the registry stores. */
#define IMAGE_NAME_MIN 3
#define IMAGE_NAME_MAX 128
#define IMAGE_DESCRIPTION_MAX 255
#define IMAGE_DEVICES_MAX 128
#define IMAGE_LIST_MAX_RESULTS 1000

/* true for an EC2 image name: 3 to 128 of letters, digits and
 * ( ) [ ] space . / - ' @ _ */
bool image_name_is_valid(const char *name);

/* One block device mapping.  An EBS device has volume_type or snapshot_id
 * or volume_size_gib; an instance-store device has virtual_name
 * ("ephemeral0".."ephemeral23"); no_device suppresses a mapping. */
struct registry_image_device {
    char *device_name;             /* "/dev/xvda", owned */
    char snapshot_id[ID_MAX_SIZE]; /* "" when none */
    uint32_t volume_size_gib;      /* 0 when unset */
    char *volume_type;             /* standard io1 io2 gp2 gp3 sc1 st1, or NULL */
    bool delete_on_termination;
    bool encrypted;
    uint32_t iops;       /* 0 when unset */
    uint32_t throughput; /* MiB/s, 0 when unset */
    char *virtual_name;  /* "ephemeralN" or NULL */
    bool no_device;
};

struct registry_image {
    char id[ID_MAX_SIZE]; /* ami-<17 hex> */
    char owner[ACCOUNT_ID_SIZE];
    char *name;                /* owned */
    char *description;         /* owned, NULL when none */
    char *architecture;        /* i386 x86_64 arm64 x86_64_mac arm64_mac */
    char *boot_mode;           /* legacy-bios uefi uefi-preferred, or NULL */
    char *root_device_name;    /* "/dev/xvda" */
    char *root_device_type;    /* "ebs" */
    char *virtualization_type; /* hvm paravirtual */
    bool ena_support;
    char *sriov_net_support;      /* "simple" or NULL */
    char *imds_support;           /* "v2.0" or NULL */
    char *tpm_support;            /* "v2.0" or NULL */
    char kernel_id[ID_MAX_SIZE];  /* aki-..., "" when none */
    char ramdisk_id[ID_MAX_SIZE]; /* ari-..., "" when none */
    enum image_state state;
    char *state_reason_code;              /* NULL when none */
    char *state_reason_message;           /* NULL when none */
    int64_t creation_date;                /* unix ms */
    int64_t deprecation_time;             /* unix ms, 0 when not deprecated */
    bool deregistration_protection;       /* enabled */
    bool deregistration_cooldown;         /* enabled with cooldown */
    int64_t deregistration_blocked_until; /* unix ms: cooldown after disable, 0 none */
    char source_image_id[ID_MAX_SIZE];    /* "" unless copied */
    char *source_region;                  /* NULL unless copied */
    int64_t last_launched_time;           /* unix ms, 0 never */

    /* Filled by _get and _list; ignored by _insert except where noted. */
    bool is_public;                        /* a group "all" permission exists */
    struct registry_image_device *devices; /* in position order; _insert reads */
    size_t n_devices;
    struct registry_permission *permissions; /* users then groups */
    size_t n_permissions;
    struct registry_tag *tags; /* ordered by key */
    size_t n_tags;
};

/* Frees everything the struct points at and the struct.  Accepts NULL. */
void registry_image_free(struct registry_image *img);
void registry_image_list_free(struct registry_image **list, size_t n);
DEFINE_CLEANUP_FREE(struct registry_image, registry_image_free)

/* Insert an image with its devices (img->devices, in order), its launch
 * permissions (img->permissions) and the tags `tags[0..n_tags)`, in one
 * transaction.  img->is_public and img->tags are ignored (a public image
 * is inserted with a group "all" permission).
 *   -EINVAL a field out of range (the message names it)
 *   -EEXIST the id is taken, or the owner has an image of that name that
 *           is not deregistered
 * Copies what it is given. */
int registry_image_insert(struct registry *reg, const struct registry_image *img,
                          const struct registry_tag *tags, size_t n_tags);

/* Look up one image with its devices, permissions and tags; *ret belongs to
 * the caller.  -EINVAL malformed id, -ENOENT absent. */
int registry_image_get(struct registry *reg, const char *id, struct registry_image **ret);

/* A DescribeImages filter on tags: `tag:<key>` with values (key given), or
 * `tag-key` (key NULL, values are key patterns).  Values are EC2 patterns. */
struct image_tag_filter {
    const char *key;
    const char *const *values;
    size_t n_values;
};

/* What registry_image_list() returns.  Every list that is non-empty
 * restricts the result; values within one list are ORed, lists are
 * ANDed.  Patterns use EC2 wildcards: '*' any run, '?' one character, a
 * backslash makes the next character literal. */
struct image_query {
    const char *const *ids; /* ami- ids (a malformed one is -EINVAL) */
    size_t n_ids;
    const char *const *owners; /* account ids ("self" resolved by the caller) */
    size_t n_owners;
    /* Account ids and/or "all": an image is executable by X if X owns it,
     * it is public, or it has a user launch permission for X; by "all" if
     * it is public. */
    const char *const *executable_by;
    size_t n_executable_by;
    const char *const *names; /* name patterns */
    size_t n_names;
    const enum image_state *states;
    size_t n_states;
    const struct image_tag_filter *tags;
    size_t n_tags;

    /* Deprecated images (deprecation_time <= now) are left out unless
     * include_deprecated, ids are given, or `caller` owns them. */
    bool include_deprecated;
    const char *caller; /* account id or NULL */
    int64_t now;        /* unix ms; 0: the current time */
    /* Disabled images are left out unless include_disabled. */
    bool include_disabled;

    /* 0: everything in one page; else 1..IMAGE_LIST_MAX_RESULTS per page. */
    size_t max_results;
    const char *next_token; /* from the previous page, or NULL */
};

/* Images matching `q`, ordered by creation date then id, with devices,
 * permissions and tags.  *ret is an array of *ret_n images (free with
 * registry_image_list_free()).  *ret_next_token is NULL on the last page,
 * else an opaque token (owned by the caller) for the next call with the
 * same query; it names the last image returned, so it is never the same
 * twice in one walk.  -EINVAL for a bad query or a token this registry
 * did not issue.  Nothing is written to ret_* on failure. */
int registry_image_list(struct registry *reg, const struct image_query *q,
                        struct registry_image ***ret, size_t *ret_n, char **ret_next_token);

/* The mutable attributes, chosen by `set` (IMAGE_SET_* bits). */
enum {
    IMAGE_SET_STATE = 1u << 0,        /* state, state_reason_code, state_reason_message */
    IMAGE_SET_DESCRIPTION = 1u << 1,  /* NULL clears */
    IMAGE_SET_DEPRECATION = 1u << 2,  /* 0 clears */
    IMAGE_SET_IMDS_SUPPORT = 1u << 3, /* "v2.0"; clearing a set value is -EROFS */
    IMAGE_SET_DEREGISTRATION_PROTECTION = 1u << 4, /* the three dereg fields */
    IMAGE_SET_PUBLIC = 1u << 5,                    /* add or remove the group "all" permission */
    IMAGE_SET_LAST_LAUNCHED = 1u << 6,
};

struct registry_image_update {
    unsigned set;
    enum image_state state;
    const char *state_reason_code, *state_reason_message;
    const char *description;
    int64_t deprecation_time;
    const char *imds_support;
    bool deregistration_protection;
    bool deregistration_cooldown;
    int64_t deregistration_blocked_until;
    bool is_public;
    int64_t last_launched_time;
};

/* Change what `u->set` selects, in one transaction.  Setting the state to
 * disabled also removes every launch permission (EC2's DisableImage).
 * -EINVAL bad value or id, -ENOENT absent, -EROFS clearing imds_support. */
int registry_image_update(struct registry *reg, const char *id,
                          const struct registry_image_update *u);

/* Add or remove one launch permission.  Adding an existing one and
 * removing an absent one are success (as ModifyImageAttribute).
 * -EINVAL bad kind or value, -ENOENT no such image. */
int registry_image_permission_add(struct registry *reg, const char *id,
                                  enum registry_permission_kind kind, const char *value);
int registry_image_permission_remove(struct registry *reg, const char *id,
                                     enum registry_permission_kind kind, const char *value);
/* Remove every launch permission (ResetImageAttribute launchPermission). */
int registry_image_permission_clear(struct registry *reg, const char *id);

/* Delete the row, its devices, permissions and tags (for cleanup of
 * deregistered images; DeregisterImage itself sets the state).  -ENOENT if
 * absent. */
int registry_image_delete(struct registry *reg, const char *id);

/* How many images that are not deregistered map snapshot `snap_id`
 * (DeleteSnapshot's InvalidSnapshot.InUse).  -EINVAL malformed id. */
int registry_snapshot_in_use_by_images(struct registry *reg, const char *snap_id,
                                       size_t *ret_count);

#endif
