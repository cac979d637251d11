"""Snapshots and tags through the EC2 API against a real `kiln serve` (started
by run.sh): DescribeSnapshots (ids, owners, RestorableBy, filters, tags,
pagination, the waiter), DeleteSnapshot, CreateTags, DeleteTags,
DescribeTags, DryRun, malformed and unknown ids, and the cross-account rule
(another account's snapshots do not exist for you).

Snapshots are imported with `kiln snapshot import` into the server's data
directory, which makes them the data directory's default account's; the
tests sign as that account with the key the server wrote to DATA/credentials
on its first start, and as a second account made with `kiln account
create`."""
import datetime
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import unittest
import urllib.parse
import http.client
import xml.etree.ElementTree as ET

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

# CREDENTIALS, DATA, ENDPOINT, KILN, client and default_keys are imported
# from here by the other modules
from kilnapi import CREDENTIALS, DATA, ENDPOINT, KILN, client, default_keys  # noqa: F401

NS = "{http://ec2.amazonaws.com/doc/2016-11-15/}"


_tmp = tempfile.TemporaryDirectory(prefix="kiln-snap-test.")


def import_snapshot(description=None, size=1024 * 1024, region="us-east-1"):
    """Import a small random raw disk; return the new snapshot id."""
    path = os.path.join(_tmp.name, "disk.raw")
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    args = [KILN, "--data-dir", DATA, "--region", region, "snapshot", "import", path]
    if description is not None:
        args += ["--description", description]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


def raw(params, keys=None, region="us-east-1", body=None, headers=None):
    """POST form parameters (or `body` as it is) signed by botocore with
    `keys` (the default account's); return (status, body bytes)."""
    keys = keys or default_keys()
    data = body if body is not None else urllib.parse.urlencode(params).encode()
    hdrs = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    hdrs.update(headers or {})
    req = AWSRequest(method="POST", url=ENDPOINT + "/", data=data, headers=hdrs)
    SigV4Auth(Credentials(keys[0], keys[1]), "ec2", region).add_auth(req)
    parts = urllib.parse.urlsplit(ENDPOINT)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request("POST", "/", body=req.body, headers=dict(req.headers))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


_bob = None


def bob_keys():
    global _bob
    if _bob is None:
        out = subprocess.run([KILN, "--data-dir", DATA, "account", "create", "bob", "--json"],
                             check=True, capture_output=True, text=True).stdout
        j = json.loads(out)
        _bob = (j["AccessKeyId"], j["SecretAccessKey"], j["AccountId"])
    return _bob


