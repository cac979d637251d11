"""Instances through the EC2 API against a real `kiln serve` (started by
run.sh), without guests: the image here is random bytes, so every instance
fails its boot at once (no file system, no kernel) and is recorded `stopped`
with Server.InternalError; QEMU never runs.  Booting real guests is the
`vm` suite's instances-tiny test.  Checked: RunInstances' answer and its
root volumes, reservations in DescribeInstances, filters, MaxResults and
NextToken, DescribeInstanceStatus, DescribeInstanceAttribute,
GetConsoleOutput of an instance that never printed anything, Stop, Start
and Terminate state changes (currentState, previousState), the refusals
(IncorrectInstanceState, NotFound, Malformed, DryRun) and another account's
instances not existing for you."""
import configparser
import json
import os
import subprocess
import tempfile
import time
import unittest

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["KILN_TEST_ENDPOINT"]
KILN = os.environ["KILN"]
DATA = os.environ["KILN_TEST_DATA_DIR"]
CREDENTIALS = os.path.join(DATA, "credentials")

_tmp = tempfile.TemporaryDirectory(prefix="kiln-inst-test.")


def default_keys():
    cp = configparser.ConfigParser()
    cp.read(CREDENTIALS)
    return cp["default"]["aws_access_key_id"], cp["default"]["aws_secret_access_key"]


def client(keys):
    return boto3.client(
        "ec2", region_name="us-east-1", endpoint_url=ENDPOINT,
        aws_access_key_id=keys[0], aws_secret_access_key=keys[1],
        config=Config(retries={"max_attempts": 1, "mode": "standard"}))


