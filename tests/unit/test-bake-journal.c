/* The build journal (bake/journal.h) and its registry tables
 * (registry/bake.h).
 *
 * Resources live in a fake "world": a directory where a resource is a file
 * named by its id holding the build id (its kiln:bake-build tag); the undo
 * callback unlinks it (-ENOENT when it is gone already) and the lookup
 * callback lists the files of a kind tagged with a build.  Checked: undo
 * runs newest first and skips released entries; finish undoes the
 * temporaries and keeps the outputs; an undo of a resource already gone is
 * fine; a failed undo is recorded in its entry and the build stays failed
 * until a retry succeeds; a build whose process was killed with SIGKILL
 * mid-build is undone by the janitor (a pending entry whose resource exists
 * is resolved through the tag, one never created is simply undone), while a
 * live build is left alone; the process identity check refuses another
 * boot, a reused pid (other start time), a zombie and a missing process;
 * the registry refuses bad values and impossible state moves; the layer
 * cache lists, touches and prunes by age and by size.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bake/journal.h"
#include "common/error.h"
#include "registry/bake.h"
#include "registry/registry.h"
#include "tap.h"

#define OWNER "111111111111"

struct world {
    char dir[256];
    char undone[16][ID_MAX_SIZE]; /* the undo calls, in order */
    size_t n_undone;
    char stuck[ID_MAX_SIZE]; /* undo of this id fails with -EBUSY */
};

static void world_path(const struct world *w, const char *id, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", w->dir, id);
}

/* Create resource `id` tagged with `build`. */
static void world_create(const struct world *w, const char *id, const char *build)
{
    char path[512];
    FILE *f;

    world_path(w, id, path, sizeof(path));
    f = fopen(path, "w");
    if (f) {
        fputs(build, f);
        fclose(f);
    }
}

static bool world_has(const struct world *w, const char *id)
{
    char path[512];

    world_path(w, id, path, sizeof(path));
    return access(path, F_OK) == 0;
}

static int fake_undo(void *data, enum registry_bake_kind kind, const char *id)
{
    struct world *w = data;
    char path[512];

    if (strncmp(id, registry_bake_kind_prefix(kind), strlen(registry_bake_kind_prefix(kind))))
        return error_set(EINVAL, "undo of '%s' as a %s", id, registry_bake_kind_to_string(kind));
    if (w->n_undone < 16)
        snprintf(w->undone[w->n_undone++], ID_MAX_SIZE, "%s", id);
    if (strcmp(id, w->stuck) == 0)
        return error_set(EBUSY, "resource '%s' is stuck", id);
    world_path(w, id, path, sizeof(path));
    if (unlink(path) < 0)
        return errno == ENOENT ? -ENOENT : error_set(errno, "cannot delete '%s'", id);
    return 0;
}

static int fake_lookup(void *data, enum registry_bake_kind kind, const char *build_id, char ***ret,
                       size_t *ret_n)
{
    struct world *w = data;
    const char *prefix = registry_bake_kind_prefix(kind);
    DIR *d = opendir(w->dir);
    struct dirent *de;
    char **ids = NULL;
    size_t n = 0;

    if (!d)
        return error_set(errno, "cannot list the world");
    while ((de = readdir(d))) {
        char path[512], tag[64] = "";
        FILE *f;

        if (strncmp(de->d_name, prefix, strlen(prefix)) || de->d_name[strlen(prefix)] != '-')
            continue;
        world_path(w, de->d_name, path, sizeof(path));
        f = fopen(path, "r");
        if (!f)
            continue;
        if (!fgets(tag, sizeof(tag), f))
            tag[0] = '\0';
        fclose(f);
        if (strcmp(tag, build_id) != 0)
            continue;
        ids = realloc(ids, (n + 1) * sizeof(*ids));
        ids[n++] = strdup(de->d_name);
    }
    closedir(d);
    *ret = ids;
    *ret_n = n;
    return 0;
}

static struct bake_undo_ops ops_for(struct world *w)
{
    struct bake_undo_ops ops = {.undo = fake_undo, .lookup = fake_lookup, .data = w};
    return ops;
}

