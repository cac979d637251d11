/* Disk image sources for import: a raw file or our qcow2 reader behind one
 * interface.  Private to src/snapshot/. */
#ifndef KILN_SNAPSHOT_SOURCE_H
#define KILN_SNAPSHOT_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include "snapshot/qcow2.h"
#include "snapshot/snapshot.h"

struct source {
    int fd;
    enum image_format format;
    uint64_t size;
    struct qcow2_reader *qcow2;
    const struct snapshot_reader *reader; /* borrowed; set for a caller's volume */
    const char *path; /* borrowed, for messages */
    /* Raw files: [data_start, data_end) is known to be data, so that a
     * dense file costs one SEEK_HOLE, not one per window (each of which
     * scans the page cache up to the next hole). */
    uint64_t data_start, data_end;
};

/* Open and validate `path`: the format is probed when `format` is AUTO, the
 * size must be a non-zero multiple of 512, and files that are plainly some
 * other kind (other disk formats, archives) are refused in AUTO mode. */
int source_open(const char *path, enum image_format format, struct source *ret);
void source_release(struct source *src);

/* A source over a caller's reader (snapshot_import_reader()): checks the
 * size the same way source_open() does.  Nothing to release but the
 * struct itself (source_release() is harmless). */
int source_from_reader(const struct snapshot_reader *reader, struct source *ret);

/* Like qcow2_reader_extent(): the run from offset that is uniformly data or
 * uniformly zero (holes). */
int source_extent(struct source *src, uint64_t offset, uint64_t max_len, bool *ret_data,
                  uint64_t *ret_len);

int source_read(struct source *src, void *buf, size_t len, uint64_t offset);

#endif
