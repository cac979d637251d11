/* SSH key pairs for CreateKeyPair and ImportKeyPair (ssh-key.h).
 *
 * The OpenSSH formats used here: a public key blob is a sequence of
 * SSH strings (uint32 big-endian length, bytes): for RSA the name
 * "ssh-rsa", the exponent e and the modulus n as mpints (big-endian, a
 * leading zero byte when the top bit is set); for Ed25519 the name
 * "ssh-ed25519" and the 32-byte public key (RFC 4253 6.6, RFC 8709).  The
 * unencrypted "openssh-key-v1" private key is the magic, cipher and KDF
 * "none", an empty KDF option string, one public key blob and one private
 * section (two equal check words, the key, an empty comment, padding
 * 1, 2, 3, ... to the cipher block size of 8), base64 in PEM armour at 70
 * columns, as ssh-keygen writes it. */
#include <errno.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/ssh-key.h"
#include "common/util.h"

#define ED25519_KEY_SIZE 32

const char *ssh_key_type_to_string(enum ssh_key_type t)
{
    switch (t) {
    case SSH_KEY_RSA: return "rsa";
    case SSH_KEY_ED25519: return "ed25519";
    }
    return NULL;
}

int ssh_key_type_from_string(const char *s, enum ssh_key_type *ret)
{
    if (s && strcmp(s, "rsa") == 0)
        *ret = SSH_KEY_RSA;
    else if (s && strcmp(s, "ed25519") == 0)
        *ret = SSH_KEY_ED25519;
    else
        return error_set(EINVAL, "unknown key type '%s' (want rsa or ed25519)", s ? s : "");
    return 0;
}

void ssh_key_release(struct ssh_key *k)
{
    if (!k)
        return;
    free(k->public_line);
    if (k->private_pem) {
        OPENSSL_cleanse(k->private_pem, strlen(k->private_pem));
        free(k->private_pem);
    }
    free(k->fingerprint);
    memset(k, 0, sizeof(*k));
}

/* ---- a growing byte buffer for SSH wire encoding ---- */

struct wbuf {
    uint8_t *p;
    size_t len, cap;
};