static struct digest tmpl_digest(int n)
{
    struct digest d;

    memset(&d, n, sizeof(d));
    return d;
}

/* Journal one resource: intent, create in the world, created. */
static uint32_t make(struct registry *reg, struct world *w, const char *build,
                     enum registry_bake_kind kind, const char *id)
{
    uint32_t seq = 0;
    int r = bake_journal_intent(reg, build, kind, &seq);

    if (r >= 0) {
        world_create(w, id, build);
        r = bake_journal_created(reg, build, seq, id);
    }
    if (r < 0)
        printf("# make %s: %s\n", id, error_message());
    return seq;
}

static enum registry_bake_state build_state(struct registry *reg, const char *id)
{
    struct registry_bake_build b;

    if (registry_bake_build_get(reg, id, &b) < 0)
        return (enum registry_bake_state) - 1;
    return b.state;
}

static void test_order(struct registry *reg, struct world *w)
{
    char id[ID_MAX_SIZE];
    struct digest d = tmpl_digest(1);
    struct registry_bake_entry *list = NULL;
    struct bake_undo_report rep = {0};
    struct bake_undo_ops ops = ops_for(w);
    size_t n = 0;
    uint32_t snap;

    w->n_undone = 0;
    is_int(bake_journal_begin(reg, OWNER, &d, NULL, id), 0, "begin a build");
    ok(id_is_valid("bld", id), "the build id is bld-<17 hex>: %s", id);
    is_int(build_state(reg, id), BAKE_BUILD_RUNNING, "a new build is running");
    make(reg, w, id, BAKE_KIND_INSTANCE, "i-00000000000000001");
    make(reg, w, id, BAKE_KIND_VOLUME, "vol-00000000000000001");
    snap = make(reg, w, id, BAKE_KIND_SNAPSHOT, "snap-00000000000000001");
    make(reg, w, id, BAKE_KIND_IMAGE, "ami-00000000000000001");
    is_int(bake_journal_release(reg, id, snap), 0, "release the snapshot (an output)");

    is_int(bake_journal_fail(reg, id, &ops, &rep), 0, "fail undoes the build");
    is_int(w->n_undone, 3, "three undo calls");
    is_str(w->undone[0], "ami-00000000000000001", "newest first: the image");
    is_str(w->undone[1], "vol-00000000000000001", "then the volume (snapshot released)");
    is_str(w->undone[2], "i-00000000000000001", "then the instance");
    is_int(rep.undone, 3, "report: three undone");
    is_int(rep.failed, 0, "report: none failed");
    ok(world_has(w, "snap-00000000000000001"), "the released snapshot is kept");
    ok(!world_has(w, "i-00000000000000001") && !world_has(w, "vol-00000000000000001") &&
           !world_has(w, "ami-00000000000000001"),
       "the others are gone");
    is_int(build_state(reg, id), BAKE_BUILD_CLEANED, "the build is cleaned");
    is_int(registry_bake_entry_list(reg, id, &list, &n), 0, "list the journal");
    is_int(n, 4, "four entries");
    if (n == 4) {
        is_int(list[0].seq, 1, "entries by sequence number");
        is_int(list[0].state, BAKE_ENTRY_UNDONE, "instance undone");
        is_int(list[2].state, BAKE_ENTRY_RELEASED, "snapshot released");
        is_str(list[2].resource_id, "snap-00000000000000001", "snapshot id recorded");
    }
    free(list);
    ok(bake_journal_fail(reg, id, &ops, NULL) == -EINVAL, "a cleaned build cannot fail again");
    is_int(registry_bake_entry_set_state(reg, id, 1, BAKE_ENTRY_UNDONE, NULL, 5), 0,
           "undone again is a no-op (two janitors)");
    ok(registry_bake_entry_set_state(reg, id, 3, BAKE_ENTRY_UNDONE, NULL, 5) == -EINVAL,
       "a released entry cannot be undone");
    ok(bake_journal_intent(reg, id, BAKE_KIND_VOLUME, &snap) == -EINVAL,
       "no intent on a cleaned build: %s", error_message());
}

