"""The default VPC and its subnet (docs/api.md, "The default VPC") against a
real `kiln serve` (started by run.sh): DescribeVpcs and DescribeSubnets
through boto3 and the aws CLI (ids, CIDR, zone, filters, paging
parameters, NotFound and Malformed), the VPC in DescribeAccountAttributes,
DescribeSecurityGroups and DescribeInstances, CreateSecurityGroup's VpcId,
and RunInstances' SubnetId and NetworkInterface.N as Packer's amazon-ebs
sends them (associate_public_ip_address), with their refusals launching
nothing.  Instances here launch from random bytes and fail their boot at
once, as in test_instances."""
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

from botocore.exceptions import ClientError

from kilnapi import DATA, ENDPOINT, KILN, client, default_keys

CIDR = "127.100.0.0/16"
_tmp = tempfile.TemporaryDirectory(prefix="kiln-vpc-test.")
_other = None


def other_keys():
    global _other
    if _other is None:
        out = subprocess.run([KILN, "--data-dir", DATA, "account", "create", "vpcs-other",
                              "--json"], check=True, capture_output=True, text=True).stdout
        j = json.loads(out)
        _other = (j["AccessKeyId"], j["SecretAccessKey"])
    return _other


def unbootable_image():
    path = os.path.join(_tmp.name, "noise.raw")
    with open(path, "wb") as f:
        f.write(os.urandom(1 << 20))
    out = subprocess.run([KILN, "--data-dir", DATA, "image", "import", path,
                          "--name", "vpcs-noise-%d" % os.getpid()],
                         check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


class Base(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ec2 = client(default_keys())

    def assertCode(self, code, fn, **kw):
        with self.assertRaises(ClientError) as cm:
            fn(**kw)
        self.assertEqual(cm.exception.response["Error"]["Code"], code,
                         cm.exception.response["Error"].get("Message"))
        return cm.exception.response["Error"]["Message"]

    def vpc(self, ec2=None):
        vpcs = (ec2 or self.ec2).describe_vpcs()["Vpcs"]
        self.assertEqual(len(vpcs), 1, vpcs)
        return vpcs[0]

    def subnet(self, ec2=None):
        subnets = (ec2 or self.ec2).describe_subnets()["Subnets"]
        self.assertEqual(len(subnets), 1, subnets)
        return subnets[0]


class Vpcs(Base):
    def test_default_vpc(self):
        ec2 = self.ec2
        v = self.vpc()
        self.assertRegex(v["VpcId"], r"^vpc-[0-9a-f]{17}$")
        self.assertTrue(v["IsDefault"])
        self.assertEqual(v["State"], "available")
        self.assertEqual(v["CidrBlock"], CIDR)
        self.assertEqual([(a["CidrBlock"], a["CidrBlockState"]["State"])
                          for a in v["CidrBlockAssociationSet"]], [(CIDR, "associated")])
        self.assertEqual(v["InstanceTenancy"], "default")
        # stable, per account and per region
        self.assertEqual(self.vpc()["VpcId"], v["VpcId"])
        west = client(default_keys(), region="us-west-2")
        self.assertNotEqual(self.vpc(west)["VpcId"], v["VpcId"])
        other = client(other_keys())
        ov = self.vpc(other)
        self.assertNotEqual(ov["VpcId"], v["VpcId"])
        self.assertNotEqual(ov["OwnerId"], v["OwnerId"])
        # DescribeAccountAttributes names it
        attrs = {a["AttributeName"]: [x["AttributeValue"] for x in a["AttributeValues"]]
                 for a in ec2.describe_account_attributes()["AccountAttributes"]}
        self.assertEqual(attrs["default-vpc"], [v["VpcId"]])
        self.assertEqual(attrs["supported-platforms"], ["VPC"])

    def test_vpc_filters_and_ids(self):
        ec2 = self.ec2
        vid = self.vpc()["VpcId"]

        def ids(**kw):
            return [v["VpcId"] for v in ec2.describe_vpcs(**kw)["Vpcs"]]

        self.assertEqual(ids(VpcIds=[vid]), [vid])
        for name, value, hit in [("is-default", "true", True), ("is-default", "false", False),
                                 ("isDefault", "true", True), ("vpc-id", vid, True),
                                 ("vpc-id", "vpc-0123456789abcdef0", False),
                                 ("cidr", CIDR, True), ("cidr", "10.0.0.0/16", False),
                                 ("state", "available", True), ("state", "pending", False),
                                 ("owner-id", self.vpc()["OwnerId"], True),
                                 ("owner-id", "999999999999", False),
                                 ("cidr-block-association.cidr-block", "127.100.*", True),
                                 ("dhcp-options-id", "default", True),
                                 ("tag:Name", "*", False), ("tag-key", "Name", False)]:
            self.assertEqual(ids(Filters=[{"Name": name, "Values": [value]}]),
                             [vid] if hit else [], (name, value))
        self.assertCode("InvalidParameterValue", ec2.describe_vpcs,
                        Filters=[{"Name": "color", "Values": ["blue"]}])
        msg = self.assertCode("InvalidVpcID.NotFound", ec2.describe_vpcs,
                              VpcIds=["vpc-0123456789abcdef0"])
        self.assertIn("vpc-0123456789abcdef0", msg)
        self.assertCode("InvalidVpcID.Malformed", ec2.describe_vpcs, VpcIds=["vpc-12"])
        # another account's default VPC is not yours
        self.assertCode("InvalidVpcID.NotFound", client(other_keys()).describe_vpcs,
                        VpcIds=[vid])
        self.assertEqual(ids(MaxResults=5), [vid])
        self.assertCode("InvalidParameterCombination", ec2.describe_vpcs, VpcIds=[vid],
                        MaxResults=5)
        self.assertCode("InvalidPaginationToken", ec2.describe_vpcs, NextToken="zz")

    def test_cli(self):
        env = dict(os.environ, AWS_SHARED_CREDENTIALS_FILE=os.path.join(DATA, "credentials"),
                   AWS_CONFIG_FILE="/dev/null", AWS_PAGER="", AWS_MAX_ATTEMPTS="1")
        base = [sys.executable, "-m", "awscli", "--endpoint-url", ENDPOINT, "--region",
                "us-east-1", "--output", "json", "ec2"]
        p = subprocess.run(base + ["describe-vpcs", "--filters", "Name=isDefault,Values=true"],
                           env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([v["VpcId"] for v in json.loads(p.stdout)["Vpcs"]],
                         [self.vpc()["VpcId"]])
        p = subprocess.run(base + ["describe-subnets", "--subnet-ids", "subnet-0123456789abcdef0"],
                           env=env, capture_output=True, text=True, timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("InvalidSubnetID.NotFound", p.stderr)


class Subnets(Base):
    def test_default_subnet(self):
        ec2 = self.ec2
        v, s = self.vpc(), self.subnet()
        zone = ec2.describe_availability_zones()["AvailabilityZones"][0]
        self.assertRegex(s["SubnetId"], r"^subnet-[0-9a-f]{17}$")
        self.assertEqual(s["VpcId"], v["VpcId"])
        self.assertEqual(s["CidrBlock"], CIDR)
        self.assertEqual(s["State"], "available")
        self.assertEqual(s["AvailabilityZone"], zone["ZoneName"])
        self.assertEqual(s["AvailabilityZoneId"], zone["ZoneId"])
        self.assertTrue(s["DefaultForAz"])
        self.assertTrue(s["MapPublicIpOnLaunch"])
        self.assertEqual(s["AvailableIpAddressCount"], 65531)
        self.assertEqual(s["OwnerId"], v["OwnerId"])
        self.assertEqual(s["SubnetArn"], "arn:aws:ec2:us-east-1:%s:subnet/%s" %
                         (v["OwnerId"], s["SubnetId"]))
        west = client(default_keys(), region="us-west-2")
        self.assertEqual(self.subnet(west)["AvailabilityZone"], "us-west-2a")
        self.assertNotEqual(self.subnet(west)["SubnetId"], s["SubnetId"])

    def test_subnet_filters_and_ids(self):
        ec2 = self.ec2
        s = self.subnet()
        sid = s["SubnetId"]

        def ids(**kw):
            return [x["SubnetId"] for x in ec2.describe_subnets(**kw)["Subnets"]]

        self.assertEqual(ids(SubnetIds=[sid]), [sid])
        # what Packer's subnet_filter and vpc_id send
        for name, value, hit in [("vpc-id", s["VpcId"], True),
                                 ("vpc-id", "vpc-0123456789abcdef0", False),
                                 ("default-for-az", "true", True), ("defaultForAz", "false", False),
                                 ("availability-zone", "us-east-1a", True),
                                 ("availability-zone", "us-east-1b", False),
                                 ("availability-zone-id", "us-east-1-az1", True),
                                 ("cidr-block", CIDR, True), ("cidrBlock", "10.*", False),
                                 ("state", "available", True),
                                 ("map-public-ip-on-launch", "true", True),
                                 ("subnet-id", sid, True), ("subnet-arn", "*" + sid, True),
                                 ("available-ip-address-count", "65531", True),
                                 ("tag:Name", "*", False)]:
            self.assertEqual(ids(Filters=[{"Name": name, "Values": [value]}]),
                             [sid] if hit else [], (name, value))
        self.assertCode("InvalidParameterValue", ec2.describe_subnets,
                        Filters=[{"Name": "colour", "Values": ["x"]}])
        self.assertCode("InvalidSubnetID.NotFound", ec2.describe_subnets,
                        SubnetIds=["subnet-0123456789abcdef0"])
        self.assertCode("InvalidSubnetID.Malformed", ec2.describe_subnets,
                        SubnetIds=["subnet-xyz"])
        self.assertCode("InvalidSubnetID.NotFound", client(other_keys()).describe_subnets,
                        SubnetIds=[sid])


class Groups(Base):
    def test_security_group_vpc(self):
        ec2 = self.ec2
        vid = self.vpc()["VpcId"]
        g1 = ec2.create_security_group(GroupName="vpc-named", Description="in the default VPC",
                                       VpcId=vid)["GroupId"]
        g2 = ec2.create_security_group(GroupName="vpc-implicit", Description="no VpcId")["GroupId"]
        # an empty VpcId is none: what Packer 1.6.6 sends without vpc_id
        g3 = ec2.create_security_group(GroupName="vpc-empty", Description="VpcId=",
                                       VpcId="")["GroupId"]
        gs = ec2.describe_security_groups(GroupIds=[g1, g2, g3])["SecurityGroups"]
        self.assertEqual({g["GroupId"]: g["VpcId"] for g in gs}, {g1: vid, g2: vid, g3: vid})
        ec2.delete_security_group(GroupId=g3)
        byvpc = ec2.describe_security_groups(
            Filters=[{"Name": "vpc-id", "Values": [vid]}])["SecurityGroups"]
        self.assertLessEqual({g1, g2}, {g["GroupId"] for g in byvpc})
        self.assertEqual(ec2.describe_security_groups(
            Filters=[{"Name": "vpc-id", "Values": ["vpc-0123456789abcdef0"]}])["SecurityGroups"],
            [])
        before = len(ec2.describe_security_groups()["SecurityGroups"])
        self.assertCode("InvalidVpcID.NotFound", ec2.create_security_group, GroupName="elsewhere",
                        Description="x", VpcId="vpc-0123456789abcdef0")
        self.assertCode("InvalidVpcID.Malformed", ec2.create_security_group, GroupName="elsewhere",
                        Description="x", VpcId="vpc-zz")
        # another account's default VPC
        self.assertCode("InvalidVpcID.NotFound", client(other_keys()).create_security_group,
                        GroupName="theirs", Description="x", VpcId=vid)
        self.assertEqual(len(ec2.describe_security_groups()["SecurityGroups"]), before)
        ec2.delete_security_group(GroupId=g1)
        ec2.delete_security_group(GroupId=g2)


class Launch(Base):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.image = unbootable_image()

    def instances(self):
        return {i["InstanceId"]: i for r in self.ec2.describe_instances()["Reservations"]
                for i in r["Instances"]}

    def wait_state(self, ids, state):
        deadline = time.monotonic() + 60
        while True:
            rs = self.ec2.describe_instances(InstanceIds=ids)["Reservations"]
            states = {i["InstanceId"]: i["State"]["Name"] for r in rs for i in r["Instances"]}
            if all(states[i] == state for i in ids):
                return
            self.assertLess(time.monotonic(), deadline, "never %s: %s" % (state, states))
            time.sleep(0.2)

    def test_subnet_and_network_interface(self):
        ec2 = self.ec2
        v, s = self.vpc(), self.subnet()
        gid = ec2.create_security_group(GroupName="vpc-launch", Description="packer-like",
                                        VpcId=v["VpcId"])["GroupId"]
        # SubnetId, as Packer sends subnet_id
        r = ec2.run_instances(ImageId=self.image, MinCount=1, MaxCount=1, InstanceType="t3.nano",
                              SubnetId=s["SubnetId"], SecurityGroupIds=[gid])
        i1 = r["Instances"][0]
        self.assertEqual((i1["VpcId"], i1["SubnetId"]), (v["VpcId"], s["SubnetId"]))
        # an empty SubnetId is none: what Packer 1.6.6 sends without subnet_id
        r = ec2.run_instances(ImageId=self.image, MinCount=1, MaxCount=1, InstanceType="t3.nano",
                              SubnetId="", SecurityGroupIds=[gid])
        i0 = r["Instances"][0]
        self.assertEqual((i0["VpcId"], i0["SubnetId"]), (v["VpcId"], s["SubnetId"]))
        # NetworkInterfaces, as Packer sends associate_public_ip_address
        r = ec2.run_instances(ImageId=self.image, MinCount=1, MaxCount=1, InstanceType="t3.nano",
                              NetworkInterfaces=[{
                                  "DeviceIndex": 0, "AssociatePublicIpAddress": True,
                                  "DeleteOnTermination": True, "SubnetId": s["SubnetId"],
                                  "Groups": [gid]}])
        i2 = r["Instances"][0]
        self.assertEqual([g["GroupId"] for g in i2["SecurityGroups"]], [gid])
        ids = [i0["InstanceId"], i1["InstanceId"], i2["InstanceId"]]
        self.wait_state(ids, "stopped")
        # DescribeInstances: the VPC and subnet, and their filters
        insts = self.instances()
        for iid in ids:
            self.assertEqual((insts[iid]["VpcId"], insts[iid]["SubnetId"]),
                             (v["VpcId"], s["SubnetId"]))
        for name, value in [("vpc-id", v["VpcId"]), ("subnet-id", s["SubnetId"])]:
            got = [i["InstanceId"] for rr in ec2.describe_instances(
                Filters=[{"Name": name, "Values": [value]}])["Reservations"]
                for i in rr["Instances"]]
            self.assertLessEqual(set(ids), set(got))
            self.assertEqual(ec2.describe_instances(
                InstanceIds=ids, Filters=[{"Name": name, "Values": ["nope"]}])["Reservations"], [])
        # terminated instances leave the VPC, as on EC2
        ec2.terminate_instances(InstanceIds=ids)
        self.wait_state(ids, "terminated")
        insts = self.instances()
        for iid in ids:
            self.assertNotIn("VpcId", insts[iid])
            self.assertNotIn("SubnetId", insts[iid])
        ec2.delete_security_group(GroupId=gid)

    def test_refusals_launch_nothing(self):
        ec2 = self.ec2
        s = self.subnet()
        gid = ec2.create_security_group(GroupName="vpc-refusals", Description="x")["GroupId"]
        before = set(self.instances())
        run = ec2.run_instances
        kw = dict(ImageId=self.image, MinCount=1, MaxCount=1, InstanceType="t3.nano")
        nic = {"DeviceIndex": 0, "SubnetId": s["SubnetId"], "Groups": [gid]}
        self.assertCode("InvalidSubnetID.NotFound", run, SubnetId="subnet-0123456789abcdef0", **kw)
        self.assertCode("InvalidSubnetID.Malformed", run, SubnetId="subnet-1", **kw)
        self.assertCode("InvalidSubnetID.NotFound", client(other_keys()).run_instances,
                        SubnetId=s["SubnetId"], **kw)
        self.assertCode("InvalidSubnetID.NotFound", run, NetworkInterfaces=[
            dict(nic, SubnetId="subnet-0123456789abcdef0")], **kw)
        self.assertCode("InvalidParameterCombination", run, NetworkInterfaces=[nic],
                        SubnetId=s["SubnetId"], **kw)
        self.assertCode("InvalidParameterCombination", run, NetworkInterfaces=[nic],
                        SecurityGroupIds=[gid], **kw)
        msg = self.assertCode("InvalidParameterValue", run,
                              NetworkInterfaces=[nic, dict(nic, DeviceIndex=1)], **kw)
        self.assertIn("one network interface", msg)
        self.assertCode("InvalidParameterValue", run, NetworkInterfaces=[dict(nic, DeviceIndex=1)],
                        **kw)
        self.assertCode("InvalidParameterValue", run, NetworkInterfaces=[
            {"DeviceIndex": 0, "NetworkInterfaceId": "eni-0123456789abcdef0"}], **kw)
        self.assertCode("InvalidGroup.NotFound", run, NetworkInterfaces=[
            dict(nic, Groups=["sg-0123456789abcdef0"])], **kw)
        self.assertEqual(set(self.instances()), before)
        ec2.delete_security_group(GroupId=gid)


if __name__ == "__main__":
    unittest.main()
