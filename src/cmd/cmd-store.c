/* kiln fsck | gc | du: whole-store verbs. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cli.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"

static const char fsck_usage[] =
    "usage: kiln fsck [--repair]\n"
    "\n"
    "Reread every block map and chunk of the region and verify their digests.\n"
    "Exit 0 when clean; otherwise name every damaged snapshot and block and exit 1.\n"
    "  --repair   also remove damaged chunks, so that importing the same data again\n"
    "             writes them anew (the snapshots that used them stay damaged)\n";

static const char gc_usage[] =
    "usage: kiln gc [--dry-run] [--grace SECONDS]\n"
    "\n"
    "Free the chunks and block maps no snapshot uses (mark and sweep).  Waits for\n"
    "running imports.  Objects younger than the grace period are kept.\n"
    "  --dry-run        report what would be freed, free nothing\n"
    "  --grace SECONDS  grace period (default 900)\n";

static const char du_usage[] =
    "usage: kiln du [--json]\n"
    "\n"
    "Logical and stored bytes, the bytes unique to each snapshot (what deleting it\n"
    "and running gc would free), and the store's dedup and compression ratios.\n";

enum { OPT_REPAIR = 1000, OPT_DRY_RUN, OPT_GRACE, OPT_JSON };

static const struct option options[] = {
    CLI_COMMON_OPTIONS,
    { "repair", no_argument, NULL, OPT_REPAIR },
    { "dry-run", no_argument, NULL, OPT_DRY_RUN },
    { "grace", required_argument, NULL, OPT_GRACE },
    { "json", no_argument, NULL, OPT_JSON },
    { NULL, 0, NULL, 0 },
};

struct store_args {
    bool repair, dry_run, json;
    long grace;
};

static int store_option(int opt, const char *arg, void *ud)
{
    struct store_args *a = ud;
    char *end;

    switch (opt) {
    case OPT_REPAIR: a->repair = true; break;
    case OPT_DRY_RUN: a->dry_run = true; break;
    case OPT_JSON: a->json = true; break;
    case OPT_GRACE:
        a->grace = strtol(arg, &end, 10);
        if (!*arg || *end || a->grace < 0) {
            fprintf(stderr, "kiln: --grace wants a number of seconds\n");
            return EXIT_USAGE;
        }
        break;
    }
    return -1;
}

static int parse(struct cli *cli, int argc, char **argv, const char *usage, const char *allowed,
                 struct store_args *a)
{
    char **pos;

    a->grace = 900;
    return cli_parse(cli, argc, argv, options, usage, allowed, 0, store_option, a, &pos);
}

static void print_damage(const struct fsck_damage *d, void *userdata)
{
    char hex[DIGEST_HEX_SIZE];
    uint64_t *count = userdata;

    (*count)++;
    digest_to_hex(&d->object, hex);
    switch (d->problem) {
    case FSCK_MAP_MISSING:
        printf("snapshot %s: block map %s is missing: every block is lost\n", d->snapshot_id,
               hex);
        break;
    case FSCK_MAP_CORRUPT:
        printf("snapshot %s: block map %s is corrupt: every block is lost\n", d->snapshot_id,
               hex);
        break;
    case FSCK_CHUNK_MISSING:
    case FSCK_CHUNK_CORRUPT:
    {
        uint64_t first = d->offset / EBS_BLOCK_SIZE;
        uint64_t last = (d->offset + d->length - 1) / EBS_BLOCK_SIZE;
        char blocks[64];
        if (first == last)
            snprintf(blocks, sizeof(blocks), "512 KiB block %" PRIu64, first);
        else
            snprintf(blocks, sizeof(blocks), "512 KiB blocks %" PRIu64 "-%" PRIu64, first, last);
        printf("snapshot %s: bytes %" PRIu64 "-%" PRIu64 " (%s): chunk %s is %s\n",
               d->snapshot_id, d->offset, d->offset + d->length - 1, blocks, hex,
               d->problem == FSCK_CHUNK_MISSING ? "missing" : "corrupt");
    }
        break;
    case FSCK_ORPHAN_CORRUPT:
        printf("chunk %s is corrupt (no snapshot uses it)\n", hex);
        break;
    case FSCK_ORPHAN_MAP_CORRUPT:
        printf("block map %s is corrupt (no snapshot uses it)\n", hex);
        break;
    }
}

int cmd_fsck(struct cli *cli, int argc, char **argv)
{
    struct store_args a = { 0 };
    _cleanup_(region_freep) struct region *r = NULL;
    struct fsck_report rep;
    uint64_t damage = 0;
    int ex, e;

    ex = parse(cli, argc, argv, fsck_usage, "repair", &a);
    if (ex >= 0)
        return ex;
    e = cli_open_region(cli, &r);
    if (e == 0)
        e = service_fsck(r, a.repair, !cli->quiet, print_damage, &damage, &rep);
    if (e < 0) {
        cli_error(e, "fsck failed");
        return 1;
    }
    if (!cli->quiet) {
        char b[32];
        printf("%" PRIu64 " snapshots, %" PRIu64 " block maps, %" PRIu64 " chunks (%s) checked\n",
               rep.snapshots, rep.maps, rep.chunks, format_bytes(rep.bytes, b, sizeof(b)));
    }
    if (e == 0) {
        if (!cli->quiet)
            printf("clean\n");
        return 0;
    }
    printf("damage: %" PRIu64 " snapshot%s affected, %" PRIu64 " damaged object%s",
           rep.damaged_snapshots, rep.damaged_snapshots == 1 ? "" : "s", rep.damaged_objects,
           rep.damaged_objects == 1 ? "" : "s");
    if (a.repair)
        printf(", %" PRIu64 " removed", rep.removed);
    printf("\n");
    return 1;
}

int cmd_gc(struct cli *cli, int argc, char **argv)
{
    struct store_args a = { 0 };
    _cleanup_(region_freep) struct region *r = NULL;
    struct gc_report rep;
    int ex, e;

    ex = parse(cli, argc, argv, gc_usage, "dry-run grace", &a);
    if (ex >= 0)
        return ex;
    e = cli_open_region(cli, &r);
    if (e == 0)
        e = service_gc(r, a.dry_run, (time_t)a.grace, &rep);
    if (e < 0) {
        cli_error(e, "gc failed");
        return 1;
    }
    char b[32], t[32];
    printf("%s %" PRIu64 " chunks and %" PRIu64 " block maps (%s), %" PRIu64
           " temporaries (%s); kept %" PRIu64 " chunks\n",
           a.dry_run ? "would free" : "freed", rep.chunks_freed, rep.maps_freed,
           format_bytes(rep.bytes_freed, b, sizeof(b)), rep.temporaries_freed,
           format_bytes(rep.temporary_bytes_freed, t, sizeof(t)), rep.chunks_kept);
    return 0;
}

int cmd_du(struct cli *cli, int argc, char **argv)
{
    struct store_args a = { 0 };
    _cleanup_(region_freep) struct region *r = NULL;
    struct du_report d;
    int ex, e;

    ex = parse(cli, argc, argv, du_usage, "json", &a);
    if (ex >= 0)
        return ex;
    e = cli_open_region(cli, &r);
    if (e == 0)
        e = service_du(r, &d);
    if (e < 0) {
        cli_error(e, "du failed");
        return 1;
    }
    if (a.json) {
        printf("{\"LogicalBytes\":%" PRIu64 ",\"DataBytes\":%" PRIu64
               ",\"UniqueBytes\":%" PRIu64 ",\"StoredBytes\":%" PRIu64 ",\"Chunks\":%" PRIu64
               ",\"DedupRatio\":%.3f,\"CompressionRatio\":%.3f,\"Snapshots\":[",
               d.logical_bytes, d.data_bytes, d.unique_plain, d.stored_bytes, d.chunks,
               d.dedup_ratio, d.compression_ratio);
        for (size_t i = 0; i < d.n; i++)
            printf("%s{\"SnapshotId\":\"%s\",\"LogicalBytes\":%" PRIu64
                   ",\"DataBytes\":%" PRIu64 ",\"UniqueStoredBytes\":%" PRIu64 "}",
                   i ? "," : "", d.snaps[i].row->id, d.snaps[i].row->volume_size,
                   d.snaps[i].data_bytes, d.snaps[i].unique_bytes);
        printf("]}\n");
    } else {
        char l[32], x[32], u[32];
        printf("%-22s %12s %12s %14s\n", "SNAPSHOT", "LOGICAL", "DATA", "UNIQUE STORED");
        for (size_t i = 0; i < d.n; i++)
            printf("%-22s %12s %12s %14s\n", d.snaps[i].row->id,
                   format_bytes(d.snaps[i].row->volume_size, l, sizeof(l)),
                   format_bytes(d.snaps[i].data_bytes, x, sizeof(x)),
                   format_bytes(d.snaps[i].unique_bytes, u, sizeof(u)));
        printf("\nlogical   %s in %zu snapshots\n", format_bytes(d.logical_bytes, l, sizeof(l)),
               d.n);
        printf("data      %s (non-zero blocks)\n", format_bytes(d.data_bytes, l, sizeof(l)));
        printf("unique    %s in %" PRIu64 " chunks (dedup ratio %.2fx)\n",
               format_bytes(d.unique_plain, l, sizeof(l)), d.chunks, d.dedup_ratio);
        printf("stored    %s (compression ratio %.2fx)\n",
               format_bytes(d.stored_bytes, l, sizeof(l)), d.compression_ratio);
    }
    du_report_release(&d);
    return 0;
}
