/* The bake driver (driver.h; docs/baking.md, "Running a bake").
 *
 * Design notes:
 *
 * - State is a snapshot.  The build starts at the source image's root
 *   snapshot; each step moves it to the step's layer (a hit of the cache,
 *   or a new snapshot).  The build instance, when one runs, is always at
 *   the current state: its root is captured after each agent step, and it
 *   is terminated before an offline step (an offline edit of a mounted file
 *   system would be a corruption), so the next agent step boots again from
 *   the new state.
 *
 * - Every resource is journaled (intent before creation, tagged
 *   kiln:bake-build in the transaction that creates it).  A layer's
 *   snapshot is released as soon as the layer is in the cache: the cache
 *   owns it from then on (a failed build keeps its finished steps, which is
 *   the point of the cache).  The image is released when it is available.
 *   Everything else (temporary images, build and test instances, scratch
 *   volumes, snapshots the cache does not keep) is undone at the end,
 *   success or failure.
 *
 * - Steps print one line each: "[i/n] name (type, executor) ... status
 *   seconds"; each step's output (shell commands' stdout and stderr, with
 *   every secret masked) goes to its own log file.
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bake/cache-key.h"
#include "bake/distribute.h"
#include "bake/driver.h"
#include "bake/interp.h"
#include "bake/journal.h"
#include "bake/offline.h"
#include "bake/template.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/hash.h"
#include "common/json.h"
#include "common/log.h"
#include "common/util.h"
#include "registry/bake.h"
#include "registry/images.h"
#include "registry/instances.h"
#include "service/instance-types.h"
#include "service/instances.h"
#include "service/service.h"
#include "vm/vm.h"
#include "volume/volume.h"

#define BAKE_AGENT_OP_MS 30000
#define BAKE_LAYER_TAG "kiln:bake-layer"
#define BAKE_DEFAULT_TIMEOUT_S (60 * 60)
#define BAKE_DEFAULT_INSTANCE_TYPE "t3.small"
#define BAKE_AGENT_PROTOCOL "kiln-agent/1"

static double seconds_since(uint64_t t0)
{
    return (double)(now_ns() - t0) / 1e9;
}

/* ---- the undo operations: the service functions ---- */

struct undo_ctx {
    struct region *r;
    struct instance_manager *m;
};

static int undo_image(struct region *r, const char *id)
{
    _cleanup_(registry_image_freep) struct registry_image *img = NULL;
    struct registry_image_update u = {.set = IMAGE_SET_STATE, .state = IMAGE_DEREGISTERED};
    int e = registry_image_get(r->reg, id, &img);

    if (e < 0)
        return e;
    if (img->state == IMAGE_DEREGISTERED)
        return -ENOENT;
    return registry_image_update(r->reg, id, &u);
}

static int undo_one(void *data, enum registry_bake_kind kind, const char *id)
{
    struct undo_ctx *u = data;
    int e;

    switch (kind) {
    case BAKE_KIND_INSTANCE: {
        _cleanup_(registry_instance_freep) struct registry_instance *row = NULL;
        e = registry_instance_get(u->r->reg, id, &row);
        if (e < 0)
            return e;
        if (row->state == INSTANCE_TERMINATED)
            return -ENOENT;
        if (!u->m)
            return error_set(EAGAIN, "instance '%s': no instance manager here to terminate it",
                             id);
        return instance_manager_terminate(u->m, u->r->name, id, true);
    }
    case BAKE_KIND_VOLUME: return service_volume_delete(u->r, id);
    case BAKE_KIND_SNAPSHOT: return service_snapshot_delete(u->r, id);
    case BAKE_KIND_IMAGE: return undo_image(u->r, id);
    }
    return error_set(EINVAL, "unknown resource kind %d", (int)kind);
}

static int lookup_tagged(void *data, enum registry_bake_kind kind, const char *build_id,
                         char ***ret, size_t *ret_n)
{
    struct undo_ctx *u = data;

    return registry_tag_find(u->r->reg, BAKE_BUILD_TAG, build_id, registry_bake_kind_prefix(kind),
                             ret, ret_n);
}

static struct bake_undo_ops undo_ops(struct undo_ctx *u)
{
    return (struct bake_undo_ops){.undo = undo_one, .lookup = lookup_tagged, .data = u};
}

int bake_janitor(struct region *r, struct instance_manager *m, struct bake_janitor_report *ret)
{
    struct undo_ctx u = {.r = r, .m = m};
    struct bake_undo_ops ops = undo_ops(&u);

    return bake_janitor_run(r->reg, &ops, ret);
}

enum instance_recovery bake_instance_recovery(struct region *r, const struct registry_instance *row,
                                              void *ud)
{
    struct registry_tag *tags = NULL;
    size_t n = 0;
    enum instance_recovery policy = INSTANCE_RECOVER_RESTART;

    (void)ud;
    if (registry_tag_list(r->reg, row->id, &tags, &n) < 0) {
        error_clear();
        return policy;
    }
    for (size_t i = 0; i < n; i++) {
        struct registry_bake_build b;
        struct bake_process p;

        if (strcmp(tags[i].key, BAKE_BUILD_TAG) != 0)
            continue;
        policy = INSTANCE_RECOVER_STOP; /* a bake's: never started again */
        if (registry_bake_build_get(r->reg, tags[i].value, &b) < 0) {
            error_clear();
            break;
        }
        p.pid = b.pid;
        p.start_time = b.start_time;
        snprintf(p.boot_id, sizeof(p.boot_id), "%s", b.boot_id);
        if ((b.state == BAKE_BUILD_RUNNING && bake_process_alive(&p) != 0))
            policy = INSTANCE_RECOVER_SKIP;
        error_clear();
        break;
    }
    registry_tag_list_free(tags, n);
    return policy;
}

/* The bake's own manager skips every instance it did not launch. */
static enum instance_recovery skip_all(struct region *r, const struct registry_instance *row,
                                       void *ud)
{
    (void)r, (void)row, (void)ud;
    return INSTANCE_RECOVER_SKIP;
}

/* ---- the build ---- */

struct build {
    const struct bake_options *o;
    struct bake_template *t;
    struct bake_interp *ip;
    struct region *r;
    struct instance_manager *m;
    struct undo_ctx undo;
    char owner[ACCOUNT_ID_SIZE];
    char id[ID_MAX_SIZE];
    bool begun;
    char *base_dir; /* the template's directory: input files are relative to it */
    char *log_dir;
    struct bake_cache_secret secret;
    bool use_cache;

    struct registry_image *source; /* the source image */
    const struct registry_image_device *source_root;
    uint32_t root_gib; /* the build's root volume size */
    const char *instance_type;
    uint64_t deadline_ns; /* the build's timeout */

    /* the state */
    char snap[ID_MAX_SIZE];       /* the current snapshot */
    uint32_t snap_seq;            /* its journal entry when not released (0: none) */
    struct digest key;            /* its cache key */
    struct digest check_key;      /* the key after the validate steps */
    bool defer_validate;          /* the validate steps run in the tests' instance */
    char instance[ID_MAX_SIZE];   /* the build instance at the state, "" when none */
    struct agent_client *agent;   /* connected to it */
    unsigned n_run;               /* steps that ran (not cached) */
    struct volume_snapshot_stats last_stats; /* of the last step's snapshot */
    unsigned version_number;      /* this build's number among the template's images */

    struct bake_result *res;
    struct bake_tag_list {
        struct registry_tag *items;
        size_t n;
    } build_tags; /* kiln:bake-build = id */
};

static void out(struct build *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(struct build *b, const char *fmt, ...)
{
    _cleanup_free_ char *line = NULL, *masked = NULL;
    va_list ap;

    if (!b->o->out)
        return;
    va_start(ap, fmt);
    if (vasprintf(&line, fmt, ap) < 0)
        line = NULL;
    va_end(ap);
    if (!line)
        return;
    masked = b->ip ? bake_interp_mask(b->ip, line) : xstrdup(line);
    fputs(masked, b->o->out);
    fflush(b->o->out);
}

static bool cancelled(struct build *b)
{
    struct bake_cancel *c = b->o->cancel;
    bool yes;

    if (!c)
        return false;
    pthread_mutex_lock(&c->lock);
    yes = c->requested;
    pthread_mutex_unlock(&c->lock);
    return yes;
}

static bool timed_out(struct build *b)
{
    return now_ns() > b->deadline_ns || cancelled(b);
}

/* The error of a step stopped by the timeout or a cancel. */
static int stop_error(struct build *b, const struct bake_step *s)
{
    if (cancelled(b))
        return error_set(ECANCELED, "%s (%s): the bake was cancelled", s->place, s->name);
    return error_set(ETIMEDOUT, "%s (%s): the build's timeout passed", s->place, s->name);
}

void bake_cancel(struct bake_cancel *c, const char *region)
{
    struct instance_manager *m = instance_manager_get();
    char id[ID_MAX_SIZE];

    pthread_mutex_lock(&c->lock);
    c->requested = true;
    snprintf(id, sizeof(id), "%s", c->build_id);
    pthread_mutex_unlock(&c->lock);
    if (!id[0] || !m)
        return;
    /* the build VMs' QEMU: a step waiting on its guest fails at once */
    _cleanup_free_ char *dir = instance_manager_dir(m, region, "");
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/')
        dir[--len] = '\0';
    DIR *d = opendir(dir);
    struct dirent *de;
    if (!d)
        return;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "i-", 2) != 0)
            continue;
        _cleanup_free_ char *idir = xasprintf("%s/%s", dir, de->d_name);
        _cleanup_free_ char *tagf = xasprintf("%s/bake-build", idir);
        _cleanup_fclose_ FILE *f = fopen(tagf, "re");
        char who[ID_MAX_SIZE] = "";
        if (f && fgets(who, sizeof(who), f) && strcmp(who, id) == 0)
            instance_kill_qemu(de->d_name, idir);
    }
    closedir(d);
}

/* Milliseconds left for an operation limited to step_s (0: the build's). */
static int budget_ms(struct build *b, uint64_t step_s)
{
    uint64_t now = now_ns(), left = b->deadline_ns > now ? (b->deadline_ns - now) / 1000000 : 0;

    if (step_s && step_s * 1000 < left)
        left = step_s * 1000;
    return left > INT_MAX ? INT_MAX : (int)left;
}

/* ---- the journal, around each creation ---- */

static int intent(struct build *b, enum registry_bake_kind kind, uint32_t *seq)
{
    return bake_journal_intent(b->r->reg, b->id, kind, seq);
}

static int created(struct build *b, uint32_t seq, const char *id)
{
    return bake_journal_created(b->r->reg, b->id, seq, id);
}

/* ---- source ---- */

static int resolve_owner(struct build *b, const char *name, char ret[ACCOUNT_ID_SIZE])
{
    if (strcmp(name, "self") == 0) {
        snprintf(ret, ACCOUNT_ID_SIZE, "%s", b->owner);
        return 0;
    }
    if (strcmp(name, SERVICE_PROVIDER_ACCOUNT) == 0 || strcmp(name, "amazon") == 0)
        return service_provider_account(b->o->data_dir, ret);
    if (strlen(name) == ACCOUNT_ID_SIZE - 1 && strspn(name, "0123456789") == ACCOUNT_ID_SIZE - 1) {
        snprintf(ret, ACCOUNT_ID_SIZE, "%s", name);
        return 0;
    }
    return error_set(EINVAL,
                     "source.image_filter.owners: '%s' is not an account id, 'self' or '%s'",
                     name, SERVICE_PROVIDER_ACCOUNT);
}

