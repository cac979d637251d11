/* The build journal's state machine, undo and janitor (bake/journal.h).
 *
 * Design notes (durability): every transition is one registry write made
 * durable before the action it allows.  The intent row is committed before
 * the resource is created, so a crash between the two leaves a pending
 * entry that the janitor resolves through the resource's tag; an entry is
 * set undone only after the undo callback returned, so a crash in between
 * repeats the undo, which must therefore be idempotent (-ENOENT counts as
 * done).  The build's state changes last.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bake/journal.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/util.h"

/* ---- process identity ---------------------------------------------------- */

int bake_proc_stat_parse(const char *buf, size_t len, char *ret_state, uint64_t *ret_start)
{
    const char *p = NULL, *end = buf + len;
    uint64_t start = 0;
    char state;

    /* "pid (comm) S f4 ... f22 ...": comm may hold spaces and ')', so
     * the fields start after the last ')'. */
    for (size_t i = len; i > 0; i--)
        if (buf[i - 1] == ')') {
            p = buf + i;
            break;
        }
    if (!p || end - p < 3 || p[0] != ' ')
        return error_set(EINVAL, "malformed /proc stat: no state after the command name");
    state = p[1];
    p += 2;
    /* Field 3 is the state; skip fields 4..21 to reach 22. */
    for (int field = 3; field < 22; field++) {
        if (p >= end || *p != ' ')
            return error_set(EINVAL, "malformed /proc stat: field %d missing", field + 1);
        p++;
        if (field + 1 == 22)
            break;
        while (p < end && *p != ' ')
            p++;
    }
    if (p >= end || *p < '0' || *p > '9')
        return error_set(EINVAL, "malformed /proc stat: start time is not a number");
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        if (start > (UINT64_MAX - 9) / 10)
            return error_set(EINVAL, "malformed /proc stat: start time out of range");
        start = start * 10 + (uint64_t)(*p - '0');
    }
    if (p < end && *p != ' ' && *p != '\n')
        return error_set(EINVAL, "malformed /proc stat: start time is not a number");
    *ret_state = state;
    *ret_start = start;
    return 0;
}

static int read_small_file(const char *path, char *buf, size_t size, size_t *ret_len)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return -errno;
    n = pread_full(fd, buf, size, 0);
    if (n < 0)
        return (int)n;
    *ret_len = (size_t)n;
    return 0;
}

static int boot_id(char ret[BAKE_BOOT_ID_SIZE])
{
    char buf[BAKE_BOOT_ID_SIZE];
    size_t len;
    int r = read_small_file("/proc/sys/kernel/random/boot_id", buf, sizeof(buf) - 1, &len);

    if (r < 0)
        return error_set(r, "cannot read '/proc/sys/kernel/random/boot_id': %s", strerror(-r));
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
        len--;
    if (len == 0)
        return error_set(EINVAL, "'/proc/sys/kernel/random/boot_id' is empty");
    buf[len] = '\0';
    memcpy(ret, buf, len + 1);
    return 0;
}

/* State and start time of `pid`: -ENOENT when there is no such process. */
static int proc_stat(int64_t pid, char *ret_state, uint64_t *ret_start)
{
    char path[64], buf[4096];
    size_t len;
    int r;

    snprintf(path, sizeof(path), "/proc/%lld/stat", (long long)pid);
    r = read_small_file(path, buf, sizeof(buf), &len);
    if (r == -ENOENT || r == -ESRCH)
        return -ENOENT;
    if (r < 0)
        return error_set(r, "cannot read '%s': %s", path, strerror(-r));
    r = bake_proc_stat_parse(buf, len, ret_state, ret_start);
    if (r < 0)
        return error_set(r, "cannot parse '%s'", path);
    return 0;
}

int bake_process_of(int64_t pid, struct bake_process *ret)
{
    struct bake_process p = {.pid = pid};
    char state;
    int r;

    if (pid <= 0)
        return error_set(EINVAL, "invalid pid %lld", (long long)pid);
    r = boot_id(p.boot_id);
    if (r < 0)
        return r;
    r = proc_stat(pid, &state, &p.start_time);
    if (r == -ENOENT)
        return error_set(ENOENT, "process %lld not found", (long long)pid);
    if (r < 0)
        return r;
    *ret = p;
    return 0;
}

int bake_process_self(struct bake_process *ret)
{
    return bake_process_of((int64_t)getpid(), ret);
}

int bake_process_alive(const struct bake_process *p)
{
    char now_boot[BAKE_BOOT_ID_SIZE], state;
    uint64_t start;
    int r = boot_id(now_boot);

    if (r < 0)
        return r;
    if (strcmp(now_boot, p->boot_id) != 0)
        return 0; /* another boot: every process of that one is gone */
    if (p->pid <= 0)
        return 0;
    r = proc_stat(p->pid, &state, &start);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    if (start != p->start_time)
        return 0; /* the pid was reused */
    if (state == 'Z' || state == 'X' || state == 'x')
        return 0; /* dead, not reaped yet */
    return 1;
}

