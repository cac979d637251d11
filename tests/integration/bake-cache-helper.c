/* bake-cache-helper DATA REGION BUILD IMAGE TEMPLATE: record the
 * distribution of build BUILD (its image IMAGE in REGION) from the template
 * file TEMPLATE with bake_distribution_record(), as the driver does after
 * the tests pass, so that bake-cache.sh can drive `kiln bake distribute`
 * through the command line.  The template's output and distribution must
 * not use {{ }} (nothing is expanded here).  Exit 0, or 1 with the error
 * on standard error. */
#include <stdio.h>

#include "bake/distribute.h"
#include "bake/template.h"
#include "common/error.h"
#include "service/service.h"

int main(int argc, char **argv)
{
    struct bake_template *t = NULL;
    struct region *r = NULL;
    int e;

    if (argc != 6) {
        fprintf(stderr, "usage: bake-cache-helper DATA REGION BUILD IMAGE TEMPLATE\n");
        return 2;
    }
    e = bake_template_load(argv[5], &t);
    if (e >= 0)
        e = region_open(argv[1], argv[2], false, &r);
    if (e >= 0)
        e = bake_distribution_record(r->reg, argv[3], argv[2], argv[4], t);
    if (e < 0)
        fprintf(stderr, "bake-cache-helper: %s\n", error_message() ? error_message() : "failed");
    region_free(r);
    bake_template_free(t);
    return e < 0 ? 1 : 0;
}
