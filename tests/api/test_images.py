"""Images through the EC2 API against a real `kiln serve` (started by run.sh):
RegisterImage from imported snapshots, DescribeImages (ids, owners,
ExecutableBy, filters, tags, paging, the waiter, the aws CLI),
DeregisterImage (with DeleteAssociatedSnapshots), the image attributes
(launch permissions in both wire forms, description, imdsSupport),
deprecation, deregistration protection, Enable/DisableImage, sharing with
a second account and making an image public, and DeleteSnapshot's
InvalidSnapshot.InUse while an image maps the snapshot.

Snapshots come from `kiln snapshot import` and belong to the data
directory's default account, whose key the server wrote to
DATA/credentials (see test_snapshots.py)."""
import datetime
import http.client
import json
import os
import sqlite3
import subprocess
import unittest
import urllib.parse
import uuid
import xml.etree.ElementTree as ET

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from test_snapshots import (CREDENTIALS, DATA, ENDPOINT, KILN, bob_keys, client, default_keys,
                            import_snapshot, provider_account, set_owner)

NS = "{http://ec2.amazonaws.com/doc/2016-11-15/}"


def unique_name(prefix="img"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


class Base(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.keys = default_keys()
        cls.ec2 = client(cls.keys)
        sid = import_snapshot()
        cls.account = cls.ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["OwnerId"]
        bob = bob_keys()
        cls.bob = client(bob[:2])
        cls.bob_account = bob[2]

    def assertCode(self, code, fn, *args, **kwargs):
        with self.assertRaises(ClientError) as e:
            fn(*args, **kwargs)
        self.assertEqual(e.exception.response["Error"]["Code"], code,
                         e.exception.response["Error"])
        return e.exception.response

    def register(self, name=None, snapshot=None, tags=None, **kwargs):
        sid = snapshot or import_snapshot()
        args = dict(Name=name or unique_name(), Architecture="x86_64",
                    RootDeviceName="/dev/xvda", VirtualizationType="hvm",
                    BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                          "Ebs": {"SnapshotId": sid}}])
        if tags:
            args["TagSpecifications"] = [{"ResourceType": "image",
                                          "Tags": [{"Key": k, "Value": v}
                                                   for k, v in tags.items()]}]
        args.update(kwargs)
        return self.ec2.register_image(**args)["ImageId"], sid

    def ids(self, c=None, **kwargs):
        return [i["ImageId"] for i in (c or self.ec2).describe_images(**kwargs)["Images"]]


