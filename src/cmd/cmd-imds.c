/* kiln imds-serve DIR: one guest connection to the instance metadata
 * service.  QEMU's guestfwd runs it with the connection as stdin, stdout
 * and stderr (docs/imds.md), so nothing may go to stderr: messages go to
 * DIR/imds.log. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "common/error.h"
#include "common/util.h"
#include "imds/imds.h"

int cmd_imds_serve(struct cli *cli, int argc, char **argv)
{
    (void)cli;
    if (argc != 2 || argv[1][0] != '/') {
        /* stderr may be the guest's socket: say nothing, fail */
        return EXIT_USAGE;
    }
    const char *dir = argv[1];
    char *log = xasprintf("%s/imds.log", dir);
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    free(log);
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        fd = null;
    if (fd < 0 || dup2(fd, STDERR_FILENO) < 0)
        return 1;
    int r = imds_serve(dir, STDIN_FILENO, STDOUT_FILENO);
    if (r < 0) {
        fprintf(stderr, "kiln imds-serve: %s\n", error_message() ? error_message() : strerror(-r));
        return 1;
    }
    return 0;
}
