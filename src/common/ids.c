/* EC2-style resource ids. */
#include "common/ids.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/hash.h"
#include "common/util.h"

int id_generate(const char *prefix, char *buf, size_t size)
{
    unsigned char rnd[9];
    char hex[19];
    int r = random_bytes(rnd, sizeof(rnd));

    if (r < 0)
        return r;
    hex_encode(rnd, sizeof(rnd), hex);
    hex[ID_HEX_DIGITS] = '\0';
    if ((size_t)snprintf(buf, size, "%s-%s", prefix, hex) >= size)
        return -ENAMETOOLONG;
    return 0;
}

bool id_is_valid(const char *prefix, const char *s)
{
    size_t n = strlen(prefix);

    if (strncmp(s, prefix, n) != 0 || s[n] != '-')
        return false;
    s += n + 1;
    for (int i = 0; i < ID_HEX_DIGITS; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[ID_HEX_DIGITS] == '\0';
}