class Register(Base):
    def test_register_and_describe_shape(self):
        sid = import_snapshot(size=3 * 1024 * 1024)
        name = unique_name("shape")
        iid, _ = self.register(name=name, snapshot=sid, Description="a test image",
                               EnaSupport=True, BootMode="uefi", ImdsSupport="v2.0",
                               tags={"Name": "web", "Env": "test"})
        self.assertRegex(iid, r"^ami-[0-9a-f]{17}$")
        imgs = self.ec2.describe_images(ImageIds=[iid])["Images"]
        self.assertEqual(len(imgs), 1)
        i = imgs[0]
        self.assertEqual(i["ImageId"], iid)
        self.assertEqual(i["Name"], name)
        self.assertEqual(i["Description"], "a test image")
        self.assertEqual(i["State"], "available")
        self.assertEqual(i["OwnerId"], self.account)
        self.assertIs(i["Public"], False)
        self.assertEqual(i["Architecture"], "x86_64")
        self.assertEqual(i["ImageType"], "machine")
        self.assertEqual(i["RootDeviceType"], "ebs")
        self.assertEqual(i["RootDeviceName"], "/dev/xvda")
        self.assertEqual(i["VirtualizationType"], "hvm")
        self.assertIs(i["EnaSupport"], True)
        self.assertEqual(i["BootMode"], "uefi")
        self.assertEqual(i["ImdsSupport"], "v2.0")
        self.assertEqual(i["DeregistrationProtection"], "disabled")
        self.assertEqual(i["Hypervisor"], "xen")
        self.assertEqual(i["ImageLocation"], "%s/%s" % (self.account, name))
        self.assertRegex(i["CreationDate"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual(sorted((t["Key"], t["Value"]) for t in i["Tags"]),
                         [("Env", "test"), ("Name", "web")])
        bdm = i["BlockDeviceMappings"]
        self.assertEqual(len(bdm), 1)
        self.assertEqual(bdm[0]["DeviceName"], "/dev/xvda")
        self.assertEqual(bdm[0]["Ebs"]["SnapshotId"], sid)
        self.assertEqual(bdm[0]["Ebs"]["VolumeSize"], 1)
        self.assertIs(bdm[0]["Ebs"]["DeleteOnTermination"], True)
        self.assertIs(bdm[0]["Ebs"]["Encrypted"], False)

    def test_defaults(self):
        sid = import_snapshot()
        iid = self.ec2.register_image(
            Name=unique_name(),
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid}}])["ImageId"]
        i = self.ec2.describe_images(ImageIds=[iid])["Images"][0]
        self.assertEqual(i["Architecture"], "x86_64")
        self.assertEqual(i["VirtualizationType"], "hvm")
        self.assertEqual(i["RootDeviceName"], "/dev/xvda")

    def test_several_devices_and_sizes(self):
        root, data = import_snapshot(), import_snapshot()
        iid = self.ec2.register_image(
            Name=unique_name(), RootDeviceName="/dev/sda1",
            BlockDeviceMappings=[
                {"DeviceName": "/dev/sda1",
                 "Ebs": {"SnapshotId": root, "VolumeSize": 8, "VolumeType": "gp3",
                         "Iops": 3000, "Throughput": 125, "DeleteOnTermination": False}},
                {"DeviceName": "/dev/sdb", "Ebs": {"SnapshotId": data}},
                {"DeviceName": "/dev/sdc", "VirtualName": "ephemeral0"},
                {"DeviceName": "/dev/sdd", "NoDevice": ""},
            ])["ImageId"]
        bdm = self.ec2.describe_images(ImageIds=[iid])["Images"][0]["BlockDeviceMappings"]
        self.assertEqual([b["DeviceName"] for b in bdm],
                         ["/dev/sda1", "/dev/sdb", "/dev/sdc", "/dev/sdd"])
        self.assertEqual(bdm[0]["Ebs"]["VolumeSize"], 8)
        self.assertEqual(bdm[0]["Ebs"]["VolumeType"], "gp3")
        self.assertEqual(bdm[0]["Ebs"]["Iops"], 3000)
        self.assertEqual(bdm[0]["Ebs"]["Throughput"], 125)
        self.assertIs(bdm[0]["Ebs"]["DeleteOnTermination"], False)
        self.assertEqual(bdm[1]["Ebs"]["SnapshotId"], data)
        self.assertEqual(bdm[2]["VirtualName"], "ephemeral0")
        self.assertIn("NoDevice", bdm[3])
        self.assertIn(iid, self.ids(Filters=[{"Name": "block-device-mapping.snapshot-id",
                                              "Values": [data]}]))
        self.assertIn(iid, self.ids(Filters=[{"Name": "block-device-mapping.volume-size",
                                              "Values": ["8"]}]))

    def test_errors(self):
        sid = import_snapshot()
        bdm = [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid}}]
        self.assertCode("InvalidAMIName.Malformed", self.ec2.register_image,
                        Name="a" * 129, BlockDeviceMappings=bdm)
        self.assertCode("InvalidAMIName.Malformed", self.ec2.register_image,
                        Name="bad*name", BlockDeviceMappings=bdm)
        self.assertCode("MissingParameter", self.ec2.register_image, Name=unique_name())
        self.assertCode("InvalidSnapshot.NotFound", self.ec2.register_image,
                        Name=unique_name(), BlockDeviceMappings=[
                            {"DeviceName": "/dev/xvda",
                             "Ebs": {"SnapshotId": "snap-00000000000000000"}}])
        self.assertCode("InvalidSnapshotID.Malformed", self.ec2.register_image,
                        Name=unique_name(), BlockDeviceMappings=[
                            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-1"}}])
        self.assertCode("InvalidBlockDeviceMapping", self.ec2.register_image,
                        Name=unique_name(), RootDeviceName="/dev/sda1", BlockDeviceMappings=bdm)
        big = import_snapshot(size=(1 << 30) + 4096)  # 2 GiB when rounded up
        self.assertCode("InvalidBlockDeviceMapping", self.ec2.register_image,
                        Name=unique_name(), BlockDeviceMappings=[
                            {"DeviceName": "/dev/xvda",
                             "Ebs": {"SnapshotId": big, "VolumeSize": 1}}])
        self.assertCode("InvalidParameterValue", self.ec2.register_image,
                        Name=unique_name(), Architecture="sparc", BlockDeviceMappings=bdm)
        self.assertCode("InvalidParameterValue", self.ec2.register_image,
                        Name=unique_name(), BlockDeviceMappings=bdm,
                        TagSpecifications=[{"ResourceType": "volume",
                                            "Tags": [{"Key": "a", "Value": "b"}]}])
        # Nothing was registered by the failures.
        self.assertCode("InvalidSnapshot.NotFound", self.bob.register_image,
                        Name=unique_name(), BlockDeviceMappings=bdm)

    def test_duplicate_name_and_name_freed(self):
        name = unique_name("dup")
        iid, sid = self.register(name=name)
        r = self.assertCode("InvalidAMIName.Duplicate", self.register, name=name)
        self.assertIn(iid, r["Error"]["Message"])
        self.assertTrue(self.ec2.deregister_image(ImageId=iid)["Return"])
        iid2, _ = self.register(name=name, snapshot=sid)
        self.assertNotEqual(iid, iid2)

    def test_snapshot_tags(self):
        sid = import_snapshot()
        iid = self.ec2.register_image(
            Name=unique_name(), BlockDeviceMappings=[
                {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid}}],
            TagSpecifications=[{"ResourceType": "snapshot",
                                "Tags": [{"Key": "From", "Value": "register"}]}])["ImageId"]
        tags = self.ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["Tags"]
        self.assertEqual(tags, [{"Key": "From", "Value": "register"}])
        self.assertEqual(self.ec2.describe_images(ImageIds=[iid])["Images"][0]["Tags"], [])

    def test_dry_run(self):
        name = unique_name("dry")
        sid = import_snapshot()
        self.assertCode("DryRunOperation", self.ec2.register_image, DryRun=True, Name=name,
                        BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                              "Ebs": {"SnapshotId": sid}}])
        self.assertEqual(self.ids(Filters=[{"Name": "name", "Values": [name]}]), [])
        self.assertCode("InvalidAMIName.Malformed", self.ec2.register_image, DryRun=True,
                        Name="bad!name", BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                                               "Ebs": {"SnapshotId": sid}}])