class Base(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.keys = default_keys()
        cls.ec2 = client(cls.keys)
        cls.account = cls.ec2.describe_snapshots(
            SnapshotIds=[import_snapshot()])["Snapshots"][0]["OwnerId"]

    def assertCode(self, code, fn, *args, **kwargs):
        with self.assertRaises(ClientError) as e:
            fn(*args, **kwargs)
        self.assertEqual(e.exception.response["Error"]["Code"], code,
                         e.exception.response["Error"])
        return e.exception.response


class DescribeSnapshots(Base):
    def test_by_id_shape(self):
        sid = import_snapshot("a first snapshot", size=3 * 1024 * 1024)
        r = self.ec2.describe_snapshots(SnapshotIds=[sid])
        self.assertEqual(len(r["Snapshots"]), 1)
        s = r["Snapshots"][0]
        self.assertEqual(s["SnapshotId"], sid)
        self.assertEqual(s["VolumeId"], "vol-ffffffff")
        self.assertEqual(s["State"], "completed")
        self.assertEqual(s["Progress"], "100%")
        self.assertEqual(s["OwnerId"], self.account)
        self.assertRegex(s["OwnerId"], r"^\d{12}$")
        self.assertEqual(s["VolumeSize"], 1)
        self.assertEqual(s["Description"], "a first snapshot")
        self.assertIs(s["Encrypted"], False)
        self.assertEqual(s["StorageTier"], "standard")
        self.assertEqual(s["Tags"], [])
        self.assertIsInstance(s["StartTime"], datetime.datetime)
        now = datetime.datetime.now(datetime.timezone.utc)
        self.assertLess(abs((now - s["StartTime"]).total_seconds()), 300)

    def test_owner_self_and_id(self):
        sid = import_snapshot()
        ids = [s["SnapshotId"] for s in self.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]]
        self.assertIn(sid, ids)
        ids = [s["SnapshotId"] for s in
               self.ec2.describe_snapshots(OwnerIds=[self.account])["Snapshots"]]
        self.assertIn(sid, ids)
        self.assertEqual(self.ec2.describe_snapshots(OwnerIds=["999999999999"])["Snapshots"], [])
        self.assertEqual(self.ec2.describe_snapshots(OwnerIds=["amazon"])["Snapshots"], [])
        self.assertCode("InvalidParameterValue", self.ec2.describe_snapshots,
                        OwnerIds=["nobody"])

    def test_restorable_by(self):
        sid = import_snapshot()
        ids = [s["SnapshotId"] for s in
               self.ec2.describe_snapshots(RestorableByUserIds=["self"])["Snapshots"]]
        self.assertIn(sid, ids)
        ids = [s["SnapshotId"] for s in
               self.ec2.describe_snapshots(RestorableByUserIds=[self.account])["Snapshots"]]
        self.assertIn(sid, ids)
        self.assertEqual(
            self.ec2.describe_snapshots(RestorableByUserIds=["all"])["Snapshots"], [])
        self.assertEqual(
            self.ec2.describe_snapshots(RestorableByUserIds=["999999999999"])["Snapshots"], [])

    def test_filters(self):
        a = import_snapshot("filter target alpha")
        b = import_snapshot("filter target beta", size=2 * 1024 * 1024)

        def ids(*filters):
            r = self.ec2.describe_snapshots(
                Filters=[{"Name": n, "Values": v} for n, v in filters])
            return sorted(s["SnapshotId"] for s in r["Snapshots"])

        self.assertEqual(ids(("snapshot-id", [a])), [a])
        self.assertEqual(ids(("description", ["filter target *"])), sorted([a, b]))
        self.assertEqual(ids(("description", ["filter target ?lpha"])), [a])
        self.assertEqual(ids(("description", ["filter target *"]), ("snapshot-id", [b])), [b])
        self.assertIn(a, ids(("status", ["completed"])))
        self.assertEqual(ids(("status", ["pending", "error"])), [])
        self.assertIn(a, ids(("owner-id", [self.account])))
        self.assertEqual(ids(("owner-id", ["999999999999"])), [])
        self.assertIn(a, ids(("volume-size", ["1"])))
        self.assertEqual(ids(("volume-size", ["7"])), [])
        self.assertIn(a, ids(("encrypted", ["false"])))
        self.assertIn(a, ids(("progress", ["100%"])))
        self.assertIn(a, ids(("storage-tier", ["standard"])))
        self.assertIn(a, ids(("volume-id", ["vol-ffffffff"])))
        self.assertCode("InvalidParameterValue", self.ec2.describe_snapshots,
                        Filters=[{"Name": "colour", "Values": ["red"]}])

    def test_tag_filters_and_tag_set(self):
        a = import_snapshot()
        b = import_snapshot()
        self.ec2.create_tags(Resources=[a], Tags=[{"Key": "Env", "Value": "prod"},
                                                  {"Key": "Team", "Value": "x y&z=1"}])
        self.ec2.create_tags(Resources=[b], Tags=[{"Key": "Env", "Value": "dev"}])

        def ids(*filters):
            r = self.ec2.describe_snapshots(
                SnapshotIds=[a, b], Filters=[{"Name": n, "Values": v} for n, v in filters])
            return sorted(s["SnapshotId"] for s in r["Snapshots"])

        self.assertEqual(ids(("tag:Env", ["prod"])), [a])
        self.assertEqual(ids(("tag:Env", ["prod", "dev"])), sorted([a, b]))
        self.assertEqual(ids(("tag:Env", ["p*"])), [a])
        self.assertEqual(ids(("tag-key", ["Team"])), [a])
        self.assertEqual(ids(("tag-key", ["Nope"])), [])
        s = self.ec2.describe_snapshots(SnapshotIds=[a])["Snapshots"][0]
        self.assertEqual(sorted((t["Key"], t["Value"]) for t in s["Tags"]),
                         [("Env", "prod"), ("Team", "x y&z=1")])

    def test_malformed_ids(self):
        for bad in ("snap-123", "snap-0123456789ABCDEF0", "ami-0123456789abcdef0", "x"):
            r = self.assertCode("InvalidSnapshotID.Malformed", self.ec2.describe_snapshots,
                                SnapshotIds=[bad])
            self.assertEqual(r["ResponseMetadata"]["HTTPStatusCode"], 400)

    def test_unknown_ids(self):
        known = import_snapshot()
        r = self.assertCode("InvalidSnapshot.NotFound", self.ec2.describe_snapshots,
                            SnapshotIds=["snap-00000000000000000"])
        self.assertIn("snap-00000000000000000", r["Error"]["Message"])
        r = self.assertCode("InvalidSnapshot.NotFound", self.ec2.describe_snapshots,
                            SnapshotIds=[known, "snap-00000000000000000",
                                         "snap-00000000000000001"])
        self.assertIn("snap-00000000000000000", r["Error"]["Message"])
        self.assertIn("snap-00000000000000001", r["Error"]["Message"])
        self.assertNotIn(known, r["Error"]["Message"])

    def test_max_results(self):
        sid = import_snapshot()
        self.assertCode("InvalidParameterCombination", self.ec2.describe_snapshots,
                        SnapshotIds=[sid], MaxResults=5)
        self.assertCode("InvalidParameterValue", self.ec2.describe_snapshots, MaxResults=4)
        self.assertCode("InvalidPaginationToken", self.ec2.describe_snapshots,
                        MaxResults=5, NextToken="not-a-token")
        # Above 1000 is clamped, as AWS does.
        r = self.ec2.describe_snapshots(MaxResults=5000)
        self.assertIn(sid, [s["SnapshotId"] for s in r["Snapshots"]])

    def test_paginator(self):
        ids = [import_snapshot() for _ in range(12)]
        self.ec2.create_tags(Resources=ids, Tags=[{"Key": "batch", "Value": "paginator"}])
        pages = list(self.ec2.get_paginator("describe_snapshots").paginate(
            Filters=[{"Name": "tag:batch", "Values": ["paginator"]}],
            PaginationConfig={"PageSize": 5}))
        self.assertEqual([len(p["Snapshots"]) for p in pages], [5, 5, 2])
        self.assertNotIn("NextToken", pages[-1])
        got = [s["SnapshotId"] for p in pages for s in p["Snapshots"]]
        self.assertEqual(sorted(got), sorted(ids))
        # Every owned snapshot once, with or without paging.
        everything = sorted(s["SnapshotId"] for s in
                            self.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"])
        paged = sorted(s["SnapshotId"] for p in
                       self.ec2.get_paginator("describe_snapshots").paginate(
                           OwnerIds=["self"], PaginationConfig={"PageSize": 5})
                       for s in p["Snapshots"])
        self.assertEqual(paged, everything)

    def test_waiter(self):
        sid = import_snapshot()
        self.ec2.get_waiter("snapshot_completed").wait(
            SnapshotIds=[sid], WaiterConfig={"Delay": 1, "MaxAttempts": 3})

    def test_other_region_is_separate(self):
        sid = import_snapshot()
        west = client(self.keys, "us-west-2")
        self.assertCode("InvalidSnapshot.NotFound", west.describe_snapshots, SnapshotIds=[sid])

    def test_concurrent_with_import(self):
        """The server reads the registry while `kiln snapshot import` writes it."""
        import threading
        made, errors = [], []

        def importer():
            try:
                for _ in range(5):
                    made.append(import_snapshot(size=256 * 1024))
            except Exception as e:  # reported below
                errors.append(e)

        t = threading.Thread(target=importer)
        t.start()
        while t.is_alive():
            self.ec2.describe_snapshots(OwnerIds=["self"], MaxResults=5)
        t.join()
        self.assertEqual(errors, [])
        r = self.ec2.describe_snapshots(SnapshotIds=made)
        self.assertEqual(sorted(s["SnapshotId"] for s in r["Snapshots"]), sorted(made))

    def test_cli_table(self):
        sid = import_snapshot("for the table")
        env = dict(os.environ, AWS_SHARED_CREDENTIALS_FILE=CREDENTIALS,
                   AWS_CONFIG_FILE="/dev/null", AWS_PAGER="")
        base = ["aws", "--region", "us-east-1", "--endpoint-url", ENDPOINT, "ec2"]
        r = subprocess.run(base + ["describe-snapshots", "--owner-ids", "self",
                                   "--output", "table"],
                           env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("DescribeSnapshots", r.stdout)
        self.assertIn(sid, r.stdout)
        r = subprocess.run(base + ["describe-snapshots", "--snapshot-ids", sid,
                                   "--query", "Snapshots[0].Description", "--output", "text"],
                           env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "for the table")


class RawXml(Base):
    """The exact elements on the wire (the reference's 2.4), signed by hand."""

    def post(self, params):
        return raw(params, keys=self.keys)

    def test_describe_snapshots_elements(self):
        sid = import_snapshot("xml")
        self.ec2.create_tags(Resources=[sid], Tags=[{"Key": "k", "Value": "v"}])
        status, body = self.post({"Action": "DescribeSnapshots", "Version": "2016-11-15",
                                  "SnapshotId.1": sid})
        self.assertEqual(status, 200, body)
        root = ET.fromstring(body)
        self.assertEqual(root.tag, NS + "DescribeSnapshotsResponse")
        items = root.findall(NS + "snapshotSet/" + NS + "item")
        self.assertEqual(len(items), 1)
        self.assertEqual([c.tag[len(NS):] for c in items[0]],
                         ["snapshotId", "volumeId", "status", "startTime", "completionTime",
                          "progress", "ownerId", "volumeSize", "description", "encrypted",
                          "storageTier", "tagSet"])
        self.assertEqual(items[0].findtext(NS + "encrypted"), "false")
        self.assertRegex(items[0].findtext(NS + "startTime"),
                         r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        tag = items[0].find(NS + "tagSet/" + NS + "item")
        self.assertEqual((tag.findtext(NS + "key"), tag.findtext(NS + "value")), ("k", "v"))
        self.assertIsNone(root.find(NS + "nextToken"))

    def test_golden(self):
        """The whole document, ids, times and the request id masked
        (golden/describe-snapshots.xml)."""
        sid = import_snapshot('golden <&> "snapshot"')
        self.ec2.create_tags(Resources=[sid], Tags=[{"Key": "Name", "Value": "x y&z=1"},
                                                    {"Key": "empty", "Value": ""}])
        status, body = self.post({"Action": "DescribeSnapshots", "Version": "2016-11-15",
                                  "SnapshotId.1": sid})
        self.assertEqual(status, 200, body)
        text = body.decode()
        text = re.sub(r"<requestId>[^<]*</requestId>", "<requestId>REQUEST-ID</requestId>", text)
        text = text.replace(sid, "SNAP-ID").replace(self.account, "ACCOUNT")
        text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", "TIME", text)
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "golden", "describe-snapshots.xml")) as f:
            expected = f.read()
        self.assertEqual(text.strip(), expected.strip())

    def test_delete_snapshot_return(self):
        sid = import_snapshot()
        status, body = self.post({"Action": "DeleteSnapshot", "Version": "2016-11-15",
                                  "SnapshotId": sid})
        self.assertEqual(status, 200, body)
        root = ET.fromstring(body)
        self.assertEqual(root.findtext(NS + "return"), "true")

    def test_missing_snapshot_id(self):
        status, body = self.post({"Action": "DeleteSnapshot", "Version": "2016-11-15"})
        self.assertEqual(status, 400)
        self.assertEqual(ET.fromstring(body).findtext("./Errors/Error/Code"), "MissingParameter")


class DeleteSnapshot(Base):
    def test_delete_then_not_found(self):
        sid = import_snapshot()
        r = self.ec2.delete_snapshot(SnapshotId=sid)
        self.assertEqual(r["ResponseMetadata"]["HTTPStatusCode"], 200)
        self.assertCode("InvalidSnapshot.NotFound", self.ec2.describe_snapshots,
                        SnapshotIds=[sid])
        self.assertCode("InvalidSnapshot.NotFound", self.ec2.delete_snapshot, SnapshotId=sid)

    def test_delete_drops_tags(self):
        sid = import_snapshot()
        self.ec2.create_tags(Resources=[sid], Tags=[{"Key": "k", "Value": "v"}])
        self.ec2.delete_snapshot(SnapshotId=sid)
        r = self.ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [sid]}])
        self.assertEqual(r["Tags"], [])

    def test_dry_run(self):
        sid = import_snapshot()
        r = self.assertCode("DryRunOperation", self.ec2.delete_snapshot, SnapshotId=sid,
                            DryRun=True)
        self.assertEqual(r["ResponseMetadata"]["HTTPStatusCode"], 412)
        self.ec2.describe_snapshots(SnapshotIds=[sid])  # still there
        # Validation and permission come before the dry-run answer.
        self.assertCode("InvalidSnapshot.NotFound", self.ec2.delete_snapshot,
                        SnapshotId="snap-00000000000000000", DryRun=True)
        self.assertCode("InvalidSnapshotID.Malformed", self.ec2.delete_snapshot,
                        SnapshotId="snap-bad", DryRun=True)

    def test_describe_dry_run(self):
        self.assertCode("DryRunOperation", self.ec2.describe_snapshots, DryRun=True)
        # Parameters are validated before the dry-run answer.
        self.assertCode("InvalidSnapshotID.Malformed", self.ec2.describe_snapshots,
                        SnapshotIds=["snap-x"], DryRun=True)
        self.assertCode("InvalidParameterValue", self.ec2.describe_tags,
                        Filters=[{"Name": "colour", "Values": ["x"]}], DryRun=True)

    def test_malformed_and_missing(self):
        self.assertCode("InvalidSnapshotID.Malformed", self.ec2.delete_snapshot,
                        SnapshotId="vol-0123456789abcdef0")
        self.assertCode("InvalidSnapshot.NotFound", self.ec2.delete_snapshot,
                        SnapshotId="snap-00000000000000000")


