/* src/vm and src/agent/proto.c: the QEMU command line, the SMBIOS UUID,
 * the QMP message parser, the agent protocol's encoders and parsers, the
 * boot files read out of an ext4 image, the accelerator override and
 * cache. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/proto.h"
#include "common/util.h"
#include "tap.h"
#include "vm/vm.h"

static bool argv_has(char **v, const char *a, const char *b)
{
    for (; *v; v++)
        if (strcmp(v[0], a) == 0 && (!b || (v[1] && strcmp(v[1], b) == 0)))
            return true;
    return false;
}

static void test_argv(void)
{
    struct vm_config c = {
        .dir = "/run/kiln/i-1",
        .nbd_socket = "/run/kiln/i-1/nbd.sock",
        .kernel = "/run/kiln/i-1/vmlinuz",
        .initrd = "/run/kiln/i-1/initrd.img",
        .append = "quiet",
        .uuid = "ec2a1b2c-0000-4000-8000-000000000001",
        .vcpus = 2,
        .memory_mib = 512,
        .accel = VM_ACCEL_TCG,
        .ssh_address = "127.0.3.7",
        .ssh_port = 22,
    };
    char **v = NULL;

    is_int(vm_argv_build(&c, &v), 0, "a full config builds");
    is_str(v[0], "qemu-system-x86_64", "qemu from PATH");
    ok(argv_has(v, "-nodefaults", NULL) && argv_has(v, "-no-user-config", NULL),
       "no default devices, no user config");
    ok(argv_has(v, "-machine", "q35") && argv_has(v, "-accel", "tcg"), "q35 under TCG");
    ok(argv_has(v, "-m", "512") && argv_has(v, "-smp", "2"), "memory and vCPUs");
    ok(argv_has(v, "-smbios", "type=1,uuid=ec2a1b2c-0000-4000-8000-000000000001,"
                              "serial=ec2a1b2c-0000-4000-8000-000000000001"),
       "SMBIOS type 1 uuid and serial");
    ok(argv_has(v, "-kernel", "/run/kiln/i-1/vmlinuz") &&
           argv_has(v, "-initrd", "/run/kiln/i-1/initrd.img"),
       "kernel and initrd");
    ok(argv_has(v, "-append", "console=ttyS0 root=/dev/vda rw panic=-1 quiet"),
       "the kernel command line");
    ok(argv_has(v, "-drive", "file=nbd+unix:///?socket=/run/kiln/i-1/nbd.sock,format=raw,"
                             "if=none,id=root,cache=none,aio=threads"),
       "the root disk is the NBD export");
    ok(argv_has(v, "-device", "virtserialport,bus=vser.0,chardev=agent,name=org.kiln.agent.0"),
       "the agent's port");
    ok(argv_has(v, "-chardev", "socket,id=agent,path=/run/kiln/i-1/agent.sock,server=on,wait=off"),
       "the agent's socket");
    ok(argv_has(v, "-netdev", "user,id=net0,hostfwd=tcp:127.0.3.7:22-:22"), "ssh forward");
    ok(!argv_has(v, "-cpu", NULL), "TCG keeps QEMU's default CPU");
    vm_strv_free(v);

    c.accel = VM_ACCEL_KVM;
    c.ssh_address = NULL;
    c.initrd = NULL;
    is_int(vm_argv_build(&c, &v), 0, "kvm, no forward, no initrd");
    ok(argv_has(v, "-accel", "kvm") && argv_has(v, "-cpu", "host"), "KVM with the host CPU");
    ok(argv_has(v, "-netdev", "user,id=net0") && !argv_has(v, "-initrd", NULL),
       "user networking without forwards; no -initrd");
    vm_strv_free(v);

    c.netdev_extra = "net=169.254.0.0/16,restrict=on";
    c.ssh_address = "127.0.3.7";
    c.ssh_port = 2222;
    is_int(vm_argv_build(&c, &v), 0, "netdev options");
    ok(argv_has(v, "-netdev",
                "user,id=net0,hostfwd=tcp:127.0.3.7:2222-:22,net=169.254.0.0/16,restrict=on"),
       "netdev options follow the forward");
    vm_strv_free(v);
    c.ssh_address = NULL;
    c.netdev_extra = NULL;

    struct vm_config bad = c;
    v = NULL;
    bad.nbd_socket = "/tmp/a,b.sock";
    is_int(vm_argv_build(&bad, &v), -EINVAL, "a comma in a path is refused");
    bad = c;
    bad.ssh_address = "10.0.0.1";
    bad.ssh_port = 22;
    is_int(vm_argv_build(&bad, &v), -EINVAL, "a forward outside 127.0.0.0/8 is refused");
    bad.ssh_address = "127.0.0.1";
    bad.ssh_port = 0;
    is_int(vm_argv_build(&bad, &v), -EINVAL, "port 0 is refused");
    bad = c;
    bad.uuid = "0a1b2c3d-0000-4000-8000-000000000001";
    is_int(vm_argv_build(&bad, &v), -EINVAL, "a UUID not beginning with ec2 is refused");
    bad = c;
    bad.dir = "/tmp/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
              "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    is_int(vm_argv_build(&bad, &v), -ENAMETOOLONG, "a socket path too long for sun_path");
    bad = c;
    bad.append = "a\nb";
    is_int(vm_argv_build(&bad, &v), -EINVAL, "a newline in the kernel arguments");
    bad = c;
    bad.netdev_extra = "restrict=on\nx";
    is_int(vm_argv_build(&bad, &v), -EINVAL, "a newline in the netdev options");
    ok(v == NULL, "nothing returned on failure");

    char u[37], u2[37];
    vm_uuid_generate(u);
    vm_uuid_generate(u2);
    ok(strlen(u) == 36 && strncmp(u, "ec2", 3) == 0 && u[8] == '-' && u[14] == '4',
       "uuid '%s' begins with ec2 and is version 4", u);
    ok(strcmp(u, u2) != 0, "two uuids differ");
}

static int qmp(const char *s, struct qmp_message *m)
{
    return qmp_message_parse(s, strlen(s), m);
}

static void test_qmp(void)
{
    struct qmp_message m;

    is_int(qmp("{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, "
               "\"package\": \"Debian\"}, \"capabilities\": [\"oob\"]}}", &m), 0, "greeting");
    is_int(m.kind, QMP_GREETING, "  is a greeting");
    qmp_message_release(&m);
    is_int(qmp("{\"return\": {}}", &m), 0, "empty return");
    is_int(m.kind, QMP_RETURN, "  is a return");
    qmp_message_release(&m);
    is_int(qmp("{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}}",
               &m), 0, "query-status");
    is_str(m.status, "running", "  status");
    ok(m.running, "  running");
    qmp_message_release(&m);
    is_int(qmp("{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command x has "
               "not been found \\u00e9\\ud83d\\ude00\"}, \"id\": \"7\"}", &m), 0, "error");
    is_int(m.kind, QMP_ERROR, "  is an error");
    is_str(m.error_class, "CommandNotFound", "  class");
    is_str(m.error_desc, "The command x has not been found \xc3\xa9\xf0\x9f\x98\x80",
           "  desc unescaped to UTF-8");
    is_str(m.id, "7", "  id");
    qmp_message_release(&m);
    is_int(qmp("{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"SHUTDOWN\", "
               "\"data\": {\"guest\": true, \"reason\": \"guest-shutdown\"}}", &m), 0, "event");
    is_str(m.event, "SHUTDOWN", "  name");
    qmp_message_release(&m);

    is_int(qmp("{\"return\": {}} x", &m), -EBADMSG, "trailing bytes");
    is_int(qmp("{\"return\": {}, \"error\": {\"class\": \"a\", \"desc\": \"b\"}}", &m), -EBADMSG,
           "two kinds at once");
    is_int(qmp("{\"error\": {\"class\": \"a\"}}", &m), -EBADMSG, "an error without desc");
    is_int(qmp("{\"event\": 3}", &m), -EBADMSG, "an event name that is not a string");
    is_int(qmp("{\"foo\": 1}", &m), -EBADMSG, "no kind");
    is_int(qmp("[1]", &m), -EBADMSG, "not an object");
    is_int(qmp("{\"return\": \"\\ud800\"}", &m), -EBADMSG, "a lone surrogate");
    is_int(qmp("{\"return\": \"\\u0000\"}", &m), -EBADMSG, "a NUL escape");
    is_int(qmp("{\"return\": 01}", &m), -EBADMSG, "a leading zero");
    is_int(qmp("{\"return\": tru}", &m), -EBADMSG, "a truncated literal");
    is_int(qmp("{\"return\": \"a\x01\"}", &m), -EBADMSG, "a control character in a string");
    char deep[200] = "{\"return\": ";
    size_t dl = strlen(deep);
    memset(deep + dl, '[', 40);
    deep[dl + 40] = 0;
    is_int(qmp(deep, &m), -EMSGSIZE, "nesting deeper than 32");
    is_int(qmp_message_parse("{\"return\": {}}", 1U << 21, &m), -EMSGSIZE, "over 1 MiB");
}

static void test_agent_proto(void)
{
    char *argv[] = { (char *)"ls", (char *)"-l", (char *)"/", NULL };
    char *env[] = { (char *)"A=1", NULL };
    struct agent_exec_request e;
    struct agent_header h;
    struct agent_msg m;
    uint8_t hdr[AGENT_HEADER_SIZE];

    is_int(agent_exec_encode(&m, 42, AGENT_EXEC_STDIN, argv, env), 0, "exec encodes");
    is_int(agent_header_decode(m.data, &h), 0, "its header decodes");
    ok(h.type == AGENT_EXEC && h.id == 42 && h.length == m.len - AGENT_HEADER_SIZE,
       "  type, id, length");
    is_int(agent_exec_parse(m.data + AGENT_HEADER_SIZE, h.length, &e), 0, "exec parses");
    ok(e.flags == AGENT_EXEC_STDIN && strcmp(e.argv[0], "ls") == 0 &&
           strcmp(e.argv[2], "/") == 0 && !e.argv[3] && strcmp(e.env[0], "A=1") == 0 &&
           !e.env[1],
       "  round trip");
    agent_exec_request_release(&e);
    is_int(agent_exec_parse(m.data + AGENT_HEADER_SIZE, h.length - 1, &e), -EBADMSG,
           "a truncated exec");
    agent_msg_put_u32(&m, 0);
    is_int(agent_exec_parse(m.data + AGENT_HEADER_SIZE, m.len - AGENT_HEADER_SIZE, &e),
           -EBADMSG, "trailing bytes");
    agent_msg_release(&m);

    char *empty[] = { (char *)"", NULL };
    is_int(agent_exec_encode(&m, 1, 0, empty, NULL), 0, "an empty program name encodes");
    is_int(agent_exec_parse(m.data + AGENT_HEADER_SIZE, m.len - AGENT_HEADER_SIZE, &e),
           -EBADMSG, "but does not parse");
    agent_msg_release(&m);

    /* A string with a NUL inside. */
    agent_msg_init(&m, AGENT_EXEC, 1);
    agent_msg_put_u32(&m, 0);
    agent_msg_put_u32(&m, 1);
    agent_msg_put_u32(&m, 3);
    agent_msg_put_bytes(&m, "a\0b", 3);
    agent_msg_put_u32(&m, 0);
    is_int(agent_exec_parse(m.data + AGENT_HEADER_SIZE, m.len - AGENT_HEADER_SIZE, &e),
           -EBADMSG, "a NUL inside an argument");
    agent_msg_release(&m);
    /* Too many arguments. */
    agent_msg_init(&m, AGENT_EXEC, 1);
    agent_msg_put_u32(&m, 0);
    agent_msg_put_u32(&m, AGENT_MAX_ARGS + 1);
    is_int(agent_exec_parse(m.data + AGENT_HEADER_SIZE, m.len - AGENT_HEADER_SIZE, &e),
           -EMSGSIZE, "more than AGENT_MAX_ARGS arguments");
    agent_msg_release(&m);

    agent_header_encode(hdr, AGENT_OK, 7, AGENT_MAX_PAYLOAD + 1);
    is_int(agent_header_decode(hdr, &h), -EMSGSIZE, "a payload over the limit");
    agent_header_encode(hdr, AGENT_OK, 7, 0);
    hdr[0] ^= 1;
    is_int(agent_header_decode(hdr, &h), -EBADMSG, "a bad magic");
    agent_header_encode(hdr, AGENT_OK, 7, 0);
    hdr[7] = 1;
    is_int(agent_header_decode(hdr, &h), -EBADMSG, "non-zero flags");

    const uint8_t junk[] = { 'x', 'K', 'y', 'K', 'A', 'G', '1', 0 };
    is_int((int)agent_resync(junk, sizeof(junk)), 3, "resync finds the magic");
    is_int((int)agent_resync(junk, 5), 3, "resync keeps a partial magic at the end");
    is_int((int)agent_resync(junk, 2), 1, "resync keeps a partial 'K' at the end");
    is_int((int)agent_resync(junk, 3), 3, "but not a 'K' followed by something else");
    is_int((int)agent_resync((const uint8_t *)"xyz", 3), 3, "resync drops garbage");

    agent_msg_init(&m, AGENT_ERROR, 9);
    agent_msg_put_u32(&m, ENOENT);
    agent_msg_put_string(&m, "no such file");
    is_int(agent_msg_finish(&m), 0, "an error frame");
    uint32_t err;
    char *msg;
    is_int(agent_error_parse(m.data + AGENT_HEADER_SIZE, m.len - AGENT_HEADER_SIZE, &err, &msg),
           0, "parses");
    ok(err == ENOENT && strcmp(msg, "no such file") == 0, "  errno and message");
    free(msg);
    agent_msg_release(&m);

    agent_msg_init(&m, AGENT_PUT_DATA, 1);
    static uint8_t big[AGENT_MAX_PAYLOAD];
    agent_msg_put_bytes(&m, big, sizeof(big));
    agent_msg_put_u32(&m, 1);
    is_int(agent_msg_finish(&m), -EMSGSIZE, "a frame over the limit is refused when built");
    agent_msg_release(&m);
}

