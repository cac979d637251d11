/* The instance manager (instances.h): launching, supervising, stopping,
 * starting, rebooting and terminating instances as QEMU guests, in the
 * `kiln serve` process.
 *
 * Design notes.
 *
 * - Registration before running.  RunInstances registers every new
 *   instance `pending`, with its root volume created, attached and tagged,
 *   in ONE registry transaction; only then do the guests start.  A failure
 *   before the commit leaves no row (a volume directory made meanwhile has
 *   no row and is removed by gc's orphan sweep).
 *
 * - One thread per live instance.  The thread owns the running parts: it
 *   opens the root volume (this process holds its directory lock), serves
 *   it over NBD on DIR/nbd.sock, extracts the kernel, installs the metadata
 *   files, runs QEMU, then waits for QEMU to exit or for a request (stop,
 *   force stop, terminate, daemon stop), and tears down in the one order
 *   that keeps the data: QEMU gone, NBD server shut down (the volume
 *   flushed), volume closed; only then is the new state recorded.  A QEMU
 *   exit nobody asked for is recorded as `stopped` with
 *   Client.InstanceInitiatedShutdown (exit status 0: the guest powered off)
 *   or Server.InternalError (a crash or a kill).
 *
 * - Locks.  m->lock guards the instance list, the requests and the
 *   capacity counters (held briefly, never while waiting for anything
 *   else).  Each region's registry handle is used under its reg_lock.  An
 *   instance's hold lock is taken by hooks (instances.h) and by every
 *   state change of that instance; order: hold, then reg_lock.  Nothing
 *   takes m->lock while holding reg_lock... except through inst_find(),
 *   which takes m->lock alone and releases it before anything else.
 *
 * - Restart policy (instance_manager_new): see instances.h and
 *   docs/operations.md.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/log.h"
#include "common/util.h"
#include "imds/imds.h"
#include "nbd/nbd.h"
#include "registry/images.h"
#include "registry/jobs.h"
#include "registry/volumes.h"
#include "service/boot-watch.h"
#include "service/instance-types.h"
#include "service/instances.h"
#include "service/service.h"
#include "vm/vm.h"
#include "volume/volume.h"

#define STOP_TIMEOUT_MS 60000 /* ACPI power-off, then quit */
#define QMP_TIMEOUT_MS 5000
#define POLL_MS 200
#define ACCEL_PROBE_TIMEOUT_MS 15000
/* The instance's metadata as written at launch (the imds.instance form):
 * every boot installs it for the metadata service with a fresh key, and
 * the teardown removes what it installed, not this. */
#define METADATA_FILE "metadata"
#define GUEST_PRIVATE_IP "169.254.0.15" /* slirp's first DHCP address (imds.h) */

enum request {
    REQ_NONE,
    REQ_STOP,       /* StopInstances */
    REQ_FORCE_STOP, /* StopInstances Force=true */
    REQ_DAEMON,     /* kiln serve is stopping */
    REQ_TERMINATE,  /* TerminateInstances */
};

struct mregion {
    char *name;
    struct region *r;
    pthread_mutex_t reg_lock;
};

struct inst {
    struct instance_manager *m;
    struct mregion *rg;
    char id[ID_MAX_SIZE];
    char root_volume_id[ID_MAX_SIZE];
    char *dir;
    pthread_mutex_t hold;
    /* under m->lock */
    enum request req;
    bool thread_live; /* a thread runs (or has not been joined yet) */
    bool thread_done; /* it has finished: join it */
    pthread_t thread;
    unsigned vcpus, memory_mib; /* counted in the capacity while thread_live */
    /* under hold */
    struct volume *root; /* borrowed from the NBD backend */
    bool qemu_running;
    int addr_fd; /* the host-wide lock of its address, or -1 (address_lock()) */
    struct inst *next;
};

struct instance_manager {
    char *data_dir;
    char *kiln;
    struct mregion *regions;
    size_t n_regions;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct inst *list;
    unsigned used_vcpus;
    uint64_t used_memory_mib;
    struct host_capacity host;
    int64_t retention_ms; /* terminated instances vanish after it */
    instance_recovery_fn recovery;
    void *recovery_ud;
};

static struct instance_manager *the_manager;

struct instance_manager *instance_manager_get(void)
{
    return __atomic_load_n(&the_manager, __ATOMIC_ACQUIRE);
}

/* Wall-clock unix milliseconds (launch times; now_ns() is monotonic). */
static struct mregion *region_find(struct instance_manager *m, const char *name)
{
    for (size_t i = 0; i < m->n_regions; i++)
        if (strcmp(m->regions[i].name, name) == 0)
            return &m->regions[i];
    return NULL;
}

char *instance_manager_dir(struct instance_manager *m, const char *region, const char *instance_id)
{
    return xasprintf("%s/regions/%s/instances/%s", m->data_dir, region, instance_id);
}

/* The list entry of an instance, made on first use.  Entries live as long
 * as the manager. */
static struct inst *inst_find(struct instance_manager *m, struct mregion *rg, const char *id)
{
    struct inst *in;

    pthread_mutex_lock(&m->lock);
    for (in = m->list; in; in = in->next)
        if (in->rg == rg && strcmp(in->id, id) == 0)
            break;
    if (!in) {
        in = xcalloc(1, sizeof(*in));
        in->m = m;
        in->rg = rg;
        snprintf(in->id, sizeof(in->id), "%s", id);
        in->dir = instance_manager_dir(m, rg->name, id);
        in->addr_fd = -1;
        pthread_mutex_init(&in->hold, NULL);
        in->next = m->list;
        m->list = in;
    }
    pthread_mutex_unlock(&m->lock);
    return in;
}

static int row_get(struct mregion *rg, const char *id, struct registry_instance **ret)
{
    pthread_mutex_lock(&rg->reg_lock);
    int e = registry_instance_get(rg->r->reg, id, ret);
    pthread_mutex_unlock(&rg->reg_lock);
    if (e == -ENOENT)
        return error_set(ENOENT, "instance '%s' does not exist in region '%s'", id, rg->name);
    return e;
}

static int set_state(struct mregion *rg, const char *id, enum instance_state s, const char *code,
                     const char *message)
{
    pthread_mutex_lock(&rg->reg_lock);
    int e = registry_instance_set_state(rg->r->reg, id, s, code ? code : "", message ? message : "",
                                        NULL);
    pthread_mutex_unlock(&rg->reg_lock);
    if (e < 0)
        log_error("cannot record instance '%s' %s: %s", id, instance_state_to_string(s),
                  error_message() ? error_message() : strerror(-e));
    return e;
}

/* ---- host-wide address locks ----
 *
 * The registry makes an instance's loopback address unique within its
 * region; QEMU binds it (port 22) on the host, which other regions and
 * other data directories share.  So each address is also locked host-wide:
 * an flock on KILN_ADDRESS_LOCK_DIR/<address>.lock (default
 * /tmp/kiln-instance-addresses), held by the serve that runs the instance
 * from its launch (or its first start in this serve) until it is
 * terminated or the serve exits.  A launch skips addresses locked by
 * anyone or bound by anything else. */

static char *address_lock_path(const char *addr)
{
    const char *dir = getenv("KILN_ADDRESS_LOCK_DIR");

    return xasprintf("%s/%s.lock", dir && *dir ? dir : "/tmp/kiln-instance-addresses", addr);
}

