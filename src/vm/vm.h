/* src/vm: running guests under QEMU.
 *
 *   vm.c           the qemu-system-x86_64 command line (no shell), starting
 *                  and supervising the process (pidfile, exit status), the
 *                  accelerator probe (KVM only when a probe boot proves it)
 *   bootfiles.c    the kernel and initrd read from the image's own ext4
 *                  file system (libext2fs over a caller's reader)
 *   qmp.c          a small QMP client; its message parser is pure (fuzzed)
 *   agent-client.c the host side of the kiln-agent protocol
 *                  (src/agent/proto.h, docs/agent.md)
 *
 * docs/vm.md explains the boot path and the choices (machine type, probe).
 * int functions return >= 0 or -errno with a message through error_set().
 */
#ifndef KILN_VM_VM_H
#define KILN_VM_VM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/cleanup.h"

enum vm_accel {
    VM_ACCEL_TCG,
    VM_ACCEL_KVM,
};

const char *vm_accel_name(enum vm_accel a);

/* What to run.  Files the VM uses live in `dir` (the instance directory):
 * console.log (the serial console), qmp.sock, agent.sock, qemu.pid and
 * qemu.log (QEMU's own stderr). */
struct vm_config {
    const char *dir;
    const char *nbd_socket;     /* root disk: the NBD export (unix socket) */
    const char *kernel;         /* host paths of the image's kernel and initrd */
    const char *initrd;         /* NULL: none */
    const char *append;         /* extra kernel arguments, or NULL */
    const char *uuid;           /* SMBIOS type 1 UUID (vm_uuid_generate) */
    unsigned vcpus;             /* 0: 1 */
    unsigned memory_mib;        /* 0: 256 */
    enum vm_accel accel;
    const char *ssh_address;    /* 127.x.y.z forwarded to the guest's port 22, or NULL */
    unsigned ssh_port;          /* host port for ssh_address */
    const char *qemu;           /* NULL: qemu-system-x86_64 from PATH */
    const char *netdev_extra;   /* appended to `-netdev user,id=net0,` (the metadata
                                 * network, imds_netdev_options()), or NULL */
};

/* The argv (NULL-terminated, caller frees with vm_strv_free()) that runs
 * `c`: -EINVAL for a missing field or a non-loopback ssh_address. */
int vm_argv_build(const struct vm_config *c, char ***ret_argv);
void vm_strv_free(char **v);

/* A random UUID whose first three characters are "ec2", as EC2's Xen and
 * Nitro guests see (cloud-init's EC2 detection looks at it). */
void vm_uuid_generate(char ret[37]);

struct vm;

/* Start QEMU for `c` (its stdout and stderr to DIR/qemu.log), record its
 * pid in DIR/qemu.pid.  The VM is running when this returns 0 (QEMU may
 * still fail early: vm_wait tells). */
int vm_start(const struct vm_config *c, struct vm **ret);

pid_t vm_pid(const struct vm *v);

/* Wait up to timeout_ms (-1: for ever) for QEMU to exit: 0 with its wait
 * status in *ret_status, or -ETIMEDOUT. */
int vm_wait(struct vm *v, int timeout_ms, int *ret_status);

/* SIGKILL QEMU (if it still runs) and reap it. */
void vm_kill(struct vm *v);

/* Kill QEMU if it still runs, remove the pidfile, free.  NULL is ok. */
void vm_free(struct vm *v);
DEFINE_CLEANUP_FREE(struct vm, vm_free)

/* The accelerator to use on this host.  KILN_ACCEL=tcg|kvm overrides (tests
 * set tcg); otherwise the verdict cached in DATA/vm/accel for this host
 * boot (keyed by /proc/sys/kernel/random/boot_id), otherwise a probe: no
 * usable /dev/kvm means TCG; else `kernel` (and `initrd`) are booted under
 * KVM with no disk, and KVM is used only if the kernel reaches its init
 * within timeout_ms (a kernel that hangs early under KVM is seen).  The
 * verdict is then cached.  `kernel` may be NULL when the cache or the
 * override decides. */
int vm_accel_detect(const char *data_dir, const char *kernel, const char *initrd,
                    int timeout_ms, enum vm_accel *ret);

/* ---- boot files (bootfiles.c) ---- */

/* A disk as the caller reads it (a volume, a snapshot view, a file). */
struct vm_disk {
    int (*read)(void *ud, void *buf, size_t len, uint64_t offset);
    void *ud;
    uint64_t size;
};

