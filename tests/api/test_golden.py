"""Whole responses against golden files (golden/*.xml), with ids, times,
accounts, names, the endpoint and request ids masked, as the snapshot one
in test_snapshots.py: DescribeImages of a registered image with block
device mappings and tags, DescribeImageAttribute launchPermission, an
error response (InvalidAMIID.NotFound), DescribeRegions, and the default
VPC (DescribeVpcs, DescribeSubnets, InvalidVpcID.NotFound).  The element
names are the wire reference's (sections 2.4, 3.2 and 3.3).

Set KILN_GOLDEN_WRITE=1 to write the files from the server's answers
instead (the test then fails, so that a rewrite is never a pass)."""
import os
import re
import unittest
import uuid

from test_snapshots import ENDPOINT, bob_keys, client, default_keys, import_snapshot, raw

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = "2016-11-15"


def mask(text, replacements):
    """Replace request ids and times, then each (value, mask) pair."""
    text = re.sub(r"<requestId>[^<]*</requestId>", "<requestId>REQUEST-ID</requestId>", text)
    text = re.sub(r"<RequestID>[^<]*</RequestID>", "<RequestID>REQUEST-ID</RequestID>", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", "TIME", text)
    for value, name in replacements:
        text = text.replace(value, name)
    return text


class Golden(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.keys = default_keys()
        cls.ec2 = client(cls.keys)
        sid = import_snapshot()
        cls.account = cls.ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["OwnerId"]

    def check(self, name, status, body, want_status, replacements):
        self.assertEqual(status, want_status, body)
        text = mask(body.decode(), replacements).strip()
        path = os.path.join(HERE, "golden", name)
        if os.environ.get("KILN_GOLDEN_WRITE"):
            with open(path, "w") as f:
                f.write(text + "\n")
            self.fail("wrote %s: check it against the wire reference" % path)
        with open(path) as f:
            self.assertEqual(text, f.read().strip())

    def test_describe_images(self):
        root = import_snapshot("golden root", size=2 * 1024 * 1024)
        data = import_snapshot("golden data")
        name = "golden-%s" % uuid.uuid4().hex[:12]
        r = self.ec2.register_image(
            Name=name, Description='golden <&> "image"', Architecture="arm64",
            RootDeviceName="/dev/xvda", VirtualizationType="hvm", EnaSupport=True,
            BootMode="uefi", ImdsSupport="v2.0",
            BlockDeviceMappings=[
                {"DeviceName": "/dev/xvda",
                 "Ebs": {"SnapshotId": root, "VolumeType": "gp3", "Iops": 3000,
                         "Throughput": 125}},
                {"DeviceName": "/dev/xvdb",
                 "Ebs": {"SnapshotId": data, "VolumeSize": 4, "DeleteOnTermination": False}},
                {"DeviceName": "/dev/xvdc", "VirtualName": "ephemeral0"},
                {"DeviceName": "/dev/xvdd", "NoDevice": ""},
            ],
            TagSpecifications=[{"ResourceType": "image",
                                "Tags": [{"Key": "Name", "Value": "x y&z=1"},
                                         {"Key": "empty", "Value": ""}]}])
        iid = r["ImageId"]
        status, body = raw({"Action": "DescribeImages", "Version": VERSION, "ImageId.1": iid})
        self.check("describe-images.xml", status, body, 200,
                   [(iid, "IMAGE-ID"), (root, "ROOT-SNAP-ID"), (data, "DATA-SNAP-ID"),
                    (name, "NAME"), (self.account, "ACCOUNT")])

    def test_describe_image_attribute_launch_permission(self):
        sid = import_snapshot()
        name = "golden-lp-%s" % uuid.uuid4().hex[:12]
        iid = self.ec2.register_image(
            Name=name, RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                  "Ebs": {"SnapshotId": sid}}])["ImageId"]
        bob = bob_keys()[2]
        self.ec2.modify_image_attribute(
            ImageId=iid, LaunchPermission={"Add": [{"UserId": bob}, {"Group": "all"}]})
        status, body = raw({"Action": "DescribeImageAttribute", "Version": VERSION,
                            "ImageId": iid, "Attribute": "launchPermission"})
        self.check("describe-image-attribute-launch-permission.xml", status, body, 200,
                   [(iid, "IMAGE-ID"), (bob, "BOB-ACCOUNT")])

    def test_error_not_found(self):
        status, body = raw({"Action": "DescribeImages", "Version": VERSION,
                            "ImageId.1": "ami-0000000000000dead", "ImageId.2": "ami-00000000000000bad"})
        self.check("error-invalid-ami-id-not-found.xml", status, body, 400, [])

    def test_describe_regions(self):
        status, body = raw({"Action": "DescribeRegions", "Version": VERSION})
        self.check("describe-regions.xml", status, body, 200, [(ENDPOINT, "ENDPOINT")])

    def vpc_masks(self):
        """The default VPC's ids (test_vpcs.py) and the account, masked."""
        vpc = self.ec2.describe_vpcs()["Vpcs"][0]
        assoc = vpc["CidrBlockAssociationSet"][0]["AssociationId"]
        self.assertRegex(assoc, r"^vpc-cidr-assoc-[0-9a-f]{17}$")
        subnet = self.ec2.describe_subnets()["Subnets"][0]["SubnetId"]
        return [(assoc, "ASSOCIATION-ID"), (vpc["VpcId"], "VPC-ID"), (subnet, "SUBNET-ID"),
                (self.account, "ACCOUNT")]

    def test_describe_vpcs(self):
        status, body = raw({"Action": "DescribeVpcs", "Version": VERSION})
        self.check("describe-vpcs.xml", status, body, 200, self.vpc_masks())

    def test_describe_subnets(self):
        status, body = raw({"Action": "DescribeSubnets", "Version": VERSION})
        self.check("describe-subnets.xml", status, body, 200, self.vpc_masks())

    def test_error_vpc_not_found(self):
        status, body = raw({"Action": "DescribeVpcs", "Version": VERSION,
                            "VpcId.1": "vpc-0000000000000dead"})
        self.check("error-invalid-vpc-id-not-found.xml", status, body, 400, self.vpc_masks())

if __name__ == "__main__":
    unittest.main()
