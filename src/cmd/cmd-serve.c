/* `kiln serve`: run the EC2-compatible API server (src/api/) until SIGTERM
 * or SIGINT.  Requests are signed with the access keys of DATA/accounts.db
 * (`kiln account create`); the first start creates the `default` account
 * and writes its key to DATA/credentials in the aws CLI's format.  One more
 * static credential can be given on the command line (--access-key,
 * --secret-key, --account), for tests and scripts.  Beside the API server
 * runs the job runner (--jobs N threads, src/service/jobs.c) that does the
 * copies, and the instance manager (src/service/instances.c) that runs the
 * instances' guests; on a stop signal the server stops first, so that no
 * new job can be queued and no instance launched, then the instances stop
 * cleanly, then the jobs stop at a safe point. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "bake/driver.h"
#include "cmd/cli.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "registry/accounts.h"
#include "service/instances.h"
#include "service/service.h"

static const char serve_usage[] =
    "usage: kiln serve [--listen ADDR:PORT] [--regions R1,R2,...] [--jobs N]\n"
    "                  [--access-key ID --secret-key SECRET --account ACCOUNT]\n"
    "\n"
    "Serve the EC2 query API (SigV4-signed requests from the aws CLI, boto3,\n"
    "Packer, Terraform) over the data directory.  Clients sign with the access\n"
    "keys of `kiln account create`; the first start creates the account\n"
    "`default` and writes its key to DATA/credentials.  Stops cleanly,\n"
    "finishing the requests in flight, on SIGTERM or SIGINT.\n"
    "\n"
    "CopyImage and CopySnapshot run as jobs: the new image or snapshot is\n"
    "pending until a job thread has copied its data.  On SIGTERM running jobs\n"
    "stop between two chunks; every job left (by a stop or a crash) resumes\n"
    "at the next start, copying only the chunks still missing.\n"
    "\n"
    "  --listen ADDR:PORT   address to listen on (default " API_DEFAULT_LISTEN ");\n"
    "                       [ADDR]:PORT for IPv6, port 0 for any free port\n"
    "  --regions LIST       comma-separated regions served (default\n"
    "                       us-east-1,us-west-2); clients pick one through the\n"
    "                       region they sign for\n"
    "  --jobs N             threads running copy jobs (default 2, 1 to 64)\n"
    "  --access-key ID      one more access key id clients may sign with\n"
    "  --secret-key SECRET  its secret (or $KILN_SECRET_KEY)\n"
    "  --account ACCOUNT    the 12-digit account id that key acts as\n"
    "  --data-dir DIR       data directory (see `kiln --help`)\n"
    "  -q, --quiet          log errors and warnings only (default: one line per request)\n"
    "  -v, --verbose        more log output\n"
    "  -h, --help           this help\n"
    "\n"
    "Use it: AWS_SHARED_CREDENTIALS_FILE=DATA/credentials \\\n"
    "        aws --region us-east-1 --endpoint-url http://127.0.0.1:8773 ec2 describe-regions\n";

/* Where signing keys come from: the accounts database, and optionally one
 * static credential from the command line. */
struct key_source {
    const char *akid, *secret, *account; /* static; NULL when not given */
    struct accounts *accounts;           /* thread-safe lookups */
};

static int lookup_key(const char *akid, char *secret_out, size_t size, char *account_out,
                      void *ud)
{
    const struct key_source *k = ud;
    char secret[ACCOUNT_SECRET_SIZE], account[ACCOUNT_ID_SIZE];
    int r;

    if (k->akid && strcmp(akid, k->akid) == 0) {
        snprintf(secret_out, size, "%s", k->secret);
        snprintf(account_out, SIGV4_ACCOUNT_SIZE, "%s", k->account);
        return 0;
    }
    r = accounts_lookup_key(k->accounts, akid, secret, account);
    if (r < 0)
        return r;
    snprintf(secret_out, size, "%s", secret);
    snprintf(account_out, SIGV4_ACCOUNT_SIZE, "%s", account);
    explicit_bzero(secret, sizeof(secret));
    return 0;
}

/* Open the accounts database; on the first start create the default
 * account and write its key to DATA/credentials. */
static int open_accounts(const char *data_dir, struct accounts **ret)
{
    _cleanup_free_ char *path = accounts_path(data_dir);
    _cleanup_free_ char *creds = xasprintf("%s/credentials", data_dir);
    struct account_credentials c;
    struct accounts *a = NULL;
    bool created, written;
    int r;

    r = mkdir_p(data_dir);
    if (r < 0)
        return error_set(r, "cannot create '%s': %s", data_dir, strerror(-r));
    r = accounts_open(path, &a);
    if (r < 0)
        return r;
    /* The default account may exist already (an offline import creates
     * it); its key goes to DATA/credentials whenever that file is missing. */
    r = accounts_ensure_default(a, &c, &created);
    written = r == 0 && access(creds, F_OK) < 0;
    if (written)
        r = accounts_write_credentials_file(creds, &c, "default");
    explicit_bzero(&c, sizeof(c));
    if (r < 0) {
        accounts_free(a);
        return r;
    }
    if (created)
        fprintf(stderr, "kiln: created the account 'default'\n");
    if (written)
        fprintf(stderr, "kiln: wrote the access key of the account 'default' to '%s'\n", creds);
    if (access(creds, R_OK) == 0)
        fprintf(stderr,
                "kiln: use it with: AWS_SHARED_CREDENTIALS_FILE=%s aws --region us-east-1 "
                "--endpoint-url http://HOST:PORT ec2 ...\n",
                creds);
    *ret = a;
    return 0;
}

