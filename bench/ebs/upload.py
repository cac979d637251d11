#!/usr/bin/env python3
"""Upload throughput of the EBS direct API against a running `kiln serve`:
StartSnapshot, PutSnapshotBlock for N MiB of blocks with T client threads
(as coldsnap does), CompleteSnapshot; prints blocks/s, MiB/s and the time
CompleteSnapshot takes.  Not a test.

    bench/ebs/upload.py --endpoint http://127.0.0.1:8773 --data-dir DATA \\
        [--mib 256] [--threads 8] [--kind random|ext4]

`--kind random` sends incompressible, unique blocks (the worst case for the
store); the credentials are DATA/credentials (the default account)."""
import argparse
import base64
import configparser
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

B = 512 * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()

    cp = configparser.ConfigParser()
    cp.read(os.path.join(args.data_dir, "credentials"))
    keys = cp["default"]
    local = __import__("threading").local()

    def client():
        if not hasattr(local, "c"):
            local.c = boto3.client("ebs", region_name="us-east-1", endpoint_url=args.endpoint,
                                   aws_access_key_id=keys["aws_access_key_id"],
                                   aws_secret_access_key=keys["aws_secret_access_key"],
                                   config=Config(retries={"max_attempts": 1},
                                                 max_pool_connections=args.threads))
        return local.c

    n = args.mib * 1024 * 1024 // B
    blocks = [os.urandom(B) for _ in range(n)]
    sums = [base64.b64encode(hashlib.sha256(b).digest()).decode() for b in blocks]
    size_gib = max(1, (n * B + (1 << 30) - 1) >> 30)
    sid = client().start_snapshot(VolumeSize=size_gib)["SnapshotId"]

    def put(k):
        client().put_snapshot_block(SnapshotId=sid, BlockIndex=k, BlockData=blocks[k],
                                    DataLength=B, Checksum=sums[k], ChecksumAlgorithm="SHA256")

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        list(pool.map(put, range(n)))
    t1 = time.monotonic()
    r = client().complete_snapshot(SnapshotId=sid, ChangedBlocksCount=n)
    t2 = time.monotonic()
    assert r["Status"] == "completed", r
    print("%s: %d blocks (%d MiB), %d threads" % (sid, n, args.mib, args.threads))
    print("PutSnapshotBlock: %.1f s, %.0f blocks/s, %.1f MiB/s" %
          (t1 - t0, n / (t1 - t0), args.mib / (t1 - t0)))
    print("CompleteSnapshot: %.1f s (%.1f MiB/s)" % (t2 - t1, args.mib / (t2 - t1)))


if __name__ == "__main__":
    main()
