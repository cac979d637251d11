/* Volumes in the region registry: the `volumes` table (docs/registry-schema.md)
 * with typed insert, get, list, update and delete.
 *
 * A row is a volume's metadata; its data lives in
 * DATA/regions/<r>/volumes/<id>/ (src/volume/).  A volume created from a
 * snapshot records the snapshot's id and its block map id: the map is what
 * the volume reads, and gc keeps it (and its chunks) while the row exists,
 * even after the snapshot itself is deleted.
 *
 * Every value is checked before it is stored (-EINVAL naming the field) and
 * the schema checks it again; a row read back is checked once more
 * (-EBADMSG).  Rows from _get and _list belong to the caller.
 */
#ifndef KILN_REGISTRY_VOLUMES_H
#define KILN_REGISTRY_VOLUMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cleanup.h"
#include "registry/registry.h"

/* EC2's volume states, in this order. */
enum volume_state {
    VOLUME_CREATING,
    VOLUME_AVAILABLE,
    VOLUME_IN_USE,
    VOLUME_DELETING,
    VOLUME_DELETED,
    VOLUME_ERROR,
};

/* "creating", "available", "in-use", "deleting", "deleted", "error"; NULL
 * outside the enum. */
const char *volume_state_to_string(enum volume_state s);
/* 0, or -EINVAL for an unknown string. */
int volume_state_from_string(const char *s, enum volume_state *ret);

#define VOLUME_SIZE_GIB_MAX 16384 /* gp3's limit */
#define VOLUME_ZONE_MAX 64
#define VOLUME_TYPE_MAX 16
#define VOLUME_DEVICE_MAX 64

struct registry_volume {
    char id[ID_MAX_SIZE];                 /* vol-<17 hex> */
    char owner[ACCOUNT_ID_SIZE];
    char availability_zone[VOLUME_ZONE_MAX + 1];
    uint32_t size_gib;                    /* 1 .. VOLUME_SIZE_GIB_MAX */
    char snapshot_id[ID_MAX_SIZE];        /* "" for a blank volume */
    bool has_base;                        /* created from a snapshot */
    struct digest base_map_id;            /* that snapshot's block map */
    enum volume_state state;
    int64_t create_time;                  /* unix milliseconds */
    char volume_type[VOLUME_TYPE_MAX + 1]; /* "gp3" */
    int iops;                             /* gp3: 3000 by default */
    int throughput;                       /* MiB/s; gp3: 125 by default */
    char instance_id[ID_MAX_SIZE];        /* attachment: "" when detached */
    char device[VOLUME_DEVICE_MAX + 1];   /* attachment device, "" when none */
    int64_t attach_time;                  /* unix milliseconds, 0 when none */
};

void registry_volume_free(struct registry_volume *v);
void registry_volume_list_free(struct registry_volume **list, size_t n);
DEFINE_CLEANUP_FREE(struct registry_volume, registry_volume_free)

/* Insert a new row.  -EEXIST if the id is taken, -EINVAL for a bad field
 * (malformed id, owner, snapshot id; size outside 1..16384 GiB; a snapshot
 * without its map; an attachment without a device). */
int registry_volume_insert(struct registry *reg, const struct registry_volume *v);

/* -ENOENT if absent. */
int registry_volume_get(struct registry *reg, const char *id, struct registry_volume **ret);

/* Update state, size, iops, throughput and the attachment fields from `v`
 * (matched by id).  A size smaller than the row's is -EINVAL (volumes only
 * grow).  -ENOENT if absent. */
int registry_volume_update(struct registry *reg, const struct registry_volume *v);

/* Delete the row and its tags.  -ENOENT if absent. */
int registry_volume_delete(struct registry *reg, const char *id);

/* Every row, ordered by create time then id. */
int registry_volume_list(struct registry *reg, struct registry_volume ***ret, size_t *ret_n);

#endif
