/* Resource identifiers in the EC2 style: a prefix, a dash and 17 lowercase
 * hex digits from the kernel's random source (snap-0123456789abcdef0). */
#ifndef KILN_COMMON_IDS_H
#define KILN_COMMON_IDS_H

#include <stdbool.h>
#include <stddef.h>

#define ID_HEX_DIGITS 17
#define ID_MAX_SIZE 32

/* Write "<prefix>-<17 hex>" into buf.  Returns 0 or -errno. */
int id_generate(const char *prefix, char *buf, size_t size);

/* true when s is "<prefix>-" followed by exactly 17 lowercase hex digits. */
bool id_is_valid(const char *prefix, const char *s);

#endif