#define DEFAULT_JOB_THREADS 2

/* KILN_TEST_JOB_CHUNK_DELAY_US: microseconds each copied chunk waits, so
 * that tests can stop or kill a serve in the middle of a copy
 * (docs/operations.md).  Not for production. */
static unsigned job_delay_from_env(void)
{
    const char *v = getenv("KILN_TEST_JOB_CHUNK_DELAY_US");
    char *end;
    unsigned long d;

    if (!v || !*v)
        return 0;
    d = strtoul(v, &end, 10);
    return *end || d > 1000000 ? 0 : (unsigned)d;
}

/* KILN_TERMINATED_RETENTION_SECONDS: how long terminated instances stay
 * visible (docs/operations.md); unset: an hour, as EC2.  A value that is
 * not 1 to 31536000 seconds is refused (-EINVAL). */
static int retention_from_env(int64_t *ret_ms)
{
    const char *v = getenv("KILN_TERMINATED_RETENTION_SECONDS");
    char *end;
    unsigned long long s;

    *ret_ms = 0;
    if (!v)
        return 0;
    errno = 0;
    s = strtoull(v, &end, 10);
    if (!*v || *end || errno || s < 1 || s > 31536000 || v[0] == '-')
        return error_set(EINVAL,
                         "KILN_TERMINATED_RETENTION_SECONDS '%.40s': expected 1 to 31536000 "
                         "seconds",
                         v);
    *ret_ms = (int64_t)s * 1000;
    return 0;
}

static bool account_id_is_valid(const char *s)
{
    return strlen(s) == 12 && strspn(s, "0123456789") == 12;
}

/* Undo what bakes that died (kill -9, a crash, a reboot) left behind, in
 * every region served (docs/baking.md, "No orphans"). */
static void bake_janitors(const char *data_dir, const char *const *regions, size_t n,
                          struct instance_manager *m)
{
    for (size_t i = 0; i < n; i++) {
        _cleanup_(region_freep) struct region *r = NULL;
        struct bake_janitor_report rep = {0};
        int e = region_open(data_dir, regions[i], false, &r);

        if (e >= 0)
            e = bake_janitor(r, m, &rep);
        if (e < 0) {
            log_error("region %s: bake janitor: %s", regions[i],
                      error_message() ? error_message() : strerror(-e));
            error_clear();
        } else if (rep.builds_cleaned || rep.builds_failed) {
            log_info("region %s: bake janitor cleaned %zu abandoned build(s): %zu resources "
                     "removed, %zu failed (retried at the next start)",
                     regions[i], rep.builds_cleaned + rep.builds_failed, rep.entries_undone,
                     rep.entries_failed);
        }
    }
}

