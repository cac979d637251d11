/* Fuzz target for the ImportKeyPair public key parser
 * (src/common/ssh-key.c): any bytes either are refused with a message, or
 * yield a key whose public line imports again to the same line and the
 * same fingerprint (a fixed point: the parser accepts what it writes). */
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/ssh-key.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ssh_key k = { 0 }, again = { 0 };

    error_clear();
    if (ssh_key_import(data, size, &k) < 0) {
        if (!error_message() || k.public_line || k.fingerprint)
            abort(); /* every refusal says why and returns nothing */
        return 0;
    }
    if (!k.public_line || !k.fingerprint || k.private_pem)
        abort();
    if (ssh_key_import(k.public_line, strlen(k.public_line), &again) < 0 ||
        strcmp(again.public_line, k.public_line) != 0 ||
        strcmp(again.fingerprint, k.fingerprint) != 0 || again.type != k.type)
        abort();
    ssh_key_release(&again);
    ssh_key_release(&k);
    return 0;
}
