/* The job runner of `kiln serve`: worker threads that run the copy jobs
 * (registry/jobs.h) of the regions served, through service_job_run().
 *
 * Design notes:
 *
 * - The registries are the queue.  A job row exists from the transaction
 *   that accepts a copy to the one that finishes it, so the runner keeps
 *   no state that a crash could lose: at start it finds every job a
 *   stopped or killed serve left and runs it again (a rerun finds the
 *   chunks already copied present and does not move them twice).
 *
 * - Finding work: a worker whose queue is empty scans the served regions'
 *   registries when woken by service_jobs_notify() (the API calls it after
 *   committing a job) or every POLL_MS, so jobs committed by another
 *   process are found too.  One worker scans at a time; a job is queued
 *   once and run by one worker.
 *
 * - One runner per data directory: the runner runs jobs only while it
 *   holds DATA/jobs.lock (flock, exclusive), so two serve processes on one
 *   data directory never run the same job twice at once.  A runner that
 *   cannot take the lock tries again at every scan.
 *
 * - A job whose failure could not even be recorded (the registry refused
 *   the write) is not retried by this process (it would fail the same way
 *   in a loop); it is retried at the next start.  A registry that was only
 *   busy (-EBUSY) is tried again at the next scan.
 *
 * - Stopping (job_runner_free(), on SIGTERM): the stop flag is polled by
 *   service_job_run() between chunks, so workers return within a chunk's
 *   copy (or a registry busy timeout), leaving their jobs queued.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "registry/jobs.h"
#include "service/service.h"

#define POLL_MS 2000
#define THREADS_MAX 64

struct job_ref {
    char region[JOB_REGION_SIZE];
    char id[ID_MAX_SIZE];
    enum registry_job_kind kind; /* for the log line of a finished job */
};

struct job_runner {
    struct job_runner_options opts;
    char *data_dir;
    pthread_t *threads;
    int n_threads;
    atomic_bool stop;

    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t cond;
    struct job_ref *queue, *running, *skip;
    size_t n_queue, n_running, n_skip;
    bool dirty;    /* notified since the last scan */
    bool scanning; /* a worker is scanning */
    uint64_t next_scan_ns;
    int lock_fd;   /* DATA/jobs.lock, held while >= 0 */
    bool warned_lock;
};

/* The runner of this process, for service_jobs_notify(). */
static pthread_mutex_t active_lock = PTHREAD_MUTEX_INITIALIZER;
static struct job_runner *active;

void service_jobs_notify(void)
{
    pthread_mutex_lock(&active_lock);
    if (active) {
        pthread_mutex_lock(&active->lock);
        active->dirty = true;
        pthread_cond_broadcast(&active->cond);
        pthread_mutex_unlock(&active->lock);
    }
    pthread_mutex_unlock(&active_lock);
}

static bool ref_in(const struct job_ref *list, size_t n, const struct job_ref *j)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].id, j->id) == 0 && strcmp(list[i].region, j->region) == 0)
            return true;
    return false;
}

static void ref_add(struct job_ref **list, size_t *n, const struct job_ref *j)
{
    *list = xrealloc(*list, (*n + 1) * sizeof(**list));
    (*list)[(*n)++] = *j;
}

static void ref_remove(struct job_ref *list, size_t *n, const struct job_ref *j)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp(list[i].id, j->id) == 0 && strcmp(list[i].region, j->region) == 0) {
            memmove(&list[i], &list[i + 1], (*n - i - 1) * sizeof(*list));
            (*n)--;
            return;
        }
}

/* Take DATA/jobs.lock if we do not hold it yet.  Called by the scanning
 * worker only (jr->scanning), so lock_fd needs no mutex there. */
static bool have_data_dir_lock(struct job_runner *jr)
{
    _cleanup_free_ char *path = NULL;
    int fd;

    if (jr->lock_fd >= 0)
        return true;
    path = xasprintf("%s/jobs.lock", jr->data_dir);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        log_warning("jobs: cannot open '%s': %s; copies are not run", path, strerror(errno));
        return false;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (!jr->warned_lock)
            log_warning("jobs: '%s' is held by another kiln serve, which runs the copies; "
                        "this one will take over when it stops",
                        path);
        jr->warned_lock = true;
        close(fd);
        return false;
    }
    jr->lock_fd = fd;
    return true;
}