static void test_finish(struct registry *reg, struct world *w)
{
    char id[ID_MAX_SIZE];
    struct digest d = tmpl_digest(2);
    struct bake_undo_ops ops = ops_for(w);
    uint32_t ami;

    w->n_undone = 0;
    is_int(bake_journal_begin(reg, OWNER, &d, NULL, id), 0, "begin a second build");
    make(reg, w, id, BAKE_KIND_INSTANCE, "i-00000000000000002");
    ami = make(reg, w, id, BAKE_KIND_IMAGE, "ami-00000000000000002");
    is_int(bake_journal_release(reg, id, ami), 0, "release the image");
    is_int(bake_journal_finish(reg, id, &ops, NULL), 0, "finish");
    is_int(w->n_undone, 1, "finish undid one resource");
    ok(!world_has(w, "i-00000000000000002"), "the build instance is gone");
    ok(world_has(w, "ami-00000000000000002"), "the image is kept");
    is_int(build_state(reg, id), BAKE_BUILD_SUCCEEDED, "the build succeeded");
    ok(bake_journal_finish(reg, id, &ops, NULL) == -EINVAL, "finish twice is refused");
}

static void test_idempotent_and_failure(struct registry *reg, struct world *w)
{
    char id[ID_MAX_SIZE];
    struct digest d = tmpl_digest(3);
    struct bake_undo_ops ops = ops_for(w);
    struct registry_bake_entry *list = NULL;
    struct bake_undo_report rep = {0};
    size_t n = 0;
    int r;

    w->n_undone = 0;
    is_int(bake_journal_begin(reg, OWNER, &d, NULL, id), 0, "begin a third build");
    make(reg, w, id, BAKE_KIND_INSTANCE, "i-00000000000000003");
    make(reg, w, id, BAKE_KIND_VOLUME, "vol-00000000000000003");
    make(reg, w, id, BAKE_KIND_SNAPSHOT, "snap-00000000000000003");
    /* The volume went away on its own; the instance will not go. */
    {
        char path[512];
        world_path(w, "vol-00000000000000003", path, sizeof(path));
        unlink(path);
    }
    snprintf(w->stuck, sizeof(w->stuck), "i-00000000000000003");
    r = bake_journal_fail(reg, id, &ops, &rep);
    is_int(r, -EBUSY, "fail reports the failed undo");
    ok(error_message() && strstr(error_message(), "i-00000000000000003") &&
           strstr(error_message(), id),
       "the message names the resource and the build: %s", error_message());
    is_int(rep.undone, 2, "the snapshot and the already-gone volume count as undone");
    is_int(rep.failed, 1, "one failure");
    is_int(build_state(reg, id), BAKE_BUILD_FAILED, "the build stays failed, not cleaned");
    ok(world_has(w, "i-00000000000000003"), "the stuck instance is still there");
    is_int(registry_bake_entry_list(reg, id, &list, &n), 0, "list the journal");
    if (n == 3) {
        is_int(list[0].state, BAKE_ENTRY_CREATED, "the instance's entry is still created");
        ok(strstr(list[0].error, "stuck") != NULL, "its error is recorded: '%s'", list[0].error);
        is_int(list[1].state, BAKE_ENTRY_UNDONE, "the volume's entry is undone");
        is_str(list[1].error, "", "with no error");
    } else {
        ok(0, "three entries (got %zu)", n);
    }
    free(list);
    list = NULL;

    /* A retry once the resource lets go. */
    w->stuck[0] = '\0';
    w->n_undone = 0;
    is_int(bake_journal_fail(reg, id, &ops, NULL), 0, "a retry succeeds");
    is_int(w->n_undone, 1, "only the leftover is undone again");
    is_int(build_state(reg, id), BAKE_BUILD_CLEANED, "the build is cleaned");
    ok(!world_has(w, "i-00000000000000003"), "the instance is gone");
    is_int(registry_bake_entry_list(reg, id, &list, &n), 0, "list the journal again");
    if (n == 3)
        is_str(list[0].error, "", "the error is cleared once undone");
    free(list);
}

