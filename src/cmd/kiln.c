/* kiln: the command line.  Option parsing and wiring only; the work is done
 * by the service layer (src/service/). */
#include <stdio.h>
#include <string.h>

#include "cmd/cli.h"
#include "common/log.h"

static const char usage[] =
    "usage: kiln [--data-dir DIR] [--region R] VERB [ARGS]\n"
    "\n"
    "Self-hosted machine images: a deduplicated, compressed, verified block\n"
    "snapshot store.\n"
    "\n"
    "Verbs:\n"
    "  snapshot import FILE     import a raw or qcow2 disk image as a snapshot\n"
    "  snapshot export SNAP OUT write a snapshot out as a raw or qcow2 image\n"
    "  snapshot list            list snapshots\n"
    "  snapshot show SNAP       show one snapshot\n"
    "  snapshot delete SNAP     delete a snapshot (gc frees its chunks)\n"
    "  snapshot diff A B        the 512 KiB blocks that differ between two snapshots\n"
    "  image import FILE --name N  import a disk image and register it as an image\n"
    "  image list               list images\n"
    "  fsck                     verify every block map and chunk\n"
    "  gc                       free chunks no snapshot uses\n"
    "  du                       storage use, per snapshot and in total\n"
    "  serve                    serve the EC2 API (`kiln serve --help`)\n"
    "  nbd VOL|SNAP --socket P  serve a volume or a snapshot over NBD\n"
    "  volume create --snapshot SNAP | --size GIB  create a copy-on-write volume\n"
    "  volume list|show|delete|grow  list, show, delete or grow volumes\n"
    "  volume snapshot VOL      snapshot a volume incrementally\n"
    "  vm boot VOLUME           boot a volume under QEMU (`kiln vm --help`)\n"
    "  imds-serve DIR           one guest connection to the metadata service\n"
    "                           (run by QEMU's guestfwd; docs/imds.md)\n"
    "  base-image build tiny|debian  build and register a base image from Debian\n"
    "  bake TEMPLATE.json             bake an image from a template (docs/baking.md)\n"
    "  bake cache list|prune          the layer cache of bakes\n"
    "  bake distribute BUILD          copy a build's image to its regions again\n"
    "                           packages\n"
    "  bake TEMPLATE.json       bake an image from a template (docs/baking.md)\n"
    "  bake cache list|prune    the layer cache of bakes\n"
    "  bake distribute BUILD    copy a build's image to its regions again\n"
    "  account create NAME      create an account and its first access key\n"
    "  account list             list accounts and their access key ids\n"
    "\n"
    "Options every verb takes:\n"
    "  --data-dir DIR   data directory (default $KILN_DATA_DIR, else\n"
    "                   $XDG_DATA_HOME/kiln, else ~/.local/share/kiln)\n"
    "  --region R       region (default $KILN_REGION, else " DEFAULT_REGION ")\n"
    "  -q, --quiet      no progress bars or summaries\n"
    "  -v, --verbose    more log output (repeatable)\n"
    "  -h, --help       help; `kiln VERB --help` for a verb's options\n"
    "\n"
    "Exit status: 0 success, 1 failure (or damage found by fsck), 2 usage error.\n";

int main(int argc, char **argv)
{
    struct cli cli = { 0 };
    int i, r;

    log_set_prefix("kiln");
    /* Options before the verb. */
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            puts("kiln " KILN_VERSION);
            return 0;
        } else if ((strcmp(a, "--data-dir") == 0 || strcmp(a, "--region") == 0) &&
                   i + 1 < argc) {
            char **slot = a[2] == 'd' ? &cli.data_dir : &cli.region;
            *slot = strdup(argv[++i]);
        } else if (strncmp(a, "--data-dir=", 11) == 0) {
            cli.data_dir = strdup(a + 11);
        } else if (strncmp(a, "--region=", 9) == 0) {
            cli.region = strdup(a + 9);
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            cli.quiet = true;
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            log_set_level(log_get_level() + 1);
        } else {
            fprintf(stderr, "kiln: unknown option '%s'\n\n%s", a, usage);
            return EXIT_USAGE;
        }
    }
    if (i >= argc) {
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    if (cli.data_dir && !*cli.data_dir) {
        fprintf(stderr, "kiln: --data-dir must not be empty\n");
        return EXIT_USAGE;
    }
    if (cli.region && !region_name_is_valid(cli.region)) {
        fprintf(stderr, "kiln: invalid region name '%s' (lowercase letters, digits and dashes, "
                        "starting with a letter)\n", cli.region);
        return EXIT_USAGE;
    }
    const char *verb = argv[i];
    argc -= i;
    argv += i;
    if (strcmp(verb, "snapshot") == 0)
        r = cmd_snapshot(&cli, argc, argv);
    else if (strcmp(verb, "image") == 0)
        r = cmd_image(&cli, argc, argv);
    else if (strcmp(verb, "fsck") == 0)
        r = cmd_fsck(&cli, argc, argv);
    else if (strcmp(verb, "gc") == 0)
        r = cmd_gc(&cli, argc, argv);
    else if (strcmp(verb, "du") == 0)
        r = cmd_du(&cli, argc, argv);
    else if (strcmp(verb, "serve") == 0)
        r = cmd_serve(&cli, argc, argv);
    else if (strcmp(verb, "account") == 0)
        r = cmd_account(&cli, argc, argv);
    else if (strcmp(verb, "nbd") == 0)
        r = cmd_nbd(&cli, argc, argv);
    else if (strcmp(verb, "volume") == 0)
        r = cmd_volume(&cli, argc, argv);
    else if (strcmp(verb, "vm") == 0)
        r = cmd_vm(&cli, argc, argv);
    else if (strcmp(verb, "imds-serve") == 0)
        r = cmd_imds_serve(&cli, argc, argv);
    else if (strcmp(verb, "base-image") == 0)
        r = cmd_base_image(&cli, argc, argv);
    else if (strcmp(verb, "bake") == 0)
        r = cmd_bake(&cli, argc, argv);
    else if (strcmp(verb, "help") == 0) {
        fputs(usage, stdout);
        r = 0;
    } else {
        fprintf(stderr, "kiln: unknown verb '%s'\n\n%s", verb, usage);
        r = EXIT_USAGE;
    }
    free(cli.data_dir);
    free(cli.region);
    return r;
}
