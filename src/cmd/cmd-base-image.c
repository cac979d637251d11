/* `kiln base-image build tiny|debian`: run the image's recipe
 * (images/NAME/build.sh) and register what it builds as a public image of the
 * provider account (service_provider_account(), kiln's `amazon`). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"

#ifndef KILN_IMAGES_DIR
#define KILN_IMAGES_DIR "/usr/share/kiln/images"
#endif
#ifndef KILN_AGENT_PATH
#define KILN_AGENT_PATH "/usr/libexec/kiln/kiln-agent"
#endif

static const char base_image_usage[] =
    "usage: kiln base-image build tiny|debian [--cache-dir DIR] [--region R]\n"
    "\n"
    "Build a base image from Debian packages with its recipe (images/NAME/build.sh)\n"
    "and register it in the region as a public image of the provider account\n"
    "'" SERVICE_PROVIDER_ACCOUNT "', named kiln/images/NAME-x86_64-DATE.  Prints the\n"
    "image id, then the snapshot id.\n"
    "\n"
    "  tiny     busybox (static), the Debian kernel and an initramfs with the\n"
    "           virtio modules, kiln-agent; boots to init in seconds under TCG\n"
    "  debian   Debian 12 minbase: the cloud kernel, systemd, cloud-init (EC2\n"
    "           datasource, user 'admin'), openssh-server, kiln-agent\n"
    "\n"
    "  --cache-dir DIR   where downloads are kept (default DATA/cache/debs for\n"
    "                    tiny's .debs, DATA/cache/debian for debian's debootstrap\n"
    "                    tarball): a rebuild with them present needs no network\n"
    "\n"
    "KILN_IMAGES_DIR and KILN_AGENT override where the recipes and the agent\n"
    "binary are found.\n";

enum { OPT_CACHE_DIR = 1000 };

/* The known recipes: images/NAME/build.sh OUT CACHE AGENT. */
struct base_image {
    const char *name;
    const char *label;       /* kiln/images/LABEL-x86_64-DATE */
    const char *cache;       /* default cache, under DATA/cache */
    const char *description; /* the image's Description */
};

static const struct base_image base_images[] = {
    { "tiny", "tiny", "debs", "kiln tiny: busybox, the Debian kernel, kiln-agent" },
    { "debian", "debian-12", "debian",
      "kiln debian 12 (bookworm): systemd, cloud-init, openssh-server, kiln-agent" },
};

static const struct base_image *base_image_find(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(base_images); i++)
        if (strcmp(base_images[i].name, name) == 0)
            return &base_images[i];
    return NULL;
}

struct args {
    const char *cache_dir;
    char **pos;
};

static int option(int opt, const char *arg, void *ud)
{
    struct args *a = ud;

    if (opt == OPT_CACHE_DIR) {
        a->cache_dir = arg;
        return -1;
    }
    return EXIT_USAGE;
}

/* Run the recipe; its stderr passes through, its stdout is discarded but
 * for the last line, "kernel VERSION". */
static int run_recipe(const char *script, const char *out, const char *cache, const char *agent,
                      const char *log_path)
{
    char *const argv[] = { (char *)"sh", (char *)script, (char *)out, (char *)cache,
                           (char *)agent, NULL };
    int status;
    pid_t pid;

    pid = fork();
    if (pid < 0)
        return error_set(errno, "cannot fork: %m");
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || dup2(fd, 1) < 0)
            _exit(127);
        execvp("sh", argv);
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return error_set(errno, "cannot wait for the recipe: %m");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return error_set(EIO, "the recipe '%s' failed (status %d)", script,
                         WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    return 0;
}

static int do_build(struct cli *cli, int argc, char **argv)
{
    static const struct option options[] = {
        CLI_COMMON_OPTIONS,
        { "cache-dir", required_argument, NULL, OPT_CACHE_DIR },
        { NULL, 0, NULL, 0 },
    };
    struct args a = { 0 };
    const struct base_image *bi;
    _cleanup_(region_freep) struct region *r = NULL;
    _cleanup_free_ char *script = NULL, *cache = NULL, *tmp = NULL, *out = NULL, *log = NULL;
    char owner[ACCOUNT_ID_SIZE], image[ID_MAX_SIZE], snap[ID_MAX_SIZE], name[128], date[32];
    const char *images = getenv("KILN_IMAGES_DIR"), *agent = getenv("KILN_AGENT");
    time_t now = time(NULL);
    struct tm tm;
    int e, ex;

    ex = cli_parse(cli, argc, argv, options, base_image_usage, "cache-dir", 1, option, &a,
                   &a.pos);
    if (ex >= 0)
        return ex;
    bi = base_image_find(a.pos[0]);
    if (!bi) {
        fprintf(stderr, "kiln: unknown base image '%s' (known: tiny, debian)\n", a.pos[0]);
        return EXIT_USAGE;
    }
    e = cli_open_region(cli, &r);
    if (e < 0) {
        cli_fail(e);
        return 1;
    }
    script = xasprintf("%s/%s/build.sh", images && *images ? images : KILN_IMAGES_DIR, a.pos[0]);
    if (!agent || !*agent)
        agent = KILN_AGENT_PATH;
    if (access(script, R_OK) < 0 || access(agent, X_OK) < 0) {
        cli_error(ENOENT, "cannot find the recipe '%s' or the agent '%s'", script, agent);
        return 1;
    }
    cache = a.cache_dir ? xstrdup(a.cache_dir) : xasprintf("%s/cache/%s", cli->data_dir, bi->cache);
    tmp = xasprintf("%s/tmp", cli->data_dir);
    if ((e = mkdir_p(cache)) < 0 || (e = mkdir_p(tmp)) < 0) {
        cli_error(e, "cannot create the cache or temporary directory");
        return 1;
    }
    out = xasprintf("%s/base-image-%s-%d.raw", tmp, a.pos[0], (int)getpid());
    log = xasprintf("%s/base-image-%s-%d.log", tmp, a.pos[0], (int)getpid());
    if (!cli->quiet)
        fprintf(stderr, "kiln: building '%s' with %s\n", a.pos[0], script);
    e = run_recipe(script, out, cache, agent, log);
    unlink(log);
    if (e < 0) {
        unlink(out);
        cli_fail(e);
        return 1;
    }
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%Y%m%d-%H%M%S", &tm);
    snprintf(name, sizeof(name), "kiln/images/%s-x86_64-%s", bi->label, date);
    e = service_provider_account(cli->data_dir, owner);
    if (e == 0) {
        struct service_image_import_options o = {
            .name = name,
            .description = bi->description,
            .owner = owner,
            .is_public = true,
            .progress = !cli->quiet && isatty(2),
        };
        e = service_image_import(r, out, &o, image, snap);
    }
    unlink(out);
    if (e < 0) {
        cli_error(e, "cannot register '%s'", name);
        return 1;
    }
    if (!cli->quiet)
        fprintf(stderr, "kiln: registered '%s' (owner %s, public)\n", name, owner);
    printf("%s\n%s\n", image, snap);
    return 0;
}

int cmd_base_image(struct cli *cli, int argc, char **argv)
{
    if (argc < 2) {
        fputs(base_image_usage, stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(base_image_usage, stdout);
        return 0;
    }
    if (strcmp(argv[1], "build") == 0)
        return do_build(cli, argc - 1, argv + 1);
    fprintf(stderr, "kiln: unknown base-image verb '%s'\n\n%s", argv[1], base_image_usage);
    return EXIT_USAGE;
}
