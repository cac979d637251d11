/* Cut hints from the file systems inside a volume (layout.c).  Private to
 * src/snapshot/. */
#ifndef KILN_SNAPSHOT_LAYOUT_H
#define KILN_SNAPSHOT_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "snapshot/source.h"

#define LAYOUT_BLOCK_SIZE 4096

/* Sorted, distinct volume block numbers (4 KiB) before which a chunk
 * should be cut. */
struct layout_hints {
    uint64_t *blocks;
    size_t n, cap;
};

/* Find hints; never fails (no file system found means no hints). */
void layout_hints_find(struct source *src, struct layout_hints *h);
void layout_hints_release(struct layout_hints *h);

#endif
