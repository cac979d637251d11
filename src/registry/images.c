/* Image rows: typed insert, get, list, update and delete over the `images`,
 * `image_block_devices` and `image_launch_permissions` tables (schema
 * version 2, docs/formats.md), and the "snapshot in use" count that
 * DeleteSnapshot needs.
 *
 * As in snapshots.c, every value is checked before it is bound (-EINVAL
 * naming the field) and the CHECK constraints are the second line.  The
 * list query is the one place SQL is assembled at run time: from fixed
 * fragments only, every value bound, and kept outside the statement
 * cache (its text varies with the query's shape): the handle keeps the
 * last one (list_stmt()).
 *
 * Paging: rows are ordered by (creation_date, id), which is unique, and a
 * page token is "<creation_date>_<id>" of the last row returned, so the
 * next page starts strictly after it.  A token names a row, so one walk
 * never sees the same token twice, and rows inserted meanwhile appear
 * in order or not at all, never twice.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "registry/images.h"
#include "registry/internal.h"

#define IMAGE_COLUMNS                                                                              \
    "id, owner, name, description, architecture, boot_mode, root_device_name, "                    \
    "root_device_type, virtualization_type, ena_support, sriov_net_support, imds_support, "        \
    "tpm_support, kernel_id, ramdisk_id, state, state_reason_code, state_reason_message, "         \
    "creation_date, deprecation_time, deregistration_protection, deregistration_cooldown, "        \
    "deregistration_blocked_until, source_image_id, source_region, last_launched_time"

static const char *const state_names[] = {
    [IMAGE_PENDING] = "pending",     [IMAGE_AVAILABLE] = "available",
    [IMAGE_INVALID] = "invalid",     [IMAGE_DEREGISTERED] = "deregistered",
    [IMAGE_TRANSIENT] = "transient", [IMAGE_FAILED] = "failed",
    [IMAGE_ERROR] = "error",         [IMAGE_DISABLED] = "disabled",
};

const char *image_state_to_string(enum image_state s)
{
    if ((unsigned)s >= ARRAY_SIZE(state_names))
        return NULL;
    return state_names[s];
}

int image_state_from_string(const char *s, enum image_state *ret)
{
    for (size_t i = 0; i < ARRAY_SIZE(state_names); i++)
        if (s && strcmp(s, state_names[i]) == 0) {
            *ret = (enum image_state)i;
            return 0;
        }
    return error_set(EINVAL, "unknown image state '%.40s'", s ? s : "");
}

static void device_release(struct registry_image_device *d)
{
    free(d->device_name);
    free(d->volume_type);
    free(d->virtual_name);
}

void registry_image_free(struct registry_image *img)
{
    if (!img)
        return;
    free(img->name);
    free(img->description);
    free(img->architecture);
    free(img->boot_mode);
    free(img->root_device_name);
    free(img->root_device_type);
    free(img->virtualization_type);
    free(img->sriov_net_support);
    free(img->imds_support);
    free(img->tpm_support);
    free(img->state_reason_code);
    free(img->state_reason_message);
    free(img->source_region);
    for (size_t i = 0; i < img->n_devices; i++)
        device_release(&img->devices[i]);
    free(img->devices);
    free(img->permissions);
    registry_tag_list_free(img->tags, img->n_tags);
    free(img);
}

void registry_image_list_free(struct registry_image **list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++)
        registry_image_free(list[i]);
    free(list);
}

/* ---- validation ------------------------------------------------------ */

static bool one_of(const char *s, const char *const *set, size_t n)
{
    for (size_t i = 0; s && i < n; i++)
        if (strcmp(s, set[i]) == 0)
            return true;
    return false;
}

static const char *const architectures[] = {"i386", "x86_64", "arm64", "x86_64_mac", "arm64_mac"};
static const char *const boot_modes[] = {"legacy-bios", "uefi", "uefi-preferred"};
static const char *const virtualization_types[] = {"hvm", "paravirtual"};
static const char *const volume_types[] = {"standard", "io1", "io2", "gp2", "gp3", "sc1", "st1"};

bool image_name_is_valid(const char *name)
{
    size_t len;

    if (!name)
        return false;
    len = strlen(name);
    if (len < IMAGE_NAME_MIN || len > IMAGE_NAME_MAX)
        return false;
    for (const char *p = name; *p; p++) {
        char c = *p;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            continue;
        if (!strchr("()[] ./-'@_", c))
            return false;
    }
    return true;
}

/* A fixed id array: NUL inside, and empty or "<prefix>-<17 hex>". */
static bool opt_id_is_valid(const char *prefix, const char *field, size_t size)
{
    return memchr(field, '\0', size) && (!field[0] || id_is_valid(prefix, field));
}

static bool printable(const char *s, size_t max)
{
    size_t len = 0;

    for (const unsigned char *p = (const unsigned char *)s; *p; p++, len++)
        if (*p < 0x20 || *p == 0x7f || len >= max)
            return false;
    return true;
}

static bool device_name_is_valid(const char *s)
{
    return s && s[0] && printable(s, 64);
}

static bool virtual_name_is_valid(const char *s)
{
    char *end;
    long n;

    if (strncmp(s, "ephemeral", 9) != 0 || !s[9] || (s[9] == '0' && s[10]))
        return false;
    if (s[9] < '0' || s[9] > '9')
        return false;
    n = strtol(s + 9, &end, 10);
    return !*end && n >= 0 && n <= 23;
}

static int validate_description(const char *id, const char *d)
{
    if (d && (strlen(d) > IMAGE_DESCRIPTION_MAX || !printable(d, IMAGE_DESCRIPTION_MAX)))
        return error_set(EINVAL,
                         "image '%s' has an invalid description: at most %d printable characters",
                         id, IMAGE_DESCRIPTION_MAX);
    return 0;
}