/* Lock `addr`: the descriptor, or -EADDRINUSE when another holds it. */
static int address_lock(const char *addr, int *ret_fd)
{
    _cleanup_free_ char *path = address_lock_path(addr);
    char *slash = strrchr(path, '/');
    int fd, e;

    *slash = '\0';
    e = mkdir_p(path);
    if (e >= 0)
        chmod(path, 01777); /* shared by every user's kiln */
    *slash = '/';
    if (e < 0)
        return error_set(e, "cannot create the directory of '%s': %s", path, strerror(-e));
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
        return error_set(errno, "cannot open '%s': %m", path);
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        e = errno;
        close(fd);
        if (e == EWOULDBLOCK)
            return error_set(EADDRINUSE, "address %s is used by another kiln on this host", addr);
        return error_set(e, "cannot lock '%s': %s", path, strerror(e));
    }
    *ret_fd = fd;
    return 0;
}

/* Whether something binds addr:22 already (a QEMU of an older kiln, an
 * sshd).  Without the right to bind port 22 nothing can be told: false. */
static bool address_bound(const char *addr)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(22)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool bound = false;

    if (fd < 0)
        return false;
    if (inet_pton(AF_INET, addr, &sa.sin_addr) == 1 &&
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno == EADDRINUSE)
        bound = true;
    close(fd);
    return bound;
}

static void address_unlock(struct inst *in)
{
    if (in->addr_fd >= 0) {
        close(in->addr_fd);
        in->addr_fd = -1;
    }
}

/* The lowest address 127.100.x.y that no instance of the region outside
 * `terminated` holds and no one on the host holds or binds, locked
 * (*ret_fd).  Inside the inserting transaction. */
static int address_allocate(struct registry *reg, char ret[INSTANCE_ADDRESS_SIZE], int *ret_fd)
{
    struct registry_instance **rows = NULL;
    size_t n = 0;
    int e = registry_instance_list(reg, &rows, &n);

    if (e < 0)
        return e;
    e = -ENOSPC;
    for (unsigned x = 0; x <= 255 && e == -ENOSPC; x++)
        for (unsigned y = 2; y <= 254 && e == -ENOSPC; y++) {
            char a[INSTANCE_ADDRESS_SIZE];
            bool taken = false;
            int fd;
            snprintf(a, sizeof(a), "%d.%d.%u.%u", INSTANCE_ADDRESS_FIRST_OCTET,
                     INSTANCE_ADDRESS_SECOND_OCTET, x, y);
            for (size_t i = 0; i < n && !taken; i++)
                taken = rows[i]->state != INSTANCE_TERMINATED && strcmp(rows[i]->address, a) == 0;
            if (taken)
                continue;
            int l = address_lock(a, &fd);
            if (l == -EADDRINUSE)
                continue;
            if (l < 0) {
                e = l;
                break;
            }
            if (address_bound(a)) {
                close(fd);
                continue;
            }
            memcpy(ret, a, sizeof(a));
            *ret_fd = fd;
            e = 0;
        }
    registry_instance_list_free(rows, n);
    if (e == -ENOSPC)
        return error_set(ENOSPC, "every instance address 127.%d.0-255.2-254 is taken",
                         INSTANCE_ADDRESS_SECOND_OCTET);
    return e;
}

/* ---- terminate's end: the root volume, the directory ---- */

/* Remove what a terminated instance's directory holds but console.log
 * (GetConsoleOutput answers until the row goes); with `all`, console.log
 * and the directory too.  QEMU is gone.  Best effort: what stays is
 * logged and removed by the next try (expiry, a later serve). */
static void dir_clear(const char *dir, bool all)
{
    DIR *d = opendir(dir);
    struct dirent *de;

    if (!d) {
        if (errno != ENOENT)
            log_warning("cannot open instance directory '%s': %s", dir, strerror(errno));
        return;
    }
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (!all && strcmp(de->d_name, "console.log") == 0)
            continue;
        if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
            log_warning("cannot remove '%s/%s': %s", dir, de->d_name, strerror(errno));
    }
    closedir(d);
    if (all && rmdir(dir) < 0 && errno != ENOENT)
        log_warning("cannot remove instance directory '%s': %s", dir, strerror(errno));
}

/* Detach the root volume, delete it when DeleteOnTermination, and record
 * `terminated`, in one transaction (under reg_lock); then clear the
 * instance directory but its console.log (QEMU is gone: every caller
 * has torn it down or found it dead). */
static int finish_terminate(struct instance_manager *m, struct mregion *rg,
                            const struct registry_instance *row)
{
    struct registry *reg = rg->r->reg;
    int e;

    pthread_mutex_lock(&rg->reg_lock);
    e = registry_begin(reg);
    if (e >= 0) {
        if (row->root_volume_id[0]) {
            struct registry_volume *v = NULL;
            int g = registry_volume_get(reg, row->root_volume_id, &v);
            if (g == 0 && strcmp(v->instance_id, row->id) == 0) {
                v->instance_id[0] = '\0';
                v->device[0] = '\0';
                v->attach_time = 0;
                v->state = VOLUME_AVAILABLE;
                e = registry_volume_update(reg, v);
                if (e >= 0 && row->root_delete_on_termination)
                    e = service_volume_delete(rg->r, row->root_volume_id);
            } else if (g < 0 && g != -ENOENT) {
                e = g;
            }
            registry_volume_free(v);
        }
        if (e >= 0)
            e = registry_instance_set_state(
                reg, row->id, INSTANCE_TERMINATED, "Client.UserInitiatedShutdown",
                "Client.UserInitiatedShutdown: User initiated shutdown", NULL);
        e = registry_end(reg, e);
    }
    pthread_mutex_unlock(&rg->reg_lock);
    if (e < 0)
        log_error("cannot terminate instance '%s': %s", row->id,
                  error_message() ? error_message() : strerror(-e));
    else {
        _cleanup_free_ char *dir = instance_manager_dir(m, rg->name, row->id);
        log_info("instance %s terminated (root volume %s %s)", row->id, row->root_volume_id,
                 row->root_delete_on_termination ? "deleted" : "kept");
        dir_clear(dir, false);
    }
    return e;
}

/* ---- the instance thread ---- */

static int volume_reader(void *ud, void *buf, size_t len, uint64_t off)
{
    return volume_read(ud, buf, len, off);
}

/* A whole file of at most `max` bytes, read to its end (files of /proc
 * report no size), NUL-terminated. */
