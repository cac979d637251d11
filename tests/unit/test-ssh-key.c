/* SSH keys for CreateKeyPair and ImportKeyPair (src/common/ssh-key.c),
 * checked against the real tools: ssh-keygen must read the private keys
 * kiln writes and derive the same public line; the fingerprints must be
 * what EC2's documentation says to compute with openssl and ssh-keygen
 * (SHA-1 of the PKCS#8 DER private key for a created RSA key, MD5 of the
 * DER public key for an imported one, base64 SHA-256 of the blob for
 * Ed25519).  Then the refusals of malformed public keys. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/ssh-key.h"
#include "tap.h"

static char dir[] = "/tmp/kiln-test-ssh-key-XXXXXX";

static void write_file(const char *name, const char *text)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    if (!f)
        return;
    fputs(text, f);
    fputs("\n", f);
    fclose(f);
    chmod(path, 0600);
}

/* The first line a shell command prints, without its newline. */
static char *run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *run(const char *fmt, ...)
{
    char cmd[1024], line[4096];
    va_list ap;
    FILE *p;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    p = popen(cmd, "r");
    if (!p)
        return NULL;
    if (!fgets(line, sizeof(line), p))
        line[0] = '\0';
    pclose(p);
    line[strcspn(line, "\n")] = '\0';
    return strdup(line);
}

static bool have(const char *tool)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", tool);
    return system(cmd) == 0;
}

static void check_generated(enum ssh_key_type type)
{
    struct ssh_key k = {0}, again = {0};
    const char *name = ssh_key_type_to_string(type);
    char *out;

    is_int(ssh_key_generate(type, &k), 0, "%s: generated", name);
    if (!k.public_line)
        return;
    ok(strncmp(k.public_line, type == SSH_KEY_RSA ? "ssh-rsa AAAA" : "ssh-ed25519 AAAA", 12) == 0,
       "%s: an OpenSSH public key line", name);
    ok(strstr(k.private_pem, type == SSH_KEY_RSA
                                 ? "-----BEGIN RSA PRIVATE KEY-----\n"
                                 : "-----BEGIN OPENSSH PRIVATE KEY-----\n") == k.private_pem,
       "%s: the private key format EC2 hands out", name);
    write_file(name, k.private_pem);
    out = run("ssh-keygen -y -f %s/%s 2>&1", dir, name);
    is_str(out, k.public_line, "%s: ssh-keygen derives the same public key from it", name);
    free(out);

    if (type == SSH_KEY_RSA) {
        out = run("openssl pkcs8 -in %s/%s -inform PEM -outform DER -topk8 -nocrypt | "
                  "openssl sha1 -c | sed 's/.*= //'",
                  dir, name);
        is_str(out, k.fingerprint, "rsa: fingerprint = SHA-1 of the PKCS#8 DER private key");
        free(out);
    } else {
        out = run("ssh-keygen -l -E sha256 -f %s/%s | awk '{print $2}' | sed 's/^SHA256://'", dir,
                  name);
        ok(out && strncmp(out, k.fingerprint, strlen(out)) == 0 && strlen(k.fingerprint) == 44 &&
               k.fingerprint[43] == '=',
           "ed25519: fingerprint = ssh-keygen's SHA256, with its base64 padding");
        free(out);
    }

    /* Import of the public line: the same key, the import fingerprint. */
    is_int(ssh_key_import(k.public_line, strlen(k.public_line), &again), 0,
           "%s: its public line imports", name);
    is_str(again.public_line, k.public_line, "%s: the same public line", name);
    ok(again.private_pem == NULL, "%s: no private key for an import", name);
    if (type == SSH_KEY_RSA) {
        char pub[64];
        snprintf(pub, sizeof(pub), "%s.pub", name);
        write_file(pub, k.public_line);
        out = run("ssh-keygen -e -m PKCS8 -f %s/%s | openssl pkey -pubin -outform DER | "
                  "openssl md5 -c | sed 's/.*= //'",
                  dir, pub);
        is_str(out, again.fingerprint, "rsa import: fingerprint = MD5 of the DER public key");
        free(out);
    } else {
        is_str(again.fingerprint, k.fingerprint, "ed25519 import: the same fingerprint");
    }
    ssh_key_release(&again);
    ssh_key_release(&k);
}

static void refuse(const char *text, int want, const char *why)
{
    struct ssh_key k = {0};
    is_int(ssh_key_import(text, strlen(text), &k), want, "refused: %s", why);
    ok(k.public_line == NULL && k.fingerprint == NULL, "nothing returned (%s)", why);
}

int main(void)
{
    struct ssh_key k = {0};
    enum ssh_key_type t;

    if (!mkdtemp(dir)) {
        printf("1..0 # SKIP cannot make a temporary directory\n");
        return 0;
    }
    if (!have("ssh-keygen") || !have("openssl")) {
        printf("1..0 # SKIP ssh-keygen or openssl missing\n");
        return 0;
    }
    is_int(ssh_key_type_from_string("ed25519", &t), 0, "ed25519 is a type");
    is_int(ssh_key_type_from_string("dsa", &t), -EINVAL, "dsa is not");

    check_generated(SSH_KEY_RSA);
    check_generated(SSH_KEY_ED25519);

    /* A key ssh-keygen made, with a comment and a final newline. */
    char *made = run("ssh-keygen -q -t ed25519 -N '' -C 'me@host' -f %s/%s </dev/null", dir, "ext");
    free(made);
    {
        char cmd[512], line[1024] = "";
        FILE *p;
        snprintf(cmd, sizeof(cmd), "cat %s/ext.pub", dir);
        p = popen(cmd, "r");
        if (p) {
            if (!fgets(line, sizeof(line), p))
                line[0] = '\0';
            pclose(p);
        }
        is_int(ssh_key_import(line, strlen(line), &k), 0, "ssh-keygen's own ed25519 key imports");
        ok(k.public_line && strstr(line, k.public_line) == line && !strstr(k.public_line, "me@"),
           "the comment is dropped");
        char *fp = run("ssh-keygen -l -E sha256 -f %s/%s | awk '{print $2}' | sed 's/^SHA256://'",
                       dir, "ext.pub");
        ok(fp && k.fingerprint && strncmp(fp, k.fingerprint, strlen(fp)) == 0,
           "its fingerprint is ssh-keygen's");
        free(fp);
        ssh_key_release(&k);
    }

    refuse("", -EINVAL, "empty");
    refuse("ssh-dss AAAAB3NzaC1kc3MAAACBAP", -EINVAL, "a DSA key");
    refuse("ssh-ed25519", -EINVAL, "no blob");
    refuse("ssh-ed25519 AAAA", -EINVAL, "a blob of nothing");
    refuse("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP!", -EINVAL, "a bad base64 character");
    refuse("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAEA==", -EINVAL, "a short Ed25519 key");
    /* An ssh-rsa blob under the ssh-ed25519 name. */
    refuse("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAAAAQE=", -EINVAL, "mismatched type");
    /* A 8-bit modulus. */
    refuse("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAAX8=", -EINVAL, "an RSA key far too small");
    refuse("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
           "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
           -EINVAL, "two lines");
    {
        char *big = malloc(SSH_KEY_MATERIAL_MAX + 2);
        memset(big, 'A', SSH_KEY_MATERIAL_MAX + 1);
        big[SSH_KEY_MATERIAL_MAX + 1] = '\0';
        refuse(big, -E2BIG, "over 16 KiB");
        free(big);
    }

    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
    return done_testing();
}
