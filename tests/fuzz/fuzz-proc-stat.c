/* Fuzz target for the /proc/PID/stat reader of the build janitor
 * (bake_proc_stat_parse() in src/bake/journal.c): any bytes are either
 * refused with a message, or give the state and start time that a second,
 * naive reader (split the text after the last ')' on single spaces) finds
 * too.  The parser must never read past the buffer (it is not terminated). */
#include <stdlib.h>
#include <string.h>

#include "bake/journal.h"
#include "common/error.h"
#include "fuzz.h"

/* The reference: fields after the last ')' separated by one space each;
 * field 3 a single byte, field 22 digits followed by a space, a newline or
 * the end.  Returns 0 or -1. */
static int reference(const char *buf, size_t len, char *state, uint64_t *start)
{
    size_t i, close = len, field = 3, begin;

    for (i = 0; i < len; i++)
        if (buf[i] == ')')
            close = i;
    if (close == len || len - close < 3 || buf[close + 1] != ' ')
        return -1;
    *state = buf[close + 2];
    i = close + 3; /* just after the state byte */
    while (field < 22) {
        if (i >= len || buf[i] != ' ')
            return -1;
        i++;
        field++;
        if (field == 22)
            break;
        while (i < len && buf[i] != ' ')
            i++;
    }
    begin = i;
    *start = 0;
    for (; i < len && buf[i] >= '0' && buf[i] <= '9'; i++) {
        if (*start > (UINT64_MAX - 9) / 10)
            return -1;
        *start = *start * 10 + (uint64_t)(buf[i] - '0');
    }
    if (i == begin || (i < len && buf[i] != ' ' && buf[i] != '\n'))
        return -1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size ? size : 1), state = 0, rstate = 0;
    uint64_t start = 0, rstart = 0;
    int r, ref;

    if (!copy)
        return 0;
    memcpy(copy, data, size); /* exact size: ASan sees a read past the end */
    error_clear();
    r = bake_proc_stat_parse(copy, size, &state, &start);
    ref = reference(copy, size, &rstate, &rstart);
    if (r < 0 && !error_message())
        abort(); /* every refusal says why */
    if ((r == 0) != (ref == 0))
        abort();
    if (r == 0 && (state != rstate || start != rstart))
        abort();
    free(copy);
    return 0;
}
