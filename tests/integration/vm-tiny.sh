#!/bin/sh
# The tiny base image boots for real under TCG: `kiln base-image build tiny`
# registers it under the provider account; a volume of its snapshot boots
# with `kiln vm boot`; the agent answers hello, runs commands (output and
# exit status), puts and gets files, syncs, freezes and thaws; a file put in
# the first boot is there in the second; the guest powers off through the
# agent, through QMP and on SIGTERM to kiln (a third boot, whose
# accelerator the KVM probe chose and cached), and QEMU exits 0 each time;
# the console shows the banner with an SMBIOS uuid beginning with ec2.  Bad input is refused
# precisely.
#
# The .debs are cached in $KILN_VM_CACHE, default
# ${XDG_CACHE_HOME:-~/.cache}/kiln-test-debs, shared by every build
# directory (CI's gcc and sanitizer runs): the first run downloads them
# (apt-get download), later runs are offline.
. "$(dirname "$0")/functions.sh"
requires qemu-system-x86_64 dpkg-deb mkfs.ext4 python3 cmp
export KILN_ACCEL=tcg
tiny_cache

# ---- bad input, before anything exists ----
expect_fail kiln base-image build huge
expect_stderr "unknown base image 'huge'"
expect_fail kiln vm boot vol-0123456789abcdef0
expect_stderr "vol-0123456789abcdef0"
expect_fail kiln vm agent "$T/nonexistent.sock" hello --timeout 2
expect_stderr "cannot connect"
expect_fail kiln vm qmp "$T/nonexistent.sock" status
expect_stderr "cannot connect"
expect_fail kiln vm agent "$T/x.sock" frobnicate
expect_stderr "bad verb"
blank=$(kiln volume create --size 1 | tail -n 1)
expect_fail kiln vm boot "$blank" --dir "$T/blank"
expect_stderr "no ext4 file system"

# ---- build and register ----
base_image_build tiny "$cache"
ami=$(sed -n 1p "$T/ids")
snap=$(sed -n 2p "$T/ids")
echo "$ami" | grep -Eq '^ami-[0-9a-f]{17}$' || die "build printed '$ami'"
echo "$snap" | grep -Eq '^snap-[0-9a-f]{17}$' || die "build printed '$snap'"
grep -q "registered 'kiln/images/tiny-x86_64-" "$T/build.err" || die "no registration line"
kiln image list > "$T/images"
grep "$ami" "$T/images" | grep -q "kiln/images/tiny-x86_64-" || die "the image is not listed"
kiln account list > "$T/accounts"
grep -q "kiln" "$T/accounts" || die "no provider account 'kiln': $(cat "$T/accounts")"

# ---- first boot ----
vol=$(kiln volume create --snapshot "$snap" | tail -n 1)
dir=$T/i
boot_pid=
kill_boot() { [ -z "$boot_pid" ] || kill -9 "$boot_pid" 2>/dev/null || true; }
on_cleanup kill_boot
kill_qemu() { [ -f "$dir/qemu.pid" ] && kill -9 "$(cat "$dir/qemu.pid")" 2>/dev/null || true; }
on_cleanup kill_qemu

# "$KILN" itself in the background (not the kiln function, whose subshell
# would take the signals meant for kiln).
boot() {
    "$KILN" vm boot "$vol" --dir "$dir" 2> "$T/boot.err" &
    boot_pid=$!
}
wait_boot() {
    _rc=0
    wait "$boot_pid" || _rc=$?
    boot_pid=
    [ "$_rc" = 0 ] || { cat "$T/boot.err" "$dir/qemu.log" >&2; die "kiln vm boot exited $_rc ($1)"; }
    grep -q "qemu exited with status 0" "$T/boot.err" || die "qemu did not exit 0 ($1)"
}
agent() {
    kiln vm agent "$dir/agent.sock" "$@"
}

boot
agent hello --timeout 600 > "$T/hello" || { cat "$T/boot.err" >&2; die "no hello"; }
grep -q "^kiln-agent 1 on Linux .* x86_64$" "$T/hello" || die "hello said '$(cat "$T/hello")'"
kver=$(cat "$cache/kernel-package" | sed 's/^linux-image-//')
assert_eq "$(agent exec uname -r)" "$kver" "uname -r in the guest"
agent exec cat /proc/cmdline > "$T/cmdline"
grep -q "console=ttyS0 root=/dev/vda" "$T/cmdline" || die "cmdline: $(cat "$T/cmdline")"

# exec: both streams and the exit status.
rc=0
agent exec sh -c 'echo out; echo err >&2; exit 3' > "$T/out" 2> "$T/err" || rc=$?
assert_eq "$rc" 3 "exit status of the guest command"
assert_eq "$(cat "$T/out")" "out" "guest stdout"
assert_eq "$(cat "$T/err")" "err" "guest stderr"
expect_fail agent exec /no/such/program
expect_stderr "cannot run '/no/such/program': No such file or directory"