static int validate_imds(const char *id, const char *s)
{
    if (s && strcmp(s, "v2.0") != 0)
        return error_set(EINVAL, "image '%s' has an invalid imds support '%.40s' (want 'v2.0')", id,
                         s);
    return 0;
}

static int validate_device(const char *id, size_t i, const struct registry_image_device *d)
{
    if (!device_name_is_valid(d->device_name))
        return error_set(EINVAL, "image '%s': device %zu has an invalid device name", id, i);
    if (!opt_id_is_valid("snap", d->snapshot_id, sizeof(d->snapshot_id)))
        return error_set(EINVAL, "image '%s': device '%s' has a malformed snapshot id", id,
                         d->device_name);
    if (d->volume_size_gib > 65536)
        return error_set(EINVAL,
                         "image '%s': device '%s' has volume size %" PRIu32 " GiB, above 65536", id,
                         d->device_name, d->volume_size_gib);
    if (d->volume_type && !one_of(d->volume_type, volume_types, ARRAY_SIZE(volume_types)))
        return error_set(EINVAL, "image '%s': device '%s' has an invalid volume type '%.40s'", id,
                         d->device_name, d->volume_type);
    if (d->iops > INT32_MAX || d->throughput > INT32_MAX)
        return error_set(EINVAL, "image '%s': device '%s' has iops or throughput out of range", id,
                         d->device_name);
    if (d->virtual_name && !virtual_name_is_valid(d->virtual_name))
        return error_set(EINVAL,
                         "image '%s': device '%s' has an invalid virtual name '%.40s' "
                         "(want ephemeral0..ephemeral23)",
                         id, d->device_name, d->virtual_name);
    return 0;
}

static int validate_image(const struct registry_image *img)
{
    const char *id = img->id;
    int r;

    if (!memchr(img->id, '\0', sizeof(img->id)) || !id_is_valid("ami", img->id))
        return error_set(EINVAL, "malformed image id '%.*s'", (int)sizeof(img->id) - 1, img->id);
    if (!memchr(img->owner, '\0', sizeof(img->owner)) || !reg_account_is_valid(img->owner))
        return error_set(EINVAL, "image '%s' has a malformed owner '%.*s'", id,
                         (int)sizeof(img->owner) - 1, img->owner);
    if (!image_name_is_valid(img->name))
        return error_set(EINVAL,
                         "image '%s' has an invalid name '%.128s': 3 to 128 letters, digits "
                         "and ( ) [ ] space . / - ' @ _",
                         id, img->name ? img->name : "");
    r = validate_description(id, img->description);
    if (r < 0)
        return r;
    if (!one_of(img->architecture, architectures, ARRAY_SIZE(architectures)))
        return error_set(EINVAL, "image '%s' has an invalid architecture '%.40s'", id,
                         img->architecture ? img->architecture : "");
    if (img->boot_mode && !one_of(img->boot_mode, boot_modes, ARRAY_SIZE(boot_modes)))
        return error_set(EINVAL, "image '%s' has an invalid boot mode '%.40s'", id, img->boot_mode);
    if (!device_name_is_valid(img->root_device_name))
        return error_set(EINVAL, "image '%s' has an invalid root device name", id);
    if (!img->root_device_type || strcmp(img->root_device_type, "ebs") != 0)
        return error_set(EINVAL, "image '%s' has an invalid root device type '%.40s' (want 'ebs')",
                         id, img->root_device_type ? img->root_device_type : "");
    if (!one_of(img->virtualization_type, virtualization_types, ARRAY_SIZE(virtualization_types)))
        return error_set(EINVAL, "image '%s' has an invalid virtualization type '%.40s'", id,
                         img->virtualization_type ? img->virtualization_type : "");
    if (img->sriov_net_support && strcmp(img->sriov_net_support, "simple") != 0)
        return error_set(EINVAL, "image '%s' has an invalid sriov net support '%.40s'", id,
                         img->sriov_net_support);
    r = validate_imds(id, img->imds_support);
    if (r < 0)
        return r;
    if (img->tpm_support && strcmp(img->tpm_support, "v2.0") != 0)
        return error_set(EINVAL, "image '%s' has an invalid tpm support '%.40s'", id,
                         img->tpm_support);
    if (!opt_id_is_valid("aki", img->kernel_id, sizeof(img->kernel_id)))
        return error_set(EINVAL, "image '%s' has a malformed kernel id", id);
    if (!opt_id_is_valid("ari", img->ramdisk_id, sizeof(img->ramdisk_id)))
        return error_set(EINVAL, "image '%s' has a malformed ramdisk id", id);
    if (!image_state_to_string(img->state))
        return error_set(EINVAL, "image '%s' has an invalid state %d", id, (int)img->state);
    if (img->creation_date < 0 || img->deprecation_time < 0 ||
        img->deregistration_blocked_until < 0 || img->last_launched_time < 0)
        return error_set(EINVAL, "image '%s' has a negative time", id);
    if (img->deregistration_cooldown && !img->deregistration_protection)
        return error_set(EINVAL, "image '%s' has a deregistration cooldown without protection", id);
    if (!opt_id_is_valid("ami", img->source_image_id, sizeof(img->source_image_id)))
        return error_set(EINVAL, "image '%s' has a malformed source image id", id);
    if (img->source_region && (!img->source_region[0] || !printable(img->source_region, 64)))
        return error_set(EINVAL, "image '%s' has an invalid source region", id);
    if (img->n_devices > IMAGE_DEVICES_MAX)
        return error_set(EINVAL, "image '%s' has %zu block devices, more than %d", id,
                         img->n_devices, IMAGE_DEVICES_MAX);
    for (size_t i = 0; i < img->n_devices; i++) {
        r = validate_device(id, i, &img->devices[i]);
        if (r < 0)
            return r;
        for (size_t j = 0; j < i; j++)
            if (strcmp(img->devices[j].device_name, img->devices[i].device_name) == 0)
                return error_set(EINVAL, "image '%s' maps device '%s' twice", id,
                                 img->devices[i].device_name);
    }
    for (size_t i = 0; i < img->n_permissions; i++) {
        r = reg_permission_validate(&reg_image_permissions, id, img->permissions[i].kind,
                                    img->permissions[i].value);
        if (r < 0)
            return r;
    }
    return 0;
}

