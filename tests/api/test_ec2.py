"""The EC2 API foundation against a real `kiln serve` (started by run.sh):
boto3, the aws CLI, and raw requests signed with botocore's own SigV4 code,
so every check exercises the server's signature verification too."""
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.parse
import xml.etree.ElementTree as ET

import boto3
import botocore
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

ENDPOINT = os.environ["KILN_TEST_ENDPOINT"]
AKID = os.environ["KILN_TEST_ACCESS_KEY"]
SECRET = os.environ["KILN_TEST_SECRET_KEY"]
HOSTPORT = urllib.parse.urlsplit(ENDPOINT).netloc
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
NS = "{http://ec2.amazonaws.com/doc/2016-11-15/}"


def client(region="us-east-1", secret=SECRET):
    return boto3.client(
        "ec2", region_name=region, endpoint_url=ENDPOINT,
        aws_access_key_id=AKID, aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}))


def signed(method="POST", params=None, body=None, region="us-east-1", secret=SECRET,
           query_auth=False, headers=None, service="ec2"):
    """Send a request signed by botocore; return (status, headers, body)."""
    url = ENDPOINT + "/"
    hdrs = dict(headers or {})
    if method == "GET" or query_auth:
        if params:
            url += "?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        data = None
    else:
        data = body if body is not None else urllib.parse.urlencode(params or {}).encode()
        hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
    req = AWSRequest(method=method, url=url, data=data, headers=hdrs)
    creds = Credentials(AKID, secret)
    if query_auth:
        SigV4QueryAuth(creds, service, region, expires=60).add_auth(req)
    else:
        SigV4Auth(creds, service, region).add_auth(req)
    return send(req.method, req.url, req.body, dict(req.headers))


def send(method, url, body, headers):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    path = parts.path + ("?" + parts.query if parts.query else "")
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def error_code(body):
    root = ET.fromstring(body)
    return root.findtext("./Errors/Error/Code"), root.findtext("./RequestID")


class Describe(unittest.TestCase):
    def test_describe_regions(self):
        r = client().describe_regions()
        names = sorted(x["RegionName"] for x in r["Regions"])
        self.assertEqual(names, ["us-east-1", "us-west-2"])
        for x in r["Regions"]:
            self.assertEqual(x["Endpoint"], ENDPOINT)
            self.assertEqual(x["OptInStatus"], "opt-in-not-required")
        self.assertRegex(r["ResponseMetadata"]["RequestId"], UUID)

    def test_describe_regions_names_and_filters(self):
        r = client().describe_regions(RegionNames=["us-west-2"])
        self.assertEqual([x["RegionName"] for x in r["Regions"]], ["us-west-2"])
        r = client().describe_regions(Filters=[{"Name": "region-name", "Values": ["us-e*"]}])
        self.assertEqual([x["RegionName"] for x in r["Regions"]], ["us-east-1"])
        with self.assertRaises(ClientError) as e:
            client().describe_regions(RegionNames=["mars-1"])
        self.assertEqual(e.exception.response["Error"]["Code"], "InvalidParameterValue")
        with self.assertRaises(ClientError) as e:
            client().describe_regions(Filters=[{"Name": "colour", "Values": ["x"]}])
        self.assertEqual(e.exception.response["Error"]["Code"], "InvalidParameterValue")

    def test_describe_availability_zones(self):
        for region in ("us-east-1", "us-west-2"):
            r = client(region).describe_availability_zones()
            zones = r["AvailabilityZones"]
            self.assertEqual(len(zones), 1)
            self.assertEqual(zones[0]["ZoneName"], region + "a")
            self.assertEqual(zones[0]["State"], "available")
            self.assertEqual(zones[0]["RegionName"], region)

    def test_describe_account_attributes(self):
        r = client().describe_account_attributes()
        attrs = {a["AttributeName"]: [v["AttributeValue"] for v in a["AttributeValues"]]
                 for a in r["AccountAttributes"]}
        self.assertEqual(attrs["supported-platforms"], ["VPC"])
        # the default VPC (test_vpcs.py)
        self.assertEqual(attrs["default-vpc"], [client().describe_vpcs()["Vpcs"][0]["VpcId"]])
        r = client().describe_account_attributes(AttributeNames=["default-vpc"])
        self.assertEqual(len(r["AccountAttributes"]), 1)

    def test_dry_run(self):
        with self.assertRaises(ClientError) as e:
            client().describe_regions(DryRun=True)
        self.assertEqual(e.exception.response["Error"]["Code"], "DryRunOperation")
        self.assertEqual(e.exception.response["ResponseMetadata"]["HTTPStatusCode"], 412)


