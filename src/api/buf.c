/* The growable byte buffer the XML writer and the SigV4 canonical request
 * are built in: see internal.h. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "api/internal.h"
#include "common/util.h"

static void reserve(struct api_buf *b, size_t more)
{
    if (b->len + more + 1 <= b->alloc)
        return;
    size_t want = b->alloc ? b->alloc : 256;
    while (want < b->len + more + 1)
        want *= 2;
    b->data = xrealloc(b->data, want);
    b->alloc = want;
}

void api_buf_add(struct api_buf *b, const void *p, size_t n)
{
    reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void api_buf_adds(struct api_buf *b, const char *s)
{
    api_buf_add(b, s, strlen(s));
}

void api_buf_addc(struct api_buf *b, char c)
{
    api_buf_add(b, &c, 1);
}

void api_buf_printf(struct api_buf *b, const char *fmt, ...)
{
    va_list ap, ap2;
    int n;

    va_start(ap, fmt);
    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n > 0) {
        reserve(b, (size_t)n);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}

char *api_buf_steal(struct api_buf *b)
{
    char *p;

    reserve(b, 0);
    b->data[b->len] = '\0'; /* an empty buffer was never written */
    p = b->data;
    b->data = NULL;
    b->len = b->alloc = 0;
    return p;
}

void api_buf_release(struct api_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->alloc = 0;
}
