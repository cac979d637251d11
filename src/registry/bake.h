/* Image baking in the registry (migration 11, docs/formats.md,
 * docs/baking.md "Journal, janitor and layer cache").
 *
 * Three tables with typed functions:
 *   - builds (bake_builds): id "bld-<17 hex>", owner, template digest,
 *     state running|succeeded|failed|cleaned, and the identity of the
 *     process running the build (pid, boot id, start time) so that a
 *     janitor can tell that process is gone;
 *   - the journal (bake_journal): per build, numbered entries, one per
 *     resource the build makes.  An entry is inserted `pending` with an
 *     empty resource id BEFORE the resource is created, filled in
 *     (`created`) once the resource exists, and ends `released` (kept as
 *     the build's output) or `undone` (deleted).  `error` keeps the message
 *     of the last undo that failed, so a failure is never lost;
 *   - the layer cache (bake_layers): key (SHA-256, src/bake/cache-key.h)
 *     to the snapshot holding the layer, its parent key, a step summary,
 *     times and size, with the queries `kiln bake cache list|prune` need.
 *
 * The state machine over these rows lives in src/bake/journal.h; this file
 * only checks values and stores them.  All functions return >= 0 or -errno
 * with a message through error_set(): -EINVAL a malformed value (named),
 * -ENOENT no such row, -EEXIST a duplicate, -EBADMSG a row that does not
 * read back as valid, and the errnos of registry.h.
 */
#ifndef KILN_REGISTRY_BAKE_H
#define KILN_REGISTRY_BAKE_H

#include <stddef.h>
#include <stdint.h>

#include "registry/registry.h"

#define BAKE_BOOT_ID_SIZE 65 /* /proc/sys/kernel/random/boot_id is 36 */
#define BAKE_ERROR_MAX 1024  /* bytes of an undo error kept */
#define BAKE_SUMMARY_MAX 256 /* bytes of a layer's step summary */

enum registry_bake_state {
    BAKE_BUILD_RUNNING,   /* a process works on it (or died doing so) */
    BAKE_BUILD_SUCCEEDED, /* terminal: outputs released, the rest undone */
    BAKE_BUILD_FAILED,    /* failed and at least one undo did not succeed yet */
    BAKE_BUILD_CLEANED,   /* terminal: failed and everything undone */
};

enum registry_bake_kind {
    BAKE_KIND_INSTANCE,
    BAKE_KIND_VOLUME,
    BAKE_KIND_SNAPSHOT,
    BAKE_KIND_IMAGE,
};
#define BAKE_KIND_COUNT 4

enum registry_bake_entry_state {
    BAKE_ENTRY_PENDING,  /* intent recorded, the id not known (yet) */
    BAKE_ENTRY_CREATED,  /* exists, id known, to undo if the build fails */
    BAKE_ENTRY_RELEASED, /* kept: an output of the build */
    BAKE_ENTRY_UNDONE,   /* deleted (or found never created) */
};

/* "running", "instance", "pending", ...; NULL outside the enums. */
const char *registry_bake_state_to_string(enum registry_bake_state s);
const char *registry_bake_kind_to_string(enum registry_bake_kind k);
const char *registry_bake_entry_state_to_string(enum registry_bake_entry_state s);
/* The id prefix of a kind's resources: "i", "vol", "snap", "ami". */
const char *registry_bake_kind_prefix(enum registry_bake_kind k);

struct registry_bake_build {
    char id[ID_MAX_SIZE];
    char owner[ACCOUNT_ID_SIZE];
    struct digest template_digest;
    enum registry_bake_state state;
    int64_t pid;
    char boot_id[BAKE_BOOT_ID_SIZE];
    uint64_t start_time;      /* field 22 of /proc/PID/stat: clock ticks since boot */
    int64_t created, updated; /* unix ms */
};

struct registry_bake_entry {
    char build_id[ID_MAX_SIZE];
    uint32_t seq; /* 1, 2, ... in the order of intent */
    enum registry_bake_kind kind;
    char resource_id[ID_MAX_SIZE]; /* "" while pending */
    enum registry_bake_entry_state state;
    char error[BAKE_ERROR_MAX + 1]; /* "" when no undo failed */
    int64_t updated;                /* unix ms */
};

