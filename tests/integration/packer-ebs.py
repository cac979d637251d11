"""What real Packer left behind in kiln, read back through boto3 (run by
packer-ebs.sh after `packer build` exited 0).

Arguments: ENDPOINT ACCESS_KEY SECRET_KEY ACCOUNT BASE_AMI AMI AMI_NAME
PACKER_OUTPUT.  Checks that Packer's vpc_filter and subnet_filter found
the default VPC and subnet and that it connected to the instance's
address without ssh_interface (by the VPC the instance is in), the AMI
Packer printed (the caller's, available, named, tagged, its
root snapshot tagged), the builder instance (launched from the base image
with the run tags, terminated, its root volume deleted), and that no key
pair and no security group is left.  Prints the AMI's root snapshot id on
stdout for the caller's look inside it."""
import re
import sys

import boto3
from botocore.config import Config

endpoint, akid, secret, account, base_ami, ami, ami_name, packer_out = sys.argv[1:9]
ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=endpoint,
                   aws_access_key_id=akid, aws_secret_access_key=secret,
                   config=Config(retries={"max_attempts": 2, "mode": "standard"}))


def fail(msg):
    sys.stderr.write("FAIL: %s\n" % msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def tags(d):
    return {t["Key"]: t["Value"] for t in d.get("Tags", [])}


# ---- the network Packer found and used ----
with open(packer_out) as f:
    said = f.read()
vpc = ec2.describe_vpcs()["Vpcs"]
subnet = ec2.describe_subnets()["Subnets"]
check(len(vpc) == 1 and len(subnet) == 1, "vpcs %r, subnets %r" % (vpc, subnet))
check("Found VPC ID: %s" % vpc[0]["VpcId"] in said, "packer did not find the default VPC")
check("Found Subnet ID: %s" % subnet[0]["SubnetId"] in said,
      "packer did not find the default subnet")
check(re.search(r"Using ssh communicator to connect: 127\.100\.\d+\.\d+", said),
      "packer did not connect to the instance's address")

# ---- the AMI ----
images = ec2.describe_images(ImageIds=[ami])["Images"]
check(len(images) == 1, "DescribeImages %s: %r" % (ami, images))
img = images[0]
check(img["State"] == "available", "image state %r" % img["State"])
check(img["Name"] == ami_name, "image name %r, template said %r" % (img["Name"], ami_name))
check(img["OwnerId"] == account, "image owner %r, credential's account %r" % (img["OwnerId"], account))
check(img.get("Description") == "built by Packer against kiln", "description %r" % img.get("Description"))
base = ec2.describe_images(ImageIds=[base_ami])["Images"][0]
check(tags(img) == {"built-by": "packer", "base": base["Name"]}, "image tags %r" % tags(img))
mine = ec2.describe_images(Owners=["self"])["Images"]
check([i["ImageId"] for i in mine] == [ami], "the account's images: %r" % mine)
bdm = [m for m in img["BlockDeviceMappings"] if "Ebs" in m]
check(len(bdm) == 1 and bdm[0]["DeviceName"] == img["RootDeviceName"], "mappings %r" % bdm)
snap_id = bdm[0]["Ebs"]["SnapshotId"]
snap = ec2.describe_snapshots(SnapshotIds=[snap_id])["Snapshots"][0]
check(snap["State"] == "completed", "snapshot state %r" % snap["State"])
check(snap["OwnerId"] == account, "snapshot owner %r" % snap["OwnerId"])
# Packer tags the snapshot with the AMI's tags, then with snapshot_tags
check(tags(snap) == dict(tags(img), kind="root"), "snapshot tags %r" % tags(snap))

# ---- the builder instance: terminated, nothing of it left ----
insts = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
check(len(insts) == 1, "instances: %r" % insts)
inst = insts[0]
check(inst["ImageId"] == base_ami, "builder launched from %r, not %r" % (inst["ImageId"], base_ami))
check(inst["State"]["Name"] == "terminated", "builder instance %s is %r" %
      (inst["InstanceId"], inst["State"]["Name"]))
check(tags(inst) == {"Name": "Packer Builder", "role": "packer-builder"},
      "builder tags %r" % tags(inst))
vols = ec2.describe_volumes()["Volumes"]
check(vols == [], "volumes left: %r" % vols)
kps = ec2.describe_key_pairs()["KeyPairs"]
check(kps == [], "key pairs left: %r" % kps)
sgs = ec2.describe_security_groups()["SecurityGroups"]
check([g for g in sgs if g["GroupName"] != "default"] == [], "security groups left: %r" % sgs)
print(snap_id)