static bool visible(const struct build *b, const struct registry_image *img)
{
    if (strcmp(img->owner, b->owner) == 0 || img->is_public)
        return true;
    for (size_t i = 0; i < img->n_permissions; i++)
        if (img->permissions[i].kind == REGISTRY_PERMISSION_USER &&
            strcmp(img->permissions[i].value, b->owner) == 0)
            return true;
    return false;
}

/* The post-filters registry_image_list() does not do. */
static bool attr_match(const struct registry_image *img, const char *name, const char *v)
{
    const char *have = strcmp(name, "architecture") == 0          ? img->architecture
                       : strcmp(name, "root-device-type") == 0    ? img->root_device_type
                       : strcmp(name, "virtualization-type") == 0 ? img->virtualization_type
                       : strcmp(name, "boot-mode") == 0           ? img->boot_mode
                                                                  : NULL;
    return have && strcmp(have, v) == 0;
}

static int find_source_by_filter(struct build *b, struct registry_image **ret)
{
    const struct bake_source *s = &b->t->source;
    size_t n_owners = s->owners.n;
    char(*owners)[ACCOUNT_ID_SIZE] = xcalloc(n_owners ? n_owners : 1, sizeof(*owners));
    const char **owner_ptrs = xcalloc(n_owners ? n_owners : 1, sizeof(char *));
    const char **names = NULL, **ids = NULL;
    size_t n_names = 0, n_ids = 0, n_tags = 0;
    struct image_tag_filter *tags = xcalloc(s->n_filters ? s->n_filters : 1, sizeof(*tags));
    enum image_state states[8];
    size_t n_states = 0;
    struct registry_image **list = NULL;
    size_t n = 0;
    char *next = NULL;
    int e = 0;

    for (size_t i = 0; i < n_owners && e >= 0; i++) {
        e = resolve_owner(b, s->owners.items[i], owners[i]);
        owner_ptrs[i] = owners[i];
    }
    for (size_t i = 0; i < s->n_filters && e >= 0; i++) {
        const struct bake_filter *f = &s->filters[i];
        if (strcmp(f->name, "name") == 0) {
            names = (const char **)f->values.items;
            n_names = f->values.n;
        } else if (strcmp(f->name, "image-id") == 0) {
            ids = (const char **)f->values.items;
            n_ids = f->values.n;
        } else if (strcmp(f->name, "state") == 0) {
            for (size_t k = 0; k < f->values.n && e >= 0; k++) {
                if (n_states == ARRAY_SIZE(states))
                    e = error_set(EINVAL, "source.image_filter.filters.state: too many values");
                else if (image_state_from_string(f->values.items[k], &states[n_states++]) < 0)
                    e = error_set(EINVAL, "source.image_filter.filters.state: unknown state '%s'",
                                  f->values.items[k]);
            }
        } else if (strncmp(f->name, "tag:", 4) == 0 && f->name[4]) {
            tags[n_tags++] = (struct image_tag_filter){
                .key = f->name + 4, .values = (const char *const *)f->values.items,
                .n_values = f->values.n};
        } else if (strcmp(f->name, "architecture") != 0 &&
                   strcmp(f->name, "root-device-type") != 0 &&
                   strcmp(f->name, "virtualization-type") != 0 &&
                   strcmp(f->name, "boot-mode") != 0) {
            e = error_set(EINVAL,
                          "source.image_filter.filters.%s: kiln does not filter images on '%s' "
                          "(name, image-id, state, tag:KEY, architecture, root-device-type, "
                          "virtualization-type, boot-mode)",
                          f->name, f->name);
        }
    }
    if (n_states == 0)
        states[n_states++] = IMAGE_AVAILABLE;
    if (e >= 0) {
        struct image_query q = {
            .ids = ids, .n_ids = n_ids,
            .owners = owner_ptrs, .n_owners = n_owners,
            .names = names, .n_names = n_names,
            .states = states, .n_states = n_states,
            .tags = tags, .n_tags = n_tags,
            .caller = b->owner,
        };
        e = registry_image_list(b->r->reg, &q, &list, &n, &next);
    }
    struct registry_image *best = NULL;
    size_t matches = 0;
    for (size_t i = 0; i < n && e >= 0; i++) {
        bool ok = visible(b, list[i]);
        for (size_t k = 0; k < s->n_filters && ok; k++) {
            const struct bake_filter *f = &s->filters[k];
            if (strcmp(f->name, "architecture") && strcmp(f->name, "root-device-type") &&
                strcmp(f->name, "virtualization-type") && strcmp(f->name, "boot-mode"))
                continue;
            bool any = false;
            for (size_t v = 0; v < f->values.n; v++)
                any = any || attr_match(list[i], f->name, f->values.items[v]);
            ok = any;
        }
        if (!ok)
            continue;
        matches++;
        /* the list is ordered by creation date, then id: the last is the newest */
        best = list[i];
    }
    if (e >= 0 && matches == 0)
        e = error_set(ENOENT, "source.image_filter: no image matches in region '%s'", b->r->name);
    if (e >= 0 && matches > 1 && !s->most_recent)
        e = error_set(EINVAL,
                      "source.image_filter: %zu images match in region '%s'; set most_recent "
                      "or narrow the filters",
                      matches, b->r->name);
    if (e >= 0)
        e = registry_image_get(b->r->reg, best->id, ret);
    registry_image_list_free(list, n);
    free(next);
    free(tags);
    free(owner_ptrs);
    free(owners);
    return e;
}

static int resolve_source(struct build *b)
{
    const struct bake_source *s = &b->t->source;
    int e;

    if (s->image_id) {
        if (!id_is_valid("ami", s->image_id))
            return error_set(EINVAL, "source.image_id: '%s' is not an image id", s->image_id);
        e = registry_image_get(b->r->reg, s->image_id, &b->source);
        if (e == -ENOENT || (e >= 0 && !visible(b, b->source)))
            return error_set(ENOENT, "source.image_id: image '%s' does not exist in region '%s'",
                             s->image_id, b->r->name);
        if (e < 0)
            return e;
        if (b->source->state != IMAGE_AVAILABLE)
            return error_set(EINVAL, "source.image_id: image '%s' is %s, not available",
                             s->image_id, image_state_to_string(b->source->state));
    } else {
        e = find_source_by_filter(b, &b->source);
        if (e < 0)
            return e;
    }
    for (size_t i = 0; i < b->source->n_devices; i++)
        if (strcmp(b->source->devices[i].device_name, b->source->root_device_name) == 0)
            b->source_root = &b->source->devices[i];
    if (!b->source_root || !b->source_root->snapshot_id[0])
        return error_set(EINVAL, "source image '%s' has no root snapshot", b->source->id);
    return 0;
}

/* ---- instances and the agent ---- */

static void agent_drop(struct build *b)
{
    agent_client_free(b->agent);
    b->agent = NULL;
}

static int console_tail(struct build *b, const char *instance_id, char *buf, size_t size)
{
    _cleanup_free_ char *dir = instance_manager_dir(b->m, b->r->name, instance_id);
    _cleanup_free_ char *path = xasprintf("%s/console.log", dir);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    ssize_t n;

    buf[0] = '\0';
    if (fd < 0 || fstat(fd, &st) < 0)
        return -1;
    off_t off = st.st_size > (off_t)size - 1 ? st.st_size - (off_t)size + 1 : 0;
    n = pread(fd, buf, size - 1, off);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return 0;
}

