"""Volumes through the EC2 API against a real `kiln serve` (started by
run.sh): CreateVolume (from a snapshot, blank, TagSpecifications, DryRun and
every refusal), DescribeVolumes (ids, filters, tags, pagination, the
volume_available waiter, the aws CLI), ModifyVolume (grow, never shrink),
CreateSnapshot of a volume (the snapshot_completed waiter; its data equals
the volume's), DeleteVolume, and another account's volumes not existing for
you."""
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

from botocore.exceptions import ClientError

from kilnapi import CREDENTIALS, DATA, ENDPOINT, KILN, client, default_keys

ZONE = "us-east-1a"

_tmp = tempfile.TemporaryDirectory(prefix="kiln-vol-test.")


def kiln(*args):
    out = subprocess.run([KILN, "--data-dir", DATA] + list(args), check=True,
                         capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1] if out.strip() else ""


def import_snapshot(size=3 * 1024 * 1024 + 4096):
    """A disk of random data, sparse past its first 3 MiB."""
    path = os.path.join(_tmp.name, "disk.raw")
    with open(path, "wb") as f:
        f.write(os.urandom(min(size, 3 << 20)))
        f.truncate(size)
    return kiln("snapshot", "import", path)


_other = None


def other_keys():
    global _other
    if _other is None:
        out = subprocess.run([KILN, "--data-dir", DATA, "account", "create", "volumes-other",
                              "--json"], check=True, capture_output=True, text=True).stdout
        j = json.loads(out)
        _other = (j["AccessKeyId"], j["SecretAccessKey"])
    return _other


class Base(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ec2 = client(default_keys())
        cls.snap = import_snapshot()

    def assertCode(self, code, fn, *args, **kwargs):
        with self.assertRaises(ClientError) as e:
            fn(*args, **kwargs)
        self.assertEqual(e.exception.response["Error"]["Code"], code,
                         e.exception.response["Error"])
        return e.exception.response

    def count(self):
        return len(self.ec2.describe_volumes()["Volumes"])


class CreateVolume(Base):
    def test_from_snapshot(self):
        r = self.ec2.create_volume(
            AvailabilityZone=ZONE, SnapshotId=self.snap,
            TagSpecifications=[{"ResourceType": "volume",
                                "Tags": [{"Key": "Name", "Value": "root"}]}])
        vid = r["VolumeId"]
        self.assertRegex(vid, r"^vol-[0-9a-f]{17}$")
        self.assertEqual(r["Size"], 1)
        self.assertEqual(r["SnapshotId"], self.snap)
        self.assertEqual(r["AvailabilityZone"], ZONE)
        self.assertEqual(r["VolumeType"], "gp3")
        self.assertEqual(r["Iops"], 3000)
        self.assertEqual(r["Throughput"], 125)
        self.assertIs(r["Encrypted"], False)
        self.assertEqual(r["Tags"], [{"Key": "Name", "Value": "root"}])
        # EC2's answer says creating; Describe says available (the waiter).
        self.assertEqual(r["State"], "creating")
        self.ec2.get_waiter("volume_available").wait(
            VolumeIds=[vid], WaiterConfig={"Delay": 1, "MaxAttempts": 10})
        v = self.ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]
        self.assertEqual(v["State"], "available")
        self.assertEqual(v["Attachments"], [])
        self.assertEqual(v["Tags"], [{"Key": "Name", "Value": "root"}])
        self.assertEqual(v["SnapshotId"], self.snap)

    def test_blank_and_sizes(self):
        r = self.ec2.create_volume(AvailabilityZone=ZONE, Size=8, VolumeType="gp3",
                                   Iops=4000, Throughput=250)
        self.assertEqual((r["Size"], r["SnapshotId"], r["Iops"], r["Throughput"]),
                         (8, "", 4000, 250))
        r = self.ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=self.snap, Size=20)
        self.assertEqual(r["Size"], 20)

    def test_refusals_create_nothing(self):
        before = self.count()
        self.assertCode("MissingParameter", self.ec2.create_volume, Size=1,
                        AvailabilityZone="")
        self.assertCode("InvalidParameterValue", self.ec2.create_volume,
                        AvailabilityZone="us-west-2a", Size=1)
        self.assertCode("MissingParameter", self.ec2.create_volume, AvailabilityZone=ZONE)
        self.assertCode("InvalidParameterValue", self.ec2.create_volume,
                        AvailabilityZone=ZONE, Size=16385)
        self.assertCode("InvalidParameterValue", self.ec2.create_volume,
                        AvailabilityZone=ZONE, Size=0)
        big = import_snapshot(size=(1 << 30) + 4096)  # sparse: 1 GiB and a block
        self.assertCode("InvalidParameterValue", self.ec2.create_volume,
                        AvailabilityZone=ZONE, SnapshotId=big, Size=1)
        self.assertCode("InvalidSnapshot.NotFound", self.ec2.create_volume,
                        AvailabilityZone=ZONE, SnapshotId="snap-0123456789abcdef0")
        self.assertCode("InvalidSnapshotID.Malformed", self.ec2.create_volume,
                        AvailabilityZone=ZONE, SnapshotId="snap-nope")
        self.assertCode("InvalidParameterValue", self.ec2.create_volume,
                        AvailabilityZone=ZONE, Size=1, VolumeType="io2", Iops=3000)
        self.assertCode("InvalidParameterValue", self.ec2.create_volume,
                        AvailabilityZone=ZONE, Size=1, Encrypted=True)
        self.assertCode("InvalidParameterValue", self.ec2.create_volume,
                        AvailabilityZone=ZONE, Size=1,
                        TagSpecifications=[{"ResourceType": "image",
                                            "Tags": [{"Key": "a", "Value": "b"}]}])
        self.assertCode("InvalidParameterValue", self.ec2.create_volume,
                        AvailabilityZone=ZONE, Size=1,
                        TagSpecifications=[{"ResourceType": "volume",
                                            "Tags": [{"Key": "aws:x", "Value": "b"}]}])
        self.assertCode("DryRunOperation", self.ec2.create_volume,
                        AvailabilityZone=ZONE, Size=1, DryRun=True)
        self.assertEqual(self.count(), before)

    def test_other_accounts_snapshot(self):
        other = client(other_keys())
        self.assertCode("InvalidSnapshot.NotFound", other.create_volume,
                        AvailabilityZone=ZONE, SnapshotId=self.snap)


