/* kiln bake cache list|prune and kiln bake distribute BUILD: the admin
 * commands of the baker (docs/baking.md, "Distribution" and "Layer cache
 * commands").  The work is in src/bake/distribute.c and the registry's layer
 * table (registry/bake.h); this file parses options and prints. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "bake/distribute.h"
#include "bake/template.h"
#include "cmd/cli.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "registry/bake.h"
#include "registry/images.h"

static const char distribute_usage[] =
    "usage: kiln bake distribute BUILD [--region R] [--timeout DURATION]\n"
    "\n"
    "Publish the image of build BUILD in every region of its template's\n"
    "distribution that is not done yet: copy it there (CopyImage, as a job),\n"
    "wait for the copy, then give it its launch permissions, deprecation time\n"
    "and tags.  A region that failed before is tried again; regions done are\n"
    "left alone; nothing is rebuilt.  Prints one line per region.\n"
    "\n"
    "  --region R         the build's region (default: $KILN_REGION, else\n"
    "                     us-east-1; without --region, the other regions of the\n"
    "                     data directory are searched for the build too)\n"
    "  --timeout D        how long to wait for the copies (90s, 20m, 1h; default\n"
    "                     1h); copies still running stay `copying` and are\n"
    "                     picked up by the next distribute\n"
    "\n"
    "The copies run in this process unless a `kiln serve` holds DATA/jobs.lock;\n"
    "then that serve runs them, if it serves the destination region.\n"
    "Exit status: 0 every region done, 1 otherwise.\n";

static const char cache_usage[] =
    "usage: kiln bake cache list|prune ...\n"
    "\n"
    "  list [--json]                      list the layer cache of the region\n"
    "  prune [--older-than D] [--max-size BYTES] [--dry-run]\n"
    "                                     remove layers\n"
    "\n"
    "`kiln bake cache VERB --help` describes each verb.\n";

static const char cache_list_usage[] =
    "usage: kiln bake cache list [--json]\n"
    "\n"
    "List the cached layers of the region (--region), most recently used first:\n"
    "key (first 12 hex digits), snapshot, size, created, last used, step.\n";

static const char cache_prune_usage[] =
    "usage: kiln bake cache prune [--older-than DURATION] [--max-size BYTES] [--dry-run]\n"
    "\n"
    "Remove cached layers, least recently used first: those last used more than\n"
    "DURATION ago (90s, 20m, 2h, 7d), then, while the rest hold more than BYTES\n"
    "(1073741824, 512M, 10G; 0 removes every layer), the least recently used of\n"
    "them.  At least one of the two is required.  Each layer's row goes first,\n"
    "then its snapshot, unless an image or another layer still uses that\n"
    "snapshot (it is kept and said so).\n"
    "\n"
    "  --dry-run   print what would go, change nothing\n";

enum { OPT_TIMEOUT = 1000, OPT_JSON, OPT_OLDER_THAN, OPT_MAX_SIZE, OPT_DRY_RUN };

static const struct option all_options[] = {
    CLI_COMMON_OPTIONS,
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"json", no_argument, NULL, OPT_JSON},
    {"older-than", required_argument, NULL, OPT_OLDER_THAN},
    {"max-size", required_argument, NULL, OPT_MAX_SIZE},
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {NULL, 0, NULL, 0},
};

struct admin_args {
    uint64_t timeout_s;
    bool json, dry_run;
    bool has_older_than, has_max_size;
    uint64_t older_than_s, max_size;
    char **pos;
};

static int duration_option(const char *name, const char *arg, uint64_t *ret)
{
    if (bake_parse_duration(arg, ret) < 0 || *ret == 0) {
        fprintf(stderr, "kiln: --%s wants a duration such as 90s, 20m, 2h or 7d, not '%s'\n", name,
                arg);
        return EXIT_USAGE;
    }
    return -1;
}

static int admin_option(int opt, const char *arg, void *ud)
{
    struct admin_args *a = ud;

    switch (opt) {
    case OPT_TIMEOUT:
        if (duration_option("timeout", arg, &a->timeout_s) >= 0)
            return EXIT_USAGE;
        if (a->timeout_s > INT32_MAX) {
            fprintf(stderr, "kiln: --timeout is too long\n");
            return EXIT_USAGE;
        }
        break;
    case OPT_JSON: a->json = true; break;
    case OPT_DRY_RUN: a->dry_run = true; break;
    case OPT_OLDER_THAN:
        a->has_older_than = true;
        return duration_option("older-than", arg, &a->older_than_s);
    case OPT_MAX_SIZE:
        if (arg[0] == '-' || parse_size(arg, &a->max_size) < 0) {
            fprintf(stderr,
                    "kiln: --max-size wants a size such as 1073741824, 512M or 10G, "
                    "not '%s'\n",
                    arg);
            return EXIT_USAGE;
        }
        a->has_max_size = true;
        break;
    }
    return -1;
}

/* ---- kiln bake distribute ---- */

