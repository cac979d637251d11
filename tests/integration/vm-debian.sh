#!/bin/sh
# The debian base image boots for real under TCG (docs/vm.md, "The debian
# image"): `kiln base-image build debian` registers it under the provider
# account; a volume of its snapshot boots with `kiln vm boot --metadata`
# (the metadata an instance of it would get: a key pair and #cloud-config
# user data) and an ssh forward from a loopback address; unmodified
# cloud-init finds the EC2 datasource, writes the user data's file, runs its
# runcmd (its marker on the console) and finishes without errors; ssh as
# `admin` with the key pair's private key runs a command and sudo; the host
# keys are the ones this boot made (none baked in the image), machine-id is
# this boot's, no account has a password; kiln-agent answers; QMP
# powerdown shuts systemd down cleanly and QEMU exits 0.  The boot times
# (QEMU start to the agent's hello, to sshd, to cloud-init's end) are
# printed, not asserted.
#
# The debootstrap tarball is cached in $KILN_DEBIAN_CACHE, default
# ${XDG_CACHE_HOME:-~/.cache}/kiln-test-debian, shared by every build
# directory: the first run needs the Debian mirror, later runs are offline.
. "$(dirname "$0")/functions.sh"
requires qemu-system-x86_64 debootstrap mkfs.ext4 zstd python3 ssh ssh-keygen
export KILN_ACCEL=tcg
cache=${KILN_DEBIAN_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/kiln-test-debian}
mkdir -p "$cache"

# ---- bad input ----
expect_fail kiln base-image build huge
expect_stderr "unknown base image 'huge' (known: tiny, debian)"
expect_fail env KILN_AGENT="$T/no-agent" "$KILN" base-image build debian --cache-dir "$cache"
expect_stderr "cannot find the recipe '.*/debian/build.sh' or the agent '$T/no-agent'"

# A damaged cached tarball: refused precisely, removed, nothing registered.
mkdir -p "$T/badcache"
key=$(sha256sum < "$SRCDIR/images/debian/rootfs.sh" | cut -c 1-16)
head -c 100000 /dev/urandom > "$T/badcache/debian-rootfs-$key.tar.zst"
expect_fail kiln base-image build debian --cache-dir "$T/badcache"
expect_stderr "the cached '$T/badcache/debian-rootfs-$key.tar.zst' is corrupt: removed"
[ ! -e "$T/badcache/debian-rootfs-$key.tar.zst" ] || die "the corrupt tarball is still cached"
assert_eq "$(kiln image list | grep -c debian-12 || true)" 0 "images after a failed build"

# ---- build and register ----
kiln base-image build debian --cache-dir "$cache" > "$T/ids" 2> "$T/build.err" ||
    { cat "$T/build.err" >&2; die "base-image build failed"; }
ami=$(sed -n 1p "$T/ids")
snap=$(sed -n 2p "$T/ids")
echo "$ami" | grep -Eq '^ami-[0-9a-f]{17}$' || die "build printed '$ami'"
echo "$snap" | grep -Eq '^snap-[0-9a-f]{17}$' || die "build printed '$snap'"
grep -q "registered 'kiln/images/debian-12-x86_64-[0-9]\{8\}-[0-9]\{6\}' (owner .*, public)" \
    "$T/build.err" || die "no registration line: $(cat "$T/build.err")"
kiln image list > "$T/images"
grep "$ami" "$T/images" | grep -q "kiln/images/debian-12-x86_64-" || die "the image is not listed"

# ---- the instance's metadata: a key pair and #cloud-config user data ----
ssh-keygen -q -t ed25519 -N '' -C kiln-test-key -f "$T/key"
marker="kiln-debian-marker-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
cat > "$T/user-data" <<UD
#cloud-config
write_files:
  - path: /etc/kiln-user-data
    content: "written by cloud-init from the user data\n"
    permissions: "0644"
runcmd:
  - echo "$marker ran as \$(id -un)"
UD
python3 - "$T/md" "$T/key.pub" "$T/user-data" <<'PY'
import sys
f = {
    "instance_id": "i-0debd0123456789ab",
    "image_id": "ami-0123456789abcdef0",
    "instance_type": "t3.micro",
    "availability_zone": "eu-west-1a",
    "region": "eu-west-1",
    "account_id": "123456789012",
    "private_ip": "169.254.0.15",
    "mac": "52:54:00:12:34:56",
    "reservation_id": "r-0debd0123456789ab",
    "launch_time": "2026-11-27T12:00:00Z",
    "key_name": "test-key",
    "public_key": open(sys.argv[2]).read().strip(),
    "security_groups": "default",
    "user_data": open(sys.argv[3]).read(),
}
with open(sys.argv[1], "w") as out:
    for k, v in f.items():
        out.write("%s %s\n" % (k, v.encode().hex()))
PY

# ---- boot ----
vol=$(kiln volume create --snapshot "$snap" | tail -n 1)
dir=$T/i
# A loopback address of its own: another build directory may run this test
# at the same time, and kiln serve's instances take 127.100.x.y.
addr=127.102.$(od -An -N2 -tu1 /dev/urandom | awk '{ print $1 % 250 + 2 "." $2 % 250 + 2 }')
boot_pid=
kill_boot() { [ -z "$boot_pid" ] || kill -9 "$boot_pid" 2>/dev/null || true; }
on_cleanup kill_boot
kill_qemu() { [ -f "$dir/qemu.pid" ] && kill -9 "$(cat "$dir/qemu.pid")" 2>/dev/null || true; }
on_cleanup kill_qemu
agent() {
    kiln vm agent "$dir/agent.sock" "$@"
}
# ssh as admin; a connection-level failure (status 255: refused, reset or
# timed out on this loaded machine) is tried again, a command's own status
# is not.  Its stderr is left in $T/ssh.err.
ssh_once() {
    ssh -i "$T/key" -p 22 -o StrictHostKeyChecking=no -o UserKnownHostsFile="$T/known_hosts" \
        -o LogLevel=ERROR -o BatchMode=yes -o ConnectTimeout=30 "admin@$addr" "$@" 2> "$T/ssh.err"
}
guest_ssh() {
    _n=0
    while :; do
        _rc=0
        ssh_once "$@" || _rc=$?
        [ "$_rc" = 255 ] && [ "$_n" -lt 5 ] || return "$_rc"
        _n=$((_n + 1))
        sleep 5
    done
}
elapsed() { echo $(($(date +%s) - t0)); }

