/* Helpers the service unit tests share (test-copy, test-create-image,
 * test-ebs, test-volume-service): seeded pseudo-random data, a disk file
 * written from it, and the count of a region's snapshots. */
#ifndef KILN_TESTS_SERVICE_UTIL_H
#define KILN_TESTS_SERVICE_UTIL_H

#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>

#include "registry/registry.h"
#include "service/service.h"

/* Fill b[0..n) with the bytes of a linear congruential generator started
 * at `seed`: the same seed gives the same bytes. */
static inline void test_fill(uint8_t *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        b[i] = (uint8_t)(seed >> 16);
    }
}

/* Write data[0..n) to a new (or truncated) file at path; 0 or -1. */
static inline int test_disk_write(const char *path, const uint8_t *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    if (fd < 0)
        return -1;
    if (write(fd, data, n) != (ssize_t)n) {
        close(fd);
        return -1;
    }
    return close(fd);
}

/* How many snapshot rows the region's registry holds; (size_t)-1 when it
 * cannot list them. */
static inline size_t test_count_snapshots(struct region *r)
{
    struct registry_snapshot **list = NULL;
    size_t n = 0;

    if (registry_snapshot_list(r->reg, &list, &n) < 0)
        return (size_t)-1;
    registry_snapshot_list_free(list, n);
    return n;
}

#endif
