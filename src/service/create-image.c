/* CreateImage: an instance's root volume captured as a snapshot and
 * registered as a new image (create-image.h).
 *
 * Design notes:
 *   - Order: everything that can be refused cheaply is refused first (the
 *     name, the owner's duplicate, the volume row); then the capture, which
 *     commits a completed snapshot row; then one transaction registers the
 *     image and tags the snapshot.  If that transaction fails, the snapshot
 *     row is deleted again, so a failed CreateImage leaves neither; its
 *     chunks are unreferenced and gc reclaims them.  A crash between the
 *     two commits leaves a snapshot without an image (described as
 *     "Created by CreateImage(i-...) for ami-..." naming an image that
 *     does not exist): visible, harmless, deletable.
 *   - Consistency of a running guest: the guest's page cache is the only
 *     state outside the volume handle (QEMU runs the disk with
 *     cache=none, and every write the NBD server acknowledged is in the
 *     handle).  The agent's SYNC and FREEZE of / push it out and hold new
 *     writes in the guest; the capture itself holds the handle's writes
 *     off while it builds the map (volume_snapshot()).  THAW is sent on
 *     every path once FREEZE was attempted: a freeze that timed out may
 *     still have happened in the guest.  Without an agent (none in the
 *     image, or not answering within the hello timeout) the capture is
 *     crash-consistent, as EC2's NoReboot is.
 *   - Incremental: the snapshot is built by volume_snapshot() over the
 *     volume's base map, so only the blocks the instance wrote are read
 *     and chunked, and the parent is the snapshot the volume came from.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/util.h"
#include "registry/images.h"
#include "service/create-image.h"
#include "service/internal.h"
#include "vm/vm.h"
#include "volume/volume.h"

static void image_freep(struct registry_image **p)
{
    registry_image_free(*p);
}

/* Keep the current error message across calls that may replace it. */
static void save_why(char *buf, size_t size, int e)
{
    snprintf(buf, size, "%s", error_message() ? error_message() : strerror(-e));
}

/* Capture the open root volume of a running instance, with the guest's /
 * frozen when its agent answers. */
static int capture_running(struct region *r, struct volume *v, const char *vol_id,
                           const char *agent_socket, int hello_ms,
                           const struct service_volume_snapshot_options *so,
                           char snap_id[ID_MAX_SIZE], struct volume_snapshot_stats *st,
                           bool *ret_frozen)
{
    _cleanup_(agent_client_freep) struct agent_client *a = NULL;
    bool freeze_sent = false;
    char why[512];
    int e, f;

    *ret_frozen = false;
    if (agent_socket && agent_client_connect(agent_socket, hello_ms, &a, NULL) < 0) {
        log_info("CreateImage of volume '%s': no agent answered on '%s' (%s): capturing "
                 "without a freeze (crash-consistent)",
                 vol_id, agent_socket, error_message() ? error_message() : "no answer");
        error_clear();
    }
    if (a) {
        e = agent_client_sync(a, SERVICE_CREATE_IMAGE_AGENT_OP_MS);
        if (e >= 0) {
            freeze_sent = true;
            e = agent_client_freeze(a, "/", true, SERVICE_CREATE_IMAGE_AGENT_OP_MS);
        }
        if (e < 0) {
            /* A guest whose / cannot be frozen (not a freezable file
             * system, or busy) is captured as it is, like one without an
             * agent. */
            log_warning("CreateImage of volume '%s': the guest agent could not %s: %s; "
                        "capturing without a freeze",
                        vol_id, freeze_sent ? "freeze /" : "sync",
                        error_message() ? error_message() : strerror(-e));
            error_clear();
        } else {
            *ret_frozen = true;
        }
    }
    e = volume_flush(v);
    if (e >= 0)
        e = service_volume_snapshot_open(r, v, vol_id, so, snap_id, st);
    if (freeze_sent) {
        if (e < 0)
            save_why(why, sizeof(why), e);
        f = agent_client_freeze(a, "/", false, SERVICE_CREATE_IMAGE_AGENT_OP_MS);
        if (f < 0 && *ret_frozen)
            log_warning("CreateImage of volume '%s': cannot thaw the guest's /: %s", vol_id,
                        error_message() ? error_message() : strerror(-f));
        if (e < 0)
            error_set(e, "%s", why);
        else
            error_clear();
    }
    return e;
}

/* The new image's row: the source image's attributes (or an imported
 * image's defaults when it is gone), the instance's root device mapped to
 * the new snapshot. */
static void image_row(const struct registry_image *src, const struct registry_instance *row,
                      const struct service_image_create_options *o, const char *owner,
                      struct registry_image_device *dev, struct registry_image *img)
{
    const char *root = row->root_device_name[0] ? row->root_device_name : "/dev/xvda";

