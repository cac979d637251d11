/* The instance manager of `kiln serve`: instances as running QEMU guests.
 *
 * One manager per `kiln serve` process (instance_manager_new() after the
 * job runner, instance_manager_free() once the API server has stopped).
 * It holds a writable handle of every region served and, for every
 * instance that is pending, running or stopping, a thread that owns the
 * instance's running parts: the root volume open in this process, served
 * over NBD on DIR/nbd.sock, and QEMU.  The thread boots the guest, waits
 * for QEMU to exit or for a request (stop, reboot, terminate), tears the
 * parts down (QEMU gone, NBD server shut down, which flushes the volume,
 * volume closed) and records the new state.  docs/vm.md, "Instances".
 *
 * Instance directory DATA/regions/<region>/instances/<i-id>/: console.log,
 * qmp.sock, agent.sock, nbd.sock, qemu.pid, qemu.log, vmlinuz, initrd.img,
 * imds.instance, imds.key.
 *
 * Concurrency: the registry handle of each region is used under one lock
 * (the manager's); an instance's state changes under its own hold lock,
 * which instance_manager_with_instance() takes for the duration of a hook.
 * Lock order: instance hold lock, then the registry lock.  A hook must not
 * call the lifecycle functions below on the instance it holds (deadlock).
 *
 * All int functions return >= 0 or -errno with a message (error_set()).
 */
#ifndef KILN_SERVICE_INSTANCES_H
#define KILN_SERVICE_INSTANCES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/ids.h"
#include "registry/instances.h"

struct region;
struct volume;
struct registry_tag;
struct service_client_token;

struct instance_manager; /* one per `kiln serve` process */

/* What the restart policy does with an instance a previous process left
 * pending, running or stopping (instance_manager_new()). */
enum instance_recovery {
    INSTANCE_RECOVER_RESTART, /* the policy: stopped, and started again */
    INSTANCE_RECOVER_STOP,    /* stopped (its leftover QEMU killed), not started again */
    INSTANCE_RECOVER_SKIP,    /* left alone: a live process (a bake) runs it */
};
typedef enum instance_recovery (*instance_recovery_fn)(struct region *r,
                                                        const struct registry_instance *row,
                                                        void *ud);

struct instance_manager_options {
    const char *data_dir;
    const char *const *regions; /* the regions served */
    size_t n_regions;
    const char *kiln; /* the kiln executable for imds-serve; NULL: /proc/self/exe */
    /* how long a terminated instance stays visible (its row, tags and
     * console.log); 0: INSTANCE_TERMINATED_RETENTION_DEFAULT_MS.  `kiln
     * serve` reads KILN_TERMINATED_RETENTION_SECONDS (docs/operations.md) */
    int64_t terminated_retention_ms;
    /* Decides per instance what the restart policy does (NULL: restart
     * them all).  `kiln serve` leaves a live bake's build instances alone
     * and stops a dead one's (bake/driver.h); `kiln bake`'s own manager
     * skips every instance it did not launch. */
    instance_recovery_fn recovery;
    void *recovery_ud;
};

#define INSTANCE_TERMINATED_RETENTION_DEFAULT_MS (3600 * 1000) /* EC2: about an hour */

/* Open the regions, then apply the restart policy (docs/operations.md):
 * instances the last serve stopped on its way out, and instances left
 * pending/running/stopping by a serve that was killed (their leftover QEMU
 * is found through qemu.pid, checked against /proc/PID/cmdline and killed;
 * they are recorded stopped with Server.InternalError), are started again;
 * instances left shutting-down are terminated.  Makes the manager the
 * process's (instance_manager_get()). */
int instance_manager_new(const struct instance_manager_options *o, struct instance_manager **ret);

/* Stop every instance cleanly (ACPI power-off, quit after a timeout),
 * recording Server.ScheduledStop with a message that the daemon stopped
 * (those start again at the next serve), close the regions, free.
 * Accepts NULL. */
void instance_manager_free(struct instance_manager *m);

/* The process's manager (set by instance_manager_new, cleared by _free), or
 * NULL when no `kiln serve` runs in this process (offline commands, unit
 * tests). */
struct instance_manager *instance_manager_get(void);

/* What a hook sees of an instance. */
struct instance_view {
    const struct registry_instance *row; /* the instance's row as of now */
    struct region *region;               /* the manager's writable handle of its region;
                                          * only for the duration of the call, used by one
                                          * thread at a time (the manager serialises) */
    struct volume *root;                 /* the root volume handle the manager holds open
                                          * (and serves over NBD) while the instance is
                                          * pending/running/stopping; NULL when stopped */
    const char *root_volume_id;
    const char *agent_socket; /* DIR/agent.sock while QEMU runs, else NULL */
    const char *dir;          /* the instance directory */
};

typedef int (*instance_hook_fn)(const struct instance_view *iv, void *ud);

/* Call fn with instance `instance_id` of `region` held: it cannot change state
 * (stop/terminate/reboot wait) while fn runs.  -ENOENT no such instance (or another
 * owner's: the caller checks row->owner itself), returns fn's result otherwise. */
int instance_manager_with_instance(struct instance_manager *m, const char *region,
                                   const char *instance_id, instance_hook_fn fn, void *ud);

/* The same for the instance a volume is attached to: -ESRCH when `volume_id` is not the
 * root volume of an instance whose volume the manager holds open (the caller then uses the
 * ordinary path: service_volume_snapshot_start). */
int instance_manager_with_volume(struct instance_manager *m, const char *region,
                                 const char *volume_id, instance_hook_fn fn, void *ud);