static bool id_arg_is_valid(const char *id)
{
    return id && id_is_valid("ami", id);
}

/* ---- binding and reading --------------------------------------------- */

static int read_devices(struct registry *reg, struct registry_image *img)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    size_t cap = 0;
    int r, rc;

    r = reg_prepare(reg,
                    "SELECT device_name, snapshot_id, volume_size_gib, volume_type,"
                    " delete_on_termination, encrypted, iops, throughput, virtual_name,"
                    " no_device FROM image_block_devices WHERE image_id = ?1 ORDER BY position",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, img->id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct registry_image_device *d;

        if (img->n_devices == cap) {
            cap = cap ? 2 * cap : 4;
            img->devices = xrealloc(img->devices, cap * sizeof(*img->devices));
        }
        d = &img->devices[img->n_devices];
        memset(d, 0, sizeof(*d));
        img->n_devices++;
        d->device_name = reg_column_strdup(st, 0);
        if (!d->device_name || !reg_column_copy(st, 1, d->snapshot_id, sizeof(d->snapshot_id)) ||
            (d->snapshot_id[0] && !id_is_valid("snap", d->snapshot_id)))
            return error_set(EBADMSG, "image '%s' has a malformed block device in registry '%s'",
                             img->id, reg->path);
        d->volume_size_gib = (uint32_t)sqlite3_column_int64(st, 2);
        d->volume_type = reg_column_strdup(st, 3);
        d->delete_on_termination = sqlite3_column_int(st, 4) != 0;
        d->encrypted = sqlite3_column_int(st, 5) != 0;
        d->iops = (uint32_t)sqlite3_column_int64(st, 6);
        d->throughput = (uint32_t)sqlite3_column_int64(st, 7);
        d->virtual_name = reg_column_strdup(st, 8);
        d->no_device = sqlite3_column_int(st, 9) != 0;
    }
    if (rc != SQLITE_DONE)
        return reg_fail(reg, rc, "cannot read the block devices of image '%s'", img->id);
    return 0;
}

static int read_permissions(struct registry *reg, struct registry_image *img)
{
    int r = reg_permission_list(reg, &reg_image_permissions, img->id, &img->permissions,
                                &img->n_permissions);

    if (r < 0)
        return r;
    for (size_t i = 0; i < img->n_permissions; i++)
        if (img->permissions[i].kind == REGISTRY_PERMISSION_GROUP)
            img->is_public = true;
    return 0;
}

/* Build an image from a row of IMAGE_COLUMNS (without its devices,
 * permissions and tags). */
static int read_row(struct registry *reg, sqlite3_stmt *st, struct registry_image **ret)
{
    _cleanup_(registry_image_freep) struct registry_image *img = xcalloc(1, sizeof(*img));
    const char *state;

    if (!reg_column_copy(st, 0, img->id, sizeof(img->id)) || !id_is_valid("ami", img->id))
        return error_set(EBADMSG, "registry '%s' holds a malformed image id", reg->path);
    if (!reg_column_copy(st, 1, img->owner, sizeof(img->owner)) || !reg_account_is_valid(img->owner))
        return error_set(EBADMSG, "image '%s' has a malformed owner in registry '%s'", img->id,
                         reg->path);
    img->name = reg_column_strdup(st, 2);
    img->description = reg_column_strdup(st, 3);
    img->architecture = reg_column_strdup(st, 4);
    img->boot_mode = reg_column_strdup(st, 5);
    img->root_device_name = reg_column_strdup(st, 6);
    img->root_device_type = reg_column_strdup(st, 7);
    img->virtualization_type = reg_column_strdup(st, 8);
    img->ena_support = sqlite3_column_int(st, 9) != 0;
    img->sriov_net_support = reg_column_strdup(st, 10);
    img->imds_support = reg_column_strdup(st, 11);
    img->tpm_support = reg_column_strdup(st, 12);
    if (!img->name || !img->architecture || !img->root_device_name || !img->root_device_type ||
        !img->virtualization_type)
        return error_set(EBADMSG, "image '%s' has a NULL required field in registry '%s'", img->id,
                         reg->path);
    if (!reg_column_copy(st, 13, img->kernel_id, sizeof(img->kernel_id)) ||
        !reg_column_copy(st, 14, img->ramdisk_id, sizeof(img->ramdisk_id)))
        return error_set(EBADMSG, "image '%s' has a malformed kernel or ramdisk in registry '%s'",
                         img->id, reg->path);
    state = (const char *)sqlite3_column_text(st, 15);
    if (image_state_from_string(state, &img->state) < 0)
        return error_set(EBADMSG, "image '%s' has an unknown state '%.40s' in registry '%s'",
                         img->id, state ? state : "", reg->path);
    img->state_reason_code = reg_column_strdup(st, 16);
    img->state_reason_message = reg_column_strdup(st, 17);
    img->creation_date = sqlite3_column_int64(st, 18);
    img->deprecation_time = sqlite3_column_int64(st, 19);
    img->deregistration_protection = sqlite3_column_int(st, 20) != 0;
    img->deregistration_cooldown = sqlite3_column_int(st, 21) != 0;
    img->deregistration_blocked_until = sqlite3_column_int64(st, 22);
    if (!reg_column_copy(st, 23, img->source_image_id, sizeof(img->source_image_id)))
        return error_set(EBADMSG, "image '%s' has a malformed source image in registry '%s'",
                         img->id, reg->path);
    img->source_region = reg_column_strdup(st, 24);
    img->last_launched_time = sqlite3_column_int64(st, 25);
    *ret = TAKE_PTR(img);
    return 0;
}

