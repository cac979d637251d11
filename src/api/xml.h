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

#include "common/strbuf.h"

#define XML_MAX_DEPTH 32
#define EC2_XMLNS "http://ec2.amazonaws.com/doc/2016-11-15/"

struct xml {
    struct strbuf b;
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