class DescribeVolumes(Base):
    def test_filters_and_pages(self):
        made = []
        for i in range(7):
            r = self.ec2.create_volume(
                AvailabilityZone=ZONE, Size=2 + i % 2,
                TagSpecifications=[{"ResourceType": "volume",
                                    "Tags": [{"Key": "batch", "Value": "pages"},
                                             {"Key": "n", "Value": str(i)}]}])
            made.append(r["VolumeId"])
        got = [v["VolumeId"] for v in self.ec2.describe_volumes(
            Filters=[{"Name": "tag:batch", "Values": ["pages"]}])["Volumes"]]
        self.assertEqual(sorted(got), sorted(made))
        got = [v["VolumeId"] for v in self.ec2.describe_volumes(
            Filters=[{"Name": "tag:batch", "Values": ["pages"]},
                     {"Name": "size", "Values": ["3"]}])["Volumes"]]
        self.assertEqual(sorted(got), sorted(made[1::2]))
        got = self.ec2.describe_volumes(
            Filters=[{"Name": "status", "Values": ["in-use"]},
                     {"Name": "tag:batch", "Values": ["pages"]}])["Volumes"]
        self.assertEqual(got, [])
        # Pages of 5: every volume once.
        seen, token = [], None
        while True:
            kw = {"MaxResults": 5, "Filters": [{"Name": "tag-key", "Values": ["batch"]}]}
            if token:
                kw["NextToken"] = token
            r = self.ec2.describe_volumes(**kw)
            self.assertLessEqual(len(r["Volumes"]), 5)
            seen += [v["VolumeId"] for v in r["Volumes"]]
            token = r.get("NextToken")
            if not token:
                break
        self.assertEqual(len(seen), len(set(seen)))
        self.assertEqual(sorted(seen), sorted(made))
        paginator = self.ec2.get_paginator("describe_volumes")
        seen = [v["VolumeId"] for page in paginator.paginate(
            PaginationConfig={"PageSize": 5},
            Filters=[{"Name": "tag:batch", "Values": ["pages"]}]) for v in page["Volumes"]]
        self.assertEqual(sorted(seen), sorted(made))

    def test_errors_and_accounts(self):
        self.assertCode("InvalidVolume.NotFound", self.ec2.describe_volumes,
                        VolumeIds=["vol-0123456789abcdef0"])
        self.assertCode("InvalidVolumeID.Malformed", self.ec2.describe_volumes,
                        VolumeIds=["vol-123"])
        self.assertCode("InvalidParameterValue", self.ec2.describe_volumes,
                        Filters=[{"Name": "no-such-filter", "Values": ["x"]}])
        self.assertCode("InvalidParameterCombination", self.ec2.describe_volumes,
                        VolumeIds=["vol-0123456789abcdef0"], MaxResults=5)
        vid = self.ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
        other = client(other_keys())
        self.assertNotIn(vid, [v["VolumeId"] for v in other.describe_volumes()["Volumes"]])
        self.assertCode("InvalidVolume.NotFound", other.describe_volumes, VolumeIds=[vid])
        self.assertCode("InvalidVolume.NotFound", other.delete_volume, VolumeId=vid)
        self.assertCode("InvalidVolume.NotFound", other.create_snapshot, VolumeId=vid)

    def test_cli(self):
        vid = self.ec2.create_volume(AvailabilityZone=ZONE, Size=4)["VolumeId"]
        env = dict(os.environ, AWS_SHARED_CREDENTIALS_FILE=CREDENTIALS,
                   AWS_CONFIG_FILE="/dev/null", AWS_PAGER="")
        base = ["aws", "--region", "us-east-1", "--endpoint-url", ENDPOINT, "ec2"]
        r = subprocess.run(base + ["wait", "volume-available", "--volume-ids", vid],
                           env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = subprocess.run(base + ["describe-volumes", "--volume-ids", vid, "--query",
                                   "Volumes[0].Size", "--output", "text"],
                           env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "4")


class ModifyDelete(Base):
    def test_grow(self):
        vid = self.ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=self.snap)["VolumeId"]
        m = self.ec2.modify_volume(VolumeId=vid, Size=5)["VolumeModification"]
        self.assertEqual((m["OriginalSize"], m["TargetSize"], m["ModificationState"]),
                         (1, 5, "completed"))
        self.assertEqual(self.ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["Size"], 5)
        self.assertCode("InvalidParameterValue", self.ec2.modify_volume, VolumeId=vid, Size=2)
        self.assertCode("InvalidParameterValue", self.ec2.modify_volume, VolumeId=vid,
                        VolumeType="io1")
        self.assertCode("DryRunOperation", self.ec2.modify_volume, VolumeId=vid, Size=9,
                        DryRun=True)
        self.assertEqual(self.ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["Size"], 5)
        self.assertCode("InvalidVolume.NotFound", self.ec2.modify_volume,
                        VolumeId="vol-0123456789abcdef0", Size=5)

    def test_attribute(self):
        vid = self.ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
        r = self.ec2.describe_volume_attribute(VolumeId=vid, Attribute="autoEnableIO")
        self.assertEqual((r["VolumeId"], r["AutoEnableIO"]["Value"]), (vid, False))
        r = self.ec2.describe_volume_attribute(VolumeId=vid, Attribute="productCodes")
        self.assertEqual(r["ProductCodes"], [])
        self.assertCode("InvalidParameterValue", self.ec2.describe_volume_attribute,
                        VolumeId=vid, Attribute="size")
        self.assertCode("InvalidVolume.NotFound", self.ec2.describe_volume_attribute,
                        VolumeId="vol-0123456789abcdef0", Attribute="autoEnableIO")
        self.assertCode("InvalidVolume.NotFound", client(other_keys()).describe_volume_attribute,
                        VolumeId=vid, Attribute="autoEnableIO")

    def test_deleted_waiter(self):
        vid = self.ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
        self.ec2.delete_volume(VolumeId=vid)
        self.ec2.get_waiter("volume_deleted").wait(
            VolumeIds=[vid], WaiterConfig={"Delay": 1, "MaxAttempts": 5})

    def test_delete(self):
        vid = self.ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
        self.assertCode("DryRunOperation", self.ec2.delete_volume, VolumeId=vid, DryRun=True)
        self.ec2.describe_volumes(VolumeIds=[vid])
        self.ec2.delete_volume(VolumeId=vid)
        self.assertCode("InvalidVolume.NotFound", self.ec2.describe_volumes, VolumeIds=[vid])
        self.assertCode("InvalidVolume.NotFound", self.ec2.delete_volume, VolumeId=vid)
        self.assertCode("InvalidVolumeID.Malformed", self.ec2.delete_volume, VolumeId="vol-x")
        self.assertCode("MissingParameter", self.ec2.delete_volume, VolumeId="")