    img->name = (char *)o->name;
    img->description = (char *)o->description;
    img->architecture = (char *)(src ? src->architecture : "x86_64");
    img->boot_mode = src ? src->boot_mode : NULL;
    img->root_device_name = (char *)root;
    img->root_device_type = (char *)"ebs";
    img->virtualization_type = (char *)(src ? src->virtualization_type : "hvm");
    img->ena_support = src ? src->ena_support : true;
    img->sriov_net_support = src ? src->sriov_net_support : NULL;
    img->imds_support = src ? src->imds_support : NULL;
    img->tpm_support = src ? src->tpm_support : NULL;
    img->state = IMAGE_AVAILABLE;
    img->creation_date = wall_clock_ms();
    snprintf(img->owner, sizeof(img->owner), "%s", owner);
    dev->device_name = (char *)root;
    dev->volume_type = (char *)"gp3";
    dev->delete_on_termination = true;
    img->devices = dev;
    img->n_devices = 1;
}

/* One transaction: the image with its tags, and the snapshot's tags. */
static int register_image(struct region *r, const struct registry_image *img,
                          const struct service_image_create_options *o, const char *snap_id)
{
    int e = registry_begin(r->reg);

    if (e < 0)
        return e;
    e = registry_image_insert(r->reg, img, o->image_tags, o->n_image_tags);
    if (e == -EEXIST)
        e = error_set(EEXIST, "an image named '%s' already exists in region '%s'", img->name,
                      r->name);
    for (size_t i = 0; e >= 0 && i < o->n_snapshot_tags; i++)
        e = registry_tag_set(r->reg, snap_id, o->snapshot_tags[i].key,
                             o->snapshot_tags[i].value);
    if (e >= 0)
        e = registry_commit(r->reg);
    if (e < 0) {
        char why[512];
        save_why(why, sizeof(why), e);
        registry_rollback(r->reg);
        error_set(e, "%s", why);
    }
    return e;
}

int service_image_create(struct region *r, const struct registry_instance *row,
                         struct volume *root, const char *agent_socket,
                         const struct service_image_create_options *o,
                         struct service_image_create_result *ret)
{
    _cleanup_(image_freep) struct registry_image *src = NULL;
    _cleanup_(registry_volume_freep) struct registry_volume *vol = NULL;
    _cleanup_free_ char *snap_desc = NULL;
    struct registry_image img = { .state = IMAGE_AVAILABLE };
    struct registry_image_device dev = { 0 };
    struct volume_snapshot_stats st = { 0 };
    struct service_image_create_result res = { 0 };
    const char *owner = o->owner ? o->owner : row->owner;
    char why[512];
    int e;

    if (r->read_only)
        return error_set(EROFS, "region '%s' is open read-only", r->name);
    if (!o->name || !image_name_is_valid(o->name))
        return error_set(EINVAL,
                         "invalid image name '%s': 3 to 128 letters, digits and ( ) [ ] space "
                         ". / - ' @ _",
                         o->name ? o->name : "");
    if (o->description && strlen(o->description) > IMAGE_DESCRIPTION_MAX)
        return error_set(EINVAL, "the description is longer than %d characters",
                         IMAGE_DESCRIPTION_MAX);
    if (!row->root_volume_id[0])
        return error_set(EINVAL, "instance '%s' has no root volume", row->id);
    e = image_name_check_free(r, owner, o->name);
    if (e < 0)
        return e;
    e = service_volume_get(r, row->root_volume_id, &vol);
    if (e < 0)
        return e;
    e = registry_image_get(r->reg, row->image_id, &src);
    if (e == -ENOENT) {
        error_clear();
        src = NULL; /* its attributes fall back to an imported image's */
    } else if (e < 0) {
        return e;
    }
    e = id_generate("ami", img.id, sizeof(img.id));
    if (e < 0)
        return e;

    snap_desc = xasprintf("Created by CreateImage(%s) for %s", row->id, img.id);
    struct service_volume_snapshot_options so = { .owner = owner, .description = snap_desc };
    if (root)
        e = capture_running(r, root, vol->id, agent_socket,
                            o->agent_hello_ms > 0 ? o->agent_hello_ms
                                                  : SERVICE_CREATE_IMAGE_AGENT_HELLO_MS,
                            &so, res.snapshot_id, &st, &res.frozen);
    else
        e = service_volume_snapshot(r, vol->id, &so, res.snapshot_id, &st);
    if (e < 0) {
        save_why(why, sizeof(why), e);
        return error_set(e, "cannot snapshot volume '%s' of instance '%s': %s", vol->id,
                         row->id, why);
    }

    image_row(src, row, o, owner, &dev, &img);
    snprintf(dev.snapshot_id, sizeof(dev.snapshot_id), "%s", res.snapshot_id);
    dev.volume_size_gib = vol->size_gib;
    e = register_image(r, &img, o, res.snapshot_id);
    if (e < 0) {
        save_why(why, sizeof(why), e);
        /* Register nothing: the snapshot goes too (gc frees its chunks). */
        if (service_snapshot_delete(r, res.snapshot_id) < 0)
            log_warning("CreateImage: cannot delete snapshot '%s' of the failed image: %s",
                        res.snapshot_id, error_message() ? error_message() : "");
        return error_set(e, "cannot register the image: %s", why);
    }
    memcpy(res.image_id, img.id, sizeof(res.image_id));
    res.bytes_new = st.bytes_new;
    if (ret)
        *ret = res;
    return 0;
}
