/* The boot profile of a booting volume and the watch for the agent's hello
 * (boot-watch.h): shared by `kiln vm boot` and the instance manager.
 *
 * Design notes (concurrency): the watch's thread touches the volume only
 * under w->mu and only while w->stop is false; service_boot_watch_free()
 * sets w->stop under w->mu and joins the thread, so once it returns the
 * volume may be closed.  The volume's boot calls (volume_boot_finish(),
 * volume_stats()) are safe while the NBD server serves it (volume.h).
 */
#include "service/boot-watch.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "registry/volumes.h"
#include "vm/vm.h"

struct boot_watch {
    pthread_mutex_t mu;
    bool stop; /* under mu: service_boot_watch_free() wants the thread gone */
    pthread_t thread;
    struct volume *v;
    char *dir, *agent_sock;
    uint64_t start_ns;
    struct volume_stats files; /* the counters after the boot files' copy */
};

int service_boot_profile_start(struct region *r, const char *volume_id, struct volume *v,
                               const struct volume_boot_options *o)
{
    _cleanup_(registry_volume_freep) struct registry_volume *row = NULL;
    _cleanup_free_ char *path = NULL;
    int e;

    if (!volume_base(v))
        return 0;
    e = service_volume_get(r, volume_id, &row);
    if (e < 0)
        return e;
    if (!row->snapshot_id[0])
        return 0;
    path = volume_profile_path(r->dir, row->snapshot_id);
    e = volume_boot_start(v, path, o);
    if (e >= 0)
        log_info("volume '%s': %s boot profile %s", volume_id, e > 0 ? "prefetching" : "recording",
                 path);
    return e;
}

/* DIR/boot-stats, written whole (temporary file, then rename); the
 * format is in docs/operations.md. */
static void boot_stats_write(struct boot_watch *w, double seconds)
{
    struct volume_stats st;
    struct timespec now;
    _cleanup_free_ char *path = xasprintf("%s/boot-stats", w->dir);
    _cleanup_free_ char *tmp = xasprintf("%s/boot-stats.tmp", w->dir);
    FILE *f;

    clock_gettime(CLOCK_REALTIME, &now);
    volume_stats(w->v, &st);
    log_info("agent hello after %.2f s: %" PRIu64 " bytes fetched from the store, %" PRIu64
             " bytes read, %" PRIu64 " of %" PRIu64 " chunks prefetched were hits",
             seconds, st.bytes_fetched, st.bytes_read, st.prefetch_hits, st.prefetch_chunks);
    f = fopen(tmp, "we");
    if (!f) {
        log_warning("cannot write '%s': %m", tmp);
        return;
    }
    fprintf(f, "boot_files_read=%" PRIu64 "\nboot_files_fetched=%" PRIu64 "\n", w->files.bytes_read,
            w->files.bytes_fetched);
    fprintf(f,
            "hello_seconds=%.3f\nhello_unix=%lld.%03ld\nchunks_fetched=%" PRIu64
            "\nbytes_fetched=%" PRIu64 "\nbytes_read=%" PRIu64 "\ncache_hits=%" PRIu64
            "\nprefetch_chunks=%" PRIu64 "\nprefetch_bytes=%" PRIu64 "\nprefetch_hits=%" PRIu64
            "\nprefetch_errors=%" PRIu64 "\n",
            seconds, (long long)now.tv_sec, now.tv_nsec / 1000000L, st.chunks_fetched,
            st.bytes_fetched, st.bytes_read, st.cache_hits, st.prefetch_chunks, st.prefetch_bytes,
            st.prefetch_hits, st.prefetch_errors);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        log_warning("cannot write '%s': %m", path);
        unlink(tmp);
    }
}

static bool stopping(struct boot_watch *w)
{
    pthread_mutex_lock(&w->mu);
    bool s = w->stop;
    pthread_mutex_unlock(&w->mu);
    return s;
}

static void *watch_main(void *arg)
{
    struct boot_watch *w = arg;

    while (!stopping(w)) {
        struct agent_client *ac = NULL;
        int e = agent_client_connect(w->agent_sock, BOOT_WATCH_ATTEMPT_MS, &ac, NULL);
        double seconds = (double)(now_ns() - w->start_ns) / 1e9;

        /* Hang up at once: the agent serves one client at a time. */
        agent_client_free(ac);
        if (e < 0) {
            error_clear();
            if (e != -ETIMEDOUT && e != -ENOENT && e != -ECONNREFUSED) {
                /* a broken connection (QEMU going away, the guest
                 * rebooting): do not spin */
                struct timespec ts = {0, 100 * 1000000L};
                nanosleep(&ts, NULL);
            }
            continue;
        }
        pthread_mutex_lock(&w->mu);
        if (!w->stop) {
            int r = volume_boot_finish(w->v);
            if (r < 0)
                log_warning("boot profile not saved: %s", error_message());
            else if (r > 0)
                log_info("boot profile saved");
            boot_stats_write(w, seconds);
        }
        pthread_mutex_unlock(&w->mu);
        break;
    }
    return NULL;
}

int service_boot_watch_new(struct volume *v, const char *dir, const char *agent_socket,
                           uint64_t start_ns, const struct volume_stats *files,
                           struct boot_watch **ret)
{
    struct boot_watch *w = xcalloc(1, sizeof(*w));
    _cleanup_free_ char *stats = xasprintf("%s/boot-stats", dir);
    int e;

    unlink(stats);
    pthread_mutex_init(&w->mu, NULL);
    w->v = v;
    w->dir = xstrdup(dir);
    w->agent_sock = xstrdup(agent_socket);
    w->start_ns = start_ns;
    if (files)
        w->files = *files;
    e = pthread_create(&w->thread, NULL, watch_main, w);
    if (e != 0) {
        pthread_mutex_destroy(&w->mu);
        free(w->dir);
        free(w->agent_sock);
        free(w);
        return error_set(e, "cannot start the boot watcher: %s", strerror(e));
    }
    *ret = w;
    return 0;
}

void service_boot_watch_free(struct boot_watch *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    free(w->dir);
    free(w->agent_sock);
    free(w);
}
