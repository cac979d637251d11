/* kiln snapshot import|export|list|show|delete|diff */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"

static const char import_usage[] =
    "usage: kiln snapshot import FILE [--format raw|qcow2|auto] [--parent SNAP]\n"
    "                            [--description D] [--threads N]\n"
    "\n"
    "Import a disk image as a new snapshot and print its id as the last line of\n"
    "standard output.  Blocks already in the store are not written again; with\n"
    "--parent the import also reports how many 512 KiB blocks changed.\n"
    "\n"
    "  --format F        raw, qcow2 or auto (default: probe the file)\n"
    "  --parent SNAP     the snapshot this one derives from\n"
    "  --description D   free text, up to 255 characters\n"
    "  --threads N       worker threads (default: one per core)\n";

static const char export_usage[] =
    "usage: kiln snapshot export SNAP FILE [--format raw|qcow2]\n"
    "\n"
    "Write a snapshot's volume to FILE: raw output is sparse; qcow2 output is a\n"
    "qcow2 v3 image.  Every chunk is verified first; a damaged chunk fails the\n"
    "export and FILE is not created.\n";

static const char list_usage[] =
    "usage: kiln snapshot list [--json]\n\nList the region's snapshots.\n";
static const char show_usage[] =
    "usage: kiln snapshot show SNAP [--json]\n\nShow one snapshot.\n";
static const char delete_usage[] =
    "usage: kiln snapshot delete SNAP\n\n"
    "Delete a snapshot.  Its chunks are freed by the next `kiln gc`.\n";
static const char diff_usage[] =
    "usage: kiln snapshot diff SNAP_A SNAP_B\n\n"
    "Print the indexes of the 512 KiB blocks whose content differs, one per line.\n";

static const char snapshot_usage[] =
    "usage: kiln snapshot import|export|list|show|delete|diff ...\n"
    "\n"
    "  import FILE       import a raw or qcow2 disk image\n"
    "  export SNAP FILE  write a snapshot out as raw or qcow2\n"
    "  list              list snapshots\n"
    "  show SNAP         show one snapshot\n"
    "  delete SNAP       delete a snapshot\n"
    "  diff A B          512 KiB blocks that differ\n"
    "\n"
    "`kiln snapshot VERB --help` describes each.\n";

enum { OPT_FORMAT = 1000, OPT_PARENT, OPT_DESCRIPTION, OPT_THREADS, OPT_JSON };

static const struct option all_options[] = {
    CLI_COMMON_OPTIONS,
    { "format", required_argument, NULL, OPT_FORMAT },
    { "parent", required_argument, NULL, OPT_PARENT },
    { "description", required_argument, NULL, OPT_DESCRIPTION },
    { "threads", required_argument, NULL, OPT_THREADS },
    { "json", no_argument, NULL, OPT_JSON },
    { NULL, 0, NULL, 0 },
};

struct snap_args {
    const char *format;
    const char *parent;
    const char *description;
    int threads;
    bool json;
    char **pos;
};

static int snap_option(int opt, const char *arg, void *ud)
{
    struct snap_args *a = ud;

    switch (opt) {
    case OPT_FORMAT: a->format = arg; break;
    case OPT_PARENT: a->parent = arg; break;
    case OPT_DESCRIPTION: a->description = arg; break;
    case OPT_THREADS: {
        char *end;
        long n = strtol(arg, &end, 10);
        if (*end || n < 1 || n > 64) {
            fprintf(stderr, "kiln: --threads wants a number from 1 to 64\n");
            return EXIT_USAGE;
        }
        a->threads = (int)n;
        break;
    }
    case OPT_JSON: a->json = true; break;
    }
    return -1;
}

/* Parse argv; `allowed` lists the verb-specific options accepted.  Returns
 * -1 to continue, or an exit status. */
static int parse(struct cli *cli, int argc, char **argv, const char *usage, const char *allowed,
                 int npos, struct snap_args *a)
{
    return cli_parse(cli, argc, argv, all_options, usage, allowed, npos, snap_option, a, &a->pos);
}

/* parse() for a verb on one snapshot: its one argument must be a snapshot
 * id. */
static int parse_snap(struct cli *cli, int argc, char **argv, const char *usage,
                      const char *allowed, struct snap_args *a)
{
    int ex = parse(cli, argc, argv, usage, allowed, 1, a);
    if (ex >= 0)
        return ex;
    return cli_check_id("snap", a->pos[0]);
}

