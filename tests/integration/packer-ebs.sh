#!/bin/sh
# Real Packer (Debian's `packer`, 1.6.6, the amazon-ebs builder) builds an
# image against `kiln serve` (issue 6; docs/baking.md, "Real Packer against
# kiln").  The template is packer-ebs.json: the debian base image found by
# source_ami_filter with its owner, the default VPC and subnet found by
# vpc_filter and subnet_filter, a temporary key pair and security group,
# associate_public_ip_address (RunInstances with a network interface),
# ssh as `admin` to the address Packer picks by itself (no ssh_interface:
# the public IP of an instance in a VPC), a shell provisioner and a file
# provisioner, then StopInstances, CreateImage, the copy to us-west-2
# (ami_regions: CopyImage), the launch and snapshot permissions for
# another account (ami_users, snapshot_users: ModifyImageAttribute,
# ModifySnapshotAttribute), the tags, and the cleanup.
#
# Checked: packer exits 0; the AMI it printed is available, the caller's,
# named and tagged as the template says, and so is its copy in us-west-2;
# the other account may launch both and sees their snapshots (packer-ebs.py,
# boto3); the builder instance is terminated and no volume, key pair or
# security group is left; serve stops cleanly; the provisioners' files are
# in the AMI's root snapshot (`kiln snapshot export`, then debugfs); fsck
# is clean.
#
# Then packer-ebs-minimal.json, the least a template says (source_ami by id,
# no VPC settings, no ssh_interface, no skip_* settings: Packer sends
# VpcId= and SubnetId= empty and finds the address by the instance's VPC):
# it builds too, and its shell provisioner's file is in its AMI.
#
# The debootstrap tarball is cached as for instances-debian.sh; Packer's
# own state (config, cache, temporary files) stays under $T.  The build's
# time is printed, not asserted.
. "$(dirname "$0")/functions.sh"
requires packer qemu-system-x86_64 debootstrap mkfs.ext4 zstd python3 debugfs
if ! python3 -c 'import boto3' >/dev/null 2>&1; then
    echo "SKIP: python3 with boto3 not found"
    exit 77
fi
export KILN_ACCEL=tcg
cache=${KILN_DEBIAN_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/kiln-test-debian}
mkdir -p "$cache"
here=$(cd "$(dirname "$0")" && pwd)

# ---- the base image ----
kiln base-image build debian --cache-dir "$cache" > "$T/ids" 2> "$T/build.err" ||
    { cat "$T/build.err" >&2; die "base-image build failed"; }
base=$(sed -n 1p "$T/ids")
echo "$base" | grep -Eq '^ami-[0-9a-f]{17}$' || die "build printed '$base'"
owner=$(sed -n \
    "s/.*registered 'kiln\/images\/debian-12-.*' (owner \([0-9]\{12\}\), public).*/\1/p" \
    "$T/build.err")
[ -n "$owner" ] || die "no owner in the registration line: $(cat "$T/build.err")"

# ---- another account, to share the AMI with ----
kiln account create packer-friend --json > "$T/friend.json" ||
    die "account create failed"
friend=$(json_get 'j["AccountId"]' < "$T/friend.json")
friend_key=$(json_get 'j["AccessKeyId"]' < "$T/friend.json")
friend_secret=$(json_get 'j["SecretAccessKey"]' < "$T/friend.json")

# ---- kiln serve with a static credential of its own account ----
akid=AKIAKILNPACKERTEST01
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
account=424242424242
kill_all() {
    [ -n "${serve_pid:-}" ] && kill -9 "$serve_pid" 2>/dev/null
    for p in "$KILN_DATA_DIR"/regions/*/instances/*/qemu.pid; do
        [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null
    done
    return 0
}
on_cleanup kill_all
KILN_SECRET_KEY=$secret "$KILN" serve --listen 127.0.0.1:0 --access-key "$akid" \
    --account "$account" 2> "$T/serve.log" &
serve_pid=$!
i=0
until grep -q "serving the EC2 API" "$T/serve.log" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 300 ] || die "server did not start: $(cat "$T/serve.log")"
    kill -0 "$serve_pid" 2>/dev/null || die "server exited: $(cat "$T/serve.log")"
    sleep 0.2
done
port=$(sed -n 's/.*serving the EC2 API on .* (port \([0-9]*\)).*/\1/p' "$T/serve.log")
endpoint=http://127.0.0.1:$port

# ---- packer build ----
mkdir -p "$T/files" "$T/packer-home" "$T/packer-tmp"
echo "copied by the file provisioner $(date -u +%s)" > "$T/files/hello.txt"
ami_name=kiln-packer-test-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
t0=$(date +%s)
rc=0
HOME=$T/packer-home PACKER_CONFIG_DIR=$T/packer-home PACKER_CACHE_DIR=$T/packer-home/cache \
TMPDIR=$T/packer-tmp CHECKPOINT_DISABLE=1 PACKER_LOG=1 PACKER_LOG_PATH=$T/packer.log \
    packer build -machine-readable -color=false \
    -var "endpoint=$endpoint" -var "access_key=$akid" -var "secret_key=$secret" \
    -var "owner=$owner" -var "ami_name=$ami_name" -var "files=$T/files" \
    -var "share_with=$friend" \
    "$here/packer-ebs.json" > "$T/packer.out" 2>&1 || rc=$?
t1=$(date +%s)
if [ $rc -ne 0 ]; then
    tail -n 40 "$T/packer.out" >&2
    echo "--- packer log" >&2; tail -n 60 "$T/packer.log" >&2
    echo "--- serve log" >&2; tail -n 40 "$T/serve.log" >&2
    die "packer build exited $rc"
