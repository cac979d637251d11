/* SHA-256 digests (OpenSSL libcrypto, which uses SHA-NI where present) and
 * their hex form.  A digest names every chunk and block map in the store. */
#ifndef KILN_COMMON_HASH_H
#define KILN_COMMON_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DIGEST_SIZE 32
#define DIGEST_HEX_SIZE (2 * DIGEST_SIZE + 1)

struct digest {
    uint8_t b[DIGEST_SIZE];
};

/* One-shot SHA-256 of len bytes. */
void sha256(const void *data, size_t len, struct digest *ret);

/* Incremental SHA-256 for data that arrives in pieces. */
struct sha256_ctx;
struct sha256_ctx *sha256_new(void);
void sha256_update(struct sha256_ctx *ctx, const void *data, size_t len);
/* Write the digest and reset ctx for reuse. */
void sha256_final(struct sha256_ctx *ctx, struct digest *ret);
void sha256_free(struct sha256_ctx *ctx);

bool digest_equal(const struct digest *a, const struct digest *b);
bool digest_is_null(const struct digest *d);
int digest_compare(const struct digest *a, const struct digest *b);

/* Lowercase hex, NUL-terminated; returns out. */
char *digest_to_hex(const struct digest *d, char out[DIGEST_HEX_SIZE]);
/* Parse exactly 64 hex digits.  Returns 0 or -EINVAL. */
int digest_from_hex(const char *hex, struct digest *ret);

/* The value of one hex digit (either case), or -1. */
int hex_value(char c);

/* Hex encode len bytes into out (2*len+1 bytes). */
void hex_encode(const void *data, size_t len, char *out);

#endif
