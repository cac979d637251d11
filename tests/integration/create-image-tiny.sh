#!/bin/sh
# CreateImage and CreateSnapshot of running instances, end to end (issue 5):
# the tiny image is launched through boto3 against `kiln serve` (TCG); a
# file is written in the guest through the agent; CreateImage with
# NoReboot (the guest's / frozen by its agent) and TagSpecifications for
# image and snapshot; the image_available waiter; the new image launched
# and the file read back from the new instance; CreateImage in the reboot
# form (stop, capture, start: the instance is running again afterwards and
# the image holds a second file); `kiln du` shows the new snapshots stored
# only the changed blocks; CreateSnapshot of the attached root volume of
# the running instance completes, and a volume created from it holds the
# file (read over `kiln nbd` with nbdcopy and debugfs).  Refusals on a
# real instance: a malformed name, DryRun, a duplicate name (both forms:
# nothing captured, nothing rebooted, nothing left), a terminated instance
# (IncorrectInstanceState).
#
# The tiny image's .debs are cached as in vm-tiny.sh ($KILN_VM_CACHE).
. "$(dirname "$0")/functions.sh"
requires qemu-system-x86_64 dpkg-deb mkfs.ext4 python3 debugfs nbdcopy
python3 -c 'import boto3' 2>/dev/null || { echo "SKIP: boto3 not found"; exit 77; }
export KILN_ACCEL=tcg
tiny_cache

base_image_build tiny "$cache"
ami=$(sed -n 1p "$T/ids")

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$KILN" serve --listen "127.0.0.1:$port" --access-key AKIDKILNCAPTURE001 \
    --secret-key 'kiln/Capture+Secret0123456789abcdefghijk' --account 123456789012 \
    2> "$T/serve.log" &
serve_pid=$!
stop_serve() {
    [ -z "$serve_pid" ] && return 0
    kill -TERM "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
}
on_cleanup stop_serve
# A failed run leaves QEMUs behind only if the serve was killed: find them
# by their pid files.
kill_qemus() {
    for p in "$KILN_DATA_DIR"/regions/*/instances/*/qemu.pid; do
        [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
    done
}
on_cleanup kill_qemus
i=0
until grep -q "serving the EC2 API" "$T/serve.log" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 200 ] || die "server did not start: $(cat "$T/serve.log")"
    sleep 0.1
done

head -c 1048576 /dev/urandom > "$T/payload"
head -c 65536 /dev/urandom > "$T/payload2"

rc=0
ENDPOINT="http://127.0.0.1:$port" AMI=$ami T=$T KILN=$KILN python3 - <<'PY' || rc=$?
import json, os, subprocess, sys, time
import boto3
from botocore.config import Config

T, KILN, DATA = os.environ["T"], os.environ["KILN"], os.environ["KILN_DATA_DIR"]
ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=os.environ["ENDPOINT"],
                   aws_access_key_id="AKIDKILNCAPTURE001",
                   aws_secret_access_key="kiln/Capture+Secret0123456789abcdefghijk",
                   config=Config(retries={"max_attempts": 2, "mode": "standard"},
                                 read_timeout=900))
fast = {"Delay": 2, "MaxAttempts": 450}


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    for f in ("serve.log",):
        try:
            print(open(os.path.join(T, f)).read()[-4000:], file=sys.stderr)
        except OSError:
            pass
    sys.exit(1)


def kiln(*args, check=True):
    p = subprocess.run([KILN] + list(args), capture_output=True, text=True)
    if check and p.returncode != 0:
        fail("kiln %s: %s" % (" ".join(args), p.stderr))
    return p


def agent(iid, *args):
    sock = os.path.join(DATA, "regions/us-east-1/instances", iid, "agent.sock")
    return kiln("vm", "agent", sock, *args)


