#!/bin/sh
# The debian base image as a user meets it (docs/vm.md, "The debian
# image"): `kiln base-image build debian` registers it under the provider
# account, then instances_debian.py drives a `kiln serve` with boto3 and
# the aws CLI: ImportKeyPair (an ed25519 key made by ssh-keygen; EC2's
# fingerprint), CreateSecurityGroup and AuthorizeSecurityGroupIngress tcp
# 22, RunInstances (t3.micro, the key pair, the group, #cloud-config user
# data with write_files and a runcmd marker, tags), the instance_running
# waiter, then ssh as `admin` with the key to the PublicIpAddress
# DescribeInstances reports: unmodified cloud-init is done from the Ec2
# datasource without errors, the file is written, the marker is in
# GetConsoleOutput, the authorized key is the key pair's, the instance id
# cloud-init took and IMDSv2 gives from inside is RunInstances' id; sudo;
# the host keys are this boot's (none baked in the image; the console's
# are the ones ssh met), machine-id is set, no account has a password;
# kiln-agent answers.  StopInstances: systemd shuts down cleanly (no QMP
# quit); TerminateInstances deletes the root volume.  The one debian boot
# of the vm suite (vm-debian.sh checks the build's refusals without a
# boot); its times are printed, not asserted.
#
# The debootstrap tarball is cached in $KILN_DEBIAN_CACHE, default
# ${XDG_CACHE_HOME:-~/.cache}/kiln-test-debian, shared by every build
# directory: the first run needs the Debian mirror, later runs are offline.
. "$(dirname "$0")/functions.sh"
requires qemu-system-x86_64 debootstrap mkfs.ext4 zstd python3 ssh ssh-keygen
requires_py boto3 awscli
export KILN_ACCEL=tcg
cache=${KILN_DEBIAN_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/kiln-test-debian}
mkdir -p "$cache"

# ---- build and register ----
base_image_build debian "$cache"
ami=$(sed -n 1p "$T/ids")
snap=$(sed -n 2p "$T/ids")
echo "$ami" | grep -Eq '^ami-[0-9a-f]{17}$' || die "build printed '$ami'"
echo "$snap" | grep -Eq '^snap-[0-9a-f]{17}$' || die "build printed '$snap'"
grep -q "registered 'kiln/images/debian-12-x86_64-[0-9]\{8\}-[0-9]\{6\}' (owner .*, public)" \
    "$T/build.err" || die "no registration line: $(cat "$T/build.err")"
kiln image list > "$T/images"
grep "$ami" "$T/images" | grep -q "kiln/images/debian-12-x86_64-" || die "the image is not listed"

# whatever a failed run leaves: serve and the guest of this data directory
on_cleanup kill_serve_and_guests

export KILN_TEST_IMAGE="$ami" KILN_TEST_DIR="$T"
python3 "$(dirname "$0")/instances_debian.py" -v || {
    echo "--- serve log" >&2
    tail -n 60 "$T"/serve.log >&2 || true
    die "instances_debian.py failed"
}
# serve stopped (SIGTERM, exit 0): everything it wrote is consistent
assert_fsck_clean "after the debian instance"
