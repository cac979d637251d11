/* `kiln vm`: debugging verbs over the VM launcher (src/vm/), until
 * RunInstances drives it:
 *
 *   vm boot VOLUME     boot a volume under QEMU (serving it over NBD in
 *                      this process) until the guest powers off or a stop
 *                      signal arrives (then a clean power-off through QMP)
 *   vm agent SOCK ...  talk to a guest's kiln-agent
 *   vm qmp SOCK CMD    run a QMP command (status, powerdown, quit)
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "nbd/nbd.h"
#include "service/boot-watch.h"
#include "imds/imds.h"
#include "vm/vm.h"
#include "volume/volume.h"

static const char vm_usage[] =
    "usage: kiln vm boot VOLUME [--dir DIR] [--memory MIB] [--vcpus N]\n"
    "                           [--ssh ADDR:PORT] [--append ARGS] [--metadata FILE]\n"
    "                           [--egress] [--no-profile] [--prefetch-threads N]\n"
    "                           [--record-seconds N]\n"
    "       kiln vm agent SOCKET hello|exec CMD [ARG...]|put LOCAL REMOTE [MODE]|\n"
    "                            get REMOTE LOCAL|sync|freeze MOUNT|thaw MOUNT|\n"
    "                            poweroff|reboot   [--timeout SECONDS] [--stdin FILE]\n"
    "       kiln vm qmp SOCKET status|powerdown|quit\n"
    "\n"
    "Debugging verbs over the VM launcher (docs/vm.md).\n"
    "\n"
    "`vm boot` copies the kernel and initrd out of the volume's own file system,\n"
    "serves the volume over NBD from this process and runs QEMU on it until the\n"
    "guest powers off, or until SIGTERM or SIGINT (then QMP system_powerdown, and\n"
    "quit after 30 s).  The instance directory (default DATA/vm/VOLUME) holds\n"
    "console.log, qmp.sock, agent.sock, nbd.sock, qemu.pid and qemu.log.\n"
    "KILN_ACCEL=tcg|kvm overrides the accelerator probe.\n"
    "\n"
    "A volume made from a snapshot boots with that snapshot's boot profile\n"
    "(DATA/regions/R/profiles/SNAP.profile): its chunks are prefetched in\n"
    "parallel.  Without one, this boot's first reads are recorded into it until\n"
    "the agent's hello (or --record-seconds).  At the hello, DIR/boot-stats gets\n"
    "the time since start and the volume's counters (docs/operations.md).\n"
    "\n"
    "  --dir DIR         the instance directory\n"
    "  --memory MIB      guest memory (default 256)\n"
    "  --vcpus N         virtual CPUs (default 1)\n"
    "  --ssh ADDR:PORT   forward a loopback address and port to the guest's port 22\n"
    "  --append ARGS     extra kernel arguments\n"
    "  --metadata FILE   serve this instance metadata (the DIR/imds.instance form,\n"
    "                    docs/imds.md) at 169.254.169.254; without it the address\n"
    "                    is still caught and answers nothing\n"
    "  --egress          let the guest open connections out (restrict=off); without\n"
    "                    it only the metadata address and forwards work (docs/imds.md)\n"
    "  --no-profile      neither prefetch nor record a boot profile\n"
    "  --prefetch-threads N  threads that prefetch the profile (default 4, max 16)\n"
    "  --record-seconds N    record the profile at most N s (default 300)\n"
    "\n"
    "`vm agent` connects to a guest's agent socket and waits (--timeout, default\n"
    "120 s) for its hello; `exec` passes the command's stdout and stderr through\n"
    "and exits with its status (its stdin is FILE with --stdin, else /dev/null);\n"
    "`put` writes a file durably (mode default 0644).\n";

/* ---- boot ---- */

struct boot_args {
    const char *dir;
    const char *append;
    const char *ssh;
    const char *metadata;
    bool egress, no_profile;
    unsigned memory, vcpus, prefetch_threads, record_seconds;
    char **pos;
};

enum {
    OPT_DIR = 1000,
    OPT_MEMORY,
    OPT_VCPUS,
    OPT_SSH,
    OPT_APPEND,
    OPT_METADATA,
    OPT_EGRESS,
    OPT_NO_PROFILE,
    OPT_PREFETCH_THREADS,
    OPT_RECORD_SECONDS,
};

static int parse_uint(const char *s, unsigned max, unsigned *ret)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v == 0 || v > max)
        return -EINVAL;
    *ret = (unsigned)v;
    return 0;
}

