/* SSH key pairs as EC2 makes and imports them (CreateKeyPair,
 * ImportKeyPair): generation of RSA (2048 bits) and Ed25519 keys with
 * libcrypto, the OpenSSH public key line, the private key in the format EC2
 * hands out (PEM "RSA PRIVATE KEY" for RSA, "OPENSSH PRIVATE KEY" for
 * Ed25519), and the fingerprints EC2 reports:
 *
 *   created RSA      SHA-1 of the DER PKCS#8 private key, hex pairs with ':'
 *   imported RSA     MD5 of the DER public key (SubjectPublicKeyInfo), hex
 *                    pairs with ':' (what EC2 calls RFC 4716's fingerprint)
 *   Ed25519 (both)   base64 of the SHA-256 of the public key blob, with its
 *                    '=' padding
 *
 * Import accepts one OpenSSH public key line ("ssh-rsa AAAA... comment" or
 * "ssh-ed25519 AAAA... comment"); anything else is -EINVAL with a message
 * that says what is wrong.  No private key is ever stored by kiln. */
#ifndef KILN_COMMON_SSH_KEY_H
#define KILN_COMMON_SSH_KEY_H

#include <stddef.h>
#include <stdint.h>

enum ssh_key_type {
    SSH_KEY_RSA,
    SSH_KEY_ED25519,
};

/* "rsa", "ed25519"; NULL for anything else. */
const char *ssh_key_type_to_string(enum ssh_key_type t);
/* 0, or -EINVAL for an unknown name. */
int ssh_key_type_from_string(const char *s, enum ssh_key_type *ret);

#define SSH_KEY_MATERIAL_MAX 16384 /* bytes of an imported public key line */
#define SSH_KEY_RSA_BITS 2048      /* CreateKeyPair's RSA size, as EC2 */
#define SSH_KEY_RSA_BITS_MIN 1024  /* ImportKeyPair accepts 1024 to 16384 */
#define SSH_KEY_RSA_BITS_MAX 16384

struct ssh_key {
    enum ssh_key_type type;
    char *public_line; /* "ssh-rsa AAAA..." without a comment */
    char *private_pem; /* NULL for an imported key */
    char *fingerprint;
};

void ssh_key_release(struct ssh_key *k);

/* A new key pair of `type`.  Returns 0 or -errno (-EIO: libcrypto
 * failed). */
int ssh_key_generate(enum ssh_key_type type, struct ssh_key *ret);

/* Parse the public key line in material[len] (no NUL needed).  -EINVAL
 * with a message for anything that is not one RSA or Ed25519 OpenSSH public
 * key, -E2BIG over SSH_KEY_MATERIAL_MAX. */
int ssh_key_import(const void *material, size_t len, struct ssh_key *ret);

#endif
