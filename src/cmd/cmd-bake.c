/* kiln bake TEMPLATE.json: bake an image (src/bake/driver.h), and the
 * dispatch of `kiln bake cache` and `kiln bake distribute`
 * (cmd-bake-admin.c). */
#include <stdio.h>
#include <string.h>

#include "cmd/cli.h"

int cmd_bake(struct cli *cli, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "cache") == 0)
        return cmd_bake_cache(cli, argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "distribute") == 0)
        return cmd_bake_distribute(cli, argc - 1, argv + 1);
    fprintf(stderr, "kiln: bake: the driver is not written yet\n");
    return 1;
}