static void test_registry_refusals(struct registry *reg)
{
    struct registry_bake_build b = {.state = BAKE_BUILD_RUNNING, .pid = 1, .start_time = 1};
    struct registry_bake_entry *list = NULL;
    char id[ID_MAX_SIZE];
    struct digest d = tmpl_digest(4);
    struct bake_process p = {.pid = 1, .boot_id = "x", .start_time = 1};
    uint32_t seq = 0;
    size_t n = 9;

    snprintf(b.id, sizeof(b.id), "bld-123");
    snprintf(b.owner, sizeof(b.owner), OWNER);
    snprintf(b.boot_id, sizeof(b.boot_id), "boot");
    ok(registry_bake_build_insert(reg, &b) == -EINVAL, "malformed build id refused: %s",
       error_message());
    snprintf(b.id, sizeof(b.id), "bld-0000000000000000a");
    snprintf(b.owner, sizeof(b.owner), "12ab");
    ok(registry_bake_build_insert(reg, &b) == -EINVAL, "malformed owner refused");
    snprintf(b.owner, sizeof(b.owner), OWNER);
    b.pid = 0;
    ok(registry_bake_build_insert(reg, &b) == -EINVAL, "pid 0 refused");
    b.pid = 1;
    b.boot_id[0] = '\0';
    ok(registry_bake_build_insert(reg, &b) == -EINVAL, "empty boot id refused");
    ok(registry_bake_build_get(reg, "bld-0000000000000000a", &b) == -ENOENT,
       "nothing was inserted");
    ok(bake_journal_intent(reg, "bld-0000000000000000a", BAKE_KIND_VOLUME, &seq) == -ENOENT,
       "intent for an unknown build is -ENOENT: %s", error_message());

    is_int(bake_journal_begin(reg, OWNER, &d, &p, id), 0, "begin with a given process");
    ok(bake_journal_begin(reg, "bad", &d, &p, id) == -EINVAL, "bad owner refused");
    is_int(bake_journal_intent(reg, id, BAKE_KIND_VOLUME, &seq), 0, "intent");
    is_int(seq, 1, "first entry is 1");
    ok(bake_journal_intent(reg, id, (enum registry_bake_kind)9, &seq) == -EINVAL,
       "invalid kind refused");
    ok(bake_journal_release(reg, id, seq) == -EINVAL, "a pending entry cannot be released: %s",
       error_message());
    ok(bake_journal_created(reg, id, seq, "snap-00000000000000001") == -EINVAL,
       "an id of another kind is refused: %s", error_message());
    ok(bake_journal_created(reg, id, seq, "vol-1") == -EINVAL, "a malformed id is refused");
    ok(bake_journal_created(reg, id, 7, "vol-00000000000000009") == -ENOENT,
       "an unknown entry is -ENOENT");
    is_int(bake_journal_created(reg, id, seq, "vol-00000000000000009"), 0, "created");
    ok(bake_journal_created(reg, id, seq, "vol-0000000000000000a") == -EINVAL,
       "created twice is refused");
    is_int(registry_bake_entry_list(reg, id, &list, &n), 0, "list");
    if (n == 1)
        is_str(list[0].resource_id, "vol-00000000000000009", "the first id is kept");
    free(list);
    is_int(bake_journal_release(reg, id, seq), 0, "release");
    ok(registry_bake_entry_set_state(reg, id, seq, BAKE_ENTRY_UNDONE, NULL, 1) == -EINVAL,
       "a released entry is final");
}

