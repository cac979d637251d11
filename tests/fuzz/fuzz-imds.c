/* Fuzz target for the metadata service's parsers (src/imds/imds.c): the
 * HTTP request parser and the instance file parser.  The first byte picks
 * which.  Any bytes either parse (and a parsed request gets a well-formed
 * answer from imds_respond()) or are refused with the documented errors.
 * Never a crash. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "imds/imds.h"

static const uint8_t key[IMDS_KEY_SIZE] = { 42 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        struct imds_instance in;
        int r = imds_instance_parse(text, len, &in);
        if (r < 0) {
            if (r != -EBADMSG)
                abort();
            return 0;
        }
        if (!in.instance_id || !in.region || !in.private_ip)
            abort();
        imds_instance_release(&in);
        return 0;
    }
    static char inst_id[] = "i-0123456789abcdef0", ami[] = "ami-01", type[] = "t3.micro",
                az[] = "us-east-1a", region[] = "us-east-1", acct[] = "123456789012",
                ip[] = "169.254.0.15", mac[] = "52:54:00:00:00:01", res[] = "r-01",
                launch[] = "2026-01-01T00:00:00Z", kn[] = "k", pk[] = "ssh-ed25519 AAAA k",
                sg[] = "default";
    static uint8_t ud[] = "#!/bin/sh\n";
    struct imds_instance in = {
        .instance_id = inst_id, .image_id = ami, .instance_type = type,
        .availability_zone = az, .region = region, .account_id = acct,
        .private_ip = ip, .mac = mac, .reservation_id = res, .launch_time = launch,
        .key_name = kn, .public_key = pk, .security_groups = sg,
        .user_data = ud, .user_data_len = sizeof(ud) - 1,
        .tokens_required = (data[0] & 2) != 0,
    };
    size_t off = 0;
    while (off < len) {
        struct imds_request rq;
        size_t used;
        int r = imds_request_parse(text + off, len - off, &rq, &used);
        if (r < 0) {
            if (r != -EAGAIN && r != -EBADMSG && r != -EMSGSIZE)
                abort();
            return 0;
        }
        if (used == 0 || used > len - off || strlen(rq.path) >= sizeof(rq.path))
            abort();
        char *resp;
        size_t rlen;
        if (imds_respond(&in, key, 1000, &rq, &resp, &rlen) < 0)
            abort();
        if (rlen < 12 || memcmp(resp, "HTTP/1.1 ", 9) != 0)
            abort();
        free(resp);
        off += used;
    }
    return 0;
}
