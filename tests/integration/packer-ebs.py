"""What real Packer left behind in kiln, read back through boto3 (run by
packer-ebs.sh after `packer build` exited 0).

Arguments: ENDPOINT ACCESS_KEY SECRET_KEY ACCOUNT BASE_AMI AMI AMI_NAME
PACKER_OUTPUT AMI_WEST FRIEND FRIEND_KEY FRIEND_SECRET.

Checks that Packer's vpc_filter and subnet_filter found the default VPC
and subnet and that it connected to the instance's address without
ssh_interface (by the VPC the instance is in); the AMI Packer printed (the
caller's, available, named, tagged, its root snapshot tagged), its copy in
us-west-2 (AMI_WEST) likewise, both shared with the account FRIEND (launch
and volume permissions: FRIEND may launch them and restore their
snapshots); the builder instance (launched from the base image with the
run tags, terminated, its root volume deleted); no key pair and no
security group left.  Prints the AMI's root snapshot id on stdout for the
caller's look inside it."""
import re
import sys

import boto3
from botocore.config import Config

(endpoint, akid, secret, account, base_ami, ami, ami_name, packer_out, ami_west, friend,
 friend_key, friend_secret) = sys.argv[1:13]


def client(region, key=akid, secret_key=secret):
    return boto3.client("ec2", region_name=region, endpoint_url=endpoint,
                        aws_access_key_id=key, aws_secret_access_key=secret_key,
                        config=Config(retries={"max_attempts": 2, "mode": "standard"}))


ec2 = client("us-east-1")


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
check(img["OwnerId"] == account,
      "image owner %r, credential's account %r" % (img["OwnerId"], account))
check(img.get("Description") == "built by Packer against kiln",
      "description %r" % img.get("Description"))
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

# ---- the copy in us-west-2, and the sharing in both regions ----
west = client("us-west-2")
images = west.describe_images(ImageIds=[ami_west])["Images"]
check(len(images) == 1, "DescribeImages %s in us-west-2: %r" % (ami_west, images))
wimg = images[0]
check(wimg["State"] == "available", "copy state %r" % wimg["State"])
check(wimg["Name"] == ami_name and wimg["OwnerId"] == account, "copy %r" % wimg)
check(tags(wimg) == tags(img), "copy tags %r, image tags %r" % (tags(wimg), tags(img)))
wsnap_id = [m for m in wimg["BlockDeviceMappings"] if "Ebs" in m][0]["Ebs"]["SnapshotId"]
check(wsnap_id != snap_id, "the copy maps the source snapshot %s" % snap_id)
for c, region, image_id, snapshot_id in [(ec2, "us-east-1", ami, snap_id),
                                         (west, "us-west-2", ami_west, wsnap_id)]:
    lp = c.describe_image_attribute(ImageId=image_id,
                                    Attribute="launchPermission")["LaunchPermissions"]
    check(lp == [{"UserId": friend}], "%s launch permissions %r" % (region, lp))
    cvp = c.describe_snapshot_attribute(
        SnapshotId=snapshot_id, Attribute="createVolumePermission")["CreateVolumePermissions"]
    check(cvp == [{"UserId": friend}], "%s volume permissions %r" % (region, cvp))
    theirs = client(region, friend_key, friend_secret)
    # (public images and snapshots, the base image's, are listed too)
    seen = [i["ImageId"] for i in theirs.describe_images(ExecutableUsers=["self"])["Images"]]
    check(image_id in seen, "%s: the other account may launch %r" % (region, seen))
    seen = [s["SnapshotId"] for s in
            theirs.describe_snapshots(RestorableByUserIds=["self"])["Snapshots"]]
    check(snapshot_id in seen, "%s: the other account may restore %r" % (region, seen))

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