class CreateSnapshot(Base):
    def test_snapshot_of_volume(self):
        vid = self.ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=self.snap,
                                     Size=2)["VolumeId"]
        r = self.ec2.create_snapshot(
            VolumeId=vid, Description="of a volume",
            TagSpecifications=[{"ResourceType": "snapshot",
                                "Tags": [{"Key": "from", "Value": vid}]}])
        sid = r["SnapshotId"]
        self.assertRegex(sid, r"^snap-[0-9a-f]{17}$")
        self.assertEqual(r["VolumeId"], vid)
        self.assertIn(r["State"], ("pending", "completed"))
        self.assertEqual(r["VolumeSize"], 2)
        self.assertEqual(r["Description"], "of a volume")
        self.assertEqual(r["Tags"], [{"Key": "from", "Value": vid}])
        self.ec2.get_waiter("snapshot_completed").wait(
            SnapshotIds=[sid], WaiterConfig={"Delay": 1, "MaxAttempts": 20})
        s = self.ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
        self.assertEqual((s["State"], s["Progress"], s["VolumeSize"]), ("completed", "100%", 2))
        # Nothing was written: the new snapshot holds the old one's bytes,
        # then zeros to 2 GiB.
        a = os.path.join(_tmp.name, "a.raw")
        b = os.path.join(_tmp.name, "b.raw")
        kiln("snapshot", "export", self.snap, a)
        kiln("snapshot", "export", sid, b)
        with open(a, "rb") as fa, open(b, "rb") as fb:
            da = fa.read()
            self.assertEqual(fb.read(len(da)), da)
            self.assertEqual(os.path.getsize(b), 2 << 30)
        # A volume of the new snapshot.
        v2 = self.ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=sid)["VolumeId"]
        self.assertEqual(self.ec2.describe_volumes(VolumeIds=[v2])["Volumes"][0]["Size"], 2)

    def test_volume_id(self):
        """DescribeSnapshots names the volume a snapshot was taken of, and
        vol-ffffffff for an imported one (as AWS does for copies)."""
        vid = self.ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
        sid = self.ec2.create_snapshot(VolumeId=vid)["SnapshotId"]
        s = self.ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
        self.assertEqual(s["VolumeId"], vid)
        got = self.ec2.describe_snapshots(
            Filters=[{"Name": "volume-id", "Values": [vid]}])["Snapshots"]
        self.assertEqual([x["SnapshotId"] for x in got], [sid])
        s = self.ec2.describe_snapshots(SnapshotIds=[self.snap])["Snapshots"][0]
        self.assertEqual(s["VolumeId"], "vol-ffffffff")
        self.ec2.get_waiter("snapshot_completed").wait(
            SnapshotIds=[sid], WaiterConfig={"Delay": 1, "MaxAttempts": 20})

    @unittest.skipUnless(shutil.which("qemu-io"), "qemu-io not found")
    def test_point_in_time(self):
        """The snapshot is the volume at the moment of CreateSnapshot: a
        write after the call is not in it, even while the snapshot is still
        pending.  A volume open for writing by `kiln nbd` is refused
        (VolumeInUse, a documented difference from EC2)."""
        vid = self.ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
        with Nbd(vid) as n:
            n.io("write -P 0x11 0 4M")
            r = self.assertCode("VolumeInUse", self.ec2.create_snapshot, VolumeId=vid)
            self.assertIn("kiln nbd", r["Error"]["Message"])
        r = self.ec2.create_snapshot(VolumeId=vid, Description="point in time")
        sid = r["SnapshotId"]
        self.assertIn(r["State"], ("pending", "completed"))
        self.assertEqual(r["VolumeId"], vid)
        with Nbd(vid) as n:
            n.io("write -P 0x22 0 4M")
        self.ec2.get_waiter("snapshot_completed").wait(
            SnapshotIds=[sid], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        s = self.ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
        self.assertEqual((s["State"], s["Progress"], s["VolumeId"]), ("completed", "100%", vid))
        out = os.path.join(_tmp.name, "pit.raw")
        kiln("snapshot", "export", sid, out)
        with open(out, "rb") as f:
            self.assertEqual(f.read(4 << 20), b"\x11" * (4 << 20))
        os.unlink(out)

    def test_refusals(self):
        before = len(self.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"])
        self.assertCode("MissingParameter", self.ec2.create_snapshot, VolumeId="")
        self.assertCode("InvalidVolumeID.Malformed", self.ec2.create_snapshot,
                        VolumeId="vol-zz")
        self.assertCode("InvalidVolume.NotFound", self.ec2.create_snapshot,
                        VolumeId="vol-0123456789abcdef0")
        vid = self.ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
        self.assertCode("DryRunOperation", self.ec2.create_snapshot, VolumeId=vid, DryRun=True)
        self.assertCode("InvalidParameterValue", self.ec2.create_snapshot, VolumeId=vid,
                        TagSpecifications=[{"ResourceType": "volume",
                                            "Tags": [{"Key": "a", "Value": "b"}]}])
        self.assertEqual(len(self.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]),
                         before)


class Tags(Base):
    def test_volume_tags(self):
        vid = self.ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
        self.ec2.create_tags(Resources=[vid], Tags=[{"Key": "env", "Value": "test"}])
        got = self.ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [vid]}])["Tags"]
        self.assertEqual(got, [{"ResourceId": vid, "ResourceType": "volume", "Key": "env",
                                "Value": "test"}])
        got = self.ec2.describe_tags(
            Filters=[{"Name": "resource-type", "Values": ["volume"]}])["Tags"]
        self.assertIn(vid, [t["ResourceId"] for t in got])
        self.assertEqual({t["ResourceType"] for t in got}, {"volume"})
        v = self.ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]
        self.assertEqual(v["Tags"], [{"Key": "env", "Value": "test"}])
        # Another account's volume does not exist for you; a request naming
        # it changes nothing, not even for the ids it could tag.
        other = client(other_keys())
        self.assertCode("InvalidVolume.NotFound", other.create_tags, Resources=[vid],
                        Tags=[{"Key": "x", "Value": "y"}])
        self.assertCode("InvalidVolume.NotFound", other.delete_tags, Resources=[vid])
        self.assertNotIn(vid, [t["ResourceId"] for t in other.describe_tags()["Tags"]])
        self.assertCode("InvalidVolume.NotFound", self.ec2.create_tags,
                        Resources=[vid, "vol-0123456789abcdef0"],
                        Tags=[{"Key": "x", "Value": "y"}])
        self.assertCode("InvalidVolumeID.Malformed", self.ec2.create_tags, Resources=["vol-zz"],
                        Tags=[{"Key": "x", "Value": "y"}])
        v = self.ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]
        self.assertEqual(v["Tags"], [{"Key": "env", "Value": "test"}])
        self.ec2.delete_tags(Resources=[vid], Tags=[{"Key": "env"}])
        self.assertEqual(self.ec2.describe_tags(
            Filters=[{"Name": "resource-id", "Values": [vid]}])["Tags"], [])
        self.assertEqual(self.ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0].get("Tags", []), [])


class Nbd:
    """`kiln nbd VOL` on a unix socket, written with qemu-io."""

    def __init__(self, vid):
        self.vid = vid
        self.sock = os.path.join(_tmp.name, vid + ".sock")

    def __enter__(self):
        self.log = open(os.path.join(_tmp.name, self.vid + ".log"), "w+")
        self.p = subprocess.Popen([KILN, "--data-dir", DATA, "nbd", self.vid, "--socket",
                                   self.sock], stderr=self.log)
        for _ in range(600):
            self.log.seek(0)
            if "kiln: serving" in self.log.read():
                return self
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        self.p.kill()
        self.log.seek(0)
        raise RuntimeError("kiln nbd did not start: " + self.log.read())

    def io(self, cmd):
        subprocess.run(["qemu-io", "-f", "raw", "-c", cmd, "-c", "flush",
                        "nbd+unix:///?socket=" + self.sock], check=True, capture_output=True)

    def __exit__(self, *exc):
        self.p.terminate()
        self.assert_rc(self.p.wait())
        self.log.close()

    def assert_rc(self, rc):
        if rc != 0:
            self.log.seek(0)
            raise RuntimeError("kiln nbd exited %d: %s" % (rc, self.log.read()))


if __name__ == "__main__":
    unittest.main()