static void wbuf_add(struct wbuf *b, const void *data, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void wbuf_u32(struct wbuf *b, uint32_t v)
{
    uint8_t be[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    wbuf_add(b, be, 4);
}

static void wbuf_string(struct wbuf *b, const void *data, size_t n)
{
    wbuf_u32(b, (uint32_t)n);
    wbuf_add(b, data, n);
}

static void wbuf_cstring(struct wbuf *b, const char *s)
{
    wbuf_string(b, s, strlen(s));
}

static void wbuf_release(struct wbuf *b)
{
    if (b->p)
        OPENSSL_cleanse(b->p, b->cap);
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* An mpint from a non-negative BIGNUM. */
static void wbuf_mpint(struct wbuf *b, const BIGNUM *bn)
{
    int n = BN_num_bytes(bn);
    uint8_t *tmp = xmalloc((size_t)n + 1);

    tmp[0] = 0;
    BN_bn2bin(bn, tmp + 1);
    if (n > 0 && (tmp[1] & 0x80))
        wbuf_string(b, tmp, (size_t)n + 1);
    else
        wbuf_string(b, tmp + 1, (size_t)n);
    free(tmp);
}

/* ---- base64 ---- */

static char *base64_encode(const uint8_t *p, size_t n)
{
    char *out = xmalloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    return out;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Strict base64: a multiple of 4 characters, '=' only as the final one or
 * two, no whitespace.  *ret is new. */
static int base64_decode(const char *s, size_t n, uint8_t **ret, size_t *ret_len)
{
    _cleanup_free_ uint8_t *out = NULL;
    size_t pad = 0, o = 0;

    if (n == 0 || n % 4)
        return error_set(EINVAL, "the key's base64 is not a multiple of 4 characters");
    if (s[n - 1] == '=')
        pad = s[n - 2] == '=' ? 2 : 1;
    out = xmalloc(n / 4 * 3);
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        for (int k = 0; k < 4; k++) {
            bool is_pad = i + (size_t)k >= n - pad;
            v[k] = is_pad ? 0 : b64_value((unsigned char)s[i + (size_t)k]);
            if (v[k] < 0)
                return error_set(EINVAL, "the key's base64 has an invalid character");
        }
        uint32_t w =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[o++] = (uint8_t)(w >> 16);
        out[o++] = (uint8_t)(w >> 8);
        out[o++] = (uint8_t)w;
    }
    *ret_len = o - pad;
    *ret = TAKE_PTR(out);
    return 0;
}

/* ---- fingerprints ---- */

static char *hex_pairs(const uint8_t *md, unsigned n)
{
    char *out = xmalloc(3 * (size_t)n + 1);
    for (unsigned i = 0; i < n; i++)
        snprintf(out + 3 * i, 4, "%02x%s", md[i], i + 1 < n ? ":" : "");
    return out;
}

static int digest(const EVP_MD *md, const void *p, size_t n, uint8_t *out, unsigned *out_len)
{
    if (!EVP_Digest(p, n, out, out_len, md, NULL))
        return error_set(EIO, "cannot compute a key fingerprint: libcrypto failed");
    return 0;
}

static int fingerprint_ed25519(const struct wbuf *blob, char **ret)
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    int r = digest(EVP_sha256(), blob->p, blob->len, md, &n);

    if (r < 0)
        return r;
    *ret = base64_encode(md, n);
    return 0;
}

/* MD5 of the DER SubjectPublicKeyInfo. */
static int fingerprint_rsa_public(EVP_PKEY *pkey, char **ret)
{
    unsigned char *der = NULL;
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    int len = i2d_PUBKEY(pkey, &der), r;

    if (len <= 0)
        return error_set(EIO, "cannot encode an RSA public key: libcrypto failed");
    r = digest(EVP_md5(), der, (size_t)len, md, &n);
    OPENSSL_free(der);
    if (r < 0)
        return r;
    *ret = hex_pairs(md, n);
    return 0;
}

/* SHA-1 of the DER PKCS#8 private key. */
static int fingerprint_rsa_private(EVP_PKEY *pkey, char **ret)
{
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(pkey);
    unsigned char *der = NULL;
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    int len, r;

    if (!p8)
        return error_set(EIO, "cannot encode an RSA private key: libcrypto failed");
    len = i2d_PKCS8_PRIV_KEY_INFO(p8, &der);
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (len <= 0)
        return error_set(EIO, "cannot encode an RSA private key: libcrypto failed");
    r = digest(EVP_sha1(), der, (size_t)len, md, &n);
    OPENSSL_clear_free(der, (size_t)len);
    if (r < 0)
        return r;
    *ret = hex_pairs(md, n);
    return 0;
}

static char *public_line(const char *name, const struct wbuf *blob)
{
    _cleanup_free_ char *b64 = base64_encode(blob->p, blob->len);
    return xasprintf("%s %s", name, b64);
}

/* ---- generation ---- */

static int rsa_blob(EVP_PKEY *pkey, struct wbuf *blob)
{
    BIGNUM *n = NULL, *e = NULL;

    if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n) ||
        !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e)) {
        BN_free(n);
        BN_free(e);
        return error_set(EIO, "cannot read an RSA key's parameters: libcrypto failed");
    }
    wbuf_cstring(blob, "ssh-rsa");
    wbuf_mpint(blob, e);
    wbuf_mpint(blob, n);
    BN_free(n);
    BN_free(e);
    return 0;
}

