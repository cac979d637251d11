/* kiln volume create|list|show|delete|grow|snapshot */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd/cli.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "volume/volume.h"

static const char create_usage[] =
    "usage: kiln volume create --snapshot SNAP [--size GIB] | --size GIB\n"
    "\n"
    "Create a copy-on-write volume from a snapshot (at once: nothing is copied;\n"
    "blocks are loaded when first read) or a blank one, and print its id as the\n"
    "last line of standard output.\n"
    "\n"
    "  --snapshot SNAP   the snapshot to start from\n"
    "  --size GIB        size in GiB (default: the snapshot's; at least that)\n";
static const char list_usage[] =
    "usage: kiln volume list [--json]\n\nList the region's volumes.\n";
static const char show_usage[] =
    "usage: kiln volume show VOL [--json]\n\nShow one volume.\n";
static const char delete_usage[] =
    "usage: kiln volume delete VOL\n\n"
    "Delete a volume and its data.  Refused while it is attached or served.\n";
static const char grow_usage[] =
    "usage: kiln volume grow VOL --size GIB\n\n"
    "Grow a volume; the new blocks read as zeros.  Volumes never shrink.\n";
static const char snapshot_usage_text[] =
    "usage: kiln volume snapshot VOL [--description D]\n"
    "\n"
    "Snapshot a volume incrementally: only the blocks written since it was\n"
    "created (and the rest of the chunks they split) are read and stored; the\n"
    "new snapshot shares every other chunk with the volume's snapshot, which\n"
    "becomes its parent.  Prints the new snapshot's id as the last line.\n";

static const char volume_usage[] =
    "usage: kiln volume create|list|show|delete|grow|snapshot ...\n"
    "\n"
    "  create --snapshot SNAP | --size GIB   create a volume\n"
    "  list                 list volumes\n"
    "  show VOL             show one volume\n"
    "  delete VOL           delete a volume\n"
    "  grow VOL --size GIB  grow a volume\n"
    "  snapshot VOL         snapshot a volume incrementally\n"
    "\n"
    "`kiln nbd VOL --socket PATH` serves a volume.  `kiln volume VERB --help`\n"
    "describes each verb.\n";

enum { OPT_SNAPSHOT = 1000, OPT_SIZE, OPT_JSON, OPT_DESCRIPTION };

static const struct option all_options[] = {
    CLI_COMMON_OPTIONS,
    { "snapshot", required_argument, NULL, OPT_SNAPSHOT },
    { "size", required_argument, NULL, OPT_SIZE },
    { "json", no_argument, NULL, OPT_JSON },
    { "description", required_argument, NULL, OPT_DESCRIPTION },
    { NULL, 0, NULL, 0 },
};

struct vol_args {
    const char *snapshot;
    const char *description;
    uint32_t size_gib;
    bool json;
    char **pos;
};

static int vol_option(int opt, const char *arg, void *ud)
{
    struct vol_args *a = ud;

    switch (opt) {
    case OPT_SNAPSHOT: a->snapshot = arg; break;
    case OPT_DESCRIPTION: a->description = arg; break;
    case OPT_JSON: a->json = true; break;
    case OPT_SIZE: {
        char *end;
        errno = 0;
        unsigned long n = strtoul(arg, &end, 10);
        if (errno || *end || arg[0] == '-' || n < 1 || n > VOLUME_SIZE_GIB_MAX) {
            fprintf(stderr, "kiln: --size wants a number of GiB from 1 to %d\n",
                    VOLUME_SIZE_GIB_MAX);
            return EXIT_USAGE;
        }
        a->size_gib = (uint32_t)n;
        break;
    }
    }
    return -1;
}

static int parse(struct cli *cli, int argc, char **argv, const char *usage, const char *allowed,
                 int npos, struct vol_args *a)
{
    return cli_parse(cli, argc, argv, all_options, usage, allowed, npos, vol_option, a, &a->pos);
}

/* parse() for a verb on one volume: its one argument must be a volume id. */
static int parse_vol(struct cli *cli, int argc, char **argv, const char *usage,
                     const char *allowed, struct vol_args *a)
{
    int ex = parse(cli, argc, argv, usage, allowed, 1, a);
    if (ex >= 0)
        return ex;
    return cli_check_id("vol", a->pos[0]);
}

