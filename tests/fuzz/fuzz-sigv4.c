/* Fuzz target for the SigV4 Authorization header parser and the verifier
 * (src/api/sigv4.c): the input is an Authorization header value; parsing
 * either succeeds with a well-formed scope or refuses with -EACCES and a
 * message, and verifying a request carrying it never succeeds (the lookup
 * knows one key whose signatures the fuzzer cannot forge) and never
 * crashes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/sigv4.h"
#include "common/error.h"
#include "fuzz.h"

static int lookup(const char *akid, char *secret_out, size_t size, char *account_out, void *ud)
{
    if (strcmp(akid, "AKIDEXAMPLE") != 0)
        return -ENOENT;
    snprintf(secret_out, size, "%s", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
    snprintf(account_out, SIGV4_ACCOUNT_SIZE, "%s", "123456789012");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sigv4_auth auth;
    struct sigv4_result res;
    char *value = malloc(size + 1);
    int r;

    if (!value)
        abort();
    memcpy(value, data, size);
    value[size] = '\0';
    error_clear();
    r = sigv4_parse_authorization(value, &auth);
    if (r < 0 && (r != -EACCES || !error_message()))
        abort();
    if (r == 0 && (strlen(auth.signature) != 64 || strlen(auth.date) != 8 ||
                   !*auth.access_key_id || !*auth.region || !*auth.service ||
                   !*auth.signed_headers))
        abort();

    struct sigv4_header h[] = {
        { "Host", "127.0.0.1:8773" },
        { "X-Amz-Date", "20261127T051214Z" },
        { "Content-Type", "application/x-www-form-urlencoded; charset=utf-8" },
        { "Authorization", value },
    };
    struct sigv4_request req = { "POST", "/", value, h, 4, value, size, 1795756334 };
    r = sigv4_verify(&req, lookup, NULL, &res);
    if (r == 0 || (r == -EACCES && !error_message()))
        abort();
    free(value);
    return 0;
}
