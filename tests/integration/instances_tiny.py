"""Instances of the tiny image under TCG, driven with boto3 and the aws CLI
against a `kiln serve` this script starts, stops (SIGTERM) and kills
(SIGKILL) itself.  Run by instances-tiny.sh, which builds the image and
exports KILN, KILN_DATA_DIR, KILN_TEST_DIR, KILN_TEST_IMAGE and
KILN_TEST_OWN_SNAPSHOT (a snapshot of the default account).

The tests run in order (their names are numbered) and share two
instances, to keep the number of boots modest: A (HttpTokens optional,
DeleteOnTermination true) and B (HttpTokens required, a larger root
volume kept at termination)."""
import base64
import os
import signal
import sys
import time
import unittest

from botocore.exceptions import ClientError

from kiln_serve import DATA, REGION, WAIT, Serve, ServeCase, agent_run, console, describe, \
    instance_dir

IMAGE = os.environ["KILN_TEST_IMAGE"]
OTHER_KEY = "AKIDKILNOTHER0001"
OTHER_SECRET = "other/Secret+0123456789abcdefghijklmnop"
OTHER_ACCOUNT = "123456789012"

# The user data: print the instance id the metadata service gives over
# IMDSv1 and over IMDSv2 (busybox nc, HTTP/1.0).
USER_DATA = r"""#!/bin/sh
get() { printf "$1" | timeout 10 nc 169.254.169.254 80; }
v1=$(get 'GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\n')
echo "imds-v1-status: $(echo "$v1" | head -n 1 | tr -d '\r')"
echo "imds-v1-id: $(echo "$v1" | tail -n 1)"
tok=$(get 'PUT /latest/api/token HTTP/1.0\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n' | tail -n 1)
v2=$(get "GET /latest/meta-data/instance-id HTTP/1.0\r\nX-aws-ec2-metadata-token: $tok\r\n\r\n")
echo "imds-v2-id: $(echo "$v2" | tail -n 1)"
"""

SERVE = Serve(["--access-key", OTHER_KEY, "--secret-key", OTHER_SECRET,
               "--account", OTHER_ACCOUNT])
aws = SERVE.aws


def client(other=False):
    return SERVE.client((OTHER_KEY, OTHER_SECRET) if other else None)


def boot_stats(iid, timeout=600):
    """DIR/boot-stats, written at the agent's hello (docs/operations.md)."""
    path = os.path.join(instance_dir(iid), "boot-stats")
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise AssertionError("no boot-stats for %s: the agent never said hello" % iid)
        time.sleep(1)
    with open(path) as f:
        return {k: float(v) for k, v in (line.strip().split("=", 1) for line in f)}


def wait_console(ec2, iid, text, timeout=600):
    deadline = time.monotonic() + timeout
    while True:
        c = console(ec2, iid)
        if text in c:
            return c
        if time.monotonic() > deadline:
            raise AssertionError("console of %s never showed %r:\n%s" % (iid, text, c[-3000:]))
        time.sleep(2)


