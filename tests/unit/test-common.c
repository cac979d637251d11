/* Unit tests for src/common: digests, hex, ids, sizes, zero detection, the
 * digest map and error messages. */
#include <errno.h>

#include "common/digest-map.h"
#include "common/error.h"
#include "common/hash.h"
#include "common/ids.h"
#include "common/util.h"
#include "tap.h"

static void test_sha256(void)
{
    struct digest d, back;
    char hex[DIGEST_HEX_SIZE];

    sha256("abc", 3, &d);
    is_str(digest_to_hex(&d, hex),
           "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
           "sha256('abc') matches FIPS 180-2");
    ok(digest_from_hex(hex, &back) == 0 && digest_equal(&d, &back), "hex round trip");
    is_int(digest_from_hex("xyz", &back), -EINVAL, "short hex is refused");
    hex[10] = 'g';
    is_int(digest_from_hex(hex, &back), -EINVAL, "non-hex digit is refused");

    struct sha256_ctx *ctx = sha256_new();
    struct digest d2;
    sha256_update(ctx, "a", 1);
    sha256_update(ctx, "bc", 2);
    sha256_final(ctx, &d2);
    ok(digest_equal(&d, &d2), "incremental sha256 equals one-shot");
    sha256_free(ctx);
}

static void test_ids(void)
{
    char id[ID_MAX_SIZE], id2[ID_MAX_SIZE];

    is_int(id_generate("snap", id, sizeof(id)), 0, "id_generate succeeds");
    is_int(strlen(id), 22, "snap id is 22 characters");
    ok(id_is_valid("snap", id), "generated id is valid: %s", id);
    id_generate("snap", id2, sizeof(id2));
    ok(strcmp(id, id2) != 0, "two ids differ");
    ok(!id_is_valid("snap", "snap-0123456789abcdef"), "16 digits are refused");
    ok(!id_is_valid("snap", "snap-0123456789abcdef01"), "18 digits are refused");
    ok(!id_is_valid("snap", "snap-0123456789ABCDEF0"), "uppercase is refused");
    ok(!id_is_valid("snap", "ami-0123456789abcdef0"), "wrong prefix is refused");
    is_int(id_generate("snap", id, 10), -ENAMETOOLONG, "short buffer is refused");
}

static void test_sizes(void)
{
    uint64_t v;

    ok(parse_size("2G", &v) == 0 && v == 2ULL << 30, "2G");
    ok(parse_size("512KiB", &v) == 0 && v == 512 << 10, "512KiB");
    ok(parse_size("1048576", &v) == 0 && v == 1048576, "plain number");
    is_int(parse_size("-1", &v), -EINVAL, "negative is refused");
    is_int(parse_size("12Q", &v), -EINVAL, "bad unit is refused");
    is_int(parse_size("99999999999T", &v), -EINVAL, "overflow is refused");
    is_int(parse_size("", &v), -EINVAL, "empty is refused");
}

static void test_zero(void)
{
    static uint8_t buf[8192];

    ok(buf_is_zero(buf, sizeof(buf)), "zero buffer");
    ok(buf_is_zero(buf, 3), "short zero buffer");
    buf[8191] = 1;
    ok(!buf_is_zero(buf, sizeof(buf)), "last byte set");
    buf[8191] = 0;
    buf[5] = 1;
    ok(!buf_is_zero(buf, sizeof(buf)), "early byte set");
    ok(!buf_is_zero(buf, 6), "short buffer with a byte set");
}

static void test_digest_map(void)
{
    struct digest_map m;
    size_t iter = 0, n = 0;
    bool created;

    digest_map_init(&m);
    for (uint32_t i = 0; i < 10000; i++) {
        struct digest d;
        sha256(&i, sizeof(i), &d);
        digest_map_insert(&m, &d, &created)->a = i;
    }
    is_int(m.n, 10000, "10000 entries");
    uint32_t k = 1234;
    struct digest d;
    sha256(&k, sizeof(k), &d);
    struct digest_map_entry *e = digest_map_insert(&m, &d, &created);
    ok(!created && e->a == 1234, "re-insert finds the entry");
    k = 20000;
    sha256(&k, sizeof(k), &d);
    ok(digest_map_find(&m, &d) == NULL, "absent key is not found");
    while (digest_map_next(&m, &iter))
        n++;
    is_int(n, 10000, "iteration visits every entry");
    digest_map_release(&m);
}

static void test_error(void)
{
    char buf[128];

    error_clear();
    is_str(error_describe(-ENOENT, buf, sizeof(buf)), "No such file or directory",
           "no message: strerror");
    is_int(error_set(EBADMSG, "chunk '%s' is corrupt", "ab"), -EBADMSG,
           "error_set returns -errno");
    is_int(error_set(-EBADMSG, "x"), -EBADMSG, "negative errno is accepted");
    error_set(EBADMSG, "chunk '%s' is corrupt", "ab");
    is_str(error_message(), "chunk 'ab' is corrupt", "message is recorded");
    error_clear();
    ok(error_message() == NULL, "cleared");
}

int main(void)
{
    test_sha256();
    test_ids();
    test_sizes();
    test_zero();
    test_digest_map();
    test_error();
    return done_testing();
}