static int boot_option(int opt, const char *arg, void *ud)
{
    struct boot_args *a = ud;

    switch (opt) {
    case OPT_DIR:
        a->dir = arg;
        return -1;
    case OPT_APPEND:
        a->append = arg;
        return -1;
    case OPT_SSH:
        a->ssh = arg;
        return -1;
    case OPT_METADATA:
        a->metadata = arg;
        return -1;
    case OPT_EGRESS:
        a->egress = true;
        return -1;
    case OPT_NO_PROFILE:
        a->no_profile = true;
        return -1;
    case OPT_PREFETCH_THREADS:
        if (parse_uint(arg, 16, &a->prefetch_threads) < 0) {
            fprintf(stderr, "kiln: --prefetch-threads '%s': expected 1 to 16\n", arg);
            return EXIT_USAGE;
        }
        return -1;
    case OPT_RECORD_SECONDS:
        if (parse_uint(arg, 86400, &a->record_seconds) < 0) {
            fprintf(stderr, "kiln: --record-seconds '%s': expected 1 to 86400\n", arg);
            return EXIT_USAGE;
        }
        return -1;
    case OPT_MEMORY:
        if (parse_uint(arg, 1U << 20, &a->memory) < 0 || a->memory < 64) {
            fprintf(stderr, "kiln: --memory '%s': expected MiB from 64 to 1048576\n", arg);
            return EXIT_USAGE;
        }
        return -1;
    case OPT_VCPUS:
        if (parse_uint(arg, 64, &a->vcpus) < 0) {
            fprintf(stderr, "kiln: --vcpus '%s': expected 1 to 64\n", arg);
            return EXIT_USAGE;
        }
        return -1;
    }
    return EXIT_USAGE;
}

static int volume_reader(void *ud, void *buf, size_t len, uint64_t off)
{
    return volume_read(ud, buf, len, off);
}

/* Wait for QEMU to exit, or for a stop signal: then power the guest off
 * through QMP (quit if it does not go within 30 s). */
static int supervise(struct vm *vm, const char *qmp_path, const sigset_t *sigs, int *ret_status)
{
    struct timespec tick = { 0, 200 * 1000000L };
    bool stopping = false;
    uint64_t quit_at = 0;

    for (;;) {
        if (vm_wait(vm, 0, ret_status) == 0)
            return 0;
        int sig = sigtimedwait(sigs, NULL, &tick);
        if (sig > 0 && !stopping) {
            _cleanup_(qmp_freep) struct qmp *q = NULL;
            fprintf(stderr, "kiln: %s: powering the guest off\n",
                    sig == SIGTERM ? "SIGTERM" : "SIGINT");
            stopping = true;
            quit_at = now_ns() + 30000000000ULL;
            int e = qmp_connect(qmp_path, 5000, &q);
            if (e >= 0)
                e = qmp_execute(q, "system_powerdown", 5000, NULL);
            if (e < 0) {
                cli_fail(e);
                quit_at = 0;
            }
        }
        if (stopping && now_ns() >= quit_at) {
            _cleanup_(qmp_freep) struct qmp *q = NULL;
            fprintf(stderr, "kiln: the guest did not power off: quitting QEMU\n");
            if (qmp_connect(qmp_path, 5000, &q) < 0 || qmp_execute(q, "quit", 5000, NULL) < 0)
                vm_kill(vm);
            quit_at = UINT64_MAX;
        }
    }
}

/* Start the boot profile's prefetch, or its recording (boot-watch.h). */
static void boot_profile_start(struct region *r, const char *id, struct volume *v,
                               const struct boot_args *a)
{
    struct volume_boot_options o = {
        .threads = a->prefetch_threads,
        .record_seconds = a->record_seconds,
    };

    if (a->no_profile)
        return;
    if (service_boot_profile_start(r, id, v, &o) < 0)
        fprintf(stderr, "kiln: warning: no boot profile: %s\n", error_message());
}

static int read_local(const char *path, char **ret, size_t *ret_len);