def unbootable_image():
    """An image (of the default account) whose disk is random bytes."""
    path = os.path.join(_tmp.name, "noise.raw")
    with open(path, "wb") as f:
        f.write(os.urandom(2 << 20))
    out = subprocess.run([KILN, "--data-dir", DATA, "image", "import", path,
                          "--name", "instances-noise-%d" % os.getpid()],
                         check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


def other_keys():
    out = subprocess.run([KILN, "--data-dir", DATA, "account", "create", "instances-other",
                          "--json"], check=True, capture_output=True, text=True).stdout
    j = json.loads(out)
    return j["AccessKeyId"], j["SecretAccessKey"]


class Instances(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ec2 = client(default_keys())
        cls.image = unbootable_image()

    def assertCode(self, code, fn, **kw):
        with self.assertRaises(ClientError) as cm:
            fn(**kw)
        self.assertEqual(cm.exception.response["Error"]["Code"], code,
                         cm.exception.response["Error"].get("Message"))

    def wait_state(self, ids, state):
        deadline = time.monotonic() + 60
        while True:
            rs = self.ec2.describe_instances(InstanceIds=ids)["Reservations"]
            states = {i["InstanceId"]: i["State"]["Name"] for r in rs for i in r["Instances"]}
            if all(states[i] == state for i in ids):
                return
            self.assertLess(time.monotonic(), deadline, "never %s: %s" % (state, states))
            time.sleep(0.2)

    def launch(self, n, **kw):
        r = self.ec2.run_instances(ImageId=self.image, MinCount=n, MaxCount=n,
                                   InstanceType="t3.nano", **kw)
        ids = [i["InstanceId"] for i in r["Instances"]]
        self.wait_state(ids, "stopped")
        return r, ids

    def test_launch_describe_pages(self):
        ec2 = self.ec2
        r1, ids1 = self.launch(3, TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "batch", "Value": "one"}]}])
        self.assertEqual(len(r1["Instances"]), 3)
        self.assertEqual(sorted(i["AmiLaunchIndex"] for i in r1["Instances"]), [0, 1, 2])
        for i in r1["Instances"]:
            self.assertEqual(i["State"], {"Code": 0, "Name": "pending"})
            self.assertEqual(i["Placement"]["AvailabilityZone"], "us-east-1a")
            vol = i["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
            v = ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]
            self.assertEqual(v["Attachments"][0]["InstanceId"], i["InstanceId"])
        r2, ids2 = self.launch(3)
        # the boot failure is recorded
        inst = ec2.describe_instances(InstanceIds=[ids1[0]])["Reservations"][0]["Instances"][0]
        self.assertEqual(inst["StateReason"]["Code"], "Server.InternalError")
        self.assertIn("could not boot", inst["StateReason"]["Message"])
        # reservations group their instances
        rs = ec2.describe_instances(InstanceIds=ids1 + ids2)["Reservations"]
        self.assertEqual(sorted(len(r["Instances"]) for r in rs), [3, 3])
        self.assertEqual({r["ReservationId"] for r in rs},
                         {r1["ReservationId"], r2["ReservationId"]})
        # filters
        f = ec2.describe_instances(Filters=[{"Name": "tag:batch", "Values": ["one"]}])
        self.assertEqual(sorted(i["InstanceId"] for r in f["Reservations"] for i in r["Instances"]),
                         sorted(ids1))
        f = ec2.describe_instances(Filters=[{"Name": "reservation-id",
                                             "Values": [r2["ReservationId"]]}])
        self.assertEqual(sorted(i["InstanceId"] for r in f["Reservations"] for i in r["Instances"]),
                         sorted(ids2))
        f = ec2.describe_instances(Filters=[{"Name": "instance-state-code", "Values": ["16"]},
                                            {"Name": "image-id", "Values": [self.image]}])
        self.assertEqual(f["Reservations"], [])
        self.assertCode("InvalidParameterValue", ec2.describe_instances,
                        Filters=[{"Name": "no-such-filter", "Values": ["x"]}])
        # pages of 5: every instance once, in order
        seen, token = [], None
        while True:
            kw = {"MaxResults": 5, "Filters": [{"Name": "image-id", "Values": [self.image]}]}
            if token:
                kw["NextToken"] = token
            page = ec2.describe_instances(**kw)
            n = sum(len(r["Instances"]) for r in page["Reservations"])
            self.assertLessEqual(n, 5)
            seen += [i["InstanceId"] for r in page["Reservations"] for i in r["Instances"]]
            token = page.get("NextToken")
            if not token:
                break
        self.assertEqual(len(seen), len(set(seen)))
        self.assertTrue(set(ids1 + ids2) <= set(seen))
        # paginator
        pg = ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "image-id", "Values": [self.image]}],
            PaginationConfig={"PageSize": 5})
        self.assertEqual(sorted(i["InstanceId"] for p in pg for r in p["Reservations"]
                                for i in r["Instances"]), sorted(seen))
        ec2.terminate_instances(InstanceIds=ids1 + ids2)
        self.wait_state(ids1 + ids2, "terminated")

    def test_state_changes(self):
        ec2 = self.ec2
        _, ids = self.launch(1, BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"DeleteOnTermination": False, "VolumeSize": 2}}])
        iid = ids[0]
        inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        vol = inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
        self.assertFalse(inst["BlockDeviceMappings"][0]["Ebs"]["DeleteOnTermination"])
        self.assertEqual(ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["Size"], 2)
        ch = ec2.stop_instances(InstanceIds=[iid])["StoppingInstances"][0]
        self.assertEqual(ch["PreviousState"]["Name"], "stopped")
        self.assertEqual(ch["CurrentState"]["Name"], "stopped")
        self.assertCode("DryRunOperation", ec2.start_instances, InstanceIds=[iid], DryRun=True)
        self.assertCode("IncorrectInstanceState", ec2.reboot_instances, InstanceIds=[iid])
        ch = ec2.start_instances(InstanceIds=[iid])["StartingInstances"][0]
        self.assertEqual(ch["PreviousState"]["Name"], "stopped")
        self.wait_state([iid], "stopped")
        st = ec2.describe_instance_status(InstanceIds=[iid])["InstanceStatuses"]
        self.assertEqual(st, [])
        st = ec2.describe_instance_status(InstanceIds=[iid],
                                          IncludeAllInstances=True)["InstanceStatuses"]
        self.assertEqual(st[0]["InstanceState"]["Name"], "stopped")
        a = ec2.describe_instance_attribute(InstanceId=iid, Attribute="rootDeviceName")
        self.assertEqual(a["RootDeviceName"]["Value"], "/dev/xvda")
        a = ec2.describe_instance_attribute(InstanceId=iid,
                                            Attribute="instanceInitiatedShutdownBehavior")
        self.assertEqual(a["InstanceInitiatedShutdownBehavior"]["Value"], "stop")
        a = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        self.assertNotIn("Value", a.get("UserData", {}))
        self.assertCode("InvalidParameterValue", ec2.describe_instance_attribute,
                        InstanceId=iid, Attribute="noSuchThing")
        self.assertEqual(ec2.get_console_output(InstanceId=iid).get("Output", ""), "")
        ch = ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"][0]
        self.assertEqual(ch["PreviousState"]["Name"], "stopped")
        self.wait_state([iid], "terminated")
        v = ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]
        self.assertEqual(v["State"], "available")
        ec2.delete_volume(VolumeId=vol)
        self.assertCode("IncorrectInstanceState", ec2.start_instances, InstanceIds=[iid])
        self.assertCode("IncorrectInstanceState", ec2.stop_instances, InstanceIds=[iid])
        ch = ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"][0]
        self.assertEqual(ch["CurrentState"]["Name"], "terminated")

    def test_refusals_and_accounts(self):
        ec2 = self.ec2
        before = len(ec2.describe_instances()["Reservations"])
        self.assertCode("MissingParameter", ec2.run_instances, MinCount=1, MaxCount=1)
        # boto3 base64-encodes UserData itself: 16385 bytes decode past the limit
        self.assertCode("InvalidParameterValue", ec2.run_instances, ImageId=self.image,
                        MinCount=1, MaxCount=1, UserData="u" * 16385)
        self.assertCode("InvalidBlockDeviceMapping", ec2.run_instances, ImageId=self.image,
                        MinCount=1, MaxCount=1, BlockDeviceMappings=[
                            {"DeviceName": "/dev/xvda", "Ebs": {"Encrypted": True}}])
        self.assertCode("InvalidParameterValue", ec2.run_instances, ImageId=self.image,
                        MinCount=1, MaxCount=1, TagSpecifications=[
                            {"ResourceType": "image", "Tags": [{"Key": "k", "Value": "v"}]}])
        self.assertEqual(len(ec2.describe_instances()["Reservations"]), before)
        self.assertCode("InvalidInstanceID.Malformed", ec2.stop_instances, InstanceIds=["i-1"])
        self.assertCode("InvalidInstanceID.NotFound", ec2.terminate_instances,
                        InstanceIds=["i-0123456789abcdef0"])
        self.assertCode("InvalidInstanceID.NotFound", ec2.get_console_output,
                        InstanceId="i-0123456789abcdef0")
        _, ids = self.launch(1)
        other = client(other_keys())
        self.assertCode("InvalidInstanceID.NotFound", other.describe_instances, InstanceIds=ids)
        self.assertCode("InvalidInstanceID.NotFound", other.terminate_instances, InstanceIds=ids)
        self.assertNotIn(ids[0], [i["InstanceId"] for r in other.describe_instances()["Reservations"]
                                  for i in r["Instances"]])
        # the other account cannot launch this account's private image
        self.assertCode("InvalidAMIID.NotFound", other.run_instances, ImageId=self.image,
                        MinCount=1, MaxCount=1)
        ec2.terminate_instances(InstanceIds=ids)
        self.wait_state(ids, "terminated")


if __name__ == "__main__":
    unittest.main()
