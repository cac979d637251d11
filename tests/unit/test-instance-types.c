/* Instance types and the capacity check (src/service/instance-types.c):
 * the documented table, unknown names, the host read from /proc, and the
 * memory and vCPU budgets on a made-up host, to the MiB. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "service/instance-types.h"
#include "tap.h"

int main(void)
{
    const struct instance_type *t, *all;
    struct host_capacity host = {0};
    size_t n = 0;

    all = instance_types(&n);
    ok(n >= 3, "a table of types");
    t = instance_type_find("t3.nano");
    ok(t && t->vcpus == 2 && t->memory_mib == 512, "t3.nano: 2 vCPUs, 512 MiB");
    t = instance_type_find("t3.micro");
    ok(t && t->vcpus == 2 && t->memory_mib == 1024, "t3.micro: 2 vCPUs, 1 GiB");
    t = instance_type_find("t3.small");
    ok(t && t->vcpus == 2 && t->memory_mib == 2048, "t3.small: 2 vCPUs, 2 GiB");
    ok(instance_type_find("t3.Nano") == NULL, "names are case-sensitive");
    ok(instance_type_find("x1e.32xlarge") == NULL, "an unknown type");
    ok(instance_type_find(NULL) == NULL, "no name");
    for (size_t i = 0; i < n; i++)
        for (size_t k = i + 1; k < n; k++)
            if (strcmp(all[i].name, all[k].name) == 0)
                ok(0, "type '%s' listed twice", all[i].name);

    is_int(host_capacity_read(&host), 0, "read this host");
    ok(host.cpus >= 1 && host.memory_mib >= 64, "it has CPUs and memory");

    /* A host of 2 CPUs and 4096 MiB: 3072 MiB and 8 vCPUs for instances. */
    struct host_capacity small = {.cpus = 2, .memory_mib = 4096};
    t = instance_type_find("t3.nano");
    is_int(instance_capacity_check(&small, 0, 0, t, 4), 0, "4 x t3.nano fit (2048 MiB, 8 vCPUs)");
    is_int(instance_capacity_check(&small, 0, 0, t, 5), -ENOSPC, "5 do not: 10 vCPUs");
    ok(error_message() && strstr(error_message(), "vCPUs"), "the message says vCPUs");
    is_int(instance_capacity_check(&small, 2, 2561, t, 1), -ENOSPC,
           "512 MiB more next to 2561 MiB in use: over 3072");
    ok(error_message() && strstr(error_message(), "MiB"), "the message says memory");
    is_int(instance_capacity_check(&small, 2, 2560, t, 1), 0, "exactly 3072 MiB fits");
    t = instance_type_find("t3.small");
    is_int(instance_capacity_check(&small, 0, 0, t, 2), -ENOSPC, "2 x t3.small: 4096 MiB");
    t = instance_type_find("t3.2xlarge");
    is_int(instance_capacity_check(&small, 0, 0, t, 1), -ENOSPC, "a 32 GiB type never fits");
    is_int(instance_capacity_check(&small, 0, 0, instance_type_find("t3.nano"), 4000000000u),
           -ENOSPC, "an absurd count does not overflow into a yes");
    return done_testing();
}