static void print_line(void *ud, const char *line)
{
    const struct cli *cli = ud;

    if (!cli->quiet)
        fprintf(stderr, "kiln: %s\n", line);
}

/* The region of the data directory whose registry has build `id`, other
 * than `skip`: a new string, or NULL. */
static char *find_build_region(const char *data_dir, const char *id, const char *skip)
{
    _cleanup_free_ char *dir = xasprintf("%s/regions", data_dir);
    DIR *d = opendir(dir);
    struct dirent *de;
    char *found = NULL;

    if (!d)
        return NULL;
    while (!found && (de = readdir(d))) {
        struct region *r = NULL;
        struct registry_bake_build b;
        if (!region_name_is_valid(de->d_name) || strcmp(de->d_name, skip) == 0)
            continue;
        if (region_open(data_dir, de->d_name, true, &r) == 0 &&
            registry_bake_build_get(r->reg, id, &b) == 0)
            found = xstrdup(de->d_name);
        region_free(r);
    }
    closedir(d);
    error_clear();
    return found;
}

static void print_outputs(struct cli *cli, const char *build)
{
    _cleanup_(region_freep) struct region *r = NULL;
    _cleanup_free_ struct registry_bake_output *outs = NULL;
    size_t n = 0;

    if (region_open(cli->data_dir, cli->region, true, &r) < 0 ||
        registry_bake_output_list(r->reg, build, &outs, &n) < 0) {
        error_clear();
        return;
    }
    for (size_t i = 0; i < n; i++)
        printf("%-16s %-8s %-21s%s%s\n", outs[i].region,
               registry_bake_output_state_to_string(outs[i].state),
               outs[i].image_id[0] ? outs[i].image_id : "-", outs[i].error[0] ? " " : "",
               outs[i].error);
}

int cmd_bake_distribute(struct cli *cli, int argc, char **argv)
{
    struct admin_args a = {0};
    struct bake_distribute_options o = {.log = print_line, .ud = cli};
    bool region_given;
    int ex, e;

    ex = cli_parse(cli, argc, argv, all_options, distribute_usage, "timeout", 1, admin_option, &a,
                   &a.pos);
    if (ex >= 0)
        return ex;
    if (!id_is_valid("bld", a.pos[0])) {
        fprintf(stderr, "kiln: '%s' is not a build id (bld- and 17 hex digits)\n", a.pos[0]);
        return EXIT_USAGE;
    }
    region_given = cli->region != NULL;
    if (!cli->data_dir)
        cli->data_dir = service_default_data_dir();
    if (!cli->region) {
        const char *env = getenv("KILN_REGION");
        cli->region = xstrdup(env && *env ? env : DEFAULT_REGION);
        region_given = env && *env;
    }
    o.data_dir = cli->data_dir;
    o.region = cli->region;
    o.build_id = a.pos[0];
    o.timeout_s = (int)a.timeout_s;
    e = bake_distribute(&o);
    if (e == -ENOENT && !region_given) {
        _cleanup_free_ char *why = xstrdup(error_message() ? error_message() : "");
        char *other = find_build_region(cli->data_dir, a.pos[0], cli->region);
        if (!other && why[0])
            error_set(ENOENT, "%s", why);
        if (other) {
            free(cli->region);
            cli->region = other;
            o.region = other;
            error_clear();
            e = bake_distribute(&o);
        }
    }
    if (e < 0)
        cli_fail(e); /* before print_outputs(), whose reads may record errors */
    print_outputs(cli, a.pos[0]);
    if (e < 0)
        return 1;
    return 0;
}

