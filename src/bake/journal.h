/* The build journal: a build's state machine over the registry
 * (registry/bake.h), its undo in reverse order, and the janitor that undoes
 * the builds whose process died (docs/baking.md, "Journal, janitor and
 * layer cache").
 *
 * The driver's protocol, per resource it makes:
 *
 *     bake_journal_intent(reg, id, BAKE_KIND_INSTANCE, &seq);  // pending
 *     create it, tagged kiln:bake-build = id  (BAKE_BUILD_TAG)
 *     bake_journal_created(reg, id, seq, "i-...");             // created
 *     ... later, for an output: bake_journal_release(reg, id, seq);
 *
 * and at the end bake_journal_finish() (success: everything not released
 * is undone, newest first) or bake_journal_fail() (everything not released
 * is undone, newest first).  A crash at any point leaves rows that tell the
 * janitor what to undo: a pending entry with no id is resolved through the
 * tag (the `lookup` callback), since the resource may or may not exist.
 *
 * Deleting is the caller's: `struct bake_undo_ops` holds one undo per kind
 * plus the tag lookup (the driver passes the service deletes; tests pass
 * fakes).  An undo returns 0 when the resource is gone, -ENOENT when it was
 * gone already (also success: undo is idempotent), or another -errno with
 * error_set(); that failure is written to the entry (`error`), the entry
 * stays `created`, the build becomes `failed` (not `cleaned`), and the next
 * janitor pass tries again.  Nothing is forgotten.
 *
 * A build's process is identified by pid, the kernel's boot id and the
 * process start time (field 22 of /proc/PID/stat, clock ticks since boot):
 * a pid that is alive after a reboot, or alive but started at another time
 * (the pid was reused), or a zombie, is not the build's process.
 *
 * Functions return >= 0 or -errno with a message naming the build through
 * error_set().  No globals; one registry handle per thread as usual.
 */
#ifndef KILN_BAKE_JOURNAL_H
#define KILN_BAKE_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry/bake.h"

/* The tag the driver puts on every resource a build makes. */
#define BAKE_BUILD_TAG "kiln:bake-build"

struct bake_undo_ops {
    /* Delete resource `id` of `kind`.  0 deleted, -ENOENT already gone
     * (success), other -errno a failure (with error_set()).  Required. */
    int (*undo)(void *data, enum registry_bake_kind kind, const char *id);
    /* The ids of the resources of `kind` tagged BAKE_BUILD_TAG = build_id:
     * *ret an array of strings, each and the array freed by the journal
     * with free() (NULL when *ret_n is 0).  Used for pending entries; when
     * NULL, a pending entry cannot be resolved and counts as a failed undo. */
    int (*lookup)(void *data, enum registry_bake_kind kind, const char *build_id, char ***ret,
                  size_t *ret_n);
    void *data;
};

/* Who runs a build. */
struct bake_process {
    int64_t pid;
    char boot_id[BAKE_BOOT_ID_SIZE];
    uint64_t start_time; /* clock ticks since boot */
};

/* The identity of the calling process, or of `pid` (>0). */
int bake_process_self(struct bake_process *ret);
int bake_process_of(int64_t pid, struct bake_process *ret);

/* 1 when p is a live process on this boot with the same start time, 0 when
 * it is gone (absent, zombie, other boot, reused pid), -errno when that
 * cannot be told. */
int bake_process_alive(const struct bake_process *p);

/* Parse the content of /proc/PID/stat (buf[len], not NUL-terminated):
 * the state letter and the start time.  -EINVAL when malformed. */
int bake_proc_stat_parse(const char *buf, size_t len, char *ret_state, uint64_t *ret_start);

/* Start a build owned by `owner` (12 digits) for a template of digest
 * `template_digest`, run by `proc` (NULL: this process).  The new id
 * (bld-<17 hex>) goes to ret_id. */
int bake_journal_begin(struct registry *reg, const char *owner,
                       const struct digest *template_digest, const struct bake_process *proc,
                       char ret_id[ID_MAX_SIZE]);

/* Record the intent to create a resource (pending, before creating it). */
int bake_journal_intent(struct registry *reg, const char *build_id, enum registry_bake_kind kind,
                        uint32_t *ret_seq);
/* Record the id of the resource entry `seq` created. */
int bake_journal_created(struct registry *reg, const char *build_id, uint32_t seq,
                         const char *resource_id);
/* Keep the resource of entry `seq` as an output of the build. */
int bake_journal_release(struct registry *reg, const char *build_id, uint32_t seq);

/* What an undo pass did. */
struct bake_undo_report {
    size_t undone; /* entries undone now (already gone included) */
    size_t failed; /* entries whose undo failed (error recorded) */
};

/* Undo, newest first, every entry of the build neither released nor
 * undone.  finish (the build must be running) then sets the build
 * `succeeded`; fail (running, or failed: a retry) sets it `cleaned`.  When
 * an undo fails, the build is set `failed` instead and the -errno of the
 * first failed undo is returned (its message recorded with error_set(); each
 * failure is also kept in its entry's `error`).  0 when every undo worked.
 * `report` (may be NULL) is added to. */
int bake_journal_finish(struct registry *reg, const char *build_id, const struct bake_undo_ops *ops,
                        struct bake_undo_report *report);
int bake_journal_fail(struct registry *reg, const char *build_id, const struct bake_undo_ops *ops,
                      struct bake_undo_report *report);

struct bake_janitor_report {
    size_t builds_seen;    /* running or failed builds */
    size_t builds_alive;   /* left alone: their process runs */
    size_t builds_cleaned; /* fully undone now */
    size_t builds_failed;  /* some undo failed: left failed for next time */
    size_t entries_undone, entries_failed;
};

/* The janitor: for every build running or failed whose process is gone,
 * bake_journal_fail().  Returns the number of builds it worked on, or
 * -errno when the registry could not be read; a failed undo is not an
 * error of the pass (it is in the report and in the entry).  `report` may
 * be NULL. */
int bake_janitor_run(struct registry *reg, const struct bake_undo_ops *ops,
                     struct bake_janitor_report *report);

#endif
