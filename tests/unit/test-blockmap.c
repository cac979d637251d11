/* Unit tests for block maps: append rules, lookup and seek (holes, edges),
 * serialisation round trip, and rejection of malformed maps. */
#include <errno.h>

#include "common/error.h"
#include "common/util.h"
#include "snapshot/snapshot.h"
#include "tap.h"

static struct digest did(unsigned i)
{
    struct digest d;
    sha256(&i, sizeof(i), &d);
    return d;
}

int main(void)
{
    struct blockmap *m = blockmap_new(10 * BLOCK_SIZE + 512); /* 11 blocks, last partial */
    struct digest d0 = did(0), d1 = did(1), d2 = did(2);
    size_t next;

    is_int(blockmap_append(m, 1, 2, &d0), 0, "append [1,3)");
    is_int(blockmap_append(m, 2, 1, &d1), -EINVAL, "overlap refused");
    is_int(blockmap_append(m, 5, 0, &d1), -EINVAL, "empty extent refused");
    is_int(blockmap_append(m, 5, 3, &d1), 0, "append [5,8)");
    is_int(blockmap_append(m, 10, 2, &d2), -EINVAL, "past the end refused");
    is_int(blockmap_append(m, 10, 1, &d2), 0, "append the partial last block");
    is_int(blockmap_append(m, 0, 1, &d2), -EINVAL, "out of order refused");

    is_int(blockmap_lookup(m, 0, &next), -ENOENT, "block 0 is a hole");
    is_int(next, 0, "hole before extent 0");
    is_int(blockmap_lookup(m, 1, NULL), 0, "block 1 in extent 0");
    is_int(blockmap_lookup(m, 2, NULL), 0, "block 2 in extent 0");
    is_int(blockmap_lookup(m, 3, &next), -ENOENT, "block 3 is a hole");
    is_int(next, 1, "hole ends at extent 1");
    is_int(blockmap_lookup(m, 7, NULL), 1, "block 7 in extent 1");
    is_int(blockmap_lookup(m, 8, &next), -ENOENT, "block 8 is a hole");
    is_int(blockmap_lookup(m, 10, NULL), 2, "block 10 in extent 2");
    is_int(blockmap_lookup(m, 11, &next), -ENOENT, "past the end is a hole");
    is_int(next, 3, "no extent after the end");
    is_int(blockmap_seek(m, 4), 1, "seek into a hole finds the next extent");
    is_int(blockmap_data_bytes(m), 5 * BLOCK_SIZE + 512, "data bytes clip the last block");

    uint8_t *buf;
    size_t len;
    struct blockmap *back;
    blockmap_serialize(m, &buf, &len);
    is_int(len, 64 + 3 * 48, "serialised size");
    is_int(blockmap_parse(buf, len, &back), 0, "parse");
    ok(back->n == 3 && back->volume_size == m->volume_size && back->ext[1].block == 5 &&
           back->ext[1].count == 3 && digest_equal(&back->ext[1].id, &d1),
       "round trip preserves extents");
    blockmap_free(back);

    /* Malformed maps. */
    is_int(blockmap_parse(buf, 10, &back), -EBADMSG, "short header refused");
    is_int(blockmap_parse(buf, len - 1, &back), -EBADMSG, "truncated entries refused");
    buf[0] ^= 1;
    is_int(blockmap_parse(buf, len, &back), -EBADMSG, "bad magic refused");
    buf[0] ^= 1;
    buf[64 + 48] = 2; /* second extent starts at block 2: overlaps the first */
    is_int(blockmap_parse(buf, len, &back), -EBADMSG, "overlapping extents refused");
    ok(error_message() && strstr(error_message(), "extent 1"), "message names the extent");
    buf[64 + 48] = 5;
    buf[64 + 12] = 1; /* reserved field */
    is_int(blockmap_parse(buf, len, &back), -EBADMSG, "non-zero reserved refused");
    buf[64 + 12] = 0;
    buf[24] = 0xff; /* extent count */
    is_int(blockmap_parse(buf, len, &back), -EBADMSG, "wrong count refused");
    buf[24] = 3;
    is_int(blockmap_parse(buf, len, &back), 0, "restored map parses again");
    blockmap_free(back);
    free(buf);

    /* An empty (all holes) map. */
    struct blockmap *e = blockmap_new(1 << 20);
    blockmap_serialize(e, &buf, &len);
    ok(blockmap_parse(buf, len, &back) == 0 && back->n == 0, "empty map round trip");
    is_int(blockmap_lookup(back, 5, NULL), -ENOENT, "empty map: all holes");
    blockmap_free(back);
    blockmap_free(e);
    free(buf);
    blockmap_free(m);
    blockmap_free(NULL);
    return done_testing();
}
