/* boot-floor: the floor of bench/boot: run QEMU exactly as `kiln vm boot`
 * does (vm_argv_build(): machine, kernel, initrd, kernel command line,
 * console, QMP and agent sockets, the metadata network), except that the
 * root disk is a local raw file instead of kiln's NBD export.
 *
 *   boot-floor DIR KERNEL INITRD|- RAW KILN [tcg|kvm [VCPUS MEMORY_MIB]]
 *
 * VCPUS and MEMORY_MIB default to `kiln vm boot`'s (1 and 256); the
 * RunInstances bench passes its instance type's.  KILN is the kiln executable the metadata network's guestfwd runs.  Execs
 * QEMU in place (its pid is this process's). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"
#include "imds/imds.h"
#include "vm/vm.h"

int main(int argc, char **argv)
{
    struct vm_config c = { 0 };
    char uuid[37], **qargv = NULL, *netdev = NULL;

    if (argc < 6 || argc == 8 || argc > 9) {
        fprintf(stderr,
                "usage: boot-floor DIR KERNEL INITRD|- RAW KILN [tcg|kvm [VCPUS MEMORY_MIB]]\n");
        return 2;
    }
    char *dir = realpath(argv[1], NULL);
    if (!dir) {
        perror(argv[1]);
        return 1;
    }
    vm_uuid_generate(uuid);
    char *sock = xasprintf("%s/nbd.sock", dir);
    c.dir = dir;
    c.nbd_socket = sock; /* replaced below */
    c.kernel = argv[2];
    c.initrd = strcmp(argv[3], "-") == 0 ? NULL : argv[3];
    c.uuid = uuid;
    if (argc == 9) {
        c.vcpus = (unsigned)strtoul(argv[7], NULL, 10);
        c.memory_mib = (unsigned)strtoul(argv[8], NULL, 10);
    }
    c.accel = argc >= 7 && strcmp(argv[6], "kvm") == 0 ? VM_ACCEL_KVM : VM_ACCEL_TCG;
    int e = imds_netdev_options(dir, argv[5], 0, &netdev);
    if (e >= 0) {
        c.netdev_extra = netdev;
        e = vm_argv_build(&c, &qargv);
    }
    if (e < 0) {
        fprintf(stderr, "boot-floor: %s\n", error_message() ? error_message() : strerror(-e));
        return 1;
    }
    for (size_t i = 0; qargv[i]; i++) {
        if (strncmp(qargv[i], "file=nbd+unix:", 14) == 0) {
            qargv[i] = xasprintf("file=%s,format=raw,if=none,id=root,cache=none,aio=threads",
                                 argv[4]);
        }
    }
    execvp(qargv[0], qargv);
    fprintf(stderr, "boot-floor: cannot run '%s': %s\n", qargv[0], strerror(errno));
    return 1;
}