class Describe(Base):
    def test_owner_self_name_wildcard_and_tags(self):
        prefix = unique_name("wild")
        a, _ = self.register(name=prefix + "-a", tags={"Role": "web"})
        b, _ = self.register(name=prefix + "-b", tags={"Role": "db"})
        self.assertIn(a, self.ids(Owners=["self"]))
        self.assertIn(a, self.ids(Owners=[self.account]))
        self.assertEqual(self.ids(Owners=["amazon"]), [])
        self.assertEqual(self.ids(Owners=["999999999999"]), [])
        self.assertCode("InvalidParameterValue", self.ec2.describe_images, Owners=["nobody"])
        self.assertEqual(sorted(self.ids(Filters=[{"Name": "name", "Values": [prefix + "-*"]}])),
                         sorted([a, b]))
        self.assertEqual(self.ids(Filters=[{"Name": "name", "Values": [prefix + "-?"]},
                                           {"Name": "tag:Role", "Values": ["web"]}]), [a])
        self.assertEqual(sorted(self.ids(Filters=[{"Name": "name", "Values": [prefix + "*"]},
                                                  {"Name": "tag-key", "Values": ["Ro*"]}])),
                         sorted([a, b]))
        self.assertEqual(self.ids(Filters=[{"Name": "image-id", "Values": [b]},
                                           {"Name": "state", "Values": ["available"]},
                                           {"Name": "is-public", "Values": ["false"]},
                                           {"Name": "architecture", "Values": ["x86_64"]},
                                           {"Name": "root-device-type", "Values": ["ebs"]},
                                           {"Name": "root-device-name", "Values": ["/dev/xvda"]},
                                           {"Name": "virtualization-type", "Values": ["hvm"]},
                                           {"Name": "image-type", "Values": ["machine"]},
                                           {"Name": "owner-id", "Values": [self.account]}]),
                         [b])
        self.assertEqual(self.ids(Filters=[{"Name": "image-id", "Values": [b]},
                                           {"Name": "state", "Values": ["pending"]}]), [])
        self.assertIn(a, self.ids(ExecutableUsers=["self"]))
        self.assertNotIn(a, self.ids(ExecutableUsers=["all"]))
        self.assertCode("InvalidParameterValue", self.ec2.describe_images,
                        Filters=[{"Name": "no-such-filter", "Values": ["x"]}])

    def test_malformed_and_unknown_ids(self):
        for bad in ["ami-1", "ami-XYZ", "snap-0123456789abcdef0", "ami-0123456789abcdef"]:
            self.assertCode("InvalidAMIID.Malformed", self.ec2.describe_images, ImageIds=[bad])
        r = self.assertCode("InvalidAMIID.NotFound", self.ec2.describe_images,
                            ImageIds=["ami-00000000000000000"])
        self.assertIn("ami-00000000000000000", r["Error"]["Message"])
        self.assertEqual(r["ResponseMetadata"]["HTTPStatusCode"], 400)

    def test_max_results_and_paginator(self):
        prefix = unique_name("page")
        made = [self.register(name="%s-%d" % (prefix, k))[0] for k in range(7)]
        flt = [{"Name": "name", "Values": [prefix + "-*"]}]
        r = self.ec2.describe_images(Filters=flt, MaxResults=5)
        self.assertEqual(len(r["Images"]), 5)
        self.assertTrue(r.get("NextToken"))
        r2 = self.ec2.describe_images(Filters=flt, MaxResults=5, NextToken=r["NextToken"])
        self.assertEqual(len(r2["Images"]), 2)
        self.assertFalse(r2.get("NextToken"))
        seen = []
        for page in self.ec2.get_paginator("describe_images").paginate(
                Filters=flt, PaginationConfig={"PageSize": 5}):
            seen += [i["ImageId"] for i in page["Images"]]
        self.assertEqual(sorted(seen), sorted(made))
        self.assertEqual(len(seen), len(set(seen)))
        self.assertCode("InvalidParameterCombination", self.ec2.describe_images,
                        ImageIds=[made[0]], MaxResults=5)
        self.assertCode("InvalidParameterValue", self.ec2.describe_images, MaxResults=4)
        self.assertCode("InvalidPaginationToken", self.ec2.describe_images,
                        NextToken="not-a-token", MaxResults=5)

    def test_dry_run(self):
        self.assertCode("DryRunOperation", self.ec2.describe_images, DryRun=True)
        self.assertCode("InvalidAMIID.Malformed", self.ec2.describe_images, DryRun=True,
                        ImageIds=["ami-nope"])

    def test_waiter(self):
        iid, _ = self.register()
        self.ec2.get_waiter("image_available").wait(
            ImageIds=[iid], WaiterConfig={"Delay": 1, "MaxAttempts": 5})
        self.ec2.get_waiter("image_exists").wait(
            ImageIds=[iid], WaiterConfig={"Delay": 1, "MaxAttempts": 5})

    def test_cli_table_and_query(self):
        name = unique_name("cli")
        iid, _ = self.register(name=name)
        env = dict(os.environ, AWS_SHARED_CREDENTIALS_FILE=CREDENTIALS,
                   AWS_CONFIG_FILE="/dev/null", AWS_PAGER="")
        base = ["aws", "--region", "us-east-1", "--endpoint-url", ENDPOINT, "ec2"]
        r = subprocess.run(base + ["describe-images", "--owners", "self", "--output", "table"],
                           env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("DescribeImages", r.stdout)
        self.assertIn(iid, r.stdout)
        r = subprocess.run(base + ["describe-images", "--owners", "self",
                                   "--filters", "Name=name,Values=" + name,
                                   "--query", "Images[].[ImageId,State,Name]",
                                   "--output", "text"],
                           env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), [iid, "available", name])
        r = subprocess.run(base + ["describe-images", "--image-ids", "ami-00000000000000000"],
                           env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 255)
        self.assertIn("InvalidAMIID.NotFound", r.stderr)

    def test_raw_xml_elements(self):
        iid, sid = self.register(tags={"Name": "raw"})
        params = {"Action": "DescribeImages", "Version": "2016-11-15", "ImageId.1": iid}
        req = AWSRequest(method="POST", url=ENDPOINT + "/",
                         data=urllib.parse.urlencode(params).encode(),
                         headers={"Content-Type":
                                  "application/x-www-form-urlencoded; charset=utf-8"})
        SigV4Auth(Credentials(*self.keys), "ec2", "us-east-1").add_auth(req)
        parts = urllib.parse.urlsplit(ENDPOINT)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            conn.request("POST", "/", body=req.body, headers=dict(req.headers))
            resp = conn.getresponse()
            status, body = resp.status, resp.read()
        finally:
            conn.close()
        self.assertEqual(status, 200, body)
        root = ET.fromstring(body)
        self.assertEqual(root.tag, NS + "DescribeImagesResponse")
        item = root.find(NS + "imagesSet/" + NS + "item")
        for el in ["imageId", "imageLocation", "imageState", "imageOwnerId", "creationDate",
                   "isPublic", "architecture", "imageType", "name", "rootDeviceType",
                   "rootDeviceName", "blockDeviceMapping", "virtualizationType", "tagSet",
                   "hypervisor", "enaSupport", "deregistrationProtection"]:
            self.assertIsNotNone(item.find(NS + el), el)
        ebs = item.find(NS + "blockDeviceMapping/" + NS + "item/" + NS + "ebs")
        self.assertEqual(ebs.find(NS + "snapshotId").text, sid)


