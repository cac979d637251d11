/* A small XML writer for EC2 responses: elements opened and closed in
 * order into a growable buffer, text escaped, and the two envelopes of the
 * EC2 query protocol (the success `<{Action}Response>` and the error
 * `<Response><Errors>`).  There is no reader: kiln only writes XML.
 *
 * Text is escaped for XML 1.0: & < > " become entities; tab, newline and
 * carriage return become character references; other control characters
 * and invalid UTF-8 bytes, which XML 1.0 cannot carry at all, become
 * U+FFFD.  Element names are the caller's constants and are not checked.
 */
#ifndef KILN_API_XML_H
#define KILN_API_XML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define XML_MAX_DEPTH 32
#define EC2_XMLNS "http://ec2.amazonaws.com/doc/2016-11-15/"

/* A growable, always NUL-terminated byte buffer (aborts on exhaustion:
 * callers cap what clients send first).  Zero-initialise to start. */
struct api_buf {
    char *data;
    size_t len, alloc;
};

void api_buf_add(struct api_buf *b, const void *p, size_t n);
void api_buf_adds(struct api_buf *b, const char *s);
void api_buf_addc(struct api_buf *b, char c);
void api_buf_printf(struct api_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The contents as a new string (never NULL); b is left empty. */
char *api_buf_steal(struct api_buf *b);
void api_buf_release(struct api_buf *b);

struct xml {
    struct api_buf b;
    const char *stack[XML_MAX_DEPTH]; /* open element names (borrowed) */
    int depth;
};

/* Start a document: the XML declaration.  Release with xml_release(). */
void xml_init(struct xml *x);
void xml_release(struct xml *x);

/* <name>; `name` must outlive the matching xml_close().  Nesting beyond
 * XML_MAX_DEPTH is a programming error (assert). */
void xml_open(struct xml *x, const char *name);
/* <name attr="value">, value escaped. */
void xml_open_attr(struct xml *x, const char *name, const char *attr, const char *value);
/* </name> of the innermost open element. */
void xml_close(struct xml *x);
/* Escaped text inside the current element. */
void xml_text(struct xml *x, const char *text);
/* <name>text</name>; NULL text writes nothing at all. */
void xml_element(struct xml *x, const char *name, const char *text);
void xml_element_bool(struct xml *x, const char *name, bool v);
void xml_element_int(struct xml *x, const char *name, int64_t v);

/* Open `<{action}Response xmlns="EC2_XMLNS">` and write its
 * <requestId>; close it with xml_close(). */
void xml_ec2_begin(struct xml *x, const char *action_response, const char *request_id);

/* A whole error document: <Response><Errors><Error><Code>..</Code>
 * <Message>..</Message></Error></Errors><RequestID>..</RequestID>
 * </Response>.  x must be freshly initialised. */
void xml_ec2_error(struct xml *x, const char *code, const char *message, const char *request_id);

/* Hand the document out (a new string; x is left empty). */
char *xml_steal(struct xml *x, size_t *ret_len);

#endif