/* Insert a build (its fields checked: -EINVAL naming the field). */
int registry_bake_build_insert(struct registry *reg, const struct registry_bake_build *b);

/* The build `id` into *ret.  -ENOENT absent. */
int registry_bake_build_get(struct registry *reg, const char *id, struct registry_bake_build *ret);

/* Set the state of build `id` (and its updated time to `now_ms`). */
int registry_bake_build_set_state(struct registry *reg, const char *id,
                                  enum registry_bake_state state, int64_t now_ms);

/* Builds not in a terminal state (running or failed), oldest first.  *ret
 * is an array the caller frees with free() (never NULL on success). */
int registry_bake_build_list_active(struct registry *reg, struct registry_bake_build **ret,
                                    size_t *ret_n);

/* Append a pending entry of `kind` to build `id` with the next sequence
 * number, returned in *ret_seq.  -ENOENT no such build. */
int registry_bake_entry_add(struct registry *reg, const char *build_id,
                            enum registry_bake_kind kind, int64_t now_ms, uint32_t *ret_seq);

/* Fill a pending entry with the id of the resource now created (it must
 * be a valid id of the entry's kind).  -ENOENT no such entry, -EINVAL the
 * entry is not pending or the id is malformed. */
int registry_bake_entry_set_created(struct registry *reg, const char *build_id, uint32_t seq,
                                    const char *resource_id, int64_t now_ms);

/* Move an entry to `state` (released or undone), clearing its error; for
 * undone, `resource_id` (may be NULL) is recorded when the entry had none
 * (a pending entry resolved through the resource's tag).  -EINVAL for a
 * move the state machine forbids (released or undone entries are final;
 * a pending entry cannot be released).  Undone again is a no-op (two
 * janitors may race on one build). */
int registry_bake_entry_set_state(struct registry *reg, const char *build_id, uint32_t seq,
                                  enum registry_bake_entry_state state, const char *resource_id,
                                  int64_t now_ms);

/* Record the message of a failed undo on an entry (truncated to
 * BAKE_ERROR_MAX bytes); its state does not change. */
int registry_bake_entry_set_error(struct registry *reg, const char *build_id, uint32_t seq,
                                  const char *message, int64_t now_ms);

/* The entries of build `id` by sequence number.  *ret: free(). */
int registry_bake_entry_list(struct registry *reg, const char *build_id,
                             struct registry_bake_entry **ret, size_t *ret_n);

/* ---- the layer cache ---- */

struct registry_bake_layer {
    struct digest key;
    char snapshot_id[ID_MAX_SIZE];
    bool has_parent;
    struct digest parent_key;
    char summary[BAKE_SUMMARY_MAX + 1];
    int64_t created, last_used; /* unix ms */
    uint64_t size;              /* bytes the layer's snapshot holds */
};

/* Insert a layer.  -EEXIST the key is cached already (the caller keeps
 * the older layer and drops its new snapshot). */
int registry_bake_layer_insert(struct registry *reg, const struct registry_bake_layer *l);

/* The layer of `key` into *ret.  -ENOENT a miss. */
int registry_bake_layer_get(struct registry *reg, const struct digest *key,
                            struct registry_bake_layer *ret);

/* Record a use of `key` at now_ms (a cache hit).  -ENOENT absent. */
int registry_bake_layer_touch(struct registry *reg, const struct digest *key, int64_t now_ms);

/* Every layer, most recently used first.  *ret: free(). */
int registry_bake_layer_list(struct registry *reg, struct registry_bake_layer **ret, size_t *ret_n);

/* Delete the layer of `key`.  -ENOENT absent. */
int registry_bake_layer_delete(struct registry *reg, const struct digest *key);

/* The layers a prune removes, least recently used first: those last used
 * before `older_than_ms` (0: no age limit), then, while the layers left
 * hold more than `max_bytes` (UINT64_MAX: no size limit), the least
 * recently used of them.  Nothing is deleted: the caller deletes each row
 * (registry_bake_layer_delete) and then its snapshot, so that a crash
 * between the two leaks a snapshot rather than leaving a key that names a
 * deleted one.  *ret: free(). */
