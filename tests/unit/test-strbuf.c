/* The growable string buffer (src/common/strbuf.c): what was added is
 * there, NUL-terminated, across growth past the first allocation; printf
 * of a piece longer than the room left; an empty buffer steals as "";
 * steal and release leave it empty and reusable. */
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"
#include "tap.h"

static void test_add(void)
{
    struct strbuf b = {0};
    char *want = malloc(10001);

    strbuf_add(&b, "", 0);
    ok(b.data && b.len == 0 && b.data[0] == '\0', "adding nothing leaves an empty string");
    for (size_t i = 0; i < 10000; i++) {
        want[i] = (char)('a' + i % 26);
        strbuf_addc(&b, want[i]);
    }
    want[10000] = '\0';
    ok(b.len == 10000 && strcmp(b.data, want) == 0,
       "10000 characters one by one: all there, NUL-terminated");
    ok(b.alloc > b.len, "room for the NUL after growth");
    strbuf_release(&b);
    ok(!b.data && b.len == 0 && b.alloc == 0, "release leaves it empty");

    strbuf_adds(&b, "key");
    strbuf_add(&b, "=value\0hidden", 6);
    strbuf_add(&b, "\0", 1);
    ok(b.len == 10 && memcmp(b.data, "key=value\0", 11) == 0,
       "adds and add of n bytes, an embedded NUL kept");
    strbuf_release(&b);
    free(want);
}

static void test_printf(void)
{
    struct strbuf b = {0};
    char big[300];

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    strbuf_printf(&b, "%d-%s", 42, "a");
    is_str(b.data, "42-a", "printf into an empty buffer");
    strbuf_printf(&b, "[%s]", big);
    ok(b.len == 4 + 2 + 299 && b.data[4] == '[' && b.data[b.len - 1] == ']' &&
           b.data[b.len] == '\0',
       "printf of more than the room left grows the buffer");
    strbuf_printf(&b, "%s", "");
    is_int((int)b.len, 305, "printf of nothing adds nothing");
    strbuf_release(&b);
}

static void test_steal(void)
{
    struct strbuf b = {0};
    char *s = strbuf_steal(&b);

    is_str(s, "", "an untouched buffer steals as \"\"");
    free(s);
    strbuf_adds(&b, "first");
    s = strbuf_steal(&b);
    is_str(s, "first", "steal hands out the contents");
    ok(!b.data && b.len == 0 && b.alloc == 0, "and leaves the buffer empty");
    strbuf_adds(&b, "second");
    is_str(b.data, "second", "the buffer is reusable after steal");
    free(s);
    strbuf_release(&b);
}

int main(void)
{
    test_add();
    test_printf();
    test_steal();
    return done_testing();
}
