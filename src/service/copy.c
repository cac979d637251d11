/* Copies between regions: CopySnapshot and CopyImage.  Regions share
 * nothing on disk (docs/architecture.md), so a copy moves chunks from one
 * region's store into the other's, and registers new rows with new ids.
 *
 * Design notes:
 *
 * - Only what the destination lacks moves: each extent's chunk is looked
 *   up in the destination (store_has) and, when absent, read from the
 *   source (store_chunk_get verifies its digest: a corrupt source chunk
 *   fails the copy with -EBADMSG naming it) and written.  A second copy
 *   of the same image writes no chunk at all.
 *
 * - Ordering is the import's: chunks, store_sync(), the block map (fsynced
 *   by store_map_put), then the registry rows.  The destination store's
 *   lock is held shared from the first store_has() until the rows are
 *   committed, so a gc in the destination cannot sweep a chunk between
 *   "present, reuse it" and the row that references it.
 *
 * - The copied map has no parent: the source's parent is a snapshot of
 *   the source region, which the destination may not have.  So the new map
 *   (and its id) may differ from the source's; its extents do not.
 *
 * - An image copy moves the data of every mapped snapshot first and then
 *   inserts every row (snapshots, image, tags) in one transaction: a long
 *   copy never holds the registry's write lock, and a failure at any step
 *   registers nothing.
 *
 * - Synchronous: CopyImage returns once the copy is done, with the image
 *   available.  A job runner (pending, then available) is left for later
 *   (docs/api.md).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "registry/images.h"
#include "service/internal.h"

/* How long a copy waits for a gc running in the destination. */
#define LOCK_TIMEOUT_MS (10 * 60 * 1000)

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A source snapshot ready to be copied: its row and map. */
struct copy_item {
    struct registry_snapshot *src;
    struct blockmap *map;
    struct registry_snapshot row; /* the new row (strings borrowed) */
};

static void copy_item_release(struct copy_item *c)
{
    registry_snapshot_free(c->src);
    blockmap_free(c->map);
}

/* Load snapshot `id` of src: it must be completed. */
static int load_source(struct region *src, const char *id, struct copy_item *c)
{
    int e = service_snapshot_get(src, id, &c->src, &c->map);

    if (e < 0)
        return e;
    if (c->src->state != SNAPSHOT_COMPLETED)
        return error_set(EINVAL, "snapshot '%s' is %s, not completed", id,
                         snapshot_state_to_string(c->src->state));
    return 0;
}

/* Copy the chunks c->map uses that dst lacks, sync them, then write its
 * map (parentless) and fill c->row (new id, map, size, times).  The caller
 * holds dst's store lock until the row is committed. */
static int copy_data(struct region *src, struct region *dst, struct copy_item *c,
                     struct copy_stats *st)
{
    _cleanup_free_ uint8_t *buf = xmalloc(STORE_CHUNK_MAX);
    struct blockmap *m = c->map;
    char hex[DIGEST_HEX_SIZE];
    int e;

    for (size_t i = 0; i < m->n; i++) {
        const struct blockmap_extent *x = &m->ext[i];
        uint64_t len = (uint64_t)x->count << BLOCK_SHIFT;
        ssize_t got;

        e = store_has(dst->store, STORE_CHUNK, &x->id);
        if (e < 0)
            return error_set(e, "cannot look up chunk %s in region '%s': %s",
                             digest_to_hex(&x->id, hex), dst->name, strerror(-e));
        if (e > 0) {
            st->chunks_present++;
            st->bytes_present += len;
            continue;
        }
        got = store_chunk_get(src->store, &x->id, buf, STORE_CHUNK_MAX);
        if (got < 0)
            return error_set((int)got, "cannot copy snapshot '%s': chunk %s in region '%s' %s",
                             c->src->id, digest_to_hex(&x->id, hex), src->name,
                             got == -EBADMSG  ? "is corrupt (digest mismatch)"
                             : got == -ENOENT ? "is missing"
                                              : strerror((int)-got));
        e = store_chunk_put(dst->store, &x->id, buf, (size_t)got, NULL);
        if (e < 0)
            return error_set(e, "cannot write chunk %s to region '%s': %s",
                             digest_to_hex(&x->id, hex), dst->name, strerror(-e));
        if (e > 0) {
            st->chunks_copied++;
            st->bytes_copied += (uint64_t)got;
        } else {
            st->chunks_present++;
            st->bytes_present += (uint64_t)got;
        }
    }
    e = store_sync(dst->store);
    if (e < 0)
        return error_set(e, "cannot sync the store of region '%s': %s", dst->name, strerror(-e));
    memset(&m->parent, 0, sizeof(m->parent));
    e = blockmap_save(dst->store, m, &c->row.map_id);
    if (e < 0)
        return e;
    c->row.has_map = true;
    c->row.state = SNAPSHOT_COMPLETED;
    c->row.progress = 100;
    c->row.volume_size = c->src->volume_size;
    c->row.volume_size_gib = c->src->volume_size_gib;
    c->row.start_time = now_ms();
    c->row.completion_time = c->row.start_time;
    return id_generate("snap", c->row.id, sizeof(c->row.id));
}

int service_snapshot_copy(struct region *src, const char *snap_id, struct region *dst,
                          const char *owner, const char *description, char ret_id[ID_MAX_SIZE],
                          struct copy_stats *ret)
{
    struct copy_item c = {0};
    struct copy_stats st = {0};
    int e;

