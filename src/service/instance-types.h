/* Instance types and the host's capacity (docs/api.md, "Instance types").
 *
 * An instance type names the vCPUs and memory QEMU gets.  kiln refuses a
 * launch that would make the instances on this host need more memory than
 * a fixed share of its RAM, or more vCPUs than a fixed multiple of its
 * CPUs, with InsufficientInstanceCapacity, instead of letting the host
 * swap.  The budget is computed from MemTotal and the online CPUs, not from
 * the free memory of the moment, so that the same launch gets the same
 * answer on a busy and an idle host. */
#ifndef KILN_SERVICE_INSTANCE_TYPES_H
#define KILN_SERVICE_INSTANCE_TYPES_H

#include <stddef.h>
#include <stdint.h>

struct instance_type {
    const char *name; /* "t3.nano" */
    unsigned vcpus;
    unsigned memory_mib;
};

/* The table, in the order docs/api.md lists it. */
const struct instance_type *instance_types(size_t *ret_n);

/* The type called `name`, or NULL. */
const struct instance_type *instance_type_find(const char *name);

/* Instances may use up to this share of MemTotal (percent) and this many
 * vCPUs per online CPU. */
#define INSTANCE_MEMORY_BUDGET_PERCENT 75
#define INSTANCE_VCPUS_PER_CPU 4

struct host_capacity {
    unsigned cpus;       /* online CPUs */
    uint64_t memory_mib; /* MemTotal */
};

/* Read /proc/meminfo and the online CPU count.  -EIO (with a message) when
 * they cannot be read. */
int host_capacity_read(struct host_capacity *ret);

/* 0 when `count` more instances of type `t` fit next to instances already
 * using used_vcpus and used_memory_mib; else -ENOSPC with a message naming
 * what is short (the API answers InsufficientInstanceCapacity). */
int instance_capacity_check(const struct host_capacity *host, unsigned used_vcpus,
                            uint64_t used_memory_mib, const struct instance_type *t,
                            unsigned count);

#endif
