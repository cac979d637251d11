/* A growable byte buffer for strings built piece by piece (JSON string
 * literals, interpolated templates, metadata service pages).  A zeroed
 * struct is empty; once anything is added, data is NUL-terminated after
 * its len bytes.  Growth aborts on exhaustion as xmalloc() does, so the
 * caller bounds what it adds when the size comes from a client, a guest or
 * a file. */
#ifndef KILN_COMMON_STRBUF_H
#define KILN_COMMON_STRBUF_H

#include <stddef.h>

struct strbuf {
    char *data; /* NULL until something is added */
    size_t len, alloc;
};

/* Append n bytes at p (n may be 0). */
void strbuf_add(struct strbuf *b, const void *p, size_t n);
/* Append the string s. */
void strbuf_adds(struct strbuf *b, const char *s);
void strbuf_addc(struct strbuf *b, char c);
void strbuf_printf(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The contents as a string that belongs to the caller ("" when nothing
 * was added); the buffer is left empty. */
char *strbuf_steal(struct strbuf *b);

/* Free the contents; the buffer is left empty. */
void strbuf_release(struct strbuf *b);

#endif