/* Wait for the agent of instance `id` to answer its hello. */
static int agent_wait(struct build *b, const char *id, int timeout_ms, struct agent_client **ret)
{
    _cleanup_free_ char *dir = instance_manager_dir(b->m, b->r->name, id);
    _cleanup_free_ char *sock = xasprintf("%s/agent.sock", dir);
    uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000;
    int e = -ETIMEDOUT;

    while (now_ns() < end) {
        _cleanup_(registry_instance_freep) struct registry_instance *row = NULL;

        if (cancelled(b))
            return error_set(ECANCELED, "instance '%s': the bake was cancelled", id);

        e = registry_instance_get(b->r->reg, id, &row);
        if (e < 0)
            return e;
        if (row->state != INSTANCE_PENDING && row->state != INSTANCE_RUNNING) {
            char tail[2048];
            console_tail(b, id, tail, sizeof(tail));
            return error_set(EIO, "instance '%s' is %s (%s) before its agent answered; console:\n%s",
                             id, instance_state_to_string(row->state), row->reason_message, tail);
        }
        if (access(sock, F_OK) == 0) {
            uint64_t left = (end - now_ns()) / 1000000;
            e = agent_client_connect(sock, left > 5000 ? 5000 : (int)left + 1, ret, NULL);
            if (e >= 0)
                return 0;
            error_clear();
        } else {
            struct timespec ts = {0, 200 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return error_set(ETIMEDOUT, "the agent of instance '%s' did not answer within %d s", id,
                     timeout_ms / 1000);
}

/* The agent answers early in a boot; steps and tests want the machine
 * up (its network, its services), as a Packer build waits for SSH: with
 * systemd, until the boot's jobs are done (`systemctl is-system-running
 * --wait`: running, or degraded when a unit failed, which is the image's
 * business); without it, at once. */
static int boot_wait(struct build *b, const char *id, struct agent_client *a, int timeout_ms)
{
    char *argv[] = {(char *)"/bin/sh", (char *)"-c",
                    (char *)"command -v systemctl >/dev/null 2>&1 || exit 0; "
                            "systemctl is-system-running --wait; exit 0",
                    NULL};
    struct agent_exec_result res = {0};
    uint64_t t0 = now_ns();
    int e = agent_client_exec(a, argv, NULL, 0, timeout_ms, &res);

    if (e < 0)
        return bake_error_prefix(e, "instance '%s': waiting for its boot to finish", id);
    if (res.out_len)
        log_debug("instance %s booted (%.*s) after %.1fs more", id, (int)strcspn(res.out, "\n"),
                  res.out, seconds_since(t0));
    agent_exec_result_release(&res);
    (void)b;
    return 0;
}

/* Register an image mapping snapshot `snap` as the root device of the
 * source's layout: the build's temporary images and its output. */
static int register_image(struct build *b, const char *name, const char *description,
                          const char *snap, enum image_state state,
                          const struct registry_tag *extra, size_t n_extra, uint32_t *ret_seq,
                          char ret_id[ID_MAX_SIZE])
{
    const struct registry_image *src = b->source;
    struct registry_image_device dev = {
        .device_name = src->root_device_name,
        .volume_size_gib = b->root_gib,
        .volume_type = (char *)"gp3",
        .delete_on_termination = true,
    };
    struct registry_image img = {
        .name = (char *)name,
        .description = (char *)description,
        .architecture = src->architecture,
        .boot_mode = src->boot_mode,
        .root_device_name = src->root_device_name,
        .root_device_type = (char *)"ebs",
        .virtualization_type = src->virtualization_type,
        .ena_support = src->ena_support,
        .sriov_net_support = src->sriov_net_support,
        .imds_support = src->imds_support,
        .tpm_support = src->tpm_support,
        .state = state,
        .devices = &dev,
        .n_devices = 1,
        .creation_date = wall_clock_ms(),
    };
    size_t n_tags = b->build_tags.n + n_extra;
    _cleanup_free_ struct registry_tag *tags = xcalloc(n_tags, sizeof(*tags));
    uint32_t seq;
    int e;

    memcpy(tags, b->build_tags.items, b->build_tags.n * sizeof(*tags));
    if (n_extra)
        memcpy(tags + b->build_tags.n, extra, n_extra * sizeof(*tags));
    snprintf(img.owner, sizeof(img.owner), "%s", b->owner);
    snprintf(dev.snapshot_id, sizeof(dev.snapshot_id), "%s", snap);
    e = id_generate("ami", img.id, sizeof(img.id));
    if (e < 0)
        return e;
    e = intent(b, BAKE_KIND_IMAGE, &seq);
    if (e < 0)
        return e;
    e = registry_image_insert(b->r->reg, &img, tags, n_tags);
    if (e < 0)
        return e;
    e = created(b, seq, img.id);
    if (e < 0)
        return e;
    if (ret_seq)
        *ret_seq = seq;
    memcpy(ret_id, img.id, ID_MAX_SIZE);
    return 0;
}

/* Launch an instance of image `image_id` (which may be pending) and wait
 * for its agent. */
static int launch(struct build *b, const char *image_id, const char *instance_type,
                  const char *role, int timeout_ms, char ret_id[ID_MAX_SIZE],
                  struct agent_client **ret_agent)
{
    _cleanup_free_ char *name = xasprintf("kiln bake %s %s", b->id, role);
    /* the build VM reaches the network (apt-get); the tests' VM does not */
    bool egress = strcmp(role, "build") == 0;
    struct registry_tag itags[3] = {b->build_tags.items[0], {(char *)"Name", name},
                                    {(char *)INSTANCE_TAG_EGRESS, (char *)"true"}};
    struct instance_launch l = {
        .owner = b->owner,
        .image_id = image_id,
        .instance_type = instance_type,
        .http_endpoint_enabled = true,
        .http_hop_limit = 1,
        .root_size_gib = b->root_gib,
        .root_delete_on_termination = 1,
        .instance_tags = itags,
        .n_instance_tags = egress ? 3 : 2,
        .volume_tags = b->build_tags.items,
        .n_volume_tags = b->build_tags.n,
        .min_count = 1,
        .max_count = 1,
        .allow_pending = true,
    };
    char reservation[ID_MAX_SIZE];
    char(*ids)[ID_MAX_SIZE] = NULL;
    size_t n = 0;
    uint32_t seq;
    int e;

    e = intent(b, BAKE_KIND_INSTANCE, &seq);
    if (e < 0)
        return e;
    e = instance_manager_launch(b->m, b->r->name, &l, reservation, &ids, &n);
    if (e < 0)
        return e;
    memcpy(ret_id, ids[0], ID_MAX_SIZE);
    free(ids);
    e = created(b, seq, ret_id);
    if (e < 0)
        return e;
    {
        /* for bake_cancel(), which must not touch the registry from its
         * thread: which build the instance serves */
        _cleanup_free_ char *dir = instance_manager_dir(b->m, b->r->name, ret_id);
        _cleanup_free_ char *path = xasprintf("%s/bake-build", dir);
        _cleanup_fclose_ FILE *f = (mkdir_p(dir), fopen(path, "we"));
        if (f)
            fputs(b->id, f);
    }
    b->res->instances_launched++;
    e = agent_wait(b, ret_id, timeout_ms, ret_agent);
    if (e < 0)
        return e;
    return boot_wait(b, ret_id, *ret_agent, timeout_ms);
}

static int terminate_build_instance(struct build *b)
{
    int e = 0;

    agent_drop(b);
    if (b->instance[0]) {
        e = instance_manager_terminate(b->m, b->r->name, b->instance, true);
        b->instance[0] = '\0';
    }
    return e;
}

/* A build instance at the current state. */
static int ensure_instance(struct build *b, uint64_t step_timeout_s)
{
    char image[ID_MAX_SIZE];
    int e;

    if (b->instance[0] && b->agent)
        return 0;
    if (b->instance[0])
        terminate_build_instance(b);
    if (strcmp(b->snap, b->source_root->snapshot_id) == 0 && b->root_gib == 0) {
        snprintf(image, sizeof(image), "%s", b->source->id);
    } else {
        _cleanup_free_ char *name = xasprintf("kiln-bake %s %s", b->id, b->snap);
        e = register_image(b, name, "a bake's build state (temporary)", b->snap, IMAGE_PENDING,
                           NULL, 0, NULL, image);
        if (e < 0)
            return e;
    }
    e = launch(b, image, b->instance_type, "build", budget_ms(b, step_timeout_s), b->instance,
               &b->agent);
    if (e < 0)
        return bake_error_prefix(e, "build instance");
    return 0;
}

/* ---- shell steps ---- */

static int read_host_file(const char *path, char **ret, size_t *ret_len)
{
    return read_file_all(path, 64u << 20, ret, ret_len);
}

static char *host_path(struct build *b, const char *rel)
{
    return rel[0] == '/' ? xstrdup(rel) : xasprintf("%s/%s", b->base_dir, rel);
}

/* Append `s` single-quoted for sh. */
static void sh_quote(char **buf, const char *s)
{
    size_t len = strlen(*buf);
    size_t need = len + 3 + 4 * strlen(s) + 1;
    char *p;

    *buf = xrealloc(*buf, need);
    p = *buf + len;
    *p++ = '\'';
    for (; *s; s++) {
        if (*s == '\'') {
            memcpy(p, "'\\''", 4);
            p += 4;
        } else {
            *p++ = *s;
        }
    }
    *p++ = '\'';
    *p = '\0';
}

static void append(char **buf, const char *s)
{
    char *n = xasprintf("%s%s", *buf, s);
    free(*buf);
    *buf = n;
}

static void log_write(struct build *b, FILE *log, const char *text, size_t len)
{
    if (!log || len == 0)
        return;
    _cleanup_free_ char *copy = xmalloc(len + 1);
    memcpy(copy, text, len);
    copy[len] = '\0';
    /* a NUL inside stops the masking copy: the log keeps what precedes it */
    _cleanup_free_ char *masked = bake_interp_mask(b->ip, copy);
    fputs(masked, log);
    fflush(log);
}

/* The last lines of a command's output, masked, for the error message. */
static char *tail_lines(struct build *b, const char *text, size_t len, int lines)
{
    size_t i = len;
    int seen = 0;

    while (i > 0 && (text[i - 1] == '\n'))
        i--;
    size_t end = i;
    while (i > 0) {
        if (text[i - 1] == '\n' && ++seen == lines)
            break;
        i--;
    }
    _cleanup_free_ char *copy = xmalloc(end - i + 1);
    memcpy(copy, text + i, end - i);
    copy[end - i] = '\0';
    return bake_interp_mask(b->ip, copy);
}

/* Run one script in the guest: put it in /tmp, run it with the step's
 * environment, log its output.  Returns 0, or -EIO naming the exit status. */
static int run_script(struct build *b, struct agent_client *a, const struct bake_step *s,
                      const char *label, const char *script, size_t len, FILE *log,
                      unsigned index)
{
    _cleanup_free_ char *path = xasprintf("/tmp/kiln-bake-%s-%u", b->id, index);
    _cleanup_free_ char *cmd = xstrdup("");
    struct agent_exec_result res = {0};
    int e;

    e = agent_client_put(a, path, 0700, script, len, false, BAKE_AGENT_OP_MS);
    if (e < 0)
        return bake_error_prefix(e, "%s: cannot put the script in the guest", s->place);
    for (size_t i = 0; i < s->env.n; i++) {
        append(&cmd, "export ");
        append(&cmd, s->env.items[i].key);
        append(&cmd, "=");
        sh_quote(&cmd, s->env.items[i].value);
        append(&cmd, "; ");
    }
    /* a script with its own interpreter line runs with it; others with sh -e */
    append(&cmd, len > 2 && script[0] == '#' && script[1] == '!' ? "exec " : "exec /bin/sh -e ");
    sh_quote(&cmd, path);
    char *argv[] = {(char *)"/bin/sh", (char *)"-c", cmd, NULL};
    if (log)
        fprintf(log, "--- %s\n", label);
    e = agent_client_exec(a, argv, NULL, 0, budget_ms(b, s->timeout_s), &res);
    if (e < 0)
        return bake_error_prefix(e, "%s (%s): %s", s->place, s->name, label);
    log_write(b, log, res.out, res.out_len);
    log_write(b, log, res.err, res.err_len);
    if (res.signaled || res.code != 0) {
        _cleanup_free_ char *tail = tail_lines(b, res.err_len ? res.err : res.out,
                                               res.err_len ? res.err_len : res.out_len, 5);
        e = error_set(EIO, "%s (%s): %s %s %d%s%s", s->place, s->name, label,
                      res.signaled ? "killed by signal" : "exited with status", res.code,
                      tail[0] ? "; last output:\n" : "", tail);
    }
    agent_exec_result_release(&res);
    if (e == 0) {
        char *rm[] = {(char *)"/bin/rm", (char *)"-f", path, NULL};
        struct agent_exec_result r2 = {0};
        if (agent_client_exec(a, rm, NULL, 0, BAKE_AGENT_OP_MS, &r2) >= 0)
            agent_exec_result_release(&r2);
        error_clear();
    }
    return e;
}

static int run_shell(struct build *b, struct agent_client *a, const struct bake_step *s, FILE *log)
{
    int e = 0;

    if (s->inline_cmds.n) {
        _cleanup_free_ char *script = xstrdup("");
        for (size_t i = 0; i < s->inline_cmds.n; i++) {
            append(&script, s->inline_cmds.items[i]);
            append(&script, "\n");
        }
        return run_script(b, a, s, "inline", script, strlen(script), log, 0);
    }
    const char *one[] = {s->script};
    const char *const *list = s->script ? one : (const char *const *)s->scripts.items;
    size_t n = s->script ? 1 : s->scripts.n;
    for (size_t i = 0; i < n && e >= 0; i++) {
        _cleanup_free_ char *p = host_path(b, list[i]), *text = NULL;
        size_t len;
        e = read_host_file(p, &text, &len);
        if (e < 0)
            return bake_error_prefix(e, "%s", s->place);
        e = run_script(b, a, s, list[i], text, len, log, (unsigned)i);
    }
    return e;
}

/* A reboot through the agent: wait for it to go, then for its hello. */
static int run_reboot(struct build *b, const struct bake_step *s)
{
    int e = agent_client_shutdown(b->agent, true, BAKE_AGENT_OP_MS);

    agent_drop(b);
    if (e < 0)
        return bake_error_prefix(e, "%s: reboot", s->place);
    /* the agent answers until the guest goes down */
    for (int i = 0; i < 120; i++) {
        _cleanup_free_ char *dir = instance_manager_dir(b->m, b->r->name, b->instance);
        _cleanup_free_ char *sock = xasprintf("%s/agent.sock", dir);
        struct agent_client *a = NULL;
        if (agent_client_connect(sock, 1000, &a, NULL) < 0) {
            error_clear();
            break;
        }
        agent_client_free(a);
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
    }
    e = agent_wait(b, b->instance, budget_ms(b, s->timeout_s), &b->agent);
    return e < 0 ? bake_error_prefix(e, "%s: after the reboot", s->place) : 0;
}

/* Agent steps in the test phase may also put files. */
static int put_file(struct build *b, struct agent_client *a, const struct bake_step *s)
{
    _cleanup_free_ char *text = NULL;
    size_t len;
    int e;

    if (s->content) {
        text = xstrdup(s->content);
        len = strlen(text);
    } else {
        _cleanup_free_ char *p = host_path(b, s->source);
        e = read_host_file(p, &text, &len);
        if (e < 0)
            return bake_error_prefix(e, "%s", s->place);
    }
    e = agent_client_put(a, s->destination, s->mode >= 0 ? (unsigned)s->mode : 0644, text, len,
                         true, BAKE_AGENT_OP_MS);
    return e < 0 ? bake_error_prefix(e, "%s: %s", s->place, s->destination) : 0;
}

/* ---- offline steps ---- */

static int offline_step(struct offline *off, struct build *b, const struct bake_step *s)
{
    struct offline_attr a = {.mode = s->mode, .uid = s->uid, .gid = s->gid};
    unsigned flags = s->mkdirs ? OFFLINE_MKDIRS : 0;
    int e = 0;

    switch (s->type) {
    case BAKE_STEP_FILE:
        if (s->content) {
            e = offline_file_write(off, s->destination, s->content, strlen(s->content), &a, flags);
        } else {
            _cleanup_free_ char *p = host_path(b, s->source);
            e = offline_copy(off, p, s->destination, &a, flags);
        }
        break;
    case BAKE_STEP_MKDIR: e = offline_mkdir(off, s->path, &a, OFFLINE_MKDIRS); break;
    case BAKE_STEP_DELETE:
        e = offline_delete(off, s->path, s->recursive ? OFFLINE_RECURSIVE : 0);
        break;
    case BAKE_STEP_SYMLINK: e = offline_symlink(off, s->target, s->link, OFFLINE_MKDIRS); break;
    case BAKE_STEP_APPEND_LINE: e = offline_append_line(off, s->path, s->line, &a, flags); break;
    case BAKE_STEP_SYSTEMD:
        for (size_t i = 0; i < s->enable.n && e >= 0; i++)
            e = offline_systemd(off, OFFLINE_SYSTEMD_ENABLE, s->enable.items[i]);
        for (size_t i = 0; i < s->disable.n && e >= 0; i++)
            e = offline_systemd(off, OFFLINE_SYSTEMD_DISABLE, s->disable.items[i]);
        for (size_t i = 0; i < s->mask.n && e >= 0; i++)
            e = offline_systemd(off, OFFLINE_SYSTEMD_MASK, s->mask.items[i]);
        break;
    default: e = error_set(EINVAL, "a %s step cannot run offline", bake_step_type_name(s->type));
    }
    return e < 0 ? bake_error_prefix(e, "%s (%s)", s->place, s->name) : 0;
}

static void snapshot_tags(struct build *b, const struct digest *key, char hex[DIGEST_HEX_SIZE],
                          struct registry_tag tags[2])
{
    digest_to_hex(key, hex);
    tags[0] = b->build_tags.items[0];
    tags[1] = (struct registry_tag){(char *)BAKE_LAYER_TAG, hex};
}

/* Run file-level step s on a volume made from the current state, and
 * snapshot it. */
static int run_offline(struct build *b, const struct bake_step *s, const struct digest *key,
                       char ret_snap[ID_MAX_SIZE], uint32_t *ret_seq)
{
    char vol[ID_MAX_SIZE], hex[DIGEST_HEX_SIZE];
    struct registry_tag tags[2];
    uint32_t vseq;
    int e, e2;

    /* a mounted file system is not edited behind its kernel's back */
    e = terminate_build_instance(b);
    if (e < 0)
        return e;
    snapshot_tags(b, key, hex, tags);
    struct service_volume_create_options vo = {
        .owner = b->owner, .snapshot_id = b->snap, .size_gib = b->root_gib,
        .tags = b->build_tags.items, .n_tags = b->build_tags.n,
    };
    e = intent(b, BAKE_KIND_VOLUME, &vseq);
    if (e < 0)
        return e;
    e = service_volume_create(b->r, &vo, vol);
    if (e < 0)
        return e;
    e = created(b, vseq, vol);
    if (e < 0)
        return e;
    {
        _cleanup_(volume_closep) struct volume *v = NULL;
        struct offline *off = NULL;
        e = service_volume_open(b->r, vol, VOLUME_OPEN_CREATE, &v);
        if (e >= 0)
            e = offline_open_volume(v, vol, &off);
        if (e >= 0) {
            e = offline_step(off, b, s);
            if (e >= 0)
                e = offline_close(off);
            else
                offline_discard(off);
        }
        if (v) {
            e2 = volume_close(v);
            v = NULL;
            if (e >= 0 && e2 < 0)
                e = e2;
        }
    }
    if (e >= 0) {
        struct service_volume_snapshot_options so = {
            .owner = b->owner, .description = s->name, .tags = tags, .n_tags = 2};
        e = intent(b, BAKE_KIND_SNAPSHOT, ret_seq);
        if (e >= 0)
            e = service_volume_snapshot(b->r, vol, &so, ret_snap, &b->last_stats);
        if (e >= 0)
            e = created(b, *ret_seq, ret_snap);
    }
    e2 = service_volume_delete(b->r, vol); /* the journal entry's undo finds it gone */
    if (e2 < 0)
        error_clear();
    return e;
}

/* ---- capture of the build instance ---- */

struct capture {
    const struct service_volume_snapshot_options *o;
    char *snap;
    struct volume_snapshot_stats *stats;
};

static int capture_hook(const struct instance_view *iv, void *ud)
{
    struct capture *c = ud;
    _cleanup_(agent_client_freep) struct agent_client *a = NULL;
    bool frozen = false;
    int e;

    if (!iv->root)
        return error_set(EIO, "the build instance stopped before its capture");
    if (iv->agent_socket && agent_client_connect(iv->agent_socket, 5000, &a, NULL) >= 0) {
        if (agent_client_sync(a, BAKE_AGENT_OP_MS) >= 0 &&
            agent_client_freeze(a, "/", true, BAKE_AGENT_OP_MS) >= 0)
            frozen = true;
    }
    error_clear();
    e = service_volume_snapshot_open(iv->region, iv->root, iv->root_volume_id, c->o, c->snap,
                                     c->stats);
    if (frozen && agent_client_freeze(a, "/", false, BAKE_AGENT_OP_MS) < 0 && e >= 0)
        e = bake_error_prefix(-EIO, "cannot thaw the build instance's /");
    return e;
}

static int capture_instance(struct build *b, const struct bake_step *s, const struct digest *key,
                            char ret_snap[ID_MAX_SIZE], uint32_t *ret_seq)
{
    char hex[DIGEST_HEX_SIZE];
    struct registry_tag tags[2];
    int e;

    snapshot_tags(b, key, hex, tags);
    struct service_volume_snapshot_options so = {
        .owner = b->owner, .description = s->name, .tags = tags, .n_tags = 2};
    struct capture c = {.o = &so, .snap = ret_snap, .stats = &b->last_stats};
    /* the hook's agent connection is its own: close ours meanwhile */
    agent_drop(b);
    e = intent(b, BAKE_KIND_SNAPSHOT, ret_seq);
    if (e >= 0)
        e = instance_manager_with_instance(b->m, b->r->name, b->instance, capture_hook, &c);
    if (e >= 0)
        e = created(b, *ret_seq, ret_snap);
    if (e >= 0) {
        _cleanup_free_ char *dir = instance_manager_dir(b->m, b->r->name, b->instance);
        _cleanup_free_ char *sock = xasprintf("%s/agent.sock", dir);
        e = agent_client_connect(sock, 10000, &b->agent, NULL);
    }
    return e;
}

/* ---- cache keys ---- */

/* A step as the value tree the cache key hashes. */
struct tree {
    struct bake_value *items;
    const char **keys;
    size_t n, cap;
};

static void tree_add(struct tree *t, const char *key, struct bake_value v)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 32;
        t->items = xrealloc(t->items, t->cap * sizeof(*t->items));
        t->keys = xrealloc(t->keys, t->cap * sizeof(*t->keys));
    }
    t->items[t->n] = v;
    t->keys[t->n] = key;
    t->n++;
}

static struct bake_value str_value(struct build *b, const char *s)
{
    _cleanup_free_ char *m = bake_interp_mask(b->ip, s);
    return (struct bake_value){.type = BAKE_VALUE_STRING, .string = s, .len = strlen(s),
                               .sensitive = strcmp(m, s) != 0};
}

static void tree_str(struct build *b, struct tree *t, const char *key, const char *s)
{
    if (s)
        tree_add(t, key, str_value(b, s));
}

static void tree_int(struct tree *t, const char *key, int64_t v)
{
    tree_add(t, key, (struct bake_value){.type = BAKE_VALUE_INT, .integer = v});
}

/* Lists need storage that outlives the call: kept in `store`. */
struct value_store {
    struct bake_value **lists;
    size_t n;
};

static void tree_strv(struct build *b, struct tree *t, struct value_store *vs, const char *key,
                      const struct bake_strv *v)
{
    if (!v->n)
        return;
    struct bake_value *items = xcalloc(v->n, sizeof(*items));
    for (size_t i = 0; i < v->n; i++)
        items[i] = str_value(b, v->items[i]);
    vs->lists = xrealloc(vs->lists, (vs->n + 1) * sizeof(*vs->lists));
    vs->lists[vs->n++] = items;
    tree_add(t, key, (struct bake_value){.type = BAKE_VALUE_LIST, .items = items, .len = v->n});
}

static void tree_kvs(struct build *b, struct tree *t, struct value_store *vs, const char *key,
                     const struct bake_kvs *m, const char ***keys_out)
{
    if (!m->n)
        return;
    struct bake_value *items = xcalloc(m->n, sizeof(*items));
    const char **keys = xcalloc(m->n, sizeof(*keys));
    for (size_t i = 0; i < m->n; i++) {
        items[i] = str_value(b, m->items[i].value);
        keys[i] = m->items[i].key;
    }
    vs->lists = xrealloc(vs->lists, (vs->n + 1) * sizeof(*vs->lists));
    vs->lists[vs->n++] = items;
    *keys_out = keys;
    tree_add(t, key, (struct bake_value){.type = BAKE_VALUE_MAP, .items = items, .len = m->n,
                                         .keys = keys});
}

static int step_key(struct build *b, const struct bake_step *s, const struct digest *prev,
                    struct digest *ret)
{
    struct tree t = {0};
    struct value_store vs = {0};
    const char **env_keys = NULL;
    const char *inputs[BAKE_TEMPLATE_MAX_STEPS + 2];
    size_t n_inputs = 0;
    int e;

    tree_str(b, &t, "type", bake_step_type_name(s->type));
    tree_str(b, &t, "executor", s->executor == BAKE_EXEC_AGENT ? "agent" : "auto");
    tree_str(b, &t, "content", s->content);
    tree_str(b, &t, "destination", s->destination);
    tree_str(b, &t, "path", s->path);
    tree_str(b, &t, "target", s->target);
    tree_str(b, &t, "link", s->link);
    tree_str(b, &t, "line", s->line);
    if (s->mode >= 0)
        tree_int(&t, "mode", s->mode);
    if (s->uid >= 0)
        tree_int(&t, "uid", s->uid);
    if (s->gid >= 0)
        tree_int(&t, "gid", s->gid);
    tree_int(&t, "mkdirs", s->mkdirs);
    tree_int(&t, "recursive", s->recursive);
    tree_strv(b, &t, &vs, "inline", &s->inline_cmds);
    tree_strv(b, &t, &vs, "enable", &s->enable);
    tree_strv(b, &t, &vs, "disable", &s->disable);
    tree_strv(b, &t, &vs, "mask", &s->mask);
    tree_kvs(b, &t, &vs, "env", &s->env, &env_keys);
    /* input files by name and content */
    tree_str(b, &t, "source", s->source);
    tree_str(b, &t, "script", s->script);
    tree_strv(b, &t, &vs, "scripts", &s->scripts);
    if (s->source)
        inputs[n_inputs++] = s->source;
    if (s->script)
        inputs[n_inputs++] = s->script;
    for (size_t i = 0; i < s->scripts.n && n_inputs < ARRAY_SIZE(inputs); i++)
        inputs[n_inputs++] = s->scripts.items[i];

    struct bake_value step = {.type = BAKE_VALUE_MAP, .items = t.items, .len = t.n,
                              .keys = t.keys};
    char gib[32];
    snprintf(gib, sizeof(gib), "%u", b->root_gib);
    struct bake_value env_items[] = {
        {.type = BAKE_VALUE_STRING, .string = b->source->architecture,
         .len = strlen(b->source->architecture)},
        {.type = BAKE_VALUE_STRING, .string = gib, .len = strlen(gib)},
        {.type = BAKE_VALUE_STRING, .string = BAKE_AGENT_PROTOCOL,
         .len = strlen(BAKE_AGENT_PROTOCOL)},
    };
    const char *env_names[] = {"architecture", "root_volume_gib", "agent"};
    struct bake_value env = {.type = BAKE_VALUE_MAP, .items = env_items, .len = 3,
                             .keys = env_names};
    /* absolute input paths: the base is "/" */
    e = bake_cache_key_step(prev, &step, &env, b->base_dir, inputs, n_inputs, &b->secret, ret);
    for (size_t i = 0; i < vs.n; i++)
        free(vs.lists[i]);
    free(vs.lists);
    free(env_keys);
    free(t.items);
    free(t.keys);
    return e < 0 ? bake_error_prefix(e, "%s (%s)", s->place, s->name) : 0;
}

/* A usable layer for `key`, or -ENOENT. */
static int cache_lookup(struct build *b, const struct bake_step *s, const struct digest *key,
                        struct registry_bake_layer *ret)
{
    _cleanup_(registry_snapshot_freep) struct registry_snapshot *row = NULL;
    int e = registry_bake_layer_get(b->r->reg, key, ret);

    if (e < 0)
        return e;
    if (s->cache_ttl_s && ret->created + (int64_t)s->cache_ttl_s * 1000 < wall_clock_ms()) {
        registry_bake_layer_delete(b->r->reg, key);
        return -ENOENT;
    }
    e = registry_snapshot_get(b->r->reg, ret->snapshot_id, &row);
    if (e == -ENOENT || (e >= 0 && row->state != SNAPSHOT_COMPLETED)) {
        /* its snapshot was deleted: the layer is gone */
        registry_bake_layer_delete(b->r->reg, key);
        error_clear();
        return -ENOENT;
    }
    return e < 0 ? e : 0;
}

/* Keep the new snapshot as a layer: the cache owns it from now on. */
static int cache_insert(struct build *b, const struct bake_step *s, const struct digest *key,
                        const char *snap, uint32_t seq)
{
    struct registry_bake_layer l = {.key = *key, .created = wall_clock_ms(), .has_parent = true,
                                    .parent_key = b->key};
    int e;

    l.last_used = l.created;
    snprintf(l.snapshot_id, sizeof(l.snapshot_id), "%s", snap);
    snprintf(l.summary, sizeof(l.summary), "%s: %s %s", b->t->name, bake_step_type_name(s->type),
             s->name);
    l.size = b->last_stats.stored_new; /* what the layer added to the store */
    e = registry_begin(b->r->reg);
    if (e >= 0)
        e = registry_bake_layer_insert(b->r->reg, &l);
    if (e >= 0)
        e = bake_journal_release(b->r->reg, b->id, seq);
    /* the cache's now, not the build's: its kiln:bake-layer tag stays */
    if (e >= 0)
        e = registry_tag_delete(b->r->reg, snap, BAKE_BUILD_TAG, NULL);
    e = registry_end(b->r->reg, e);
    if (e == -EEXIST) { /* a concurrent bake cached it first: ours is scratch */
        error_clear();
        return 0;
    }
    return e < 0 ? e : 1;
}

/* ---- steps ---- */

static FILE *step_log(struct build *b, size_t i, const struct bake_step *s, const char *prefix)
{
    _cleanup_free_ char *path = NULL;
    char name[64];
    size_t k = 0;

    for (const char *p = s->name; *p && k < sizeof(name) - 1; p++)
        name[k++] = (char)((*p == '/' || *p == ' ' || (unsigned char)*p < 0x20) ? '_' : *p);
    name[k] = '\0';
    path = xasprintf("%s/%s%02zu-%s.log", b->log_dir, prefix, i + 1, name);
    return fopen(path, "we");
}

static bool wants_agent(const struct build *b, const struct bake_step *s)
{
    if (s->type == BAKE_STEP_SHELL || s->type == BAKE_STEP_REBOOT)
        return true;
    if (s->executor == BAKE_EXEC_AGENT)
        return true;
    if (s->executor == BAKE_EXEC_AUTO && b->t->build.executor == BAKE_EXEC_AGENT)
        return true;
    return false;
}

static int agent_sh(struct build *b, const struct bake_step *s, const char *cmd, FILE *log);

/* Upload host directory `host` as guest directory `guest`, recursively:
 * directories made, files put with their modes, symbolic links made. */
static int put_tree(struct build *b, const struct bake_step *s, const char *host,
                    const char *guest, FILE *log, int depth)
{
    _cleanup_free_ char *cmd = xstrdup("mkdir -p ");
    DIR *d;
    struct dirent *de;
    int e;

    if (depth > 64)
        return error_set(ELOOP, "%s: '%s' nests too deep", s->place, host);
    sh_quote(&cmd, guest);
    e = agent_sh(b, s, cmd, log);
    if (e < 0)
        return e;
    d = opendir(host);
    if (!d)
        return error_set(errno, "%s: cannot read '%s': %m", s->place, host);
    while (e >= 0 && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        _cleanup_free_ char *hp = xasprintf("%s/%s", host, de->d_name);
        _cleanup_free_ char *gp = xasprintf("%s/%s", guest, de->d_name);
        struct stat st;
        if (lstat(hp, &st) < 0) {
            e = error_set(errno, "%s: cannot stat '%s': %m", s->place, hp);
        } else if (S_ISDIR(st.st_mode)) {
            e = put_tree(b, s, hp, gp, log, depth + 1);
        } else if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX];
            ssize_t n = readlink(hp, target, sizeof(target) - 1);
            if (n < 0) {
                e = error_set(errno, "%s: cannot read the link '%s': %m", s->place, hp);
            } else {
                target[n] = '\0';
                _cleanup_free_ char *ln = xstrdup("ln -sfn ");
                sh_quote(&ln, target);
                append(&ln, " ");
                sh_quote(&ln, gp);
                e = agent_sh(b, s, ln, log);
            }
        } else if (S_ISREG(st.st_mode)) {
            _cleanup_free_ char *text = NULL;
            size_t len;
            e = read_host_file(hp, &text, &len);
            if (e >= 0)
                e = agent_client_put(b->agent, gp, st.st_mode & 07777, text, len, true,
                                     BAKE_AGENT_OP_MS);
            if (e < 0)
                e = bake_error_prefix(e, "%s: %s", s->place, gp);
        } else {
            e = error_set(EINVAL, "%s: '%s' is not a file, directory or link", s->place, hp);
        }
    }
    closedir(d);
    return e;
}