def wait_running(iid):
    """Until `running`; a guest that stopped on its own fails the test
    with its state reason and QEMU's log (the instance_running waiter
    would wait on)."""
    for _ in range(900):
        i = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        if i["State"]["Name"] == "running":
            return
        if i["State"]["Name"] in ("stopped", "terminated"):
            qemu_log = os.path.join(DATA, "regions/us-east-1/instances", iid, "qemu.log")
            log = open(qemu_log).read()[-2000:] if os.path.exists(qemu_log) else ""
            fail("instance %s is %s: %s %s" % (iid, i["State"]["Name"], i.get("StateReason"),
                                                log))
        time.sleep(1)
    fail("instance %s is not running" % iid)


def launch(image):
    iid = ec2.run_instances(ImageId=image, InstanceType="t3.nano", MinCount=1,
                            MaxCount=1)["Instances"][0]["InstanceId"]
    wait_running(iid)
    agent(iid, "hello", "--timeout", "600")
    return iid


def terminate(iid):
    ec2.terminate_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig=fast)


def debugfs_cat(raw, path):
    p = subprocess.run(["debugfs", "-R", "cat " + path, raw], capture_output=True)
    return p.stdout


def snapshot_file(snap, path):
    """A file of the ext4 file system of a snapshot's content."""
    raw = os.path.join(T, snap + ".raw")
    kiln("snapshot", "export", snap, raw)
    data = debugfs_cat(raw, path)
    os.unlink(raw)
    return data


payload = open(os.path.join(T, "payload"), "rb").read()
payload2 = open(os.path.join(T, "payload2"), "rb").read()

# ---- launch, write a file through the agent ----
iid = launch(os.environ["AMI"])
inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
root_vol = inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
base_snap = ec2.describe_images(ImageIds=[os.environ["AMI"]])["Images"][0][
    "BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
agent(iid, "put", os.path.join(T, "payload"), "/root/captured.bin")

# ---- refusals on a real instance ----
for kw, code in (({"Name": "bad*name"}, "InvalidAMIName.Malformed"),
                 ({"Name": "dry run", "DryRun": True}, "DryRunOperation")):
    try:
        ec2.create_image(InstanceId=iid, NoReboot=True, **kw)
        fail("CreateImage %r succeeded" % kw)
    except ec2.exceptions.ClientError as e:
        if e.response["Error"]["Code"] != code:
            fail("CreateImage %r: %s, want %s" % (kw, e.response["Error"], code))

# ---- CreateImage, NoReboot ----
tags = [{"ResourceType": "image", "Tags": [{"Key": "Name", "Value": "captured"}]},
        {"ResourceType": "snapshot", "Tags": [{"Key": "from", "Value": iid}]}]
img1 = ec2.create_image(InstanceId=iid, Name="capture no reboot", Description="d1",
                        NoReboot=True, TagSpecifications=tags)["ImageId"]
ec2.get_waiter("image_available").wait(ImageIds=[img1], WaiterConfig=fast)
im = ec2.describe_images(ImageIds=[img1])["Images"][0]
snap1 = im["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
if im["RootDeviceName"] != inst["RootDeviceName"] or im["Architecture"] != "x86_64":
    fail("image attributes: %r" % im)
if {"Key": "Name", "Value": "captured"} not in im.get("Tags", []):
    fail("image tags: %r" % im.get("Tags"))
s1 = ec2.describe_snapshots(SnapshotIds=[snap1])["Snapshots"][0]
if s1["State"] != "completed" or {"Key": "from", "Value": iid} not in s1.get("Tags", []):
    fail("snapshot: %r" % s1)
if "file system frozen" not in open(os.path.join(T, "serve.log")).read():
    fail("the NoReboot capture did not freeze the guest's /")
def counts():
    return (len(ec2.describe_images(Owners=["self"])["Images"]),
            len(ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]))


before = counts()
for no_reboot in (True, False):  # refused before any capture or reboot
    try:
        ec2.create_image(InstanceId=iid, Name="capture no reboot", NoReboot=no_reboot)
        fail("a duplicate name succeeded")
    except ec2.exceptions.ClientError as e:
        if e.response["Error"]["Code"] != "InvalidAMIName.Duplicate":
            fail("duplicate: %r" % e.response["Error"])
if counts() != before:
    fail("refused CreateImages left images or snapshots: %r -> %r" % (before, counts()))

# ---- the new snapshot stored only the changed blocks ----
du = json.loads(kiln("du", "--json").stdout)
by = {s["SnapshotId"]: s for s in du["Snapshots"]}
unique1 = by[snap1]["UniqueStoredBytes"]
if not (len(payload) <= unique1 <= len(payload) + 8 * 1024 * 1024):
    fail("snapshot %s stores %d unique bytes for a %d-byte file" % (snap1, unique1, len(payload)))
if unique1 * 4 > by[base_snap]["DataBytes"]:
    fail("snapshot %s stores %d unique bytes next to the base's %d" %
         (snap1, unique1, by[base_snap]["DataBytes"]))
print("du: new snapshot %d unique bytes, base %d data bytes" %
      (unique1, by[base_snap]["DataBytes"]))

# ---- CreateSnapshot of the attached root volume while running ----
agent(iid, "sync")
snapv = ec2.create_snapshot(VolumeId=root_vol, Description="attached")["SnapshotId"]
ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snapv], WaiterConfig=fast)
if ec2.describe_snapshots(SnapshotIds=[snapv])["Snapshots"][0]["State"] != "completed":
    fail("the attached volume's snapshot did not complete")