def alive(pid):
    """Whether pid runs (a zombie waiting for its reaper does not)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Instances(ServeCase):
    SERVE = SERVE
    A = None
    A_STATS = None
    B = None
    A_VOLUME = None
    B_VOLUME = None

    def code(self, fn, **kw):
        with self.assertRaises(ClientError) as cm:
            fn(**kw)
        return cm.exception.response["Error"]["Code"], cm.exception.response["Error"]["Message"]

    def counts(self):
        rs = self.ec2.describe_instances()["Reservations"]
        vols = self.ec2.describe_volumes()["Volumes"]
        return sum(len(r["Instances"]) for r in rs), len(vols)

    # ---- refusals: the right codes, nothing registered ----

    def test_1_refusals(self):
        ec2 = self.ec2
        before = self.counts()
        run = ec2.run_instances
        base = dict(ImageId=IMAGE, MinCount=1, MaxCount=1, InstanceType="t3.nano")
        self.assertEqual(self.code(run, **dict(base, ImageId="ami-0123456789abcdef0"))[0],
                         "InvalidAMIID.NotFound")
        self.assertEqual(self.code(run, **dict(base, ImageId="ami-xyz"))[0],
                         "InvalidAMIID.Malformed")
        self.assertEqual(self.code(run, **dict(base, KeyName="no-such-key"))[0],
                         "InvalidKeyPair.NotFound")
        self.assertEqual(self.code(run, **dict(base, SecurityGroupIds=["sg-0123456789abcdef0"]))[0],
                         "InvalidGroup.NotFound")
        self.assertEqual(self.code(run, **dict(base, InstanceType="t9.huge"))[0],
                         "InvalidParameterValue")
        self.assertEqual(self.code(run, **dict(base, MinCount=3, MaxCount=2))[0],
                         "InvalidParameterValue")
        # user data over 16 KiB
        self.assertEqual(self.code(run, **dict(base, UserData="x" * 16385))[0],
                         "InvalidParameterValue")
        self.assertEqual(self.code(run, **dict(base, MetadataOptions={"HttpTokens": "maybe"}))[0],
                         "InvalidParameterValue")
        # a root volume smaller than the snapshot, a device that is not the root
        self.assertEqual(self.code(run, **dict(base, BlockDeviceMappings=[
            {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 2}}]))[0],
            "InvalidBlockDeviceMapping")
        # capacity: a type bigger than this host's budget, and more instances
        # than fit
        self.assertEqual(self.code(run, **dict(base, InstanceType="r5.xlarge"))[0],
                         "InsufficientInstanceCapacity")
        self.assertEqual(self.code(run, **dict(base, MinCount=1000, MaxCount=1000))[0],
                         "InsufficientInstanceCapacity")
        # dry run: checked, nothing launched
        self.assertEqual(self.code(run, **dict(base, DryRun=True))[0], "DryRunOperation")
        self.assertEqual(self.code(ec2.describe_instances, InstanceIds=["i-0123456789abcdef0"])[0],
                         "InvalidInstanceID.NotFound")
        self.assertEqual(self.code(ec2.describe_instances, InstanceIds=["i-12"])[0],
                         "InvalidInstanceID.Malformed")
        self.assertEqual(self.code(ec2.stop_instances, InstanceIds=["i-0123456789abcdef0"])[0],
                         "InvalidInstanceID.NotFound")
        self.assertEqual(self.counts(), before)

    def test_2_unusable_images(self):
        """Deregistered, disabled and another account's private images."""
        ec2 = self.ec2
        before = self.counts()
        snap = os.environ["KILN_TEST_OWN_SNAPSHOT"]

        def register(name):
            return ec2.register_image(
                Name=name, RootDeviceName="/dev/xvda", Architecture="x86_64",
                BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                      "Ebs": {"SnapshotId": snap}}])["ImageId"]
        gone = register("instances-deregistered")
        ec2.deregister_image(ImageId=gone)
        off = register("instances-disabled")
        ec2.disable_image(ImageId=off)
        private = register("instances-private")
        other = client(other=True)
        base = dict(MinCount=1, MaxCount=1, InstanceType="t3.nano")
        for img in (gone, off):
            self.assertEqual(self.code(ec2.run_instances, ImageId=img, **base)[0],
                             "InvalidAMIID.NotFound", img)
        self.assertEqual(self.code(other.run_instances, ImageId=private, **base)[0],
                         "InvalidAMIID.NotFound")
        self.assertEqual(self.counts()[0], before[0])

    # ---- instance A ----

    def test_3_run_user_data_metadata(self):
        ec2 = self.ec2
        r = ec2.run_instances(
            ImageId=IMAGE, MinCount=1, MaxCount=1, InstanceType="t3.nano",
            UserData=USER_DATA,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "a"}]},
                               {"ResourceType": "volume", "Tags": [{"Key": "role", "Value": "root"}]}])
        inst = r["Instances"][0]
        Instances.A = iid = inst["InstanceId"]
        self.assertIn(inst["State"]["Name"], ("pending", "running"))
        self.assertEqual(inst["ImageId"], IMAGE)
        self.assertTrue(inst["PrivateIpAddress"].startswith("127.100."))
        self.assertEqual(inst["PublicIpAddress"], inst["PrivateIpAddress"])
        self.assertEqual(inst["MetadataOptions"]["HttpTokens"], "optional")
        bdm = inst["BlockDeviceMappings"][0]
        self.assertEqual(bdm["DeviceName"], "/dev/xvda")
        self.assertTrue(bdm["Ebs"]["DeleteOnTermination"])
        Instances.A_VOLUME = bdm["Ebs"]["VolumeId"]
        vol = ec2.describe_volumes(VolumeIds=[self.A_VOLUME])["Volumes"][0]
        self.assertEqual(vol["State"], "in-use")
        self.assertEqual(vol["Attachments"][0]["InstanceId"], iid)
        self.assertEqual(vol["Tags"], [{"Key": "role", "Value": "root"}])
        ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig=WAIT)
        out = wait_console(ec2, iid, "imds-v2-id:")
        # the image's first launch records its boot profile until the
        # agent's hello: nothing prefetched, every chunk fetched by a read
        Instances.A_STATS = st = boot_stats(iid)
        self.assertEqual(st["prefetch_chunks"], 0)
        self.assertGreater(st["chunks_fetched"], 0)
        snap = ec2.describe_images(ImageIds=[IMAGE])["Images"][0][
            "BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
        self.assertTrue(os.path.exists(os.path.join(DATA, "regions", REGION, "profiles",
                                                    snap + ".profile")))
        self.assertIn("imds-v1-id: " + iid, out)
        self.assertIn("imds-v2-id: " + iid, out)
        # filters, tags, status, attributes, the CLI
        rs = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["a"]},
                                             {"Name": "instance-state-name",
                                              "Values": ["running"]}])["Reservations"]
        self.assertEqual([i["InstanceId"] for r in rs for i in r["Instances"]], [iid])
        self.assertEqual(rs[0]["ReservationId"], r["ReservationId"] if "ReservationId" in r
                         else rs[0]["ReservationId"])
        rs = ec2.describe_instances(Filters=[{"Name": "instance-state-code",
                                              "Values": ["80"]}])["Reservations"]
        self.assertNotIn(iid, [i["InstanceId"] for r in rs for i in r["Instances"]])
        st = ec2.describe_instance_status(InstanceIds=[iid])["InstanceStatuses"]
        self.assertEqual(st[0]["InstanceState"]["Name"], "running")
        a = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        self.assertEqual(base64.b64decode(a["UserData"]["Value"]).decode(), USER_DATA)
        a = ec2.describe_instance_attribute(InstanceId=iid, Attribute="instanceType")
        self.assertEqual(a["InstanceType"]["Value"], "t3.nano")
        ec2.create_tags(Resources=[iid], Tags=[{"Key": "env", "Value": "test"}])
        tags = ec2.describe_tags(Filters=[{"Name": "resource-type", "Values": ["instance"]}])
        self.assertEqual(sorted((t["ResourceId"], t["Key"], t["Value"]) for t in tags["Tags"]),
                         [(iid, "Name", "a"), (iid, "env", "test")])
        self.assertEqual(self.code(ec2.create_tags, Resources=["i-0123456789abcdef0"],
                                   Tags=[{"Key": "k", "Value": "v"}])[0],
                         "InvalidInstanceID.NotFound")
        cli = aws("describe-instances", "--instance-ids", iid)
        self.assertEqual(cli["Reservations"][0]["Instances"][0]["State"]["Name"], "running")

    def test_4_stop_start_keep_data(self):
        ec2, iid = self.ec2, self.A
        r = agent_run(iid, "exec", "sh", "-c", "echo kept-across-stop > /kiln-data && sync")
        self.assertEqual(r.returncode, 0, r.stderr)
        ch = ec2.stop_instances(InstanceIds=[iid])["StoppingInstances"][0]
        self.assertEqual(ch["PreviousState"]["Name"], "running")
        self.assertIn(ch["CurrentState"]["Name"], ("stopping", "stopped"))
        ec2.get_waiter("instance_stopped").wait(InstanceIds=[iid], WaiterConfig=WAIT)
        inst = describe(ec2, iid)
        self.assertEqual(inst["StateReason"]["Code"], "Client.UserInitiatedShutdown")
        # stopped: the volume is closed, reboot is refused
        self.assertEqual(self.code(ec2.reboot_instances, InstanceIds=[iid])[0],
                         "IncorrectInstanceState")
        ch = ec2.start_instances(InstanceIds=[iid])["StartingInstances"][0]
        self.assertEqual(ch["PreviousState"]["Name"], "stopped")
        ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig=WAIT)
        r = agent_run(iid, "exec", "cat", "/kiln-data")
        self.assertEqual(r.stdout, "kept-across-stop\n", r.stderr)
        self.assertEqual(describe(ec2, iid)["PrivateIpAddress"],
                         describe(ec2, iid)["PublicIpAddress"])

    def test_5_crash(self):
        """QEMU killed: the instance is stopped with a state reason."""
        ec2, iid = self.ec2, self.A
        with open(os.path.join(instance_dir(iid), "qemu.pid")) as f:
            os.kill(int(f.read()), signal.SIGKILL)
        ec2.get_waiter("instance_stopped").wait(InstanceIds=[iid], WaiterConfig=WAIT)
        inst = describe(ec2, iid)
        self.assertEqual(inst["StateReason"]["Code"], "Server.InternalError")
        self.assertIn("signal 9", inst["StateReason"]["Message"])

    def test_6_terminate_deletes_volume(self):
        ec2, iid = self.ec2, self.A
        ch = ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"][0]
        self.assertEqual(ch["PreviousState"]["Name"], "stopped")
        ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig=WAIT)
        self.assertEqual(self.code(ec2.describe_volumes, VolumeIds=[self.A_VOLUME])[0],
                         "InvalidVolume.NotFound")
        # terminated instances stay visible; starting one is refused
        self.assertEqual(describe(ec2, iid)["State"]["Name"], "terminated")
        self.assertEqual(self.code(ec2.start_instances, InstanceIds=[iid])[0],
                         "IncorrectInstanceState")
        # QEMU is gone: the directory keeps only console.log, which
        # GetConsoleOutput still reads
        self.assertEqual(os.listdir(instance_dir(iid)), ["console.log"])
        self.assertIn("kiln tiny: booted", console(ec2, iid))

    # ---- instance B ----

    def test_7_tokens_required_bigger_volume(self):
        ec2 = self.ec2
        launch = dict(
            ImageId=IMAGE, MinCount=1, MaxCount=1, InstanceType="t3.nano", UserData=USER_DATA,
            MetadataOptions={"HttpTokens": "required"}, ClientToken="instances-tiny-b",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                  "Ebs": {"VolumeSize": 3, "DeleteOnTermination": False,
                                          "VolumeType": "gp3"}}])
        inst = ec2.run_instances(**launch)["Instances"][0]
        Instances.B = iid = inst["InstanceId"]
        # the same ClientToken and parameters again: the same reservation,
        # nothing new; other parameters: IdempotentParameterMismatch
        again = ec2.run_instances(**launch)
        self.assertEqual([i["InstanceId"] for i in again["Instances"]], [iid])
        self.assertEqual(self.code(ec2.run_instances, ImageId=IMAGE, MinCount=1, MaxCount=1,
                                   InstanceType="t3.nano", ClientToken="instances-tiny-b")[0],
                         "IdempotentParameterMismatch")
        Instances.B_VOLUME = inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
        self.assertFalse(inst["BlockDeviceMappings"][0]["Ebs"]["DeleteOnTermination"])
        self.assertEqual(inst["MetadataOptions"]["HttpTokens"], "required")
        vol = ec2.describe_volumes(VolumeIds=[self.B_VOLUME])["Volumes"][0]
        self.assertEqual(vol["Size"], 3)
        ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig=WAIT)
        # the tiny image's init fetches its user data over IMDSv2 (as stock
        # tools do), so it runs it with tokens required; v1 is refused from
        # inside
        out = wait_console(ec2, iid, "imds-v2-id:")
        self.assertIn("kiln tiny: metadata token acquired (IMDSv2)", out)
        self.assertIn("kiln tiny: running user data", out)
        self.assertRegex(out, r"user-data: imds-v1-status: HTTP/1\.[01] 401")
        self.assertNotIn("imds-v1-id: " + iid, out)
        self.assertIn("user-data: imds-v2-id: " + iid, out)
        # the second launch of the image prefetches A's profile: its reads
        # find the chunks there and fetch fewer themselves than A's did
        st = boot_stats(iid)
        self.assertGreater(st["prefetch_chunks"], 0, st)
        self.assertGreater(st["prefetch_hits"], 0, st)
        self.assertEqual(st["prefetch_errors"], 0, st)
        self.assertLess(st["chunks_fetched"] - st["prefetch_chunks"],
                        self.A_STATS["chunks_fetched"], (st, self.A_STATS))

    def test_8_serve_restarts(self):
        """SIGTERM stops B cleanly and the next serve starts it again; after
        a kill -9 of serve the next one kills the leftover QEMU and starts B
        again."""
        iid = self.B
        self.assertEqual(agent_run(iid, "exec", "sh", "-c",
                                   "echo across-restarts > /kiln-b && sync").returncode, 0)
        self.assertEqual(SERVE.stop(), 0)
        SERVE.start()
        ec2 = Instances.ec2 = client()
        # the reason says why it stopped until it runs again
        ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig=WAIT)
        self.assertEqual(agent_run(iid, "exec", "cat", "/kiln-b").stdout, "across-restarts\n")
        with open(os.path.join(instance_dir(iid), "qemu.pid")) as f:
            old = int(f.read())
        SERVE.kill()
        self.assertTrue(alive(old))  # QEMU outlives its serve
        SERVE.start()
        ec2 = Instances.ec2 = client()
        ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig=WAIT)
        self.assertFalse(alive(old))
        self.assertEqual(agent_run(iid, "exec", "cat", "/kiln-b").stdout, "across-restarts\n")

    def test_9_terminate_keeps_volume(self):
        ec2, iid = self.ec2, self.B
        ec2.terminate_instances(InstanceIds=[iid])
        ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig=WAIT)
        vol = ec2.describe_volumes(VolumeIds=[self.B_VOLUME])["Volumes"][0]
        self.assertEqual(vol["State"], "available")
        self.assertEqual(vol.get("Attachments", []), [])
        ec2.delete_volume(VolumeId=self.B_VOLUME)


if __name__ == "__main__":
    unittest.main(argv=sys.argv)