static int do_create(struct cli *cli, int argc, char **argv)
{
    struct vol_args a = { 0 };
    _cleanup_(region_freep) struct region *r = NULL;
    char id[ID_MAX_SIZE];
    int ex, e;

    ex = parse(cli, argc, argv, create_usage, "snapshot size", 0, &a);
    if (ex >= 0)
        return ex;
    if (!a.snapshot && !a.size_gib) {
        fprintf(stderr, "kiln: a volume needs --snapshot SNAP or --size GIB\n\n%s",
                create_usage);
        return EXIT_USAGE;
    }
    if (a.snapshot && (ex = cli_check_id("snap", a.snapshot)) >= 0)
        return ex;
    struct service_volume_create_options o = { .snapshot_id = a.snapshot,
                                               .size_gib = a.size_gib };
    e = cli_open_region(cli, &r);
    if (e == 0)
        e = service_volume_create(r, &o, id);
    if (e < 0) {
        cli_fail(e);
        return 1;
    }
    printf("%s\n", id);
    return 0;
}

static void print_json_volume(const struct registry_volume *v)
{
    char t[40];

    printf("{\"VolumeId\":");
    json_string(stdout, v->id);
    printf(",\"Size\":%u,\"State\":\"%s\",\"AvailabilityZone\":", v->size_gib,
           volume_state_to_string(v->state));
    json_string(stdout, v->availability_zone);
    printf(",\"SnapshotId\":");
    json_string(stdout, v->snapshot_id);
    printf(",\"VolumeType\":\"%s\",\"Iops\":%d,\"Throughput\":%d,\"CreateTime\":\"%s\"",
           v->volume_type, v->iops, v->throughput, format_time_ms(v->create_time, t, sizeof(t)));
    printf(",\"OwnerId\":\"%s\"}", v->owner);
}

static void print_json_volume_at(const void *rows, size_t i)
{
    print_json_volume(((struct registry_volume *const *)rows)[i]);
}

static void print_volume_header(void)
{
    printf("%-21s %-9s %6s  %-22s %-24s\n", "VOLUME", "STATE", "SIZE", "SNAPSHOT", "CREATED");
}

static void print_volume_at(const void *rows, size_t i)
{
    const struct registry_volume *v = ((struct registry_volume *const *)rows)[i];
    char t[40];

    printf("%-21s %-9s %4uGiB  %-22s %-24s\n", v->id, volume_state_to_string(v->state),
           v->size_gib, v->snapshot_id[0] ? v->snapshot_id : "-",
           format_time_ms(v->create_time, t, sizeof(t)));
}

static int list_volumes(struct region *r, void **ret_rows, size_t *ret_n)
{
    struct registry_volume **rows;
    int e = registry_volume_list(r->reg, &rows, ret_n);

    if (e == 0)
        *ret_rows = rows;
    return e;
}

static void release_volumes(void *rows, size_t n)
{
    registry_volume_list_free(rows, n);
}

static int do_list(struct cli *cli, int argc, char **argv)
{
    static const struct cli_table table = {
        .what = "volumes",
        .list = list_volumes,
        .release = release_volumes,
        .print_json_at = print_json_volume_at,
        .print_header = print_volume_header,
        .print_row_at = print_volume_at,
    };
    struct vol_args a = { 0 };
    int ex = parse(cli, argc, argv, list_usage, "json", 0, &a);

    return ex >= 0 ? ex : cli_list(cli, a.json, &table);
}

