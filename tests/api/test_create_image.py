"""CreateImage's refusals through boto3 against a real `kiln serve` (started
by run.sh): every parameter is checked before an instance is looked at, an
unknown instance is InvalidInstanceID.NotFound (DryRun too), and no refusal
registers an image or a snapshot.  Capturing real instances is the `vm`
suite's create-image-tiny test (it boots guests)."""
import os
import unittest

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["KILN_TEST_ENDPOINT"]
ACCESS = os.environ["KILN_TEST_ACCESS_KEY"]
SECRET = os.environ["KILN_TEST_SECRET_KEY"]
MISSING = "i-0123456789abcdef0"


def client():
    return boto3.client(
        "ec2", region_name="us-east-1", endpoint_url=ENDPOINT,
        aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
        config=Config(retries={"max_attempts": 1, "mode": "standard"},
                      parameter_validation=False))


class CreateImageRefusals(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ec2 = client()

    def assertCode(self, code, **kwargs):
        with self.assertRaises(ClientError) as cm:
            self.ec2.create_image(**kwargs)
        self.assertEqual(cm.exception.response["Error"]["Code"], code,
                         cm.exception.response["Error"].get("Message"))
        return cm.exception.response["Error"].get("Message", "")

    def counts(self):
        images = self.ec2.describe_images(Owners=["self"])["Images"]
        snaps = self.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
        return len(images), len(snaps)

    def test_refusals_create_nothing(self):
        before = self.counts()
        self.assertCode("MissingParameter", Name="no instance")
        self.assertCode("InvalidInstanceID.Malformed", InstanceId="i-xyz", Name="bad id")
        self.assertCode("InvalidInstanceID.Malformed", InstanceId="vol-0123456789abcdef0",
                        Name="wrong kind")
        self.assertCode("MissingParameter", InstanceId=MISSING)
        self.assertCode("InvalidAMIName.Malformed", InstanceId=MISSING, Name="ab")
        self.assertCode("InvalidAMIName.Malformed", InstanceId=MISSING, Name="bad*name")
        self.assertCode("InvalidAMIName.Malformed", InstanceId=MISSING, Name="x" * 129)
        self.assertCode("InvalidParameterValue", InstanceId=MISSING, Name="long description",
                        Description="d" * 256)
        self.assertCode("InvalidParameterValue", InstanceId=MISSING, Name="tag volume",
                        TagSpecifications=[{"ResourceType": "volume",
                                            "Tags": [{"Key": "k", "Value": "v"}]}])
        msg = self.assertCode("InvalidInstanceID.NotFound", InstanceId=MISSING,
                              Name="no such instance")
        self.assertIn(MISSING, msg)
        self.assertCode("InvalidInstanceID.NotFound", InstanceId=MISSING,
                        Name="no such instance", DryRun=True)
        self.assertCode("InvalidInstanceID.NotFound", InstanceId=MISSING,
                        Name="no such instance", NoReboot=True,
                        TagSpecifications=[{"ResourceType": "image",
                                            "Tags": [{"Key": "k", "Value": "v"}]},
                                           {"ResourceType": "snapshot",
                                            "Tags": [{"Key": "k", "Value": "v"}]}])
        self.assertEqual(self.counts(), before)


if __name__ == "__main__":
    unittest.main()
