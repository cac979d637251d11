/* The bake driver: `kiln bake TEMPLATE` (docs/baking.md, "Running a bake").
 *
 * A bake runs in the calling process, through the service functions the
 * API uses: volumes and snapshots (service/service.h), images (the
 * registry, as RegisterImage), instances through an instance manager of its
 * own (service/instances.h) whose restart policy leaves every instance it
 * did not launch alone.  Every resource is recorded in the build journal
 * (journal.h) before it is made and tagged kiln:bake-build; a failure undoes
 * them newest first; a killed bake is undone by the janitor
 * (bake_janitor()) that `kiln serve` and every bake run at start.
 *
 * Steps, in template order (phase build):
 *   - the layer cache first (cache-key.h): K_0 from the source's root block
 *     map, K_i from K_{i-1}, the interpolated step, the environment and the
 *     step's input files; a hit takes the cached snapshot as the new state
 *     and runs nothing;
 *   - a file-level step (file, mkdir, delete, symlink, append_line,
 *     systemd) on a miss runs offline (offline.h) on a volume made from the
 *     current snapshot, unless it asks for the agent;
 *   - shell and reboot steps run through kiln-agent in a build instance
 *     launched from the current snapshot (a temporary image maps it), kept
 *     running for the following agent steps;
 *   - after each step, the state is captured as a snapshot (a volume
 *     snapshot, or the build instance's root through its open handle with
 *     the guest's / frozen) and entered in the layer cache.
 * Then phase validate (never cached; on the build instance), the candidate
 * image registered `pending`, the tests on a fresh instance launched from
 * it (RunInstances' service function), and the image made `available`.
 *
 * Functions return >= 0 or -errno with a message through error_set().
 */
#ifndef KILN_BAKE_DRIVER_H
#define KILN_BAKE_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>

#include "bake/journal.h"
#include "common/ids.h"
#include "service/instances.h"

struct region;
struct registry_instance;

/* Cancelling a bake from another thread (the CLI's on Ctrl-C or SIGTERM):
 * bake_cancel() marks it and kills the QEMU of its build VMs, so that a
 * step waiting on its guest fails at once; the build then fails with
 * -ECANCELED and undoes everything as for any failure.  Zero-initialise. */
struct bake_cancel {
    pthread_mutex_t lock; /* PTHREAD_MUTEX_INITIALIZER */
    bool requested;
    char build_id[ID_MAX_SIZE]; /* set by bake_run() once the build exists */
};
void bake_cancel(struct bake_cancel *c, const char *region);

struct bake_options {
    const char *data_dir;
    const char *region;        /* the build region */
    const char *template_path; /* native or Packer JSON */
    const char *const *vars;   /* "k=v", in order */
    size_t n_vars;
    const char *const *var_files;
    size_t n_var_files;
    bool no_cache;             /* neither read nor fill the layer cache */
    int on_error;              /* -1: the template's; else enum bake_on_error */
    const char *log_dir;       /* NULL: DATA/bake-logs/<build id> */
    const char *manifest;      /* NULL: the template's manifest.output (if any) */
    FILE *out;                 /* the step lines (stdout) */
    /* `keep`: called with the build instance kept for inspection, returns
     * when the user is done with it (the CLI waits for a signal); NULL:
     * return at once. */
    void (*keep_wait)(void *ud);
    void *keep_ud;
    struct bake_cancel *cancel; /* NULL: not cancellable */
    /* Test hook: exit(2) (as a kill would) once this many steps ran
     * (KILN_BAKE_DIE_AFTER_STEPS); 0: never. */
    unsigned die_after_steps;
};

struct bake_step_report {
    char name[128];
    char type[16];
    char executor[16]; /* offline, agent, cache */
    bool cached;
    double seconds;
    char snapshot_id[ID_MAX_SIZE];
    char key[65]; /* the step's cache key (hex) */
};

struct bake_result {
    char build_id[ID_MAX_SIZE];
    char image_id[ID_MAX_SIZE];
    char image_name[256];
    char source_image_id[ID_MAX_SIZE];
    char region[64];
    char template_digest[65];
    char version[64]; /* output.version with its x numbered, "" without one */
    size_t n_steps;
    struct bake_step_report *steps; /* free() */
    size_t n_tests, tests_passed;
    bool tests_cached; /* passed before on the same state: not run again */
    unsigned instances_launched; /* VMs booted (build + tests) */
    double seconds;
};

/* Bake: 0 and *ret filled (the image available), or -errno with the
 * message of what failed (the build's resources undone per on_error).
 * Release *ret with bake_result_release() either way. */
int bake_run(const struct bake_options *o, struct bake_result *ret);
void bake_result_release(struct bake_result *r);

/* The janitor: undo the builds of region `r` whose process is gone, with
 * instance manager `m` (may be NULL: instances then count as failed
 * undos, retried next time). */
int bake_janitor(struct region *r, struct instance_manager *m, struct bake_janitor_report *ret);

/* The restart policy `kiln serve` applies to a bake's build instances
 * (instance_manager_options.recovery): a live bake's are left alone, a
 * dead one's stopped for its janitor; anything else restarts. */
enum instance_recovery bake_instance_recovery(struct region *r, const struct registry_instance *row,
                                              void *ud);

#endif