    if (dst->read_only)
        return error_set(EROFS, "region '%s' is open read-only", dst->name);
    e = load_source(src, snap_id, &c);
    if (e < 0)
        goto out;
    e = store_lock(dst->store, false, LOCK_TIMEOUT_MS);
    if (e < 0)
        goto out;
    e = copy_data(src, dst, &c, &st);
    if (e == 0) {
        snprintf(c.row.owner, sizeof(c.row.owner), "%s", owner);
        c.row.description = (char *)description;
        e = registry_snapshot_insert(dst->reg, &c.row);
    }
    store_unlock(dst->store);
    if (e < 0)
        goto out;
    memcpy(ret_id, c.row.id, ID_MAX_SIZE);
    if (ret)
        *ret = st;
out:
    copy_item_release(&c);
    return e;
}

/* Insert the rows of an image copy; the caller holds a transaction. */
static int insert_image(struct region *dst, const struct service_image_copy_options *o,
                        struct registry_image *img, struct copy_item *items, size_t n)
{
    int e;

    for (size_t i = 0; i < n; i++) {
        e = registry_snapshot_insert(dst->reg, &items[i].row);
        for (size_t k = 0; e >= 0 && k < o->n_snapshot_tags; k++)
            e = registry_tag_set(dst->reg, items[i].row.id, o->snapshot_tags[k].key,
                                 o->snapshot_tags[k].value);
        if (e < 0)
            return e;
    }
    return registry_image_insert(dst->reg, img, o->image_tags, o->n_image_tags);
}

int service_image_copy(struct region *src, const char *image_id, struct region *dst,
                       const struct service_image_copy_options *opts, char ret_id[ID_MAX_SIZE],
                       struct copy_stats *ret)
{
    struct registry_image *from = NULL;
    struct registry_image img;
    struct registry_image_device *devs = NULL;
    struct copy_item *items = NULL;
    struct copy_stats st = {0};
    size_t n = 0;
    int e;

    if (dst->read_only)
        return error_set(EROFS, "region '%s' is open read-only", dst->name);
    if (!image_name_is_valid(opts->name))
        return error_set(EINVAL, "invalid image name '%s'", opts->name);
    e = registry_image_get(src->reg, image_id, &from);
    if (e == -ENOENT)
        return error_set(ENOENT, "image '%s' does not exist in region '%s'", image_id, src->name);
    if (e < 0)
        return e;
    if (from->state != IMAGE_AVAILABLE) {
        e = error_set(EINVAL, "image '%s' is %s, not available", image_id,
                      image_state_to_string(from->state));
        goto out;
    }
    e = image_name_check_free(dst, opts->owner, opts->name);
    if (e < 0)
        goto out;

    /* The new image: the source's attributes, new id, name, owner,
     * description and mappings; no launch permissions (a copy is
     * private to its owner). */
    img = *from;
    memset(img.id, 0, sizeof(img.id));
    snprintf(img.owner, sizeof(img.owner), "%s", opts->owner);
    img.name = (char *)opts->name;
    img.description = (char *)opts->description;
    img.state = IMAGE_AVAILABLE;
    img.state_reason_code = img.state_reason_message = NULL;
    img.deprecation_time = 0;
    img.deregistration_protection = img.deregistration_cooldown = false;
    img.deregistration_blocked_until = 0;
    img.last_launched_time = 0;
    snprintf(img.source_image_id, sizeof(img.source_image_id), "%s", from->id);
    img.source_region = src->name;
    img.permissions = NULL;
    img.n_permissions = 0;
    img.is_public = false;
    img.tags = NULL;
    img.n_tags = 0;
    devs = xcalloc(from->n_devices + 1, sizeof(*devs));
    memcpy(devs, from->devices, from->n_devices * sizeof(*devs));
    img.devices = devs;
    items = xcalloc(from->n_devices + 1, sizeof(*items));

    /* Load every distinct mapped snapshot first: a missing one fails the
     * copy before anything is written. */
    for (size_t i = 0; i < from->n_devices; i++) {
        const char *sid = from->devices[i].snapshot_id;
        bool seen = false;
        if (!sid[0])
            continue;
        for (size_t k = 0; k < n && !seen; k++)
            seen = strcmp(items[k].src->id, sid) == 0;
        if (seen)
            continue;
        e = load_source(src, sid, &items[n]);
        if (e < 0) {
            copy_item_release(&items[n]);
            goto out;
        }
        n++;
    }

    e = store_lock(dst->store, false, LOCK_TIMEOUT_MS);
    if (e < 0)
        goto out;
    for (size_t k = 0; k < n && e >= 0; k++) {
        e = copy_data(src, dst, &items[k], &st);
        snprintf(items[k].row.owner, sizeof(items[k].row.owner), "%s", opts->owner);
        items[k].row.description = items[k].src->description;
    }
    for (size_t i = 0; i < from->n_devices && e >= 0; i++)
        for (size_t k = 0; k < n; k++)
            if (strcmp(devs[i].snapshot_id, items[k].src->id) == 0)
                memcpy(devs[i].snapshot_id, items[k].row.id, ID_MAX_SIZE);
    if (e >= 0)
        e = id_generate("ami", img.id, sizeof(img.id));
    if (e >= 0) {
        img.creation_date = now_ms();
        e = registry_begin(dst->reg);
        if (e >= 0) {
            e = insert_image(dst, opts, &img, items, n);
            if (e >= 0)
                e = registry_commit(dst->reg);
            if (e < 0)
                registry_rollback(dst->reg);
        }
    }
    store_unlock(dst->store);
    if (e < 0)
        goto out;
    memcpy(ret_id, img.id, ID_MAX_SIZE);
    if (ret)
        *ret = st;
out:
    for (size_t k = 0; k < n; k++)
        copy_item_release(&items[k]);
    free(items);
    free(devs);
    registry_image_free(from);
    return e < 0 ? e : 0;
}