int registry_bake_layer_prune_list(struct registry *reg, int64_t older_than_ms, uint64_t max_bytes,
                                   struct registry_bake_layer **ret, size_t *ret_n);

/* ---- distribution (migration 12, docs/baking.md "Distribution") ----
 *
 * What a build publishes: the build's columns name, region, image_id and
 * distribution (the spec as JSON, written and read by src/bake/distribute.c;
 * the registry only stores it), and one bake_outputs row per region (the
 * build's own region first), with the state of the image there:
 *   pending  nothing done yet;
 *   copying  a CopyImage of the build's image was started (image_id set once
 *            the copy is accepted; `attempts` numbers the copies);
 *   done     the image is available there with its permissions, deprecation
 *            and tags (terminal);
 *   failed   the last attempt failed (`error` says why); the next
 *            `kiln bake distribute` tries again. */

#define BAKE_NAME_MAX 256         /* bytes of a build's name */
#define BAKE_REGION_SIZE 65       /* region names are at most 64 bytes */
#define BAKE_SPEC_MAX (64 * 1024) /* bytes of a distribution spec */

enum registry_bake_output_state {
    BAKE_OUTPUT_PENDING,
    BAKE_OUTPUT_COPYING,
    BAKE_OUTPUT_DONE,
    BAKE_OUTPUT_FAILED,
};

/* "pending", "copying", "done", "failed"; NULL outside the enum. */
const char *registry_bake_output_state_to_string(enum registry_bake_output_state s);

struct registry_bake_distribution {
    char name[BAKE_NAME_MAX + 1];  /* the template's name */
    char region[BAKE_REGION_SIZE]; /* the build's region */
    char image_id[ID_MAX_SIZE];    /* the build's image there */
    char *spec;                    /* owned: the distribution spec (JSON) */
};

void registry_bake_distribution_release(struct registry_bake_distribution *d);

/* Record what build `build_id` publishes, and insert one pending output
 * row per region of regions[0..n_regions) (regions[0] the build's own
 * region, the rest in the template's order), in one transaction.
 * -ENOENT no such build, -EEXIST recorded already, -EINVAL a malformed
 * value (named). */
int registry_bake_distribution_set(struct registry *reg, const char *build_id,
                                   const struct registry_bake_distribution *d,
                                   const char *const *regions, size_t n_regions, int64_t now_ms);

/* What build `build_id` publishes into *ret (release with
 * registry_bake_distribution_release()).  -ENOENT no such build, or one
 * with nothing recorded. */
int registry_bake_distribution_get(struct registry *reg, const char *build_id,
                                   struct registry_bake_distribution *ret);

struct registry_bake_output {
    char build_id[ID_MAX_SIZE];
    uint32_t seq; /* 0 the build's region, then the template's order */
    char region[BAKE_REGION_SIZE];
    char image_id[ID_MAX_SIZE]; /* "" while not known */
    enum registry_bake_output_state state;
    uint32_t attempts;              /* copies started (0 for the build's region) */
    char error[BAKE_ERROR_MAX + 1]; /* "" unless failed (or a copy still waited for) */
    int64_t started;                /* unix ms the current attempt started, 0 none */
    int64_t updated;                /* unix ms */
};

/* The output rows of build `build_id` by seq.  *ret: free() (never NULL
 * on success). */
int registry_bake_output_list(struct registry *reg, const char *build_id,
                              struct registry_bake_output **ret, size_t *ret_n);

/* Write state, image_id, attempts, error (truncated to BAKE_ERROR_MAX
 * bytes, control characters replaced) and started of the row (o->build_id,
 * o->region), with updated = now_ms.  A done row is final: changing it is
 * -EINVAL, as is done without an image id.  -ENOENT no such row. */
int registry_bake_output_update(struct registry *reg, const struct registry_bake_output *o,
                                int64_t now_ms);

#endif
