/* CreateImage of an instance (create-image.c): capture the instance's
 * root volume as a snapshot and register a new image that maps it.
 *
 * The function works on what the instance manager hands a hook
 * (service/instances.h, struct instance_view): the instance's row, the
 * region handle, the open root volume (or NULL when the instance is
 * stopped) and the agent's socket.  It knows nothing of the manager, so it
 * runs (and is tested) without one: the clean-reboot form of CreateImage
 * (stop, capture the closed volume, start) is the caller's sequence of
 * manager calls around it (src/api/create-image.c).
 */
#ifndef KILN_SERVICE_CREATE_IMAGE_H
#define KILN_SERVICE_CREATE_IMAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "registry/instances.h"
#include "service/service.h"

/* How long the guest agent gets to answer the hello before the capture
 * goes on without a freeze (a guest without an agent, or one still
 * booting), and for each sync, freeze and thaw. */
#define SERVICE_CREATE_IMAGE_AGENT_HELLO_MS 3000
#define SERVICE_CREATE_IMAGE_AGENT_OP_MS 30000

struct service_image_create_options {
    const char *owner;       /* the new image's and snapshot's account; NULL: the instance's */
    const char *name;        /* required: an EC2 image name */
    const char *description; /* or NULL */
    const struct registry_tag *image_tags; /* put on the new image */
    size_t n_image_tags;
    const struct registry_tag *snapshot_tags; /* put on the new snapshot */
    size_t n_snapshot_tags;
    int agent_hello_ms; /* 0: SERVICE_CREATE_IMAGE_AGENT_HELLO_MS */
};

/* What the capture did, for the caller's log and answer. */
struct service_image_create_result {
    char image_id[ID_MAX_SIZE];
    char snapshot_id[ID_MAX_SIZE];
    bool frozen;        /* the guest's / was frozen by its agent for the capture */
    uint64_t bytes_new; /* written blocks read and chunked (volume_snapshot_stats) */
};

/* Create an image from the root volume of instance `row` in region r
 * (writable):
 *   - `root` open (the instance runs, and the manager holds its volume):
 *     when `agent_socket` is given and the agent answers within
 *     o->agent_hello_ms, sync and freeze the guest's / first; capture
 *     through the handle (service_volume_snapshot_open()); thaw on every
 *     path.  Without an agent the volume is flushed and the capture is
 *     crash-consistent;
 *   - `root` NULL (stopped): capture the closed volume
 *     (service_volume_snapshot(); -EBUSY if another process has it open
 *     for writing).
 * The new snapshot is completed when this returns; its parent is the
 * volume's snapshot (only changed chunks are new), its description
 * "Created by CreateImage(i-...) for ami-...".  Then one transaction
 * registers the image `available`, with the source image's architecture,
 * boot mode, virtualization type, ENA, SR-IOV, IMDS and TPM support (the
 * defaults of an imported image when the source row is gone), the
 * instance's root device name and one mapping of it to the new snapshot
 * with the volume's size, gp3, DeleteOnTermination, and the tags.
 * Returns 0, or -errno with no image and no snapshot left:
 *   -EINVAL   a bad name, or an instance without a root volume
 *   -EEXIST   the owner has a live image of that name
 *   -EBUSY    (stopped) another process holds the volume
 *   others    from the registry, the store or the volume. */
int service_image_create(struct region *r, const struct registry_instance *row,
                         struct volume *root, const char *agent_socket,
                         const struct service_image_create_options *o,
                         struct service_image_create_result *ret);

#endif
