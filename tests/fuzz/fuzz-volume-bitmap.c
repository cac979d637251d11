/* Fuzz target for the volume bitmap file parser (volume_bitmap_parse(),
 * docs/formats.md "Volumes"): any bytes either parse into bitmaps whose
 * bits past the last block are clear, or are refused with -EBADMSG (or
 * -EINVAL for a bitmap of a larger volume).  Never a crash. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "volume/internal.h"

static void one(const uint8_t *data, size_t size, const char *magic, size_t nmaps)
{
    struct digest base = { { 0 } };
    uint64_t *words = NULL, nblocks = 0;
    int r = volume_bitmap_parse(data, size, magic, &base, 1 << 20, nmaps, &words, &nblocks);

    if (r < 0) {
        if (r != -EBADMSG && r != -EINVAL)
            abort();
        return;
    }
    if (nblocks > (1 << 20))
        abort();
    uint64_t fwords = (nblocks + 63) / 64;
    for (size_t m = 0; m < nmaps && nblocks % 64; m++)
        if (words[m * fwords + fwords - 1] >> (nblocks % 64))
            abort();
    free(words);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one(data, size, "KILNVBM", 2);
    one(data, size, "KILNVCA", 1);
    return 0;
}
