/* The boot watcher (src/service/boot-watch.c) against a fake guest agent
 * on a real Unix socket that, like QEMU's chardev, serves one connection at
 * a time: the watcher does not hold the agent while the guest is silent
 * (it hangs up and connects again), writes DIR/boot-stats at the hello,
 * then leaves the agent to other clients; freed before any agent exists,
 * it stops and joins without writing anything. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent/proto.h"
#include "common/error.h"
#include "common/util.h"
#include "service/boot-watch.h"
#include "store/store.h"
#include "tap.h"
#include "vm/vm.h"
#include "volume/volume.h"

static char tmpdir[] = "/tmp/kiln-test-boot-watch.XXXXXX";

struct fake_agent {
    int lfd;
    pthread_mutex_t mu;
    bool ready; /* answer hellos (the guest's agent is up) */
    bool quit;
    unsigned connections, hellos_answered;
};

static bool fake_get(struct fake_agent *f, bool *field)
{
    pthread_mutex_lock(&f->mu);
    bool v = *field;
    pthread_mutex_unlock(&f->mu);
    return v;
}

static unsigned fake_count(struct fake_agent *f, unsigned *field)
{
    pthread_mutex_lock(&f->mu);
    unsigned v = *field;
    pthread_mutex_unlock(&f->mu);
    return v;
}

static int read_full(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t n = read(fd, p, len);
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* One connection at a time: each hello answered once ready; silent before. */
static void *fake_main(void *arg)
{
    struct fake_agent *f = arg;

    while (!fake_get(f, &f->quit)) {
        int c = accept(f->lfd, NULL, NULL);
        if (c < 0)
            break;
        pthread_mutex_lock(&f->mu);
        f->connections++;
        pthread_mutex_unlock(&f->mu);
        for (;;) {
            uint8_t hdr[AGENT_HEADER_SIZE], payload[64];
            struct agent_header h;
            if (read_full(c, hdr, sizeof(hdr)) < 0 || agent_header_decode(hdr, &h) < 0 ||
                h.length > sizeof(payload) || read_full(c, payload, h.length) < 0)
                break;
            if (h.type != AGENT_HELLO || !fake_get(f, &f->ready))
                continue;
            struct agent_msg m;
            agent_msg_init(&m, AGENT_HELLO_REPLY, h.id);
            agent_msg_put_u32(&m, AGENT_VERSION);
            agent_msg_put_string(&m, "fake agent");
            if (agent_msg_finish(&m) == 0 && write(c, m.data, m.len) == (ssize_t)m.len) {
                pthread_mutex_lock(&f->mu);
                f->hellos_answered++;
                pthread_mutex_unlock(&f->mu);
            }
            agent_msg_release(&m);
        }
        close(c);
    }
    return NULL;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Wait (at most about 60 s, never asserted as a timing) for a condition. */
#define WAIT_FOR(cond)                                                                             \
    do {                                                                                           \
        for (int i_ = 0; i_ < 6000 && !(cond); i_++)                                               \
            sleep_ms(10);                                                                          \
    } while (0)

static char *read_text(const char *path)
{
    FILE *fp = fopen(path, "re");
    if (!fp)
        return NULL;
    char *buf = xcalloc(1, 4096);
    size_t n = fread(buf, 1, 4095, fp);
    buf[n] = 0;
    fclose(fp);
    return buf;
}

int main(void)
{
    struct store *s = NULL;
    struct volume *v = NULL;
    struct boot_watch *w = NULL;
    struct fake_agent f = {.lfd = -1};
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    pthread_t fake;
    char path[512], sock[512], stats[512], vdir[512];
    uint8_t buf[4096];

    if (!mkdtemp(tmpdir))
        return 1;
    snprintf(path, sizeof(path), "%s/store", tmpdir);
    snprintf(vdir, sizeof(vdir), "%s/vol", tmpdir);
    snprintf(sock, sizeof(sock), "%s/agent.sock", tmpdir);
    snprintf(stats, sizeof(stats), "%s/boot-stats", tmpdir);
    is_int(store_open(path, NULL, &s), 0, "opened a store");
    is_int(volume_open(s, vdir, NULL, NULL, 1 << 20, VOLUME_OPEN_CREATE, &v), 0,
           "opened a blank volume");

    /* No agent ever: freed, it stops and joins, and writes nothing. */
    FILE *old = fopen(stats, "we");
    if (old) {
        fputs("stale\n", old);
        fclose(old);
    }
    is_int(service_boot_watch_new(v, tmpdir, sock, now_ns(), NULL, &w), 0, "watching, no agent");
    ok(access(stats, F_OK) < 0, "an earlier boot-stats is removed at the start");
    sleep_ms(300);
    service_boot_watch_free(w);
    w = NULL;
    ok(access(stats, F_OK) < 0, "stopped before any hello: no boot-stats");
    service_boot_watch_free(NULL);

    /* A silent agent: the watcher hangs up and connects again. */
    pthread_mutex_init(&f.mu, NULL);
    f.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (strlen(sock) >= sizeof(sa.sun_path))
        return 1;
    memcpy(sa.sun_path, sock, strlen(sock) + 1);
    ok(f.lfd >= 0 && bind(f.lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(f.lfd, 8) == 0,
       "a fake agent listens");
    pthread_create(&fake, NULL, fake_main, &f);
    is_int(volume_read(v, buf, sizeof(buf), 0), 0, "a read before the hello");
    is_int(service_boot_watch_new(v, tmpdir, sock, now_ns(), NULL, &w), 0, "watching");
    WAIT_FOR(fake_count(&f, &f.connections) >= 2);
    ok(fake_count(&f, &f.connections) >= 2,
       "a silent agent: the watcher hung up and connected again");
    ok(access(stats, F_OK) < 0, "no boot-stats before the hello");

    /* The agent answers: boot-stats, then the agent is free for others. */
    pthread_mutex_lock(&f.mu);
    f.ready = true;
    pthread_mutex_unlock(&f.mu);
    WAIT_FOR(access(stats, F_OK) == 0);
    char *text = read_text(stats);
    ok(text != NULL, "boot-stats written at the hello");
    ok(text && strstr(text, "\nhello_seconds="), "boot-stats has hello_seconds");
    ok(text && strstr(text, "\nhello_unix="), "boot-stats has hello_unix");
    ok(text && strstr(text, "\nbytes_read=4096\n"), "boot-stats has the volume's counters");
    ok(text && strstr(text, "\nprefetch_hits=0\n"), "boot-stats has the prefetch counters");
    free(text);
    struct agent_client *ac = NULL;
    is_int(agent_client_connect(sock, 10000, &ac, NULL), 0,
           "another client gets the agent after the hello");
    agent_client_free(ac);
    unsigned n = fake_count(&f, &f.connections);
    service_boot_watch_free(w);
    sleep_ms(300);
    is_int(fake_count(&f, &f.connections), n, "no connection after the hello and the free");
    is_int(fake_count(&f, &f.hellos_answered), 2, "one hello each: the watcher's and the client's");

    pthread_mutex_lock(&f.mu);
    f.quit = true;
    pthread_mutex_unlock(&f.mu);
    shutdown(f.lfd, SHUT_RDWR);
    pthread_join(fake, NULL);
    close(f.lfd);
    pthread_mutex_destroy(&f.mu);
    volume_close(v);
    store_free(s);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "# cannot remove %s\n", tmpdir);
    return done_testing();
}
