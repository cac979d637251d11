/* Our own qcow2 reader and writer (no qemu-img at run time).
 *
 * The reader accepts qcow2 version 2 and 3 images, including compressed
 * clusters (deflate; and zstd when the header says so) and zero clusters, and
 * refuses with a clear message (recorded through error_set(), return -EINVAL
 * or -ENOTSUP) anything it cannot faithfully read: backing files, external
 * data files, encryption, unknown incompatible feature bits, corrupt or
 * truncated headers and tables, table entries that point outside the file.
 * Every size and offset read from the file is checked before use; no input
 * file can make it abort or read out of bounds.
 *
 * The writer produces a qcow2 v3 image (64 KiB clusters, uncompressed) from
 * clusters handed to it in increasing offset order; clusters never handed over
 * read as zeros.  `qemu-img check` finds no errors in its output.
 */
#ifndef KILN_SNAPSHOT_QCOW2_H
#define KILN_SNAPSHOT_QCOW2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QCOW2_MAGIC_BYTES "QFI\xfb"

/* true when buf (len >= 4) starts with the qcow2 magic. */
bool qcow2_probe(const void *buf, size_t len);

struct qcow2_reader;

/* Parse and validate the image open on fd (the fd stays owned by the
 * caller and must outlive the reader). */
int qcow2_reader_open(int fd, struct qcow2_reader **ret);
void qcow2_reader_free(struct qcow2_reader *r);

/* Virtual disk size in bytes. */
uint64_t qcow2_reader_size(const struct qcow2_reader *r);

/* Read len bytes of guest data at offset (offset + len <= size), filling
 * unallocated and zero clusters with zeros.  Returns 0 or -errno (-EBADMSG
 * for a corrupt compressed cluster or table).  Not thread-safe. */
int qcow2_reader_read(struct qcow2_reader *r, void *buf, size_t len, uint64_t offset);

/* Starting at offset, report in *ret_len the length (> 0, up to max_len) of
 * the run that is uniformly either allocated (*ret_allocated = true: may hold
 * data) or reads as zeros (unallocated or zero clusters).  Lets importers skip
 * holes without reading them.  Returns 0 or -errno. */
int qcow2_reader_extent(struct qcow2_reader *r, uint64_t offset, uint64_t max_len,
                        bool *ret_allocated, uint64_t *ret_len);

struct qcow2_writer;

/* Start a new image of `size` bytes on fd (an empty, writable file). */
int qcow2_writer_new(int fd, uint64_t size, struct qcow2_writer **ret);

/* The writer's cluster size (65536). */
uint32_t qcow2_writer_cluster_size(const struct qcow2_writer *w);

/* Write one cluster of guest data at `offset` (a multiple of the cluster
 * size, strictly greater than the previous one).  `data` holds a whole
 * cluster; bytes past the end of the disk must be zero. */
int qcow2_writer_put(struct qcow2_writer *w, uint64_t offset, const void *data);

/* Write the tables and the header, then fsync.  Returns 0 or -errno. */
int qcow2_writer_finish(struct qcow2_writer *w);
void qcow2_writer_free(struct qcow2_writer *w);

#endif