static int read_children(struct registry *reg, struct registry_image *img)
{
    int r = read_devices(reg, img);

    if (r >= 0)
        r = read_permissions(reg, img);
    if (r >= 0)
        r = registry_tag_list(reg, img->id, &img->tags, &img->n_tags);
    return r;
}

/* ---- writes ------------------------------------------------------------ */

static int insert_device(struct registry *reg, const char *id, size_t pos,
                         const struct registry_image_device *d)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r;

    r = reg_prepare(reg,
                    "INSERT INTO image_block_devices (image_id, position, device_name,"
                    " snapshot_id, volume_size_gib, volume_type, delete_on_termination,"
                    " encrypted, iops, throughput, virtual_name, no_device)"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    sqlite3_bind_int64(st, 2, (int64_t)pos);
    reg_bind_text(st, 3, d->device_name);
    reg_bind_text(st, 4, d->snapshot_id[0] ? d->snapshot_id : NULL);
    reg_bind_positive(st, 5, d->volume_size_gib);
    reg_bind_text(st, 6, d->volume_type);
    sqlite3_bind_int(st, 7, d->delete_on_termination);
    sqlite3_bind_int(st, 8, d->encrypted);
    reg_bind_positive(st, 9, d->iops);
    reg_bind_positive(st, 10, d->throughput);
    reg_bind_text(st, 11, d->virtual_name);
    sqlite3_bind_int(st, 12, d->no_device);
    r = reg_step_done(reg, st, "cannot insert block device '%s' of image '%s'", d->device_name, id);
    return r < 0 ? r : 0;
}

static int name_taken(struct registry *reg, const struct registry_image *img)
{
    return error_set(EEXIST, "an image named '%s' already exists for owner '%s'", img->name,
                     img->owner);
}

static int insert_locked(struct registry *reg, const struct registry_image *img,
                         const struct registry_tag *tags, size_t n_tags)
{
    int r;

    {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;

        r = reg_prepare(reg, "SELECT 1 FROM images WHERE id = ?1", &st);
        if (r < 0)
            return r;
        reg_bind_text(st, 1, img->id);
        r = sqlite3_step(st);
        if (r == SQLITE_ROW)
            return error_set(EEXIST, "image '%s' already exists", img->id);
        if (r != SQLITE_DONE)
            return reg_fail(reg, r, "cannot read image '%s'", img->id);
    }
    {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;

        r = reg_prepare(reg,
                        "INSERT INTO images (" IMAGE_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5,"
                        " ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,"
                        " ?20, ?21, ?22, ?23, ?24, ?25, ?26)",
                        &st);
        if (r < 0)
            return r;
        reg_bind_text(st, 1, img->id);
        reg_bind_text(st, 2, img->owner);
        reg_bind_text(st, 3, img->name);
        reg_bind_text(st, 4, img->description);
        reg_bind_text(st, 5, img->architecture);
        reg_bind_text(st, 6, img->boot_mode);
        reg_bind_text(st, 7, img->root_device_name);
        reg_bind_text(st, 8, img->root_device_type);
        reg_bind_text(st, 9, img->virtualization_type);
        sqlite3_bind_int(st, 10, img->ena_support);
        reg_bind_text(st, 11, img->sriov_net_support);
        reg_bind_text(st, 12, img->imds_support);
        reg_bind_text(st, 13, img->tpm_support);
        reg_bind_text(st, 14, img->kernel_id[0] ? img->kernel_id : NULL);
        reg_bind_text(st, 15, img->ramdisk_id[0] ? img->ramdisk_id : NULL);
        reg_bind_text(st, 16, image_state_to_string(img->state));
        reg_bind_text(st, 17, img->state_reason_code);
        reg_bind_text(st, 18, img->state_reason_message);
        sqlite3_bind_int64(st, 19, img->creation_date);
        reg_bind_positive(st, 20, img->deprecation_time);
        sqlite3_bind_int(st, 21, img->deregistration_protection);
        sqlite3_bind_int(st, 22, img->deregistration_cooldown);
        reg_bind_positive(st, 23, img->deregistration_blocked_until);
        reg_bind_text(st, 24, img->source_image_id[0] ? img->source_image_id : NULL);
        reg_bind_text(st, 25, img->source_region);
        reg_bind_positive(st, 26, img->last_launched_time);
        r = reg_step_done(reg, st, "cannot insert image '%s'", img->id);
        /* The id was free: a uniqueness failure is the (owner, name) index. */
        if (r == -EEXIST)
            return name_taken(reg, img);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < img->n_devices; i++) {
        r = insert_device(reg, img->id, i, &img->devices[i]);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < img->n_permissions; i++) {
        r = reg_permission_write(reg, &reg_image_permissions, img->id, img->permissions[i].kind,
                                 img->permissions[i].value, true);
        if (r < 0)
            return r;
    }
    if (img->is_public) {
        r = reg_permission_write(reg, &reg_image_permissions, img->id,
                                 REGISTRY_PERMISSION_GROUP, "all", true);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < n_tags; i++) {
        r = registry_tag_set(reg, img->id, tags[i].key, tags[i].value);
        if (r < 0)
            return r;
    }
    return 0;
}

