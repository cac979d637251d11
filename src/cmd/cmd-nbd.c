/* `kiln nbd`: serve one volume (read-write, or --readonly) or one snapshot
 * (read-only, lazily, never materialised) over NBD in the foreground until
 * SIGTERM or SIGINT.  The server is src/nbd/; this file picks the backend
 * and waits for the signal. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cli.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "nbd/nbd.h"
#include "volume/volume.h"

static const char nbd_usage[] =
    "usage: kiln nbd VOLUME|SNAPSHOT --socket PATH [--readonly] [--tcp ADDR:PORT]\n"
    "                [--threads N] [--cache-size SIZE]\n"
    "\n"
    "Serve a volume (vol-...) or a completed snapshot (snap-...) over NBD until\n"
    "SIGTERM or SIGINT.  A volume is served read-write (unless --readonly):\n"
    "writes go to its overlay, its snapshot is read lazily.  A snapshot is\n"
    "always served read-only and lazily: each read fetches (and verifies) only\n"
    "the chunks it touches, through the volume read path and a private cache\n"
    "file (freed on exit), or with --cache-size through a bounded in-memory\n"
    "cache of decoded chunks (no disk used).\n"
    "\n"
    "Clients connect to nbd+unix:///?socket=PATH (the export name is the id;\n"
    "the empty name selects it too).  On a stop signal the server stops\n"
    "accepting, answers the requests in flight, flushes and exits 0.\n"
    "\n"
    "  --socket PATH      unix socket to listen on (created; removed on exit)\n"
    "  --tcp ADDR:PORT    also listen on TCP (an IPv4 address, e.g. 127.0.0.1;\n"
    "                     port 0 picks a free one)\n"
    "  --readonly         serve read-only (snapshots always are)\n"
    "  --threads N        requests in flight per connection (default 8, 1-64)\n"
    "  --cache-size SIZE  serve a snapshot from an in-memory cache of decoded\n"
    "                     chunks of at most SIZE (1M to 1T) instead of a cache file\n";

enum { OPT_SOCKET = 1000, OPT_READONLY, OPT_TCP, OPT_THREADS, OPT_CACHE };

struct nbd_args {
    const char *socket;
    const char *tcp;
    bool readonly;
    int threads;
    uint64_t cache;
    char **pos;
};

static int nbd_option(int opt, const char *arg, void *ud)
{
    struct nbd_args *a = ud;
    char *end;
    long n;

    switch (opt) {
    case OPT_SOCKET: a->socket = arg; break;
    case OPT_TCP: a->tcp = arg; break;
    case OPT_READONLY: a->readonly = true; break;
    case OPT_THREADS:
        n = strtol(arg, &end, 10);
        if (*end || n < 1 || n > 64) {
            fprintf(stderr, "kiln: --threads wants a number from 1 to 64\n");
            return EXIT_USAGE;
        }
        a->threads = (int)n;
        break;
    case OPT_CACHE:
        if (parse_size(arg, &a->cache) < 0 || a->cache < (1 << 20) || a->cache > (1ULL << 40)) {
            fprintf(stderr, "kiln: --cache-size wants a size from 1M to 1T, not '%s'\n", arg);
            return EXIT_USAGE;
        }
        break;
    }
    return -1;
}

/* Start the server on `be` (taken), say where, and wait for a stop signal.
 * Returns 0 with the server in *ret (still to be shut down), or -errno
 * (reported). */
static int serve(const struct nbd_args *a, const char *id, const char *description,
                 struct nbd_backend *be, struct nbd_server **ret)
{
    struct nbd_server_options o = {
        .export_name = id,
        .description = description,
        .socket_path = a->socket,
        .tcp_listen = a->tcp,
        .threads = a->threads,
    };
    bool ro = be->read_only;
    sigset_t sigs;
    int e, sig = 0;