class Tags(Base):
    def test_create_describe_delete(self):
        sid = import_snapshot()
        self.ec2.create_tags(Resources=[sid], Tags=[{"Key": "a", "Value": "1"},
                                                    {"Key": "b", "Value": "2"},
                                                    {"Key": "c", "Value": ""},
                                                    {"Key": "d"}])
        r = self.ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [sid]}])
        self.assertEqual([(t["ResourceId"], t["ResourceType"], t["Key"], t["Value"])
                          for t in r["Tags"]],
                         [(sid, "snapshot", "a", "1"), (sid, "snapshot", "b", "2"),
                          (sid, "snapshot", "c", ""), (sid, "snapshot", "d", "")])
        # Overwrite.
        self.ec2.create_tags(Resources=[sid], Tags=[{"Key": "a", "Value": "one"}])
        # Key with a non-matching value: kept; matching: deleted; no value: deleted.
        self.ec2.delete_tags(Resources=[sid], Tags=[{"Key": "a", "Value": "1"}])
        self.ec2.delete_tags(Resources=[sid], Tags=[{"Key": "b", "Value": "2"}])
        self.ec2.delete_tags(Resources=[sid], Tags=[{"Key": "c"}])
        r = self.ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [sid]}])
        self.assertEqual([(t["Key"], t["Value"]) for t in r["Tags"]], [("a", "one"), ("d", "")])
        # No Tags at all: every tag goes.
        self.ec2.delete_tags(Resources=[sid])
        r = self.ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [sid]}])
        self.assertEqual(r["Tags"], [])

    def test_describe_tags_filters(self):
        a, b = import_snapshot(), import_snapshot()
        self.ec2.create_tags(Resources=[a, b], Tags=[{"Key": "dt-role", "Value": "web"}])
        self.ec2.create_tags(Resources=[b], Tags=[{"Key": "dt-other", "Value": "db"}])

        def tags(*filters):
            r = self.ec2.describe_tags(Filters=[{"Name": n, "Values": v} for n, v in filters])
            return sorted((t["ResourceId"], t["Key"]) for t in r["Tags"])

        self.assertEqual(tags(("key", ["dt-role"])), sorted([(a, "dt-role"), (b, "dt-role")]))
        self.assertEqual(tags(("key", ["dt-*"]), ("resource-id", [b])),
                         [(b, "dt-other"), (b, "dt-role")])
        self.assertEqual(tags(("value", ["db"]), ("key", ["dt-*"])), [(b, "dt-other")])
        self.assertEqual(tags(("resource-type", ["image"]), ("key", ["dt-*"])), [])
        self.assertEqual(len(tags(("resource-type", ["snapshot"]), ("key", ["dt-role"]))), 2)
        self.assertCode("InvalidParameterValue", self.ec2.describe_tags,
                        Filters=[{"Name": "colour", "Values": ["x"]}])

    def test_describe_tags_paginator(self):
        sid = import_snapshot()
        self.ec2.create_tags(Resources=[sid],
                             Tags=[{"Key": "pg-%02d" % i, "Value": str(i)} for i in range(11)])
        pages = list(self.ec2.get_paginator("describe_tags").paginate(
            Filters=[{"Name": "resource-id", "Values": [sid]}],
            PaginationConfig={"PageSize": 5}))
        self.assertEqual([len(p["Tags"]) for p in pages], [5, 5, 1])
        self.assertEqual([t["Key"] for p in pages for t in p["Tags"]],
                         ["pg-%02d" % i for i in range(11)])

    def test_validation(self):
        sid = import_snapshot()
        self.assertCode("InvalidParameterValue", self.ec2.create_tags, Resources=[sid],
                        Tags=[{"Key": "aws:reserved", "Value": "x"}])
        self.assertCode("InvalidParameterValue", self.ec2.create_tags, Resources=[sid],
                        Tags=[{"Key": "k" * 129, "Value": "x"}])
        self.ec2.create_tags(Resources=[sid], Tags=[{"Key": "k" * 128, "Value": "v" * 256}])
        self.assertCode("InvalidParameterValue", self.ec2.create_tags, Resources=[sid],
                        Tags=[{"Key": "k", "Value": "v" * 257}])
        self.assertCode("InvalidParameterValue", self.ec2.create_tags, Resources=[sid],
                        Tags=[{"Key": "", "Value": "x"}])
        self.assertCode("MissingParameter", self.ec2.create_tags, Resources=[sid], Tags=[])
        self.assertCode("InvalidSnapshotID.Malformed", self.ec2.create_tags,
                        Resources=["snap-1"], Tags=[{"Key": "k", "Value": "v"}])
        self.assertCode("InvalidID", self.ec2.create_tags,
                        Resources=["bogus-1"], Tags=[{"Key": "k", "Value": "v"}])
        self.assertCode("InvalidSnapshot.NotFound", self.ec2.create_tags,
                        Resources=["snap-00000000000000000"], Tags=[{"Key": "k", "Value": "v"}])
        # All or nothing: one unknown resource, no tag written anywhere.
        self.assertCode("InvalidSnapshot.NotFound", self.ec2.create_tags,
                        Resources=[sid, "snap-00000000000000000"],
                        Tags=[{"Key": "atomic", "Value": "v"}])
        r = self.ec2.describe_tags(Filters=[{"Name": "key", "Values": ["atomic"]}])
        self.assertEqual(r["Tags"], [])

    def test_limit(self):
        sid = import_snapshot()
        self.ec2.create_tags(Resources=[sid],
                             Tags=[{"Key": "l%d" % i, "Value": ""} for i in range(50)])
        self.assertCode("TagLimitExceeded", self.ec2.create_tags, Resources=[sid],
                        Tags=[{"Key": "one-more", "Value": ""}])
        # Replacing an existing key is not a new tag.
        self.ec2.create_tags(Resources=[sid], Tags=[{"Key": "l0", "Value": "x"}])

    def test_dry_run(self):
        sid = import_snapshot()
        self.assertCode("DryRunOperation", self.ec2.create_tags, Resources=[sid],
                        Tags=[{"Key": "dry", "Value": "v"}], DryRun=True)
        self.assertCode("DryRunOperation", self.ec2.delete_tags, Resources=[sid], DryRun=True)
        r = self.ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [sid]}])
        self.assertEqual(r["Tags"], [])
        self.assertCode("DryRunOperation", self.ec2.describe_tags, DryRun=True)


