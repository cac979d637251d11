/* Fuzz target for the qcow2 reader: the input is the image file.  It is put
 * in a memfd, opened, and the whole virtual disk is walked the way an
 * importer walks it (extent() to skip holes, read() for data), then a few
 * reads at scattered offsets exercise the table and cluster caches.  Errors
 * are expected; crashes, sanitizer reports, hangs and broken extent()
 * contracts are not.  Work per input is capped: at most 64 MiB of guest data
 * read and a bounded number of calls, whatever the virtual size claims. */
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/util.h"
#include "fuzz.h"
#include "snapshot/qcow2.h"

#define READ_BUDGET (64u << 20)
#define PIECE (1u << 20)
#define MAX_CALLS 20000

static void walk(struct qcow2_reader *r, uint8_t *buf)
{
    uint64_t size = qcow2_reader_size(r), off = 0, budget = READ_BUDGET;
    uint64_t seed = size * 0x9e3779b97f4a7c15ULL + 1;

    for (unsigned calls = 0; off < size && budget > 0 && calls < MAX_CALLS; calls++) {
        bool allocated = false;
        uint64_t len = 0;

        if (qcow2_reader_extent(r, off, size - off, &allocated, &len) < 0)
            break;
        if (len == 0 || len > size - off)
            abort(); /* extent() broke its contract */
        if (allocated) {
            size_t n = (size_t)MIN(MIN(len, (uint64_t)PIECE), budget);
            /* A read error here is an answer, not a failure: go on to see
             * what the next piece does. */
            (void)qcow2_reader_read(r, buf, n, off);
            budget -= n;
            len = n;
        }
        off += len;
    }

    for (int i = 0; i < 16 && size > 0; i++) {
        uint64_t len, at;
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        len = MIN(size, (seed >> 33) % 70000 + 1);
        at = (seed >> 7) % (size - len + 1);
        (void)qcow2_reader_read(r, buf, (size_t)len, at);
    }
    (void)qcow2_reader_read(r, buf, 0, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    _cleanup_close_ int fd = memfd_create("fuzz-qcow2", MFD_CLOEXEC);
    _cleanup_free_ uint8_t *buf = NULL;
    struct qcow2_reader *r = NULL;

    if (fd < 0 || write_all(fd, data, size, 0) < 0)
        abort();
    if (qcow2_reader_open(fd, &r) < 0)
        return 0;
    buf = xmalloc(PIECE);
    walk(r, buf);
    qcow2_reader_free(r);
    return 0;
}
