/* Logging to standard error, one line per call, serialised by stdio's lock. */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>

static enum log_level current = LOG_WARNING;
static const char *prefix = "kiln";

void log_set_level(enum log_level level)
{
    current = level;
}

enum log_level log_get_level(void)
{
    return current;
}

void log_set_prefix(const char *p)
{
    prefix = p;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    static const char *const names[] = { "error", "warning", "info", "debug" };
    va_list ap;

    if (level > current)
        return;
    flockfile(stderr);
    fprintf(stderr, "%s: %s: ", prefix, names[level]);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    funlockfile(stderr);
}
