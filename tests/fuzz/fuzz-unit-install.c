/* Fuzz target for the [Install] reader of the offline executor's systemd
 * enable (src/bake/offline.c): unit files come from the image being baked,
 * so any bytes must parse or be refused with a message, and every name
 * returned is non-empty, without blanks, within the bound. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bake/offline.h"
#include "common/error.h"
#include "fuzz.h"

static void check(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!v[i][0] || strpbrk(v[i], " \t\r\n"))
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct offline_unit_install in;

    error_clear();
    int rc = offline_unit_install_parse((const char *)data, size, &in);
    if (rc < 0) {
        if (rc != -EINVAL || !error_message())
            abort();
        return 0;
    }
    if (in.n_wanted_by + in.n_required_by + in.n_alias > OFFLINE_UNIT_INSTALL_MAX)
        abort();
    check(in.wanted_by, in.n_wanted_by);
    check(in.required_by, in.n_required_by);
    check(in.alias, in.n_alias);
    offline_unit_install_release(&in);
    return 0;
}