int registry_image_insert(struct registry *reg, const struct registry_image *img,
                          const struct registry_tag *tags, size_t n_tags)
{
    int r;

    r = validate_image(img);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n_tags; i++)
        if (!tags[i].key || !tags[i].key[0])
            return error_set(EINVAL, "image '%s': tag %zu has an empty key", img->id, i);
    r = registry_begin(reg);
    if (r < 0)
        return r;
    r = registry_end(reg, insert_locked(reg, img, tags, n_tags));
    return r < 0 ? r : 0;
}

int registry_image_get(struct registry *reg, const char *id, struct registry_image **ret)
{
    _cleanup_(registry_image_freep) struct registry_image *img = NULL;
    int r;

    if (!id_arg_is_valid(id))
        return error_set(EINVAL, "malformed image id '%.40s'", id ? id : "");
    {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;

        r = reg_prepare(reg, "SELECT " IMAGE_COLUMNS " FROM images WHERE id = ?1", &st);
        if (r < 0)
            return r;
        reg_bind_text(st, 1, id);
        r = sqlite3_step(st);
        if (r == SQLITE_DONE)
            return error_set(ENOENT, "image '%s' not found", id);
        if (r != SQLITE_ROW)
            return reg_fail(reg, r, "cannot read image '%s'", id);
        r = read_row(reg, st, &img);
        if (r < 0)
            return r;
    }
    r = read_children(reg, img);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(img);
    return 0;
}

static int update_locked(struct registry *reg, const char *id,
                         const struct registry_image_update *u)
{
    _cleanup_(registry_image_freep) struct registry_image *cur = NULL;
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    const char *desc, *imds, *code, *msg;
    enum image_state state;
    int r;

    r = registry_image_get(reg, id, &cur);
    if (r < 0)
        return r;
    state = cur->state;
    code = cur->state_reason_code;
    msg = cur->state_reason_message;
    if (u->set & IMAGE_SET_STATE) {
        state = u->state;
        code = u->state_reason_code;
        msg = u->state_reason_message;
    }
    desc = u->set & IMAGE_SET_DESCRIPTION ? u->description : cur->description;
    imds = cur->imds_support;
    if (u->set & IMAGE_SET_IMDS_SUPPORT) {
        if (cur->imds_support && !u->imds_support)
            return error_set(EROFS, "image '%s': imds support v2.0 cannot be undone", id);
        imds = u->imds_support;
    }
    if (u->set & IMAGE_SET_DEPRECATION)
        cur->deprecation_time = u->deprecation_time;
    if (u->set & IMAGE_SET_DEREGISTRATION_PROTECTION) {
        cur->deregistration_protection = u->deregistration_protection;
        cur->deregistration_cooldown = u->deregistration_cooldown;
        cur->deregistration_blocked_until = u->deregistration_blocked_until;
    }
    if (u->set & IMAGE_SET_LAST_LAUNCHED)
        cur->last_launched_time = u->last_launched_time;

    r = reg_prepare(reg,
                    "UPDATE images SET state = ?2, state_reason_code = ?3,"
                    " state_reason_message = ?4, description = ?5, deprecation_time = ?6,"
                    " imds_support = ?7, deregistration_protection = ?8,"
                    " deregistration_cooldown = ?9, deregistration_blocked_until = ?10,"
                    " last_launched_time = ?11 WHERE id = ?1",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, id);
    reg_bind_text(st, 2, image_state_to_string(state));
    reg_bind_text(st, 3, code);
    reg_bind_text(st, 4, msg);
    reg_bind_text(st, 5, desc);
    reg_bind_positive(st, 6, cur->deprecation_time);
    reg_bind_text(st, 7, imds);
    sqlite3_bind_int(st, 8, cur->deregistration_protection);
    sqlite3_bind_int(st, 9, cur->deregistration_cooldown);
    reg_bind_positive(st, 10, cur->deregistration_blocked_until);
    reg_bind_positive(st, 11, cur->last_launched_time);
    r = reg_step_done(reg, st, "cannot update image '%s'", id);
    if (r == -EEXIST)
        /* Leaving "deregistered" while a live image holds the name. */
        return name_taken(reg, cur);
    if (r < 0)
        return r;
    if ((u->set & IMAGE_SET_STATE) && state == IMAGE_DISABLED) {
        r = reg_permission_delete_all(reg, &reg_image_permissions, id);
        if (r < 0)
            return r;
    }
    if (u->set & IMAGE_SET_PUBLIC) {
        r = reg_permission_write(reg, &reg_image_permissions, id, REGISTRY_PERMISSION_GROUP,
                                 "all", u->is_public);
        if (r < 0)
            return r;
    }
    return 0;
}

int registry_image_update(struct registry *reg, const char *id,
                          const struct registry_image_update *u)
{
    int r;

    if (!id_arg_is_valid(id))
        return error_set(EINVAL, "malformed image id '%.40s'", id ? id : "");
    if ((u->set & IMAGE_SET_STATE) && !image_state_to_string(u->state))
        return error_set(EINVAL, "image '%s': invalid state %d", id, (int)u->state);
    if (u->set & IMAGE_SET_DESCRIPTION) {
        r = validate_description(id, u->description);
        if (r < 0)
            return r;
    }
    if (u->set & IMAGE_SET_IMDS_SUPPORT) {
        r = validate_imds(id, u->imds_support);
        if (r < 0)
            return r;
    }
    if (u->deprecation_time < 0 || u->deregistration_blocked_until < 0 || u->last_launched_time < 0)
        return error_set(EINVAL, "image '%s': negative time", id);
    if ((u->set & IMAGE_SET_DEREGISTRATION_PROTECTION) && u->deregistration_cooldown &&
        !u->deregistration_protection)
        return error_set(EINVAL, "image '%s': deregistration cooldown without protection", id);
    r = registry_begin(reg);
    if (r < 0)
        return r;
    r = registry_end(reg, update_locked(reg, id, u));
    return r < 0 ? r : 0;
}