static void test_process_identity(void)
{
    struct bake_process self, p;
    char state = 0;
    uint64_t start = 0;
    static const char weird[] = "42 (a) b) (c d) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 "
                                "123456 19 20\n";
    pid_t child;

    is_int(bake_proc_stat_parse(weird, strlen(weird), &state, &start), 0,
           "a command name with ') (' and spaces parses");
    is_int(state, 'S', "state after the last ')'");
    is_int(start, 123456, "field 22 is the start time");
    ok(bake_proc_stat_parse("42 (x) S 1 2", 12, &state, &start) == -EINVAL,
       "a short stat is refused: %s", error_message());
    ok(bake_proc_stat_parse("no paren", 8, &state, &start) == -EINVAL,
       "a stat without ')' is refused");

    is_int(bake_process_self(&self), 0, "identity of this process");
    is_int(bake_process_alive(&self), 1, "this process is alive");
    {
        /* This binary's name has no space: sscanf can split its stat. */
        unsigned long long want = 0;
        FILE *f = fopen("/proc/self/stat", "r");
        int got = f ? fscanf(f,
                             "%*d %*s %*c %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s "
                             "%*s %*s %*s %*s %*s %*s %llu",
                             &want)
                    : 0;
        if (f)
            fclose(f);
        ok(got == 1 && want == self.start_time, "the start time is field 22 (%llu)", want);
    }
    p = self;
    p.start_time++;
    is_int(bake_process_alive(&p), 0, "same pid, other start time: reused, not alive");
    p = self;
    snprintf(p.boot_id, sizeof(p.boot_id), "00000000-0000-0000-0000-000000000000");
    is_int(bake_process_alive(&p), 0, "another boot: not alive");

    child = fork();
    if (child == 0)
        _exit(0);
    if (child > 0) {
        siginfo_t si;
        memset(&si, 0, sizeof(si));
        waitid(P_PID, (id_t)child, &si, WEXITED | WNOWAIT);
        p = self;
        p.pid = child;
        if (bake_process_of(child, &p) == 0)
            is_int(bake_process_alive(&p), 0, "a zombie is not alive");
        else
            ok(0, "cannot read the zombie's identity: %s", error_message());
        waitpid(child, NULL, 0);
        is_int(bake_process_alive(&p), 0, "a reaped process is not alive");
    }
}

/* The janitor keeps a failed undo for the next pass, then finishes. */
static void test_janitor_retry(struct registry *reg, struct world *w)
{
    struct bake_process dead;
    struct bake_janitor_report rep;
    struct bake_undo_ops ops = ops_for(w);
    struct digest d = tmpl_digest(5);
    char id[ID_MAX_SIZE];
    pid_t child = fork();

    if (child == 0)
        _exit(0);
    if (child < 0 || bake_process_self(&dead) < 0) {
        ok(0, "fork");
        return;
    }
    waitpid(child, NULL, 0);
    dead.pid = child; /* reaped: gone (or, if reused, another start time) */
    is_int(bake_journal_begin(reg, OWNER, &d, &dead, id), 0, "begin a build of a dead process");
    make(reg, w, id, BAKE_KIND_VOLUME, "vol-00000000000000005");
    snprintf(w->stuck, sizeof(w->stuck), "vol-00000000000000005");
    is_int(bake_janitor_run(reg, &ops, &rep), 1, "the janitor works on the dead build");
    is_int(rep.builds_failed, 1, "its undo failed");
    is_int(rep.entries_failed, 1, "one entry failed");
    is_int(build_state(reg, id), BAKE_BUILD_FAILED, "the build is failed");
    ok(world_has(w, "vol-00000000000000005"), "the volume is still there");
    w->stuck[0] = '\0';
    is_int(bake_janitor_run(reg, &ops, &rep), 1, "the next pass takes it up again");
    is_int(rep.builds_cleaned, 1, "and cleans it");
    ok(!world_has(w, "vol-00000000000000005"), "the volume is gone");
    is_int(build_state(reg, id), BAKE_BUILD_CLEANED, "the build is cleaned");
}