static int do_boot(struct cli *cli, int argc, char **argv)
{
    static const struct option options[] = {
        CLI_COMMON_OPTIONS,
        { "dir", required_argument, NULL, OPT_DIR },
        { "memory", required_argument, NULL, OPT_MEMORY },
        { "vcpus", required_argument, NULL, OPT_VCPUS },
        { "ssh", required_argument, NULL, OPT_SSH },
        { "append", required_argument, NULL, OPT_APPEND },
        { "metadata", required_argument, NULL, OPT_METADATA },
        { "egress", no_argument, NULL, OPT_EGRESS },
        { "no-profile", no_argument, NULL, OPT_NO_PROFILE },
        { "prefetch-threads", required_argument, NULL, OPT_PREFETCH_THREADS },
        { "record-seconds", required_argument, NULL, OPT_RECORD_SECONDS },
        { NULL, 0, NULL, 0 },
    };
    struct boot_args a = { 0 };
    _cleanup_(region_freep) struct region *r = NULL;
    _cleanup_free_ char *dir = NULL, *nbd_sock = NULL, *kernel = NULL, *initrd = NULL;
    _cleanup_free_ char *qmp = NULL, *ssh_addr = NULL, *netdev = NULL, *absdir = NULL;
    _cleanup_free_ char *agent_sock = NULL;
    struct volume *v = NULL;
    struct nbd_backend be;
    struct nbd_server *srv = NULL;
    struct vm *vm = NULL;
    struct vm_config c = { 0 };
    struct boot_watch *w = NULL;
    _cleanup_(imds_instance_release) struct imds_instance md = { 0 };
    enum vm_accel accel;
    bool has_initrd = false;
    char uuid[37];
    sigset_t sigs;
    int e, ex, status = 0;

    ex = cli_parse(cli, argc, argv, options, vm_usage, "dir memory vcpus ssh append metadata egress no-profile prefetch-threads record-seconds", 1,
                   boot_option, &a, &a.pos);
    if (ex >= 0)
        return ex;
    const char *id = a.pos[0];
    uint64_t start_ns = now_ns();
    /* the boot watcher's lines (the profile, the hello) are info */
    if (!cli->quiet && log_get_level() < LOG_INFO)
        log_set_level(LOG_INFO);
    if (a.metadata) {
        _cleanup_free_ char *text = NULL;
        size_t tlen;
        e = read_local(a.metadata, &text, &tlen);
        if (e >= 0)
            e = imds_instance_parse(text, tlen, &md);
        if (e < 0) {
            cli_error(e, "cannot read the metadata '%s'", a.metadata);
            return 1;
        }
    }
    if (a.ssh) {
        const char *colon = strrchr(a.ssh, ':');
        if (!colon || parse_uint(colon + 1, 65535, &c.ssh_port) < 0) {
            fprintf(stderr, "kiln: --ssh '%s': expected 127.X.Y.Z:PORT\n", a.ssh);
            return EXIT_USAGE;
        }
        ssh_addr = xasprintf("%.*s", (int)(colon - a.ssh), a.ssh);
        c.ssh_address = ssh_addr;
    }
    e = cli_open_region(cli, &r);
    if (e == 0)
        e = service_volume_open(r, id, 0, &v);
    if (e < 0) {
        cli_error(e, "cannot boot '%s'", id);
        return 1;
    }
    boot_profile_start(r, id, v, &a);
    dir = a.dir ? xstrdup(a.dir) : xasprintf("%s/vm/%s", cli->data_dir, id);
    e = mkdir_p(dir);
    if (e < 0) {
        volume_close(v);
        cli_error(e, "cannot create '%s'", dir);
        return 1;
    }
    struct vm_disk disk = { volume_reader, v, volume_size(v) };
    e = vm_boot_files_extract(&disk, dir, &has_initrd);
    if (e < 0) {
        volume_close(v);
        cli_error(e, "cannot boot '%s'", id);
        return 1;
    }
    struct volume_stats files;
    volume_stats(v, &files);
    /* the metadata network (docs/imds.md): always, so that the guest
     * never reaches the host's 169.254.169.254 */
    absdir = realpath(dir, NULL);
    if (!absdir) {
        volume_close(v);
        cli_error(-errno, "cannot resolve '%s'", dir);
        return 1;
    }
    if (a.metadata) {
        e = imds_instance_install(absdir, &md, NULL, a.egress ? IMDS_NET_EGRESS : 0, &netdev);
    } else {
        e = imds_instance_uninstall(absdir);
        if (e >= 0)
            e = imds_netdev_options(absdir, NULL, a.egress ? IMDS_NET_EGRESS : 0, &netdev);
    }
    if (e < 0) {
        volume_close(v);
        cli_error(e, "cannot set up the metadata service for '%s'", id);
        return 1;
    }
    kernel = xasprintf("%s/vmlinuz", dir);
    initrd = xasprintf("%s/initrd.img", dir);
    e = vm_accel_detect(cli->data_dir, kernel, has_initrd ? initrd : NULL, 15000, &accel);
    if (e < 0) {
        volume_close(v);
        cli_error(e, "cannot choose an accelerator");
        return 1;
    }

    /* Stop signals are taken by sigtimedwait() in supervise(); the NBD
     * server's threads inherit the blocked mask. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    nbd_sock = xasprintf("%s/nbd.sock", dir);
    struct nbd_server_options o = {
        .export_name = id,
        .description = "kiln volume",
        .socket_path = nbd_sock,
    };
    nbd_volume_backend_new(v, false, &be);
    e = nbd_server_new(&o, &be, &srv);
    if (e < 0) {
        cli_error(e, "cannot serve '%s'", id);
        return 1;
    }
    vm_uuid_generate(uuid);
    c.dir = dir;
    c.nbd_socket = nbd_sock;
    c.kernel = kernel;
    c.initrd = has_initrd ? initrd : NULL;
    c.append = a.append;
    c.uuid = uuid;
    c.vcpus = a.vcpus;
    c.memory_mib = a.memory;
    c.accel = accel;
    c.netdev_extra = netdev;
    e = vm_start(&c, &vm);
    if (e < 0) {
        cli_error(e, "cannot start QEMU");
        nbd_server_free(srv);
        return 1;
    }
    qmp = xasprintf("%s/qmp.sock", dir);
    agent_sock = xasprintf("%s/agent.sock", dir);
    if (service_boot_watch_new(v, dir, agent_sock, start_ns, &files, &w) < 0)
        fprintf(stderr, "kiln: warning: no boot stats: %s\n", error_message());
    fprintf(stderr,
            "kiln: booting '%s' (q35, %s, uuid %s), qemu pid %d\n"
            "kiln: console %s/console.log\n"
            "kiln: agent %s/agent.sock\n"
            "kiln: qmp %s\n",
            id, vm_accel_name(accel), uuid, (int)vm_pid(vm), dir, dir, qmp);
    fflush(stderr);
    supervise(vm, qmp, &sigs, &status);
    vm_free(vm);
    service_boot_watch_free(w); /* before the volume closes */
    e = nbd_server_shutdown(srv); /* flushes the volume */
    nbd_server_free(srv);         /* closes it */
    if (e < 0) {
        cli_error(e, "unclean shutdown: the last writes may not be durable");
        return 1;
    }
    if (WIFEXITED(status)) {
        fprintf(stderr, "kiln: qemu exited with status %d\n", WEXITSTATUS(status));
        return WEXITSTATUS(status) == 0 ? 0 : 1;
    }
    fprintf(stderr, "kiln: qemu was killed by signal %d\n", WTERMSIG(status));
    return 1;
}

