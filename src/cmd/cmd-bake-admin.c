/* kiln bake cache list|prune and kiln bake distribute BUILD. */
#include <stdio.h>

#include "cmd/cli.h"

int cmd_bake_cache(struct cli *cli, int argc, char **argv)
{
    (void)cli, (void)argc, (void)argv;
    fprintf(stderr, "kiln: bake cache: not written yet\n");
    return 1;
}

int cmd_bake_distribute(struct cli *cli, int argc, char **argv)
{
    (void)cli, (void)argc, (void)argv;
    fprintf(stderr, "kiln: bake distribute: not written yet\n");
    return 1;
}