/* ---- kiln bake cache ---- */

static void print_json_layer_at(const void *rows, size_t i)
{
    const struct registry_bake_layer *l = &((const struct registry_bake_layer *)rows)[i];
    char key[DIGEST_HEX_SIZE], parent[DIGEST_HEX_SIZE], t1[40], t2[40];

    printf("{\"Key\":\"%s\",\"SnapshotId\":", digest_to_hex(&l->key, key));
    json_string(stdout, l->snapshot_id);
    if (l->has_parent)
        printf(",\"ParentKey\":\"%s\"", digest_to_hex(&l->parent_key, parent));
    printf(",\"Size\":%" PRIu64 ",\"Created\":\"%s\",\"LastUsed\":\"%s\",\"Summary\":", l->size,
           format_time_ms(l->created, t1, sizeof(t1)),
           format_time_ms(l->last_used, t2, sizeof(t2)));
    json_string(stdout, l->summary);
    printf("}");
}

static void print_layer_header(void)
{
    printf("%-12s  %-22s %10s  %-24s %-24s %s\n", "KEY", "SNAPSHOT", "SIZE", "CREATED", "LAST USED",
           "STEP");
}

static void print_layer_at(const void *rows, size_t i)
{
    const struct registry_bake_layer *l = &((const struct registry_bake_layer *)rows)[i];
    char key[DIGEST_HEX_SIZE], size[32], t1[40], t2[40];

    digest_to_hex(&l->key, key);
    key[12] = '\0';
    printf("%-12s  %-22s %10s  %-24s %-24s %s\n", key, l->snapshot_id,
           format_bytes(l->size, size, sizeof(size)), format_time_ms(l->created, t1, sizeof(t1)),
           format_time_ms(l->last_used, t2, sizeof(t2)), l->summary);
}

static int list_layers(struct region *r, void **ret_rows, size_t *ret_n)
{
    struct registry_bake_layer *rows = NULL;
    int e = registry_bake_layer_list(r->reg, &rows, ret_n);

    if (e == 0)
        *ret_rows = rows;
    return e;
}

static void release_layers(void *rows, size_t n)
{
    (void)n;
    free(rows);
}

static int do_cache_list(struct cli *cli, int argc, char **argv)
{
    static const struct cli_table table = {
        .what = "cached layers",
        .list = list_layers,
        .release = release_layers,
        .print_json_at = print_json_layer_at,
        .print_header = print_layer_header,
        .print_row_at = print_layer_at,
    };
    struct admin_args a = {0};
    int ex = cli_parse(cli, argc, argv, all_options, cache_list_usage, "json", 0, admin_option, &a,
                       &a.pos);

    if (ex >= 0)
        return ex;
    return cli_list(cli, a.json, &table);
}

/* Whether another layer row names snapshot `id` (after this one's row is
 * gone). */
static int snapshot_in_other_layer(struct region *r, const char *id, bool *ret)
{
    _cleanup_free_ struct registry_bake_layer *all = NULL;
    size_t n = 0;
    int e = registry_bake_layer_list(r->reg, &all, &n);

    if (e < 0)
        return e;
    *ret = false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(all[i].snapshot_id, id) == 0)
            *ret = true;
    return 0;
}

