#!/usr/bin/env python3
"""load.py ENDPOINT ACCESS_KEY SECRET_KEY COUNT [SNAPSHOT_ID...]: register
COUNT images through the EC2 API with boto3, the way any client would
(RegisterImage, then CreateTags on batches of ids), against kiln or
moto_server.

Image i is named bench-<role>-<i, 5 digits> and tagged Role=<role> and
Env=prod (i % 4 != 3) or dev, where role is one of 100 families: web, db,
cache, then app003 .. app099, by i % 100.  So the benchmark's queries
(name bench-web-*, tag Role=db) each select 1% of the images: a family's
builds, as a pipeline's naming or tagging scheme would.  Its root device maps SNAPSHOT_ID[i % n] when snapshots are given
(kiln checks that the snapshot exists; moto does not need one).

Prints one line: "registered N images in S s (R/s)", plus how many calls
were retried because the server's database stayed locked (kiln answers a
write that waited longer than its busy timeout, 5 s, with an error; on a
machine whose disk is busy with other work, eight concurrent writers
each fsyncing can wait that long).  Progress goes to stderr.  Exits
non-zero on any other error, naming it."""
import concurrent.futures
import sys
import threading
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ROLES = ("web", "db", "cache") + tuple("app%03d" % k for k in range(3, 100))
TAG_BATCH = 500
THREADS = 8
RETRIES = 20
retried = 0
retried_lock = threading.Lock()


def call(fn, **kwargs):
    """fn(**kwargs), retried while the server says its database is locked."""
    global retried
    for attempt in range(RETRIES + 1):
        try:
            return fn(**kwargs)
        except ClientError as e:
            if "database is locked" not in str(e) or attempt == RETRIES:
                raise
            with retried_lock:
                retried += 1
            time.sleep(0.2 * (attempt + 1))


def role_of(i):
    return ROLES[i % len(ROLES)]


def env_of(i):
    return "dev" if i % 4 == 3 else "prod"


def main():
    if len(sys.argv) < 5:
        sys.exit("usage: load.py ENDPOINT ACCESS_KEY SECRET_KEY COUNT [SNAPSHOT_ID...]")
    endpoint, akid, secret, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    snaps = sys.argv[5:]
    local = threading.local()

    def ec2():
        if not hasattr(local, "c"):
            local.c = boto3.client(
                "ec2", region_name="us-east-1", endpoint_url=endpoint,
                aws_access_key_id=akid, aws_secret_access_key=secret,
                config=Config(retries={"max_attempts": 3, "mode": "standard"}))
        return local.c

    def register(i):
        args = dict(Name="bench-%s-%05d" % (role_of(i), i), Architecture="x86_64",
                    RootDeviceName="/dev/xvda", VirtualizationType="hvm",
                    Description="benchmark image %d" % i)
        if snaps:
            args["BlockDeviceMappings"] = [{"DeviceName": "/dev/xvda",
                                            "Ebs": {"SnapshotId": snaps[i % len(snaps)]}}]
        return i, call(ec2().register_image, **args)["ImageId"]

    t0 = time.monotonic()
    ids = [None] * count
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        for done, (i, iid) in enumerate(pool.map(register, range(count)), 1):
            ids[i] = iid
            if done % 1000 == 0:
                print("  %d images registered (%.0f s)" % (done, time.monotonic() - t0),
                      file=sys.stderr)

    groups = {}
    for i, iid in enumerate(ids):
        groups.setdefault((role_of(i), env_of(i)), []).append(iid)
    jobs = []
    for (role, env), members in groups.items():
        for k in range(0, len(members), TAG_BATCH):
            jobs.append((members[k:k + TAG_BATCH], role, env))

    def tag(job):
        members, role, env = job
        call(ec2().create_tags, Resources=members, Tags=[{"Key": "Role", "Value": role},
                                                         {"Key": "Env", "Value": env}])

    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(tag, jobs))
    s = time.monotonic() - t0
    print("registered %d images in %.1f s (%.0f/s, %d calls retried on 'database is locked')"
          % (count, s, count / s, retried))


if __name__ == "__main__":
    main()