/* ---- boot files ---- */

static int file_read(void *ud, void *buf, size_t len, uint64_t off)
{
    ssize_t n = pread_full(*(int *)ud, buf, len, (off_t)off);
    return n == (ssize_t)len ? 0 : -EIO;
}

static int mkfs(const char *tree, const char *img)
{
    char cmd[1024];

    snprintf(cmd, sizeof(cmd),
             "PATH=$PATH:/sbin:/usr/sbin; rm -f %s; truncate -s 16M %s && "
             "mkfs.ext4 -q -F -d %s %s >/dev/null 2>&1",
             img, img, tree, img);
    return system(cmd);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = calloc(1, 4096);

    if (f) {
        if (fread(buf, 1, 4095, f) == 0)
            buf[0] = 0;
        fclose(f);
    }
    return buf;
}

static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_boot_files(void)
{
    char dir[] = "/tmp/kiln-test-vm.XXXXXX", cmd[256];
    bool has_initrd = false;

    if (system("PATH=$PATH:/sbin:/usr/sbin command -v mkfs.ext4 >/dev/null") != 0) {
        ok(1, "# SKIP mkfs.ext4 missing");
        return;
    }
    ok(mkdtemp(dir) != NULL, "a scratch directory");
    char *tree = xasprintf("%s/tree", dir), *img = xasprintf("%s/disk.img", dir);
    char *boot = xasprintf("%s/boot", tree), *out = xasprintf("%s/out", dir);
    mkdir(tree, 0755);
    mkdir(boot, 0755);
    mkdir(out, 0755);
    char *p;
    put(p = xasprintf("%s/vmlinuz-6.1.0-9-amd64", boot), "old kernel");
    free(p);
    put(p = xasprintf("%s/vmlinuz-6.1.0-10-amd64", boot), "new kernel");
    free(p);
    put(p = xasprintf("%s/initrd.img-6.1.0-10-amd64", boot), "new initrd");
    free(p);
    is_int(mkfs(tree, img), 0, "an ext4 image with two kernels in /boot");
    int fd = open(img, O_RDONLY);
    struct vm_disk d = { file_read, &fd, 16 << 20 };
    is_int(vm_boot_files_extract(&d, out, &has_initrd), 0, "boot files extracted");
    char *k = xasprintf("%s/vmlinuz", out), *i = xasprintf("%s/initrd.img", out);
    char *kt = slurp(k), *it = slurp(i);
    is_str(kt, "new kernel", "the newest kernel (version order, not byte order)");
    is_str(it, "new initrd", "its initrd");
    ok(has_initrd, "  reported");
    free(kt);
    free(it);
    close(fd);

    /* /vmlinuz symlink wins; no initrd. */
    snprintf(cmd, sizeof(cmd), "rm %s/initrd.img-6.1.0-10-amd64 && ln -s boot/vmlinuz-6.1.0-9-amd64 "
             "%s/vmlinuz", boot, tree);
    is_int(system(cmd), 0, "a /vmlinuz symlink to the older kernel");
    is_int(mkfs(tree, img), 0, "  in a new image");
    fd = open(img, O_RDONLY);
    is_int(vm_boot_files_extract(&d, out, &has_initrd), 0, "boot files extracted");
    kt = slurp(k);
    is_str(kt, "old kernel", "the symlink is followed inside the image");
    ok(!has_initrd && access(i, F_OK) != 0, "no initrd, and none left from before");
    free(kt);
    close(fd);

    /* No kernel; no file system. */
    snprintf(cmd, sizeof(cmd), "rm -f %s/vmlinuz %s/vmlinuz-*", tree, boot);
    is_int(system(cmd), 0, "kernels removed");
    is_int(mkfs(tree, img), 0, "  in a new image");
    fd = open(img, O_RDONLY);
    is_int(vm_boot_files_extract(&d, out, &has_initrd), -ENOENT, "no kernel: -ENOENT");
    close(fd);
    put(img, "not a file system");
    fd = open(img, O_RDONLY);
    d.size = 17;
    is_int(vm_boot_files_extract(&d, out, &has_initrd), -EBADMSG, "no ext4: -EBADMSG");
    close(fd);

    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    is_int(system(cmd), 0, "cleaned up");
    free(tree);
    free(img);
    free(boot);
    free(out);
    free(k);
    free(i);
}

