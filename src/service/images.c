/* Images from the command line: import a disk image and register it as a
 * machine image in one step (`kiln image import`), as RegisterImage would
 * after the snapshot is in place.
 *
 * The name is checked before anything is imported (a duplicate costs
 * nothing); if the registration still fails (a name taken meanwhile), the
 * snapshot row is deleted again, so a failed import registers nothing, and
 * gc reclaims its chunks.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/error.h"
#include "common/util.h"
#include "registry/images.h"
#include "service/internal.h"

/* -EEXIST when `owner` has an image called `name` that is not deregistered. */
int image_name_check_free(struct region *r, const char *owner, const char *name)
{
    const char *owners[] = { owner }, *names[] = { name };
    static const enum image_state live[] = { IMAGE_PENDING, IMAGE_AVAILABLE, IMAGE_INVALID,
                                             IMAGE_TRANSIENT, IMAGE_FAILED, IMAGE_ERROR,
                                             IMAGE_DISABLED };
    struct image_query q = {
        .owners = owners, .n_owners = 1, .names = names, .n_names = 1,
        .states = live, .n_states = sizeof(live) / sizeof(live[0]),
        .include_deprecated = true, .include_disabled = true,
    };
    struct registry_image **list = NULL;
    char *next = NULL;
    size_t n = 0;
    int e;

    /* A name with wildcard characters would match others: compare exactly. */
    e = registry_image_list(r->reg, &q, &list, &n, &next);
    if (e < 0)
        return e;
    for (size_t i = 0; i < n && e == 0; i++)
        if (strcmp(list[i]->name, name) == 0)
            e = error_set(EEXIST, "an image named '%s' already exists in region '%s'", name,
                          r->name);
    registry_image_list_free(list, n);
    free(next);
    return e;
}

int service_image_import(struct region *r, const char *path,
                         const struct service_image_import_options *opts,
                         char ret_image_id[ID_MAX_SIZE], char ret_snap_id[ID_MAX_SIZE])
{
    struct service_import_options so = {
        .owner = opts->owner,
        .format = opts->format,
        .description = opts->description,
        .progress = opts->progress,
        .threads = opts->threads,
    };
    struct registry_image_device dev = { .device_name = (char *)"/dev/xvda",
                                         .volume_type = (char *)"gp3",
                                         .delete_on_termination = true };
    struct registry_image img = {
        .name = (char *)opts->name,
        .description = (char *)opts->description,
        .architecture = (char *)(opts->architecture ? opts->architecture : "x86_64"),
        .boot_mode = (char *)opts->boot_mode,
        .root_device_name = (char *)"/dev/xvda",
        .root_device_type = (char *)"ebs",
        .virtualization_type = (char *)"hvm",
        .ena_support = true,
        .state = IMAGE_AVAILABLE,
        .devices = &dev,
        .n_devices = 1,
    };
    struct registry_permission all = { .kind = REGISTRY_PERMISSION_GROUP, .value = "all" };
    char owner[ACCOUNT_ID_SIZE], snap[ID_MAX_SIZE];
    struct import_stats st;
    int e;

    if (opts->is_public) {
        img.permissions = &all;
        img.n_permissions = 1;
    }
    if (!image_name_is_valid(opts->name))
        return error_set(EINVAL,
                         "invalid image name '%s': 3 to 128 letters, digits and ( ) [ ] space "
                         ". / - ' @ _",
                         opts->name);
    if (opts->owner)
        snprintf(owner, sizeof(owner), "%s", opts->owner);
    else if ((e = service_default_account(r->data_dir, owner)) < 0)
        return e;
    e = image_name_check_free(r, owner, opts->name);
    if (e < 0)
        return e;

    so.owner = owner;
    e = service_snapshot_import(r, path, &so, snap, &st);
    if (e < 0)
        return e;

    e = id_generate("ami", img.id, sizeof(img.id));
    if (e == 0) {
        snprintf(img.owner, sizeof(img.owner), "%s", owner);
        snprintf(dev.snapshot_id, sizeof(dev.snapshot_id), "%s", snap);
        dev.volume_size_gib = (uint32_t)DIV_ROUND_UP(st.volume_size, 1ULL << 30);
        img.creation_date = wall_clock_ms();
        e = registry_image_insert(r->reg, &img, NULL, 0);
    }
    if (e < 0) {
        char why[512];
        snprintf(why, sizeof(why), "%s", error_message() ? error_message() : strerror(-e));
        service_snapshot_delete(r, snap); /* register nothing; gc frees the chunks */
        return error_set(e, "cannot register the image: %s", why);
    }
    memcpy(ret_image_id, img.id, ID_MAX_SIZE);
    memcpy(ret_snap_id, snap, ID_MAX_SIZE);
    return 0;
}
