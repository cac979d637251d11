/* Command line plumbing shared by the verbs. */
#include "cmd/cli.h"
#include "common/json.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/util.h"

int cli_common_option(struct cli *cli, int opt, const char *usage, int *ret_exit)
{
    switch (opt) {
    case 'D':
        if (!*optarg) {
            fprintf(stderr, "kiln: --data-dir must not be empty\n");
            *ret_exit = EXIT_USAGE;
            return 1;
        }
        free(cli->data_dir);
        cli->data_dir = xstrdup(optarg);
        return 1;
    case 'R':
        if (!region_name_is_valid(optarg)) {
            fprintf(stderr, "kiln: invalid region name '%s' (lowercase letters, digits and "
                            "dashes, starting with a letter)\n", optarg);
            *ret_exit = EXIT_USAGE;
            return 1;
        }
        free(cli->region);
        cli->region = xstrdup(optarg);
        return 1;
    case 'q':
        cli->quiet = true;
        return 1;
    case 'v':
        log_set_level(log_get_level() < LOG_DEBUG ? log_get_level() + 1 : LOG_DEBUG);
        return 1;
    case 'h':
        fputs(usage, stdout);
        *ret_exit = 0;
        return 1;
    case '?':
        fprintf(stderr, "%s", usage);
        *ret_exit = EXIT_USAGE;
        return 1;
    default:
        return 0;
    }
}

/* true when `name` is one of the space-separated words of `list`. */
static bool word_in(const char *list, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = list; (p = strstr(p, name)); p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return true;
    return false;
}

int cli_parse(struct cli *cli, int argc, char **argv, const struct option *options,
              const char *usage, const char *allowed, int npos, cli_option_fn fn, void *ud,
              char ***ret_pos)
{
    int opt, ex = -1;

    optind = 0;
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORT, options, NULL)) != -1) {
        if (cli_common_option(cli, opt, usage, &ex)) {
            if (ex >= 0)
                return ex;
            continue;
        }
        const char *name = NULL;
        for (const struct option *o = options; o->name; o++)
            if (o->val == opt)
                name = o->name;
        if (!name || !word_in(allowed, name)) {
            fprintf(stderr, "kiln: option '--%s' does not apply here\n\n%s", name ? name : "?",
                    usage);
            return EXIT_USAGE;
        }
        ex = fn(opt, optarg, ud);
        if (ex >= 0)
            return ex;
    }
    if (argc - optind != npos) {
        fprintf(stderr, "kiln: expected %d argument%s, got %d\n\n%s", npos, npos == 1 ? "" : "s",
                argc - optind, usage);
        return EXIT_USAGE;
    }
    *ret_pos = argv + optind;
    return -1;
}

int cli_open_region(struct cli *cli, struct region **ret)
{
    if (!cli->data_dir)
        cli->data_dir = service_default_data_dir();
    if (!cli->region) {
        const char *env = getenv("KILN_REGION");
        cli->region = xstrdup(env && *env ? env : DEFAULT_REGION);
    }
    return region_open(cli->data_dir, cli->region, false, ret);
}

void cli_error(int err, const char *fmt, ...)
{
    char what[512], why[600];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    error_describe(err, why, sizeof(why));
    if (what[0])
        fprintf(stderr, "kiln: %s: %s\n", what, why);
    else
        fprintf(stderr, "kiln: %s\n", why);
}

void cli_fail(int err)
{
    char why[600];

    fprintf(stderr, "kiln: %s\n", error_describe(err, why, sizeof(why)));
}

void json_string(FILE *f, const char *s)
{
    json_fput_string(f, s);
}

const char *format_time_ms(int64_t ms, char *buf, size_t size)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&t, &tm);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    return buf;
}

int cli_check_id(const char *prefix, const char *id)
{
    if (!id_is_valid(prefix, id)) {
        fprintf(stderr, "kiln: '%s' is not a %s id (%s- and 17 hex digits)\n", id,
                strcmp(prefix, "vol") == 0 ? "volume" : "snapshot", prefix);
        return EXIT_USAGE;
    }
    return -1;
}

void cli_print_json_array(const void *rows, size_t n,
                          void (*print_at)(const void *rows, size_t i))
{
    printf("[");
    for (size_t i = 0; i < n; i++) {
        printf(i ? ",\n " : "");
        print_at(rows, i);
    }
    printf("]\n");
}

int cli_dispatch(struct cli *cli, int argc, char **argv, const char *command,
                 const struct cli_verb *verbs, size_t n_verbs, const char *usage)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    for (size_t i = 0; i < n_verbs; i++)
        if (strcmp(argv[1], verbs[i].name) == 0)
            return verbs[i].fn(cli, argc - 1, argv + 1);
    fprintf(stderr, "kiln: unknown %s verb '%s'\n\n%s", command, argv[1], usage);
    return EXIT_USAGE;
}

int cli_region_call(struct cli *cli, const char *id,
                    int (*fn)(struct region *r, const char *id))
{
    _cleanup_(region_freep) struct region *r = NULL;
    int e = cli_open_region(cli, &r);

    if (e == 0)
        e = fn(r, id);
    if (e < 0) {
        cli_fail(e);
        return 1;
    }
    return 0;
}

int cli_list(struct cli *cli, bool json, const struct cli_table *t)
{
    _cleanup_(region_freep) struct region *r = NULL;
    void *rows = NULL;
    size_t n = 0;
    int e;

    e = cli_open_region(cli, &r);
    if (e == 0)
        e = t->list(r, &rows, &n);
    if (e < 0) {
        cli_error(e, "cannot list %s", t->what);
        return 1;
    }
    if (json) {
        cli_print_json_array(rows, n, t->print_json_at);
    } else {
        if (n)
            t->print_header();
        for (size_t i = 0; i < n; i++)
            t->print_row_at(rows, i);
    }
    t->release(rows, n);
    return 0;
}
