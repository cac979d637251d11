/* Fuzz target for the boot profile parser (volume_profile_parse(),
 * docs/formats.md "Boot profiles"): any bytes either parse into a profile
 * of at most VOLUME_PROFILE_MAX distinct entries that encodes back to the
 * same bytes, or are refused with -EBADMSG.  Never a crash. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "volume/volume.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct volume_profile *p = NULL;
    uint8_t *enc = NULL;
    size_t len = 0;
    int r = volume_profile_parse(data, size, &p);

    if (r < 0) {
        if (r != -EBADMSG)
            abort();
        return 0;
    }
    if (p->n > VOLUME_PROFILE_MAX)
        abort();
    volume_profile_encode(p, &enc, &len);
    if (len != size || memcmp(enc, data, size) != 0)
        abort();
    free(enc);
    volume_profile_free(p);
    return 0;
}