static int read_small_file(const char *path, size_t max, char **ret, size_t *ret_len)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t len = 0, cap = 4096;
    char *buf;

    if (fd < 0)
        return error_set(errno, "cannot open '%s': %m", path);
    buf = xmalloc(cap + 1);
    for (;;) {
        if (len == cap) {
            if (cap > max) {
                free(buf);
                return error_set(EFBIG, "'%s' is larger than %zu bytes", path, max);
            }
            cap *= 2;
            buf = xrealloc(buf, cap + 1);
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            return error_set(e, "cannot read '%s': %s", path, strerror(e));
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (len > max) {
        free(buf);
        return error_set(EFBIG, "'%s' is larger than %zu bytes", path, max);
    }
    buf[len] = '\0';
    *ret = buf;
    *ret_len = len;
    return 0;
}

/* dir/name written durably: temporary file, fsync, rename, directory
 * fsync. */
static int write_durably(const char *dir, const char *name, const char *data, size_t len)
{
    _cleanup_free_ char *path = xasprintf("%s/%s", dir, name);
    _cleanup_free_ char *tmp = xasprintf("%s/.%s.tmp", dir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int e;

    if (fd < 0)
        return error_set(errno, "cannot create '%s': %m", tmp);
    e = write_all(fd, data, len, -1);
    if (e >= 0 && fsync(fd) < 0)
        e = -errno;
    close(fd);
    if (e >= 0 && rename(tmp, path) < 0)
        e = -errno;
    if (e < 0) {
        unlink(tmp);
        return error_set(e, "cannot write '%s': %s", path, strerror(-e));
    }
    return fsync_dir(dir);
}

/* The running parts of one boot. */
struct parts {
    struct nbd_server *nbd;
    struct vm *vm;
    struct boot_watch *watch; /* the agent's hello: boot profile, boot-stats */
};

/* Tear down in the order that keeps the data; returns the flush's result. */
static int parts_release(struct inst *in, struct parts *p)
{
    int e = 0;

    vm_free(p->vm);
    p->vm = NULL;
    service_boot_watch_free(p->watch); /* joined before the volume closes */
    p->watch = NULL;
    if (p->nbd) {
        e = nbd_server_shutdown(p->nbd);
        nbd_server_free(p->nbd); /* closes the volume */
        p->nbd = NULL;
    }
    in->root = NULL;
    in->qemu_running = false;
    imds_instance_uninstall(in->dir);
    return e;
}

/* Boot: called with in->hold held.  `start_ns` (now_ns()) is when the
 * instance's thread started: boot-stats' times count from it. */
/* Whether the instance's guest reaches the network beyond the metadata
 * service: only when tagged INSTANCE_TAG_EGRESS = "true", a tag the API
 * refuses to set (kiln: keys are kiln's), so only kiln's own launches (a
 * bake's build VM) get it (docs/vm.md, "Networking"). */
static bool instance_has_egress(struct region *r, const char *id)
{
    struct registry_tag *tags = NULL;
    size_t n = 0;
    bool yes = false;

    if (registry_tag_list(r->reg, id, &tags, &n) < 0) {
        error_clear();
        return false;
    }
    for (size_t i = 0; i < n; i++)
        yes = yes || (strcmp(tags[i].key, INSTANCE_TAG_EGRESS) == 0 &&
                      strcmp(tags[i].value, "true") == 0);
    registry_tag_list_free(tags, n);
    return yes;
}

static int boot(struct inst *in, const struct registry_instance *row, struct parts *p,
                uint64_t start_ns)
{
    struct instance_manager *m = in->m;
    _cleanup_free_ char *nbd_sock = xasprintf("%s/nbd.sock", in->dir);
    _cleanup_free_ char *kernel = xasprintf("%s/vmlinuz", in->dir);
    _cleanup_free_ char *initrd = xasprintf("%s/initrd.img", in->dir);
    _cleanup_free_ char *mdpath = xasprintf("%s/%s", in->dir, METADATA_FILE);
    _cleanup_free_ char *mdtext = NULL, *netdev = NULL;
    struct imds_instance md = {0};
    const struct instance_type *t = instance_type_find(row->instance_type);
    struct volume *v = NULL;
    struct nbd_backend be;
    struct vm_config c = {0};
    enum vm_accel accel;
    bool has_initrd = false;
    char uuid[37];
    size_t mdlen;
    int e;

    if (!t)
        return error_set(EINVAL, "instance type '%s' is unknown", row->instance_type);
    if (in->addr_fd < 0 && (e = address_lock(row->address, &in->addr_fd)) < 0)
        return e;
    e = mkdir_p(in->dir);
    if (e < 0)
        return error_set(e, "cannot create '%s': %s", in->dir, strerror(-e));
    pthread_mutex_lock(&in->rg->reg_lock);
    bool egress = instance_has_egress(in->rg->r, row->id);
    e = service_volume_open(in->rg->r, row->root_volume_id, 0, &v);
    /* the root snapshot's boot profile: prefetch it, or record this boot
     * into it until the agent's hello (before the volume is shared) */
    if (e >= 0 && service_boot_profile_start(in->rg->r, row->root_volume_id, v, NULL) < 0) {
        log_warning("instance %s: no boot profile: %s", in->id, error_message());
        error_clear();
    }
    pthread_mutex_unlock(&in->rg->reg_lock);
    if (e < 0)
        return e;
    struct vm_disk disk = {volume_reader, v, volume_size(v)};
    e = vm_boot_files_extract(&disk, in->dir, &has_initrd);
    if (e < 0) {
        volume_close(v);
        return e;
    }
    struct volume_stats files;
    volume_stats(v, &files);
    struct nbd_server_options o = {
        .export_name = row->root_volume_id,
        .description = "kiln instance root volume",
        .socket_path = nbd_sock,
    };
    nbd_volume_backend_new(v, false, &be);
    e = nbd_server_new(&o, &be, &p->nbd); /* owns v from here */
    if (e < 0)
        return e;
    in->root = v;
    e = read_small_file(mdpath, 1 << 20, &mdtext, &mdlen);
    if (e >= 0)
        e = imds_instance_parse(mdtext, mdlen, &md);
    if (e >= 0) {
        e = imds_instance_install(in->dir, &md, m->kiln, egress ? IMDS_NET_EGRESS : 0, &netdev);
        imds_instance_release(&md);
    }
    if (e >= 0)
        e = vm_accel_detect(m->data_dir, kernel, has_initrd ? initrd : NULL, ACCEL_PROBE_TIMEOUT_MS,
                            &accel);
    if (e < 0) {
        parts_release(in, p);
        return e;
    }
    vm_uuid_generate(uuid);
    c.dir = in->dir;
    c.nbd_socket = nbd_sock;
    c.kernel = kernel;
    c.initrd = has_initrd ? initrd : NULL;
    c.uuid = uuid;
    c.vcpus = t->vcpus;
    c.memory_mib = t->memory_mib;
    c.accel = accel;
    c.ssh_address = row->address;
    c.ssh_port = 22;
    c.qemu = getenv("KILN_QEMU");
    c.netdev_extra = netdev;
    e = vm_start(&c, &p->vm);
    if (e < 0) {
        parts_release(in, p);
        return e;
    }
    in->qemu_running = true;
    {
        _cleanup_free_ char *agent = xasprintf("%s/agent.sock", in->dir);
        if (service_boot_watch_new(v, in->dir, agent, start_ns, &files, &p->watch) < 0) {
            log_warning("instance %s: no boot stats: %s", in->id, error_message());
            error_clear();
        }
    }
    log_info("instance %s booting (%s, %u vCPU, %u MiB), qemu pid %d, ssh %s:22", in->id,
             vm_accel_name(accel), c.vcpus, c.memory_mib, (int)vm_pid(p->vm), row->address);
    return 0;
}

static int qmp_command(const char *dir, const char *command)
{
    _cleanup_(qmp_freep) struct qmp *q = NULL;
    _cleanup_free_ char *path = xasprintf("%s/qmp.sock", dir);
    int e = qmp_connect(path, QMP_TIMEOUT_MS, &q);

    if (e >= 0)
        e = qmp_execute(q, command, QMP_TIMEOUT_MS, NULL);
    return e;
}

static void capacity_release(struct inst *in)
{
    struct instance_manager *m = in->m;

    m->used_vcpus -= in->vcpus;
    m->used_memory_mib -= in->memory_mib;
    in->vcpus = in->memory_mib = 0;
}

static void *inst_thread(void *ud)
{
    struct inst *in = ud;
    struct instance_manager *m = in->m;
    struct registry_instance *row = NULL;
    struct parts p = {0};
    enum request asked = REQ_NONE;
    uint64_t quit_at = 0;
    bool quit_sent = false;
    int status = 0, e;
    uint64_t start_ns = now_ns();

    pthread_mutex_lock(&in->hold);
    e = row_get(in->rg, in->id, &row);
    if (e >= 0) {
        snprintf(in->root_volume_id, sizeof(in->root_volume_id), "%s", row->root_volume_id);
        e = boot(in, row, &p, start_ns);
    }
    if (e < 0) {
        const char *msg = error_message();
        _cleanup_free_ char *reason = xasprintf(
            "Server.InternalError: the instance could not boot: %s", msg ? msg : strerror(-e));
        log_error("instance %s: %s", in->id, reason);
        pthread_mutex_lock(&m->lock);
        asked = in->req;
        pthread_mutex_unlock(&m->lock);
        if (asked == REQ_TERMINATE && row) {
            if (finish_terminate(m, in->rg, row) >= 0)
                address_unlock(in);
        } else
            set_state(in->rg, in->id, INSTANCE_STOPPED, "Server.InternalError", reason);
        goto out;
    }
    pthread_mutex_lock(&m->lock);
    asked = in->req;
    pthread_mutex_unlock(&m->lock);
    if (asked == REQ_NONE)
        set_state(in->rg, in->id, INSTANCE_RUNNING, NULL, NULL);
    pthread_mutex_unlock(&in->hold);

    /* supervise */
    enum request acted = REQ_NONE;
    for (;;) {
        if (vm_wait(p.vm, 0, &status) == 0)
            break;
        pthread_mutex_lock(&m->lock);
        asked = in->req;
        if (asked == acted) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += POLL_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&m->cond, &m->lock, &ts);
            asked = in->req;
        }
        pthread_mutex_unlock(&m->lock);
        if (asked != acted) {
            acted = asked;
            if (asked == REQ_FORCE_STOP) {
                quit_at = now_ns();
            } else {
                e = qmp_command(in->dir, "system_powerdown");
                if (e < 0)
                    log_warning("instance %s: ACPI power-off failed: %s", in->id,
                                error_message() ? error_message() : strerror(-e));
                quit_at = now_ns() + (e < 0 ? 0 : (uint64_t)STOP_TIMEOUT_MS * 1000000ULL);
            }
        }
        if (acted != REQ_NONE && !quit_sent && now_ns() >= quit_at) {
            quit_sent = true;
            log_info("instance %s: quitting QEMU", in->id);
            if (qmp_command(in->dir, "quit") < 0)
                vm_kill(p.vm);
        }
    }

    /* the request is read under the hold lock: a request made after this
     * finds the thread done (below, still under the hold lock) and acts
     * on its own */
    pthread_mutex_lock(&in->hold);
    pthread_mutex_lock(&m->lock);
    asked = in->req;
    pthread_mutex_unlock(&m->lock);
    e = parts_release(in, &p);
    if (e < 0)
        log_error("instance %s: the root volume's last writes may not be durable: %s", in->id,
                  error_message() ? error_message() : strerror(-e));
    switch (asked) {
    case REQ_NONE:
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            log_info("instance %s: the guest powered off", in->id);
            set_state(in->rg, in->id, INSTANCE_STOPPED, "Client.InstanceInitiatedShutdown",
                      "Client.InstanceInitiatedShutdown: Instance initiated shutdown");
        } else {
            _cleanup_free_ char *msg =
                WIFSIGNALED(status)
                    ? xasprintf("Server.InternalError: QEMU was killed by signal %d",
                                WTERMSIG(status))
                    : xasprintf("Server.InternalError: QEMU exited with status %d",
                                WEXITSTATUS(status));
            log_warning("instance %s: %s", in->id, msg);
            set_state(in->rg, in->id, INSTANCE_STOPPED, "Server.InternalError", msg);
        }
        break;
    case REQ_STOP:
    case REQ_FORCE_STOP:
        set_state(in->rg, in->id, INSTANCE_STOPPED, "Client.UserInitiatedShutdown",
                  "Client.UserInitiatedShutdown: User initiated shutdown");
        break;
    case REQ_DAEMON:
        set_state(in->rg, in->id, INSTANCE_STOPPED, INSTANCE_REASON_DAEMON_STOPPED,
                  INSTANCE_REASON_DAEMON_STOPPED_MESSAGE);
        break;
    case REQ_TERMINATE:
        if (finish_terminate(m, in->rg, row) >= 0)
            address_unlock(in);
        break;
    }