/* The jobs of every served region that has a registry, oldest first per
 * region. */
static void scan(struct job_runner *jr, struct job_ref **ret, size_t *ret_n)
{
    struct job_ref *found = NULL;
    size_t n = 0;

    if (!have_data_dir_lock(jr))
        goto out;
    for (size_t i = 0; i < jr->opts.n_regions; i++) {
        const char *name = jr->opts.regions[i];
        _cleanup_free_ char *path = xasprintf("%s/regions/%s/registry.db", jr->data_dir, name);
        struct registry *reg = NULL;
        struct registry_job **jobs = NULL;
        size_t n_jobs = 0;
        int e;

        if (access(path, F_OK) < 0)
            continue;
        e = registry_open(path, &reg);
        if (e >= 0)
            e = registry_job_list(reg, &jobs, &n_jobs);
        if (e < 0)
            log_warning("jobs: cannot list the jobs of region '%s': %s", name,
                        error_message() ? error_message() : strerror(-e));
        for (size_t k = 0; k < n_jobs; k++) {
            struct job_ref j;
            snprintf(j.region, sizeof(j.region), "%s", name);
            snprintf(j.id, sizeof(j.id), "%s", jobs[k]->id);
            j.kind = jobs[k]->kind;
            ref_add(&found, &n, &j);
        }
        registry_job_list_free(jobs, n_jobs);
        registry_free(reg);
    }
out:
    *ret = found;
    *ret_n = n;
}

static void run_one(struct job_runner *jr, const struct job_ref *j, bool *ret_retry)
{
    struct region *dst = NULL;
    struct copy_stats st = { 0 };
    char b1[32], b2[32];
    int e;

    *ret_retry = true;
    error_clear();
    e = region_open(jr->data_dir, j->region, false, &dst);
    if (e >= 0) {
        log_info("job %s (%s): running", j->id, j->region);
        e = service_job_run(dst, j->id, &jr->stop, jr->opts.chunk_delay_us, &st);
    }
    region_free(dst);
    if (e == 0 && j->kind == JOB_VOLUME_SNAPSHOT)
        log_info("job %s (%s): done: volume snapshot completed", j->id, j->region);
    else if (e == 0)
        log_info("job %s (%s): done: %s copied in %llu chunks, %s already present", j->id,
                 j->region, format_bytes(st.bytes_copied, b1, sizeof(b1)),
                 (unsigned long long)st.chunks_copied,
                 format_bytes(st.bytes_present, b2, sizeof(b2)));
    else if (e == 1)
        log_warning("job %s (%s): failed: %s", j->id, j->region,
                    error_message() ? error_message() : "unknown error");
    else if (e == -ECANCELED)
        log_info("job %s (%s): stopped; it resumes at the next start", j->id, j->region);
    else if (e == -ENOENT && !atomic_load(&jr->stop))
        ; /* finished by someone else between the scan and now */
    else if (e == -EBUSY)
        log_warning("job %s (%s): %s; retried shortly", j->id, j->region,
                    error_message() ? error_message() : strerror(-e));
    else {
        log_error("job %s (%s): %s; retried at the next start", j->id, j->region,
                  error_message() ? error_message() : strerror(-e));
        *ret_retry = false;
    }
}

static uint64_t deadline_after(uint64_t ms)
{
    return now_ns() + ms * 1000000ull;
}