/* A child runs a build and is killed mid-way; the janitor undoes it. */
static void test_crash(struct world *w, const char *dbpath)
{
    int fds[2];
    pid_t child;
    char id[ID_MAX_SIZE] = "";
    struct registry *reg = NULL;
    struct bake_janitor_report rep;
    struct bake_undo_ops ops = ops_for(w);
    struct registry_bake_entry *list = NULL;
    size_t n = 0;
    ssize_t got;

    if (pipe(fds) < 0) {
        ok(0, "pipe");
        return;
    }
    child = fork();
    if (child == 0) {
        struct registry *creg;
        struct digest d = tmpl_digest(9);
        uint32_t seq;

        close(fds[0]);
        if (registry_open(dbpath, &creg) < 0 || bake_journal_begin(creg, OWNER, &d, NULL, id) < 0)
            _exit(1);
        make(creg, w, id, BAKE_KIND_INSTANCE, "i-00000000000000009");
        make(creg, w, id, BAKE_KIND_VOLUME, "vol-00000000000000009");
        /* Crash window 1: the snapshot exists, its id was never recorded. */
        if (bake_journal_intent(creg, id, BAKE_KIND_SNAPSHOT, &seq) < 0)
            _exit(1);
        world_create(w, "snap-00000000000000009", id);
        /* Crash window 2: the image was about to be created. */
        if (bake_journal_intent(creg, id, BAKE_KIND_IMAGE, &seq) < 0)
            _exit(1);
        if (write(fds[1], id, sizeof(id)) != (ssize_t)sizeof(id))
            _exit(1);
        for (;;)
            pause();
    }
    close(fds[1]);
    got = read(fds[0], id, sizeof(id));
    close(fds[0]);
    is_int(got, (ssize_t)sizeof(id), "the child began a build");
    if (got != (ssize_t)sizeof(id)) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        return;
    }
    is_int(registry_open(dbpath, &reg), 0, "open the child's registry");
    w->n_undone = 0;
    is_int(bake_janitor_run(reg, &ops, &rep), 0, "janitor while the child runs: no work");
    is_int(rep.builds_alive, 1, "the live build is left alone");
    is_int(w->n_undone, 0, "nothing undone");

    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    is_int(bake_janitor_run(reg, &ops, &rep), 1, "janitor after SIGKILL works on one build");
    is_int(rep.builds_cleaned, 1, "it is cleaned");
    is_int(rep.entries_undone, 4, "four entries undone");
    is_int(rep.entries_failed, 0, "none failed");
    ok(!world_has(w, "i-00000000000000009") && !world_has(w, "vol-00000000000000009") &&
           !world_has(w, "snap-00000000000000009"),
       "every resource of the dead build is gone, the unrecorded snapshot too");
    is_int(build_state(reg, id), BAKE_BUILD_CLEANED, "the build is cleaned");
    is_int(registry_bake_entry_list(reg, id, &list, &n), 0, "its journal");
    if (n == 4) {
        is_str(list[2].resource_id, "snap-00000000000000009",
               "the pending snapshot was resolved through its tag");
        is_int(list[2].state, BAKE_ENTRY_UNDONE, "and undone");
        is_str(list[3].resource_id, "", "the image was never created");
        is_int(list[3].state, BAKE_ENTRY_UNDONE, "its entry is undone");
    } else {
        ok(0, "four entries (got %zu)", n);
    }
    free(list);
    is_int(bake_janitor_run(reg, &ops, &rep), 0, "a second pass finds nothing");
    registry_free(reg);
}

