/* Instance types and the host's capacity (instance-types.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "service/instance-types.h"

/* EC2's vCPU and memory figures for the general-purpose families.  Tests
 * use t3.nano, the smallest. */
static const struct instance_type types[] = {
    {"t3.nano", 2, 512},      {"t3.micro", 2, 1024},   {"t3.small", 2, 2048},
    {"t3.medium", 2, 4096},   {"t3.large", 2, 8192},   {"t3.xlarge", 4, 16384},
    {"t3.2xlarge", 8, 32768}, {"m5.large", 2, 8192},   {"m5.xlarge", 4, 16384},
    {"m5.2xlarge", 8, 32768}, {"c5.large", 2, 4096},   {"c5.xlarge", 4, 8192},
    {"r5.large", 2, 16384},   {"r5.xlarge", 4, 32768},
};

const struct instance_type *instance_types(size_t *ret_n)
{
    *ret_n = ARRAY_SIZE(types);
    return types;
}

const struct instance_type *instance_type_find(const char *name)
{
    for (size_t i = 0; name && i < ARRAY_SIZE(types); i++)
        if (strcmp(types[i].name, name) == 0)
            return &types[i];
    return NULL;
}

int host_capacity_read(struct host_capacity *ret)
{
    char line[256];
    unsigned long long kib = 0;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    FILE *f = fopen("/proc/meminfo", "re");

    if (!f)
        return error_set(EIO, "cannot open '/proc/meminfo': %s", strerror(errno));
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "MemTotal: %llu kB", &kib) == 1)
            break;
    fclose(f);
    if (kib == 0)
        return error_set(EIO, "no MemTotal in '/proc/meminfo'");
    if (cpus < 1)
        return error_set(EIO, "cannot count the online CPUs");
    ret->cpus = (unsigned)cpus;
    ret->memory_mib = kib / 1024;
    return 0;
}

int instance_capacity_check(const struct host_capacity *host, unsigned used_vcpus,
                            uint64_t used_memory_mib, const struct instance_type *t, unsigned count)
{
    uint64_t memory_budget = host->memory_mib * INSTANCE_MEMORY_BUDGET_PERCENT / 100;
    uint64_t vcpu_budget = (uint64_t)host->cpus * INSTANCE_VCPUS_PER_CPU;
    uint64_t need_memory = used_memory_mib + (uint64_t)t->memory_mib * count;
    uint64_t need_vcpus = used_vcpus + (uint64_t)t->vcpus * count;

    if (need_memory > memory_budget)
        return error_set(ENOSPC,
                         "%u x %s needs %llu MiB of memory; this host has %llu MiB for "
                         "instances (%d%% of %llu MiB) and %llu MiB of it is in use",
                         count, t->name, (unsigned long long)t->memory_mib * count,
                         (unsigned long long)memory_budget, INSTANCE_MEMORY_BUDGET_PERCENT,
                         (unsigned long long)host->memory_mib, (unsigned long long)used_memory_mib);
    if (need_vcpus > vcpu_budget)
        return error_set(ENOSPC,
                         "%u x %s needs %llu vCPUs; this host has %llu for instances (%d per "
                         "CPU) and %u of them are in use",
                         count, t->name, (unsigned long long)t->vcpus * count,
                         (unsigned long long)vcpu_budget, INSTANCE_VCPUS_PER_CPU, used_vcpus);
    return 0;
}