t0=$(date +%s)
"$KILN" vm boot "$vol" --dir "$dir" --memory 512 --metadata "$T/md" --ssh "$addr:22" \
    2> "$T/boot.err" &
boot_pid=$!
agent hello --timeout 900 > "$T/hello" || { cat "$T/boot.err" "$dir/qemu.log" >&2; die "no hello"; }
t_hello=$(elapsed)
grep -q "^kiln-agent 1 on Linux .* x86_64$" "$T/hello" || die "hello said '$(cat "$T/hello")'"
agent exec cat /etc/os-release > "$T/os-release"
grep -qx 'VERSION_CODENAME=bookworm' "$T/os-release" || die "os-release: $(cat "$T/os-release")"

# sshd answers once cloud-init made the host keys; the key pair's key gets in.
i=0
until ssh_once true; do
    i=$((i + 1))
    [ "$i" -lt 180 ] || die "no ssh as admin@$addr: $(cat "$T/ssh.err"; tail -n 30 "$dir/console.log")"
    sleep 5
done
t_ssh=$(elapsed)
out=$(guest_ssh id -un) || die "ssh id -un failed: $(cat "$T/ssh.err")"
assert_eq "$out" admin "the ssh user"
out=$(guest_ssh sudo -n id -u) || die "ssh sudo -n id -u failed: $(cat "$T/ssh.err")"
assert_eq "$out" 0 "passwordless sudo for admin"

# cloud-init: finished, without errors, from the Ec2 datasource.
i=0
until grep -q "Cloud-init v\. .* finished at" "$dir/console.log"; do
    i=$((i + 1))
    [ "$i" -lt 600 ] || die "cloud-init did not finish: $(tail -n 30 "$dir/console.log")"
    sleep 1
done
t_ci=$(elapsed)
grep -q "$marker ran as root" "$dir/console.log" ||
    die "no runcmd marker on the console: $(tail -n 30 "$dir/console.log")"
guest_ssh cloud-init status --long > "$T/status" ||
    die "cloud-init status: $(cat "$T/status" "$T/ssh.err")"
grep -q "status: done" "$T/status" || die "cloud-init status: $(cat "$T/status")"
# Every stage's errors, and the datasource (Ec2Local: the EC2 datasource's
# first stage, before the network is up, as on EC2).
agent exec cat /run/cloud-init/result.json > "$T/result.json"
python3 - "$T/result.json" <<'PY' || die "cloud-init result: $(cat "$T/result.json")"
import json, sys
r = json.load(open(sys.argv[1]))["v1"]
assert r["datasource"].startswith("DataSourceEc2"), r
assert r["errors"] == [], r
PY
assert_eq "$(guest_ssh cat /etc/kiln-user-data)" "written by cloud-init from the user data" \
    "the user data's file"
assert_eq "$(agent exec cat /var/lib/cloud/data/instance-id)" i-0debd0123456789ab \
    "cloud-init's instance id"

# Nothing baked: the host keys are this boot's (made after the image was
# built, by cloud-init), machine-id is set, no account has a password.
agent exec sh -c 'ls /etc/ssh/ssh_host_*_key.pub' > "$T/hostkeys" || die "no host keys"
grep -q ed25519 "$T/hostkeys" || die "host keys: $(cat "$T/hostkeys")"
grep -q "BEGIN SSH HOST KEY KEYS" "$dir/console.log" || die "no host keys printed on the console"
agent exec cat /etc/hosts | grep -q "ip-169-254-0-15" || die "/etc/hosts does not name the host"
agent exec cat /etc/machine-id | grep -Eqx '[0-9a-f]{32}' || die "machine-id is not set"
agent exec awk -F: '$2 !~ /^[!*]/ { print $1 }' /etc/shadow > "$T/passwords"
[ ! -s "$T/passwords" ] || die "accounts with a password: $(cat "$T/passwords")"
# systemd logs to the serial console.  Checked on basic.target: once
# serial-getty@ttyS0 runs (it may start before multi-user.target), systemd
# prints no more status lines there (seen under load), cloud-init still does.
grep -q "Reached target.*Basic System" "$dir/console.log" ||
    die "no systemd status on the console: $(tail -n 30 "$dir/console.log")"

echo "debian boot under TCG: agent hello after ${t_hello} s, ssh after ${t_ssh} s," \
    "cloud-init finished after ${t_ci} s" >&2

# ---- a clean power-off through QMP (ACPI power button, systemd) ----
kiln vm qmp "$dir/qmp.sock" powerdown || die "QMP powerdown failed"
rc=0
wait "$boot_pid" || rc=$?
boot_pid=
[ "$rc" = 0 ] || { cat "$T/boot.err" >&2; die "kiln vm boot exited $rc"; }
grep -q "qemu exited with status 0" "$T/boot.err" || die "qemu did not exit 0"
grep -q "reboot: Power down" "$dir/console.log" ||
    die "no clean power-off on the console: $(tail -n 30 "$dir/console.log")"
assert_fsck_clean "after the debian boot"