class Cli(unittest.TestCase):
    def aws(self, *args, secret=SECRET, region="us-west-2"):
        env = dict(os.environ, AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=secret,
                   AWS_DEFAULT_REGION=region, AWS_CONFIG_FILE="/dev/null",
                   AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_MAX_ATTEMPTS="1")
        return subprocess.run([sys.executable, "-m", "awscli", "--endpoint-url", ENDPOINT,
                               *args], env=env, capture_output=True, text=True, timeout=60)

    def test_describe_regions(self):
        p = self.aws("ec2", "describe-regions", "--output", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        names = sorted(r["RegionName"] for r in json.loads(p.stdout)["Regions"])
        self.assertEqual(names, ["us-east-1", "us-west-2"])

    def test_describe_availability_zones_query(self):
        p = self.aws("ec2", "describe-availability-zones", "--query",
                     "AvailabilityZones[].ZoneName", "--output", "text")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.split(), ["us-west-2a"])

    def test_wrong_secret(self):
        p = self.aws("ec2", "describe-regions", secret="not-the-secret")
        self.assertEqual(p.returncode, 255)
        self.assertIn("AuthFailure", p.stderr)


class Refusals(unittest.TestCase):
    def test_wrong_secret(self):
        with self.assertRaises(ClientError) as e:
            client(secret="wrong").describe_regions()
        r = e.exception.response
        self.assertEqual(r["Error"]["Code"], "AuthFailure")
        self.assertEqual(r["ResponseMetadata"]["HTTPStatusCode"], 401)
        self.assertRegex(r["ResponseMetadata"]["RequestId"], UUID)

    def test_unknown_access_key(self):
        c = boto3.client("ec2", region_name="us-east-1", endpoint_url=ENDPOINT,
                         aws_access_key_id="AKIDUNKNOWN", aws_secret_access_key=SECRET)
        with self.assertRaises(ClientError) as e:
            c.describe_regions()
        self.assertEqual(e.exception.response["Error"]["Code"], "AuthFailure")

    def test_unsigned(self):
        status, _, body = send("POST", ENDPOINT + "/", b"Action=DescribeRegions&Version=2016-11-15",
                               {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(status, 401)
        self.assertEqual(error_code(body)[0], "AuthFailure")

    def test_unknown_region(self):
        with self.assertRaises(ClientError) as e:
            client("eu-north-9").describe_regions()
        r = e.exception.response
        self.assertEqual(r["ResponseMetadata"]["HTTPStatusCode"], 400)
        self.assertIn("eu-north-9", r["Error"]["Message"])
        self.assertIn("us-east-1", r["Error"]["Message"])

    def test_unknown_action(self):
        status, headers, body = signed(params={"Action": "LaunchRockets", "Version": "2016-11-15"})
        self.assertEqual(status, 400)
        code, rid = error_code(body)
        self.assertEqual(code, "InvalidAction")
        self.assertEqual(headers.get("x-amzn-RequestId"), rid)
        self.assertRegex(rid, UUID)

    def test_missing_action(self):
        status, _, body = signed(params={"Version": "2016-11-15"})
        self.assertEqual((status, error_code(body)[0]), (400, "MissingAction"))

    def test_missing_version(self):
        status, _, body = signed(params={"Action": "DescribeRegions"})
        self.assertEqual((status, error_code(body)[0]), (400, "MissingParameter"))

    def test_other_version(self):
        status, _, body = signed(params={"Action": "DescribeRegions", "Version": "2014-01-01"})
        self.assertEqual(status, 400)
        self.assertIn(b"2016-11-15", body)

    def test_invalid_utf8(self):
        status, _, body = signed(body=b"Action=DescribeRegions&Version=2016-11-15&X=%C3%28")
        self.assertEqual((status, error_code(body)[0]), (400, "MalformedQueryString"))

    def test_duplicate_parameter(self):
        status, _, body = signed(body=b"Action=DescribeRegions&Version=2016-11-15&Action=X")
        self.assertEqual((status, error_code(body)[0]), (400, "MalformedQueryString"))

    def test_wrong_service(self):
        status, _, body = signed(params={"Action": "DescribeRegions", "Version": "2016-11-15"},
                                 service="s3")
        self.assertEqual((status, error_code(body)[0]), (401, "AuthFailure"))

    def test_other_method(self):
        status, _, body = send("PUT", ENDPOINT + "/", b"", {})
        self.assertGreaterEqual(status, 400)
        self.assertLess(status, 500)
        error_code(body)  # an XML error envelope

    def test_oversized_body(self):
        big = b"Action=DescribeRegions&Version=2016-11-15&Pad=" + b"x" * (2 << 20)
        try:
            status, _, body = signed(body=big)
            self.assertEqual(status, 413)
            self.assertEqual(error_code(body)[0], "RequestEntityTooLarge")
        except (ConnectionError, http.client.HTTPException):
            pass  # the server may close before reading everything: also a refusal
        # A chunked body has no Content-Length to check up front.
        conn = http.client.HTTPConnection(HOSTPORT, timeout=30)
        conn.putrequest("POST", "/")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        chunk = b"x" * 65536
        for _ in range(20):
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        self.assertEqual(resp.status, 413)
        conn.close()
        # The server is still there.
        self.assertEqual(len(client().describe_regions()["Regions"]), 2)


class Transport(unittest.TestCase):
    def test_get_with_header_auth(self):
        status, headers, body = signed("GET", params={"Action": "DescribeRegions",
                                                      "Version": "2016-11-15",
                                                      "RegionName.1": "us-east-1"})
        self.assertEqual(status, 200, body)
        root = ET.fromstring(body)
        self.assertEqual(root.tag, NS + "DescribeRegionsResponse")
        self.assertEqual(root.findtext(NS + "requestId"), headers["x-amzn-RequestId"])
        self.assertEqual([e.text for e in root.iter(NS + "regionName")], ["us-east-1"])
        self.assertTrue(headers["Content-Type"].startswith("text/xml"))

    def test_get_presigned(self):
        status, _, body = signed("GET", params={"Action": "DescribeAvailabilityZones",
                                                "Version": "2016-11-15"},
                                 region="us-west-2", query_auth=True)
        self.assertEqual(status, 200, body)
        root = ET.fromstring(body)
        self.assertEqual([e.text for e in root.iter(NS + "zoneName")], ["us-west-2a"])

    def test_concurrent(self):
        clients = [client() for _ in range(16)]
        errors = []

        def work(c):
            try:
                for _ in range(5):
                    self.assertEqual(len(c.describe_regions()["Regions"]), 2)
            except Exception as e:  # noqa: BLE001 - collected and reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])

    def test_slow_client_blocks_nobody(self):
        # A client that sends half a request and stalls.
        s = socket.create_connection(("127.0.0.1", int(HOSTPORT.rsplit(":", 1)[1])))
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nAction=")
        try:
            t0 = time.time()
            self.assertEqual(len(client().describe_regions()["Regions"]), 2)
            self.assertLess(time.time() - t0, 5)
        finally:
            s.close()

    def test_request_ids_differ(self):
        a = client().describe_regions()["ResponseMetadata"]["RequestId"]
        b = client().describe_regions()["ResponseMetadata"]["RequestId"]
        self.assertNotEqual(a, b)


if __name__ == "__main__":
    unittest.main()