static int generate_rsa(struct ssh_key *k)
{
    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)SSH_KEY_RSA_BITS);
    struct wbuf blob = {0};
    BIO *bio = NULL;
    char *mem = NULL;
    long len;
    int r;

    if (!pkey)
        return error_set(EIO, "cannot generate an RSA key: libcrypto failed");
    r = rsa_blob(pkey, &blob);
    if (r >= 0)
        r = fingerprint_rsa_private(pkey, &k->fingerprint);
    if (r >= 0) {
        bio = BIO_new(BIO_s_mem());
        if (!bio || !PEM_write_bio_PrivateKey_traditional(bio, pkey, NULL, NULL, 0, NULL, NULL) ||
            (len = BIO_get_mem_data(bio, &mem)) <= 0)
            r = error_set(EIO, "cannot write an RSA private key: libcrypto failed");
        else {
            k->private_pem = xmalloc((size_t)len + 1);
            memcpy(k->private_pem, mem, (size_t)len);
            k->private_pem[len] = '\0';
            /* EC2's key material carries no final newline. */
            while (len > 0 && k->private_pem[len - 1] == '\n')
                k->private_pem[--len] = '\0';
        }
    }
    if (r >= 0)
        k->public_line = public_line("ssh-rsa", &blob);
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    wbuf_release(&blob);
    return r;
}

static char *openssh_private_pem(const struct wbuf *blob, const uint8_t pub[ED25519_KEY_SIZE],
                                 const uint8_t seed[ED25519_KEY_SIZE])
{
    static const char magic[] = "openssh-key-v1"; /* with its NUL */
    struct wbuf priv = {0}, all = {0};
    uint8_t secret[2 * ED25519_KEY_SIZE];
    uint32_t check;
    _cleanup_free_ char *b64 = NULL;
    struct wbuf pem = {0};
    size_t b64_len;
    char *out;

    if (random_bytes(&check, sizeof(check)) < 0)
        return NULL;
    wbuf_u32(&priv, check);
    wbuf_u32(&priv, check);
    wbuf_cstring(&priv, "ssh-ed25519");
    wbuf_string(&priv, pub, ED25519_KEY_SIZE);
    memcpy(secret, seed, ED25519_KEY_SIZE);
    memcpy(secret + ED25519_KEY_SIZE, pub, ED25519_KEY_SIZE);
    wbuf_string(&priv, secret, sizeof(secret));
    OPENSSL_cleanse(secret, sizeof(secret));
    wbuf_cstring(&priv, ""); /* comment */
    for (uint8_t pad = 1; priv.len % 8; pad++)
        wbuf_add(&priv, &pad, 1);

    wbuf_add(&all, magic, sizeof(magic));
    wbuf_cstring(&all, "none");
    wbuf_cstring(&all, "none");
    wbuf_cstring(&all, "");
    wbuf_u32(&all, 1);
    wbuf_string(&all, blob->p, blob->len);
    wbuf_string(&all, priv.p, priv.len);
    wbuf_release(&priv);

    b64 = base64_encode(all.p, all.len);
    wbuf_release(&all);
    b64_len = strlen(b64);
    wbuf_add(&pem, "-----BEGIN OPENSSH PRIVATE KEY-----\n", 36);
    for (size_t i = 0; i < b64_len; i += 70) {
        wbuf_add(&pem, b64 + i, b64_len - i < 70 ? b64_len - i : 70);
        wbuf_add(&pem, "\n", 1);
    }
    wbuf_add(&pem, "-----END OPENSSH PRIVATE KEY-----", 34); /* with the NUL */
    OPENSSL_cleanse(b64, b64_len);
    out = xstrdup((const char *)pem.p);
    wbuf_release(&pem);
    return out;
}