def provider_account(describe):
    """The provider account's id: `describe` (a Describe call with
    Owner=kiln) makes the server look it up, creating it on first use (as
    `kiln base-image build` does); `kiln account list` names it."""
    describe()
    out = subprocess.run([KILN, "--data-dir", DATA, "account", "list", "--json"],
                         check=True, capture_output=True, text=True).stdout
    ids = [a["AccountId"] for a in json.loads(out) if a["Name"] == "kiln"]
    assert len(ids) == 1, out
    return ids[0]


def set_owner(table, rid, owner):
    """Hand row `rid` of `table` (images, snapshots) to `owner` behind the
    server's back (WAL lets us write beside it): a base image without
    building one, which needs Debian packages."""
    db = sqlite3.connect(os.path.join(DATA, "regions", "us-east-1", "registry.db"), timeout=10)
    with db:
        db.execute(f"UPDATE {table} SET owner = ? WHERE id = ?", (owner, rid))
    db.close()


class ProviderAlias(Base):
    """The provider account (named `kiln`) is kiln's `amazon`: `Owner=kiln`
    selects its snapshots, which carry ownerAlias `kiln` (AWS shows
    `amazon` for its own), and the owner-alias filter matches them."""

    def ids(self, c, **kwargs):
        return [s["SnapshotId"] for s in c.describe_snapshots(**kwargs)["Snapshots"]]

    def test_owner_kiln_and_alias(self):
        provider = provider_account(lambda: self.ec2.describe_snapshots(OwnerIds=["kiln"]))
        self.assertNotEqual(provider, self.account)
        base, mine = import_snapshot("base"), import_snapshot("mine")
        for sid in (base, mine):
            self.ec2.modify_snapshot_attribute(
                SnapshotId=sid, Attribute="createVolumePermission",
                OperationType="add", GroupNames=["all"])
        set_owner("snapshots", base, provider)
        try:
            for c in (self.ec2, client(bob_keys())):
                ids = self.ids(c, OwnerIds=["kiln"])
                self.assertIn(base, ids)
                self.assertNotIn(mine, ids)
                self.assertIn(base, self.ids(c, OwnerIds=["kiln", "self"]))
                self.assertNotIn(base, self.ids(c, OwnerIds=["amazon"]))
                self.assertIn(base, self.ids(c, OwnerIds=[provider]))
                shown = {s["SnapshotId"]: s for s in
                         c.describe_snapshots(SnapshotIds=[base, mine])["Snapshots"]}
                self.assertEqual(shown[base]["OwnerAlias"], "kiln")
                self.assertEqual(shown[base]["OwnerId"], provider)
                self.assertNotIn("OwnerAlias", shown[mine])
                flt = [{"Name": "owner-alias", "Values": ["kiln"]}]
                self.assertIn(base, self.ids(c, Filters=flt))
                self.assertNotIn(mine, self.ids(c, Filters=flt))
                self.assertNotIn(base, self.ids(c, Filters=[{"Name": "owner-alias",
                                                             "Values": ["amazon"]}]))
                self.assertIn(base, self.ids(c, Filters=[{"Name": "owner-alias",
                                                          "Values": ["k*"]}]))
            self.assertNotIn(base, self.ids(self.ec2, OwnerIds=["self"]))
            self.assertIn(mine, self.ids(self.ec2, OwnerIds=["self"]))
        finally:
            set_owner("snapshots", base, self.account)
            for sid in (base, mine):
                self.ec2.reset_snapshot_attribute(SnapshotId=sid,
                                                  Attribute="createVolumePermission")


