/* Block maps: building, (de)serialising, validating and searching.
 *
 * Serialised form (little-endian; docs/formats.md):
 *   header, 64 bytes:
 *     0  8  magic "KILNBMAP"
 *     8  4  format version (1)
 *     12 4  log2 of the block size (12)
 *     16 8  volume size in bytes
 *     24 8  number of extents
 *     32 32 parent map id (all zero: none)
 *   then one 48-byte entry per extent, sorted by first block:
 *     0  8  first block
 *     8  4  block count (1 .. STORE_CHUNK_MAX / 4096)
 *     12 4  reserved, 0
 *     16 32 chunk id (SHA-256 of count * 4096 plaintext bytes)
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/byteorder.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/util.h"
#include "snapshot/snapshot.h"

#define MAP_MAGIC "KILNBMAP"
#define MAP_VERSION 1
#define MAP_HEADER_SIZE 64
#define MAP_ENTRY_SIZE 48
#define MAX_EXTENT_BLOCKS (STORE_CHUNK_MAX / BLOCK_SIZE)

static uint64_t volume_blocks(uint64_t volume_size)
{
    return DIV_ROUND_UP(volume_size, BLOCK_SIZE);
}

struct blockmap *blockmap_new(uint64_t volume_size)
{
    struct blockmap *m = xcalloc(1, sizeof(*m));

    m->volume_size = volume_size;
    return m;
}

void blockmap_free(struct blockmap *m)
{
    if (!m)
        return;
    free(m->ext);
    free(m);
}

int blockmap_append(struct blockmap *m, uint64_t block, uint32_t count, const struct digest *id)
{
    if (count == 0 || count > MAX_EXTENT_BLOCKS)
        return -EINVAL;
    if (block + count > volume_blocks(m->volume_size) || block + count < block)
        return -EINVAL;
    if (m->n > 0) {
        const struct blockmap_extent *last = &m->ext[m->n - 1];
        if (block < last->block + last->count)
            return -EINVAL;
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 1024;
        m->ext = xrealloc(m->ext, m->cap * sizeof(*m->ext));
    }
    m->ext[m->n].block = block;
    m->ext[m->n].count = count;
    m->ext[m->n].id = *id;
    m->n++;
    return 0;
}

int blockmap_serialize(const struct blockmap *m, uint8_t **ret, size_t *ret_len)
{
    size_t len = MAP_HEADER_SIZE + m->n * MAP_ENTRY_SIZE;
    uint8_t *buf = xcalloc(1, len);

    memcpy(buf, MAP_MAGIC, 8);
    put_le32(buf + 8, MAP_VERSION);
    put_le32(buf + 12, BLOCK_SHIFT);
    put_le64(buf + 16, m->volume_size);
    put_le64(buf + 24, m->n);
    memcpy(buf + 32, m->parent.b, DIGEST_SIZE);
    for (size_t i = 0; i < m->n; i++) {
        uint8_t *e = buf + MAP_HEADER_SIZE + i * MAP_ENTRY_SIZE;
        put_le64(e, m->ext[i].block);
        put_le32(e + 8, m->ext[i].count);
        memcpy(e + 16, m->ext[i].id.b, DIGEST_SIZE);
    }
    *ret = buf;
    *ret_len = len;
    return 0;
}

int blockmap_parse(const void *data, size_t len, struct blockmap **ret)
{
    const uint8_t *p = data;
    _cleanup_(blockmap_freep) struct blockmap *m = NULL;
    uint64_t n, size;

    if (len < MAP_HEADER_SIZE || memcmp(p, MAP_MAGIC, 8) != 0)
        return error_set(EBADMSG, "block map has no valid header");
    if (get_le32(p + 8) != MAP_VERSION)
        return error_set(EBADMSG, "block map format version %u is not supported",
                         get_le32(p + 8));
    if (get_le32(p + 12) != BLOCK_SHIFT)
        return error_set(EBADMSG, "block map block size 2^%u is not supported", get_le32(p + 12));
    size = get_le64(p + 16);
    if (size % 512)
        return error_set(EBADMSG, "block map volume size %llu is not a multiple of 512",
                         (unsigned long long)size);
    if (size > BLOCKMAP_MAX_VOLUME)
        return error_set(EBADMSG, "block map volume size %llu is too large",
                         (unsigned long long)size);
    n = get_le64(p + 24);
    if (n > (len - MAP_HEADER_SIZE) / MAP_ENTRY_SIZE ||
        MAP_HEADER_SIZE + n * MAP_ENTRY_SIZE != len)
        return error_set(EBADMSG, "block map length %zu does not match its %llu extents", len,
                         (unsigned long long)n);
    m = blockmap_new(size);
    memcpy(m->parent.b, p + 32, DIGEST_SIZE);
    m->cap = n ? n : 1;
    m->ext = xmalloc(m->cap * sizeof(*m->ext));
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *e = p + MAP_HEADER_SIZE + i * MAP_ENTRY_SIZE;
        struct digest id;
        memcpy(id.b, e + 16, DIGEST_SIZE);
        if (get_le32(e + 12) != 0 || blockmap_append(m, get_le64(e), get_le32(e + 8), &id) < 0)
            return error_set(EBADMSG, "block map extent %llu is invalid",
                             (unsigned long long)i);
    }
    *ret = TAKE_PTR(m);
    return 0;
}

size_t blockmap_seek(const struct blockmap *m, uint64_t block)
{
    size_t lo = 0, hi = m->n;

    /* First extent whose end (block + count) is > block. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->ext[mid].block + m->ext[mid].count <= block)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

ssize_t blockmap_lookup(const struct blockmap *m, uint64_t block, size_t *ret_next)
{
    size_t i = blockmap_seek(m, block);

    if (i < m->n && m->ext[i].block <= block)
        return (ssize_t)i;
    if (ret_next)
        *ret_next = i;
    return -ENOENT;
}

int blockmap_save(struct store *s, const struct blockmap *m, struct digest *ret_id)
{
    _cleanup_free_ uint8_t *buf = NULL;
    size_t len;
    int r;

    blockmap_serialize(m, &buf, &len);
    r = store_map_put(s, buf, len, ret_id);
    return r < 0 ? r : 0;
}

int blockmap_load(struct store *s, const struct digest *id, struct blockmap **ret)
{
    _cleanup_free_ void *buf = NULL;
    char hex[DIGEST_HEX_SIZE];
    size_t len;
    int r;

    r = store_map_get(s, id, &buf, &len);
    if (r == -ENOENT)
        return error_set(ENOENT, "block map '%s' is missing from the store",
                         digest_to_hex(id, hex));
    if (r < 0)
        return error_set(r, "cannot read block map '%s': %s", digest_to_hex(id, hex),
                         r == -EBADMSG ? "digest mismatch or corrupt object" : strerror(-r));
    r = blockmap_parse(buf, len, ret);
    if (r < 0) {
        char why[256];
        snprintf(why, sizeof(why), "%s", error_message() ? error_message() : "corrupt");
        return error_set(r, "cannot parse block map '%s': %s", digest_to_hex(id, hex), why);
    }
    return 0;
}

uint64_t blockmap_data_bytes(const struct blockmap *m)
{
    uint64_t total = 0;

    for (size_t i = 0; i < m->n; i++) {
        uint64_t start = m->ext[i].block * BLOCK_SIZE;
        uint64_t end = MIN(start + (uint64_t)m->ext[i].count * BLOCK_SIZE, m->volume_size);
        total += end - start;
    }
    return total;
}
