/* kiln bake TEMPLATE.json: bake an image (src/bake/driver.h), and the
 * dispatch of `kiln bake cache` and `kiln bake distribute`
 * (cmd-bake-admin.c). */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bake/driver.h"
#include "bake/template.h"
#include "cmd/cli.h"
#include "common/error.h"
#include "common/util.h"

static const char bake_usage[] =
    "usage: kiln bake TEMPLATE.json [--var K=V]... [--var-file F]... [--no-cache]\n"
    "                 [--on-error cleanup|keep|abort] [--log-dir DIR] [--manifest FILE]\n"
    "       kiln bake cache list|prune ...\n"
    "       kiln bake distribute BUILD\n"
    "\n"
    "Bake an image from a kiln-bake/1 template or a Packer JSON template\n"
    "(docs/baking.md): each step runs offline on the image's file system or\n"
    "through the guest agent in a build VM, cached per step; the tests run on a\n"
    "fresh instance before the image becomes available.  Prints a line per step\n"
    "and, last, the region and the new image id.\n"
    "\n"
    "  --var K=V          set variable K (repeatable)\n"
    "  --var-file F       a JSON object of variables (repeatable)\n"
    "  --no-cache         run every step; neither read nor fill the layer cache\n"
    "  --on-error WHAT    cleanup (default: remove everything the build made),\n"
    "                     keep (keep the build VM until Ctrl-C, then clean up),\n"
    "                     abort (leave it all; the janitor of the next bake or\n"
    "                     serve removes it)\n"
    "  --log-dir DIR      per-step logs (default DATA/bake-logs/BUILD)\n"
    "  --manifest FILE    write the manifest there (default: the template's)\n";

struct bake_args {
    const char **vars, **var_files;
    size_t n_vars, n_var_files;
    bool no_cache;
    int on_error;
    const char *log_dir, *manifest;
};

static int bake_option(int opt, const char *arg, void *ud)
{
    struct bake_args *a = ud;

    switch (opt) {
    case 'V':
        a->vars = xrealloc(a->vars, (a->n_vars + 1) * sizeof(*a->vars));
        a->vars[a->n_vars++] = arg;
        return -1;
    case 'F':
        a->var_files = xrealloc(a->var_files, (a->n_var_files + 1) * sizeof(*a->var_files));
        a->var_files[a->n_var_files++] = arg;
        return -1;
    case 'N': a->no_cache = true; return -1;
    case 'E':
        if (strcmp(arg, "cleanup") == 0)
            a->on_error = BAKE_ON_ERROR_CLEANUP;
        else if (strcmp(arg, "keep") == 0)
            a->on_error = BAKE_ON_ERROR_KEEP;
        else if (strcmp(arg, "abort") == 0)
            a->on_error = BAKE_ON_ERROR_ABORT;
        else {
            fprintf(stderr, "kiln: --on-error wants cleanup, keep or abort, not '%s'\n", arg);
            return EXIT_USAGE;
        }
        return -1;
    case 'L': a->log_dir = arg; return -1;
    case 'M': a->manifest = arg; return -1;
    }
    return EXIT_USAGE;
}

/* Signals: SIGINT and SIGTERM are blocked in every thread and taken by
 * one thread of their own.  While a VM is kept for inspection (--on-error
 * keep) the first ends the wait; otherwise the first cancels the bake
 * (bake_cancel(): it fails at once and undoes what it made), and a second
 * exits at once, leaving the rest to the janitor. */
struct signals {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool keeping, released;
    int count;
    struct bake_cancel cancel;
    const char *region;
    sigset_t set;
};

static void *signal_thread(void *ud)
{
    struct signals *sg = ud;
    int sig;

    for (;;) {
        if (sigwait(&sg->set, &sig) != 0)
            continue;
        pthread_mutex_lock(&sg->lock);
        bool keeping = sg->keeping;
        int n = ++sg->count;
        if (keeping) {
            sg->released = true;
            pthread_cond_broadcast(&sg->cond);
        }
        pthread_mutex_unlock(&sg->lock);
        if (keeping)
            continue;
        if (n > 1) {
            fprintf(stderr, "kiln: %s again: exiting now; the janitor of the next bake or serve "
                            "removes what this one made\n",
                    strsignal(sig));
            _exit(130);
        }
        fprintf(stderr, "kiln: %s: cancelling the bake (again to exit at once)\n",
                strsignal(sig));
        bake_cancel(&sg->cancel, sg->region);
    }
    return NULL;
}