/* Delete the row of layer l, then its snapshot unless something uses it.
 * Returns 0, 1 when the snapshot was kept (said on stdout), or -errno. */
static int prune_one(struct region *r, const struct registry_bake_layer *l, const char *key)
{
    bool other = false;
    size_t images = 0;
    int e = registry_bake_layer_delete(r->reg, &l->key);

    if (e == -ENOENT) { /* pruned meanwhile by someone else */
        error_clear();
        return 0;
    }
    if (e < 0)
        return e;
    e = snapshot_in_other_layer(r, l->snapshot_id, &other);
    if (e >= 0 && !other)
        e = registry_snapshot_in_use_by_images(r->reg, l->snapshot_id, &images);
    if (e < 0)
        return e;
    if (other || images) {
        printf("removed layer %s; kept snapshot %s: %s\n", key, l->snapshot_id,
               other ? "another layer uses it" : "an image uses it");
        return 1;
    }
    e = service_snapshot_delete(r, l->snapshot_id);
    if (e == -ENOENT) {
        error_clear();
        e = 0;
    }
    if (e < 0)
        return e;
    printf("removed layer %s and snapshot %s\n", key, l->snapshot_id);
    return 0;
}

static int do_cache_prune(struct cli *cli, int argc, char **argv)
{
    struct admin_args a = {0};
    _cleanup_(region_freep) struct region *r = NULL;
    _cleanup_free_ struct registry_bake_layer *list = NULL;
    uint64_t bytes = 0;
    size_t n = 0, kept = 0;
    int64_t cutoff = 0;
    char b[32];
    int ex, e;

    ex = cli_parse(cli, argc, argv, all_options, cache_prune_usage, "older-than max-size dry-run",
                   0, admin_option, &a, &a.pos);
    if (ex >= 0)
        return ex;
    if (!a.has_older_than && !a.has_max_size) {
        fprintf(stderr,
                "kiln: prune needs --older-than or --max-size (--max-size 0 removes "
                "every layer)\n\n%s",
                cache_prune_usage);
        return EXIT_USAGE;
    }
    if (a.has_older_than) {
        cutoff = wall_clock_ms() - (int64_t)a.older_than_s * 1000;
        if (cutoff <= 0)
            cutoff = 1; /* everything is younger than that: nothing goes by age */
    }
    e = cli_open_region(cli, &r);
    if (e == 0)
        e = registry_bake_layer_prune_list(r->reg, cutoff, a.has_max_size ? a.max_size : UINT64_MAX,
                                           &list, &n);
    if (e < 0) {
        cli_error(e, "cannot list the layers to prune");
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        char key[DIGEST_HEX_SIZE];
        digest_to_hex(&list[i].key, key);
        key[12] = '\0';
        bytes += list[i].size;
        if (a.dry_run) {
            printf("would remove layer %s (snapshot %s, %s, %s)\n", key, list[i].snapshot_id,
                   format_bytes(list[i].size, b, sizeof(b)), list[i].summary);
            continue;
        }
        e = prune_one(r, &list[i], key);
        if (e < 0) {
            cli_error(e, "cannot prune layer %s", key);
            return 1;
        }
        kept += e == 1;
    }
    printf("%s %zu layer%s (%s)%s\n", a.dry_run ? "would remove" : "removed", n, n == 1 ? "" : "s",
           format_bytes(bytes, b, sizeof(b)), kept ? "; some snapshots kept, in use" : "");
    return 0;
}

int cmd_bake_cache(struct cli *cli, int argc, char **argv)
{
    static const struct cli_verb verbs[] = {
        {"list", do_cache_list},
        {"prune", do_cache_prune},
    };

    return cli_dispatch(cli, argc, argv, "bake cache", verbs, ARRAY_SIZE(verbs), cache_usage);
}
