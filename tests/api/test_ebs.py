"""The EBS direct API against a real `kiln serve` (started by run.sh), with
nothing but boto3's `ebs` client pointed at the EC2 endpoint: upload a real
ext4 disk block by block (zero blocks skipped), complete it with the LINEAR
aggregate checksum, wait for it with the EC2 waiter, register an image from
it and read it back byte for byte (GetSnapshotBlock and `kiln snapshot
export`); an incremental child (ParentSnapshotId) whose ListChangedBlocks
lists exactly the blocks it changed; ListSnapshotBlocks pagination; and bad
input, each answering its documented error and changing nothing.

The restart of the server between PutSnapshotBlock and CompleteSnapshot is
tests/integration/ebs-restart.sh."""
import base64
import glob
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.parse
import uuid

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.config import Config
from botocore.exceptions import ClientError

from test_snapshots import DATA, ENDPOINT, KILN, bob_keys, client, default_keys, import_snapshot

BLOCK = 512 * 1024
GIB = 1 << 30


def ebs_client(keys, region="us-east-1", validate=True):
    """boto3's ebs client; validate=False sends what botocore would refuse
    itself, so that the server's own checks are what is tested."""
    return boto3.client(
        "ebs", region_name=region, endpoint_url=ENDPOINT,
        aws_access_key_id=keys[0], aws_secret_access_key=keys[1],
        config=Config(retries={"max_attempts": 1, "mode": "standard"},
                      parameter_validation=validate))


