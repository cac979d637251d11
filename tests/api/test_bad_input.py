"""Bad input, operation by operation (issue 3, "Bad input (each with a
test)"): malformed and unknown ids, known and unknown ids mixed, unknown
filters, MaxResults out of range or with ids, unknown actions, missing
parameters, duplicate and illegal image names, oversized bodies, invalid
UTF-8, bad signatures, expired dates and wrong regions.  Every case checks
both the answer (HTTP status and EC2 error code) and that nothing changed:
the caller's images, snapshots, tags, launch and create-volume
permissions, block public access, bob's images and the other region are
described before and after and must be equal.

Requests are sent raw (form parameters signed with botocore's SigV4), so
that botocore's own client-side validation never stands in for the
server's."""
import datetime
import http.client
import unittest
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from unittest import mock

import botocore.auth
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from test_snapshots import ENDPOINT, bob_keys, client, default_keys, import_snapshot, raw

V = "2016-11-15"
UNKNOWN_AMI = "ami-0000000000000beef"
UNKNOWN_SNAP = "snap-0000000000000beef"
NEXT_YEAR = (datetime.datetime.now(datetime.timezone.utc) +
             datetime.timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")


def code_of(body):
    try:
        return ET.fromstring(body).findtext("./Errors/Error/Code")
    except ET.ParseError:
        return None


def message_of(body):
    return ET.fromstring(body).findtext("./Errors/Error/Message")


class Base(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.keys = default_keys()
        cls.ec2 = client(cls.keys)
        cls.west = client(cls.keys, "us-west-2")
        bob = bob_keys()
        cls.bob_keys = bob[:2]
        cls.bob = client(cls.bob_keys)
        cls.bob_account = bob[2]
        # The fixture: an image on a snapshot, a free snapshot, tags on
        # both, bob's own image, and a snapshot in the other region.
        cls.sid = import_snapshot("bad-input root")
        cls.free_sid = import_snapshot("bad-input free")
        cls.account = cls.ec2.describe_snapshots(
            SnapshotIds=[cls.sid])["Snapshots"][0]["OwnerId"]
        cls.name = "bad-input-%s" % uuid.uuid4().hex[:12]
        cls.iid = cls.ec2.register_image(
            Name=cls.name, RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                  "Ebs": {"SnapshotId": cls.sid}}])["ImageId"]
        cls.ec2.create_tags(Resources=[cls.iid, cls.free_sid],
                            Tags=[{"Key": "Env", "Value": "fixture"}])
        bob_sid = import_snapshot("bad-input bob")
        cls.ec2.modify_snapshot_attribute(SnapshotId=bob_sid, Attribute="createVolumePermission",
                                          OperationType="add", UserIds=[cls.bob_account])
        cls.bob_iid = cls.bob.register_image(
            Name="bob-" + cls.name, RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                  "Ebs": {"SnapshotId": bob_sid}}])["ImageId"]
        cls.west_sid = import_snapshot("bad-input west", region="us-west-2")
        cls.vid = cls.ec2.create_volume(AvailabilityZone="us-east-1a", Size=2)["VolumeId"]
        cls.bob_vid = cls.bob.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]

    # ---- the state that must not change ----

    def state(self):
        def images(c):
            r = c.describe_images(Owners=["self"], IncludeDeprecated=True, IncludeDisabled=True)
            return sorted(r["Images"], key=lambda i: i["ImageId"])

        def snapshots(c):
            r = c.describe_snapshots(OwnerIds=["self"])
            return sorted(r["Snapshots"], key=lambda s: s["SnapshotId"])

        def volumes(c):
            return sorted(c.describe_volumes()["Volumes"], key=lambda v: v["VolumeId"])

        def tags(c):
            return sorted(c.describe_tags()["Tags"],
                          key=lambda t: (t["ResourceId"], t["Key"]))

        def strip(d):
            d.pop("ResponseMetadata", None)
            return d

        return {
            "images": images(self.ec2),
            "snapshots": snapshots(self.ec2),
            "tags": tags(self.ec2),
            "launch": strip(self.ec2.describe_image_attribute(
                ImageId=self.iid, Attribute="launchPermission")),
            "description": strip(self.ec2.describe_image_attribute(
                ImageId=self.iid, Attribute="description")),
            "cvp": [strip(self.ec2.describe_snapshot_attribute(
                SnapshotId=s, Attribute="createVolumePermission"))
                for s in (self.sid, self.free_sid)],
            "bpa": self.ec2.get_image_block_public_access_state()[
                "ImageBlockPublicAccessState"],
            "volumes": volumes(self.ec2),
            "bob": (images(self.bob), volumes(self.bob)),
            "west": (snapshots(self.west), images(self.west), tags(self.west)),
        }

    def refused(self, status, code, params=None, keys=None, region="us-east-1", body=None,
                send=None):
        """Send a bad request; check its answer and that nothing changed.
        Returns the response body."""
        before = self.state()
        if send:
            got_status, got_body = send()
        else:
            p = dict(params or {})
            p.setdefault("Version", V)
            p = {k: v for k, v in p.items() if v is not None}
            got_status, got_body = raw(p, keys=keys, region=region, body=body)
        self.assertEqual((got_status, code_of(got_body)), (status, code), got_body)
        self.assertEqual(self.state(), before, "state changed by %r" % (params,))
        return got_body


