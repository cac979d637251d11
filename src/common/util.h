/* Allocation that aborts on exhaustion (for small, bounded sizes only: sizes
 * that come from a client, a guest or a file are capped and checked by the
 * caller first), and file descriptor helpers that retry short transfers. */
#ifndef KILN_COMMON_UTIL_H
#define KILN_COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <wchar.h>

void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t size);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Write all of buf at offset (pwrite) or at the file position (offset < 0).
 * Returns 0 or -errno. */
int write_all(int fd, const void *buf, size_t len, off_t offset);

/* Read exactly len bytes at offset.  Returns the number of bytes read, which
 * is less than len only at end of file, or -errno. */
ssize_t pread_full(int fd, void *buf, size_t len, off_t offset);

/* fsync the directory `dirpath`.  Returns 0 or -errno. */
int fsync_dir(const char *dirpath);

/* mkdir -p with mode 0755.  Returns 0 or -errno. */
int mkdir_p(const char *path);

/* true when len bytes at p are all zero (len need not be aligned). */
bool buf_is_zero(const void *p, size_t len);

/* true when s[0..len) is well-formed UTF-8 (no overlongs, surrogates or
 * code points beyond U+10FFFF). */
bool utf8_is_valid(const char *s, size_t len);

/* Read the whole file `path` (at most `max` bytes: -EFBIG beyond) into
 * *ret (NUL-terminated, the caller frees it), its length to *ret_len.
 * Returns 0 or -errno with a message naming the file. */
int read_file_all(const char *path, size_t max, char **ret, size_t *ret_len);

/* Parse a size like "2G", "512K", "1048576".  Returns 0 or -EINVAL. */
int parse_size(const char *s, uint64_t *ret_size);

/* Format a byte count as "1.5 GiB" into buf. */
const char *format_bytes(uint64_t bytes, char *buf, size_t size);

/* Fill buf with len bytes from the kernel's random source.  Returns 0 or
 * -errno. */
int random_bytes(void *buf, size_t len);

/* The wall clock in Unix milliseconds (what the registry records). */
int64_t wall_clock_ms(void);

/* Monotonic clock in nanoseconds. */
uint64_t now_ns(void);

/* After the libc headers above, so that their fortified definitions are
 * in place before banned.h redefines the calls. */
#include "common/banned.h"

#endif