static int generate_ed25519(struct ssh_key *k)
{
    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    uint8_t pub[ED25519_KEY_SIZE], seed[ED25519_KEY_SIZE];
    size_t pub_len = sizeof(pub), seed_len = sizeof(seed);
    struct wbuf blob = {0};
    int r = 0;

    if (!pkey)
        return error_set(EIO, "cannot generate an Ed25519 key: libcrypto failed");
    if (!EVP_PKEY_get_raw_public_key(pkey, pub, &pub_len) ||
        !EVP_PKEY_get_raw_private_key(pkey, seed, &seed_len) || pub_len != sizeof(pub) ||
        seed_len != sizeof(seed))
        r = error_set(EIO, "cannot read an Ed25519 key: libcrypto failed");
    EVP_PKEY_free(pkey);
    if (r < 0)
        goto out;
    wbuf_cstring(&blob, "ssh-ed25519");
    wbuf_string(&blob, pub, sizeof(pub));
    r = fingerprint_ed25519(&blob, &k->fingerprint);
    if (r < 0)
        goto out;
    k->private_pem = openssh_private_pem(&blob, pub, seed);
    if (!k->private_pem) {
        r = error_set(EIO, "cannot write an Ed25519 private key");
        goto out;
    }
    k->public_line = public_line("ssh-ed25519", &blob);
out:
    OPENSSL_cleanse(seed, sizeof(seed));
    wbuf_release(&blob);
    return r;
}

int ssh_key_generate(enum ssh_key_type type, struct ssh_key *ret)
{
    struct ssh_key k = {.type = type};
    int r;

    if (type == SSH_KEY_RSA)
        r = generate_rsa(&k);
    else if (type == SSH_KEY_ED25519)
        r = generate_ed25519(&k);
    else
        r = error_set(EINVAL, "unknown key type %d", (int)type);
    if (r < 0) {
        ssh_key_release(&k);
        return r;
    }
    *ret = k;
    return 0;
}

/* ---- import ---- */

struct rbuf {
    const uint8_t *p;
    size_t len;
};

static bool rbuf_string(struct rbuf *b, const uint8_t **ret, size_t *ret_len)
{
    uint32_t n;

    if (b->len < 4)
        return false;
    n = (uint32_t)b->p[0] << 24 | (uint32_t)b->p[1] << 16 | (uint32_t)b->p[2] << 8 | b->p[3];
    if (n > b->len - 4)
        return false;
    *ret = b->p + 4;
    *ret_len = n;
    b->p += 4 + (size_t)n;
    b->len -= 4 + (size_t)n;
    return true;
}

static bool string_is(const uint8_t *p, size_t n, const char *s)
{
    return n == strlen(s) && memcmp(p, s, n) == 0;
}

/* A positive mpint in minimal form. */
static BIGNUM *mpint_parse(const uint8_t *p, size_t n)
{
    if (n == 0 || (p[0] & 0x80) || (n > 1 && p[0] == 0 && !(p[1] & 0x80)) || n > INT32_MAX)
        return NULL;
    return BN_bin2bn(p, (int)n, NULL);
}

static int import_rsa(struct rbuf *b, struct ssh_key *k, const struct wbuf *blob)
{
    const uint8_t *ep, *np;
    size_t elen, nlen;
    BIGNUM *e = NULL, *n = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    EVP_PKEY *pkey = NULL;
    int bits, r = 0;

    if (!rbuf_string(b, &ep, &elen) || !rbuf_string(b, &np, &nlen) || b->len != 0)
        return error_set(EINVAL, "the ssh-rsa key blob is truncated or has trailing bytes");
    e = mpint_parse(ep, elen);
    n = mpint_parse(np, nlen);
    if (!e || !n || BN_is_zero(e) || !BN_is_odd(e) || BN_is_one(e)) {
        r = error_set(EINVAL, "the ssh-rsa key has a malformed exponent or modulus");
        goto out;
    }
    bits = BN_num_bits(n);
    if (bits < SSH_KEY_RSA_BITS_MIN || bits > SSH_KEY_RSA_BITS_MAX) {
        r = error_set(EINVAL, "the RSA key has %d bits (accepted: %d to %d)", bits,
                      SSH_KEY_RSA_BITS_MIN, SSH_KEY_RSA_BITS_MAX);
        goto out;
    }
    bld = OSSL_PARAM_BLD_new();
    if (!bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) ||
        !(params = OSSL_PARAM_BLD_to_param(bld)) ||
        !(pctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) ||
        EVP_PKEY_fromdata_init(pctx) <= 0 ||
        EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
        r = error_set(EINVAL, "the ssh-rsa key is not a usable RSA public key");
        goto out;
    }
    r = fingerprint_rsa_public(pkey, &k->fingerprint);
    if (r >= 0)
        k->public_line = public_line("ssh-rsa", blob);
