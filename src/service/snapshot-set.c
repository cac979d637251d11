/* Loading every registered snapshot with its block map. */
#include <stdlib.h>

#include "common/util.h"
#include "service/internal.h"

int snapshot_set_load(struct region *r, struct snapshot_set *ret)
{
    struct snapshot_set set = { 0 };
    int e;

    e = registry_snapshot_list(r->reg, &set.rows, &set.n);
    if (e < 0)
        return e;
    set.maps = xcalloc(set.n ? set.n : 1, sizeof(*set.maps));
    set.map_error = xcalloc(set.n ? set.n : 1, sizeof(*set.map_error));
    for (size_t i = 0; i < set.n; i++) {
        if (!set.rows[i]->has_map)
            continue;
        set.map_error[i] = blockmap_load(r->store, &set.rows[i]->map_id, &set.maps[i]);
    }
    *ret = set;
    return 0;
}

void snapshot_set_release(struct snapshot_set *set)
{
    for (size_t i = 0; i < set->n; i++)
        blockmap_free(set->maps[i]);
    free(set->maps);
    free(set->map_error);
    registry_snapshot_list_free(set->rows, set->n);
    set->n = 0;
}