/* Copy the kernel and initrd out of the ext4 file system at the start of
 * `disk` (a bare file system; partition tables come later) into
 * DIR/vmlinuz and DIR/initrd.img.  The kernel is /vmlinuz (a symlink,
 * followed within the image) or else the newest /boot/vmlinuz-VERSION; the
 * initrd is /initrd.img or /boot/initrd.img-VERSION (optional).  Returns
 * -ENOENT without a kernel, -EBADMSG when there is no ext4 file system or
 * it is damaged, -EFBIG for a kernel over 256 MiB or an initrd over 1 GiB.
 * *ret_has_initrd says whether DIR/initrd.img was written. */
int vm_boot_files_extract(const struct vm_disk *disk, const char *dir, bool *ret_has_initrd);

/* ---- QMP (qmp.c) ---- */

enum qmp_kind {
    QMP_GREETING, /* {"QMP": ...} */
    QMP_RETURN,   /* {"return": ...} */
    QMP_ERROR,    /* {"error": {"class": ..., "desc": ...}} */
    QMP_EVENT,    /* {"event": NAME, ...} */
};

struct qmp_message {
    enum qmp_kind kind;
    char *event;        /* QMP_EVENT: its name */
    char *error_class;  /* QMP_ERROR */
    char *error_desc;
    char *status;       /* QMP_RETURN of query-status: "running", ... */
    bool running;       /* ditto */
    char *id;           /* the "id" member when it is a string, else NULL */
};

/* Parse one QMP message (one JSON object, as QEMU writes one per line):
 * -EBADMSG for anything that is not a well-formed JSON object of one of the
 * kinds above, -EMSGSIZE when it nests deeper than 32 or is over 1 MiB.
 * Strings are unescaped (\uXXXX as UTF-8). */
int qmp_message_parse(const char *text, size_t len, struct qmp_message *ret);
void qmp_message_release(struct qmp_message *m);

struct qmp;

/* Connect to QEMU's QMP socket, read the greeting, negotiate
 * capabilities. */
int qmp_connect(const char *socket_path, int timeout_ms, struct qmp **ret);
/* Run one command without arguments ("system_powerdown", "quit",
 * "query-status"), wait for its answer (events meanwhile are noted):
 * -EIO with QEMU's error description for an error answer.  A "quit" whose
 * connection closes before the answer succeeds.  *ret (may be NULL)
 * receives the answer. */
int qmp_execute(struct qmp *q, const char *command, int timeout_ms, struct qmp_message *ret);
/* Whether a SHUTDOWN event has been seen on this connection. */
bool qmp_saw_shutdown(const struct qmp *q);
void qmp_free(struct qmp *q);
DEFINE_CLEANUP_FREE(struct qmp, qmp_free)

/* ---- the agent's host side (agent-client.c) ---- */

struct agent_client;

/* Connect to the agent's unix socket (QEMU's chardev) and say hello,
 * repeating the hello every second until the agent answers or timeout_ms
 * passes (-ETIMEDOUT): the guest may still be booting.  *ret_description
 * (may be NULL; caller frees) gets the agent's self-description. */
int agent_client_connect(const char *socket_path, int timeout_ms, struct agent_client **ret,
                         char **ret_description);
void agent_client_free(struct agent_client *a);
DEFINE_CLEANUP_FREE(struct agent_client, agent_client_free)

struct agent_exec_result {
    char *out, *err; /* everything the command wrote (NUL-terminated; caller frees) */
    size_t out_len, err_len;
    bool signaled;   /* killed by signal `code`, else exited with `code` */
    int code;
};
void agent_exec_result_release(struct agent_exec_result *r);

/* Run argv in the guest with `in` (in_len bytes; NULL: /dev/null) as its
 * stdin; collect its output (each stream capped at 64 MiB: -EFBIG).
 * -ENOENT etc. when the guest cannot run it (the agent's errno). */
int agent_client_exec(struct agent_client *a, char *const *argv, const void *in, size_t in_len,
                      int timeout_ms, struct agent_exec_result *ret);
/* Write a file in the guest (atomically: a temporary file renamed), with
 * fsync when `durable`. */
int agent_client_put(struct agent_client *a, const char *path, unsigned mode, const void *data,
                     size_t len, bool durable, int timeout_ms);
/* Read a whole regular file from the guest (at most 1 GiB). */
int agent_client_get(struct agent_client *a, const char *path, int timeout_ms, void **ret_data,
                     size_t *ret_len, unsigned *ret_mode);
int agent_client_sync(struct agent_client *a, int timeout_ms);
int agent_client_freeze(struct agent_client *a, const char *mount_point, bool freeze,
                        int timeout_ms);
/* Power off (or reboot) the guest: 0 once the agent has accepted. */
int agent_client_shutdown(struct agent_client *a, bool reboot, int timeout_ms);

#endif