static void test_accel(void)
{
    char dir[] = "/tmp/kiln-test-accel.XXXXXX", boot_id[64] = "", cmd[256];
    enum vm_accel a = VM_ACCEL_KVM;
    FILE *f;

    setenv("KILN_ACCEL", "tcg", 1);
    is_int(vm_accel_detect("/nonexistent", NULL, NULL, 1000, &a), 0, "KILN_ACCEL=tcg");
    is_int(a, VM_ACCEL_TCG, "  gives TCG");
    setenv("KILN_ACCEL", "kvm", 1);
    is_int(vm_accel_detect("/nonexistent", NULL, NULL, 1000, &a), 0, "KILN_ACCEL=kvm");
    is_int(a, VM_ACCEL_KVM, "  gives KVM");
    setenv("KILN_ACCEL", "hvf", 1);
    is_int(vm_accel_detect("/nonexistent", NULL, NULL, 1000, &a), -EINVAL, "KILN_ACCEL=hvf");
    unsetenv("KILN_ACCEL");

    /* A cached verdict for this boot is used without probing (no kernel
     * given: a probe would fail). */
    f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (!f || !fgets(boot_id, sizeof(boot_id), f)) {
        ok(1, "# SKIP no boot_id");
        if (f)
            fclose(f);
        return;
    }
    fclose(f);
    boot_id[strcspn(boot_id, "\n")] = 0;
    ok(mkdtemp(dir) != NULL, "a scratch data directory");
    char *vmdir = xasprintf("%s/vm", dir), *cache = xasprintf("%s/vm/accel", dir);
    mkdir(vmdir, 0755);
    f = fopen(cache, "w");
    fprintf(f, "%s kvm\n", boot_id);
    fclose(f);
    a = VM_ACCEL_TCG;
    is_int(vm_accel_detect(dir, NULL, NULL, 1000, &a), 0, "the cached verdict");
    is_int(a, VM_ACCEL_KVM, "  is used");
    f = fopen(cache, "w");
    fprintf(f, "00000000-0000-0000-0000-000000000000 kvm\n");
    fclose(f);
    int r = vm_accel_detect(dir, NULL, NULL, 1000, &a);
    if (access("/dev/kvm", R_OK | W_OK) == 0)
        is_int(r, -EINVAL, "a verdict from another boot is not used (a probe needs a kernel)");
    else
        ok(r == 0 && a == VM_ACCEL_TCG, "a verdict from another boot is not used (no KVM: TCG)");
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    is_int(system(cmd), 0, "cleaned up");
    free(vmdir);
    free(cache);
}

int main(void)
{
    test_argv();
    test_qmp();
    test_agent_proto();
    test_boot_files();
    test_accel();
    return done_testing();
}