int cmd_serve(struct cli *cli, int argc, char **argv)
{
    static const struct option options[] = {
        { "listen", required_argument, NULL, 'l' },
        { "regions", required_argument, NULL, 'r' },
        { "access-key", required_argument, NULL, 'a' },
        { "secret-key", required_argument, NULL, 's' },
        { "account", required_argument, NULL, 'A' },
        { "jobs", required_argument, NULL, 'j' },
        CLI_COMMON_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    struct key_source cred = { NULL, NULL, NULL, NULL };
    struct api_server_options opts = { .listen = API_DEFAULT_LISTEN };
    _cleanup_free_ char *regions_copy = NULL;
    const char *regions[API_MAX_REGIONS];
    size_t n_regions = 0;
    struct api_server *srv = NULL;
    struct job_runner_options jo = { .threads = DEFAULT_JOB_THREADS };
    struct job_runner *jobs = NULL;
    struct instance_manager *instances = NULL;
    sigset_t sigs;
    int opt, ex = -1, r, sig = 0;
    int level = log_get_level();

    optind = 1;
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORT, options, NULL)) != -1) {
        switch (opt) {
        case 'l': opts.listen = optarg; break;
        case 'a': cred.akid = optarg; break;
        case 's': cred.secret = optarg; break;
        case 'A': cred.account = optarg; break;
        case 'j': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 1 || v > 64) {
                fprintf(stderr, "kiln: --jobs must be a number from 1 to 64\n");
                return EXIT_USAGE;
            }
            jo.threads = (int)v;
            break;
        }
        case 'r':
            free(regions_copy);
            regions_copy = xstrdup(optarg);
            n_regions = 0;
            for (char *p = regions_copy, *save = NULL, *t; (t = strtok_r(p, ",", &save));
                 p = NULL) {
                if (n_regions == API_MAX_REGIONS) {
                    fprintf(stderr, "kiln: more than %d regions\n", API_MAX_REGIONS);
                    return EXIT_USAGE;
                }
                if (!region_name_is_valid(t)) {
                    fprintf(stderr, "kiln: invalid region name '%s'\n", t);
                    return EXIT_USAGE;
                }
                regions[n_regions++] = t;
            }
            if (n_regions == 0) {
                fprintf(stderr, "kiln: --regions needs at least one region\n");
                return EXIT_USAGE;
            }
            break;
        default:
            if (cli_common_option(cli, opt, serve_usage, &ex) && ex >= 0)
                return ex;
            break;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "kiln: serve takes no arguments\n\n%s", serve_usage);
        return EXIT_USAGE;
    }
    if (!cred.secret && cred.akid)
        cred.secret = getenv("KILN_SECRET_KEY");
    if ((cred.akid || cred.secret || cred.account) &&
        (!cred.akid || !cred.secret || !cred.account)) {
        fprintf(stderr, "kiln: a static credential needs all of --access-key ID --secret-key "
                        "SECRET --account ACCOUNT\n");
        return EXIT_USAGE;
    }
    if (cred.akid &&
        (!*cred.akid || strlen(cred.akid) >= SIGV4_KEY_ID_SIZE ||
         strspn(cred.akid, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") !=
             strlen(cred.akid))) {
        fprintf(stderr, "kiln: --access-key must be letters and digits (at most %d)\n",
                SIGV4_KEY_ID_SIZE - 1);
        return EXIT_USAGE;
    }
    if (cred.akid && (!*cred.secret || strlen(cred.secret) >= SIGV4_SECRET_SIZE - 4)) {
        fprintf(stderr, "kiln: --secret-key must be 1 to %d characters\n", SIGV4_SECRET_SIZE - 5);
        return EXIT_USAGE;
    }
    if (cred.akid && !account_id_is_valid(cred.account)) {
        fprintf(stderr, "kiln: --account must be a 12-digit account id\n");
        return EXIT_USAGE;
    }
    if (!cli->data_dir)
        cli->data_dir = service_default_data_dir();
    if (!cli->quiet && level < LOG_INFO)
        log_set_level(LOG_INFO);

    r = open_accounts(cli->data_dir, &cred.accounts);
    if (r < 0) {
        cli_error(r, "cannot open the accounts");
        return 1;
    }
    opts.data_dir = cli->data_dir;
    opts.lookup = lookup_key;
    opts.ud = &cred;
    opts.regions = n_regions ? regions : NULL;
    opts.n_regions = n_regions;

    /* Block the stop signals in every thread (libmicrohttpd's inherit the
     * mask) and wait for them here. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    r = api_server_new(&opts, &srv);
    if (r < 0) {
        cli_error(r, "cannot start the API server");
        accounts_free(cred.accounts);
        return 1;
    }
    jo.data_dir = cli->data_dir;
    jo.regions = api_server_regions(srv, &jo.n_regions);
    jo.chunk_delay_us = job_delay_from_env();
    r = job_runner_new(&jo, &jobs);
    if (r < 0) {
        cli_error(r, "cannot start the job runner");
        api_server_free(srv);
        accounts_free(cred.accounts);
        return 1;
    }
    struct instance_manager_options io = {
        .data_dir = cli->data_dir,
        .regions = jo.regions,
        .n_regions = jo.n_regions,
    };
    io.recovery = bake_instance_recovery; /* a live bake's build VMs are the bake's */
    r = retention_from_env(&io.terminated_retention_ms);
    if (r >= 0)
        r = instance_manager_new(&io, &instances);
    if (r >= 0)
        bake_janitors(cli->data_dir, jo.regions, jo.n_regions, instances);
    if (r < 0) {
        cli_error(r, "cannot start the instance manager");
        job_runner_free(jobs);
        api_server_free(srv);
        accounts_free(cred.accounts);
        return 1;
    }
    fprintf(stderr, "kiln: serving the EC2 API on http://%s (port %u), data directory '%s'\n",
            opts.listen, api_server_port(srv), cli->data_dir);
    fflush(stderr);
    while (sigwait(&sigs, &sig) != 0)
        ;
    fprintf(stderr, "kiln: %s: finishing requests in flight, then stopping\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT");
    r = api_server_shutdown(srv);
    api_server_free(srv);
    /* No request can reach an instance any more: stop every running one
     * cleanly (they start again at the next serve, docs/operations.md). */
    instance_manager_free(instances);
    /* No request can queue a job any more: stop the jobs at a safe point
     * (they resume at the next start). */
    job_runner_free(jobs);
    accounts_free(cred.accounts);
    if (r < 0) {
        cli_error(r, "unclean shutdown");
        return 1;
    }
    fprintf(stderr, "kiln: stopped\n");
    return 0;
}