/* A file-level step through the agent (executor: agent). */
static int agent_file_step(struct build *b, const struct bake_step *s, FILE *log)
{
    switch (s->type) {
    case BAKE_STEP_FILE:
        if (s->content || s->source) {
            _cleanup_free_ char *p = s->source ? host_path(b, s->source) : NULL;
            struct stat st;
            if (p && stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
                /* Packer's rule: "dir/" copies its contents, "dir" the directory itself */
                size_t n = strlen(s->source);
                if (n && s->source[n - 1] == '/')
                    return put_tree(b, s, p, s->destination, log, 0);
                const char *base = strrchr(p, '/');
                _cleanup_free_ char *dest = xasprintf("%s/%s", s->destination,
                                                      base ? base + 1 : p);
                return put_tree(b, s, p, dest, log, 0);
            }
            return put_file(b, b->agent, s);
        }
        break;
    default: break;
    }
    /* the others as shell commands */
    _cleanup_free_ char *cmd = xstrdup("set -e\n");
    switch (s->type) {
    case BAKE_STEP_MKDIR:
        append(&cmd, "mkdir -p ");
        sh_quote(&cmd, s->path);
        break;
    case BAKE_STEP_DELETE:
        append(&cmd, s->recursive ? "rm -rf " : "rm -f ");
        sh_quote(&cmd, s->path);
        break;
    case BAKE_STEP_SYMLINK:
        append(&cmd, "ln -sfn ");
        sh_quote(&cmd, s->target);
        append(&cmd, " ");
        sh_quote(&cmd, s->link);
        break;
    case BAKE_STEP_APPEND_LINE:
        append(&cmd, "grep -qxF -- ");
        sh_quote(&cmd, s->line);
        append(&cmd, " ");
        sh_quote(&cmd, s->path);
        append(&cmd, " 2>/dev/null || printf '%s\\n' ");
        sh_quote(&cmd, s->line);
        append(&cmd, " >> ");
        sh_quote(&cmd, s->path);
        break;
    case BAKE_STEP_SYSTEMD: {
        const struct {
            const char *verb;
            const struct bake_strv *units;
        } acts[] = {{"enable", &s->enable}, {"disable", &s->disable}, {"mask", &s->mask}};
        for (size_t k = 0; k < ARRAY_SIZE(acts); k++)
            for (size_t i = 0; i < acts[k].units->n; i++) {
                append(&cmd, "systemctl ");
                append(&cmd, acts[k].verb);
                append(&cmd, " ");
                sh_quote(&cmd, acts[k].units->items[i]);
                append(&cmd, "\n");
            }
        break;
    }
    default: return error_set(EINVAL, "%s: cannot run through the agent", s->place);
    }
    append(&cmd, "\n");
    return run_script(b, b->agent, s, bake_step_type_name(s->type), cmd, strlen(cmd), log, 0);
}

