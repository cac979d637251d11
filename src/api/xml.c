/* The XML writer: see xml.h. */
#include "api/xml.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "api/internal.h"
#include "common/util.h"

static struct strbuf *buf(struct xml *x)
{
    return &x->b;
}

void xml_init(struct xml *x)
{
    memset(x, 0, sizeof(*x));
    strbuf_adds(buf(x), "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
}

void xml_release(struct xml *x)
{
    strbuf_release(buf(x));
    x->depth = 0;
}

/* true for a byte that is copied as it is. */
static bool plain(unsigned char c)
{
    return c >= 0x20 && c < 0x7f && c != '&' && c != '<' && c != '>' && c != '"';
}

static void escape(struct xml *x, const char *s)
{
    static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
    const unsigned char *p = (const unsigned char *)s;

    while (*p) {
        unsigned char c = *p;
        size_t n = 0;

        /* Runs of plain ASCII in one copy: most text is nothing else. */
        while (plain(p[n]))
            n++;
        if (n) {
            strbuf_add(buf(x), p, n);
            p += n;
            continue;
        }

        switch (c) {
        case '&': strbuf_adds(buf(x), "&amp;"); p++; continue;
        case '<': strbuf_adds(buf(x), "&lt;"); p++; continue;
        case '>': strbuf_adds(buf(x), "&gt;"); p++; continue;
        case '"': strbuf_adds(buf(x), "&quot;"); p++; continue;
        case '\t': strbuf_adds(buf(x), "&#9;"); p++; continue;
        case '\n': strbuf_adds(buf(x), "&#10;"); p++; continue;
        case '\r': strbuf_adds(buf(x), "&#13;"); p++; continue;
        default: break;
        }
        if (c < 0x20 || c == 0x7f) {
            strbuf_adds(buf(x), replacement);
            p++;
            continue;
        }
        if (c < 0x80) {
            strbuf_addc(buf(x), (char)c);
            p++;
            continue;
        }
        /* A multi-byte sequence: copy it if valid, else replace one byte. */
        n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
        if (strnlen((const char *)p, n) == n && utf8_is_valid((const char *)p, n)) {
            strbuf_add(buf(x), p, n);
            p += n;
        } else {
            strbuf_adds(buf(x), replacement);
            p++;
        }
    }
}

/* "<name>" or "</name>": without printf, which cost a fifth of a large
 * DescribeImages. */
static void tag(struct xml *x, const char *open, const char *name)
{
    strbuf_adds(buf(x), open);
    strbuf_adds(buf(x), name);
    strbuf_addc(buf(x), '>');
}

void xml_open(struct xml *x, const char *name)
{
    assert(x->depth < XML_MAX_DEPTH);
    tag(x, "<", name);
    x->stack[x->depth++] = name;
}

void xml_open_attr(struct xml *x, const char *name, const char *attr, const char *value)
{
    assert(x->depth < XML_MAX_DEPTH);
    strbuf_printf(buf(x), "<%s %s=\"", name, attr);
    escape(x, value);
    strbuf_adds(buf(x), "\">");
    x->stack[x->depth++] = name;
}

void xml_close(struct xml *x)
{
    assert(x->depth > 0);
    tag(x, "</", x->stack[--x->depth]);
}

void xml_text(struct xml *x, const char *text)
{
    escape(x, text);
}

void xml_element(struct xml *x, const char *name, const char *text)
{
    if (!text)
        return;
    tag(x, "<", name);
    escape(x, text);
    tag(x, "</", name);
}

void xml_element_bool(struct xml *x, const char *name, bool v)
{
    xml_element(x, name, v ? "true" : "false");
}

void xml_element_int(struct xml *x, const char *name, int64_t v)
{
    char s[32];

    snprintf(s, sizeof(s), "%" PRId64, v);
    xml_element(x, name, s);
}

void xml_ec2_begin(struct xml *x, const char *action_response, const char *request_id)
{
    xml_open_attr(x, action_response, "xmlns", EC2_XMLNS);
    xml_element(x, "requestId", request_id);
}

void xml_ec2_error(struct xml *x, const char *code, const char *message, const char *request_id)
{
    xml_open(x, "Response");
    xml_open(x, "Errors");
    xml_open(x, "Error");
    xml_element(x, "Code", code);
    xml_element(x, "Message", message);
    xml_close(x);
    xml_close(x);
    xml_element(x, "RequestID", request_id);
    xml_close(x);
}

char *xml_steal(struct xml *x, size_t *ret_len)
{
    if (ret_len)
        *ret_len = x->b.len;
    x->depth = 0;
    return strbuf_steal(buf(x));
}
