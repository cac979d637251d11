/* Little-endian integers in byte buffers, as the on-disk formats store
 * them (block maps, volume bitmaps, boot profiles: docs/formats.md):
 * unaligned-safe loads and stores through memcpy. */
#ifndef KILN_COMMON_BYTEORDER_H
#define KILN_COMMON_BYTEORDER_H

#include <endian.h>
#include <stdint.h>
#include <string.h>

static inline void put_le32(uint8_t *p, uint32_t x)
{
    x = htole32(x);
    memcpy(p, &x, 4);
}

static inline void put_le64(uint8_t *p, uint64_t x)
{
    x = htole64(x);
    memcpy(p, &x, 8);
}

static inline uint32_t get_le32(const uint8_t *p)
{
    uint32_t x;

    memcpy(&x, p, 4);
    return le32toh(x);
}

static inline uint64_t get_le64(const uint8_t *p)
{
    uint64_t x;

    memcpy(&x, p, 8);
    return le64toh(x);
}

#endif