int registry_image_permission_add(struct registry *reg, const char *id,
                                  enum registry_permission_kind kind, const char *value)
{
    return reg_permission_add(reg, &reg_image_permissions, id, kind, value);
}

int registry_image_permission_remove(struct registry *reg, const char *id,
                                     enum registry_permission_kind kind, const char *value)
{
    return reg_permission_remove(reg, &reg_image_permissions, id, kind, value);
}

int registry_image_permission_clear(struct registry *reg, const char *id)
{
    return reg_permission_clear(reg, &reg_image_permissions, id);
}

int registry_image_delete(struct registry *reg, const char *id)
{
    if (!id_arg_is_valid(id))
        return error_set(EINVAL, "malformed image id '%.40s'", id ? id : "");
    /* Devices and permissions go by ON DELETE CASCADE. */
    return reg_delete_resource(reg, "DELETE FROM images WHERE id = ?1", "image", id, NULL);
}

int registry_snapshot_in_use_by_images(struct registry *reg, const char *snap_id, size_t *ret_count)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int r, rc;

    if (!snap_id || !id_is_valid("snap", snap_id))
        return error_set(EINVAL, "malformed snapshot id '%.40s'", snap_id ? snap_id : "");
    r = reg_prepare(reg,
                    "SELECT count(DISTINCT d.image_id) FROM image_block_devices d"
                    " JOIN images i ON i.id = d.image_id"
                    " WHERE d.snapshot_id = ?1 AND i.state <> 'deregistered'",
                    &st);
    if (r < 0)
        return r;
    reg_bind_text(st, 1, snap_id);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        return reg_fail(reg, rc, "cannot count the images using snapshot '%s'", snap_id);
    *ret_count = (size_t)sqlite3_column_int64(st, 0);
    return 0;
}

/* ---- the list query ---------------------------------------------------- */

/* SQL text grown from fixed fragments; values never go in here. */
struct sqlbuf {
    char *s;
    size_t len, cap;
};

static void sql_add(struct sqlbuf *b, const char *frag)
{
    size_t n = strlen(frag);

    if (b->len + n + 1 > b->cap) {
        b->cap = MAX(2 * b->cap, b->len + n + 1);
        b->cap = MAX(b->cap, (size_t)512);
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->len, frag, n + 1);
    b->len += n;
}

/* "?, ?, ?" for n values. */
static void sql_placeholders(struct sqlbuf *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sql_add(b, i ? ", ?" : "?");
}

/* Values to bind, in the order of their "?" in the SQL text. */
struct binds {
    const char **text; /* NULL entry: bind the integer instead */
    int64_t *ints;
    char **owned; /* translated patterns, freed at the end */
    size_t n, cap, n_owned;
};

static void bind_push(struct binds *b, const char *text, int64_t v)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 16;
        b->text = xrealloc(b->text, b->cap * sizeof(*b->text));
        b->ints = xrealloc(b->ints, b->cap * sizeof(*b->ints));
        b->owned = xrealloc(b->owned, b->cap * sizeof(*b->owned));
    }
    b->text[b->n] = text;
    b->ints[b->n] = v;
    b->n++;
}

static void bind_pattern(struct binds *b, char *glob)
{
    bind_push(b, glob, 0);
    b->owned[b->n_owned++] = glob; /* n_owned <= n <= cap */
}

static void binds_release(struct binds *b)
{
    for (size_t i = 0; i < b->n_owned; i++)
        free(b->owned[i]);
    free(b->text);
    free(b->ints);
    free(b->owned);
}

/* An EC2 filter pattern as an SQLite GLOB: '*' and '?' stay, a backslash
 * makes the next character literal, and a literal '*', '?', '[' or ']'
 * becomes a one-character class. */
static char *ec2_pattern_to_glob(const char *p)
{
    char *out = xmalloc(3 * strlen(p) + 1), *o = out;

    for (; *p; p++) {
        char c = *p;
        bool literal = false;

        if (c == '\\' && p[1]) {
            c = *++p;
            literal = true;
        }
        if ((literal && (c == '*' || c == '?')) || c == '[' || c == ']') {
            *o++ = '[';
            *o++ = c;
            *o++ = ']';
        } else {
            *o++ = c;
        }
    }
    *o = '\0';
    return out;
}

/* "COL = ?" for a pattern without wildcards, else "COL GLOB ?", with the
 * value pushed.  The same rows either way; but SQLite plans a GLOB on a
 * bound pattern anew whenever the pattern is bound (to turn its prefix
 * into an index range), while an equality is planned once for a kept
 * statement (list_stmt()). */
static void sql_match(struct sqlbuf *sql, struct binds *b, const char *col, const char *pattern)
{
    char *glob = ec2_pattern_to_glob(pattern);

    sql_add(sql, col);
    sql_add(sql, strpbrk(glob, "*?[") ? " GLOB ?" : " = ?");
    bind_pattern(b, glob);
}

/* "<creation_date>_<id>" */
static char *token_format(const struct registry_image *img)
{
    return xasprintf("%" PRId64 "_%s", img->creation_date, img->id);
}