/* ---- the state machine ------------------------------------------------- */

int bake_journal_begin(struct registry *reg, const char *owner,
                       const struct digest *template_digest, const struct bake_process *proc,
                       char ret_id[ID_MAX_SIZE])
{
    struct registry_bake_build b = {.state = BAKE_BUILD_RUNNING};
    struct bake_process self;
    int r;

    if (!proc) {
        r = bake_process_self(&self);
        if (r < 0)
            return r;
        proc = &self;
    }
    r = id_generate("bld", b.id, sizeof(b.id));
    if (r < 0)
        return error_set(r, "cannot generate a build id");
    if (!owner || strlen(owner) >= sizeof(b.owner))
        return error_set(EINVAL, "malformed owner for a new build");
    memcpy(b.owner, owner, strlen(owner) + 1);
    b.template_digest = *template_digest;
    b.pid = proc->pid;
    memcpy(b.boot_id, proc->boot_id, sizeof(b.boot_id));
    b.start_time = proc->start_time;
    b.created = b.updated = wall_clock_ms();
    r = registry_bake_build_insert(reg, &b);
    if (r < 0)
        return r;
    memcpy(ret_id, b.id, sizeof(b.id));
    return 0;
}

/* -EINVAL unless the build exists and is running. */
static int must_be_running(struct registry *reg, const char *build_id)
{
    struct registry_bake_build b;
    int r = registry_bake_build_get(reg, build_id, &b);

    if (r < 0)
        return r;
    if (b.state != BAKE_BUILD_RUNNING)
        return error_set(EINVAL, "build '%s' is %s, not running", build_id,
                         registry_bake_state_to_string(b.state));
    return 0;
}

int bake_journal_intent(struct registry *reg, const char *build_id, enum registry_bake_kind kind,
                        uint32_t *ret_seq)
{
    int r = registry_begin(reg);

    if (r < 0)
        return r;
    r = must_be_running(reg, build_id);
    if (r >= 0)
        r = registry_bake_entry_add(reg, build_id, kind, wall_clock_ms(), ret_seq);
    r = registry_end(reg, r);
    return r < 0 ? r : 0;
}

int bake_journal_created(struct registry *reg, const char *build_id, uint32_t seq,
                         const char *resource_id)
{
    return registry_bake_entry_set_created(reg, build_id, seq, resource_id, wall_clock_ms());
}

int bake_journal_release(struct registry *reg, const char *build_id, uint32_t seq)
{
    return registry_bake_entry_set_state(reg, build_id, seq, BAKE_ENTRY_RELEASED, NULL, wall_clock_ms());
}

/* Record a failed undo of entry e (message of error r) on the entry. */
static void record_failure(struct registry *reg, const struct registry_bake_entry *e, int r)
{
    char msg[512];

    error_describe(r, msg, sizeof(msg));
    if (registry_bake_entry_set_error(reg, e->build_id, e->seq, msg, wall_clock_ms()) < 0)
        log_warning("cannot record the failed undo of journal entry %u of build '%s': %s", e->seq,
                    e->build_id, error_message() ? error_message() : "?");
    /* Leave the undo's own message as the one the caller sees. */
    error_set(r, "cannot undo %s '%s' (journal entry %u of build '%s'): %s",
              registry_bake_kind_to_string(e->kind), e->resource_id[0] ? e->resource_id : "?",
              e->seq, e->build_id, msg);
}

static bool id_in_entries(const struct registry_bake_entry *list, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].resource_id, id) == 0)
            return true;
    return false;
}

static void free_ids(char **ids, size_t n)
{
    for (size_t i = 0; ids && i < n; i++)
        free(ids[i]);
    free(ids);
}

/* A pending entry: undo every resource of its kind tagged with the build
 * that no other entry records.  Returns 0 (undone, id recorded when one
 * was found) or -errno. */
static int undo_pending(struct registry *reg, const struct bake_undo_ops *ops,
                        const struct registry_bake_entry *e, const struct registry_bake_entry *all,
                        size_t n_all)
{
    char **ids = NULL;
    size_t n_ids = 0;
    const char *found = NULL;
    int r;

    if (!ops->lookup)
        return error_set(ENOTSUP, "no tag lookup to resolve a pending %s",
                         registry_bake_kind_to_string(e->kind));
    r = ops->lookup(ops->data, e->kind, e->build_id, &ids, &n_ids);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n_ids; i++) {
        if (!ids[i] || !id_is_valid(registry_bake_kind_prefix(e->kind), ids[i]) ||
            id_in_entries(all, n_all, ids[i]))
            continue;
        r = ops->undo(ops->data, e->kind, ids[i]);
        if (r < 0 && r != -ENOENT)
            break;
        r = 0;
        if (!found)
            found = ids[i];
    }
    if (r >= 0)
        r = registry_bake_entry_set_state(reg, e->build_id, e->seq, BAKE_ENTRY_UNDONE, found,
                                          wall_clock_ms());
    free_ids(ids, n_ids);
    return r;
}