class Ids(Base):
    def test_malformed_image_ids(self):
        for bad in ("ami-xyz", "ami-12345678", "ami-0123456789ABCDEF0", "snap-0123456789abcdef0",
                    "ami-0123456789abcdef0x", ""):
            for params in (
                {"Action": "DescribeImages", "ImageId.1": bad},
                {"Action": "DeregisterImage", "ImageId": bad},
                {"Action": "DescribeImageAttribute", "ImageId": bad, "Attribute": "description"},
                {"Action": "ModifyImageAttribute", "ImageId": bad,
                 "Description.Value": "changed"},
                {"Action": "ResetImageAttribute", "ImageId": bad, "Attribute": "launchPermission"},
                {"Action": "EnableImageDeprecation", "ImageId": bad,
                 "DeprecateAt": NEXT_YEAR},
                {"Action": "DisableImageDeprecation", "ImageId": bad},
                {"Action": "EnableImageDeregistrationProtection", "ImageId": bad},
                {"Action": "DisableImageDeregistrationProtection", "ImageId": bad},
                {"Action": "EnableImage", "ImageId": bad},
                {"Action": "DisableImage", "ImageId": bad},
                {"Action": "CopyImage", "SourceImageId": bad, "SourceRegion": "us-east-1",
                 "Name": "copy-" + uuid.uuid4().hex[:8]},
            ):
                with self.subTest(bad=bad, action=params["Action"]):
                    self.refused(400, "InvalidAMIID.Malformed", params)

    def test_malformed_snapshot_ids(self):
        for bad in ("snap-xyz", "snap-1234", "ami-0123456789abcdef0", "snap-0123456789abcdefg"):
            for params in (
                {"Action": "DescribeSnapshots", "SnapshotId.1": bad},
                {"Action": "DeleteSnapshot", "SnapshotId": bad},
                {"Action": "DescribeSnapshotAttribute", "SnapshotId": bad,
                 "Attribute": "createVolumePermission"},
                {"Action": "ModifySnapshotAttribute", "SnapshotId": bad,
                 "CreateVolumePermission.Add.1.Group": "all"},
                {"Action": "ResetSnapshotAttribute", "SnapshotId": bad,
                 "Attribute": "createVolumePermission"},
                {"Action": "CopySnapshot", "SourceSnapshotId": bad, "SourceRegion": "us-east-1"},
                {"Action": "RegisterImage", "Name": "r-" + uuid.uuid4().hex[:8],
                 "RootDeviceName": "/dev/xvda", "BlockDeviceMapping.1.DeviceName": "/dev/xvda",
                 "BlockDeviceMapping.1.Ebs.SnapshotId": bad},
            ):
                with self.subTest(bad=bad, action=params["Action"]):
                    self.refused(400, "InvalidSnapshotID.Malformed", params)

    def test_malformed_tag_resource(self):
        """A bad id next to a good one: nothing is tagged."""
        for bad, code in (("ami-xyz", "InvalidAMIID.Malformed"),
                          ("snap-1", "InvalidSnapshotID.Malformed"),
                          ("vol-zz", "InvalidVolumeID.Malformed"),
                          ("i-0123", "InvalidInstanceID.Malformed"),
                          ("nothing", "InvalidID")):
            for action in ("CreateTags", "DeleteTags"):
                with self.subTest(bad=bad, action=action):
                    self.refused(400, code, {"Action": action, "ResourceId.1": self.iid,
                                             "ResourceId.2": bad, "Tag.1.Key": "Env",
                                             "Tag.1.Value": "v"})

    def test_unknown_ids(self):
        for params, code in (
            ({"Action": "DescribeImages", "ImageId.1": UNKNOWN_AMI}, "InvalidAMIID.NotFound"),
            ({"Action": "DeregisterImage", "ImageId": UNKNOWN_AMI}, "InvalidAMIID.NotFound"),
            ({"Action": "DescribeImageAttribute", "ImageId": UNKNOWN_AMI,
              "Attribute": "description"}, "InvalidAMIID.NotFound"),
            ({"Action": "ModifyImageAttribute", "ImageId": UNKNOWN_AMI,
              "LaunchPermission.Add.1.Group": "all"}, "InvalidAMIID.NotFound"),
            ({"Action": "ResetImageAttribute", "ImageId": UNKNOWN_AMI,
              "Attribute": "launchPermission"}, "InvalidAMIID.NotFound"),
            ({"Action": "EnableImageDeprecation", "ImageId": UNKNOWN_AMI,
              "DeprecateAt": NEXT_YEAR}, "InvalidAMIID.NotFound"),
            ({"Action": "EnableImageDeregistrationProtection", "ImageId": UNKNOWN_AMI},
             "InvalidAMIID.NotFound"),
            ({"Action": "DisableImage", "ImageId": UNKNOWN_AMI}, "InvalidAMIID.NotFound"),
            ({"Action": "CopyImage", "SourceImageId": UNKNOWN_AMI, "SourceRegion": "us-east-1",
              "Name": "copy-" + uuid.uuid4().hex[:8]}, "InvalidAMIID.NotFound"),
            ({"Action": "DescribeSnapshots", "SnapshotId.1": UNKNOWN_SNAP},
             "InvalidSnapshot.NotFound"),
            ({"Action": "DeleteSnapshot", "SnapshotId": UNKNOWN_SNAP},
             "InvalidSnapshot.NotFound"),
            ({"Action": "DescribeSnapshotAttribute", "SnapshotId": UNKNOWN_SNAP,
              "Attribute": "createVolumePermission"}, "InvalidSnapshot.NotFound"),
            ({"Action": "ModifySnapshotAttribute", "SnapshotId": UNKNOWN_SNAP,
              "CreateVolumePermission.Add.1.Group": "all"}, "InvalidSnapshot.NotFound"),
            ({"Action": "ResetSnapshotAttribute", "SnapshotId": UNKNOWN_SNAP,
              "Attribute": "createVolumePermission"}, "InvalidSnapshot.NotFound"),
            ({"Action": "CopySnapshot", "SourceSnapshotId": UNKNOWN_SNAP,
              "SourceRegion": "us-east-1"}, "InvalidSnapshot.NotFound"),
            ({"Action": "RegisterImage", "Name": "r-" + uuid.uuid4().hex[:8],
              "RootDeviceName": "/dev/xvda", "BlockDeviceMapping.1.DeviceName": "/dev/xvda",
              "BlockDeviceMapping.1.Ebs.SnapshotId": UNKNOWN_SNAP}, "InvalidSnapshot.NotFound"),
        ):
            with self.subTest(action=params["Action"]):
                body = self.refused(400, code, params)
                self.assertIn(UNKNOWN_AMI if "AMI" in code else UNKNOWN_SNAP, message_of(body))

    def test_known_and_unknown_mixed(self):
        """Only the unknown ids are named, and the known ones are not
        changed either."""
        cases = (
            ({"Action": "DescribeImages", "ImageId.1": self.iid, "ImageId.2": UNKNOWN_AMI},
             "InvalidAMIID.NotFound", UNKNOWN_AMI, self.iid),
            ({"Action": "DescribeSnapshots", "SnapshotId.1": self.sid,
              "SnapshotId.2": UNKNOWN_SNAP}, "InvalidSnapshot.NotFound", UNKNOWN_SNAP, self.sid),
            ({"Action": "CreateTags", "ResourceId.1": self.iid, "ResourceId.2": UNKNOWN_SNAP,
              "Tag.1.Key": "Mixed", "Tag.1.Value": "no"}, "InvalidSnapshot.NotFound",
             UNKNOWN_SNAP, self.iid),
            ({"Action": "CreateTags", "ResourceId.1": UNKNOWN_AMI, "ResourceId.2": self.free_sid,
              "Tag.1.Key": "Env", "Tag.1.Value": "overwritten"}, "InvalidAMIID.NotFound",
             UNKNOWN_AMI, self.free_sid),
            ({"Action": "DeleteTags", "ResourceId.1": self.free_sid, "ResourceId.2": UNKNOWN_AMI},
             "InvalidAMIID.NotFound", UNKNOWN_AMI, self.free_sid),
            ({"Action": "RegisterImage", "Name": "mixed-" + uuid.uuid4().hex[:8],
              "RootDeviceName": "/dev/xvda",
              "BlockDeviceMapping.1.DeviceName": "/dev/xvda",
              "BlockDeviceMapping.1.Ebs.SnapshotId": self.free_sid,
              "BlockDeviceMapping.2.DeviceName": "/dev/xvdb",
              "BlockDeviceMapping.2.Ebs.SnapshotId": UNKNOWN_SNAP},
             "InvalidSnapshot.NotFound", UNKNOWN_SNAP, self.free_sid),
        )
        for params, code, named, not_named in cases:
            with self.subTest(action=params["Action"], code=code):
                body = self.refused(400, code, params)
                self.assertIn(named, message_of(body))
                self.assertNotIn(not_named, message_of(body))

    def test_other_accounts_resources(self):
        """Bob's image is not there for changes by the default account; the
        default account's are not bob's to change."""
        for params, keys, code in (
            ({"Action": "DeregisterImage", "ImageId": self.bob_iid}, None,
             "InvalidAMIID.NotFound"),
            ({"Action": "ModifyImageAttribute", "ImageId": self.bob_iid,
              "Description.Value": "mine now"}, None, "InvalidAMIID.NotFound"),
            ({"Action": "CreateTags", "ResourceId.1": self.bob_iid, "Tag.1.Key": "k"}, None,
             "InvalidAMIID.NotFound"),
            ({"Action": "DeleteSnapshot", "SnapshotId": self.free_sid}, self.bob_keys,
             "InvalidSnapshot.NotFound"),
            ({"Action": "ModifySnapshotAttribute", "SnapshotId": self.free_sid,
              "CreateVolumePermission.Add.1.Group": "all"}, self.bob_keys,
             "InvalidSnapshot.NotFound"),
            ({"Action": "DeleteTags", "ResourceId.1": self.iid, "Tag.1.Key": "Env"},
             self.bob_keys, "InvalidAMIID.NotFound"),
        ):
            with self.subTest(action=params["Action"]):
                self.refused(400, code, params, keys=keys)