# put (several 64 KiB chunks), get, compare; mode kept; refusals.
head -c 300000 /dev/urandom > "$T/blob"
agent put "$T/blob" /root/blob 600 || die "put failed"
agent get /root/blob "$T/blob.back" || die "get failed"
cmp "$T/blob" "$T/blob.back" || die "the file read back differs"
assert_eq "$(agent exec stat -c %a /root/blob)" 600 "mode of the put file"
expect_fail agent get /root/nonexistent "$T/none"
expect_stderr "cannot open '/root/nonexistent'"
[ ! -e "$T/none" ] || die "a failed get left a file"
expect_fail agent put "$T/blob" /no/such/dir/f
expect_stderr "cannot create '/no/such/dir/f'"
expect_fail agent get /proc "$T/none"
expect_stderr "not a regular file"
# exec with stdin: several 64 KiB chunks in, the digest out.
want=$(sha256sum < "$T/blob" | cut -d' ' -f1)
got=$(agent --stdin "$T/blob" exec sha256sum | cut -d' ' -f1)
assert_eq "$got" "$want" "sha256sum of stdin in the guest"
# A command that writes 2 MB before it reads its 3 MB of input (far more
# than the pipes and socket buffers between them hold): input and output
# must flow at once, neither end waiting for the other.
head -c 3000000 /dev/urandom > "$T/big"
agent --stdin "$T/big" exec sh -c 'head -c 2000000 /dev/zero | tr "\0" x; echo; wc -c' \
    > "$T/mixed" || die "write-before-read exec failed"
assert_eq "$(tail -n 1 "$T/mixed" | tr -d ' ')" 3000000 "input taken after output"
assert_eq "$(head -n 1 "$T/mixed" | tr -d x | wc -c)" 1 "output before input"
assert_eq "$(head -n 1 "$T/mixed" | wc -c)" 2000001 "all of the output"
: > "$T/empty"
assert_eq "$(agent --stdin "$T/empty" exec wc -c)" 0 "an empty stdin"
agent sync || die "sync failed"
agent freeze / || die "freeze failed"
agent thaw / || die "thaw failed"

# A host that vanishes mid-frame: the agent skips the debris.
python3 - "$dir/agent.sock" <<'PY' || die "cannot send a partial frame"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b'junk' + struct.pack('>IHHII', 0x4b414731, 2, 0, 1, 100) + b'part')
s.close()
PY
agent hello --timeout 60 > /dev/null || die "no hello after a broken connection"
assert_eq "$(agent exec echo still here)" "still here" "the agent after a reconnect"

# Console: the banner, and the SMBIOS uuid as EC2's.
assert_eq "$(kiln vm qmp "$dir/qmp.sock" status)" running "QMP query-status"
grep -q "=== kiln tiny: booted (uuid ec2" "$dir/console.log" ||
    die "no banner with an ec2 uuid: $(tail -n 20 "$dir/console.log")"

# Power off through the agent.
agent poweroff || die "agent poweroff failed"
wait_boot "agent poweroff"

# ---- second boot: the file is still there; QMP powers it off ----
boot
agent hello --timeout 600 > /dev/null || die "no hello in the second boot"
agent get /root/blob "$T/blob.2" || die "get in the second boot failed"
cmp "$T/blob" "$T/blob.2" || die "the file differs after a reboot"
kiln vm qmp "$dir/qmp.sock" powerdown || die "QMP powerdown failed"
wait_boot "QMP powerdown"
[ ! -e "$dir/qemu.pid" ] || die "the pidfile outlived QEMU"

# ---- third boot: no KILN_ACCEL, so the probe decides (and caches its
# verdict for this host boot); SIGTERM to kiln powers the guest off ----
rm -f "$KILN_DATA_DIR/vm/accel"
KILN_ACCEL= # empty: as if unset
boot
KILN_ACCEL=tcg
agent hello --timeout 600 > /dev/null || die "no hello in the third boot"
read -r cached_boot verdict < "$KILN_DATA_DIR/vm/accel" || die "no cached accelerator verdict"
assert_eq "$cached_boot" "$(cat /proc/sys/kernel/random/boot_id)" "the verdict's boot id"
grep -q "booting '$vol' (q35, $verdict," "$T/boot.err" ||
    die "booted with another accelerator than the verdict '$verdict': $(cat "$T/boot.err")"
kill -TERM "$boot_pid"
wait_boot "SIGTERM"
grep -q "SIGTERM: powering the guest off" "$T/boot.err" || die "SIGTERM was not reported"

assert_fsck_clean "after two boots"
