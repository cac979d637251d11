/* A progress bar on standard error: bytes done, rate and time left.  It draws
 * only when standard error is a terminal and at most ten times a second, so
 * scripts and logs see nothing.  Safe to call from several threads. */
#ifndef KILN_COMMON_PROGRESS_H
#define KILN_COMMON_PROGRESS_H

#include <stdint.h>

struct progress;

/* `label` is borrowed and must outlive the bar.  total may be 0 (unknown). */
struct progress *progress_new(const char *label, uint64_t total);
void progress_add(struct progress *p, uint64_t bytes);
/* Erase the bar.  Accepts NULL. */
void progress_free(struct progress *p);

#endif
