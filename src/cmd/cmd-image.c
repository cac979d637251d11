/* kiln image import | list: machine images from the command line. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cli.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "registry/images.h"

static const char image_usage[] =
    "usage: kiln image import|list ...\n"
    "\n"
    "  import FILE --name N   import a disk image and register it as an image\n"
    "  list                   list the region's images\n"
    "\n"
    "`kiln image VERB --help` describes each.  The EC2 API (`kiln serve`) has\n"
    "the rest: DescribeImages, ModifyImageAttribute, DeregisterImage, ...\n";

static const char import_usage[] =
    "usage: kiln image import FILE --name NAME [--description D] [--architecture A]\n"
    "                         [--boot-mode M] [--format raw|qcow2|auto]\n"
    "\n"
    "Import a disk image as a snapshot and register an available image whose\n"
    "root device /dev/xvda maps it, in one step, owned by the data directory's\n"
    "default account.  Prints the snapshot id, then the image id as the last\n"
    "line of standard output.  Nothing is registered if any step fails.\n"
    "\n"
    "  --name NAME          image name: 3 to 128 letters, digits and ( ) [ ] . / - ' @ _\n"
    "                       and spaces; unique among the account's images\n"
    "  --description D      free text, up to 255 characters\n"
    "  --architecture A     i386, x86_64 (default), arm64, x86_64_mac, arm64_mac\n"
    "  --boot-mode M        legacy-bios, uefi or uefi-preferred\n"
    "  --format F           raw, qcow2 or auto (default: probe the file)\n";

static const char list_usage[] =
    "usage: kiln image list [--json]\n\nList the region's images (every account's).\n";

enum { OPT_NAME = 1000, OPT_DESCRIPTION, OPT_ARCH, OPT_BOOT, OPT_FORMAT, OPT_JSON };

static const struct option options[] = {
    CLI_COMMON_OPTIONS,
    { "name", required_argument, NULL, OPT_NAME },
    { "description", required_argument, NULL, OPT_DESCRIPTION },
    { "architecture", required_argument, NULL, OPT_ARCH },
    { "boot-mode", required_argument, NULL, OPT_BOOT },
    { "format", required_argument, NULL, OPT_FORMAT },
    { "json", no_argument, NULL, OPT_JSON },
    { NULL, 0, NULL, 0 },
};

struct image_args {
    const char *name, *description, *arch, *boot, *format;
    bool json;
    char **pos;
};

static int image_option(int opt, const char *arg, void *ud)
{
    struct image_args *a = ud;

    switch (opt) {
    case OPT_NAME: a->name = arg; break;
    case OPT_DESCRIPTION: a->description = arg; break;
    case OPT_ARCH: a->arch = arg; break;
    case OPT_BOOT: a->boot = arg; break;
    case OPT_FORMAT: a->format = arg; break;
    case OPT_JSON: a->json = true; break;
    }
    return -1;
}

static int do_import(struct cli *cli, int argc, char **argv)
{
    struct image_args a = { 0 };
    _cleanup_(region_freep) struct region *r = NULL;
    struct service_image_import_options o = { .format = IMAGE_FORMAT_AUTO };
    char ami[ID_MAX_SIZE], snap[ID_MAX_SIZE];
    int ex, e;

    ex = cli_parse(cli, argc, argv, options, import_usage,
                   "name description architecture boot-mode format", 1, image_option, &a,
                   &a.pos);
    if (ex >= 0)
        return ex;
    if (!a.name) {
        fprintf(stderr, "kiln: image import needs --name\n\n%s", import_usage);
        return EXIT_USAGE;
    }
    if (a.format && image_format_from_string(a.format, &o.format) < 0) {
        fprintf(stderr, "kiln: unknown format '%s' (raw, qcow2 or auto)\n", a.format);
        return EXIT_USAGE;
    }
    o.name = a.name;
    o.description = a.description;
    o.architecture = a.arch;
    o.boot_mode = a.boot;
    o.progress = !cli->quiet;
    e = cli_open_region(cli, &r);
    if (e == 0)
        e = service_image_import(r, a.pos[0], &o, ami, snap);
    if (e < 0) {
        cli_fail(e);
        return 1;
    }
    printf("%s\n%s\n", snap, ami);
    return 0;
}

static int do_list(struct cli *cli, int argc, char **argv)
{
    struct image_args a = { 0 };
    _cleanup_(region_freep) struct region *r = NULL;
    struct image_query q = { .include_deprecated = true, .include_disabled = true };
    struct registry_image **list = NULL;
    char *next = NULL;
    size_t n = 0;
    int ex, e;

    ex = cli_parse(cli, argc, argv, options, list_usage, "json", 0, image_option, &a, &a.pos);
    if (ex >= 0)
        return ex;
    e = cli_open_region(cli, &r);
    if (e == 0)
        e = registry_image_list(r->reg, &q, &list, &n, &next);
    if (e < 0) {
        cli_fail(e);
        return 1;
    }
    if (a.json)
        printf("[");
    else if (n)
        printf("%-21s %-12s %-12s %-24s %s\n", "IMAGE", "STATE", "OWNER", "CREATED", "NAME");
    for (size_t i = 0; i < n; i++) {
        const struct registry_image *img = list[i];
        char t[40];
        format_time_ms(img->creation_date, t, sizeof(t));
        if (a.json) {
            printf("%s{\"ImageId\":\"%s\",\"OwnerId\":\"%s\",\"State\":\"%s\",\"Name\":", i ? ",\n " : "",
                   img->id, img->owner, image_state_to_string(img->state));
            json_string(stdout, img->name);
            printf(",\"CreationDate\":\"%s\",\"Public\":%s,\"RootSnapshotId\":\"%s\"}", t,
                   img->is_public ? "true" : "false",
                   img->n_devices ? img->devices[0].snapshot_id : "");
        } else {
            printf("%-21s %-12s %-12s %-24s %s\n", img->id, image_state_to_string(img->state),
                   img->owner, t, img->name);
        }
    }
    if (a.json)
        printf("]\n");
    registry_image_list_free(list, n);
    free(next);
    return 0;
}

int cmd_image(struct cli *cli, int argc, char **argv)
{
    static const struct cli_verb verbs[] = {
        { "import", do_import },
        { "list", do_list },
    };

    return cli_dispatch(cli, argc, argv, "image", verbs, ARRAY_SIZE(verbs), image_usage);
}
