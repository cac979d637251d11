/* Terminal progress bar; see progress.h. */
#include "common/progress.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/util.h"

struct progress {
    const char *label;
    uint64_t total;
    _Atomic uint64_t done;
    _Atomic uint64_t last_draw_ns;
    uint64_t start_ns;
    int enabled;
};

struct progress *progress_new(const char *label, uint64_t total)
{
    struct progress *p = xcalloc(1, sizeof(*p));

    p->label = label;
    p->total = total;
    p->start_ns = now_ns();
    p->enabled = isatty(STDERR_FILENO);
    return p;
}

static void draw(struct progress *p, uint64_t now)
{
    uint64_t done = atomic_load(&p->done);
    double secs = (double)(now - p->start_ns) / 1e9;
    double rate = secs > 0 ? (double)done / secs : 0;
    char a[32], b[32], r[32];
    int pct = p->total ? (int)(done * 100 / p->total) : 0;
    char bar[31];

    for (int i = 0; i < 30; i++)
        bar[i] = i < pct * 30 / 100 ? '#' : '.';
    bar[30] = '\0';
    format_bytes(done, a, sizeof(a));
    format_bytes(p->total, b, sizeof(b));
    format_bytes((uint64_t)rate, r, sizeof(r));
    if (p->total && rate > 0) {
        double left = (double)(p->total - MIN(done, p->total)) / rate;
        fprintf(stderr, "\r%s [%s] %3d%% %s/%s %s/s %02d:%02d left ", p->label, bar, pct, a,
                b, r, (int)left / 60, (int)left % 60);
    } else {
        fprintf(stderr, "\r%s %s %s/s ", p->label, a, r);
    }
    fflush(stderr);
}

void progress_add(struct progress *p, uint64_t bytes)
{
    uint64_t now, last;

    if (!p)
        return;
    atomic_fetch_add(&p->done, bytes);
    if (!p->enabled)
        return;
    now = now_ns();
    last = atomic_load(&p->last_draw_ns);
    if (now - last < 100000000ULL)
        return;
    if (!atomic_compare_exchange_strong(&p->last_draw_ns, &last, now))
        return;
    draw(p, now);
}

void progress_free(struct progress *p)
{
    if (!p)
        return;
    if (p->enabled)
        fprintf(stderr, "\r\033[K");
    free(p);
}