static void test_layers(struct registry *reg)
{
    struct registry_bake_layer l, got, *list = NULL;
    size_t n = 0;

    for (int i = 0; i < 4; i++) {
        memset(&l, 0, sizeof(l));
        memset(&l.key, i + 1, sizeof(l.key));
        snprintf(l.snapshot_id, sizeof(l.snapshot_id), "snap-0000000000000001%d", i);
        l.has_parent = i > 0;
        memset(&l.parent_key, i, sizeof(l.parent_key));
        snprintf(l.summary, sizeof(l.summary), "step %d: shell", i);
        l.created = 1000;
        l.last_used = 1000 * (i + 1); /* layer 0 least recently used */
        l.size = 100;
        is_int(registry_bake_layer_insert(reg, &l), 0, "insert layer %d", i);
    }
    ok(registry_bake_layer_insert(reg, &l) == -EEXIST, "a cached key is -EEXIST: %s",
       error_message());
    memset(&l.key, 9, sizeof(l.key));
    snprintf(l.snapshot_id, sizeof(l.snapshot_id), "vol-00000000000000001");
    ok(registry_bake_layer_insert(reg, &l) == -EINVAL, "a non-snapshot id is refused");
    snprintf(l.snapshot_id, sizeof(l.snapshot_id), "snap-00000000000000019");
    snprintf(l.summary, sizeof(l.summary), "bad\nsummary");
    ok(registry_bake_layer_insert(reg, &l) == -EINVAL, "a control character is refused");
    ok(registry_bake_layer_get(reg, &l.key, &got) == -ENOENT, "refused layers are not there");

    memset(&l.key, 2, sizeof(l.key));
    is_int(registry_bake_layer_get(reg, &l.key, &got), 0, "get layer 1");
    is_str(got.snapshot_id, "snap-00000000000000011", "its snapshot");
    ok(got.has_parent && got.parent_key.b[0] == 1, "its parent key");
    is_str(got.summary, "step 1: shell", "its summary");
    is_int(registry_bake_layer_touch(reg, &l.key, 9000), 0, "touch layer 1");
    is_int(registry_bake_layer_list(reg, &list, &n), 0, "list");
    is_int(n, 4, "four layers");
    if (n == 4) {
        is_str(list[0].snapshot_id, "snap-00000000000000011", "most recently used first");
        is_int(list[0].last_used, 9000, "the touch is recorded");
    }
    free(list);

    is_int(registry_bake_layer_prune_list(reg, 3500, UINT64_MAX, &list, &n), 0, "prune by age");
    is_int(n, 2, "two layers last used before 3500 (0 and 2)");
    if (n == 2) {
        is_str(list[0].snapshot_id, "snap-00000000000000010", "least recently used first");
        is_str(list[1].snapshot_id, "snap-00000000000000012", "then the next");
    }
    free(list);
    is_int(registry_bake_layer_prune_list(reg, 0, 250, &list, &n), 0, "prune by size");
    is_int(n, 2, "keep 200 of 400 bytes: two go");
    if (n == 2) {
        is_str(list[0].snapshot_id, "snap-00000000000000010", "the least recently used");
        is_str(list[1].snapshot_id, "snap-00000000000000012", "and the next");
    }
    free(list);
    is_int(registry_bake_layer_prune_list(reg, 0, UINT64_MAX, &list, &n), 0, "no limits");
    is_int(n, 0, "nothing to prune");
    free(list);
    memset(&l.key, 1, sizeof(l.key));
    is_int(registry_bake_layer_delete(reg, &l.key), 0, "delete layer 0");
    ok(registry_bake_layer_delete(reg, &l.key) == -ENOENT, "deleting it again is -ENOENT");
    ok(registry_bake_layer_touch(reg, &l.key, 1) == -ENOENT, "touching it is -ENOENT");
}

int main(void)
{
    struct world w;
    struct registry *reg = NULL;
    char dbpath[512], tmpl[] = "/tmp/kiln-test-bake-XXXXXX";

    memset(&w, 0, sizeof(w));
    if (!mkdtemp(tmpl)) {
        printf("Bail out! mkdtemp\n");
        return 1;
    }
    snprintf(w.dir, sizeof(w.dir), "%s/world", tmpl);
    mkdir(w.dir, 0700);
    snprintf(dbpath, sizeof(dbpath), "%s/registry.db", tmpl);

    if (registry_open(":memory:", &reg) < 0) {
        printf("Bail out! registry_open: %s\n", error_message());
        return 1;
    }
    test_order(reg, &w);
    test_finish(reg, &w);
    test_idempotent_and_failure(reg, &w);
    test_janitor_retry(reg, &w);
    test_registry_refusals(reg);
    test_layers(reg);
    registry_free(reg);
    test_process_identity();
    test_crash(&w, dbpath);

    {
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpl);
        if (system(cmd) != 0)
            printf("# cannot remove %s\n", tmpl);
    }
    return done_testing();
}