static int undo_all(struct registry *reg, const char *build_id, const struct bake_undo_ops *ops,
                    struct bake_undo_report *report)
{
    _cleanup_free_ struct registry_bake_entry *list = NULL;
    size_t n = 0;
    int first = 0, r;

    if (!ops || !ops->undo)
        return error_set(EINVAL, "no undo callbacks for build '%s'", build_id);
    r = registry_bake_entry_list(reg, build_id, &list, &n);
    if (r < 0)
        return r;
    for (size_t i = n; i > 0; i--) {
        const struct registry_bake_entry *e = &list[i - 1];

        if (e->state == BAKE_ENTRY_RELEASED || e->state == BAKE_ENTRY_UNDONE)
            continue;
        if (e->state == BAKE_ENTRY_PENDING) {
            r = undo_pending(reg, ops, e, list, n);
        } else {
            r = ops->undo(ops->data, e->kind, e->resource_id);
            if (r >= 0 || r == -ENOENT)
                r = registry_bake_entry_set_state(reg, build_id, e->seq, BAKE_ENTRY_UNDONE, NULL,
                                                  wall_clock_ms());
        }
        if (r < 0) {
            record_failure(reg, e, r);
            if (report)
                report->failed++;
            if (!first)
                first = r;
            continue;
        }
        if (report)
            report->undone++;
    }
    if (first) /* the first failure's message is the one kept */
        return first;
    return 0;
}

static int end_build(struct registry *reg, const char *build_id, const struct bake_undo_ops *ops,
                     struct bake_undo_report *report, enum registry_bake_state ok_state)
{
    struct bake_undo_report local = {0};
    _cleanup_free_ char *msg = NULL;
    int r, r2;

    r = undo_all(reg, build_id, ops, &local);
    if (report) {
        report->undone += local.undone;
        report->failed += local.failed;
    }
    if (r < 0 && local.failed == 0)
        return r; /* the journal could not be read: change nothing */
    if (r < 0 && error_message())
        msg = xstrdup(error_message());
    r2 = registry_bake_build_set_state(reg, build_id, r < 0 ? BAKE_BUILD_FAILED : ok_state,
                                       wall_clock_ms());
    if (r2 < 0)
        return r2;
    if (r < 0 && msg)
        error_set(r, "%s", msg);
    return r;
}

int bake_journal_finish(struct registry *reg, const char *build_id, const struct bake_undo_ops *ops,
                        struct bake_undo_report *report)
{
    int r = must_be_running(reg, build_id);

    if (r < 0)
        return r;
    return end_build(reg, build_id, ops, report, BAKE_BUILD_SUCCEEDED);
}

int bake_journal_fail(struct registry *reg, const char *build_id, const struct bake_undo_ops *ops,
                      struct bake_undo_report *report)
{
    struct registry_bake_build b;
    int r = registry_bake_build_get(reg, build_id, &b);

    if (r < 0)
        return r;
    if (b.state != BAKE_BUILD_RUNNING && b.state != BAKE_BUILD_FAILED)
        return error_set(EINVAL, "build '%s' is %s already", build_id,
                         registry_bake_state_to_string(b.state));
    return end_build(reg, build_id, ops, report, BAKE_BUILD_CLEANED);
}

/* ---- the janitor ------------------------------------------------------- */

int bake_janitor_run(struct registry *reg, const struct bake_undo_ops *ops,
                     struct bake_janitor_report *report)
{
    _cleanup_free_ struct registry_bake_build *builds = NULL;
    struct bake_janitor_report rep = {0};
    size_t n = 0;
    int worked = 0, r;

    r = registry_bake_build_list_active(reg, &builds, &n);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++) {
        struct bake_process p = {.pid = builds[i].pid, .start_time = builds[i].start_time};
        struct bake_undo_report u = {0};

        rep.builds_seen++;
        memcpy(p.boot_id, builds[i].boot_id, sizeof(p.boot_id));
        r = bake_process_alive(&p);
        if (r < 0)
            return r;
        if (r > 0) {
            rep.builds_alive++;
            continue;
        }
        worked++;
        r = bake_journal_fail(reg, builds[i].id, ops, &u);
        rep.entries_undone += u.undone;
        rep.entries_failed += u.failed;
        if (r < 0 && u.failed == 0)
            return r; /* the registry failed, not an undo */
        if (r < 0)
            rep.builds_failed++;
        else
            rep.builds_cleaned++;
    }
    if (report)
        *report = rep;
    return worked;
}
