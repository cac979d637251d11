/* Helpers shared inside src/service/. */
#ifndef KILN_SERVICE_INTERNAL_H
#define KILN_SERVICE_INTERNAL_H

#include "service/service.h"

/* List every object of `kind` and verify each (in parallel): *ret_status[i]
 * is 0 or -errno (-EBADMSG corrupt) for (*ret_ids)[i].  Both arrays are
 * owned by the caller.  `progress`: draw a bar on a terminal. */
int verify_all(struct store *s, enum store_kind kind, bool progress, struct digest **ret_ids,
               int **ret_status, size_t *ret_n, uint64_t *ret_bytes);

/* Registered snapshots and their maps, for the walks of gc, fsck and du.
 * maps[i] is NULL when snapshot i has no map or its map cannot be loaded
 * (map_error[i] then says why). */
struct snapshot_set {
    struct registry_snapshot **rows;
    struct blockmap **maps;
    int *map_error;
    size_t n;
};

int snapshot_set_load(struct region *r, struct snapshot_set *ret);
void snapshot_set_release(struct snapshot_set *set);


#endif