class ProviderAlias(Base):
    """The provider account (named `kiln`) owns the public base images that
    `kiln base-image build` registers: `Owner=kiln` selects them, as
    `Owner=amazon` does on AWS, and they carry imageOwnerAlias `kiln`."""

    def test_owner_kiln_and_alias(self):
        provider = provider_account(lambda: self.ec2.describe_images(Owners=["kiln"]))
        base, _ = self.register(name=unique_name("base"))
        mine, _ = self.register()
        self.ec2.modify_image_attribute(ImageId=base, LaunchPermission={"Add": [{"Group": "all"}]})
        self.ec2.modify_image_attribute(ImageId=mine, LaunchPermission={"Add": [{"Group": "all"}]})
        set_owner("images", base, provider)
        try:
            for c in (self.ec2, self.bob):
                ids = self.ids(c, Owners=["kiln"])
                self.assertIn(base, ids)
                self.assertNotIn(mine, ids)
                self.assertIn(base, self.ids(c, Owners=["kiln", "self"]))
                self.assertNotIn(base, self.ids(c, Owners=["amazon"]))
                self.assertIn(base, self.ids(c, Owners=[provider]))
                shown = {i["ImageId"]: i for i in c.describe_images(ImageIds=[base, mine])["Images"]}
                self.assertEqual(shown[base]["ImageOwnerAlias"], "kiln")
                self.assertEqual(shown[base]["OwnerId"], provider)
                self.assertNotIn("ImageOwnerAlias", shown[mine])
                flt = [{"Name": "owner-alias", "Values": ["kiln"]}]
                self.assertIn(base, self.ids(c, Filters=flt))
                self.assertNotIn(mine, self.ids(c, Filters=flt))
                self.assertNotIn(base, self.ids(c, Filters=[{"Name": "owner-alias",
                                                             "Values": ["amazon"]}]))
                self.assertIn(base, self.ids(c, Filters=[{"Name": "owner-alias",
                                                          "Values": ["k*"]}]))
            self.assertNotIn(base, self.ids(Owners=["self"]))
            self.assertIn(mine, self.ids(Owners=["self"]))
        finally:
            set_owner("images", base, self.account)
            for iid in (base, mine):
                self.ec2.reset_image_attribute(ImageId=iid, Attribute="launchPermission")