static int do_import(struct cli *cli, int argc, char **argv)
{
    struct snap_args a = { 0 };
    _cleanup_(region_freep) struct region *r = NULL;
    struct service_import_options o = { .format = IMAGE_FORMAT_AUTO };
    struct import_stats st;
    char id[ID_MAX_SIZE];
    uint64_t t0 = now_ns();
    int ex, e;

    ex = parse(cli, argc, argv, import_usage, "format parent description threads", 1, &a);
    if (ex >= 0)
        return ex;
    if (a.format && image_format_from_string(a.format, &o.format) < 0) {
        fprintf(stderr, "kiln: unknown format '%s' (raw, qcow2 or auto)\n", a.format);
        return EXIT_USAGE;
    }
    if (a.parent && (ex = cli_check_id("snap", a.parent)) >= 0)
        return ex;
    if (a.description && strlen(a.description) > 255) {
        fprintf(stderr, "kiln: the description is longer than 255 characters\n");
        return EXIT_USAGE;
    }
    o.parent_id = a.parent;
    o.description = a.description;
    o.threads = a.threads;
    o.progress = !cli->quiet;

    e = cli_open_region(cli, &r);
    if (e == 0)
        e = service_snapshot_import(r, a.pos[0], &o, id, &st);
    if (e < 0) {
        cli_fail(e);
        return 1;
    }
    if (!cli->quiet) {
        char vs[32], nb[32], sb[32];
        double secs = (double)(now_ns() - t0) / 1e9;
        printf("imported '%s': %s in %.2f s, %" PRIu64 " chunks, %" PRIu64
               " new (%s, %s stored)\n",
               a.pos[0], format_bytes(st.volume_size, vs, sizeof(vs)), secs, st.chunks,
               st.chunks_new, format_bytes(st.bytes_new, nb, sizeof(nb)),
               format_bytes(st.stored_new, sb, sizeof(sb)));
        if (a.parent)
            printf("at most %" PRIu64 " of %" PRIu64
                   " 512 KiB blocks changed from %s (by block map; `kiln snapshot diff` "
                   "compares content)\n",
                   st.changed_blocks, st.total_blocks, a.parent);
    }
    printf("%s\n", id);
    return 0;
}

static int do_export(struct cli *cli, int argc, char **argv)
{
    struct snap_args a = { 0 };
    _cleanup_(region_freep) struct region *r = NULL;
    _cleanup_(blockmap_freep) struct blockmap *m = NULL;
    struct export_options o = { .format = IMAGE_FORMAT_RAW };
    int ex, e;

    ex = parse(cli, argc, argv, export_usage, "format threads", 2, &a);
    if (ex >= 0)
        return ex;
    if (a.format && (image_format_from_string(a.format, &o.format) < 0 ||
                     o.format == IMAGE_FORMAT_AUTO)) {
        fprintf(stderr, "kiln: unknown export format '%s' (raw or qcow2)\n", a.format);
        return EXIT_USAGE;
    }
    if ((ex = cli_check_id("snap", a.pos[0])) >= 0)
        return ex;
    o.threads = a.threads;
    o.progress = !cli->quiet;
    e = cli_open_region(cli, &r);
    if (e == 0) {
        /* Hold the store's shared lock: gc must not sweep under an export
         * of a snapshot deleted meanwhile. */
        e = store_lock(r->store, false, 60000);
        if (e == 0) {
            e = service_snapshot_get(r, a.pos[0], NULL, &m);
            if (e == 0)
                e = snapshot_export(r->store, m, a.pos[1], &o);
            store_unlock(r->store);
        }
    }
    if (e < 0) {
        cli_error(e, "cannot export '%s'", a.pos[0]);
        return 1;
    }
    return 0;
}

static void print_json_snapshot(const struct registry_snapshot *s)
{
    char t[40], hex[DIGEST_HEX_SIZE];

    printf("{\"SnapshotId\":");
    json_string(stdout, s->id);
    printf(",\"OwnerId\":");
    json_string(stdout, s->owner);
    printf(",\"State\":\"%s\",\"Progress\":\"%d%%\",\"VolumeSize\":%u,\"VolumeSizeBytes\":%" PRIu64,
           snapshot_state_to_string(s->state), s->progress, s->volume_size_gib, s->volume_size);
    printf(",\"Description\":");
    json_string(stdout, s->description ? s->description : "");
    printf(",\"StartTime\":\"%s\"", format_time_ms(s->start_time, t, sizeof(t)));
    if (s->completion_time)
        printf(",\"CompletionTime\":\"%s\"", format_time_ms(s->completion_time, t, sizeof(t)));
    if (s->has_map)
        printf(",\"BlockMapId\":\"%s\"", digest_to_hex(&s->map_id, hex));
    if (s->parent_id[0])
        printf(",\"ParentSnapshotId\":\"%s\"", s->parent_id);
    printf("}");
}

static void print_json_snapshot_at(const void *rows, size_t i)
{
    print_json_snapshot(((struct registry_snapshot *const *)rows)[i]);
}

static void print_snapshot_header(void)
{
    printf("%-22s %-9s %10s  %-24s %s\n", "SNAPSHOT", "STATE", "SIZE", "STARTED",
           "DESCRIPTION");
}

static void print_snapshot_at(const void *rows, size_t i)
{
    const struct registry_snapshot *s = ((struct registry_snapshot *const *)rows)[i];
    char sz[32], t[40];

    printf("%-22s %-9s %10s  %-24s %s\n", s->id, snapshot_state_to_string(s->state),
           format_bytes(s->volume_size, sz, sizeof(sz)),
           format_time_ms(s->start_time, t, sizeof(t)), s->description ? s->description : "");
}