static int agent_sh(struct build *b, const struct bake_step *s, const char *cmd, FILE *log)
{
    _cleanup_free_ char *script = xasprintf("set -e\n%s\n", cmd);

    return run_script(b, b->agent, s, bake_step_type_name(s->type), script, strlen(script), log,
                      0);
}

static int run_agent_step(struct build *b, const struct bake_step *s, FILE *log)
{
    int e = ensure_instance(b, s->timeout_s);

    if (e < 0)
        return e;
    if (s->type == BAKE_STEP_REBOOT)
        return run_reboot(b, s);
    if (s->type == BAKE_STEP_SHELL)
        return run_shell(b, b->agent, s, log);
    return agent_file_step(b, s, log);
}

static const char *executor_name(const struct build *b, const struct bake_step *s)
{
    return wants_agent(b, s) ? "agent" : "offline";
}

static void die_hook(struct build *b)
{
    if (b->o->die_after_steps && b->n_run >= b->o->die_after_steps) {
        fprintf(stderr, "kiln: KILN_BAKE_DIE_AFTER_STEPS=%u: exiting as a kill would\n",
                b->o->die_after_steps);
        fflush(NULL);
        _exit(137);
    }
}

static int run_build_step(struct build *b, size_t i, size_t n, const struct bake_step *s)
{
    struct bake_step_report *rep = &b->res->steps[b->res->n_steps++];
    struct registry_bake_layer layer;
    struct digest key;
    uint64_t t0 = now_ns();
    char snap[ID_MAX_SIZE];
    uint32_t seq = 0;
    int e;

    snprintf(rep->name, sizeof(rep->name), "%s", s->name);
    snprintf(rep->type, sizeof(rep->type), "%s", bake_step_type_name(s->type));
    out(b, "[%zu/%zu] %s (%s, %s) ... ", i + 1, n, s->name, rep->type, executor_name(b, s));
    e = step_key(b, s, &b->key, &key);
    if (e < 0)
        goto fail;
    digest_to_hex(&key, rep->key);
    if (b->use_cache && s->cache) {
        e = cache_lookup(b, s, &key, &layer);
        if (e >= 0) {
            registry_bake_layer_touch(b->r->reg, &key, wall_clock_ms());
            /* the build instance, if any, is not at this state any more */
            if (b->instance[0])
                terminate_build_instance(b);
            snprintf(b->snap, sizeof(b->snap), "%s", layer.snapshot_id);
            b->snap_seq = 0;
            b->key = key;
            rep->cached = true;
            snprintf(rep->executor, sizeof(rep->executor), "cache");
            snprintf(rep->snapshot_id, sizeof(rep->snapshot_id), "%s", b->snap);
            rep->seconds = seconds_since(t0);
            out(b, "cached %.1fs\n", rep->seconds);
            return 0;
        }
        if (e != -ENOENT)
            goto fail;
        error_clear();
    }
    if (timed_out(b)) {
        e = stop_error(b, s);
        goto fail;
    }
    snprintf(rep->executor, sizeof(rep->executor), "%s", executor_name(b, s));
    {
        _cleanup_fclose_ FILE *log = step_log(b, i, s, "");
        for (unsigned attempt = 0;; attempt++) {
            if (wants_agent(b, s)) {
                e = run_agent_step(b, s, log);
                if (e >= 0)
                    e = capture_instance(b, s, &key, snap, &seq);
            } else {
                e = run_offline(b, s, &key, snap, &seq);
            }
            if (e >= 0 || attempt >= s->max_retries || timed_out(b))
                break;
            if (log)
                fprintf(log, "--- attempt %u failed: %s\n", attempt + 1,
                        error_message() ? error_message() : strerror(-e));
            out(b, "retrying ... ");
            error_clear();
        }
        if (e < 0 && log) {
            _cleanup_free_ char *m = bake_interp_mask(b->ip, error_message() ? error_message() : "");
            fprintf(log, "--- failed: %s\n", m);
        }
    }
    if (e < 0 && cancelled(b))
        e = stop_error(b, s);
    if (e < 0)
        goto fail;
    /* the previous state's own snapshot (uncached) is scratch now */
    b->snap_seq = seq;
    if (b->use_cache && s->cache) {
        e = cache_insert(b, s, &key, snap, seq);
        if (e < 0)
            goto fail;
        if (e > 0)
            b->snap_seq = 0; /* released */
    }
    snprintf(b->snap, sizeof(b->snap), "%s", snap);
    b->key = key;
    snprintf(rep->snapshot_id, sizeof(rep->snapshot_id), "%s", snap);
    rep->seconds = seconds_since(t0);
    b->n_run++;
    out(b, "done %.1fs\n", rep->seconds);
    die_hook(b);
    return 0;
fail:
    rep->seconds = seconds_since(t0);
    out(b, "failed %.1fs\n", rep->seconds);
    return e;
}