static void *worker(void *arg)
{
    struct job_runner *jr = arg;

    pthread_mutex_lock(&jr->lock);
    while (!atomic_load(&jr->stop)) {
        if (jr->n_queue > 0) {
            struct job_ref j = jr->queue[0];
            bool retry;
            memmove(&jr->queue[0], &jr->queue[1], (jr->n_queue - 1) * sizeof(j));
            jr->n_queue--;
            ref_add(&jr->running, &jr->n_running, &j);
            pthread_mutex_unlock(&jr->lock);
            run_one(jr, &j, &retry);
            pthread_mutex_lock(&jr->lock);
            ref_remove(jr->running, &jr->n_running, &j);
            if (!retry)
                ref_add(&jr->skip, &jr->n_skip, &j);
            continue;
        }
        if (!jr->scanning && (jr->dirty || now_ns() >= jr->next_scan_ns)) {
            struct job_ref *found = NULL;
            size_t n = 0;
            jr->scanning = true;
            jr->dirty = false;
            pthread_mutex_unlock(&jr->lock);
            scan(jr, &found, &n);
            pthread_mutex_lock(&jr->lock);
            for (size_t i = 0; i < n; i++)
                if (!ref_in(jr->queue, jr->n_queue, &found[i]) &&
                    !ref_in(jr->running, jr->n_running, &found[i]) &&
                    !ref_in(jr->skip, jr->n_skip, &found[i]))
                    ref_add(&jr->queue, &jr->n_queue, &found[i]);
            free(found);
            jr->scanning = false;
            jr->next_scan_ns = deadline_after(POLL_MS);
            pthread_cond_broadcast(&jr->cond);
            continue;
        }
        if (jr->scanning) {
            /* Another worker scans; it broadcasts when done. */
            pthread_cond_wait(&jr->cond, &jr->lock);
            continue;
        }
        {
            uint64_t until = jr->next_scan_ns;
            struct timespec ts = { .tv_sec = (time_t)(until / 1000000000ull),
                                   .tv_nsec = (long)(until % 1000000000ull) };
            pthread_cond_timedwait(&jr->cond, &jr->lock, &ts);
        }
    }
    pthread_mutex_unlock(&jr->lock);
    return NULL;
}

int job_runner_new(const struct job_runner_options *o, struct job_runner **ret)
{
    struct job_runner *jr;
    pthread_condattr_t ca;
    int e;

    if (o->threads < 1 || o->threads > THREADS_MAX)
        return error_set(EINVAL, "the number of job threads must be 1 to %d", THREADS_MAX);
    jr = xcalloc(1, sizeof(*jr));
    jr->opts = *o;
    jr->data_dir = xstrdup(o->data_dir);
    jr->lock_fd = -1;
    jr->dirty = true; /* resume what a previous serve left */
    atomic_init(&jr->stop, false);
    pthread_mutex_init(&jr->lock, NULL);
    /* now_ns() is CLOCK_MONOTONIC: wait on the same clock. */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&jr->cond, &ca);
    pthread_condattr_destroy(&ca);
    jr->threads = xcalloc((size_t)o->threads, sizeof(*jr->threads));
    for (int i = 0; i < o->threads; i++) {
        e = pthread_create(&jr->threads[i], NULL, worker, jr);
        if (e != 0) {
            job_runner_free(jr);
            return error_set(e, "cannot start a job thread: %s", strerror(e));
        }
        jr->n_threads++;
    }
    pthread_mutex_lock(&active_lock);
    active = jr;
    pthread_mutex_unlock(&active_lock);
    *ret = jr;
    return 0;
}

void job_runner_free(struct job_runner *jr)
{
    if (!jr)
        return;
    pthread_mutex_lock(&active_lock);
    if (active == jr)
        active = NULL;
    pthread_mutex_unlock(&active_lock);
    pthread_mutex_lock(&jr->lock);
    atomic_store(&jr->stop, true);
    pthread_cond_broadcast(&jr->cond);
    pthread_mutex_unlock(&jr->lock);
    for (int i = 0; i < jr->n_threads; i++)
        pthread_join(jr->threads[i], NULL);
    if (jr->lock_fd >= 0)
        close(jr->lock_fd);
    pthread_cond_destroy(&jr->cond);
    pthread_mutex_destroy(&jr->lock);
    free(jr->threads);
    free(jr->queue);
    free(jr->running);
    free(jr->skip);
    free(jr->data_dir);
    free(jr);
}