/* ---- agent ---- */

static int read_local(const char *path, char **ret, size_t *ret_len)
{
    return read_file_all(path, 1ULL << 30, ret, ret_len);
}

static int write_local(const char *path, const void *data, size_t len)
{
    _cleanup_free_ char *tmp = xasprintf("%s.tmp", path);
    FILE *f = fopen(tmp, "we");

    if (!f)
        return error_set(errno, "cannot create '%s': %m", tmp);
    if (fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        unlink(tmp);
        return error_set(EIO, "cannot write '%s'", tmp);
    }
    if (rename(tmp, path) < 0)
        return error_set(errno, "cannot rename '%s': %m", tmp);
    return 0;
}

static int do_agent(struct cli *cli, int argc, char **argv)
{
    _cleanup_(agent_client_freep) struct agent_client *ac = NULL;
    _cleanup_free_ char *desc = NULL;
    int timeout_ms = 120000, e, n = 0;
    const char *stdin_path = NULL;
    char *pos[260];

    /* Manual parsing: exec's arguments are the guest's, options and all. */
    for (int i = 1; i < argc; i++) {
        if (n <= 2 && strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            unsigned s;
            if (parse_uint(argv[++i], 86400, &s) < 0) {
                fprintf(stderr, "kiln: --timeout '%s': expected seconds\n", argv[i]);
                return EXIT_USAGE;
            }
            timeout_ms = (int)s * 1000;
        } else if (n <= 2 && strcmp(argv[i], "--stdin") == 0 && i + 1 < argc) {
            stdin_path = argv[++i];
        } else if (n < (int)ARRAY_SIZE(pos) - 1) {
            pos[n++] = argv[i];
        } else {
            fprintf(stderr, "kiln: too many arguments\n");
            return EXIT_USAGE;
        }
    }
    pos[n] = NULL;
    if (n < 2) {
        fputs(vm_usage, stderr);
        return EXIT_USAGE;
    }
    const char *verb = pos[1];
    static const struct {
        const char *name;
        int min, max;
    } shapes[] = {
        { "hello", 0, 0 }, { "exec", 1, 256 }, { "put", 2, 3 },    { "get", 2, 2 },
        { "sync", 0, 0 },  { "freeze", 1, 1 }, { "thaw", 1, 1 },   { "poweroff", 0, 0 },
        { "reboot", 0, 0 },
    };
    size_t k;
    for (k = 0; k < ARRAY_SIZE(shapes); k++)
        if (strcmp(verb, shapes[k].name) == 0)
            break;
    if (k == ARRAY_SIZE(shapes) || n - 2 < shapes[k].min || n - 2 > shapes[k].max) {
        fprintf(stderr, "kiln: vm agent: bad verb or arguments '%s'\n\n%s", verb, vm_usage);
        return EXIT_USAGE;
    }
    unsigned mode = 0644;
    if (strcmp(verb, "put") == 0 && n == 5) {
        char *end;
        unsigned long m = strtoul(pos[4], &end, 8);
        if (*end || end == pos[4] || m > 07777) {
            fprintf(stderr, "kiln: mode '%s': expected octal, at most 7777\n", pos[4]);
            return EXIT_USAGE;
        }
        mode = (unsigned)m;
    }
    e = agent_client_connect(pos[0], timeout_ms, &ac, &desc);
    if (e < 0) {
        cli_fail(e);
        return 1;
    }
    if (strcmp(verb, "hello") == 0) {
        printf("%s\n", desc);
    } else if (strcmp(verb, "exec") == 0) {
        struct agent_exec_result res;
        _cleanup_free_ char *in = NULL;
        size_t in_len = 0;
        e = stdin_path ? read_local(stdin_path, &in, &in_len) : 0;
        if (e >= 0)
            e = agent_client_exec(ac, pos + 2, stdin_path ? (in ? in : "") : NULL, in_len,
                                  timeout_ms, &res);
        if (e < 0) {
            cli_fail(e);
            return 1;
        }
        fwrite(res.out, 1, res.out_len, stdout);
        fwrite(res.err, 1, res.err_len, stderr);
        int code = res.signaled ? 128 + res.code : res.code;
        agent_exec_result_release(&res);
        return code;
    } else if (strcmp(verb, "put") == 0) {
        _cleanup_free_ char *data = NULL;
        size_t len = 0;
        e = read_local(pos[2], &data, &len);
        if (e >= 0)
            e = agent_client_put(ac, pos[3], mode, data, len, true, timeout_ms);
    } else if (strcmp(verb, "get") == 0) {
        _cleanup_free_ void *data = NULL;
        size_t len = 0;
        e = agent_client_get(ac, pos[2], timeout_ms, &data, &len, NULL);
        if (e >= 0)
            e = write_local(pos[3], data, len);
    } else if (strcmp(verb, "sync") == 0) {
        e = agent_client_sync(ac, timeout_ms);
    } else if (strcmp(verb, "freeze") == 0 || strcmp(verb, "thaw") == 0) {
        e = agent_client_freeze(ac, pos[2], verb[0] == 'f', timeout_ms);
    } else {
        e = agent_client_shutdown(ac, strcmp(verb, "reboot") == 0, timeout_ms);
    }
    if (e < 0) {
        cli_fail(e);
        return 1;
    }
    return 0;
}

