/* Fuzz target for the import probe: format detection (source.c), the MBR
 * and GPT parsers and the file system walk that produce cut hints
 * (layout.c).  Any bytes either open as a disk image or are refused with a
 * message; hints are sorted, distinct and inside the volume. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/error.h"
#include "fuzz.h"
#include "snapshot/layout.h"
#include "snapshot/source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct source src;
    struct layout_hints h;
    char path[64];
    int fd = memfd_create("fuzz-layout", MFD_CLOEXEC);

    if (fd < 0 || write(fd, data, size) != (ssize_t)size)
        abort();
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    if (source_open(path, IMAGE_FORMAT_AUTO, &src) < 0) {
        if (!error_message())
            abort(); /* every refusal says why */
        close(fd);
        return 0;
    }
    layout_hints_find(&src, &h);
    for (size_t i = 0; i < h.n; i++)
        if (h.blocks[i] * LAYOUT_BLOCK_SIZE >= src.size + LAYOUT_BLOCK_SIZE ||
            (i > 0 && h.blocks[i] <= h.blocks[i - 1]))
            abort();
    layout_hints_release(&h);
    source_release(&src);
    close(fd);
    return 0;
}