out:
    registry_instance_free(row);
    pthread_mutex_lock(&m->lock);
    capacity_release(in);
    in->thread_done = true;
    in->req = REQ_NONE;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    pthread_mutex_unlock(&in->hold);
    return NULL;
}

/* Join a finished thread (m->lock held). */
static void reap_locked(struct inst *in)
{
    if (in->thread_live && in->thread_done) {
        pthread_join(in->thread, NULL);
        in->thread_live = false;
        in->thread_done = false;
    }
}

/* Reserve capacity for `count` instances of type t (m->lock held). */
static int reserve_locked(struct instance_manager *m, const struct instance_type *t, unsigned count)
{
    int e = instance_capacity_check(&m->host, m->used_vcpus, m->used_memory_mib, t, count);

    if (e < 0)
        return e;
    m->used_vcpus += t->vcpus * count;
    m->used_memory_mib += (uint64_t)t->memory_mib * count;
    return 0;
}

/* Start the thread of an instance whose row is pending; its capacity is
 * reserved already (given back here on failure).  m->lock held. */
static int spawn_locked(struct inst *in, const struct instance_type *t)
{
    int e;

    reap_locked(in);
    if (in->thread_live)
        return error_set(EBUSY, "instance '%s' is still stopping", in->id);
    in->vcpus = t->vcpus;
    in->memory_mib = t->memory_mib;
    in->req = REQ_NONE;
    in->thread_done = false;
    e = pthread_create(&in->thread, NULL, inst_thread, in);
    if (e != 0) {
        capacity_release(in);
        return error_set(e, "cannot start the thread of instance '%s': %s", in->id, strerror(e));
    }
    in->thread_live = true;
    return 0;
}

/* Wait until the instance's thread has finished (m->lock not held). */
static void wait_thread(struct inst *in)
{
    struct instance_manager *m = in->m;

    pthread_mutex_lock(&m->lock);
    while (in->thread_live && !in->thread_done)
        pthread_cond_wait(&m->cond, &m->lock);
    reap_locked(in);
    pthread_mutex_unlock(&m->lock);
}

/* ---- lifecycle ---- */

static int lookup(struct instance_manager *m, const char *region, const char *id,
                  struct mregion **ret_rg, struct inst **ret_in)
{
    struct mregion *rg;

    if (!m)
        return error_set(ENOTSUP, "no instance manager runs in this process");
    rg = region_find(m, region);
    if (!rg)
        return error_set(ENOENT, "region '%s' is not served", region);
    if (!id_is_valid("i", id))
        return error_set(EINVAL, "'%s' is not an instance id", id);
    *ret_rg = rg;
    *ret_in = inst_find(m, rg, id);
    return 0;
}