vol2 = ec2.create_volume(SnapshotId=snapv, AvailabilityZone="us-east-1a")["VolumeId"]
ec2.get_waiter("volume_available").wait(VolumeIds=[vol2], WaiterConfig=fast)
sock = os.path.join(T, "nbd.sock")
nbd = subprocess.Popen([KILN, "nbd", vol2, "--socket", sock], stderr=subprocess.PIPE)
for _ in range(200):
    if os.path.exists(sock):
        break
    time.sleep(0.1)
raw = os.path.join(T, "vol2.raw")
subprocess.run(["nbdcopy", "nbd+unix:///?socket=" + sock, raw], check=True)
nbd.terminate()
nbd.wait()
if debugfs_cat(raw, "/root/captured.bin") != payload:
    fail("the volume created from the attached volume's snapshot lacks the file")
os.unlink(raw)

# ---- the new image boots and holds the file ----
iid2 = launch(img1)
got = os.path.join(T, "got")
agent(iid2, "get", "/root/captured.bin", got)
if open(got, "rb").read() != payload:
    fail("the instance of the new image reads another file")
terminate(iid2)
try:
    ec2.create_image(InstanceId=iid2, Name="capture terminated", NoReboot=True)
    fail("CreateImage of a terminated instance succeeded")
except ec2.exceptions.ClientError as e:
    if e.response["Error"]["Code"] != "IncorrectInstanceState":
        fail("terminated: %r" % e.response["Error"])

# ---- CreateImage, the reboot form ----
agent(iid, "put", os.path.join(T, "payload2"), "/root/second.bin")
img2 = ec2.create_image(InstanceId=iid, Name="capture with reboot")["ImageId"]
ec2.get_waiter("image_available").wait(ImageIds=[img2], WaiterConfig=fast)
wait_running(iid)
agent(iid, "hello", "--timeout", "600")
snap2 = ec2.describe_images(ImageIds=[img2])["Images"][0]["BlockDeviceMappings"][0]["Ebs"][
    "SnapshotId"]
if snapshot_file(snap2, "/root/second.bin") != payload2 or \
        snapshot_file(snap2, "/root/captured.bin") != payload:
    fail("the reboot-form image lacks the files")
agent(iid, "get", "/root/second.bin", got)
if open(got, "rb").read() != payload2:
    fail("the instance lost its file over the reboot")
terminate(iid)
print("ok")
PY
[ "$rc" = 0 ] || die "the capture test failed"
kill -TERM "$serve_pid"
rc=0
wait "$serve_pid" || rc=$?
serve_pid=
[ "$rc" = 0 ] || die "kiln serve exited $rc: $(tail -n 20 "$T/serve.log")"
exit 0