class Parameters(Base):
    def test_unknown_filter_names(self):
        for action in ("DescribeImages", "DescribeSnapshots", "DescribeTags", "DescribeRegions",
                       "DescribeAvailabilityZones"):
            for name in ("colour", "tag", "Name", "image-id ", ""):
                with self.subTest(action=action, name=name):
                    self.refused(400, "InvalidParameterValue",
                                 {"Action": action, "Filter.1.Name": name,
                                  "Filter.1.Value.1": "x"})

    def test_max_results(self):
        for action, ids in (("DescribeImages", {"ImageId.1": None}),
                            ("DescribeSnapshots", {"SnapshotId.1": None}),
                            ("DescribeTags", None)):
            for bad in ("4", "0", "-1", "abc", "5x", "", "99999999999999999999"):
                with self.subTest(action=action, max=bad):
                    self.refused(400, "InvalidParameterValue",
                                 {"Action": action, "MaxResults": bad})
            if ids:
                key = next(iter(ids))
                value = self.iid if action == "DescribeImages" else self.sid
                with self.subTest(action=action, combined="ids"):
                    self.refused(400, "InvalidParameterCombination",
                                 {"Action": action, "MaxResults": "5", key: value})
            with self.subTest(action=action, token="garbage"):
                self.refused(400, "InvalidPaginationToken",
                             {"Action": action, "MaxResults": "5", "NextToken": "not-a-token!"})

    def test_unknown_actions(self):
        for action in ("LaunchRockets", "describeimages", "DescribeImages2", "RequestSpotInstances",
                       "CreateSnapshot ", ""):
            with self.subTest(action=action):
                self.refused(400, "InvalidAction" if action else "MissingAction",
                             {"Action": action, "ImageId": self.iid})

    def test_missing_parameters(self):
        n = "m-" + uuid.uuid4().hex[:8]
        for params in (
            {"Action": "RegisterImage", "RootDeviceName": "/dev/xvda",
             "BlockDeviceMapping.1.DeviceName": "/dev/xvda",
             "BlockDeviceMapping.1.Ebs.SnapshotId": self.free_sid},
            {"Action": "RegisterImage", "Name": n},
            {"Action": "RegisterImage", "Name": n,
             "BlockDeviceMapping.1.Ebs.SnapshotId": self.free_sid},
            {"Action": "DeregisterImage"},
            {"Action": "DescribeImageAttribute", "Attribute": "description"},
            {"Action": "DescribeImageAttribute", "ImageId": self.iid},
            {"Action": "ModifyImageAttribute", "Description.Value": "x"},
            {"Action": "ModifyImageAttribute", "ImageId": self.iid},
            {"Action": "ModifyImageAttribute", "ImageId": self.iid, "Attribute": "description"},
            {"Action": "ModifyImageAttribute", "ImageId": self.iid,
             "LaunchPermission.Add.1.Foo": "x"},
            {"Action": "ModifyImageAttribute", "ImageId": self.iid,
             "Attribute": "launchPermission", "UserId.1": self.bob_account},
            {"Action": "ModifyImageAttribute", "ImageId": self.iid,
             "Attribute": "launchPermission", "OperationType": "add"},
            {"Action": "ResetImageAttribute", "ImageId": self.iid},
            {"Action": "EnableImageDeprecation", "ImageId": self.iid},
            {"Action": "EnableImageDeprecation", "DeprecateAt": NEXT_YEAR},
            {"Action": "DisableImageDeprecation"},
            {"Action": "EnableImageDeregistrationProtection"},
            {"Action": "DisableImageDeregistrationProtection"},
            {"Action": "EnableImage"},
            {"Action": "DisableImage"},
            {"Action": "DeleteSnapshot"},
            {"Action": "DescribeSnapshotAttribute", "SnapshotId": self.sid},
            {"Action": "DescribeSnapshotAttribute", "Attribute": "createVolumePermission"},
            {"Action": "ModifySnapshotAttribute", "CreateVolumePermission.Add.1.Group": "all"},
            {"Action": "ModifySnapshotAttribute", "SnapshotId": self.sid},
            {"Action": "ModifySnapshotAttribute", "SnapshotId": self.sid,
             "Attribute": "createVolumePermission", "UserId.1": self.bob_account},
            {"Action": "ModifySnapshotAttribute", "SnapshotId": self.sid,
             "CreateVolumePermission.Remove.1.Foo": "x"},
            {"Action": "ResetSnapshotAttribute", "SnapshotId": self.sid},
            {"Action": "CreateTags", "Tag.1.Key": "k"},
            {"Action": "CreateTags", "ResourceId.1": self.iid},
            {"Action": "CreateTags", "ResourceId.1": self.iid, "Tag.1.Value": "no key"},
            {"Action": "DeleteTags", "Tag.1.Key": "Env"},
            {"Action": "CopyImage", "SourceRegion": "us-east-1", "Name": n},
            {"Action": "CopyImage", "SourceImageId": self.iid, "Name": n},
            {"Action": "CopyImage", "SourceImageId": self.iid, "SourceRegion": "us-east-1"},
            {"Action": "CopySnapshot", "SourceRegion": "us-east-1"},
            {"Action": "CopySnapshot", "SourceSnapshotId": self.sid},
            {"Action": "EnableImageBlockPublicAccess"},
            {"Action": "CreateTags", "ResourceId.1": self.iid, "Tag.1.Key": "k",
             "Version": None},
        ):
            with self.subTest(params=params):
                self.refused(400, "MissingParameter", params)

    def test_invalid_values(self):
        """Values of the right name but the wrong kind."""
        for params in (
            {"Action": "DeregisterImage", "ImageId": self.iid,
             "DeleteAssociatedSnapshots": "yes"},
            {"Action": "DescribeImageAttribute", "ImageId": self.iid, "Attribute": "colour"},
            {"Action": "ModifyImageAttribute", "ImageId": self.iid,
             "LaunchPermission.Add.1.UserId": self.bob_account,
             "LaunchPermission.Add.2.UserId": "12345"},
            {"Action": "ModifyImageAttribute", "ImageId": self.iid,
             "LaunchPermission.Add.1.Group": "friends"},
            {"Action": "ModifyImageAttribute", "ImageId": self.iid,
             "Attribute": "launchPermission", "OperationType": "replace",
             "UserId.1": self.bob_account},
            {"Action": "ModifyImageAttribute", "ImageId": self.iid,
             "Description.Value": "x" * 256},
            {"Action": "ModifyImageAttribute", "ImageId": self.iid, "ImdsSupport.Value": "v1.0"},
            {"Action": "ModifyImageAttribute", "ImageId": self.iid, "Attribute": "kernel",
             "Value": "aki-12345678"},
            {"Action": "ResetImageAttribute", "ImageId": self.iid, "Attribute": "description"},
            {"Action": "EnableImageDeprecation", "ImageId": self.iid, "DeprecateAt": "tomorrow"},
            {"Action": "EnableImageDeprecation", "ImageId": self.iid,
             "DeprecateAt": "2001-01-01T00:00:00Z"},
            {"Action": "EnableImageDeregistrationProtection", "ImageId": self.iid,
             "WithCooldown": "1"},
            {"Action": "ModifySnapshotAttribute", "SnapshotId": self.sid,
             "CreateVolumePermission.Add.1.UserId": self.bob_account,
             "CreateVolumePermission.Add.2.Group": "everyone"},
            {"Action": "ModifySnapshotAttribute", "SnapshotId": self.sid,
             "Attribute": "productCodes", "OperationType": "add", "UserGroup.1": "all"},
            {"Action": "DescribeSnapshotAttribute", "SnapshotId": self.sid,
             "Attribute": "volumeSize"},
            {"Action": "CreateTags", "ResourceId.1": self.iid, "Tag.1.Key": "aws:reserved",
             "Tag.1.Value": "v"},
            # kiln: keys are kiln's (kiln:bake-build, kiln:egress): never set,
            # nor removed, through the API
            {"Action": "CreateTags", "ResourceId.1": self.iid, "Tag.1.Key": "kiln:egress",
             "Tag.1.Value": "true"},
            {"Action": "DeleteTags", "ResourceId.1": self.iid, "Tag.1.Key": "kiln:bake-build"},
            {"Action": "CreateTags", "ResourceId.1": self.iid, "Tag.1.Key": "k" * 129},
            {"Action": "CreateTags", "ResourceId.1": self.iid, "Tag.1.Key": "ok",
             "Tag.2.Key": "v", "Tag.2.Value": "x" * 257},
            {"Action": "EnableImageBlockPublicAccess",
             "ImageBlockPublicAccessState": "unblocked"},
            {"Action": "DescribeImages", "Owner.1": "someone"},
            {"Action": "DescribeImages", "ExecutableBy.1": "12"},
            {"Action": "DescribeSnapshots", "RestorableBy.1": "everybody"},
            {"Action": "DescribeImages", "IncludeDeprecated": "True"},
            {"Action": "DescribeRegions", "RegionName.1": "mars-1"},
        ):
            with self.subTest(params=params):
                self.refused(400, "InvalidParameterValue", params)

    def test_combinations(self):
        for params in (
            {"Action": "ModifyImageAttribute", "ImageId": self.iid,
             "Description.Value": "x", "ImdsSupport.Value": "v2.0"},
            {"Action": "ModifyImageAttribute", "ImageId": self.iid,
             "LaunchPermission.Add.1.Group": "all", "Description.Value": "x"},
            {"Action": "ModifySnapshotAttribute", "SnapshotId": self.sid,
             "CreateVolumePermission.Add.1.Group": "all",
             "CreateVolumePermission.Remove.1.UserId": self.bob_account},
            {"Action": "ModifySnapshotAttribute", "SnapshotId": self.sid,
             "CreateVolumePermission.Add.1.Group": "all", "OperationType": "add"},
        ):
            with self.subTest(params=params):
                self.refused(400, "InvalidParameterCombination", params)

    def test_dry_run_changes_nothing(self):
        for params in (
            {"Action": "DeregisterImage", "ImageId": self.iid},
            {"Action": "ModifyImageAttribute", "ImageId": self.iid,
             "LaunchPermission.Add.1.Group": "all"},
            {"Action": "ResetImageAttribute", "ImageId": self.iid,
             "Attribute": "launchPermission"},
            {"Action": "EnableImageDeprecation", "ImageId": self.iid,
             "DeprecateAt": NEXT_YEAR},
            {"Action": "EnableImageDeregistrationProtection", "ImageId": self.iid},
            {"Action": "DisableImage", "ImageId": self.iid},
            {"Action": "DeleteSnapshot", "SnapshotId": self.free_sid},
            {"Action": "ModifySnapshotAttribute", "SnapshotId": self.free_sid,
             "CreateVolumePermission.Add.1.Group": "all"},
            {"Action": "CreateTags", "ResourceId.1": self.iid, "Tag.1.Key": "dry"},
            {"Action": "DeleteTags", "ResourceId.1": self.iid},
            {"Action": "EnableImageBlockPublicAccess",
             "ImageBlockPublicAccessState": "block-new-sharing"},
            {"Action": "RegisterImage", "Name": "dry-" + uuid.uuid4().hex[:8],
             "RootDeviceName": "/dev/xvda", "BlockDeviceMapping.1.DeviceName": "/dev/xvda",
             "BlockDeviceMapping.1.Ebs.SnapshotId": self.free_sid},
        ):
            with self.subTest(action=params["Action"]):
                params = dict(params, DryRun="true")
                self.refused(412, "DryRunOperation", params)