int instance_manager_start(struct instance_manager *m, const char *region, const char *instance_id)
{
    _cleanup_(registry_instance_freep) struct registry_instance *row = NULL;
    struct mregion *rg;
    struct inst *in;
    int e;

    e = lookup(m, region, instance_id, &rg, &in);
    if (e < 0)
        return e;
    pthread_mutex_lock(&in->hold);
    e = row_get(rg, instance_id, &row);
    if (e < 0)
        goto out;
    if (row->state == INSTANCE_RUNNING || row->state == INSTANCE_PENDING) {
        e = 0;
        goto out;
    }
    if (row->state != INSTANCE_STOPPED) {
        e = error_set(EINVAL, "The instance '%s' is not in a state from which it can be started.",
                      instance_id);
        goto out;
    }
    const struct instance_type *t = instance_type_find(row->instance_type);
    if (!t) {
        e = error_set(EINVAL, "instance type '%s' is unknown", row->instance_type);
        goto out;
    }
    pthread_mutex_lock(&m->lock);
    reap_locked(in);
    e = in->thread_live ? error_set(EINVAL, "The instance '%s' is still stopping.", instance_id)
                        : reserve_locked(m, t, 1);
    pthread_mutex_unlock(&m->lock);
    if (e < 0)
        goto out;
    e = set_state(rg, instance_id, INSTANCE_PENDING, NULL, NULL);
    pthread_mutex_lock(&m->lock);
    if (e >= 0) {
        e = spawn_locked(in, t);
    } else {
        m->used_vcpus -= t->vcpus;
        m->used_memory_mib -= t->memory_mib;
    }
    pthread_mutex_unlock(&m->lock);
    if (e < 0)
        set_state(rg, instance_id, INSTANCE_STOPPED, "Server.InternalError",
                  "Server.InternalError: the instance could not be started");
out:
    pthread_mutex_unlock(&in->hold);
    return e;
}

/* Ask the thread of `in` for `req` (hold held): false when no thread runs. */
static bool ask(struct inst *in, enum request req)
{
    struct instance_manager *m = in->m;
    bool live;

    pthread_mutex_lock(&m->lock);
    reap_locked(in);
    live = in->thread_live && !in->thread_done;
    if (live && (in->req == REQ_NONE || req == REQ_TERMINATE ||
                 (req == REQ_FORCE_STOP && in->req == REQ_STOP)))
        in->req = req;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    return live;
}

int instance_manager_stop(struct instance_manager *m, const char *region, const char *instance_id,
                          bool force, bool wait)
{
    _cleanup_(registry_instance_freep) struct registry_instance *row = NULL;
    struct mregion *rg;
    struct inst *in;
    int e;

    e = lookup(m, region, instance_id, &rg, &in);
    if (e < 0)
        return e;
    pthread_mutex_lock(&in->hold);
    e = row_get(rg, instance_id, &row);
    if (e >= 0 && (row->state == INSTANCE_TERMINATED || row->state == INSTANCE_SHUTTING_DOWN))
        e = error_set(EINVAL, "The instance '%s' is not in a state from which it can be stopped.",
                      instance_id);
    if (e < 0 || row->state == INSTANCE_STOPPED) {
        pthread_mutex_unlock(&in->hold);
        return e;
    }
    if (ask(in, force ? REQ_FORCE_STOP : REQ_STOP)) {
        e = set_state(rg, instance_id, INSTANCE_STOPPING, NULL, NULL);
    } else {
        /* a row says running but nothing runs (cannot normally happen) */
        e = set_state(rg, instance_id, INSTANCE_STOPPED, "Client.UserInitiatedShutdown",
                      "Client.UserInitiatedShutdown: User initiated shutdown");
    }
    pthread_mutex_unlock(&in->hold);
    if (e >= 0 && wait)
        wait_thread(in);
    return e;
}


int instance_manager_terminate(struct instance_manager *m, const char *region,
                               const char *instance_id, bool wait)
{
    _cleanup_(registry_instance_freep) struct registry_instance *row = NULL;
    struct mregion *rg;
    struct inst *in;
    int e;

    e = lookup(m, region, instance_id, &rg, &in);
    if (e < 0)
        return e;
    pthread_mutex_lock(&in->hold);
    e = row_get(rg, instance_id, &row);
    if (e < 0 || row->state == INSTANCE_TERMINATED) {
        pthread_mutex_unlock(&in->hold);
        return e;
    }
    if (ask(in, REQ_TERMINATE)) {
        e = set_state(rg, instance_id, INSTANCE_SHUTTING_DOWN, NULL, NULL);
        pthread_mutex_unlock(&in->hold);
        if (e >= 0 && wait)
            wait_thread(in);
        return e;
    }
    /* no thread of ours runs it: a QEMU a dead process left goes first */
    instance_kill_qemu(instance_id, in->dir);
    e = set_state(rg, instance_id, INSTANCE_SHUTTING_DOWN, NULL, NULL);
    if (e >= 0)
        e = finish_terminate(m, rg, row);
    if (e >= 0)
        address_unlock(in);
    pthread_mutex_unlock(&in->hold);
    return e;
}

int instance_manager_reboot(struct instance_manager *m, const char *region, const char *instance_id)
{
    _cleanup_(registry_instance_freep) struct registry_instance *row = NULL;
    struct mregion *rg;
    struct inst *in;
    int e;

    e = lookup(m, region, instance_id, &rg, &in);
    if (e < 0)
        return e;
    pthread_mutex_lock(&in->hold);
    e = row_get(rg, instance_id, &row);
    if (e >= 0 && (row->state != INSTANCE_RUNNING || !in->qemu_running))
        e = error_set(EINVAL, "The instance '%s' is not in a state from which it can be rebooted.",
                      instance_id);
    if (e >= 0) {
        /* the agent's clean reboot first; QMP system_reset otherwise */
        _cleanup_free_ char *agent = xasprintf("%s/agent.sock", in->dir);
        _cleanup_(agent_client_freep) struct agent_client *ac = NULL;
        int a = agent_client_connect(agent, 2000, &ac, NULL);
        if (a >= 0)
            a = agent_client_shutdown(ac, true, 5000);
        if (a < 0)
            e = qmp_command(in->dir, "system_reset");
        if (e >= 0)
            log_info("instance %s rebooting (%s)", instance_id, a >= 0 ? "agent" : "QMP reset");
    }
    pthread_mutex_unlock(&in->hold);
    return e;
}

/* ---- hooks ---- */

static int with_inst(struct mregion *rg, struct inst *in, instance_hook_fn fn, void *ud)
{
    _cleanup_free_ char *agent = xasprintf("%s/agent.sock", in->dir);
    struct registry_instance *row = NULL;
    int e;

    pthread_mutex_lock(&in->hold);
    pthread_mutex_lock(&rg->reg_lock);
    e = registry_instance_get(rg->r->reg, in->id, &row);
    if (e == -ENOENT)
        e = error_set(ENOENT, "instance '%s' does not exist in region '%s'", in->id, rg->name);
    if (e >= 0) {
        struct instance_view iv = {
            .row = row,
            .region = rg->r,
            .root = in->root,
            .root_volume_id = row->root_volume_id,
            .agent_socket = in->qemu_running ? agent : NULL,
            .dir = in->dir,
        };
        e = fn(&iv, ud);
    }
    pthread_mutex_unlock(&rg->reg_lock);
    pthread_mutex_unlock(&in->hold);
    registry_instance_free(row);
    return e;
}

int instance_manager_with_instance(struct instance_manager *m, const char *region,
                                   const char *instance_id, instance_hook_fn fn, void *ud)
{
    struct mregion *rg;
    struct inst *in;
    int e = lookup(m, region, instance_id, &rg, &in);

    if (e == -EINVAL)
        return error_set(ENOENT, "instance '%s' does not exist", instance_id);
    if (e < 0)
        return e;
    return with_inst(rg, in, fn, ud);
}

