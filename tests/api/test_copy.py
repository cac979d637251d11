"""CopyImage and CopySnapshot between regions against a real `kiln serve`
(started by run.sh, serving us-east-1 and us-west-2, with each copied chunk
slowed down by KILN_TEST_JOB_CHUNK_DELAY_US so that a copy is seen
pending): the copy is a new image with new ids in the signed region,
pending with pending snapshots until its job is done, then available
(boto3's image_available waiter); it records its source, exports
byte-identical, and a second copy moves no chunk; the source may be
deleted while the copy is pending; a corrupt source chunk makes the image
`failed` with a StateReason and its snapshot `error`; ClientToken repeats
return the first ImageId and a reuse with other parameters is
IdempotentParameterMismatch; botocore's CopySnapshot (which injects
PresignedUrl and DestinationRegion), pending then completed; the errors for
unknown or invisible sources and unknown regions; and the destination
region's fsck stays clean.

Snapshots come from `kiln snapshot import` in us-east-1 and belong to the
data directory's default account (see test_snapshots.py)."""
import glob
import json
import os
import subprocess
import tempfile
import threading
import unittest
import uuid

from botocore.exceptions import ClientError, WaiterError

from test_ec2 import error_code, signed
from test_snapshots import DATA, KILN, bob_keys, client, default_keys, import_snapshot

SRC = "us-east-1"
DST = "us-west-2"


