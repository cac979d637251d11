/* Block snapshots: block maps, the chunker, import, export and diff.
 *
 * A block map describes every byte of a volume of `volume_size` bytes as a
 * sorted list of extents, each a run of whole 4 KiB blocks held by one chunk
 * of the store; blocks covered by no extent read as zeros (holes).  The
 * serialised map is itself a store object named by its SHA-256, which is the
 * snapshot's content-addressed identity.  docs/formats.md has the bytes.
 *
 * Chunking (chunker.c): the volume is cut at 4 KiB block boundaries only
 * (ext4 and most file systems keep file data block-aligned), after a block
 * whose content fingerprint matches a mask, so equal runs of blocks at any
 * offset in any image produce the same chunks; and where a file system in
 * the image starts a file (layout.c).  All-zero blocks end a chunk and are
 * never stored.
 */
#ifndef KILN_SNAPSHOT_SNAPSHOT_H
#define KILN_SNAPSHOT_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cleanup.h"
#include "common/hash.h"
#include "store/store.h"

#define BLOCK_SHIFT 12
#define BLOCK_SIZE (1U << BLOCK_SHIFT)
/* The EBS direct API's block: diff and later ListChangedBlocks use it. */
#define EBS_BLOCK_SIZE (512U * 1024)

/* ---- block maps (blockmap.c) ---- */

struct blockmap_extent {
    uint64_t block;   /* first 4 KiB block */
    uint32_t count;   /* number of blocks, >= 1 */
    struct digest id; /* chunk holding count * 4 KiB bytes */
};

struct blockmap {
    uint64_t volume_size; /* bytes; need not be a multiple of 4 KiB */
    struct digest parent; /* parent map id, all zero when none */
    size_t n, cap;
    struct blockmap_extent *ext; /* sorted by block, non-overlapping */
};

/* The largest volume a map may describe (64 TiB). */
#define BLOCKMAP_MAX_VOLUME (1ULL << 46)

struct blockmap *blockmap_new(uint64_t volume_size);
void blockmap_free(struct blockmap *m);
DEFINE_CLEANUP_FREE(struct blockmap, blockmap_free)

/* Append an extent after the last one.  -EINVAL if it overlaps or is out of
 * order or past the end of the volume. */
int blockmap_append(struct blockmap *m, uint64_t block, uint32_t count, const struct digest *id);

/* Serialise into a new buffer (owned by the caller). */
int blockmap_serialize(const struct blockmap *m, uint8_t **ret, size_t *ret_len);

/* Parse and validate a serialised map (any bytes: never aborts). */
int blockmap_parse(const void *data, size_t len, struct blockmap **ret);

/* Index of the extent containing `block`, or -ENOENT if the block is a hole.
 * O(log n).  When ret_next is non-NULL it receives the index of the first
 * extent starting after `block` (m->n if none): the end of the hole. */
ssize_t blockmap_lookup(const struct blockmap *m, uint64_t block, size_t *ret_next);

/* Index of the first extent that ends after `block` (m->n if none): the
 * starting point for walking a byte range. */
size_t blockmap_seek(const struct blockmap *m, uint64_t block);

/* Write and read maps through the store. */
int blockmap_save(struct store *s, const struct blockmap *m, struct digest *ret_id);
int blockmap_load(struct store *s, const struct digest *id, struct blockmap **ret);

/* Bytes of data the map references (sum of extents, clipped to the volume). */
uint64_t blockmap_data_bytes(const struct blockmap *m);

/* ---- chunker (chunker.c) ---- */

struct chunker_params {
    uint32_t min_blocks; /* a chunk is cut only once this long... */
    uint32_t avg_blocks; /* power of two: the fingerprint mask */
    uint32_t max_blocks; /* ...and always at this length */
};

/* The parameters kiln uses (chosen by measurement: docs/benchmarks.md). */
extern const struct chunker_params chunker_default_params;

/* The fingerprint the cut decision uses: a fast 64-bit hash of one block. */
uint64_t chunker_block_fingerprint(const void *block);

/* Cut decision: true if a chunk `len` blocks long that ends with a block of
 * fingerprint `fp` ends there. */
bool chunker_cut(const struct chunker_params *p, uint64_t fp, uint32_t len);

/* ---- import (import.c) ---- */

enum image_format { IMAGE_FORMAT_AUTO, IMAGE_FORMAT_RAW, IMAGE_FORMAT_QCOW2 };