class Volumes(Base):
    """The volume operations and the two describe-only ones."""

    def test_volumes(self):
        zone = "us-east-1a"
        for params, code in (
            ({"Action": "CreateVolume", "Size": "1"}, "MissingParameter"),
            ({"Action": "CreateVolume", "AvailabilityZone": zone}, "MissingParameter"),
            ({"Action": "CreateVolume", "AvailabilityZone": "us-east-1z", "Size": "1"},
             "InvalidParameterValue"),
            ({"Action": "CreateVolume", "AvailabilityZone": zone, "Size": "abc"},
             "InvalidParameterValue"),
            ({"Action": "CreateVolume", "AvailabilityZone": zone, "Size": "-1"},
             "InvalidParameterValue"),
            ({"Action": "CreateVolume", "AvailabilityZone": zone, "SnapshotId": "snap-1"},
             "InvalidSnapshotID.Malformed"),
            ({"Action": "CreateVolume", "AvailabilityZone": zone, "SnapshotId": UNKNOWN_SNAP},
             "InvalidSnapshot.NotFound"),
            ({"Action": "CreateVolume", "AvailabilityZone": zone, "Size": "1",
              "TagSpecification.1.ResourceType": "volume",
              "TagSpecification.1.Tag.1.Key": "ok",
              "TagSpecification.1.Tag.2.Key": "aws:no"}, "InvalidParameterValue"),
            ({"Action": "DeleteVolume"}, "MissingParameter"),
            ({"Action": "DeleteVolume", "VolumeId": "vol-12"}, "InvalidVolumeID.Malformed"),
            ({"Action": "DeleteVolume", "VolumeId": "vol-0000000000000beef"},
             "InvalidVolume.NotFound"),
            ({"Action": "DeleteVolume", "VolumeId": self.bob_vid}, "InvalidVolume.NotFound"),
            ({"Action": "ModifyVolume", "Size": "4"}, "MissingParameter"),
            ({"Action": "ModifyVolume", "VolumeId": "vol-zz", "Size": "4"},
             "InvalidVolumeID.Malformed"),
            ({"Action": "ModifyVolume", "VolumeId": "vol-0000000000000beef", "Size": "4"},
             "InvalidVolume.NotFound"),
            ({"Action": "ModifyVolume", "VolumeId": self.bob_vid, "Size": "4"},
             "InvalidVolume.NotFound"),
            ({"Action": "ModifyVolume", "VolumeId": self.vid, "Size": "1"},
             "InvalidParameterValue"),
            ({"Action": "ModifyVolume", "VolumeId": self.vid, "Size": "x"},
             "InvalidParameterValue"),
            ({"Action": "CreateSnapshot"}, "MissingParameter"),
            ({"Action": "CreateSnapshot", "VolumeId": "vol-"}, "InvalidVolumeID.Malformed"),
            ({"Action": "CreateSnapshot", "VolumeId": "vol-0000000000000beef"},
             "InvalidVolume.NotFound"),
            ({"Action": "CreateSnapshot", "VolumeId": self.bob_vid}, "InvalidVolume.NotFound"),
            ({"Action": "DescribeVolumes", "VolumeId.1": "vol-x"}, "InvalidVolumeID.Malformed"),
            ({"Action": "DescribeVolumes", "VolumeId.1": self.vid,
              "VolumeId.2": "vol-0000000000000beef"}, "InvalidVolume.NotFound"),
            ({"Action": "DescribeVolumes", "Filter.1.Name": "colour",
              "Filter.1.Value.1": "x"}, "InvalidParameterValue"),
            ({"Action": "DescribeVolumes", "MaxResults": "4"}, "InvalidParameterValue"),
            ({"Action": "DescribeVolumes", "MaxResults": "5", "VolumeId.1": self.vid},
             "InvalidParameterCombination"),
            ({"Action": "DescribeAccountAttributes", "AttributeName.1": "colour"},
             "InvalidParameterValue"),
            ({"Action": "DescribeAvailabilityZones", "ZoneName.1": "us-east-1z"},
             "InvalidParameterValue"),
            ({"Action": "DescribeAvailabilityZones", "ZoneId.1": "use1-az9"},
             "InvalidParameterValue"),
        ):
            with self.subTest(params=params):
                self.refused(400, code, params)