static int token_parse(const char *tok, int64_t *ret_date, char ret_id[ID_MAX_SIZE])
{
    const char *us = tok ? strchr(tok, '_') : NULL;
    int64_t v = 0;

    if (!us || us == tok || us - tok > 18 || !id_is_valid("ami", us + 1))
        return error_set(EINVAL, "invalid page token '%.60s'", tok ? tok : "");
    for (const char *p = tok; p < us; p++) {
        if (*p < '0' || *p > '9')
            return error_set(EINVAL, "invalid page token '%.60s'", tok);
        v = v * 10 + (*p - '0');
    }
    *ret_date = v;
    snprintf(ret_id, ID_MAX_SIZE, "%s", us + 1);
    return 0;
}

static int build_query(const struct image_query *q, struct sqlbuf *sql, struct binds *b,
                       const int64_t *after_date, const char *after_id, size_t limit)
{
    size_t n_accounts = 0;

    sql_add(sql, "SELECT " IMAGE_COLUMNS " FROM images WHERE 1");
    if (q->n_ids) {
        sql_add(sql, " AND id IN (");
        sql_placeholders(sql, q->n_ids);
        sql_add(sql, ")");
        for (size_t i = 0; i < q->n_ids; i++)
            bind_push(b, q->ids[i], 0);
    }
    if (q->n_owners) {
        sql_add(sql, " AND owner IN (");
        sql_placeholders(sql, q->n_owners);
        sql_add(sql, ")");
        for (size_t i = 0; i < q->n_owners; i++)
            bind_push(b, q->owners[i], 0);
    }
    if (q->n_executable_by) {
        for (size_t i = 0; i < q->n_executable_by; i++)
            if (strcmp(q->executable_by[i], "all") != 0)
                n_accounts++;
        sql_add(sql, " AND (EXISTS (SELECT 1 FROM image_launch_permissions p"
                     " WHERE p.image_id = images.id AND p.kind = 'group' AND p.value = 'all')");
        if (n_accounts) {
            sql_add(sql, " OR owner IN (");
            sql_placeholders(sql, n_accounts);
            sql_add(sql, ") OR EXISTS (SELECT 1 FROM image_launch_permissions p"
                         " WHERE p.image_id = images.id AND p.kind = 'user' AND p.value IN (");
            sql_placeholders(sql, n_accounts);
            sql_add(sql, "))");
            for (int pass = 0; pass < 2; pass++)
                for (size_t i = 0; i < q->n_executable_by; i++)
                    if (strcmp(q->executable_by[i], "all") != 0)
                        bind_push(b, q->executable_by[i], 0);
        }
        sql_add(sql, ")");
    }
    if (q->n_names) {
        sql_add(sql, " AND (");
        for (size_t i = 0; i < q->n_names; i++) {
            sql_add(sql, i ? " OR " : "");
            sql_match(sql, b, "name", q->names[i]);
        }
        sql_add(sql, ")");
    }
    if (q->n_states) {
        sql_add(sql, " AND state IN (");
        sql_placeholders(sql, q->n_states);
        sql_add(sql, ")");
        for (size_t i = 0; i < q->n_states; i++)
            bind_push(b, image_state_to_string(q->states[i]), 0);
    }
    for (size_t f = 0; f < q->n_tags; f++) {
        const struct image_tag_filter *t = &q->tags[f];

        /* "id IN (the tagged ids)", not a correlated EXISTS: SQLite then
         * reads the few matching tags through tags_key_value (one range)
         * instead of probing the tags of every image. */
        sql_add(sql, " AND id IN (SELECT t.resource_id FROM tags t WHERE 1");
        if (t->key) {
            sql_add(sql, " AND t.key = ?");
            bind_push(b, t->key, 0);
        }
        if (t->n_values) {
            sql_add(sql, " AND (");
            for (size_t i = 0; i < t->n_values; i++) {
                sql_add(sql, i ? " OR " : "");
                sql_match(sql, b, t->key ? "t.value" : "t.key", t->values[i]);
            }
            sql_add(sql, ")");
        }
        sql_add(sql, ")");
    }
    if (!q->include_deprecated && !q->n_ids) {
        sql_add(sql, " AND (deprecation_time IS NULL OR deprecation_time > ?");
        bind_push(b, NULL, q->now > 0 ? q->now : wall_clock_ms());
        if (q->caller) {
            sql_add(sql, " OR owner = ?");
            bind_push(b, q->caller, 0);
        }
        sql_add(sql, ")");
    }
    if (!q->include_disabled)
        sql_add(sql, " AND state <> 'disabled'");
    if (after_date) {
        sql_add(sql, " AND (creation_date > ? OR (creation_date = ? AND id > ?))");
        bind_push(b, NULL, *after_date);
        bind_push(b, NULL, *after_date);
        bind_push(b, after_id, 0);
    }
    sql_add(sql, " ORDER BY creation_date, id");
    if (limit) {
        sql_add(sql, " LIMIT ?");
        bind_push(b, NULL, (int64_t)limit);
    }
    return 0;
}

