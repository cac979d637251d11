"""What the API test modules share: the endpoint, kiln binary and data
directory run.sh exports, the default account's keys from the data
directory's credentials file, and a boto3 EC2 client that does not retry
(a refusal must show as it is)."""
import configparser
import os

import boto3
from botocore.config import Config

ENDPOINT = os.environ["KILN_TEST_ENDPOINT"]
KILN = os.environ["KILN"]
DATA = os.environ["KILN_TEST_DATA_DIR"]
CREDENTIALS = os.path.join(DATA, "credentials")


def default_keys():
    """(access key id, secret) of the default account."""
    cp = configparser.ConfigParser()
    cp.read(CREDENTIALS)
    return cp["default"]["aws_access_key_id"], cp["default"]["aws_secret_access_key"]


def client(keys, region="us-east-1"):
    """An EC2 client signing with keys for region, one attempt a call."""
    return boto3.client(
        "ec2", region_name=region, endpoint_url=ENDPOINT,
        aws_access_key_id=keys[0], aws_secret_access_key=keys[1],
        config=Config(retries={"max_attempts": 1, "mode": "standard"}))