class Names(Base):
    def register_params(self, name):
        return {"Action": "RegisterImage", "Name": name, "RootDeviceName": "/dev/xvda",
                "BlockDeviceMapping.1.DeviceName": "/dev/xvda",
                "BlockDeviceMapping.1.Ebs.SnapshotId": self.free_sid}

    def test_duplicate_name(self):
        self.refused(400, "InvalidAMIName.Duplicate", self.register_params(self.name))

    def test_illegal_names(self):
        # AWS allows letters, digits, spaces and ( ) [ ] . / - ' @ _
        for name in ("ab", "x" * 129, "bad!name", "tab\tname", "na\u00efve-name", "star*name",
                     "semi;colon", "per%cent", "back\\slash", "q?"):
            with self.subTest(name=name):
                self.refused(400, "InvalidAMIName.Malformed", self.register_params(name))

    def test_snapshot_tag_limit_rolls_back(self):
        """The snapshot tags of a RegisterImage go over the limit only
        after the image row is written: the whole registration is undone."""
        params = self.register_params("limit-" + uuid.uuid4().hex[:8])
        params["TagSpecification.1.ResourceType"] = "snapshot"
        for i in range(1, 51):
            params["TagSpecification.1.Tag.%d.Key" % i] = "k%02d" % i
            params["TagSpecification.1.Tag.%d.Value" % i] = "v"
        params["TagSpecification.2.ResourceType"] = "image"
        params["TagSpecification.2.Tag.1.Key"] = "image-tag"
        self.refused(400, "TagLimitExceeded", params)

    def test_bad_device_mappings(self):
        base = self.register_params("dev-" + uuid.uuid4().hex[:8])
        for extra, code in (
            ({"RootDeviceName": "/dev/sda1"}, "InvalidBlockDeviceMapping"),
            ({"BlockDeviceMapping.2.DeviceName": "/dev/xvda",
              "BlockDeviceMapping.2.Ebs.SnapshotId": self.sid}, "InvalidBlockDeviceMapping"),
            ({"BlockDeviceMapping.1.Ebs.VolumeSize": "0x10"}, "InvalidParameterValue"),
            ({"BlockDeviceMapping.1.Ebs.VolumeType": "floppy"}, "InvalidParameterValue"),
            ({"BlockDeviceMapping.1.Ebs.Encrypted": "true"}, "InvalidParameterValue"),
            ({"BlockDeviceMapping.2.DeviceName": "/dev/xvdb",
              "BlockDeviceMapping.2.VirtualName": "ephemeral99"}, "InvalidBlockDeviceMapping"),
            ({"Architecture": "mips"}, "InvalidParameterValue"),
            ({"ImageLocation": "bucket/manifest.xml"}, "InvalidParameterValue"),
        ):
            with self.subTest(extra=extra):
                self.refused(400, code, dict(base, **extra))


