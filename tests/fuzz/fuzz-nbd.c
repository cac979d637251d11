/* Fuzz the NBD server's parsers with a client's byte stream: the client
 * flags, options until the handshake ends (each handled by the option
 * handler exactly as the server does), then request headers (WRITE
 * payloads skipped), each parsed and validated.  The first byte picks a
 * read-only or writable export and whether the stream starts in
 * transmission with structured replies and base:allocation negotiated. */
#include <string.h>

#include "fuzz.h"
#include "nbd/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct nbd_export_info ex = {
        .name = "snap-0123456789abcdef0",
        .description = "fuzz",
        .size = (1ULL << 30) + 512,
        .tflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_CACHE,
    };
    struct nbd_session s = { 0 };
    struct nbd_buf out = { 0 };
    size_t pos = 1;
    uint8_t mode;

    if (size < 1)
        return 0;
    mode = data[0];
    if (mode & 1)
        ex.tflags |= NBD_FLAG_READ_ONLY;
    else
        ex.tflags |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;

    nbd_greeting(&out);
    if (mode & 2) {
        s.structured = s.base_allocation = true;
    } else {
        if (size - pos < 4 || nbd_client_flags_parse(data + pos, &s) < 0)
            goto done;
        pos += 4;
        for (;;) {
            uint32_t option, len;
            int r;
            if (size - pos < NBD_OPTION_HEADER_SIZE ||
                nbd_option_header_parse(data + pos, &option, &len) < 0)
                goto done;
            pos += NBD_OPTION_HEADER_SIZE;
            if (len > size - pos)
                goto done;
            out.len = 0;
            r = nbd_option_handle(&s, &ex, option, data + pos, len, &out);
            pos += len;
            if (r == NBD_OPTION_CLOSE)
                goto done;
            if (r == NBD_OPTION_TRANSMISSION)
                break;
        }
    }
    while (size - pos >= NBD_REQUEST_SIZE) {
        struct nbd_request rq;
        if (nbd_request_parse(data + pos, &rq) < 0)
            break;
        pos += NBD_REQUEST_SIZE;
        const char *why = NULL;
        if (nbd_request_validate(&rq, &ex, &s, &why) != 0 && (!why || !*why))
            __builtin_trap(); /* every refusal says why */
        (void)nbd_cmd_name(rq.type);
        if (rq.type == NBD_CMD_DISC)
            break;
        if (rq.type == NBD_CMD_WRITE) {
            if (rq.count > NBD_MAX_BLOCK || rq.count > size - pos)
                break;
            pos += rq.count;
        }
    }
done:
    nbd_buf_release(&out);
    return 0;
}