class Sharing(Base):
    def test_private_share_public(self):
        iid, _ = self.register(tags={"Secret": "yes"})
        # Invisible to bob while private.
        self.assertNotIn(iid, self.ids(self.bob))
        self.assertCode("InvalidAMIID.NotFound", self.bob.describe_images, ImageIds=[iid])
        self.assertCode("InvalidAMIID.NotFound", self.bob.deregister_image, ImageId=iid)
        self.assertCode("InvalidAMIID.NotFound", self.bob.modify_image_attribute, ImageId=iid,
                        Description={"Value": "mine"})
        # Shared with bob.
        self.ec2.modify_image_attribute(ImageId=iid, LaunchPermission={
            "Add": [{"UserId": self.bob_account}]})
        a = self.ec2.describe_image_attribute(ImageId=iid, Attribute="launchPermission")
        self.assertEqual(a["LaunchPermissions"], [{"UserId": self.bob_account}])
        self.assertIn(iid, self.ids(self.bob, ExecutableUsers=["self"]))
        self.assertIn(iid, self.ids(self.bob))
        self.assertIn(iid, self.ids(ExecutableUsers=[self.bob_account]))
        self.assertNotIn(iid, self.ids(self.bob, ExecutableUsers=["all"]))
        self.assertEqual(self.bob.describe_image_attribute(
            ImageId=iid, Attribute="blockDeviceMapping")["ImageId"], iid)
        self.assertNotIn(iid, self.ids(self.bob, Owners=["self"]))
        shown = self.bob.describe_images(ImageIds=[iid])["Images"][0]
        self.assertEqual(shown["Tags"], [])
        self.assertCode("AuthFailure", self.bob.modify_image_attribute, ImageId=iid,
                        Description={"Value": "mine"})
        self.assertCode("AuthFailure", self.bob.deregister_image, ImageId=iid)
        self.assertCode("AuthFailure", self.bob.describe_image_attribute, ImageId=iid,
                        Attribute="launchPermission")
        self.assertCode("InvalidAMIID.NotFound", self.bob.create_tags, Resources=[iid],
                        Tags=[{"Key": "k", "Value": "v"}])
        # Removed again.
        self.ec2.modify_image_attribute(ImageId=iid, LaunchPermission={
            "Remove": [{"UserId": self.bob_account}]})
        self.assertNotIn(iid, self.ids(self.bob))
        self.assertCode("InvalidAMIID.NotFound", self.bob.describe_images, ImageIds=[iid])
        # Public: bob sees it, without its tags.
        self.ec2.modify_image_attribute(ImageId=iid, LaunchPermission={"Add": [{"Group": "all"}]})
        shown = self.bob.describe_images(ImageIds=[iid])["Images"][0]
        self.assertIs(shown["Public"], True)
        self.assertEqual(shown["Tags"], [])
        self.assertIn(iid, self.ids(self.bob, ExecutableUsers=["all"]))
        self.assertIn(iid, self.ids(self.bob, Filters=[{"Name": "is-public",
                                                         "Values": ["true"]}]))
        self.assertEqual(self.ec2.describe_images(ImageIds=[iid])["Images"][0]["Tags"],
                         [{"Key": "Secret", "Value": "yes"}])
        # Reset makes it private again.
        self.ec2.reset_image_attribute(ImageId=iid, Attribute="launchPermission")
        self.assertCode("InvalidAMIID.NotFound", self.bob.describe_images, ImageIds=[iid])
        self.assertEqual(self.ec2.describe_image_attribute(
            ImageId=iid, Attribute="launchPermission")["LaunchPermissions"], [])

    def test_legacy_form(self):
        iid, _ = self.register()
        self.ec2.modify_image_attribute(ImageId=iid, Attribute="launchPermission",
                                        OperationType="add", UserIds=[self.bob_account],
                                        UserGroups=["all"])
        perms = self.ec2.describe_image_attribute(
            ImageId=iid, Attribute="launchPermission")["LaunchPermissions"]
        self.assertIn({"UserId": self.bob_account}, perms)
        self.assertIn({"Group": "all"}, perms)
        self.ec2.modify_image_attribute(ImageId=iid, Attribute="launchPermission",
                                        OperationType="remove", UserGroups=["all"])
        self.assertEqual(self.ec2.describe_image_attribute(
            ImageId=iid, Attribute="launchPermission")["LaunchPermissions"],
            [{"UserId": self.bob_account}])
        self.assertCode("InvalidParameterValue", self.ec2.modify_image_attribute, ImageId=iid,
                        LaunchPermission={"Add": [{"Group": "friends"}]})
        self.assertCode("InvalidParameterValue", self.ec2.modify_image_attribute, ImageId=iid,
                        LaunchPermission={"Add": [{"UserId": "12345"}]})