class Transport(Base):
    def test_oversized_body(self):
        big = urllib.parse.urlencode({"Action": "CreateTags", "Version": V,
                                      "ResourceId.1": self.iid, "Tag.1.Key": "big",
                                      "Tag.1.Value": "v", "Pad": "x" * (2 << 20)}).encode()

        def send():
            try:
                return raw(None, body=big)
            except (ConnectionError, http.client.HTTPException):
                # The server may close before reading it all: also a
                # refusal; say so in the expected form.
                return 413, (b"<Response><Errors><Error><Code>RequestEntityTooLarge</Code>"
                             b"</Error></Errors></Response>")
        self.refused(413, "RequestEntityTooLarge", send=send)

    def test_invalid_utf8(self):
        for body in (
            b"Action=CreateTags&Version=2016-11-15&ResourceId.1=%s&Tag.1.Key=k&Tag.1.Value=%%C3%%28"
            % self.iid.encode(),
            b"Action=ModifyImageAttribute&Version=2016-11-15&ImageId=%s&Description.Value=%%FF"
            % self.iid.encode(),
            b"Action=RegisterImage&Version=2016-11-15&Name=utf8-test&RootDeviceName=/dev/xvda"
            b"&BlockDeviceMapping.1.DeviceName=/dev/xvda"
            b"&BlockDeviceMapping.1.Ebs.SnapshotId=%s&Description=%%ED%%A0%%80"
            % self.free_sid.encode(),
            b"Action=CreateTags&Version=2016-11-15&ResourceId.1=%s&Tag.1.Key=%%C0%%AF"
            % self.iid.encode(),
        ):
            with self.subTest(body=body[:60]):
                self.refused(400, "MalformedQueryString", body=body)

    def test_bad_signature(self):
        params = {"Action": "CreateTags", "Version": V, "ResourceId.1": self.iid,
                  "Tag.1.Key": "signed", "Tag.1.Value": "badly"}
        self.refused(401, "AuthFailure", params, keys=(self.keys[0], "wrong" + self.keys[1]))
        self.refused(401, "AuthFailure", params, keys=("AKIDNOSUCHKEY000", self.keys[1]))

        def tampered():
            # Signed for one body, sent with another.
            data = urllib.parse.urlencode(params).encode()
            req = AWSRequest(method="POST", url=ENDPOINT + "/", data=data, headers={
                "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
            SigV4Auth(Credentials(*self.keys), "ec2", "us-east-1").add_auth(req)
            return self.send(req, body=data.replace(b"badly", b"evil!"))
        self.refused(401, "AuthFailure", send=tampered)

    def send(self, req, body=None, url=None):
        parts = urllib.parse.urlsplit(url or req.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        try:
            path = parts.path + ("?" + parts.query if parts.query else "")
            conn.request(req.method, path, body=req.body if body is None else body,
                         headers=dict(req.headers))
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def test_expired_dates(self):
        params = {"Action": "CreateTags", "Version": V, "ResourceId.1": self.iid,
                  "Tag.1.Key": "late", "Tag.1.Value": "v"}
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)

        def at(delta, query=False, expires=60):
            def send():
                when = now + delta
                with mock.patch.object(botocore.auth, "get_current_datetime",
                                       return_value=when):
                    if query:
                        url = ENDPOINT + "/?" + urllib.parse.urlencode(params)
                        req = AWSRequest(method="GET", url=url)
                        SigV4QueryAuth(Credentials(*self.keys), "ec2", "us-east-1",
                                       expires=expires).add_auth(req)
                    else:
                        req = AWSRequest(method="POST", url=ENDPOINT + "/",
                                         data=urllib.parse.urlencode(params).encode(),
                                         headers={"Content-Type": "application/"
                                                  "x-www-form-urlencoded; charset=utf-8"})
                        SigV4Auth(Credentials(*self.keys), "ec2", "us-east-1").add_auth(req)
                return self.send(req)
            return send

        for name, send in (("an hour old", at(datetime.timedelta(hours=-1))),
                           ("an hour ahead", at(datetime.timedelta(hours=1))),
                           ("a day old", at(datetime.timedelta(days=-1))),
                           ("presigned, expired", at(datetime.timedelta(minutes=-10), True, 60)),
                           ("presigned, from the future", at(datetime.timedelta(hours=2), True))):
            with self.subTest(name):
                self.refused(401, "AuthFailure", send=send)

    def test_wrong_region(self):
        params = {"Action": "CreateTags", "Version": V, "ResourceId.1": self.iid,
                  "Tag.1.Key": "region", "Tag.1.Value": "wrong"}
        # A region this server does not serve.
        body = self.refused(400, "InvalidParameterValue", params, region="eu-north-9")
        self.assertIn("eu-north-9", message_of(body))
        # A region it serves, which does not hold the resource.
        self.refused(400, "InvalidAMIID.NotFound", params, region="us-west-2")
        self.refused(400, "InvalidSnapshot.NotFound",
                     {"Action": "DeleteSnapshot", "SnapshotId": self.west_sid})
        self.refused(400, "InvalidSnapshot.NotFound",
                     {"Action": "RegisterImage", "Name": "west-" + uuid.uuid4().hex[:8],
                      "RootDeviceName": "/dev/xvda",
                      "BlockDeviceMapping.1.DeviceName": "/dev/xvda",
                      "BlockDeviceMapping.1.Ebs.SnapshotId": self.west_sid})


if __name__ == "__main__":
    unittest.main()
