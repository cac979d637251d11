/* Read-only region handles kept open between requests, for the hot read
 * paths (DescribeImages): see api_region_acquire() in internal.h.
 *
 * Design notes:
 *
 * - Why: opening a region per request (store, SQLite connection, schema
 *   check) costs more than a filtered DescribeImages itself, and a new
 *   connection starts with an empty page cache, so every page it reads is
 *   a pread().  A kept handle answers from its cache.
 *
 * - Consistency: a handle is an ordinary read-only SQLite connection in WAL
 *   mode; every read transaction it starts sees the newest commit, so a
 *   kept handle never answers from an older state than a fresh one would.
 *
 * - Concurrency: a registry handle is used by one thread at a time
 *   (registry.h).  Idle handles sit in one list under a mutex; acquiring
 *   takes one out, releasing puts it back, so no two requests ever share
 *   one.  At most IDLE_MAX are kept (the rest are closed), so a burst of
 *   connections does not leave a burst of open databases behind.
 *
 * - A handle whose request failed for any reason is closed, not kept: it
 *   might hold an open transaction or a half-reset statement.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "service/service.h"

#define IDLE_MAX 32

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct region *idle[IDLE_MAX];
static size_t n_idle;

int api_region_acquire(struct api_ctx *ctx, struct region **ret)
{
    struct region *rg = NULL;

    pthread_mutex_lock(&lock);
    for (size_t i = n_idle; i-- > 0;)
        if (strcmp(idle[i]->name, ctx->region) == 0 &&
            strcmp(idle[i]->data_dir, ctx->data_dir) == 0) {
            rg = idle[i];
            idle[i] = idle[--n_idle];
            break;
        }
    pthread_mutex_unlock(&lock);
    if (rg) {
        *ret = rg;
        return 0;
    }
    return api_region_open(ctx, ret);
}

void api_region_release(struct region *rg, bool keep)
{
    if (!rg)
        return;
    if (keep && rg->read_only) {
        pthread_mutex_lock(&lock);
        if (n_idle < IDLE_MAX) {
            idle[n_idle++] = rg;
            rg = NULL;
        }
        pthread_mutex_unlock(&lock);
    }
    region_free(rg);
}

void api_region_cache_clear(void)
{
    pthread_mutex_lock(&lock);
    while (n_idle)
        region_free(idle[--n_idle]);
    pthread_mutex_unlock(&lock);
}

/* Close what is left when the process ends, so that leak checkers see
 * every handle freed. */
__attribute__((destructor)) static void cache_fini(void)
{
    api_region_cache_clear();
}