out:
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(pctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(e);
    BN_free(n);
    return r;
}

static int import_ed25519(struct rbuf *b, struct ssh_key *k, const struct wbuf *blob)
{
    const uint8_t *p;
    size_t n;
    int r;

    if (!rbuf_string(b, &p, &n) || b->len != 0)
        return error_set(EINVAL, "the ssh-ed25519 key blob is truncated or has trailing bytes");
    if (n != ED25519_KEY_SIZE)
        return error_set(EINVAL, "the ssh-ed25519 key is %zu bytes, not %d", n, ED25519_KEY_SIZE);
    r = fingerprint_ed25519(blob, &k->fingerprint);
    if (r >= 0)
        k->public_line = public_line("ssh-ed25519", blob);
    return r;
}

int ssh_key_import(const void *material, size_t len, struct ssh_key *ret)
{
    const char *s = material, *end;
    const char *name, *b64;
    size_t name_len, b64_len;
    _cleanup_free_ uint8_t *raw = NULL;
    size_t raw_len = 0;
    struct ssh_key k = {0};
    struct wbuf blob = {0};
    struct rbuf rb;
    const uint8_t *kind;
    size_t kind_len;
    int r;

    if (len > SSH_KEY_MATERIAL_MAX)
        return error_set(E2BIG, "the public key is %zu bytes, over %d", len, SSH_KEY_MATERIAL_MAX);
    end = s + len;
    /* Trailing whitespace (a final newline) is fine; anything after the
     * first line is not. */
    while (end > s && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    for (const char *c = s; c < end; c++)
        if (*c == '\0' || *c == '\n' || *c == '\r')
            return error_set(EINVAL, "the public key must be one OpenSSH public key line");
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    name = s;
    while (s < end && *s != ' ' && *s != '\t')
        s++;
    name_len = (size_t)(s - name);
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    b64 = s;
    while (s < end && *s != ' ' && *s != '\t')
        s++;
    b64_len = (size_t)(s - b64);
    /* The rest is the comment, which EC2 drops too. */
    if (name_len == 0 || b64_len == 0)
        return error_set(EINVAL, "the public key is not in OpenSSH format "
                                 "('ssh-rsa AAAA...' or 'ssh-ed25519 AAAA...')");
    if (!((name_len == 7 && memcmp(name, "ssh-rsa", 7) == 0) ||
          (name_len == 11 && memcmp(name, "ssh-ed25519", 11) == 0)))
        return error_set(EINVAL, "unsupported key type '%.*s' (want ssh-rsa or ssh-ed25519)",
                         (int)(name_len > 40 ? 40 : name_len), name);
    r = base64_decode(b64, b64_len, &raw, &raw_len);
    if (r < 0)
        return r;
    rb = (struct rbuf){raw, raw_len};
    if (!rbuf_string(&rb, &kind, &kind_len) ||
        !string_is(kind, kind_len, "ssh-rsa") == !string_is(kind, kind_len, "ssh-ed25519"))
        return error_set(EINVAL, "the key blob does not start with its key type");
    if (!string_is(kind, kind_len, name_len == 7 ? "ssh-rsa" : "ssh-ed25519"))
        return error_set(EINVAL, "the key blob's type does not match '%.*s'", (int)name_len, name);
    wbuf_add(&blob, raw, raw_len);
    if (name_len == 7) {
        k.type = SSH_KEY_RSA;
        r = import_rsa(&rb, &k, &blob);
    } else {
        k.type = SSH_KEY_ED25519;
        r = import_ed25519(&rb, &k, &blob);
    }
    wbuf_release(&blob);
    if (r < 0) {
        ssh_key_release(&k);
        return r;
    }
    *ret = k;
    return 0;
}