/* Checks (validate steps, tests) are cached too: their key chains the
 * state's key with each check step, and a passed check leaves a marker
 * layer of that key on the same snapshot.  A rebuild with no change thus
 * boots nothing. */
static int checks_key(struct build *b, const struct digest *from, const struct bake_step *steps,
                      size_t n, bool validate_phase, struct digest *ret)
{
    *ret = *from;
    for (size_t i = 0; i < n; i++) {
        if (validate_phase && steps[i].phase != BAKE_PHASE_VALIDATE)
            continue;
        int e = step_key(b, &steps[i], ret, ret);
        if (e < 0)
            return e;
    }
    return 0;
}

static bool marker_present(struct build *b, const struct digest *key)
{
    struct registry_bake_layer l;

    if (!b->use_cache || registry_bake_layer_get(b->r->reg, key, &l) < 0) {
        error_clear();
        return false;
    }
    if (strcmp(l.snapshot_id, b->snap) != 0)
        return false;
    registry_bake_layer_touch(b->r->reg, key, wall_clock_ms());
    return true;
}

static void marker_set(struct build *b, const struct digest *key, const char *what)
{
    struct registry_bake_layer l = {.key = *key, .created = wall_clock_ms(), .has_parent = true,
                                    .parent_key = b->key};

    if (!b->use_cache)
        return;
    l.last_used = l.created;
    snprintf(l.snapshot_id, sizeof(l.snapshot_id), "%s", b->snap);
    snprintf(l.summary, sizeof(l.summary), "%s: %s passed", b->t->name, what);
    if (registry_bake_layer_insert(b->r->reg, &l) < 0)
        error_clear(); /* a marker lost costs a rerun, nothing else */
}

static int run_validate_step(struct build *b, size_t i, const struct bake_step *s)
{
    uint64_t t0 = now_ns();
    int e;

    out(b, "[validate] %s (%s, agent) ... ", s->name, bake_step_type_name(s->type));
    {
        _cleanup_fclose_ FILE *log = step_log(b, i, s, "validate-");
        e = run_agent_step(b, s, log);
    }
    out(b, "%s %.1fs\n", e < 0 ? "failed" : "passed", seconds_since(t0));
    return e;
}

/* ---- tests ---- */

/* The validate steps can run in the tests' instance: there are tests,
 * and every validate step is a shell step. */
static bool can_defer_validate(const struct build *b)
{
    if (!b->t->has_tests || !b->t->tests.n_steps)
        return false;
    for (size_t i = 0; i < b->t->n_steps; i++)
        if (b->t->steps[i].phase == BAKE_PHASE_VALIDATE &&
            b->t->steps[i].type != BAKE_STEP_SHELL)
            return false;
    return true;
}

/* The deferred validate steps, in the tests' instance (agent a). */
static int run_deferred_validate(struct build *b, struct agent_client *a)
{
    int e = 0;

    for (size_t i = 0; i < b->t->n_steps && e >= 0; i++) {
        const struct bake_step *s = &b->t->steps[i];
        uint64_t t0 = now_ns();
        if (s->phase != BAKE_PHASE_VALIDATE)
            continue;
        out(b, "[validate] %s (%s, agent, in the tests' instance) ... ", s->name,
            bake_step_type_name(s->type));
        _cleanup_fclose_ FILE *log = step_log(b, i, s, "validate-");
        e = run_shell(b, a, s, log);
        out(b, "%s %.1fs\n", e < 0 ? "failed" : "passed", seconds_since(t0));
    }
    if (e >= 0)
        marker_set(b, &b->check_key, "validate");
    return e;
}

static int run_tests(struct build *b, const char *image)
{
    const char *type = b->t->tests.instance_type ? b->t->tests.instance_type : b->instance_type;
    uint64_t limit = b->t->tests.timeout_s ? b->t->tests.timeout_s : 0;
    _cleanup_(agent_client_freep) struct agent_client *a = NULL;
    char instance[ID_MAX_SIZE] = "";
    uint64_t t0 = now_ns();
    int e;

    out(b, "tests: launching %s (%s) ... ", image, type);
    e = launch(b, image, type, "tests", budget_ms(b, limit), instance, &a);
    if (e < 0) {
        out(b, "failed %.1fs\n", seconds_since(t0));
        e = bake_error_prefix(e, "tests");
        goto out;
    }
    out(b, "%s up %.1fs\n", instance, seconds_since(t0));
    if (b->defer_validate)
        e = run_deferred_validate(b, a);
    for (size_t i = 0; i < b->t->tests.n_steps && e >= 0; i++) {
        const struct bake_step *s = &b->t->tests.steps[i];
        uint64_t t1 = now_ns();
        out(b, "tests [%zu/%zu] %s ... ", i + 1, b->t->tests.n_steps, s->name);
        _cleanup_fclose_ FILE *log = step_log(b, i, s, "test-");
        if (s->type == BAKE_STEP_SHELL)
            e = run_shell(b, a, s, log);
        else if (s->type == BAKE_STEP_FILE && !s->source)
            e = put_file(b, a, s);
        else
            e = error_set(EINVAL, "%s: a test step is a shell step or a file step with content",
                          s->place);
        b->res->n_tests++;
        if (e >= 0)
            b->res->tests_passed++;
        out(b, "%s %.1fs\n", e < 0 ? "failed" : "passed", seconds_since(t1));
        if (e < 0)
            e = bake_error_prefix(e, "tests");
    }
out:
    if (instance[0]) {
        int t = instance_manager_terminate(b->m, b->r->name, instance, true);
        if (t < 0 && e >= 0)
            e = t;
        else if (t < 0)
            error_clear();
    }
    return e;
}

/* ---- output ---- */

static unsigned next_version_number(struct build *b)
{
    const char *owners[] = {b->owner};
    const char *const values[] = {b->t->name};
    struct image_tag_filter tf = {.key = "kiln:bake-template", .values = values, .n_values = 1};
    struct image_query q = {.owners = owners, .n_owners = 1, .tags = &tf, .n_tags = 1,
                            .include_deprecated = true, .include_disabled = true};
    struct registry_image **list = NULL;
    size_t n = 0;
    char *next = NULL;

    if (registry_image_list(b->r->reg, &q, &list, &n, &next) < 0) {
        error_clear();
        return 1;
    }
    registry_image_list_free(list, n);
    free(next);
    return (unsigned)n + 1;
}

/* "1.4.x" with x the build number. */
static char *version_string(struct build *b)
{
    const char *v = b->t->output.version ? b->t->output.version : b->t->version;
    char num[16];

    if (!v)
        return NULL;
    snprintf(num, sizeof(num), "%u", b->version_number);
    const char *x = strrchr(v, 'x');
    if (!x || (x != v && x[-1] != '.') || x[1])
        return xstrdup(v);
    return xasprintf("%.*s%s", (int)(x - v), v, num);
}

static int publish(struct build *b)
{
    const struct bake_template *t = b->t;
    const char *name = t->output.name ? t->output.name : t->name;
    _cleanup_free_ char *version = NULL;
    size_t n_tags = t->output.tags.n + 2;
    _cleanup_free_ struct registry_tag *tags = xcalloc(n_tags + 1, sizeof(*tags));
    uint32_t seq;
    int e;

    if (!image_name_is_valid(name))
        return error_set(EINVAL, "output.name: '%s' is not a valid image name (3 to 128 letters, "
                                 "digits and ( ) [ ] space . / - ' @ _)",
                         name);
    e = image_name_check_free(b->r, b->owner, name);
    if (e < 0)
        return bake_error_prefix(e, "output.name");
    snprintf(b->res->image_name, sizeof(b->res->image_name), "%s", name);
    version = version_string(b);
    if (version)
        snprintf(b->res->version, sizeof(b->res->version), "%s", version);
    for (size_t i = 0; i < t->output.tags.n; i++)
        tags[i] = (struct registry_tag){t->output.tags.items[i].key,
                                        t->output.tags.items[i].value};
    tags[t->output.tags.n] = (struct registry_tag){(char *)"kiln:bake-template", t->name};
    tags[t->output.tags.n + 1] = (struct registry_tag){(char *)"kiln:bake-source", b->source->id};
    if (version)
        tags[n_tags++] = (struct registry_tag){(char *)"kiln:bake-version", version};
    e = register_image(b, name, t->output.description ? t->output.description : t->description,
                       b->snap, IMAGE_PENDING, tags, n_tags, &seq, b->res->image_id);
    if (e < 0)
        return e;
    out(b, "image %s registered (pending) from %s\n", b->res->image_id, b->snap);
    if (t->has_tests && t->tests.n_steps) {
        struct digest tkey;
        e = checks_key(b, &b->check_key, t->tests.steps, t->tests.n_steps, false, &tkey);
        if (e < 0)
            return e;
        if (!b->defer_validate && marker_present(b, &tkey)) {
            out(b, "tests: passed before on this very state (%zu steps): cached\n",
                t->tests.n_steps);
            b->res->n_tests = b->res->tests_passed = t->tests.n_steps;
            b->res->tests_cached = true;
        } else {
            e = run_tests(b, b->res->image_id);
            if (e < 0)
                return e;
            marker_set(b, &tkey, "tests");
        }
    }
    for (size_t i = 0; i < t->output.snapshot_tags.n && e >= 0; i++)
        e = registry_tag_set(b->r->reg, b->snap, t->output.snapshot_tags.items[i].key,
                             t->output.snapshot_tags.items[i].value);
    if (e < 0)
        return e;
    e = registry_begin(b->r->reg);
    if (e >= 0) {
        struct registry_image_update u = {.set = IMAGE_SET_STATE, .state = IMAGE_AVAILABLE};
        e = registry_image_update(b->r->reg, b->res->image_id, &u);
        if (e >= 0)
            e = bake_journal_release(b->r->reg, b->id, seq);
        /* the image's root snapshot is an output too when the cache does not own it */
        if (e >= 0 && b->snap_seq)
            e = bake_journal_release(b->r->reg, b->id, b->snap_seq);
        if (e >= 0 && b->snap_seq)
            e = registry_tag_delete(b->r->reg, b->snap, BAKE_BUILD_TAG, NULL);
        if (e >= 0)
            e = registry_tag_delete(b->r->reg, b->res->image_id, BAKE_BUILD_TAG, NULL);
    }
    return registry_end(b->r->reg, e);
}