static int do_show(struct cli *cli, int argc, char **argv)
{
    struct vol_args a = { 0 };
    _cleanup_(region_freep) struct region *r = NULL;
    _cleanup_(registry_volume_freep) struct registry_volume *v = NULL;
    int ex, e;

    ex = parse_vol(cli, argc, argv, show_usage, "json", &a);
    if (ex >= 0)
        return ex;
    e = cli_open_region(cli, &r);
    if (e == 0)
        e = service_volume_get(r, a.pos[0], &v);
    if (e < 0) {
        cli_fail(e);
        return 1;
    }
    if (a.json) {
        print_json_volume(v);
        printf("\n");
        return 0;
    }
    char t[40];
    _cleanup_free_ char *dir = service_volume_dir(r, v->id);
    printf("VolumeId:         %s\n", v->id);
    printf("State:            %s\n", volume_state_to_string(v->state));
    printf("Size:             %u GiB\n", v->size_gib);
    printf("SnapshotId:       %s\n", v->snapshot_id[0] ? v->snapshot_id : "-");
    printf("AvailabilityZone: %s\n", v->availability_zone);
    printf("VolumeType:       %s (%d IOPS, %d MiB/s)\n", v->volume_type, v->iops,
           v->throughput);
    printf("OwnerId:          %s\n", v->owner);
    printf("CreateTime:       %s\n", format_time_ms(v->create_time, t, sizeof(t)));
    if (v->instance_id[0])
        printf("Attachment:       %s on %s\n", v->instance_id, v->device);
    printf("Directory:        %s\n", dir);
    /* Space on disk: what was written, and what was fetched. */
    static const char *const files[][2] = { { "overlay", "Overlay:          " },
                                             { "cache", "Cache:            " } };
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        _cleanup_free_ char *f = xasprintf("%s/%s", dir, files[i][0]);
        struct stat st;
        char b[32];
        if (stat(f, &st) == 0)
            printf("%s%s on disk\n", files[i][1],
                   format_bytes((uint64_t)st.st_blocks * 512, b, sizeof(b)));
    }
    return 0;
}

static int do_delete(struct cli *cli, int argc, char **argv)
{
    struct vol_args a = { 0 };
    int ex = parse_vol(cli, argc, argv, delete_usage, "", &a);

    return ex >= 0 ? ex : cli_region_call(cli, a.pos[0], service_volume_delete);
}

static int do_grow(struct cli *cli, int argc, char **argv)
{
    struct vol_args a = { 0 };
    _cleanup_(region_freep) struct region *r = NULL;
    int ex, e;

    ex = parse_vol(cli, argc, argv, grow_usage, "size", &a);
    if (ex >= 0)
        return ex;
    if (!a.size_gib) {
        fprintf(stderr, "kiln: grow needs --size GIB\n");
        return EXIT_USAGE;
    }
    e = cli_open_region(cli, &r);
    if (e == 0)
        e = service_volume_grow(r, a.pos[0], a.size_gib);
    if (e < 0) {
        cli_fail(e);
        return 1;
    }
    return 0;
}

static int do_snapshot(struct cli *cli, int argc, char **argv)
{
    struct vol_args a = { 0 };
    _cleanup_(region_freep) struct region *r = NULL;
    struct volume_snapshot_stats st;
    char id[ID_MAX_SIZE];
    uint64_t t0 = now_ns();
    int ex, e;

    ex = parse_vol(cli, argc, argv, snapshot_usage_text, "description", &a);
    if (ex >= 0)
        return ex;
    if (a.description && strlen(a.description) > 255) {
        fprintf(stderr, "kiln: the description is longer than 255 characters\n");
        return EXIT_USAGE;
    }
    struct service_volume_snapshot_options o = { .description = a.description };
    e = cli_open_region(cli, &r);
    if (e == 0)
        e = service_volume_snapshot(r, a.pos[0], &o, id, &st);
    if (e < 0) {
        cli_fail(e);
        return 1;
    }
    if (!cli->quiet) {
        char rb[32], nb[32], sb[32];
        printf("snapshot of '%s' in %.2f s: %" PRIu64 " blocks written, %s read, %" PRIu64
               " chunks (%" PRIu64 " shared, %" PRIu64 " new: %s, %s stored)\n",
               a.pos[0], (double)(now_ns() - t0) / 1e9, st.blocks_dirty,
               format_bytes(st.bytes_read, rb, sizeof(rb)), st.chunks, st.chunks_shared,
               st.chunks_new, format_bytes(st.bytes_new, nb, sizeof(nb)),
               format_bytes(st.stored_new, sb, sizeof(sb)));
    }
    printf("%s\n", id);
    return 0;
}

int cmd_volume(struct cli *cli, int argc, char **argv)
{
    static const struct cli_verb verbs[] = {
        { "create", do_create }, { "list", do_list }, { "show", do_show },
        { "delete", do_delete }, { "grow", do_grow }, { "snapshot", do_snapshot },
    };

    return cli_dispatch(cli, argc, argv, "volume", verbs, ARRAY_SIZE(verbs), volume_usage);
}
