/* Distribution of a build's image (docs/baking.md, "Distribution"): once the
 * image is tested and available in the build's region, copy it to every
 * region of the template's `distribution.regions` (the CopyImage path:
 * service_image_copy_start() and a copy job), wait for each copy, then in
 * every region, the build's included, give the image its launch
 * permissions (`user_ids`, group "all"), its deprecation time
 * (`deprecate_after` from when the distribution was recorded) and the
 * output tags (image tags on the image, snapshot tags on its snapshots).
 *
 * The state lives in the build region's registry (migration 12,
 * registry/bake.h): the spec on the build row, one bake_outputs row per
 * region.  A region that fails is recorded `failed` with its message and
 * does not undo the others; bake_distribute() again (`kiln bake distribute
 * BUILD`) retries exactly the regions that are not `done`, without
 * rebuilding.
 *
 * Design notes:
 *
 * - Who runs the copy jobs.  Jobs run only under DATA/jobs.lock (one
 *   runner per data directory, src/service/jobs.c).  bake_distribute()
 *   tries to take that lock: when it gets it (no `kiln serve` runs jobs
 *   now), it runs its own copy jobs in this process, one after the other,
 *   with service_job_run(), and lets the lock go at the end.  When the lock
 *   is held (a `kiln serve`, or a job runner of this very process), it
 *   wakes this process's runner (service_jobs_notify()) and polls the
 *   destination registries until the copies are done, trying the lock
 *   again at every poll (the serve may stop).  A serve runs only the jobs of
 *   the regions it serves: a copy to another region waits for the lock and
 *   times out with a message saying so.  Running the job without the lock
 *   could run it twice at once with the serve's runner.
 *
 * - Crash safety and retries.  Before a copy starts, its row is set
 *   `copying` with the attempt number counted up and committed; the copy is
 *   started with a client token naming the build and the attempt
 *   ("kiln-bake:<build>:<attempt>", recorded by the destination in the
 *   transaction that accepts the copy).  A process killed between the two
 *   leaves a row `copying` without an image id: the next run reads the
 *   token back and adopts the copy instead of making a second one.  A copy
 *   that failed (image `failed` in the destination) is deregistered and its
 *   snapshots deleted before the next attempt, so that its name is free.
 *
 * - Applying permissions, deprecation and tags is one destination
 *   transaction and idempotent; the row becomes `done` after it commits, so
 *   a crash in between applies them again.
 *
 * - Block public access (per account and region, the registry setting
 *   EnableImageBlockPublicAccess writes): a public image in a region where
 *   it is enabled fails that region with EC2's message; disabling it and
 *   retrying publishes it.
 *
 * Functions return >= 0 or -errno with a message through error_set().
 */
#ifndef KILN_BAKE_DISTRIBUTE_H
#define KILN_BAKE_DISTRIBUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bake/template.h"
#include "registry/bake.h"

#define BAKE_DISTRIBUTE_TIMEOUT_DEFAULT (60 * 60) /* seconds */
#define BAKE_DISTRIBUTE_REGIONS_MAX 64            /* regions a template may name */
#define BAKE_DISTRIBUTE_USERS_MAX 100             /* launch permission accounts */
#define BAKE_DISTRIBUTE_TAGS_MAX 50               /* tags per resource, as EC2 */

/* The distribution spec as the build row keeps it (docs/formats.md, "Bake
 * distribution"): one JSON object, version BAKE_SPEC_VERSION. */
#define BAKE_SPEC_VERSION 1

struct registry_tag;

struct bake_distribution_spec {
    char **user_ids; /* 12-digit account ids given a launch permission */
    size_t n_user_ids;
    bool is_public;                            /* the launch permission group "all" */
    int64_t deprecate_at;                      /* unix ms, 0: none */
    uint64_t deprecate_after_s;                /* what the template said (for the manifest) */
    struct registry_tag *tags, *snapshot_tags; /* on the image, on its snapshots */
    size_t n_tags, n_snapshot_tags;
};

/* Write s as its JSON text into *ret (the caller frees it).  -EINVAL when
 * it takes more than BAKE_SPEC_MAX bytes. */
int bake_distribution_spec_write(const struct bake_distribution_spec *s, char **ret);

/* Read a spec from text[0..len) (need not be NUL-terminated) strictly:
 * version 1, no unknown key, account ids of 12 digits (at most
 * BAKE_DISTRIBUTE_USERS_MAX), groups [] or ["all"], times >= 0, tags by
 * EC2's rules (at most BAKE_DISTRIBUTE_TAGS_MAX each).  Anything else is
 * -EBADMSG with a message (`malformed distribution spec: ...`).  *ret is
 * released with bake_distribution_spec_release().  Fuzzed by
 * tests/fuzz/fuzz-distribution-spec.c (write after parse reads back the
 * same). */
int bake_distribution_spec_parse(const char *text, size_t len, struct bake_distribution_spec *ret);
void bake_distribution_spec_release(struct bake_distribution_spec *s);

/* Record what build `build_id` publishes: its image `image_id` in its
 * region `region`, and t->distribution with t->output.tags and
 * t->output.snapshot_tags (all expanded already), plus t->name.  The
 * deprecation time is fixed here (now + deprecate_after, rounded to the
 * minute as EC2 does), so every region and every retry gets the same.
 * Checked first, nothing written on a refusal (-EINVAL naming the place,
 * `distribution.regions[1]: invalid region name 'Bad'`): region names,
 * account ids (12 digits), groups (only "all"), tags (keys of 1 to 128
 * characters not starting with "aws:", values up to 256, at most 50),
 * counts.  The build's own region may appear in `regions`: it is
 * published in place, not copied.  -EEXIST when the build has its
 * distribution recorded already; -ENOENT no such build. */
int bake_distribution_record(struct registry *reg, const char *build_id, const char *region,
                             const char *image_id, const struct bake_template *t);

struct bake_distribute_options {
    const char *data_dir;
    const char *region; /* the build's region (where its rows are) */
    const char *build_id;
    /* Progress lines ("us-west-2: copying ami-... as ami-... (attempt 1)"),
     * or NULL. */
    void (*log)(void *ud, const char *line);
    void *ud;
    int timeout_s; /* how long to wait for the copies; 0: the default */
};

/* Publish the build's image in every region whose row is not `done` (see
 * above).  Returns 0 when every region is done; otherwise the regions
 * that failed are recorded `failed` and the call returns -errno with a
 * message naming each: -ETIMEDOUT when the only trouble is copies still
 * running at the deadline (their rows stay `copying`: the job goes on in
 * whichever process runs it, and the next call picks it up), else the
 * errno of the first failed region.  Errors before any region is worked
 * on: -ENOENT no such region or build, -EINVAL a build with nothing
 * recorded to distribute or a build image that is not available, -EBADMSG
 * a spec that does not read back. */
int bake_distribute(const struct bake_distribute_options *o);

#endif