int instance_manager_with_volume(struct instance_manager *m, const char *region,
                                 const char *volume_id, instance_hook_fn fn, void *ud)
{
    struct mregion *rg;
    struct inst *in;

    if (!m)
        return -ESRCH;
    rg = region_find(m, region);
    if (!rg)
        return -ESRCH;
    pthread_mutex_lock(&m->lock);
    for (in = m->list; in; in = in->next)
        if (in->rg == rg && in->thread_live && !in->thread_done &&
            strcmp(in->root_volume_id, volume_id) == 0)
            break;
    pthread_mutex_unlock(&m->lock);
    if (!in)
        return -ESRCH;
    /* the instance may have stopped in between: then its volume is closed
     * and the ordinary path applies */
    pthread_mutex_lock(&in->hold);
    bool open = in->root != NULL;
    pthread_mutex_unlock(&in->hold);
    if (!open)
        return -ESRCH;
    return with_inst(rg, in, fn, ud);
}

/* ---- launch ---- */

static const struct registry_image_device *root_device(const struct registry_image *img)
{
    for (size_t i = 0; i < img->n_devices; i++)
        if (img->root_device_name &&
            strcmp(img->devices[i].device_name, img->root_device_name) == 0)
            return &img->devices[i];
    return NULL;
}

/* One instance's rows, in the caller's transaction. */
static int register_one(struct mregion *rg, const struct instance_launch *l,
                        const struct registry_image *img, const struct registry_image_device *dev,
                        const char *reservation, int index, int64_t launch_time,
                        char ret_id[ID_MAX_SIZE], int *ret_fd)
{
    struct registry *reg = rg->r->reg;
    struct registry_instance row = {0};
    struct registry_volume *vol = NULL;
    char vol_id[ID_MAX_SIZE];
    int e;

    e = id_generate("i", row.id, sizeof(row.id));
    if (e < 0)
        return e;
    struct service_volume_create_options vo = {
        .owner = l->owner,
        .snapshot_id = dev->snapshot_id,
        .size_gib = l->root_size_gib ? l->root_size_gib : dev->volume_size_gib,
        .volume_type = "gp3",
    };
    e = service_volume_create(rg->r, &vo, vol_id);
    if (e < 0)
        return e;
    e = registry_volume_get(reg, vol_id, &vol);
    if (e < 0)
        return e;
    vol->state = VOLUME_IN_USE;
    snprintf(vol->instance_id, sizeof(vol->instance_id), "%s", row.id);
    snprintf(vol->device, sizeof(vol->device), "%s", img->root_device_name);
    vol->attach_time = launch_time;
    e = registry_volume_update(reg, vol);
    registry_volume_free(vol);
    if (e < 0)
        return e;
    for (size_t i = 0; i < l->n_volume_tags && e >= 0; i++)
        e = registry_tag_set(reg, vol_id, l->volume_tags[i].key, l->volume_tags[i].value);
    if (e < 0)
        return e;

    snprintf(row.owner, sizeof(row.owner), "%s", l->owner);
    snprintf(row.reservation_id, sizeof(row.reservation_id), "%s", reservation);
    row.launch_index = index;
    snprintf(row.image_id, sizeof(row.image_id), "%s", img->id);
    snprintf(row.instance_type, sizeof(row.instance_type), "%s", l->instance_type);
    row.state = INSTANCE_PENDING;
    row.launch_time = launch_time;
    snprintf(row.availability_zone, sizeof(row.availability_zone), "%sa", rg->name);
    snprintf(row.key_name, sizeof(row.key_name), "%s", l->key_name ? l->key_name : "");
    row.user_data = (uint8_t *)l->user_data;
    row.user_data_len = l->user_data ? l->user_data_len : 0;
    snprintf(row.root_device_name, sizeof(row.root_device_name), "%s", img->root_device_name);
    snprintf(row.root_volume_id, sizeof(row.root_volume_id), "%s", vol_id);
    row.root_delete_on_termination = l->root_delete_on_termination < 0
                                         ? dev->delete_on_termination
                                         : l->root_delete_on_termination > 0;
    row.http_tokens_required = l->http_tokens_required;
    row.http_endpoint_enabled = l->http_endpoint_enabled;
    row.http_hop_limit = l->http_hop_limit;
    if (l->client_token)
        snprintf(row.client_token, sizeof(row.client_token), "%s", l->client_token);
    e = address_allocate(reg, row.address, ret_fd);
    if (e >= 0)
        e = registry_instance_insert(reg, &row);
    if (e >= 0 && l->n_security_groups)
        e = registry_instance_security_groups_set(reg, row.id, l->security_group_ids,
                                                  l->n_security_groups);
    for (size_t i = 0; i < l->n_instance_tags && e >= 0; i++)
        e = registry_tag_set(reg, row.id, l->instance_tags[i].key, l->instance_tags[i].value);
    if (e < 0)
        return e;
    memcpy(ret_id, row.id, ID_MAX_SIZE);
    return 0;
}

static char *join_lines(const char *const *v, size_t n)
{
    size_t len = 1, off = 0;
    char *s;

    if (n == 0)
        return NULL;
    for (size_t i = 0; i < n; i++)
        len += strlen(v[i]) + 1;
    s = xmalloc(len);
    s[0] = '\0';
    for (size_t i = 0; i < n; i++)
        off += (size_t)snprintf(s + off, len - off, "%s%s", i ? "\n" : "", v[i]);
    return s;
}

/* Write DIR/imds.instance for a new instance (boot installs it with a
 * fresh key every time). */