int image_format_from_string(const char *s, enum image_format *ret);
const char *image_format_to_string(enum image_format f);

struct import_options {
    enum image_format format;
    const struct blockmap *parent; /* may be NULL */
    struct digest parent_id;       /* parent's map id, when parent is set */
    const struct chunker_params *chunker; /* NULL: the default */
    int threads;                   /* 0: one per core */
    bool progress;                 /* draw a progress bar on a terminal */
    bool no_hints;                 /* ignore file system layout (benchmarks) */
};

struct import_stats {
    uint64_t volume_size;
    uint64_t bytes_read;      /* non-hole bytes read from the input */
    uint64_t zero_bytes;      /* all-zero blocks (holes in the map) */
    uint64_t chunks;          /* extents in the map */
    uint64_t chunks_new;      /* chunks written to the store */
    uint64_t bytes_new;       /* plaintext bytes of new chunks */
    uint64_t stored_new;      /* encoded bytes of new chunks */
    uint64_t changed_blocks;  /* 512 KiB blocks whose chunks differ from the
                               * parent's: an upper bound on those whose
                               * content differs (snapshot_diff is exact) */
    uint64_t total_blocks;    /* 512 KiB blocks in the volume */
};

/* Read a disk image and store it: chunks, then store_sync(), then the block
 * map (durable).  Nothing is registered here: the caller records the map id.
 * On failure nothing refers to what was written; gc reclaims it. */
int snapshot_import(struct store *s, const char *path, const struct import_options *opts,
                    struct digest *ret_map_id, struct blockmap **ret_map,
                    struct import_stats *ret_stats);

/* A volume that is not a file: the caller's callbacks give its contents
 * (the EBS direct API's staged blocks over a parent snapshot).  extent()
 * answers, for the run starting at `offset` (at most `max_len` bytes),
 * whether it is data or reads as zeros, and its length (> 0); read() fills
 * buf with `len` bytes at `offset`.  Both return 0 or -errno with a
 * message.  `size` is the volume size in bytes (a non-zero multiple of
 * 512, at most BLOCKMAP_MAX_VOLUME).  The callbacks are called from the
 * importing thread only. */
struct snapshot_reader {
    uint64_t size;
    int (*extent)(void *userdata, uint64_t offset, uint64_t max_len, bool *ret_data,
                  uint64_t *ret_len);
    int (*read)(void *userdata, void *buf, size_t len, uint64_t offset);
    void *userdata;
    const char *name; /* for messages */
};

/* snapshot_import() over a reader instead of a file: the same chunking
 * (file system hints included), dedup against the store, durability order
 * and results.  opts->format is ignored. */
int snapshot_import_reader(struct store *s, const struct snapshot_reader *reader,
                           const struct import_options *opts, struct digest *ret_map_id,
                           struct blockmap **ret_map, struct import_stats *ret_stats);

/* ---- export (export.c) ---- */

struct export_options {
    enum image_format format; /* RAW or QCOW2 */
    int threads;
    bool progress;
};

/* Write the volume to `path` (created or truncated): raw output is sparse
 * (holes are not written); every chunk is verified before its bytes are
 * written, and a damaged chunk fails the export (-EBADMSG, naming it). */
int snapshot_export(struct store *s, const struct blockmap *m, const char *path,
                    const struct export_options *opts);

/* Read `len` bytes of the volume at `offset` into buf (holes as zeros). */
int snapshot_read(struct store *s, const struct blockmap *m, void *buf, size_t len,
                  uint64_t offset);

/* ---- diff (diff.c) ---- */

/* The map-level comparison alone: blocks whose extents differ (a superset of
 * the blocks whose content differs).  No data is read. */
int snapshot_diff_candidates(const struct blockmap *a, const struct blockmap *b,
                             uint64_t **ret, size_t *ret_n);

/* Indexes of the EBS_BLOCK_SIZE blocks whose content differs between a and
 * b (bytes past the end of the shorter volume compare as zeros).  The map
 * comparison finds candidates, and candidate blocks are compared by
 * content, so the answer is exact.  *ret is an array of *ret_n indexes
 * owned by the caller. */
int snapshot_diff(struct store *s, const struct blockmap *a, const struct blockmap *b,
                  uint64_t **ret, size_t *ret_n);

#endif