def unique_name(prefix="copy"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def kiln(region, *args):
    return subprocess.run([KILN, "--data-dir", DATA, "--region", region] + list(args),
                          check=True, capture_output=True, text=True).stdout


def dst_chunks():
    return json.loads(kiln(DST, "du", "--json"))["Chunks"]


def chunk_files(region):
    return set(glob.glob(os.path.join(DATA, "regions", region, "store", "chunks", "*", "*")))


def export(region, sid, path):
    kiln(region, "snapshot", "export", sid, path)
    with open(path, "rb") as f:
        return f.read()


class Copy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        keys = default_keys()
        cls.east = client(keys, SRC)
        cls.west = client(keys, DST)
        bob = bob_keys()
        cls.bob_east = client(bob[:2], SRC)
        cls.bob_west = client(bob[:2], DST)
        cls.tmp = tempfile.TemporaryDirectory(prefix="kiln-copy-test.")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def assertCode(self, code, fn, *args, **kwargs):
        with self.assertRaises(ClientError) as e:
            fn(*args, **kwargs)
        self.assertEqual(e.exception.response["Error"]["Code"], code,
                         e.exception.response["Error"])

    def register(self, c=None, tags=None):
        sid = import_snapshot(size=3 * 1024 * 1024, region=SRC)
        args = dict(Name=unique_name("src"), Architecture="x86_64",
                    RootDeviceName="/dev/xvda", VirtualizationType="hvm",
                    BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                          "Ebs": {"SnapshotId": sid}}])
        if tags:
            args["TagSpecifications"] = [{"ResourceType": "image",
                                          "Tags": [{"Key": k, "Value": v}
                                                   for k, v in tags.items()]}]
        return (c or self.east).register_image(**args)["ImageId"], sid

    def root_snapshot(self, c, iid):
        img = c.describe_images(ImageIds=[iid])["Images"][0]
        return img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]

    def test_copy_image_between_regions(self):
        iid, sid = self.register(tags={"Env": "test"})
        before = dst_chunks()
        name = unique_name()
        new = self.west.copy_image(SourceImageId=iid, SourceRegion=SRC, Name=name,
                                   Description="a copy", CopyImageTags=True,
                                   ClientToken=uuid.uuid4().hex)["ImageId"]
        self.assertRegex(new, r"^ami-[0-9a-f]{17}$")
        self.assertNotEqual(new, iid)
        # Accepted at once: pending, with pending snapshots, until the job
        # has copied the data.
        img = self.west.describe_images(ImageIds=[new])["Images"][0]
        self.assertEqual(img["State"], "pending")
        snap = self.west.describe_snapshots(
            SnapshotIds=[self.root_snapshot(self.west, new)])["Snapshots"][0]
        self.assertEqual(snap["State"], "pending")
        self.west.get_waiter("image_available").wait(ImageIds=[new],
                                                     WaiterConfig={"Delay": 1})
        img = self.west.describe_images(ImageIds=[new])["Images"][0]
        self.assertEqual(img["State"], "available")
        self.assertEqual(img["Name"], name)
        self.assertEqual(img["Description"], "a copy")
        self.assertEqual(img["SourceImageId"], iid)
        self.assertEqual(img["SourceImageRegion"], SRC)
        self.assertEqual({t["Key"]: t["Value"] for t in img["Tags"]}, {"Env": "test"})
        # Not in the source region under the new id; the source is unchanged.
        self.assertCode("InvalidAMIID.NotFound", self.east.describe_images, ImageIds=[new])
        new_sid = self.root_snapshot(self.west, new)
        self.assertNotEqual(new_sid, sid)
        snap = self.west.describe_snapshots(SnapshotIds=[new_sid])["Snapshots"][0]
        self.assertEqual(snap["State"], "completed")
        self.assertEqual(snap["Progress"], "100%")
        a = export(SRC, sid, os.path.join(self.tmp.name, "a.raw"))
        b = export(DST, new_sid, os.path.join(self.tmp.name, "b.raw"))
        self.assertEqual(a, b)
        after = dst_chunks()
        self.assertGreater(after, before)

        # A second copy moves no chunk.
        again = self.west.copy_image(SourceImageId=iid, SourceRegion=SRC,
                                     Name=unique_name())["ImageId"]
        self.assertNotEqual(again, new)
        self.west.get_waiter("image_available").wait(ImageIds=[again],
                                                     WaiterConfig={"Delay": 1})
        self.assertEqual(dst_chunks(), after)
        img = self.west.describe_images(ImageIds=[again])["Images"][0]
        self.assertEqual(img["State"], "available")
        self.assertEqual(img.get("Tags", []), [])  # CopyImageTags not set

        # The same name again in the destination is a duplicate.
        self.assertCode("InvalidAMIName.Duplicate", self.west.copy_image,
                        SourceImageId=iid, SourceRegion=SRC, Name=name)
        kiln(DST, "fsck")

    def test_copy_image_tag_specifications_and_dry_run(self):
        iid, _ = self.register()
        self.assertCode("DryRunOperation", self.west.copy_image, SourceImageId=iid,
                        SourceRegion=SRC, Name=unique_name(), DryRun=True)
        new = self.west.copy_image(
            SourceImageId=iid, SourceRegion=SRC, Name=unique_name(),
            TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "A", "Value": "1"}]},
                               {"ResourceType": "snapshot",
                                "Tags": [{"Key": "S", "Value": "2"}]}])["ImageId"]
        self.west.get_waiter("image_available").wait(ImageIds=[new],
                                                     WaiterConfig={"Delay": 1})
        img = self.west.describe_images(ImageIds=[new])["Images"][0]
        self.assertEqual(img["Tags"], [{"Key": "A", "Value": "1"}])
        snap = self.west.describe_snapshots(
            SnapshotIds=[self.root_snapshot(self.west, new)])["Snapshots"][0]
        self.assertEqual(snap["Tags"], [{"Key": "S", "Value": "2"}])

    def test_copy_image_within_region(self):
        iid, sid = self.register()
        new = self.east.copy_image(SourceImageId=iid, SourceRegion=SRC,
                                   Name=unique_name())["ImageId"]
        img = self.east.describe_images(ImageIds=[new])["Images"][0]
        self.assertEqual(img["SourceImageRegion"], SRC)
        self.assertNotEqual(self.root_snapshot(self.east, new), sid)

    def test_copy_image_client_token(self):
        iid, _ = self.register()
        token = uuid.uuid4().hex
        name = unique_name()
        first = self.west.copy_image(SourceImageId=iid, SourceRegion=SRC, Name=name,
                                     ClientToken=token)["ImageId"]
        # The same request again: the first answer, no second copy.
        again = self.west.copy_image(SourceImageId=iid, SourceRegion=SRC, Name=name,
                                     ClientToken=token)["ImageId"]
        self.assertEqual(again, first)
        named = self.west.describe_images(Filters=[{"Name": "name", "Values": [name]}])
        self.assertEqual([i["ImageId"] for i in named["Images"]], [first])
        # The same token with other parameters.
        self.assertCode("IdempotentParameterMismatch", self.west.copy_image,
                        SourceImageId=iid, SourceRegion=SRC, Name=unique_name(),
                        ClientToken=token)
        self.assertCode("IdempotentParameterMismatch", self.west.copy_image,
                        SourceImageId=iid, SourceRegion=SRC, Name=name,
                        Description="other", ClientToken=token)
        # Tokens are per region: us-east-1 has not seen it (the name is
        # free there too).
        other = self.east.copy_image(SourceImageId=iid, SourceRegion=SRC, Name=name,
                                     ClientToken=token)["ImageId"]
        self.assertNotEqual(other, first)
        self.assertCode("InvalidParameterValue", self.west.copy_image,
                        SourceImageId=iid, SourceRegion=SRC, Name=unique_name(),
                        ClientToken="x" * 65)
        self.west.get_waiter("image_available").wait(ImageIds=[first],
                                                     WaiterConfig={"Delay": 1})
        # Still the first answer once the copy is done.
        self.assertEqual(self.west.copy_image(SourceImageId=iid, SourceRegion=SRC, Name=name,
                                              ClientToken=token)["ImageId"], first)
        self.east.get_waiter("image_available").wait(ImageIds=[other],
                                                     WaiterConfig={"Delay": 1})

    def test_copy_image_client_token_concurrent(self):
        # Four identical requests at once: one copy, one answer.
        iid, _ = self.register()
        token = uuid.uuid4().hex
        name = unique_name()
        results, errors = [], []

        def copy():
            try:
                results.append(self.west.copy_image(SourceImageId=iid, SourceRegion=SRC,
                                                    Name=name, ClientToken=token)["ImageId"])
            except ClientError as e:
                errors.append(e.response["Error"])

        threads = [threading.Thread(target=copy) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(set(results)), 1, results)
        named = self.west.describe_images(Filters=[{"Name": "name", "Values": [name]}])
        self.assertEqual([i["ImageId"] for i in named["Images"]], results[:1])
        self.west.get_waiter("image_available").wait(ImageIds=results[:1],
                                                     WaiterConfig={"Delay": 1})

    def test_copy_image_source_deleted_while_pending(self):
        iid, sid = self.register()
        a = export(SRC, sid, os.path.join(self.tmp.name, "del-a.raw"))
        new = self.west.copy_image(SourceImageId=iid, SourceRegion=SRC,
                                   Name=unique_name())["ImageId"]
        self.east.deregister_image(ImageId=iid)
        self.east.delete_snapshot(SnapshotId=sid)
        self.west.get_waiter("image_available").wait(ImageIds=[new],
                                                     WaiterConfig={"Delay": 1})
        b = export(DST, self.root_snapshot(self.west, new),
                   os.path.join(self.tmp.name, "del-b.raw"))
        self.assertEqual(a, b)

    def test_copy_image_failure_is_visible(self):
        before = chunk_files(SRC)
        iid, sid = self.register()
        new_chunks = sorted(chunk_files(SRC) - before)
        self.assertTrue(new_chunks)
        victim = new_chunks[0]
        with open(victim, "rb") as f:
            good = f.read()
        try:
            with open(victim, "r+b") as f:
                f.seek(len(good) // 2)
                f.write(bytes(b ^ 0xff for b in good[len(good) // 2:len(good) // 2 + 8]))
            new = self.west.copy_image(SourceImageId=iid, SourceRegion=SRC,
                                       Name=unique_name())["ImageId"]
            with self.assertRaises(WaiterError):
                self.west.get_waiter("image_available").wait(
                    ImageIds=[new], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        finally:
            with open(victim, "wb") as f:
                f.write(good)
        img = self.west.describe_images(ImageIds=[new])["Images"][0]
        self.assertEqual(img["State"], "failed")
        self.assertTrue(img["StateReason"]["Code"])
        self.assertIn("corrupt", img["StateReason"]["Message"])
        snap = self.west.describe_snapshots(
            SnapshotIds=[self.root_snapshot(self.west, new)])["Snapshots"][0]
        self.assertEqual(snap["State"], "error")
        self.assertIn("corrupt", snap.get("StateMessage", ""))

    def test_copy_image_errors(self):
        iid, _ = self.register()
        self.assertCode("InvalidAMIID.NotFound", self.west.copy_image,
                        SourceImageId="ami-0123456789abcdef0", SourceRegion=SRC,
                        Name=unique_name())
        self.assertCode("InvalidAMIID.Malformed", self.west.copy_image,
                        SourceImageId="ami-nope", SourceRegion=SRC, Name=unique_name())
        # Another account's private image is invisible.
        self.assertCode("InvalidAMIID.NotFound", self.bob_west.copy_image,
                        SourceImageId=iid, SourceRegion=SRC, Name=unique_name())
        # The image lives in us-east-1, not us-west-2.
        self.assertCode("InvalidAMIID.NotFound", self.west.copy_image,
                        SourceImageId=iid, SourceRegion=DST, Name=unique_name())
        self.assertCode("InvalidParameterValue", self.west.copy_image,
                        SourceImageId=iid, SourceRegion="eu-nowhere-1", Name=unique_name())
        self.assertCode("InvalidAMIName.Malformed", self.west.copy_image,
                        SourceImageId=iid, SourceRegion=SRC, Name="bad*name!")
        self.assertCode("InvalidParameterValue", self.west.copy_image,
                        SourceImageId=iid, SourceRegion=SRC, Name=unique_name(),
                        TagSpecifications=[{"ResourceType": "volume",
                                            "Tags": [{"Key": "A", "Value": "1"}]}])

    def test_copy_shared_image(self):
        iid, sid = self.register()
        self.east.modify_image_attribute(
            ImageId=iid, LaunchPermission={"Add": [{"UserId": bob_keys()[2]}]})
        # A launch permission alone does not give the storage away (EC2:
        # "You do not have permission to access the storage of this ami"),
        # and the refused copy registers nothing.
        before = self.bob_west.describe_images(Owners=["self"])["Images"]
        self.assertCode("AuthFailure", self.bob_west.copy_image, SourceImageId=iid,
                        SourceRegion=SRC, Name=unique_name())
        self.assertEqual(self.bob_west.describe_images(Owners=["self"])["Images"], before)
        # Public images too: their snapshots must be public as well.
        self.east.modify_image_attribute(
            ImageId=iid, LaunchPermission={"Add": [{"Group": "all"}]})
        self.assertCode("AuthFailure", self.bob_west.copy_image, SourceImageId=iid,
                        SourceRegion=SRC, Name=unique_name())
        self.east.modify_image_attribute(
            ImageId=iid, LaunchPermission={"Remove": [{"Group": "all"}]})
        # Once the snapshot is shared with bob, the copy is his.
        self.east.modify_snapshot_attribute(
            SnapshotId=sid, Attribute="createVolumePermission", OperationType="add",
            UserIds=[bob_keys()[2]])
        new = self.bob_west.copy_image(SourceImageId=iid, SourceRegion=SRC,
                                       Name=unique_name(), CopyImageTags=True)["ImageId"]
        img = self.bob_west.describe_images(ImageIds=[new])["Images"][0]
        self.assertEqual(img["OwnerId"], bob_keys()[2])
        sid = self.root_snapshot(self.bob_west, new)
        self.assertEqual(self.bob_west.describe_snapshots(SnapshotIds=[sid])
                         ["Snapshots"][0]["OwnerId"], bob_keys()[2])

    def test_copy_snapshot(self):
        sid = import_snapshot(size=2 * 1024 * 1024, region=SRC)
        # botocore adds PresignedUrl and DestinationRegion for CopySnapshot.
        new = self.west.copy_snapshot(
            SourceSnapshotId=sid, SourceRegion=SRC, Description="snap copy",
            TagSpecifications=[{"ResourceType": "snapshot",
                                "Tags": [{"Key": "K", "Value": "V"}]}])
        self.assertEqual(new["Tags"], [{"Key": "K", "Value": "V"}])
        new = new["SnapshotId"]
        self.assertRegex(new, r"^snap-[0-9a-f]{17}$")
        self.assertNotEqual(new, sid)
        s = self.west.describe_snapshots(SnapshotIds=[new])["Snapshots"][0]
        self.assertEqual(s["State"], "pending")
        self.west.get_waiter("snapshot_completed").wait(SnapshotIds=[new],
                                                        WaiterConfig={"Delay": 1})
        s = self.west.describe_snapshots(SnapshotIds=[new])["Snapshots"][0]
        self.assertEqual(s["Description"], "snap copy")
        self.assertEqual(s["Tags"], [{"Key": "K", "Value": "V"}])
        src = self.east.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
        self.assertEqual(s["VolumeSize"], src["VolumeSize"])
        a = export(SRC, sid, os.path.join(self.tmp.name, "sa.raw"))
        b = export(DST, new, os.path.join(self.tmp.name, "sb.raw"))
        self.assertEqual(a, b)
        kiln(DST, "fsck")

    def test_copy_snapshot_errors(self):
        sid = import_snapshot(region=SRC)
        self.assertCode("DryRunOperation", self.west.copy_snapshot, SourceSnapshotId=sid,
                        SourceRegion=SRC, DryRun=True)
        self.assertCode("InvalidSnapshot.NotFound", self.west.copy_snapshot,
                        SourceSnapshotId="snap-0123456789abcdef0", SourceRegion=SRC)
        self.assertCode("InvalidSnapshot.NotFound", self.bob_west.copy_snapshot,
                        SourceSnapshotId=sid, SourceRegion=SRC)
        self.assertCode("InvalidSnapshotID.Malformed", self.west.copy_snapshot,
                        SourceSnapshotId="snap-zz", SourceRegion=SRC)
        self.assertCode("InvalidParameterValue", self.west.copy_snapshot,
                        SourceSnapshotId=sid, SourceRegion="eu-nowhere-1")
        # botocore always sets DestinationRegion to the client's region (with
        # a PresignedUrl); a raw request names another one.
        status, _, body = signed(params={"Action": "CopySnapshot", "Version": "2016-11-15",
                                         "SourceSnapshotId": sid, "SourceRegion": SRC,
                                         "DestinationRegion": SRC}, region=DST)
        self.assertEqual((status, error_code(body)[0]), (400, "InvalidParameterValue"), body)
        # PresignedUrl is accepted and ignored.
        status, _, body = signed(params={"Action": "CopySnapshot", "Version": "2016-11-15",
                                         "SourceSnapshotId": sid, "SourceRegion": SRC,
                                         "DestinationRegion": DST, "DryRun": "true",
                                         "PresignedUrl": "https://example.invalid/?x=1"},
                                 region=DST)
        # The static test account does not own the snapshot: not found.
        self.assertEqual((status, error_code(body)[0]), (400, "InvalidSnapshot.NotFound"), body)


if __name__ == "__main__":
    unittest.main()