static int write_metadata(struct instance_manager *m, struct mregion *rg,
                          const struct instance_launch *l, const struct registry_instance *row)
{
    _cleanup_free_ char *dir = instance_manager_dir(m, rg->name, row->id);
    _cleanup_free_ char *sgn = join_lines(l->security_group_names, l->n_security_groups);
    _cleanup_free_ char *sgi = join_lines(l->security_group_ids, l->n_security_groups);
    char mac[18], when[32];
    uint8_t rnd[3];
    time_t secs = (time_t)(row->launch_time / 1000);
    struct tm tm;
    int e;

    e = mkdir_p(dir);
    if (e < 0)
        return error_set(e, "cannot create '%s': %s", dir, strerror(-e));
    e = random_bytes(rnd, sizeof(rnd));
    if (e < 0)
        return e;
    snprintf(mac, sizeof(mac), "52:54:00:%02x:%02x:%02x", rnd[0], rnd[1], rnd[2]);
    gmtime_r(&secs, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    struct imds_instance md = {
        .instance_id = (char *)row->id,
        .image_id = (char *)row->image_id,
        .instance_type = (char *)row->instance_type,
        .availability_zone = (char *)row->availability_zone,
        .region = rg->name,
        .account_id = (char *)row->owner,
        .private_ip = (char *)GUEST_PRIVATE_IP,
        .mac = mac,
        .reservation_id = (char *)row->reservation_id,
        .launch_time = when,
        .root_device_name = (char *)row->root_device_name,
        .key_name = row->key_name[0] ? (char *)row->key_name : NULL,
        .public_key = row->key_name[0] ? (char *)l->public_key : NULL,
        .security_groups = sgn,
        .security_group_ids = sgi,
        .user_data = row->user_data,
        .user_data_len = row->user_data_len,
        .tokens_required = row->http_tokens_required,
        .endpoint_disabled = !row->http_endpoint_enabled,
    };
    _cleanup_free_ char *text = NULL;
    size_t len;
    e = imds_instance_format(&md, &text, &len);
    if (e >= 0)
        e = write_durably(dir, METADATA_FILE, text, len);
    return e;
}

int instance_manager_launch(struct instance_manager *m, const char *region,
                            const struct instance_launch *l, char ret_reservation[ID_MAX_SIZE],
                            char (**ret_ids)[ID_MAX_SIZE], size_t *ret_n)
{
    struct registry_image *img = NULL;
    const struct instance_type *t;
    const struct registry_image_device *dev = NULL;
    struct mregion *rg;
    char reservation[ID_MAX_SIZE];
    char(*ids)[ID_MAX_SIZE] = NULL;
    int *fds = NULL;
    unsigned count = 0;
    int64_t when = wall_clock_ms();
    int e = 0;

    if (!m)
        return error_set(ENOTSUP, "no instance manager runs in this process");
    rg = region_find(m, region);
    if (!rg)
        return error_set(ENOENT, "region '%s' is not served", region);
    t = instance_type_find(l->instance_type);
    if (!t)
        return error_set(EINVAL, "instance type '%s' is unknown", l->instance_type);
    if (l->min_count < 1 || l->max_count < l->min_count)
        return error_set(EINVAL, "MinCount %u and MaxCount %u: expected 1 <= MinCount <= MaxCount",
                         l->min_count, l->max_count);

    /* capacity: as many as fit, at least min_count */
    pthread_mutex_lock(&m->lock);
    for (count = l->max_count; count >= l->min_count; count--) {
        error_clear();
        e = reserve_locked(m, t, count);
        if (e == 0 || count == l->min_count)
            break;
    }
    pthread_mutex_unlock(&m->lock);
    if (e < 0)
        return e;

    e = id_generate("r", reservation, sizeof(reservation));
    ids = xcalloc(count, sizeof(*ids));
    fds = xmalloc(count * sizeof(*fds));
    for (unsigned i = 0; i < count; i++)
        fds[i] = -1;
    pthread_mutex_lock(&rg->reg_lock);
    if (e >= 0)
        e = registry_begin(rg->r->reg);
    if (e >= 0) {
        e = registry_image_get(rg->r->reg, l->image_id, &img);
        if (e == -ENOENT)
            e = error_set(ENOENT, "The image id '[%s]' does not exist", l->image_id);
        if (e >= 0 && img->state != IMAGE_AVAILABLE &&
            !(l->allow_pending && img->state == IMAGE_PENDING))
            e = error_set(EAGAIN, "The image id '[%s]' is %s, not available", l->image_id,
                          image_state_to_string(img->state));
        if (e >= 0 && !(dev = root_device(img)))
            e = error_set(EINVAL, "image '%s' has no root device mapping", l->image_id);
        if (e >= 0 && !dev->snapshot_id[0])
            e = error_set(EINVAL, "the root device of image '%s' has no snapshot", l->image_id);
        for (unsigned i = 0; i < count && e >= 0; i++)
            e = register_one(rg, l, img, dev, reservation, (int)i, when, ids[i], &fds[i]);
        if (e >= 0 && l->token) {
            struct registry_client_token rec = {.params = l->token->params, .created = when};
            snprintf(rec.action, sizeof(rec.action), "%s", l->token->action);
            memcpy(rec.resource_id, reservation, ID_MAX_SIZE);
            e = registry_client_token_insert(rg->r->reg, l->token->account, l->token->token, &rec);
            if (e == -EEXIST)
                e = error_set(EALREADY, "client token '%s' was used by a concurrent request",
                              l->token->token);
        }
        e = registry_end(rg->r->reg, e);
    }
    pthread_mutex_unlock(&rg->reg_lock);
    registry_image_free(img);

    /* the metadata files, then the threads */
    for (unsigned i = 0; i < count && e >= 0; i++) {
        _cleanup_(registry_instance_freep) struct registry_instance *row = NULL;
        int w = row_get(rg, ids[i], &row);
        if (w >= 0)
            w = write_metadata(m, rg, l, row);
        if (w < 0) {
            log_error("instance %s: cannot write its metadata: %s", ids[i],
                      error_message() ? error_message() : strerror(-w));
            set_state(rg, ids[i], INSTANCE_STOPPED, "Server.InternalError",
                      "Server.InternalError: the metadata could not be written");
            pthread_mutex_lock(&m->lock);
            m->used_vcpus -= t->vcpus;
            m->used_memory_mib -= t->memory_mib;
            pthread_mutex_unlock(&m->lock);
            continue;
        }
        struct inst *in = inst_find(m, rg, ids[i]);
        pthread_mutex_lock(&m->lock);
        if (in->addr_fd < 0) {
            in->addr_fd = fds[i];
            fds[i] = -1;
        }
        w = spawn_locked(in, t);
        pthread_mutex_unlock(&m->lock);
        if (w < 0)
            set_state(rg, ids[i], INSTANCE_STOPPED, "Server.InternalError",
                      "Server.InternalError: the instance could not be started");
    }
    for (unsigned i = 0; i < count; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(fds);
    if (e < 0) {
        pthread_mutex_lock(&m->lock);
        m->used_vcpus -= t->vcpus * count;
        m->used_memory_mib -= (uint64_t)t->memory_mib * count;
        pthread_mutex_unlock(&m->lock);
        free(ids);
        return e;
    }
    log_info("reservation %s: %u instance(s) of %s launched from %s", reservation, count,
             l->instance_type, l->image_id);
    memcpy(ret_reservation, reservation, ID_MAX_SIZE);
    *ret_ids = ids;
    *ret_n = count;
    return 0;
}

/* ---- terminated instances vanish ---- */

int64_t instance_manager_terminated_retention_ms(const struct instance_manager *m)
{
    return m ? m->retention_ms : INSTANCE_TERMINATED_RETENTION_DEFAULT_MS;
}

bool instance_expired(const struct registry_instance *row, int64_t retention_ms, int64_t now)
{
    return row->state == INSTANCE_TERMINATED && row->terminated_time > 0 &&
           now - row->terminated_time >= retention_ms;
}

int instance_manager_expire(struct instance_manager *m, const char *region, int64_t now)
{
    struct registry_instance **list = NULL;
    struct mregion *rg;
    size_t n = 0;
    int e, gone = 0;

    if (!m)
        return error_set(ENOTSUP, "no instance manager runs in this process");
    rg = region_find(m, region);
    if (!rg)
        return error_set(ENOENT, "region '%s' is not served", region);
    if (now <= 0)
        now = wall_clock_ms();
    pthread_mutex_lock(&rg->reg_lock);
    e = registry_instance_list(rg->r->reg, &list, &n);
    pthread_mutex_unlock(&rg->reg_lock);
    for (size_t i = 0; i < n && e >= 0; i++) {
        if (!instance_expired(list[i], m->retention_ms, now))
            continue;
        struct inst *in = inst_find(m, rg, list[i]->id);
        _cleanup_(registry_instance_freep) struct registry_instance *row = NULL;
        /* under the hold lock: no hook or request of the instance runs */
        pthread_mutex_lock(&in->hold);
        e = row_get(rg, in->id, &row);
        if (e == -ENOENT) {
            error_clear();
            e = 0;
        } else if (e >= 0 && instance_expired(row, m->retention_ms, now)) {
            pthread_mutex_lock(&rg->reg_lock);
            e = registry_instance_delete(rg->r->reg, in->id);
            pthread_mutex_unlock(&rg->reg_lock);
            if (e >= 0) {
                log_info("instance %s: terminated %" PRId64 " s ago, forgotten", in->id,
                         (now - row->terminated_time) / 1000);
                dir_clear(in->dir, true);
                gone++;
            }
        }
        pthread_mutex_unlock(&in->hold);
    }
    registry_instance_list_free(list, n);
    return e < 0 ? e : gone;
}

/* ---- the manager ---- */

/* A QEMU no thread of this process supervises (left by a killed serve or
 * bake), or a cancelled bake's: its pid from DIR/qemu.pid, killed only if
 * /proc/PID/cmdline names DIR/qmp.sock. */
void instance_kill_qemu(const char *id, const char *dir)
{
    _cleanup_free_ char *pidfile = xasprintf("%s/qemu.pid", dir);
    _cleanup_free_ char *text = NULL, *cmdline = NULL, *want = NULL;
    size_t len, clen;
    long pid;

    if (read_small_file(pidfile, 64, &text, &len) < 0) {
        error_clear();
        return;
    }
    pid = strtol(text, NULL, 10);
    if (pid <= 1)
        return;
    _cleanup_free_ char *proc = xasprintf("/proc/%ld/cmdline", pid);
    if (read_small_file(proc, 1 << 20, &cmdline, &clen) < 0) {
        error_clear();
        unlink(pidfile);
        return;
    }
    want = xasprintf("%s/qmp.sock", dir);
    bool ours = false;
    for (size_t off = 0; off < clen; off += strlen(cmdline + off) + 1)
        if (strstr(cmdline + off, want))
            ours = true;
    if (!ours) {
        log_warning("instance %s: pid %ld of '%s' is not its QEMU: left alone", id, pid, pidfile);
        unlink(pidfile);
        return;
    }
    log_warning("instance %s: killing its QEMU (pid %ld)", id, pid);
    kill((pid_t)pid, SIGKILL);
    for (int i = 0; i < 500 && kill((pid_t)pid, 0) == 0; i++) {
        /* a zombie of another parent stays until reaped; /proc says so */
        _cleanup_free_ char *st = NULL;
        size_t sl;
        _cleanup_free_ char *statp = xasprintf("/proc/%ld/stat", pid);
        if (read_small_file(statp, 4096, &st, &sl) == 0) {
            const char *rp = strrchr(st, ')');
            if (rp && rp[1] == ' ' && rp[2] == 'Z')
                break;
        }
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    unlink(pidfile);
}

static void recover_region(struct instance_manager *m, struct mregion *rg)
{
    struct registry_instance **list = NULL;
    size_t n = 0;
    int e;

    pthread_mutex_lock(&rg->reg_lock);
    e = registry_instance_list(rg->r->reg, &list, &n);
    pthread_mutex_unlock(&rg->reg_lock);
    if (e < 0) {
        log_error("region %s: cannot list the instances: %s", rg->name,
                  error_message() ? error_message() : strerror(-e));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct registry_instance *row = list[i];
        _cleanup_free_ char *dir = instance_manager_dir(m, rg->name, row->id);
        enum instance_recovery policy = INSTANCE_RECOVER_RESTART;
        bool again = false;

        if (m->recovery && row->state != INSTANCE_TERMINATED)
            policy = m->recovery(rg->r, row, m->recovery_ud);
        if (policy == INSTANCE_RECOVER_SKIP)
            continue;

        switch (row->state) {
        case INSTANCE_PENDING:
        case INSTANCE_RUNNING:
        case INSTANCE_STOPPING:
            instance_kill_qemu(row->id, dir);
            set_state(rg, row->id, INSTANCE_STOPPED, "Server.InternalError",
                      "Server.InternalError: kiln serve ended without stopping the instance");
            again = row->state != INSTANCE_STOPPING && policy == INSTANCE_RECOVER_RESTART;
            break;
        case INSTANCE_SHUTTING_DOWN:
            instance_kill_qemu(row->id, dir);
            finish_terminate(m, rg, row);
            break;
        case INSTANCE_STOPPED:
            again = policy == INSTANCE_RECOVER_RESTART &&
                    strcmp(row->reason_code, INSTANCE_REASON_DAEMON_STOPPED) == 0 &&
                    strcmp(row->reason_message, INSTANCE_REASON_DAEMON_STOPPED_MESSAGE) == 0;
            break;
        default: break;
        }
        if (again) {
            log_info("instance %s: starting again (restart policy)", row->id);
            e = instance_manager_start(m, rg->name, row->id);
            if (e < 0)
                log_error("instance %s: cannot start again: %s", row->id,
                          error_message() ? error_message() : strerror(-e));
        }
    }
    registry_instance_list_free(list, n);
}

int instance_manager_new(const struct instance_manager_options *o, struct instance_manager **ret)
{
    struct instance_manager *m = xcalloc(1, sizeof(*m));
    int e;

    m->data_dir = xstrdup(o->data_dir);
    m->recovery = o->recovery;
    m->recovery_ud = o->recovery_ud;
    m->retention_ms = o->terminated_retention_ms > 0 ? o->terminated_retention_ms
                                                     : INSTANCE_TERMINATED_RETENTION_DEFAULT_MS;
    /* this executable's path now: /proc/self/exe says "(deleted)" once a
     * rebuild replaces the file, and QEMU runs `kiln imds-serve` by path */
    if (o->kiln) {
        m->kiln = xstrdup(o->kiln);
    } else {
        char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0) {
            self[n] = '\0';
            m->kiln = xstrdup(self);
        }
    }
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->cond, NULL);
    e = host_capacity_read(&m->host);
    if (e < 0) {
        instance_manager_free(m);
        return e;
    }
    m->regions = xcalloc(o->n_regions, sizeof(*m->regions));
    for (size_t i = 0; i < o->n_regions; i++) {
        struct mregion *rg = &m->regions[i];
        rg->name = xstrdup(o->regions[i]);
        pthread_mutex_init(&rg->reg_lock, NULL);
        m->n_regions++;
        e = region_open(m->data_dir, rg->name, false, &rg->r);
        if (e < 0) {
            instance_manager_free(m);
            return e;
        }
    }
    __atomic_store_n(&the_manager, m, __ATOMIC_RELEASE);
    for (size_t i = 0; i < m->n_regions; i++) {
        recover_region(m, &m->regions[i]);
        if (instance_manager_expire(m, m->regions[i].name, 0) < 0)
            log_error("region %s: cannot forget expired terminated instances: %s",
                      m->regions[i].name, error_message() ? error_message() : "?");
    }
    *ret = m;
    return 0;
}

void instance_manager_free(struct instance_manager *m)
{
    if (!m)
        return;
    /* ask every live instance to stop, then wait for all of them */
    for (struct inst *in = m->list; in; in = in->next) {
        pthread_mutex_lock(&in->hold);
        if (ask(in, REQ_DAEMON))
            set_state(in->rg, in->id, INSTANCE_STOPPING, NULL, NULL);
        pthread_mutex_unlock(&in->hold);
    }
    for (struct inst *in = m->list; in; in = in->next)
        wait_thread(in);
    if (instance_manager_get() == m)
        __atomic_store_n(&the_manager, NULL, __ATOMIC_RELEASE);
    while (m->list) {
        struct inst *in = m->list;
        m->list = in->next;
        pthread_mutex_destroy(&in->hold);
        if (in->addr_fd >= 0)
            close(in->addr_fd);
        free(in->dir);
        free(in);
    }
    for (size_t i = 0; i < m->n_regions; i++) {
        region_free(m->regions[i].r);
        pthread_mutex_destroy(&m->regions[i].reg_lock);
        free(m->regions[i].name);
    }
    free(m->regions);
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->cond);
    free(m->kiln);
    free(m->data_dir);
    free(m);
}