/* ---- distribution ---- */

static void dist_log(void *ud, const char *line)
{
    out(ud, "distribute: %s\n", line);
}

/* Record what the build publishes (the template's distribution, output
 * tags) and publish it: launch permissions, deprecation and tags in the
 * build's region, copies to the other regions.  A failure here keeps the
 * image: `kiln bake distribute BUILD` retries what is not done. */
static int distribute(struct build *b)
{
    struct bake_distribute_options o = {
        .data_dir = b->o->data_dir, .region = b->r->name, .build_id = b->id,
        .log = dist_log, .ud = b,
    };
    int e = bake_distribution_record(b->r->reg, b->id, b->r->name, b->res->image_id, b->t);

    if (e < 0)
        return bake_error_prefix(e, "distribution");
    e = bake_distribute(&o);
    if (e < 0)
        return bake_error_prefix(e, "distribution failed (the image %s stays; `kiln bake "
                                    "distribute %s` retries it)",
                                 b->res->image_id, b->id);
    return 0;
}

/* ---- the manifest ---- */

/* The image id in each region the build's image is available in (the
 * distribution's rows; the build's region when there are none). */
static size_t image_list(struct build *b, struct registry_bake_output **ret)
{
    size_t n = 0;

    if (registry_bake_output_list(b->r->reg, b->id, ret, &n) < 0) {
        error_clear();
        *ret = NULL;
        n = 0;
    }
    if (n == 0) {
        free(*ret);
        *ret = xcalloc(1, sizeof(**ret));
        snprintf((*ret)[0].region, sizeof((*ret)[0].region), "%s", b->r->name);
        snprintf((*ret)[0].image_id, sizeof((*ret)[0].image_id), "%s", b->res->image_id);
        (*ret)[0].state = BAKE_OUTPUT_DONE;
        n = 1;
    }
    return n;
}

/* The last lines: "REGION IMAGE" for each region the image is in. */
static void print_images(struct build *b)
{
    _cleanup_free_ struct registry_bake_output *outs = NULL;
    size_t n = image_list(b, &outs);

    for (size_t i = 0; i < n; i++)
        if (outs[i].state == BAKE_OUTPUT_DONE)
            out(b, "%s %s\n", outs[i].region, outs[i].image_id);
}

/* The manifest keeps Packer's manifest post-processor's shape (a `builds`
 * array appended to at each run, `artifact_id` "region:ami,...",
 * `last_run_uuid`), so that scripts reading Packer's manifests read it,
 * with kiln's fields beside (the reference design's section 5.8). */
static void jkey(FILE *f, const char *key)
{
    json_fput_string(f, key);
    fputs(": ", f);
}

static void jstr(FILE *f, const char *key, const char *value)
{
    jkey(f, key);
    json_fput_string(f, value);
}

static char *new_uuid(void)
{
    uint8_t u[16] = {0};

    if (random_bytes(u, sizeof(u)) < 0)
        error_clear();
    u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
    return xasprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                     u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11],
                     u[12], u[13], u[14], u[15]);
}

/* This run's entry of `builds`. */
static void manifest_build(struct build *b, FILE *f, const char *uuid)
{
    const struct bake_template *t = b->t;
    const struct bake_result *res = b->res;
    _cleanup_free_ struct registry_bake_output *outs = NULL;
    size_t n = image_list(b, &outs), k = 0;
    const char *path = b->o->template_path;

    if (t->manifest.strip_path && strrchr(path, '/'))
        path = strrchr(path, '/') + 1;
    fputs("{", f);
    jstr(f, "name", t->name);
    fputs(", ", f);
    jstr(f, "builder_type", "kiln-bake");
    fprintf(f, ", \"build_time\": %lld, \"files\": null, ", (long long)time(NULL));
    jkey(f, "artifact_id");
    fputc('"', f);
    for (size_t i = 0; i < n; i++)
        if (outs[i].state == BAKE_OUTPUT_DONE)
            fprintf(f, "%s%s:%s", k++ ? "," : "", outs[i].region, outs[i].image_id);
    fputs("\", ", f);
    jstr(f, "packer_run_uuid", uuid);
    fputs(", \"custom_data\": {", f);
    for (size_t i = 0; i < t->manifest.custom_data.n; i++) {
        _cleanup_free_ char *m = bake_interp_mask(b->ip, t->manifest.custom_data.items[i].value);
        fputs(i ? ", " : "", f);
        jstr(f, t->manifest.custom_data.items[i].key, m);
    }
    fputs("},\n   ", f);
    jstr(f, "run_uuid", uuid);
    fputs(", ", f);
    jstr(f, "build_id", res->build_id);
    fputs(", ", f);
    jstr(f, "status", "succeeded");
    fputs(", \"template\": {", f);
    jstr(f, "path", path);
    fputs(", ", f);
    jstr(f, "sha256", res->template_digest);
    fputs("}, \"image\": {", f);
    jstr(f, "name", res->image_name);
    fputs(", ", f);
    jstr(f, "version", res->version);
    fputs("},\n   \"source\": {", f);
    jstr(f, "resolved_image_id", res->source_image_id);
    fputs(", ", f);
    jstr(f, "resolved_name", b->source->name);
    fputs(", ", f);
    jstr(f, "snapshot_id", b->source_root->snapshot_id);
    fputs("},\n   \"amis\": {", f);
    k = 0;
    for (size_t i = 0; i < n; i++) {
        fputs(k++ ? ", " : "", f);
        jkey(f, outs[i].region);
        fputc('{', f);
        jstr(f, "image_id", outs[i].image_id);
        fputs(", ", f);
        jstr(f, "state", outs[i].state == BAKE_OUTPUT_DONE ? "available"
                         : outs[i].state == BAKE_OUTPUT_FAILED ? "failed" : "copying");
        fputc('}', f);
    }
    fputs("},\n   \"steps\": [", f);
    for (size_t i = 0; i < res->n_steps; i++) {
        const struct bake_step_report *r = &res->steps[i];
        fprintf(f, "%s\n    {\"index\": %zu, ", i ? "," : "", i);
        jstr(f, "name", r->name);
        fputs(", ", f);
        jstr(f, "type", r->type);
        fputs(", ", f);
        jstr(f, "executor", r->executor);
        fputs(", ", f);
        jstr(f, "key", r->key);
        fprintf(f, ", \"cache\": \"%s\", ", r->cached ? "hit" : "miss");
        jstr(f, "layer_snapshot", r->snapshot_id);
        fprintf(f, ", \"duration_ms\": %lld}", (long long)(r->seconds * 1000));
    }
    fprintf(f, "],\n   \"tests\": {\"status\": \"%s\", \"run\": %zu, \"passed\": %zu, "
               "\"cached\": %s},\n",
            res->n_tests == 0 ? "none" : "passed", res->n_tests, res->tests_passed,
            res->tests_cached ? "true" : "false");
    fprintf(f, "   \"instances_launched\": %u, \"timings_ms\": {\"total\": %lld}}",
            res->instances_launched, (long long)(res->seconds * 1000));
}

/* Append this run to the manifest (temp file, fsync, rename).  A previous
 * manifest that does not read as one is kept aside, not overwritten. */
static int write_manifest(struct build *b)
{
    const char *path = b->o->manifest ? b->o->manifest : b->t->manifest.output;
    _cleanup_free_ char *tmp = NULL, *uuid = new_uuid(), *old_text = NULL;
    _cleanup_(json_freep) struct json_value *old = NULL;
    const struct json_value *builds = NULL;
    size_t old_len;
    FILE *f;
    int e = 0;

    if (!path)
        return 0;
    if (access(path, F_OK) == 0) {
        e = read_host_file(path, &old_text, &old_len);
        if (e >= 0)
            e = old_len > JSON_MAX_INPUT ? -EFBIG : json_parse(old_text, old_len, &old);
        if (e >= 0)
            builds = json_get(old, "builds");
        if (e < 0 || !builds || builds->type != JSON_ARRAY) {
            _cleanup_free_ char *aside = xasprintf("%s.unreadable.%lld", path, (long long)time(NULL));
            if (rename(path, aside) == 0)
                out(b, "manifest: '%s' is not a manifest kiln can append to; moved to '%s'\n", path,
                    aside);
            error_clear();
            builds = NULL;
            e = 0;
        }
    }
    tmp = xasprintf("%s.tmp.%d", path, (int)getpid());
    f = fopen(tmp, "we");
    if (!f)
        return error_set(errno, "cannot write the manifest '%s': %m", tmp);
    fputs("{\"schema\": \"kiln-bake-manifest/1\",\n \"builds\": [\n  ", f);
    for (size_t i = 0; builds && i < builds->n; i++) {
        json_fput_value(f, &builds->items[i]);
        fputs(",\n  ", f);
    }
    manifest_build(b, f, uuid);
    fputs("\n ],\n ", f);
    jstr(f, "last_run_uuid", uuid);
    fputs("}\n", f);
    if (fflush(f) != 0 || fsync(fileno(f)) < 0)
        e = error_set(errno, "cannot write the manifest '%s': %m", tmp);
    if (fclose(f) != 0 && e >= 0)
        e = error_set(errno, "cannot write the manifest '%s': %m", tmp);
    if (e >= 0 && rename(tmp, path) < 0)
        e = error_set(errno, "cannot rename '%s' to '%s': %m", tmp, path);
    if (e < 0)
        unlink(tmp);
    else
        out(b, "manifest: %s\n", path);
    return e;
}

/* ---- setup ---- */