fi
grep -q "$secret" "$T/packer.out" && die "packer printed the secret key"
# the artifact line: TIME,amazon-ebs,artifact,0,id,REGION:AMI,REGION:AMI with
# the comma written %!(PACKER_COMMA), in no particular order
ids=$(sed -n 's/^[0-9]*,amazon-ebs,artifact,0,id,//p' "$T/packer.out" |
    sed 's/%!(PACKER_COMMA)/ /g')
ami= ami_west=
for a in $ids; do
    case $a in
    us-east-1:ami-*) ami=${a#us-east-1:} ;;
    us-west-2:ami-*) ami_west=${a#us-west-2:} ;;
    *) die "unexpected artifact '$a' in packer's output" ;;
    esac
done
echo "$ami" | grep -Eq '^ami-[0-9a-f]{17}$' && echo "$ami_west" | grep -Eq '^ami-[0-9a-f]{17}$' ||
    die "no AMI per region in packer's output: '$ids'"
echo "packer build against kiln under TCG: $((t1 - t0)) s, $ami, $ami_west in us-west-2" >&2

snap=$(python3 "$here/packer-ebs.py" "$endpoint" "$akid" "$secret" "$account" "$base" "$ami" \
    "$ami_name" "$T/packer.out" "$ami_west" "$friend" "$friend_key" "$friend_secret") ||
    { tail -n 40 "$T/serve.log" >&2; die "packer-ebs.py failed"; }

# ---- the minimal template ----
t0=$(date +%s)
rc=0
HOME=$T/packer-home PACKER_CONFIG_DIR=$T/packer-home PACKER_CACHE_DIR=$T/packer-home/cache \
TMPDIR=$T/packer-tmp CHECKPOINT_DISABLE=1 PACKER_LOG=1 PACKER_LOG_PATH=$T/packer-minimal.log \
    packer build -machine-readable -color=false \
    -var "endpoint=$endpoint" -var "access_key=$akid" -var "secret_key=$secret" \
    -var "source_ami=$base" -var "ami_name=$ami_name-minimal" \
    "$here/packer-ebs-minimal.json" > "$T/packer-minimal.out" 2>&1 || rc=$?
t1=$(date +%s)
if [ $rc -ne 0 ]; then
    tail -n 40 "$T/packer-minimal.out" >&2
    echo "--- serve log" >&2; tail -n 40 "$T/serve.log" >&2
    die "packer build of the minimal template exited $rc"
fi
ami_min=$(sed -n 's/^[0-9]*,amazon-ebs,artifact,0,id,us-east-1:\(ami-[0-9a-f]\{17\}\)$/\1/p' \
    "$T/packer-minimal.out")
[ -n "$ami_min" ] || die "no AMI in packer's output: $(tail -n 20 "$T/packer-minimal.out")"
echo "packer build of the minimal template: $((t1 - t0)) s, $ami_min" >&2
snap_min=$(python3 - "$endpoint" "$akid" "$secret" "$ami_min" "$ami_name-minimal" <<'PY'
import sys
import boto3
endpoint, akid, secret, ami, name = sys.argv[1:6]
ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=endpoint,
                   aws_access_key_id=akid, aws_secret_access_key=secret)
img = ec2.describe_images(ImageIds=[ami])["Images"][0]
assert img["State"] == "available" and img["Name"] == name, img
live = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
        if i["State"]["Name"] != "terminated"]
assert live == [], "instances left: %r" % live
assert ec2.describe_key_pairs()["KeyPairs"] == [], "key pairs left"
assert ec2.describe_security_groups()["SecurityGroups"] == [], "security groups left"
assert ec2.describe_volumes()["Volumes"] == [], "volumes left"
print(img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"])
PY
) || die "the minimal template's AMI or cleanup"

# ---- serve stops cleanly (SIGTERM, exit 0) ----
kill -TERM "$serve_pid"
wait "$serve_pid" || die "kiln serve exited $? after SIGTERM: $(tail -n 20 "$T/serve.log")"
serve_pid=

# ---- the provisioners' work, inside the AMI's root snapshot ----
kiln snapshot export "$snap" "$T/root.raw" 2> "$T/export.err" ||
    die "export of '$snap' failed: $(cat "$T/export.err")"
debugfs -R 'cat /etc/packer-shell' "$T/root.raw" > "$T/shell.txt" 2> /dev/null
assert_eq "$(cat "$T/shell.txt")" "shell provisioner ran as admin on bookworm" "/etc/packer-shell"
debugfs -R 'cat /etc/packer-file' "$T/root.raw" > "$T/file.txt" 2> /dev/null
cmp "$T/files/hello.txt" "$T/file.txt" || die "/etc/packer-file differs from the uploaded file"
# the base image's own files are still there
debugfs -R 'cat /usr/lib/os-release' "$T/root.raw" 2> /dev/null |
    grep -q '^VERSION_CODENAME=bookworm$' || die "no /usr/lib/os-release in the AMI"
rm -f "$T/root.raw"
kiln snapshot export "$snap_min" "$T/root.raw" 2> "$T/export.err" ||
    die "export of '$snap_min' failed: $(cat "$T/export.err")"
debugfs -R 'cat /etc/packer-minimal' "$T/root.raw" > "$T/minimal.txt" 2> /dev/null
assert_eq "$(cat "$T/minimal.txt")" "minimal" "/etc/packer-minimal"
rm -f "$T/root.raw"
assert_fsck_clean "after the packer build"