/* ---- qmp ---- */

static int do_qmp(struct cli *cli, int argc, char **argv)
{
    _cleanup_(qmp_freep) struct qmp *q = NULL;
    struct qmp_message m = { 0 };
    const char *cmd;
    int e;

    if (argc != 3) {
        fputs(vm_usage, stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[2], "status") == 0)
        cmd = "query-status";
    else if (strcmp(argv[2], "powerdown") == 0)
        cmd = "system_powerdown";
    else if (strcmp(argv[2], "quit") == 0)
        cmd = "quit";
    else {
        fprintf(stderr, "kiln: vm qmp: unknown command '%s'\n\n%s", argv[2], vm_usage);
        return EXIT_USAGE;
    }
    e = qmp_connect(argv[1], 10000, &q);
    if (e >= 0)
        e = qmp_execute(q, cmd, 10000, &m);
    if (e < 0) {
        cli_fail(e);
        return 1;
    }
    if (m.status)
        printf("%s\n", m.status);
    qmp_message_release(&m);
    return 0;
}

int cmd_vm(struct cli *cli, int argc, char **argv)
{
    static const struct cli_verb verbs[] = {
        { "boot", do_boot },
        { "agent", do_agent },
        { "qmp", do_qmp },
    };

    return cli_dispatch(cli, argc, argv, "vm", verbs, ARRAY_SIZE(verbs), vm_usage);
}
