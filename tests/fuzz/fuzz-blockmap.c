/* Fuzz target for the block map parser: any bytes either parse into a map
 * that serialises back to exactly the same bytes and answers lookups, or are
 * refused with -EBADMSG.  Never a crash. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "snapshot/snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct blockmap *m = NULL;
    uint8_t *out;
    size_t len;
    int r = blockmap_parse(data, size, &m);

    if (r < 0) {
        if (r != -EBADMSG)
            abort();
        return 0;
    }
    blockmap_serialize(m, &out, &len);
    if (len != size || memcmp(out, data, size) != 0)
        abort();
    free(out);
    for (uint64_t b = 0; b < 64; b++) {
        size_t next;
        ssize_t i = blockmap_lookup(m, b * 7919, &next);
        if (i >= 0 && (m->ext[i].block > b * 7919 || m->ext[i].block + m->ext[i].count <= b * 7919))
            abort();
    }
    blockmap_free(m);
    return 0;
}