class CrossAccount(Base):
    def test_other_account_sees_nothing(self):
        sid = import_snapshot("private")
        self.ec2.create_tags(Resources=[sid], Tags=[{"Key": "secret", "Value": "s"}])
        bk = bob_keys()
        bob = client(bk)
        self.assertNotEqual(bk[2], self.account)
        r = bob.describe_snapshots()
        self.assertEqual(r["Snapshots"], [])
        self.assertEqual(bob.describe_snapshots(OwnerIds=[self.account])["Snapshots"], [])
        self.assertEqual(bob.describe_snapshots(
            Filters=[{"Name": "snapshot-id", "Values": [sid]}])["Snapshots"], [])
        self.assertCode("InvalidSnapshot.NotFound", bob.describe_snapshots, SnapshotIds=[sid])
        self.assertCode("InvalidSnapshot.NotFound", bob.delete_snapshot, SnapshotId=sid)
        self.assertCode("InvalidSnapshot.NotFound", bob.delete_snapshot, SnapshotId=sid,
                        DryRun=True)
        self.assertCode("InvalidSnapshot.NotFound", bob.create_tags, Resources=[sid],
                        Tags=[{"Key": "k", "Value": "v"}])
        self.assertCode("InvalidSnapshot.NotFound", bob.delete_tags, Resources=[sid])
        self.assertEqual(bob.describe_tags()["Tags"], [])
        # Nothing changed for the owner.
        s = self.ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
        self.assertEqual(s["Tags"], [{"Key": "secret", "Value": "s"}])


if __name__ == "__main__":
    unittest.main()