static int validate_query(const struct image_query *q)
{
    if (q->max_results > IMAGE_LIST_MAX_RESULTS)
        return error_set(EINVAL, "max results %zu is above %d", q->max_results,
                         IMAGE_LIST_MAX_RESULTS);
    for (size_t i = 0; i < q->n_ids; i++)
        if (!id_arg_is_valid(q->ids[i]))
            return error_set(EINVAL, "malformed image id '%.40s'", q->ids[i] ? q->ids[i] : "");
    for (size_t i = 0; i < q->n_owners; i++)
        if (!q->owners[i] || !reg_account_is_valid(q->owners[i]))
            return error_set(EINVAL, "invalid owner '%.40s'", q->owners[i] ? q->owners[i] : "");
    for (size_t i = 0; i < q->n_executable_by; i++)
        if (!q->executable_by[i] ||
            (strcmp(q->executable_by[i], "all") != 0 && !reg_account_is_valid(q->executable_by[i])))
            return error_set(EINVAL, "invalid executable-by user '%.40s'",
                             q->executable_by[i] ? q->executable_by[i] : "");
    for (size_t i = 0; i < q->n_names; i++)
        if (!q->names[i])
            return error_set(EINVAL, "NULL name pattern");
    for (size_t i = 0; i < q->n_states; i++)
        if (!image_state_to_string(q->states[i]))
            return error_set(EINVAL, "invalid image state %d", (int)q->states[i]);
    for (size_t f = 0; f < q->n_tags; f++) {
        if (!q->tags[f].key && !q->tags[f].n_values)
            return error_set(EINVAL, "tag-key filter without values");
        for (size_t i = 0; i < q->tags[f].n_values; i++)
            if (!q->tags[f].values[i])
                return error_set(EINVAL, "NULL tag filter value");
    }
    if (q->caller && !reg_account_is_valid(q->caller))
        return error_set(EINVAL, "invalid caller account '%.40s'", q->caller);
    return 0;
}

/* The list query for `sql`: the handle keeps the last one (its text
 * depends only on the query's shape, and a client tends to repeat one
 * shape: the handles the API server keeps open then skip SQLite's
 * compiler).  The statement stays the handle's; *ret is reset and its
 * bindings cleared when the caller is done (list_stmt_done). */
static int list_stmt(struct registry *reg, const char *sql, sqlite3_stmt **ret)
{
    int rc;

    if (reg->list_sql && strcmp(reg->list_sql, sql) == 0) {
        *ret = reg->list_stmt;
        return 0;
    }
    sqlite3_finalize(reg->list_stmt);
    free(reg->list_sql);
    reg->list_stmt = NULL;
    reg->list_sql = NULL;
    rc = sqlite3_prepare_v3(reg->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &reg->list_stmt, NULL);
    if (rc != SQLITE_OK)
        return reg_fail(reg, rc, "cannot prepare the image list query");
    reg->list_sql = xstrdup(sql);
    *ret = reg->list_stmt;
    return 0;
}

static void list_stmt_done(sqlite3_stmt **st)
{
    if (*st) {
        sqlite3_reset(*st);
        sqlite3_clear_bindings(*st);
    }
}

static int list_locked(struct registry *reg, const struct image_query *q,
                       struct registry_image ***ret, size_t *ret_n, char **ret_next_token)
{
    _cleanup_(list_stmt_done) sqlite3_stmt *st = NULL;
    struct sqlbuf sql = {0};
    struct binds b = {0};
    struct registry_image **list = NULL;
    char after_id[ID_MAX_SIZE] = "";
    int64_t after_date = 0;
    size_t n = 0, cap = 0, limit = 0;
    char *next = NULL;
    int r, rc;

    r = validate_query(q);
    if (r < 0)
        return r;
    if (q->next_token) {
        r = token_parse(q->next_token, &after_date, after_id);
        if (r < 0)
            return r;
    }
    if (q->max_results)
        limit = q->max_results + 1; /* one more: is there a next page? */
    build_query(q, &sql, &b, q->next_token ? &after_date : NULL, after_id, limit);

    r = list_stmt(reg, sql.s, &st);
    free(sql.s);
    if (r < 0) {
        binds_release(&b);
        return r;
    }
    for (size_t i = 0; i < b.n; i++) {
        if (b.text[i])
            sqlite3_bind_text(st, (int)i + 1, b.text[i], -1, SQLITE_STATIC);
        else
            sqlite3_bind_int64(st, (int)i + 1, b.ints[i]);
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (q->max_results && n == q->max_results) {
            next = token_format(list[n - 1]);
            break;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            list = xrealloc(list, cap * sizeof(*list));
        }
        r = read_row(reg, st, &list[n]);
        if (r < 0)
            goto fail;
        n++;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        r = reg_fail(reg, rc, "cannot list images");
        goto fail;
    }
    /* End the read of the main query before the per-image queries. */
    sqlite3_reset(st);
    binds_release(&b);
    b = (struct binds){0};
    for (size_t i = 0; i < n; i++) {
        r = read_children(reg, list[i]);
        if (r < 0)
            goto fail;
    }
    *ret = list ? list : xcalloc(1, sizeof(*list));
    *ret_n = n;
    *ret_next_token = next;
    return 0;

fail:
    binds_release(&b);
    registry_image_list_free(list, n);
    free(next);
    return r;
}

int registry_image_list(struct registry *reg, const struct image_query *q,
                        struct registry_image ***ret, size_t *ret_n, char **ret_next_token)
{
    bool own_tx = !registry_in_transaction(reg);
    struct registry_image **list = NULL;
    char *next = NULL;
    size_t n = 0;
    int r, rc;

    /* One read transaction, so the rows and their devices, permissions
     * and tags come from the same state of the database (WAL snapshot);
     * a read transaction does not block writers. */
    if (own_tx) {
        rc = sqlite3_exec(reg->db, "BEGIN DEFERRED", NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            return reg_fail(reg, rc, "cannot start reading images");
    }
    r = list_locked(reg, q, &list, &n, &next);
    if (own_tx) {
        rc = sqlite3_exec(reg->db, r < 0 ? "ROLLBACK" : "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK && r >= 0) {
            r = reg_fail(reg, rc, "cannot finish reading images");
            registry_image_list_free(list, n);
            free(next);
        }
    }
    if (r < 0)
        return r;
    *ret = list;
    *ret_n = n;
    *ret_next_token = next;
    return 0;
}
