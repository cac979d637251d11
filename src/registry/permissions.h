/* What the two permission tables of a region registry have in common:
 * an image's launch permissions (images.h, `image_launch_permissions`) and
 * a snapshot's create-volume permissions (snapshot-permissions.h,
 * `snapshot_permissions`).  A user permission names a 12-digit account, the
 * group permission "all" makes the resource public; the owner needs none. */
#ifndef KILN_REGISTRY_PERMISSIONS_H
#define KILN_REGISTRY_PERMISSIONS_H

#include "registry/registry.h"

enum registry_permission_kind {
    REGISTRY_PERMISSION_USER,  /* value: a 12-digit account id */
    REGISTRY_PERMISSION_GROUP, /* value: "all" */
};

struct registry_permission {
    enum registry_permission_kind kind;
    char value[ACCOUNT_ID_SIZE];
};

#endif
