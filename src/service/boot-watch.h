/* The boot of a volume with its boot profile (boot-watch.c), shared by
 * `kiln vm boot` (src/cmd/cmd-vm.c) and the instance manager
 * (instances.c): start the profile of the volume's snapshot (prefetch it,
 * or record this boot into it), then watch for the guest agent's hello in
 * a thread, which ends the boot (the profile is saved) and writes
 * DIR/boot-stats (docs/operations.md).
 *
 * The watcher never holds the agent: the agent serves one client at a
 * time, so it connects for at most BOOT_WATCH_ATTEMPT_MS at a time, says
 * hello and hangs up at once.  A client that connects meanwhile (CreateImage's
 * freeze, a test, `kiln vm agent`) waits in QEMU's listen queue and is
 * served next; the agent client says hello again until its deadline.
 */
#ifndef KILN_SERVICE_BOOT_WATCH_H
#define KILN_SERVICE_BOOT_WATCH_H

#include <stdint.h>

#include "service/service.h"
#include "volume/volume.h"

/* The longest one attempt holds the agent's socket before the guest's
 * hello, and so about the longest service_boot_watch_free() waits. */
#define BOOT_WATCH_ATTEMPT_MS 1000

struct boot_watch;

/* Start the boot profile of `volume_id`'s snapshot on its open volume `v`
 * (volume_boot_start() with DATA/regions/R/profiles/SNAP.profile):
 * 1 when prefetching, 0 when recording or when there is nothing to do
 * (a blank volume, or none made from a snapshot), -errno (message set)
 * when the profile could not be started; the boot goes on without it.
 * Call it before the volume is shared between threads. */
int service_boot_profile_start(struct region *r, const char *volume_id, struct volume *v,
                               const struct volume_boot_options *o);

/* Start watching for the agent's hello on `agent_socket`: at the hello,
 * volume_boot_finish(v) and DIR/boot-stats (times from `start_ns`, a
 * now_ns() value; `files`, the volume's counters after the boot files were
 * read, or NULL).  Any earlier DIR/boot-stats is removed first.  `v` is
 * borrowed: it must stay open until service_boot_watch_free().  0, or
 * -errno when the thread could not start. */
int service_boot_watch_new(struct volume *v, const char *dir, const char *agent_socket,
                           uint64_t start_ns, const struct volume_stats *files,
                           struct boot_watch **ret);

/* Stop watching (within about BOOT_WATCH_ATTEMPT_MS), join the thread and
 * free the watch.  After it returns, the volume is no longer touched.
 * Accepts NULL. */
void service_boot_watch_free(struct boot_watch *w);

#endif
