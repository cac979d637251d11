/* Per-thread error detail: see error.h. */
#include "common/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static __thread char message[512];
static __thread int have_message;
static __thread int message_err; /* the -errno the message describes */

int error_set(int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    have_message = 1;
    message_err = -abs(err);
    return -abs(err);
}

const char *error_message(void)
{
    return have_message ? message : NULL;
}

void error_clear(void)
{
    have_message = 0;
    message[0] = '\0';
}

const char *error_describe(int err, char *buf, unsigned size)
{
    /* A message recorded for another error is stale: not about this one. */
    if (have_message && message_err == -abs(err))
        snprintf(buf, size, "%s", message);
    else
        snprintf(buf, size, "%s", strerror(err < 0 ? -err : err));
    return buf;
}
