/* SHA-256 through OpenSSL and digest helpers. */
#include "common/hash.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <string.h>

#include "common/util.h"

struct sha256_ctx {
    EVP_MD_CTX *md;
};

void sha256(const void *data, size_t len, struct digest *ret)
{
    SHA256(data, len, ret->b);
}

struct sha256_ctx *sha256_new(void)
{
    struct sha256_ctx *ctx = xmalloc(sizeof(*ctx));

    ctx->md = EVP_MD_CTX_new();
    if (!ctx->md || !EVP_DigestInit_ex(ctx->md, EVP_sha256(), NULL))
        abort();
    return ctx;
}

void sha256_update(struct sha256_ctx *ctx, const void *data, size_t len)
{
    EVP_DigestUpdate(ctx->md, data, len);
}

void sha256_final(struct sha256_ctx *ctx, struct digest *ret)
{
    unsigned int n = DIGEST_SIZE;

    EVP_DigestFinal_ex(ctx->md, ret->b, &n);
    EVP_DigestInit_ex(ctx->md, EVP_sha256(), NULL);
}

void sha256_free(struct sha256_ctx *ctx)
{
    if (!ctx)
        return;
    EVP_MD_CTX_free(ctx->md);
    free(ctx);
}

bool digest_equal(const struct digest *a, const struct digest *b)
{
    return memcmp(a->b, b->b, DIGEST_SIZE) == 0;
}

bool digest_is_null(const struct digest *d)
{
    static const struct digest zero;
    return digest_equal(d, &zero);
}

int digest_compare(const struct digest *a, const struct digest *b)
{
    return memcmp(a->b, b->b, DIGEST_SIZE);
}

void hex_encode(const void *data, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *p = data;

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * len] = '\0';
}

char *digest_to_hex(const struct digest *d, char out[DIGEST_HEX_SIZE])
{
    hex_encode(d->b, DIGEST_SIZE, out);
    return out;
}

int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int digest_from_hex(const char *hex, struct digest *ret)
{
    struct digest d;

    for (size_t i = 0; i < DIGEST_SIZE; i++) {
        int hi = hex_value(hex[2 * i]), lo = hi < 0 ? -1 : hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        d.b[i] = (uint8_t)(hi << 4 | lo);
    }
    if (hex[2 * DIGEST_SIZE] != '\0')
        return -EINVAL;
    *ret = d;
    return 0;
}