/* Lifecycle, used by the API and by CreateImage's clean reboot: synchronous enough that
 * _stop returns once the instance is `stopped` (guest powered off through QMP/ACPI, forced
 * after a timeout, volume flushed and closed) when `wait` is true.
 * _stop: -EINVAL (IncorrectInstanceState) for a terminated or shutting-down instance;
 * stopping a stopped one is success.  _start: stopped -> pending (-> running
 * asynchronously), same volume and address; -EINVAL unless stopped (running and
 * pending are success); -ENOSPC when the host has no room. */
int instance_manager_stop(struct instance_manager *m, const char *region, const char *instance_id,
                          bool force, bool wait);
int instance_manager_start(struct instance_manager *m, const char *region, const char *instance_id);

/* Reboot a running instance: the agent's clean reboot when it answers,
 * else QMP system_reset; QEMU keeps running and the instance stays
 * `running`.  -EINVAL unless running. */
int instance_manager_reboot(struct instance_manager *m, const char *region,
                            const char *instance_id);

/* Terminate: -> shutting-down, QEMU stopped (forced after a timeout; the
 * leftover QEMU of a process that died, found through qemu.pid and checked
 * against its command line, is killed), then `terminated`; the root volume is deleted when DeleteOnTermination, else
 * detached (available).  The instance directory is emptied but for its
 * console.log.  The row stays (DescribeInstances shows it) for the
 * retention period (instance_manager_expire()).
 * Returns once terminated when `wait`.  Terminating a terminated instance
 * is success. */
int instance_manager_terminate(struct instance_manager *m, const char *region,
                               const char *instance_id, bool wait);

/* What RunInstances asks for, checked by the caller (the API): the image is
 * visible to `owner` and available, the key pair and groups are the
 * owner's.  The manager checks the rest again in its transaction. */
struct instance_launch {
    const char *owner;
    const char *image_id;
    const char *instance_type; /* instance-types.h name */
    const char *key_name;      /* NULL: none */
    const char *public_key;    /* the key pair's OpenSSH line */
    const char *const *security_group_ids;
    size_t n_security_groups;
    const char *const *security_group_names; /* for the metadata, same order */
    const uint8_t *user_data;                /* decoded; NULL: none */
    size_t user_data_len;
    bool http_tokens_required;
    bool http_endpoint_enabled;
    int http_hop_limit;             /* 1..64 */
    uint32_t root_size_gib;         /* 0: the image's or the snapshot's */
    int root_delete_on_termination; /* -1: the image's mapping */
    const struct registry_tag *instance_tags;
    size_t n_instance_tags;
    const struct registry_tag *volume_tags;
    size_t n_volume_tags;
    unsigned min_count, max_count; /* 1 <= min <= max */
    const char *client_token;      /* NULL: none */
    /* the token with the digest of the request, recorded (client_tokens,
     * resource id the reservation) in the launch's transaction; NULL: none */
    const struct service_client_token *token;
    /* a `pending` image launches too: a bake's tests of its candidate
     * image, before it becomes available (never set by the API) */
    bool allow_pending;
};

/* RunInstances: as many instances as fit on the host, at least min_count
 * (else -ENOSPC naming what is short, nothing registered), each with a root
 * volume created from the image's root snapshot and attached, registered
 * `pending` in one transaction (a failure leaves no row, no volume).  Then
 * each boots on its own thread.  With l->token, the token is recorded in
 * the same transaction: -EALREADY (nothing registered) when a concurrent
 * request recorded it first.  *ret_ids (n strings of ID_MAX_SIZE,
 * caller frees) and the reservation id. */
int instance_manager_launch(struct instance_manager *m, const char *region,
                            const struct instance_launch *l, char ret_reservation[ID_MAX_SIZE],
                            char (**ret_ids)[ID_MAX_SIZE], size_t *ret_n);

/* Terminated instances vanish as in EC2: instance_expired() is true for a
 * row terminated at least retention_ms before `now` (unix ms); the API
 * treats such a row as gone.  instance_manager_expire() deletes the rows
 * of `region` that expired by `now` (0: the clock), with their tags and
 * group links, then their directories (console.log included), each under
 * the instance's hold lock; it runs when the manager starts and before
 * each DescribeInstances.  Returns how many went.  A crash between the
 * delete and the directory's removal leaves a directory without a row,
 * which no one reads. */
int64_t instance_manager_terminated_retention_ms(const struct instance_manager *m);
bool instance_expired(const struct registry_instance *row, int64_t retention_ms, int64_t now);
int instance_manager_expire(struct instance_manager *m, const char *region, int64_t now);

/* Kill the QEMU of instance directory `dir` if it runs (its pid from
 * DIR/qemu.pid, checked against /proc/PID/cmdline naming DIR/qmp.sock), and
 * wait for it to be gone.  `id` names it in the log. */
void instance_kill_qemu(const char *id, const char *dir);

/* The instance directory (a new string). */
char *instance_manager_dir(struct instance_manager *m, const char *region, const char *instance_id);

/* The tag that gives an instance's guest the network beyond the metadata
 * service (QEMU's slirp with restrict=off; docs/vm.md, "Networking"): set
 * by kiln itself on a bake's build VMs (apt-get in a shell step); the API
 * refuses every kiln: tag key. */
#define INSTANCE_TAG_EGRESS "kiln:egress"

/* Reason codes the manager records (StateReason). */
#define INSTANCE_REASON_DAEMON_STOPPED "Server.ScheduledStop"
#define INSTANCE_REASON_DAEMON_STOPPED_MESSAGE                                                     \
    "Server.ScheduledStop: kiln serve stopped; the instance starts again with it"

#endif