/* --on-error keep: wait for Ctrl-C (or SIGTERM) with the build VM running. */
static void keep_wait(void *ud)
{
    struct signals *sg = ud;

    fprintf(stderr, "kiln: the build VM stays up for inspection: press Ctrl-C (or send SIGTERM) "
                    "to remove it and end the bake\n");
    fflush(stderr);
    pthread_mutex_lock(&sg->lock);
    sg->keeping = true;
    while (!sg->released)
        pthread_cond_wait(&sg->cond, &sg->lock);
    sg->keeping = false;
    pthread_mutex_unlock(&sg->lock);
}

static unsigned die_after_from_env(void)
{
    const char *s = getenv("KILN_BAKE_DIE_AFTER_STEPS");
    char *end;
    unsigned long v;

    if (!s || !*s)
        return 0;
    v = strtoul(s, &end, 10);
    return *end || v > 1000 ? 0 : (unsigned)v;
}

int cmd_bake(struct cli *cli, int argc, char **argv)
{
    static const struct option options[] = {
        {"var", required_argument, NULL, 'V'},
        {"var-file", required_argument, NULL, 'F'},
        {"no-cache", no_argument, NULL, 'N'},
        {"on-error", required_argument, NULL, 'E'},
        {"log-dir", required_argument, NULL, 'L'},
        {"manifest", required_argument, NULL, 'M'},
        CLI_COMMON_OPTIONS,
        {0},
    };
    struct bake_args a = {.on_error = -1};
    struct bake_result res;
    char **pos = NULL;
    int r;

    if (argc >= 2 && strcmp(argv[1], "cache") == 0)
        return cmd_bake_cache(cli, argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "distribute") == 0)
        return cmd_bake_distribute(cli, argc - 1, argv + 1);
    r = cli_parse(cli, argc, argv, options, bake_usage, "var var-file no-cache on-error log-dir "
                  "manifest", 1, bake_option, &a, &pos);
    if (r >= 0) {
        free(a.vars);
        free(a.var_files);
        return r;
    }
    if (!cli->data_dir)
        cli->data_dir = service_default_data_dir();
    /* With --on-error keep, SIGINT and SIGTERM are waited for, not fatal; a
     * bake interrupted otherwise leaves its resources to the janitor */
    struct bake_options o = {
        .data_dir = cli->data_dir,
        .region = cli->region ? cli->region : DEFAULT_REGION,
        .template_path = pos[0],
        .vars = a.vars,
        .n_vars = a.n_vars,
        .var_files = a.var_files,
        .n_var_files = a.n_var_files,
        .no_cache = a.no_cache,
        .on_error = a.on_error,
        .log_dir = a.log_dir,
        .manifest = a.manifest,
        .out = cli->quiet ? NULL : stdout,
        .keep_wait = keep_wait,
        .die_after_steps = die_after_from_env(),
    };
    static struct signals sg = {
        .lock = PTHREAD_MUTEX_INITIALIZER,
        .cond = PTHREAD_COND_INITIALIZER,
        .cancel = {.lock = PTHREAD_MUTEX_INITIALIZER},
    };
    pthread_t th;
    sg.region = o.region;
    sigemptyset(&sg.set);
    sigaddset(&sg.set, SIGINT);
    sigaddset(&sg.set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sg.set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (pthread_create(&th, NULL, signal_thread, &sg) == 0)
        pthread_detach(th);
    o.keep_ud = &sg;
    o.cancel = &sg.cancel;
    r = bake_run(&o, &res);
    if (r < 0)
        cli_error(r, "bake failed");
    else if (cli->quiet)
        printf("%s\n", res.image_id);
    bake_result_release(&res);
    free(a.vars);
    free(a.var_files);
    return r < 0 ? 1 : 0;
}