def b64sha(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def linear(digests):
    return base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode()


_tmp = tempfile.TemporaryDirectory(prefix="kiln-ebs-test.")


def make_ext4_disk():
    """A sparse 1 GiB raw disk holding a real ext4 made from a directory of
    a few MiB of files."""
    src = os.path.join(_tmp.name, "tree")
    os.makedirs(os.path.join(src, "etc"), exist_ok=True)
    with open(os.path.join(src, "etc", "hostname"), "w") as f:
        f.write("kiln-ebs-test\n")
    for i in range(4):
        with open(os.path.join(src, "blob%d" % i), "wb") as f:
            f.write(os.urandom(700 * 1024 + i * 4096))
    path = os.path.join(_tmp.name, "disk-%s.raw" % uuid.uuid4().hex[:8])
    with open(path, "wb") as f:
        f.truncate(GIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", src, path], check=True,
                   capture_output=True)
    return path


def read_blocks(path):
    """(index, bytes) of every block that is not all zeros."""
    out = []
    zero = bytes(BLOCK)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for k in range(size // BLOCK):
            data = f.read(BLOCK)
            if data != zero:
                out.append((k, data))
    return out


class Base(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.keys = default_keys()
        cls.ebs = ebs_client(cls.keys)
        cls.raw = ebs_client(cls.keys, validate=False)
        cls.ec2 = client(cls.keys)
        bob = bob_keys()
        cls.bob_ebs = ebs_client(bob[:2])
        cls.bob_account = bob[2]

    def assertEbsError(self, code, fn, reason=None, status=None, **kwargs):
        with self.assertRaises(ClientError) as e:
            fn(**kwargs)
        err = e.exception.response["Error"]
        self.assertEqual(err["Code"], code, err)
        if reason is not None:
            self.assertEqual(e.exception.response.get("Reason"), reason, e.exception.response)
        if status is not None:
            self.assertEqual(e.exception.response["ResponseMetadata"]["HTTPStatusCode"], status)
        return e.exception.response

    def start(self, size=1, **kwargs):
        r = self.ebs.start_snapshot(VolumeSize=size, **kwargs)
        self.assertEqual(r["Status"], "pending")
        return r["SnapshotId"]

    def put(self, sid, index, data, client=None, **kwargs):
        return (client or self.ebs).put_snapshot_block(
            SnapshotId=sid, BlockIndex=index, BlockData=data, DataLength=len(data),
            Checksum=kwargs.pop("Checksum", b64sha(data)), ChecksumAlgorithm="SHA256",
            **kwargs)

    def complete(self, sid, blocks, **kwargs):
        digests = [hashlib.sha256(d).digest() for _, d in sorted(blocks)]
        return self.ebs.complete_snapshot(
            SnapshotId=sid, ChangedBlocksCount=len(blocks), Checksum=linear(digests),
            ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR", **kwargs)

    def list_all(self, sid, **kwargs):
        blocks, token = [], None
        while True:
            args = dict(SnapshotId=sid, **kwargs)
            if token:
                args["NextToken"] = token
            r = self.ebs.list_snapshot_blocks(**args)
            self.assertEqual(r["BlockSize"], BLOCK)
            blocks += r["Blocks"]
            token = r.get("NextToken")
            if not token:
                return blocks, r

    def get(self, sid, index, token, client=None):
        r = (client or self.ebs).get_snapshot_block(SnapshotId=sid, BlockIndex=index,
                                                    BlockToken=token)
        data = r["BlockData"].read()
        self.assertEqual(r["DataLength"], len(data))
        self.assertEqual(r["ChecksumAlgorithm"], "SHA256")
        self.assertEqual(r["Checksum"], b64sha(data))
        return data

    def uploaded(self, blocks, size=1, **kwargs):
        """A completed snapshot of `blocks` ([(index, bytes)])."""
        sid = self.start(size, **kwargs)
        for k, d in blocks:
            self.put(sid, k, d)
        self.assertEqual(self.complete(sid, blocks)["Status"], "completed")
        return sid


class Upload(Base):
    def test_upload_register_and_read_back(self):
        disk = make_ext4_disk()
        blocks = read_blocks(disk)
        self.assertGreater(len(blocks), 4)
        self.assertLess(len(blocks), GIB // BLOCK)

        r = self.ebs.start_snapshot(VolumeSize=1, Description="uploaded ext4",
                                    Tags=[{"Key": "Name", "Value": "ebs-upload"}], Timeout=60)
        sid = r["SnapshotId"]
        self.assertRegex(sid, r"^snap-[0-9a-f]{17}$")
        self.assertEqual(r["VolumeSize"], 1)
        self.assertEqual(r["BlockSize"], BLOCK)
        self.assertEqual(r["Tags"], [{"Key": "Name", "Value": "ebs-upload"}])
        self.assertEqual(r["Description"], "uploaded ext4")
        self.assertRegex(r["OwnerId"], r"^\d{12}$")
        # EC2 sees the same snapshot, pending.
        s = self.ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
        self.assertEqual(s["State"], "pending")
        self.assertEqual(s["VolumeSize"], 1)

        for n, (k, d) in enumerate(blocks):
            out = self.put(sid, k, d, Progress=min(99, 100 * n // len(blocks)))
            self.assertEqual(out["Checksum"], b64sha(d))
            self.assertEqual(out["ChecksumAlgorithm"], "SHA256")
        # x-amz-Progress is the snapshot's progress while it is pending.
        self.assertEqual(self.ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["Progress"],
                         "%d%%" % min(99, 100 * (len(blocks) - 1) // len(blocks)))
        self.assertEqual(self.complete(sid, blocks)["Status"], "completed")
        self.ec2.get_waiter("snapshot_completed").wait(
            SnapshotIds=[sid], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        s = self.ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
        self.assertEqual(s["State"], "completed")
        self.assertEqual(s["Progress"], "100%")
        self.assertEqual(s["Tags"], [{"Key": "Name", "Value": "ebs-upload"}])

        # Register it as an image.
        name = "ebs-upload-%s" % uuid.uuid4().hex[:8]
        iid = self.ec2.register_image(
            Name=name, RootDeviceName="/dev/xvda", Architecture="x86_64",
            VirtualizationType="hvm",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid}}])["ImageId"]
        img = self.ec2.describe_images(ImageIds=[iid])["Images"][0]
        self.assertEqual(img["Name"], name)
        self.assertEqual(img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"], sid)

        # ListSnapshotBlocks lists exactly the blocks written.
        listed, last = self.list_all(sid)
        self.assertEqual([b["BlockIndex"] for b in listed], [k for k, _ in blocks])
        self.assertEqual(last["VolumeSize"], 1)
        # GetSnapshotBlock returns each block's bytes.
        data = dict(blocks)
        for b in listed[:8]:
            self.assertEqual(self.get(sid, b["BlockIndex"], b["BlockToken"]),
                             data[b["BlockIndex"]])

        # kiln snapshot export gives the disk back, byte for byte.
        out = os.path.join(_tmp.name, "export.raw")
        subprocess.run([KILN, "--data-dir", DATA, "snapshot", "export", sid, out], check=True,
                       capture_output=True)
        subprocess.run(["cmp", disk, out], check=True)
        os.unlink(out)
        # The ext4 inside is intact.
        if shutil.which("e2fsck"):
            subprocess.run(["e2fsck", "-fn", disk], check=True, capture_output=True)

        # An uploaded disk dedups against an import of the same disk: the
        # import stores no new chunk.
        out = subprocess.run([KILN, "--data-dir", DATA, "snapshot", "import", disk],
                             check=True, capture_output=True, text=True)
        self.assertRegex(out.stdout + out.stderr, r"chunks, 0 new \(0 B")

    def test_incremental_child(self):
        base = [(k, os.urandom(BLOCK)) for k in (0, 1, 5, 9, 100)]
        parent = self.uploaded(base)
        changed = [(1, os.urandom(BLOCK)), (300, os.urandom(BLOCK))]
        child = self.start(1, ParentSnapshotId=parent)
        for k, d in changed:
            self.put(child, k, d)
        self.assertEqual(self.complete(child, changed)["Status"], "completed")

        r = self.ebs.list_changed_blocks(FirstSnapshotId=parent, SecondSnapshotId=child)
        self.assertEqual([b["BlockIndex"] for b in r["ChangedBlocks"]], [1, 300])
        by = {b["BlockIndex"]: b for b in r["ChangedBlocks"]}
        self.assertIn("FirstBlockToken", by[1])
        self.assertNotIn("FirstBlockToken", by[300])
        self.assertEqual(self.get(child, 1, by[1]["SecondBlockToken"]), changed[0][1])
        self.assertEqual(self.get(parent, 1, by[1]["FirstBlockToken"]), base[1][1])
        self.assertEqual(self.get(child, 300, by[300]["SecondBlockToken"]), changed[1][1])
        self.assertEqual(r["VolumeSize"], 1)
        self.assertEqual(r["BlockSize"], BLOCK)

        # The child inherits the blocks it did not write.
        listed, _ = self.list_all(child)
        self.assertEqual([b["BlockIndex"] for b in listed], [0, 1, 5, 9, 100, 300])
        tok = {b["BlockIndex"]: b["BlockToken"] for b in listed}
        self.assertEqual(self.get(child, 9, tok[9]), base[3][1])
        self.assertEqual(self.get(child, 5, tok[5]), base[2][1])

        # startingBlockIndex and pagination of ListChangedBlocks.
        r = self.ebs.list_changed_blocks(FirstSnapshotId=parent, SecondSnapshotId=child,
                                         StartingBlockIndex=2)
        self.assertEqual([b["BlockIndex"] for b in r["ChangedBlocks"]], [300])
        # Without a first snapshot, every block of the second.
        r = self.ebs.list_changed_blocks(SecondSnapshotId=child)
        self.assertEqual([b["BlockIndex"] for b in r["ChangedBlocks"]], [0, 1, 5, 9, 100, 300])

        # EC2 records the lineage.
        s = self.ec2.describe_snapshots(SnapshotIds=[child])["Snapshots"][0]
        self.assertEqual(s["State"], "completed")

    def test_changed_blocks_page_reads_only_its_blocks(self):
        # A page of ListChangedBlocks reads the blocks it lists, not the
        # whole difference: with the chunks of block 200 (on the second
        # page) out of the store, the first page still answers.
        from concurrent.futures import ThreadPoolExecutor
        parent = self.uploaded([])
        first = [(k, os.urandom(BLOCK)) for k in range(100)]
        c1 = self.start(1, ParentSnapshotId=parent)
        clients = [ebs_client(self.keys) for _ in range(4)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda j: self.put(c1, j[1][0], j[1][1], client=clients[j[0] % 4]),
                          enumerate(first)))
        self.assertEqual(self.complete(c1, first)["Status"], "completed")
        chunks = os.path.join(DATA, "regions", "us-east-1", "store", "chunks", "*", "*")
        before = set(glob.glob(chunks))
        # Blocks 0..99 dedup against c1; block 200 (after zeros) is all new.
        c2 = self.uploaded([(200, os.urandom(BLOCK))], ParentSnapshotId=c1)
        new = sorted(set(glob.glob(chunks)) - before)
        self.assertTrue(new)
        aside = tempfile.mkdtemp(dir=_tmp.name)
        moved = [(p, os.path.join(aside, os.path.basename(p))) for p in new]
        for p, q in moved:
            shutil.move(p, q)
        try:
            r = self.ebs.list_changed_blocks(FirstSnapshotId=parent, SecondSnapshotId=c2,
                                             MaxResults=100)
            self.assertEqual([b["BlockIndex"] for b in r["ChangedBlocks"]], list(range(100)))
            token = r["NextToken"]
            # The second page does need block 200; a chunk missing from the
            # store is the server's fault (500), not a snapshot that does
            # not exist (404).
            err = self.assertEbsError("InternalServerException", self.ebs.list_changed_blocks,
                                      status=500, FirstSnapshotId=parent,
                                      SecondSnapshotId=c2, MaxResults=100, NextToken=token)
            self.assertNotIn("Reason", err)
        finally:
            for p, q in moved:
                shutil.move(q, p)
        r = self.ebs.list_changed_blocks(FirstSnapshotId=parent, SecondSnapshotId=c2,
                                         MaxResults=100, NextToken=token)
        self.assertEqual([b["BlockIndex"] for b in r["ChangedBlocks"]], [200])
        self.assertNotIn("NextToken", r)

    def test_parallel_puts(self):
        # As coldsnap does: many blocks in flight at once, some written twice.
        from concurrent.futures import ThreadPoolExecutor
        blocks = [(k * 3, os.urandom(BLOCK)) for k in range(48)]
        sid = self.start(1)
        clients = [ebs_client(self.keys) for _ in range(8)]
        jobs = [(i, k, d) for i, (k, d) in enumerate(blocks)] + \
            [(i, k, d) for i, (k, d) in enumerate(blocks[:8])]
        with ThreadPoolExecutor(max_workers=8) as pool:
            for out in pool.map(lambda j: self.put(sid, j[1], j[2], client=clients[j[0] % 8]),
                                jobs):
                self.assertEqual(out["ChecksumAlgorithm"], "SHA256")
        self.assertEqual(self.complete(sid, blocks)["Status"], "completed")
        listed, _ = self.list_all(sid)
        self.assertEqual([b["BlockIndex"] for b in listed], [k for k, _ in blocks])
        data = dict(blocks)
        for b in listed[::7]:
            self.assertEqual(self.get(sid, b["BlockIndex"], b["BlockToken"]),
                             data[b["BlockIndex"]])

    def test_unrelated_snapshots(self):
        a = self.uploaded([(0, os.urandom(BLOCK))])
        b = self.uploaded([(0, os.urandom(BLOCK))])
        self.assertEbsError("ValidationException", self.ebs.list_changed_blocks,
                            reason="UNRELATED_SNAPSHOTS", status=400,
                            FirstSnapshotId=a, SecondSnapshotId=b)

    def test_pagination(self):
        blocks = [(k, os.urandom(16) + bytes(BLOCK - 16)) for k in range(0, 250)]
        sid = self.uploaded(blocks)
        pages, token, seen = 0, None, []
        while True:
            args = dict(SnapshotId=sid, MaxResults=100)
            if token:
                args["NextToken"] = token
            r = self.ebs.list_snapshot_blocks(**args)
            pages += 1
            self.assertLessEqual(len(r["Blocks"]), 100)
            self.assertEqual(r["VolumeSize"], 1)
            self.assertIn("ExpiryTime", r)
            seen += [b["BlockIndex"] for b in r["Blocks"]]
            token = r.get("NextToken")
            if not token:
                break
        self.assertEqual(pages, 3)
        self.assertEqual(seen, list(range(250)))
        r = self.ebs.list_snapshot_blocks(SnapshotId=sid, StartingBlockIndex=240)
        self.assertEqual([b["BlockIndex"] for b in r["Blocks"]], list(range(240, 250)))
        self.assertNotIn("NextToken", r)

    def test_client_token_is_idempotent(self):
        token = str(uuid.uuid4())
        a = self.ebs.start_snapshot(VolumeSize=2, ClientToken=token, Description="tok")
        b = self.ebs.start_snapshot(VolumeSize=2, ClientToken=token, Description="tok")
        self.assertEqual(a["SnapshotId"], b["SnapshotId"])
        self.assertEbsError("ConflictException", self.ebs.start_snapshot, status=409,
                            VolumeSize=3, ClientToken=token, Description="tok")
        # Another account's same token is its own.
        c = self.bob_ebs.start_snapshot(VolumeSize=2, ClientToken=token, Description="tok")
        self.assertNotEqual(c["SnapshotId"], a["SnapshotId"])

    def test_shared_snapshot_is_readable(self):
        data = os.urandom(BLOCK)
        sid = self.uploaded([(3, data)])
        self.assertEbsError("ResourceNotFoundException", self.bob_ebs.list_snapshot_blocks,
                            reason="SNAPSHOT_NOT_FOUND", status=404, SnapshotId=sid)
        self.ec2.modify_snapshot_attribute(
            SnapshotId=sid, Attribute="createVolumePermission",
            CreateVolumePermission={"Add": [{"UserId": self.bob_account}]})
        r = self.bob_ebs.list_snapshot_blocks(SnapshotId=sid)
        self.assertEqual([b["BlockIndex"] for b in r["Blocks"]], [3])
        self.assertEqual(self.get(sid, 3, r["Blocks"][0]["BlockToken"], client=self.bob_ebs),
                         data)


class BadInput(Base):
    def test_wrong_checksum_stores_nothing(self):
        sid = self.start()
        good = os.urandom(BLOCK)
        bad = os.urandom(BLOCK)
        self.put(sid, 0, good)
        self.assertEbsError("ValidationException", self.put, status=400, sid=sid, index=1,
                            data=bad, Checksum=b64sha(good))
        # Nothing of block 1 was stored: one block completes, two do not.
        self.assertEbsError("ValidationException", self.ebs.complete_snapshot, status=400,
                            SnapshotId=sid, ChangedBlocksCount=2)
        self.assertEqual(self.complete(sid, [(0, good)])["Status"], "completed")
        listed, _ = self.list_all(sid)
        self.assertEqual([b["BlockIndex"] for b in listed], [0])

    def test_short_block(self):
        sid = self.start()
        short = os.urandom(BLOCK - 4096)
        self.assertEbsError("ValidationException", self.put, status=400, sid=sid, index=0,
                            data=short)
        self.assertEqual(self.ebs.complete_snapshot(SnapshotId=sid,
                                                    ChangedBlocksCount=0)["Status"], "completed")
        listed, _ = self.list_all(sid)
        self.assertEqual(listed, [])

    def test_block_index_beyond_volume(self):
        sid = self.start(1)
        d = os.urandom(BLOCK)
        self.assertEbsError("ValidationException", self.put, reason="INVALID_BLOCK", status=400,
                            sid=sid, index=GIB // BLOCK, data=d)
        self.put(sid, GIB // BLOCK - 1, d)  # the last block is fine

    def test_put_after_completion(self):
        sid = self.uploaded([(0, os.urandom(BLOCK))])
        self.assertEbsError("ValidationException", self.put, status=400, sid=sid, index=1,
                            data=os.urandom(BLOCK))
        listed, _ = self.list_all(sid)
        self.assertEqual([b["BlockIndex"] for b in listed], [0])

    def test_unknown_snapshot(self):
        missing = "snap-0123456789abcdef0"
        self.assertEbsError("ResourceNotFoundException", self.put, reason="SNAPSHOT_NOT_FOUND",
                            status=404, sid=missing, index=0, data=os.urandom(BLOCK))
        self.assertEbsError("ResourceNotFoundException", self.ebs.list_snapshot_blocks,
                            status=404, SnapshotId=missing)
        self.assertEbsError("ResourceNotFoundException", self.ebs.complete_snapshot,
                            status=404, SnapshotId=missing, ChangedBlocksCount=0)
        self.assertEbsError("ResourceNotFoundException", self.ebs.start_snapshot, status=404,
                            VolumeSize=1, ParentSnapshotId=missing)

    def test_other_accounts_snapshot(self):
        sid = self.start()
        self.assertEbsError("ResourceNotFoundException", self.put, status=404, sid=sid,
                            index=0, data=os.urandom(BLOCK), client=self.bob_ebs)
        self.assertEbsError("ResourceNotFoundException", self.bob_ebs.complete_snapshot,
                            status=404, SnapshotId=sid, ChangedBlocksCount=0)
        self.assertEqual(self.ebs.complete_snapshot(SnapshotId=sid,
                                                    ChangedBlocksCount=0)["Status"], "completed")
        self.assertEbsError("ResourceNotFoundException", self.bob_ebs.list_snapshot_blocks,
                            status=404, SnapshotId=sid)
        # Not shared: bob cannot start a child of it either.
        self.assertEbsError("ResourceNotFoundException", self.bob_ebs.start_snapshot,
                            status=404, VolumeSize=1, ParentSnapshotId=sid)

    def test_bad_block_token(self):
        a = self.uploaded([(0, os.urandom(BLOCK)), (1, os.urandom(BLOCK))])
        b = self.uploaded([(0, os.urandom(BLOCK))])
        ta = {x["BlockIndex"]: x["BlockToken"] for x in self.list_all(a)[0]}
        # Another block's token, another snapshot's token, garbage.
        self.assertEbsError("ValidationException", self.get, reason="INVALID_BLOCK_TOKEN",
                            sid=a, index=1, token=ta[0])
        self.assertEbsError("ValidationException", self.get, reason="INVALID_BLOCK_TOKEN",
                            sid=b, index=0, token=ta[0])
        forged = base64.b64encode(b"\x01" + bytes(32)).decode()
        self.assertEbsError("ValidationException", self.get, reason="INVALID_BLOCK_TOKEN",
                            sid=a, index=0, token=forged)
        self.assertEbsError("ValidationException", self.get, reason="INVALID_BLOCK_TOKEN",
                            sid=a, index=0, token="AAAA")

    def test_bad_page_token_and_max_results(self):
        sid = self.uploaded([(0, os.urandom(BLOCK))])
        for bad in (99, 10001, 0, -1):
            self.assertEbsError("ValidationException", self.raw.list_snapshot_blocks,
                                status=400, SnapshotId=sid, MaxResults=bad)
            self.assertEbsError("ValidationException", self.raw.list_changed_blocks,
                                status=400, SecondSnapshotId=sid, MaxResults=bad)
        self.assertEqual(len(self.ebs.list_snapshot_blocks(SnapshotId=sid,
                                                           MaxResults=100)["Blocks"]), 1)
        self.assertEqual(len(self.ebs.list_snapshot_blocks(SnapshotId=sid,
                                                           MaxResults=10000)["Blocks"]), 1)
        # A page token of another snapshot is refused too.
        many = self.uploaded([(k, os.urandom(8) + bytes(BLOCK - 8)) for k in range(101)])
        tok = self.ebs.list_snapshot_blocks(SnapshotId=many, MaxResults=100)["NextToken"]
        self.assertEbsError("ValidationException", self.ebs.list_snapshot_blocks,
                            reason="INVALID_PAGE_TOKEN", SnapshotId=sid, NextToken=tok)
        self.assertEqual([b["BlockIndex"] for b in self.ebs.list_snapshot_blocks(
            SnapshotId=many, MaxResults=100, NextToken=tok)["Blocks"]], [100])
        self.assertEbsError("ValidationException", self.ebs.list_snapshot_blocks,
                            reason="INVALID_PAGE_TOKEN", SnapshotId=sid, NextToken="AAAA")

    def test_parent_and_encrypted(self):
        parent = self.uploaded([(0, os.urandom(BLOCK))])
        self.assertEbsError("ValidationException", self.ebs.start_snapshot, status=400,
                            VolumeSize=1, ParentSnapshotId=parent, Encrypted=False)
        self.assertEbsError("ValidationException", self.ebs.start_snapshot, status=400,
                            VolumeSize=1, ParentSnapshotId=parent, Encrypted=True)

    def test_bad_start_parameters(self):
        before = len(self.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"])
        for size in (0, 65537, -1):
            self.assertEbsError("ValidationException", self.raw.start_snapshot,
                                reason="INVALID_VOLUME_SIZE", VolumeSize=size)
        for t in (9, 4321):
            self.assertEbsError("ValidationException", self.raw.start_snapshot,
                                VolumeSize=1, Timeout=t)
        self.assertEbsError("ValidationException", self.raw.start_snapshot, reason="INVALID_TAG",
                            VolumeSize=1, Tags=[{"Key": "aws:x", "Value": "v"}])
        self.assertEbsError("ValidationException", self.raw.start_snapshot, reason="INVALID_TAG",
                            VolumeSize=1, Tags=[{"Key": "k", "Value": "1"},
                                                {"Key": "k", "Value": "2"}])
        self.assertEbsError("ValidationException", self.raw.start_snapshot,
                            VolumeSize=1, Description="x" * 256)
        self.assertEbsError("ValidationException", self.raw.start_snapshot,
                            reason="INVALID_SNAPSHOT_ID", VolumeSize=1, ParentSnapshotId="snap-x")
        self.assertEbsError("ValidationException", self.raw.start_snapshot,
                            VolumeSize=1, Encrypted=True)
        self.assertEbsError("ValidationException", self.raw.start_snapshot,
                            reason="INVALID_CUSTOMER_KEY", VolumeSize=1, KmsKeyArn="arn:aws:kms:x")
        # None of them made a snapshot.
        self.assertEqual(len(self.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]),
                         before)

    def test_wrong_changed_blocks_count(self):
        sid = self.start()
        blocks = [(0, os.urandom(BLOCK)), (7, os.urandom(BLOCK))]
        for k, d in blocks:
            self.put(sid, k, d)
        self.assertEbsError("ValidationException", self.ebs.complete_snapshot, status=400,
                            SnapshotId=sid, ChangedBlocksCount=3)
        self.assertEqual(self.ec2.describe_snapshots(
            SnapshotIds=[sid])["Snapshots"][0]["State"], "pending")
        self.assertEqual(self.complete(sid, blocks)["Status"], "completed")

    def test_wrong_aggregate_checksum(self):
        sid = self.start()
        blocks = [(0, os.urandom(BLOCK)), (7, os.urandom(BLOCK))]
        for k, d in blocks:
            self.put(sid, k, d)
        wrong = linear([hashlib.sha256(d).digest() for _, d in reversed(blocks)])
        self.assertEbsError("ValidationException", self.ebs.complete_snapshot, status=400,
                            SnapshotId=sid, ChangedBlocksCount=2, Checksum=wrong,
                            ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
        self.assertEqual(self.ec2.describe_snapshots(
            SnapshotIds=[sid])["Snapshots"][0]["State"], "pending")
        self.assertEqual(self.complete(sid, blocks)["Status"], "completed")

    def test_signed_for_ec2(self):
        # An EBS request signed for service ec2 is refused.
        c = boto3.client("ebs", region_name="us-east-1", endpoint_url=ENDPOINT,
                         aws_access_key_id=self.keys[0], aws_secret_access_key=self.keys[1],
                         config=Config(retries={"max_attempts": 1, "mode": "standard"}))
        c.meta.events.register("before-sign.ebs.*", _sign_as_ec2)
        self.assertEbsError("AccessDeniedException", c.start_snapshot, status=403, VolumeSize=1)

    def test_ec2_signed_for_ebs(self):
        c = boto3.client("ec2", region_name="us-east-1", endpoint_url=ENDPOINT,
                         aws_access_key_id=self.keys[0], aws_secret_access_key=self.keys[1],
                         config=Config(retries={"max_attempts": 1, "mode": "standard"}))
        c.meta.events.register("before-sign.ec2.*", _sign_as_ebs)
        self.assertEbsError("AuthFailure", c.describe_snapshots)


def raw_request(keys, method, path, body, service, headers):
    """Send a request signed with botocore's SigV4 as given (headers
    included), then return (status, headers, body)."""
    url = urllib.parse.urlsplit(ENDPOINT)
    req = AWSRequest(method=method, url=ENDPOINT + path, data=body, headers=dict(headers))
    SigV4Auth(Credentials(keys[0], keys[1]), service, "us-east-1").add_auth(req)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=dict(req.headers))
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


class Cli(Base):
    """The aws CLI's `aws ebs` against the same endpoint."""

    def aws(self, *args):
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.keys[0],
                   AWS_SECRET_ACCESS_KEY=self.keys[1], AWS_DEFAULT_REGION="us-east-1",
                   AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null",
                   AWS_MAX_ATTEMPTS="1")
        return subprocess.run([sys.executable, "-m", "awscli", "--endpoint-url", ENDPOINT,
                               "--output", "json", *args], env=env, capture_output=True,
                              text=True, timeout=60)

    def test_upload_with_the_cli(self):
        p = self.aws("ebs", "start-snapshot", "--volume-size", "1", "--description", "cli")
        self.assertEqual(p.returncode, 0, p.stderr)
        sid = json.loads(p.stdout)["SnapshotId"]
        data = os.urandom(BLOCK)
        path = os.path.join(_tmp.name, "cli-block")
        with open(path, "wb") as f:
            f.write(data)
        p = self.aws("ebs", "put-snapshot-block", "--snapshot-id", sid, "--block-index", "4",
                     "--block-data", path, "--data-length", str(BLOCK),
                     "--checksum", b64sha(data), "--checksum-algorithm", "SHA256")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["Checksum"], b64sha(data))
        p = self.aws("ebs", "complete-snapshot", "--snapshot-id", sid,
                     "--changed-blocks-count", "1")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["Status"], "completed")
        p = self.aws("ebs", "list-snapshot-blocks", "--snapshot-id", sid)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([b["BlockIndex"] for b in json.loads(p.stdout)["Blocks"]], [4])
        # A refusal exits 255 and names the error.
        p = self.aws("ebs", "complete-snapshot", "--snapshot-id", "snap-0123456789abcdef0",
                     "--changed-blocks-count", "0")
        self.assertEqual(p.returncode, 255)
        self.assertIn("ResourceNotFoundException", p.stderr)


class Signing(Base):
    def test_unsigned_payload_only_for_blocks(self):
        # EC2 never takes UNSIGNED-PAYLOAD.
        status, headers, _ = raw_request(
            self.keys, "POST", "/", "Action=DescribeRegions&Version=2016-11-15", "ec2",
            {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
             "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
        self.assertEqual(status, 401)
        # Nor does StartSnapshot: its JSON body would be unprotected.
        status, headers, _ = raw_request(
            self.keys, "POST", "/snapshots", json.dumps({"VolumeSize": 1}), "ebs",
            {"Content-Type": "application/json", "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
        self.assertEqual(status, 403)
        self.assertEqual(headers.get("x-amzn-ErrorType"), "AccessDeniedException")
        # A body that is not the one X-Amz-Content-SHA256 names is refused.
        signed = json.dumps({"VolumeSize": 1})
        status, _, _ = raw_request(
            self.keys, "POST", "/snapshots", json.dumps({"VolumeSize": 2}), "ebs",
            {"Content-Type": "application/json",
             "X-Amz-Content-SHA256": hashlib.sha256(signed.encode()).hexdigest()})
        self.assertEqual(status, 403)
        # The same request with its own hash is fine.
        status, _, body = raw_request(
            self.keys, "POST", "/snapshots", signed, "ebs",
            {"Content-Type": "application/json",
             "X-Amz-Content-SHA256": hashlib.sha256(signed.encode()).hexdigest()})
        self.assertEqual(status, 201, body)
        self.assertEqual(json.loads(body)["Status"], "pending")

    def test_malformed_json(self):
        for body in ("{", "[]", '{"VolumeSize": 1, "VolumeSize": 2}', '{"VolumeSize": 1.5}',
                     '{"VolumeSize": 1, "Bogus": 1}', '{"VolumeSize": "1"}'):
            status, headers, out = raw_request(self.keys, "POST", "/snapshots", body, "ebs",
                                               {"Content-Type": "application/json"})
            self.assertEqual(status, 400, body)
            self.assertEqual(headers.get("x-amzn-ErrorType"), "ValidationException")
            self.assertIn("message", json.loads(out))

    def test_unknown_route(self):
        status, headers, _ = raw_request(self.keys, "DELETE", "/snapshots/snap-0123456789abcdef0",
                                         "", "ebs", {})
        self.assertEqual(status, 405)
        status, headers, _ = raw_request(self.keys, "GET", "/snapshots/x/y/z/w/v", "", "ebs", {})
        self.assertEqual(status, 404)


def _sign_as_ec2(request, signing_name=None, **kwargs):
    request.context.setdefault("signing", {})["signing_name"] = "ec2"


def _sign_as_ebs(request, signing_name=None, **kwargs):
    request.context.setdefault("signing", {})["signing_name"] = "ebs"


if __name__ == "__main__":
    unittest.main()
