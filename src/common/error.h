/* Error detail for the -errno convention.
 *
 * Functions return >= 0 on success and -errno on failure.  Where the errno
 * alone would not tell the user what went wrong (a corrupt qcow2 header, a
 * digest mismatch in a named chunk), the layer that detects the problem
 * records one message with error_set(); the layer that reports errors (the
 * command line, later the API's error map) prints it once.  The message is
 * per thread and is replaced, not appended, by the next error_set().
 *
 * Messages follow the house rule: lowercase start, no full stop, quote the
 * subject, say what failed.
 */
#ifndef KILN_COMMON_ERROR_H
#define KILN_COMMON_ERROR_H

/* Record a message for error `err` (positive or negative errno) and return
 * -abs(err), so that `return error_set(EINVAL, "...")` reads naturally. */
int error_set(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The message recorded by the last error_set() on this thread, or NULL. */
const char *error_message(void);

/* Forget the recorded message. */
void error_clear(void);

/* Fill `buf` with the recorded message if it was recorded for `err`, else
 * with strerror(-err). */
const char *error_describe(int err, char *buf, unsigned size);

#endif
