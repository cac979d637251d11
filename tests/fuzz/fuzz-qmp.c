/* Fuzz target for the QMP message parser (qmp_message_parse() in
 * src/vm/qmp.c): any bytes either parse into a message of one kind whose
 * strings are NUL-free C strings, or are refused with -EBADMSG or
 * -EMSGSIZE.  Never a crash. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "vm/vm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct qmp_message m;
    int r = qmp_message_parse((const char *)data, size, &m);

    if (r < 0) {
        if (r != -EBADMSG && r != -EMSGSIZE)
            abort();
        return 0;
    }
    if (m.kind == QMP_EVENT && !m.event)
        abort();
    if (m.kind == QMP_ERROR && (!m.error_class || !m.error_desc))
        abort();
    if (m.kind > QMP_EVENT)
        abort();
    qmp_message_release(&m);
    return 0;
}
