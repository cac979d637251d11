/* Parallel verification of every object of a store, shared by fsck. */
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/progress.h"
#include "common/util.h"
#include "service/internal.h"

struct collect_ctx {
    struct digest *ids;
    uint64_t *sizes;
    size_t n, cap;
    uint64_t bytes;
};

static int collect(const struct store_object_info *info, void *userdata)
{
    struct collect_ctx *c = userdata;

    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 4096;
        c->ids = xrealloc(c->ids, c->cap * sizeof(*c->ids));
        c->sizes = xrealloc(c->sizes, c->cap * sizeof(*c->sizes));
    }
    c->sizes[c->n] = info->stored_size;
    c->ids[c->n++] = info->id;
    c->bytes += info->stored_size;
    return 0;
}

struct verify_job {
    struct store *store;
    enum store_kind kind;
    const struct digest *ids;
    const uint64_t *sizes;
    int *status;
    size_t n;
    _Atomic size_t next;
    _Atomic uint64_t bytes;
    struct progress *bar;
};

static void *verify_worker(void *arg)
{
    struct verify_job *j = arg;
    _cleanup_free_ uint8_t *buf = j->kind == STORE_CHUNK ? xmalloc(STORE_CHUNK_MAX) : NULL;

    for (;;) {
        size_t i = atomic_fetch_add(&j->next, 1);
        if (i >= j->n)
            break;
        if (j->kind == STORE_CHUNK) {
            ssize_t n = store_chunk_get(j->store, &j->ids[i], buf, STORE_CHUNK_MAX);
            progress_add(j->bar, j->sizes[i]);
            j->status[i] = n < 0 ? (int)n : 0;
            if (n > 0)
                atomic_fetch_add(&j->bytes, (uint64_t)n);
        } else {
            void *map = NULL;
            size_t len = 0;
            j->status[i] = store_map_get(j->store, &j->ids[i], &map, &len);
            free(map);
        }
    }
    return NULL;
}

int verify_all(struct store *s, enum store_kind kind, bool progress, struct digest **ret_ids,
               int **ret_status, size_t *ret_n, uint64_t *ret_bytes)
{
    struct collect_ctx c = { 0 };
    pthread_t threads[16];
    int nthreads = (int)MIN(ARRAY_SIZE(threads), (size_t)sysconf(_SC_NPROCESSORS_ONLN));
    int r;

    r = store_list(s, kind, collect, &c);
    if (r < 0) {
        free(c.ids);
        free(c.sizes);
        return r;
    }
    struct verify_job j = {
        .store = s, .kind = kind, .ids = c.ids, .sizes = c.sizes, .n = c.n,
        .status = xcalloc(c.n ? c.n : 1, sizeof(int)),
    };
    nthreads = MAX(nthreads, 1);
    if (progress)
        j.bar = progress_new("verifying", c.bytes);
    int started = 0;
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&threads[started], NULL, verify_worker, &j) == 0)
            started++;
    if (started == 0)
        verify_worker(&j); /* no threads to be had: do it here */
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    progress_free(j.bar);
    free(c.sizes);
    *ret_ids = c.ids;
    *ret_status = j.status;
    *ret_n = c.n;
    if (ret_bytes)
        *ret_bytes = j.bytes;
    return 0;
}
