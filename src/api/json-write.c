/* JSON string literals for the EBS direct API's rest-json responses,
 * written into the api's growable buffer (the reader is common/json.c). */
#include <string.h>

#include "api/internal.h"
#include "common/util.h"

void json_write_string(struct strbuf *b, const char *s)
{
    size_t n = strlen(s), i = 0;

    strbuf_addc(b, '"');
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            strbuf_addc(b, '\\');
            strbuf_addc(b, (char)c);
            i++;
        } else if (c < 0x20) {
            strbuf_printf(b, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            strbuf_addc(b, (char)c);
            i++;
        } else {
            /* The longest valid UTF-8 sequence here, else U+FFFD. */
            size_t len = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 1;
            if (len > 1 && i + len <= n && utf8_is_valid(s + i, len)) {
                strbuf_add(b, s + i, len);
                i += len;
            } else {
                strbuf_adds(b, "\xef\xbf\xbd");
                i++;
            }
        }
    }
    strbuf_addc(b, '"');
}
