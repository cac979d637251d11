/* Fuzz target for the kiln-agent protocol parsers (src/agent/proto.c),
 * which both the guest agent and the host client run: the input is a byte
 * stream cut into frames the way both ends cut it (resync on the magic,
 * header, payload), and each payload goes through every payload parser.
 * Any bytes are either parsed or refused with -EBADMSG / -EMSGSIZE; never
 * a crash, never a read past the buffer. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent/proto.h"
#include "fuzz.h"

static void payload(const uint8_t *p, size_t n)
{
    struct agent_exec_request e;
    struct agent_cursor c = { p, n };
    uint32_t u, err;
    uint64_t v;
    char *s = NULL;
    int r;

    r = agent_exec_parse(p, n, &e);
    if (r == 0) {
        if (!e.argv || !e.argv[0] || !e.argv[0][0] || !e.env)
            abort();
        agent_exec_request_release(&e);
    } else if (r != -EBADMSG && r != -EMSGSIZE && r != -ENOMEM) {
        abort();
    }
    r = agent_error_parse(p, n, &err, &s);
    if (r == 0) {
        if (strlen(s) > AGENT_MAX_STRING)
            abort();
        free(s);
    }
    s = NULL;
    if (agent_get_u32(&c, &u) == 0 && agent_get_string(&c, AGENT_MAX_STRING, &s) == 0) {
        free(s);
        s = NULL;
    }
    c = (struct agent_cursor){ p, n };
    if (agent_get_u64(&c, &v) == 0 && c.left != n - 8)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;

    for (;;) {
        struct agent_header h;
        off += agent_resync(data + off, size - off);
        if (off > size)
            abort();
        if (size - off < AGENT_HEADER_SIZE)
            break;
        if (agent_header_decode(data + off, &h) < 0) {
            off++;
            continue;
        }
        if (h.length > AGENT_MAX_PAYLOAD)
            abort();
        if (size - off - AGENT_HEADER_SIZE < h.length) {
            payload(data + off + AGENT_HEADER_SIZE, size - off - AGENT_HEADER_SIZE);
            break;
        }
        payload(data + off + AGENT_HEADER_SIZE, h.length);
        off += AGENT_HEADER_SIZE + h.length;
    }
    payload(data, size);
    return 0;
}