static int load_template(struct build *b)
{
    const struct bake_options *o = b->o;
    _cleanup_free_ char *text = NULL, *dir = NULL;
    size_t len;
    struct digest d;
    int e;

    e = bake_template_load(o->template_path, &b->t);
    if (e < 0)
        return e;
    e = read_host_file(o->template_path, &text, &len);
    if (e < 0)
        return e;
    sha256(text, len, &d);
    digest_to_hex(&d, b->res->template_digest);
    dir = xstrdup(o->template_path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    char real[PATH_MAX];
    if (!realpath(slash ? (dir[0] ? dir : "/") : ".", real))
        return error_set(errno, "cannot resolve the directory of '%s': %m", o->template_path);
    b->base_dir = xstrdup(real);

    b->ip = bake_interp_new(time(NULL));
    for (size_t i = 0; i < o->n_var_files; i++) {
        e = bake_interp_load_var_file(b->ip, o->var_files[i]);
        if (e < 0)
            return e;
    }
    for (size_t i = 0; i < o->n_vars; i++) {
        e = bake_interp_parse_var_arg(b->ip, o->vars[i]);
        if (e < 0)
            return e;
    }
    e = bake_template_resolve_variables(b->t, b->ip);
    if (e < 0)
        return e;
    return bake_template_expand_source(b->t, b->ip);
}

static int expand(struct build *b)
{
    struct bake_template *t = b->t;
    char version[32];

    bake_interp_set_field(b->ip, "SourceAMI", b->source->id);
    bake_interp_set_field(b->ip, "SourceAMIName", b->source->name);
    bake_interp_set_field(b->ip, "SourceAMIOwner", b->source->owner);
    for (size_t i = 0; i < b->source->n_tags; i++) {
        _cleanup_free_ char *f = xasprintf("SourceAMITags.%s", b->source->tags[i].key);
        bake_interp_set_field(b->ip, f, b->source->tags[i].value);
    }
    bake_interp_set_field(b->ip, "BuildRegion", b->r->name);
    bake_interp_set_field(b->ip, "BuildName", t->name);
    b->version_number = next_version_number(b);
    snprintf(version, sizeof(version), "%u", b->version_number);
    bake_interp_set_field(b->ip, "Version", version);
    return bake_template_expand(t, b->ip);
}

static int open_everything(struct build *b)
{
    const struct bake_options *o = b->o;
    _cleanup_free_ char *secret = NULL;
    int e;

    e = region_open(o->data_dir, o->region, false, &b->r);
    if (e < 0)
        return e;
    e = service_default_account(o->data_dir, b->owner);
    if (e < 0)
        return e;
    secret = xasprintf("%s/bake-cache.secret", o->data_dir);
    e = bake_cache_secret_load(secret, &b->secret);
    if (e < 0)
        return e;
    const char *regions[] = {o->region};
    struct instance_manager_options mo = {
        .data_dir = o->data_dir, .regions = regions, .n_regions = 1,
        .recovery = skip_all,
    };
    e = instance_manager_new(&mo, &b->m);
    if (e < 0)
        return e;
    b->undo = (struct undo_ctx){.r = b->r, .m = b->m};
    return 0;
}

static void janitor(struct build *b)
{
    struct bake_janitor_report rep = {0};
    int e = bake_janitor(b->r, b->m, &rep);

    if (e < 0) {
        log_warning("bake janitor: %s", error_message() ? error_message() : strerror(-e));
        error_clear();
        return;
    }
    if (rep.builds_cleaned || rep.builds_failed)
        out(b, "janitor: cleaned up %zu abandoned build(s) (%zu resources undone, %zu failed)\n",
            rep.builds_cleaned + rep.builds_failed, rep.entries_undone, rep.entries_failed);
}

static void finish(struct build *b, int e)
{
    struct bake_undo_ops ops = undo_ops(&b->undo);
    struct bake_undo_report rep = {0};
    int on_error, u;

    if (!b->begun)
        return;
    on_error = b->o->on_error >= 0 ? b->o->on_error : (int)b->t->build.on_error;
    if (e >= 0) {
        terminate_build_instance(b);
        u = bake_journal_finish(b->r->reg, b->id, &ops, &rep);
    } else if (on_error == BAKE_ON_ERROR_ABORT) {
        out(b, "on_error abort: build %s left as it is; the janitor of the next `kiln bake` or "
               "`kiln serve` removes its resources\n",
            b->id);
        return;
    } else {
        if (on_error == BAKE_ON_ERROR_KEEP && b->instance[0] && !cancelled(b)) {
            _cleanup_(registry_instance_freep) struct registry_instance *row = NULL;
            _cleanup_free_ char *dir = instance_manager_dir(b->m, b->r->name, b->instance);
            if (registry_instance_get(b->r->reg, b->instance, &row) >= 0)
                out(b, "on_error keep: build instance %s runs at %s (agent socket %s/agent.sock, "
                       "console %s/console.log); it is removed when this bake ends\n",
                    b->instance, row->address, dir, dir);
            error_clear();
            agent_drop(b);
            if (b->o->keep_wait)
                b->o->keep_wait(b->o->keep_ud);
        }
        terminate_build_instance(b);
        u = bake_journal_fail(b->r->reg, b->id, &ops, &rep);
    }
    if (u < 0) {
        log_error("build %s: some resources could not be removed (the janitor retries): %s", b->id,
                  error_message() ? error_message() : strerror(-u));
        error_clear();
    }
}

int bake_run(const struct bake_options *o, struct bake_result *ret)
{
    struct build b = {.o = o, .res = ret};
    struct registry_tag build_tag;
    char dist_why[2048] = "";
    int dist_e = 0;
    uint64_t t0 = now_ns();
    int e;

    memset(ret, 0, sizeof(*ret));
    snprintf(ret->region, sizeof(ret->region), "%s", o->region);
    e = load_template(&b);
    if (e < 0)
        goto out;
    e = open_everything(&b);
    if (e < 0)
        goto out;
    janitor(&b);
    e = resolve_source(&b);
    if (e < 0)
        goto out;
    snprintf(ret->source_image_id, sizeof(ret->source_image_id), "%s", b.source->id);
    e = expand(&b);
    if (e < 0)
        goto out;

    b.use_cache = !o->no_cache && b.t->build.cache;
    b.instance_type = b.t->build.instance_type ? b.t->build.instance_type
                                               : BAKE_DEFAULT_INSTANCE_TYPE;
    if (!instance_type_find(b.instance_type)) {
        e = error_set(EINVAL, "build.instance_type: unknown instance type '%s'", b.instance_type);
        goto out;
    }
    b.root_gib = (uint32_t)b.t->build.root_volume_gib;
    b.deadline_ns = t0 + (b.t->build.timeout_s ? b.t->build.timeout_s : BAKE_DEFAULT_TIMEOUT_S) *
                             1000000000ULL;
    {
        const char *name = b.t->output.name ? b.t->output.name : b.t->name;
        e = image_name_check_free(b.r, b.owner, name);
        if (e < 0) {
            e = bake_error_prefix(e, "output.name");
            goto out;
        }
    }

    struct digest td;
    digest_from_hex(ret->template_digest, &td);
    e = bake_journal_begin(b.r->reg, b.owner, &td, NULL, b.id);
    if (e < 0)
        goto out;
    b.begun = true;
    snprintf(ret->build_id, sizeof(ret->build_id), "%s", b.id);
    if (o->cancel) {
        pthread_mutex_lock(&o->cancel->lock);
        snprintf(o->cancel->build_id, sizeof(o->cancel->build_id), "%s", b.id);
        pthread_mutex_unlock(&o->cancel->lock);
    }
    build_tag = (struct registry_tag){(char *)BAKE_BUILD_TAG, b.id};
    b.build_tags.items = &build_tag;
    b.build_tags.n = 1;
    b.log_dir = o->log_dir ? xstrdup(o->log_dir) : xasprintf("%s/bake-logs/%s", o->data_dir, b.id);
    e = mkdir_p(b.log_dir);
    if (e < 0) {
        e = error_set(e, "cannot create the log directory '%s': %s", b.log_dir, strerror(-e));
        goto out;
    }
    out(&b, "bake %s: build %s in %s from %s (%s)%s\n", b.t->name, b.id, b.r->name, b.source->id,
        b.source->name, b.use_cache ? "" : ", cache off");
    out(&b, "logs: %s\n", b.log_dir);

    {
        _cleanup_(registry_snapshot_freep) struct registry_snapshot *root = NULL;
        e = registry_snapshot_get(b.r->reg, b.source_root->snapshot_id, &root);
        if (e < 0)
            goto out;
        if (!root->has_map) {
            e = error_set(EINVAL, "the source's root snapshot '%s' is not completed", root->id);
            goto out;
        }
        bake_cache_key_base(&root->map_id, &b.key);
        snprintf(b.snap, sizeof(b.snap), "%s", root->id);
        uint32_t src_gib = root->volume_size_gib ? root->volume_size_gib : 1;
        if (b.root_gib && b.root_gib < src_gib) {
            e = error_set(EINVAL, "build.root_volume_gib: %u GiB is smaller than the source's "
                                  "root (%u GiB)",
                          b.root_gib, src_gib);
            goto out;
        }
    }

    size_t n_build = 0;
    for (size_t i = 0; i < b.t->n_steps; i++)
        n_build += b.t->steps[i].phase == BAKE_PHASE_BUILD;
    ret->steps = xcalloc(b.t->n_steps ? b.t->n_steps : 1, sizeof(*ret->steps));
    for (size_t i = 0, k = 0; i < b.t->n_steps && e >= 0; i++)
        if (b.t->steps[i].phase == BAKE_PHASE_BUILD)
            e = run_build_step(&b, k++, n_build, &b.t->steps[i]);
    if (e < 0)
        goto out;
    e = checks_key(&b, &b.key, b.t->steps, b.t->n_steps, true, &b.check_key);
    if (e < 0)
        goto out;
    if (n_build < b.t->n_steps && marker_present(&b, &b.check_key)) {
        out(&b, "[validate] passed before on this very state (%zu steps): cached\n",
            b.t->n_steps - n_build);
    } else if (n_build < b.t->n_steps && !b.instance[0] && can_defer_validate(&b)) {
        /* no build VM is up (the last step ran offline, or was cached):
         * the validate steps run in the tests' fresh instance of the same
         * state, which saves a boot */
        b.defer_validate = true;
    } else if (n_build < b.t->n_steps) {
        for (size_t i = 0; i < b.t->n_steps && e >= 0; i++)
            if (b.t->steps[i].phase == BAKE_PHASE_VALIDATE)
                e = run_validate_step(&b, i, &b.t->steps[i]);
        if (e < 0)
            goto out;
        marker_set(&b, &b.check_key, "validate");
    }
    /* the build instance is done: tests run on a fresh one */
    terminate_build_instance(&b);
    e = publish(&b);
    if (e < 0)
        goto out;
    dist_e = distribute(&b);
    if (dist_e < 0) {
        snprintf(dist_why, sizeof(dist_why), "%s", error_message() ? error_message() : "");
        out(&b, "%s\n", dist_why);
    }
    ret->seconds = seconds_since(t0);
    e = write_manifest(&b);
    if (e < 0)
        goto out;
    print_images(&b);
out:
    if (e < 0) {
        char why[4096];
        snprintf(why, sizeof(why), "%s", error_message() ? error_message() : strerror(-e));
        finish(&b, e);
        error_set(e, "%s", why);
    } else {
        finish(&b, e);
        if (dist_e < 0) {
            e = dist_e;
            error_set(e, "%s", dist_why);
        }
    }
    ret->seconds = seconds_since(t0);
    agent_drop(&b);
    instance_manager_free(b.m);
    registry_image_free(b.source);
    region_free(b.r);
    bake_template_free(b.t);
    bake_interp_free(b.ip);
    free(b.base_dir);
    free(b.log_dir);
    return e;
}

void bake_result_release(struct bake_result *r)
{
    free(r->steps);
    r->steps = NULL;
}