static int list_snapshots(struct region *r, void **ret_rows, size_t *ret_n)
{
    struct registry_snapshot **rows;
    int e = registry_snapshot_list(r->reg, &rows, ret_n);

    if (e == 0)
        *ret_rows = rows;
    return e;
}

static void release_snapshots(void *rows, size_t n)
{
    registry_snapshot_list_free(rows, n);
}

static int do_list(struct cli *cli, int argc, char **argv)
{
    static const struct cli_table table = {
        .what = "snapshots",
        .list = list_snapshots,
        .release = release_snapshots,
        .print_json_at = print_json_snapshot_at,
        .print_header = print_snapshot_header,
        .print_row_at = print_snapshot_at,
    };
    struct snap_args a = { 0 };
    int ex = parse(cli, argc, argv, list_usage, "json", 0, &a);

    return ex >= 0 ? ex : cli_list(cli, a.json, &table);
}

static int do_show(struct cli *cli, int argc, char **argv)
{
    struct snap_args a = { 0 };
    _cleanup_(region_freep) struct region *r = NULL;
    _cleanup_(blockmap_freep) struct blockmap *m = NULL;
    struct registry_snapshot *s = NULL;
    struct registry_tag *tags = NULL;
    size_t ntags = 0;
    int ex, e;

    ex = parse_snap(cli, argc, argv, show_usage, "json", &a);
    if (ex >= 0)
        return ex;
    e = cli_open_region(cli, &r);
    if (e == 0)
        e = service_snapshot_get(r, a.pos[0], &s, NULL);
    if (e < 0) {
        cli_fail(e);
        return 1;
    }
    if (s->has_map)
        blockmap_load(r->store, &s->map_id, &m); /* for the data figures only */
    registry_tag_list(r->reg, s->id, &tags, &ntags);
    if (a.json) {
        print_json_snapshot(s);
        printf("\n");
    } else {
        char t[40], b[32], hex[DIGEST_HEX_SIZE];
        printf("SnapshotId:     %s\n", s->id);
        printf("State:          %s (%d%%)\n", snapshot_state_to_string(s->state), s->progress);
        printf("OwnerId:        %s\n", s->owner);
        printf("VolumeSize:     %u GiB (%" PRIu64 " bytes)\n", s->volume_size_gib,
               s->volume_size);
        if (m) {
            printf("Data:           %s in %zu chunks\n",
                   format_bytes(blockmap_data_bytes(m), b, sizeof(b)), m->n);
        }
        printf("Description:    %s\n", s->description ? s->description : "");
        printf("StartTime:      %s\n", format_time_ms(s->start_time, t, sizeof(t)));
        if (s->completion_time)
            printf("CompletionTime: %s\n", format_time_ms(s->completion_time, t, sizeof(t)));
        if (s->parent_id[0])
            printf("Parent:         %s\n", s->parent_id);
        if (s->has_map)
            printf("BlockMap:       %s\n", digest_to_hex(&s->map_id, hex));
        for (size_t i = 0; i < ntags; i++)
            printf("Tag:            %s=%s\n", tags[i].key, tags[i].value);
    }
    registry_tag_list_free(tags, ntags);
    registry_snapshot_free(s);
    return 0;
}

static int do_delete(struct cli *cli, int argc, char **argv)
{
    struct snap_args a = { 0 };
    int ex = parse_snap(cli, argc, argv, delete_usage, "", &a);

    return ex >= 0 ? ex : cli_region_call(cli, a.pos[0], service_snapshot_delete);
}

static int do_diff(struct cli *cli, int argc, char **argv)
{
    struct snap_args a = { 0 };
    _cleanup_(region_freep) struct region *r = NULL;
    _cleanup_(blockmap_freep) struct blockmap *ma = NULL;
    _cleanup_(blockmap_freep) struct blockmap *mb = NULL;
    _cleanup_free_ uint64_t *blocks = NULL;
    size_t n = 0;
    int ex, e;

    ex = parse(cli, argc, argv, diff_usage, "", 2, &a);
    if (ex >= 0)
        return ex;
    if ((ex = cli_check_id("snap", a.pos[0])) >= 0 || (ex = cli_check_id("snap", a.pos[1])) >= 0)
        return ex;
    e = cli_open_region(cli, &r);
    /* Shared lock: gc must not sweep what the diff reads. */
    if (e == 0 && (e = store_lock(r->store, false, 60000)) == 0) {
        e = service_snapshot_get(r, a.pos[0], NULL, &ma);
        if (e == 0)
            e = service_snapshot_get(r, a.pos[1], NULL, &mb);
        if (e == 0)
            e = snapshot_diff(r->store, ma, mb, &blocks, &n);
        store_unlock(r->store);
    }
    if (e < 0) {
        cli_fail(e);
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        printf("%" PRIu64 "\n", blocks[i]);
    return 0;
}

int cmd_snapshot(struct cli *cli, int argc, char **argv)
{
    static const struct cli_verb verbs[] = {
        { "import", do_import }, { "export", do_export }, { "list", do_list },
        { "show", do_show },     { "delete", do_delete }, { "diff", do_diff },
    };

    return cli_dispatch(cli, argc, argv, "snapshot", verbs, ARRAY_SIZE(verbs), snapshot_usage);
}