class Attributes(Base):
    def test_description_and_imds(self):
        iid, _ = self.register(Description="before")
        self.ec2.modify_image_attribute(ImageId=iid, Description={"Value": "after"})
        a = self.ec2.describe_image_attribute(ImageId=iid, Attribute="description")
        self.assertEqual(a["Description"]["Value"], "after")
        self.ec2.modify_image_attribute(ImageId=iid, Attribute="description", Value="legacy")
        self.assertEqual(self.ec2.describe_images(ImageIds=[iid])["Images"][0]["Description"],
                         "legacy")
        self.ec2.modify_image_attribute(ImageId=iid, ImdsSupport={"Value": "v2.0"})
        a = self.ec2.describe_image_attribute(ImageId=iid, Attribute="imdsSupport")
        self.assertEqual(a["ImdsSupport"]["Value"], "v2.0")
        a = self.ec2.describe_image_attribute(ImageId=iid, Attribute="blockDeviceMapping")
        self.assertEqual(a["BlockDeviceMappings"][0]["DeviceName"], "/dev/xvda")
        self.assertCode("InvalidParameterValue", self.ec2.modify_image_attribute, ImageId=iid,
                        Attribute="blockDeviceMapping", Value="x")
        self.assertCode("InvalidParameterValue", self.ec2.describe_image_attribute,
                        ImageId=iid, Attribute="nonsense")
        self.assertCode("InvalidParameterValue", self.ec2.reset_image_attribute,
                        ImageId=iid, Attribute="description")
        self.assertCode("MissingParameter", self.ec2.modify_image_attribute, ImageId=iid)

    def test_deprecation(self):
        iid, _ = self.register()
        at = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)) \
            .replace(second=0, microsecond=0)
        self.assertTrue(self.ec2.enable_image_deprecation(ImageId=iid, DeprecateAt=at)["Return"])
        i = self.ec2.describe_images(ImageIds=[iid])["Images"][0]
        self.assertEqual(i["DeprecationTime"], at.strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.assertCode("InvalidParameterValue", self.ec2.enable_image_deprecation, ImageId=iid,
                        DeprecateAt=datetime.datetime(2001, 1, 1))
        self.assertTrue(self.ec2.disable_image_deprecation(ImageId=iid)["Return"])
        self.assertNotIn("DeprecationTime", self.ec2.describe_images(ImageIds=[iid])["Images"][0])

    def test_deprecated_hidden_from_others(self):
        iid, _ = self.register()
        self.ec2.modify_image_attribute(ImageId=iid, LaunchPermission={"Add": [{"Group": "all"}]})
        # EnableImageDeprecation only takes future times: move it into the
        # past behind the server's back (WAL lets us write beside it).
        db = sqlite3.connect(os.path.join(DATA, "regions", "us-east-1", "registry.db"),
                             timeout=10)
        with db:
            db.execute("UPDATE images SET deprecation_time = 1000 WHERE id = ?", (iid,))
        db.close()
        self.assertIn(iid, self.ids(Owners=["self"]))
        self.assertNotIn(iid, self.ids(self.bob, ExecutableUsers=["all"]))
        self.assertIn(iid, self.ids(self.bob, ExecutableUsers=["all"], IncludeDeprecated=True))
        shown = self.bob.describe_images(ImageIds=[iid])["Images"]
        self.assertEqual(shown[0]["DeprecationTime"], "1970-01-01T00:00:01Z")

    def test_deregistration_protection(self):
        iid, _ = self.register()
        r = self.ec2.enable_image_deregistration_protection(ImageId=iid)
        self.assertEqual(r["Return"], "enabled-without-cooldown")
        self.assertEqual(self.ec2.describe_images(ImageIds=[iid])["Images"][0]
                         ["DeregistrationProtection"], "enabled-without-cooldown")
        self.assertCode("OperationNotPermitted", self.ec2.deregister_image, ImageId=iid)
        self.assertEqual(self.ec2.disable_image_deregistration_protection(ImageId=iid)["Return"],
                         "disabled")
        self.assertTrue(self.ec2.deregister_image(ImageId=iid)["Return"])
        # With a cooldown, disabling still blocks deregistration for a day.
        iid, _ = self.register()
        r = self.ec2.enable_image_deregistration_protection(ImageId=iid, WithCooldown=True)
        self.assertEqual(r["Return"], "enabled-with-cooldown")
        self.ec2.disable_image_deregistration_protection(ImageId=iid)
        self.assertCode("OperationNotPermitted", self.ec2.deregister_image, ImageId=iid)

    def test_disable_enable(self):
        iid, _ = self.register()
        self.ec2.modify_image_attribute(ImageId=iid, LaunchPermission={"Add": [{"Group": "all"}]})
        self.assertTrue(self.ec2.disable_image(ImageId=iid)["Return"])
        self.assertNotIn(iid, self.ids(Owners=["self"]))
        i = self.ec2.describe_images(Owners=["self"], IncludeDisabled=True,
                                     Filters=[{"Name": "image-id", "Values": [iid]}])["Images"]
        self.assertEqual(i[0]["State"], "disabled")
        self.assertIs(i[0]["Public"], False)
        self.assertCode("InvalidAMIID.NotFound", self.bob.describe_images, ImageIds=[iid])
        self.assertTrue(self.ec2.enable_image(ImageId=iid)["Return"])
        i = self.ec2.describe_images(ImageIds=[iid])["Images"][0]
        self.assertEqual(i["State"], "available")
        self.assertIs(i["Public"], False)


class Deregister(Base):
    def test_deregister_and_in_use(self):
        iid, sid = self.register()
        r = self.assertCode("InvalidSnapshot.InUse", self.ec2.delete_snapshot, SnapshotId=sid)
        self.assertIn(sid, r["Error"]["Message"])
        self.assertTrue(self.ec2.deregister_image(ImageId=iid)["Return"])
        self.assertCode("InvalidAMIID.NotFound", self.ec2.describe_images, ImageIds=[iid])
        self.assertNotIn(iid, self.ids(Owners=["self"]))
        self.assertCode("InvalidAMIID.Unavailable", self.ec2.deregister_image, ImageId=iid)
        self.ec2.delete_snapshot(SnapshotId=sid)
        self.assertCode("InvalidSnapshot.NotFound", self.ec2.describe_snapshots,
                        SnapshotIds=[sid])

    def test_delete_associated_snapshots(self):
        shared = import_snapshot()
        own = import_snapshot()
        iid = self.ec2.register_image(
            Name=unique_name(), BlockDeviceMappings=[
                {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": own}},
                {"DeviceName": "/dev/xvdb", "Ebs": {"SnapshotId": shared}}])["ImageId"]
        other, _ = self.register(snapshot=shared)
        r = self.ec2.deregister_image(ImageId=iid, DeleteAssociatedSnapshots=True)
        self.assertTrue(r["Return"])
        codes = {d["SnapshotId"]: d["ReturnCode"] for d in r["DeleteSnapshotResults"]}
        self.assertEqual(codes, {own: "success", shared: "skipped"})
        self.assertCode("InvalidSnapshot.NotFound", self.ec2.describe_snapshots,
                        SnapshotIds=[own])
        self.assertEqual(len(self.ec2.describe_snapshots(SnapshotIds=[shared])["Snapshots"]), 1)
        self.assertEqual(self.ids(ImageIds=[other]), [other])

    def test_malformed_missing_dry_run(self):
        self.assertCode("InvalidAMIID.Malformed", self.ec2.deregister_image, ImageId="ami-bad")
        self.assertCode("InvalidAMIID.NotFound", self.ec2.deregister_image,
                        ImageId="ami-00000000000000000")
        iid, _ = self.register()
        self.assertCode("DryRunOperation", self.ec2.deregister_image, ImageId=iid, DryRun=True)
        self.assertEqual(self.ids(ImageIds=[iid]), [iid])


class ImageTags(Base):
    def test_create_delete_tags_on_image(self):
        iid, _ = self.register()
        self.ec2.create_tags(Resources=[iid], Tags=[{"Key": "Team", "Value": "core"}])
        self.assertEqual(self.ec2.describe_images(ImageIds=[iid])["Images"][0]["Tags"],
                         [{"Key": "Team", "Value": "core"}])
        self.assertIn(iid, self.ids(Filters=[{"Name": "tag:Team", "Values": ["core"]}]))
        t = self.ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]
        self.assertEqual(t, [{"ResourceId": iid, "ResourceType": "image", "Key": "Team",
                              "Value": "core"}])
        self.assertEqual(self.bob.describe_tags(
            Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"], [])
        self.ec2.delete_tags(Resources=[iid], Tags=[{"Key": "Team"}])
        self.assertEqual(self.ec2.describe_images(ImageIds=[iid])["Images"][0]["Tags"], [])
        self.assertCode("InvalidAMIID.Malformed", self.ec2.create_tags, Resources=["ami-x"],
                        Tags=[{"Key": "a", "Value": "b"}])
        self.assertCode("InvalidAMIID.NotFound", self.ec2.create_tags,
                        Resources=["ami-00000000000000000"], Tags=[{"Key": "a", "Value": "b"}])


if __name__ == "__main__":
    unittest.main()