    /* Stop signals are taken by sigwait() here; every server thread
     * inherits the blocked mask. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    e = nbd_server_new(&o, be, ret);
    if (e < 0) {
        cli_error(e, "cannot serve '%s'", id);
        return e;
    }
    if (a->tcp)
        fprintf(stderr, "kiln: serving '%s' (%s) on %s%sTCP port %u\n", id,
                ro ? "read-only" : "read-write", a->socket ? a->socket : "",
                a->socket ? " and " : "", nbd_server_port(*ret));
    else
        fprintf(stderr, "kiln: serving '%s' (%s) on nbd+unix:///?socket=%s\n", id,
                ro ? "read-only" : "read-write", a->socket);
    fflush(stderr);
    while (sigwait(&sigs, &sig) != 0)
        ;
    fprintf(stderr, "kiln: %s: finishing requests in flight, then stopping\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT");
    return 0;
}

/* Serve a volume, or a snapshot through a read-only volume view (the
 * volume read path with a private cache file freed on exit). */
static int serve_volume(struct cli *cli, const struct nbd_args *a, const char *id)
{
    bool snap = id_is_valid("snap", id);
    _cleanup_(region_freep) struct region *r = NULL;
    struct volume *v = NULL;
    struct volume_stats vs;
    struct nbd_backend be;
    struct nbd_server *srv = NULL;
    struct nbd_server_stats st;
    int e;

    e = cli_open_region(cli, &r);
    /* Serving a snapshot holds the store's lock shared for as long as it
     * runs: gc must not sweep the chunks of a snapshot deleted meanwhile.
     * (A volume's base map stays reachable for gc through its row.) */
    if (e == 0 && snap && (e = store_lock(r->store, false, 60000)) == 0)
        e = service_volume_open_snapshot(r, id, &v);
    else if (e == 0 && !snap)
        e = service_volume_open(r, id, a->readonly ? VOLUME_OPEN_READ_ONLY : 0, &v);
    if (e < 0) {
        cli_error(e, "cannot serve '%s'", id);
        return 1;
    }
    nbd_volume_backend_new(v, a->readonly || snap, &be);
    if (serve(a, id, snap ? "kiln snapshot (read-only)" : "kiln volume", &be, &srv) < 0)
        return 1;
    e = nbd_server_shutdown(srv); /* flushes the volume */
    nbd_server_get_stats(srv, &st);
    volume_stats(v, &vs);
    nbd_server_free(srv); /* closes the volume */
    if (e < 0) {
        cli_error(e, "unclean shutdown: the last writes may not be durable");
        return 1;
    }
    if (!cli->quiet)
        fprintf(stderr,
                "kiln: stopped: %" PRIu64 " connections, %" PRIu64 " requests (%" PRIu64
                " errors), %" PRIu64 " chunks fetched (%" PRIu64 " bytes), %" PRIu64
                " cache hits, %" PRIu64 " blocks written\n",
                st.connections, st.requests, st.errors, vs.chunks_fetched, vs.bytes_fetched,
                vs.cache_hits, vs.blocks_written);
    return 0;
}

int cmd_nbd(struct cli *cli, int argc, char **argv)
{
    static const struct option options[] = {
        CLI_COMMON_OPTIONS,
        { "socket", required_argument, NULL, OPT_SOCKET },
        { "tcp", required_argument, NULL, OPT_TCP },
        { "readonly", no_argument, NULL, OPT_READONLY },
        { "threads", required_argument, NULL, OPT_THREADS },
        { "cache-size", required_argument, NULL, OPT_CACHE },
        { NULL, 0, NULL, 0 },
    };
    struct nbd_args a = { 0 };
    _cleanup_(region_freep) struct region *r = NULL;
    struct registry_snapshot *row = NULL;
    struct blockmap *map = NULL;
    struct nbd_backend be = { 0 }, stats_be;
    struct nbd_server *srv = NULL;
    struct nbd_server_stats st;
    struct nbd_snapshot_cache_stats cs;
    int ex, e;
    const char *id;

    ex = cli_parse(cli, argc, argv, options, nbd_usage, "socket tcp readonly threads cache-size",
                   1, nbd_option, &a, &a.pos);
    if (ex >= 0)
        return ex;
    id = a.pos[0];
    if (!a.socket && !a.tcp) {
        fprintf(stderr, "kiln: nbd needs --socket PATH (or --tcp ADDR:PORT)\n\n%s", nbd_usage);
        return EXIT_USAGE;
    }
    if (a.socket && !*a.socket) {
        fprintf(stderr, "kiln: --socket must not be empty\n");
        return EXIT_USAGE;
    }
    if (!id_is_valid("snap", id) && !id_is_valid("vol", id)) {
        fprintf(stderr, "kiln: '%s' is neither a volume nor a snapshot id (vol- or snap- and "
                        "17 hex digits)\n", id);
        return EXIT_USAGE;
    }
    if (!cli->quiet && log_get_level() < LOG_INFO)
        log_set_level(LOG_INFO);
    if (id_is_valid("vol", id) || !a.cache)
        return serve_volume(cli, &a, id);

    /* A snapshot with --cache-size: the in-memory chunk cache. */
    e = cli_open_region(cli, &r);
    /* Shared store lock for as long as we serve: gc must not sweep the
     * chunks of a snapshot deleted while it is being served. */
    if (e == 0)
        e = store_lock(r->store, false, 60000);
    if (e == 0)
        e = service_snapshot_get(r, id, &row, &map);
    if (e == 0 && row->state != SNAPSHOT_COMPLETED) {
        e = error_set(EINVAL, "snapshot '%s' is %s, not completed", id,
                      snapshot_state_to_string(row->state));
    }
    registry_snapshot_free(row);
    if (e < 0) {
        blockmap_free(map);
        cli_error(e, "cannot serve '%s'", id);
        return 1;
    }
    nbd_snapshot_backend_new(r->store, map, (size_t)a.cache, &be);
    stats_be = be; /* the handle stays valid until nbd_server_free */
    e = serve(&a, id, "kiln snapshot (read-only)", &be, &srv);
    if (e < 0)
        return 1;
    e = nbd_server_shutdown(srv);
    nbd_server_get_stats(srv, &st);
    nbd_snapshot_backend_stats(&stats_be, &cs);
    nbd_server_free(srv);
    if (e < 0) {
        cli_error(e, "unclean shutdown");
        return 1;
    }
    if (!cli->quiet)
        fprintf(stderr,
                "kiln: stopped: %" PRIu64 " connections, %" PRIu64 " requests (%" PRIu64
                " errors), chunk cache %" PRIu64 " hits, %" PRIu64 " misses, %" PRIu64
                " bytes fetched\n",
                st.connections, st.requests, st.errors, cs.hits, cs.misses, cs.bytes_fetched);
    return 0;
}
