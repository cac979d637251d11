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
instances not existing for you, ClientToken (the same request answers its
reservation again, other parameters are IdempotentParameterMismatch), and,
with a serve of its own, terminated instances vanishing after
KILN_TERMINATED_RETENTION_SECONDS (row, tags, directory)."""
import configparser
import json
import os
import socket
import sqlite3
import subprocess
import tempfile
import time
import unittest

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from kilnapi import DATA, ENDPOINT, KILN, client, default_keys


_tmp = tempfile.TemporaryDirectory(prefix="kiln-inst-test.")


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

    def test_client_token(self):
        ec2 = self.ec2
        kw = dict(ImageId=self.image, MinCount=2, MaxCount=2, InstanceType="t3.nano",
                  ClientToken="test-client-token-1",
                  TagSpecifications=[{"ResourceType": "instance",
                                      "Tags": [{"Key": "token", "Value": "one"}]}])
        first = ec2.run_instances(**kw)
        ids = sorted(i["InstanceId"] for i in first["Instances"])
        self.wait_state(ids, "stopped")
        count = sum(len(r["Instances"]) for r in ec2.describe_instances()["Reservations"])
        # the same parameters: the first reservation, nothing launched
        again = ec2.run_instances(**kw)
        self.assertEqual(again["ReservationId"], first["ReservationId"])
        self.assertEqual(sorted(i["InstanceId"] for i in again["Instances"]), ids)
        # the same parameters in another order (the aws CLI): the same
        out = subprocess.run(
            ["aws", "--endpoint-url", ENDPOINT, "--region", "us-east-1", "--output", "json",
             "ec2", "run-instances", "--client-token", "test-client-token-1",
             "--tag-specifications",
             "ResourceType=instance,Tags=[{Key=token,Value=one}]",
             "--instance-type", "t3.nano", "--count", "2", "--image-id", self.image],
            capture_output=True, text=True,
            env=dict(os.environ, AWS_ACCESS_KEY_ID=default_keys()[0],
                     AWS_SECRET_ACCESS_KEY=default_keys()[1], AWS_MAX_ATTEMPTS="1"))
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(json.loads(out.stdout)["ReservationId"], first["ReservationId"])
        # other parameters under the token: refused, nothing launched
        for change in ({"MaxCount": 3}, {"InstanceType": "t3.micro"},
                       {"TagSpecifications": [{"ResourceType": "instance",
                                               "Tags": [{"Key": "token", "Value": "two"}]}]}):
            with self.assertRaises(ClientError) as cm:
                ec2.run_instances(**dict(kw, **change))
            err = cm.exception.response["Error"]
            self.assertEqual(err["Code"], "IdempotentParameterMismatch", change)
            self.assertIn("test-client-token-1", err["Message"])
            self.assertEqual(cm.exception.response["ResponseMetadata"]["HTTPStatusCode"], 400)
        self.assertEqual(sum(len(r["Instances"]) for r in ec2.describe_instances()["Reservations"]),
                         count)
        self.assertCode("InvalidParameterValue", ec2.run_instances, ImageId=self.image,
                        MinCount=1, MaxCount=1, ClientToken="tab\there")
        self.assertCode("InvalidParameterValue", ec2.run_instances, ImageId=self.image,
                        MinCount=1, MaxCount=1, ClientToken="x" * 65)
        # a dry run records no token: the launch after it is a new one
        self.assertCode("DryRunOperation", ec2.run_instances, ImageId=self.image,
                        MinCount=1, MaxCount=1, ClientToken="test-client-token-2", DryRun=True)
        r = ec2.run_instances(ImageId=self.image, MinCount=1, MaxCount=1,
                              ClientToken="test-client-token-2")
        self.wait_state([i["InstanceId"] for i in r["Instances"]], "stopped")
        ec2.terminate_instances(InstanceIds=ids + [i["InstanceId"] for i in r["Instances"]])
        # a terminated reservation still answers its token (within retention)
        again = ec2.run_instances(**kw)
        self.assertEqual(again["ReservationId"], first["ReservationId"])

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


class TerminatedRetention(unittest.TestCase):
    """A serve of its own with KILN_TERMINATED_RETENTION_SECONDS=2: a
    terminated instance stays visible (console.log kept, everything else of
    its directory removed), then DescribeInstances forgets it: the row, its
    tags, its directory.  A malformed knob stops serve with its name."""

    RETENTION = 2

    def serve(self, data, port, retention):
        env = dict(os.environ, KILN_TERMINATED_RETENTION_SECONDS=retention)
        with open(data + ".log", "ab") as log:
            return subprocess.Popen(
                [KILN, "serve", "--data-dir", data, "--listen", "127.0.0.1:%d" % port,
                 "--access-key", "AKIDKILNRETAIN001", "--secret-key",
                 "retain/Secret+0123456789abcdefghijklmn", "--account", "210987654321"],
                stdout=log, stderr=subprocess.STDOUT, env=env)

    def test_bad_knob(self):
        data = os.path.join(_tmp.name, "retention-bad")
        for bad in ("", "abc", "0", "-5", "99999999999"):
            p = self.serve(data, free_port(), bad)
            self.assertNotEqual(p.wait(timeout=60), 0, bad)
        with open(data + ".log") as f:
            self.assertIn("KILN_TERMINATED_RETENTION_SECONDS", f.read())

    def test_terminated_vanish(self):
        data = os.path.join(_tmp.name, "retention")
        port = free_port()
        proc = self.serve(data, port, str(self.RETENTION))
        try:
            creds = os.path.join(data, "credentials")
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    if os.path.exists(creds):
                        break
                except OSError:
                    pass
                self.assertIsNone(proc.poll(), "serve exited")
                self.assertLess(time.monotonic(), deadline, "serve never listened")
                time.sleep(0.1)
            cp = configparser.ConfigParser()
            cp.read(creds)
            ec2 = boto3.client(
                "ec2", region_name="us-east-1", endpoint_url="http://127.0.0.1:%d" % port,
                aws_access_key_id=cp["default"]["aws_access_key_id"],
                aws_secret_access_key=cp["default"]["aws_secret_access_key"],
                config=Config(retries={"max_attempts": 1, "mode": "standard"}))
            path = os.path.join(_tmp.name, "noise2.raw")
            with open(path, "wb") as f:
                f.write(os.urandom(2 << 20))
            image = subprocess.run([KILN, "--data-dir", data, "image", "import", path,
                                    "--name", "retention-noise"], check=True,
                                   capture_output=True, text=True).stdout.strip().splitlines()[-1]
            r = ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2, InstanceType="t3.nano",
                                  TagSpecifications=[{"ResourceType": "instance",
                                                      "Tags": [{"Key": "k", "Value": "v"}]}])
            ids = sorted(i["InstanceId"] for i in r["Instances"])
            gone, kept = ids
            dirs = {i: os.path.join(data, "regions", "us-east-1", "instances", i) for i in ids}

            def states():
                rs = ec2.describe_instances()["Reservations"]
                return {i["InstanceId"]: i["State"]["Name"] for r in rs for i in r["Instances"]}

            deadline = time.monotonic() + 60
            while set(states().values()) != {"stopped"}:
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.2)
            # a console log as a guest would have left it
            with open(os.path.join(dirs[gone], "console.log"), "w") as f:
                f.write("last words\n")
            ec2.terminate_instances(InstanceIds=[gone])
            inst = ec2.describe_instances(InstanceIds=[gone])["Reservations"][0]["Instances"][0]
            self.assertEqual(inst["State"]["Name"], "terminated")
            # QEMU gone: only console.log stays, and GetConsoleOutput reads it
            self.assertEqual(os.listdir(dirs[gone]), ["console.log"])
            self.assertEqual(ec2.get_console_output(InstanceId=gone)["Output"], "last words\n")
            # then it vanishes: DescribeInstances, its tags, its row, its directory
            deadline = time.monotonic() + 120
            while gone in states():
                self.assertLess(time.monotonic(), deadline, "terminated instance never vanished")
                time.sleep(0.5)
            with self.assertRaises(ClientError) as cm:
                ec2.describe_instances(InstanceIds=[gone])
            self.assertEqual(cm.exception.response["Error"]["Code"], "InvalidInstanceID.NotFound")
            with self.assertRaises(ClientError) as cm:
                ec2.get_console_output(InstanceId=gone)
            self.assertEqual(cm.exception.response["Error"]["Code"], "InvalidInstanceID.NotFound")
            self.assertEqual(states(), {kept: "stopped"})
            tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": ids}])["Tags"]
            self.assertEqual([t["ResourceId"] for t in tags], [kept])
            db = sqlite3.connect(os.path.join(data, "regions", "us-east-1", "registry.db"))
            try:
                rows = db.execute("SELECT id FROM instances ORDER BY id").fetchall()
            finally:
                db.close()
            self.assertEqual(rows, [(kept,)])
            self.assertFalse(os.path.exists(dirs[gone]))
            self.assertTrue(os.path.isdir(dirs[kept]))
        finally:
            proc.terminate()
            self.assertEqual(proc.wait(timeout=120), 0)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


if __name__ == "__main__":
    unittest.main()
