/* The growable string buffer: see strbuf.h. */
#include "common/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

/* Room for `more` bytes and the NUL after them. */
static void reserve(struct strbuf *b, size_t more)
{
    size_t want;

    if (b->len + more + 1 <= b->alloc)
        return;
    want = b->alloc ? b->alloc : 64;
    while (want < b->len + more + 1)
        want *= 2;
    b->data = xrealloc(b->data, want);
    b->alloc = want;
}

void strbuf_add(struct strbuf *b, const void *p, size_t n)
{
    reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void strbuf_adds(struct strbuf *b, const char *s)
{
    strbuf_add(b, s, strlen(s));
}

void strbuf_addc(struct strbuf *b, char c)
{
    strbuf_add(b, &c, 1);
}

void strbuf_printf(struct strbuf *b, const char *fmt, ...)
{
    va_list ap, ap2;
    int n;

    va_start(ap, fmt);
    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort(); /* a bad format or out of memory, as xmalloc */
    reserve(b, (size_t)n);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    b->len += (size_t)n;
}

char *strbuf_steal(struct strbuf *b)
{
    char *s = b->data ? b->data : xstrdup("");

    b->data = NULL;
    b->len = b->alloc = 0;
    return s;
}

void strbuf_release(struct strbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->alloc = 0;
}
