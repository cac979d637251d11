#!/usr/bin/env python3
"""bench/boot/run-instances.py [RUNS]: RunInstances to the agent's hello
under TCG (issue 5, "Benchmarks"; docs/benchmarks.md, "Boot through
RunInstances").

A `kiln serve` in a fresh data directory, the base image built into it
(KILN_BOOT_IMAGE: debian or tiny; default debian when it builds here), and
boto3 against it.  Each case launches one t3.nano instance (2 vCPU, 512 MiB)
with a root volume of 2 or 20 GiB (BlockDeviceMappings VolumeSize) and
waits for DIR/boot-stats, which the instance manager writes at the agent's
hello (docs/operations.md):

  cold           no boot profile (the snapshot's profile removed first):
                 this boot records it
  cold+profile   the profile recorded by the cold boot, prefetched
  1ms+profile    the same, kiln serve started with KILN_FETCH_DELAY_US=1000
                 (every chunk fetch waits 1 ms, a remote store)
  floor          boot-floor: the same kernel, initrd and QEMU command line,
                 2 vCPU and 512 MiB, over the snapshot exported to a local
                 raw file

Time: from the RunInstances call (taken just before it) to the hello's
wall-clock time in boot-stats (hello_unix); for the floor, from QEMU's
launch to `kiln vm agent hello`.  Fetched and read bytes are the root
volume's counters at the hello ("guest" leaves out the kernel and initrd
kiln copies out first); "chunks fetched by reads" are chunks a read had to
fetch itself rather than find prefetched.

Then "CreateImage after writing 50 MiB": an instance of each size, the
guest writes 50 MiB (dd, fsync) through the agent, and CreateImage
(NoReboot) is timed until the image is available; stored bytes are the
growth of the store directory.

$KILN is the kiln binary (default build/src/cmd/kiln; BUILD=DIR picks the
build directory), $BOOT_FLOOR the boot-floor helper.  Output: Markdown
tables on stdout; the work directory is kept with KEEP=1.  Exit 77 when a
tool is missing."""
import configparser
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

try:
    import boto3
    from botocore.config import Config
except ImportError:
    print("bench/boot: boto3 is missing (tools/deps.txt)", file=sys.stderr)
    sys.exit(77)

REPO = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("BUILD", "build")
KILN = os.path.realpath(os.environ.get("KILN", os.path.join(REPO, BUILD, "src/cmd/kiln")))
BOOT_FLOOR = os.environ.get("BOOT_FLOOR",
                            os.path.join(os.path.dirname(KILN), "../../bench/boot/boot-floor"))
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 1
REGION = "us-east-1"
TYPE, VCPUS, MEMORY = "t3.nano", 2, 512
TIMEOUT = 1800

for tool in ("qemu-system-x86_64", "dpkg-deb", "mkfs.ext4"):
    if not shutil.which(tool):
        print("bench/boot: %s is missing (tools/deps.txt)" % tool, file=sys.stderr)
        sys.exit(77)
for f in (KILN, BOOT_FLOOR):
    if not os.access(f, os.X_OK):
        print("bench/boot: no %s" % f, file=sys.stderr)
        sys.exit(77)

W = tempfile.mkdtemp(prefix="kiln-ri-bench.", dir=os.environ.get("TMPDIR", "/var/tmp"))
DATA = os.path.join(W, "data")
os.environ.update(KILN_DATA_DIR=DATA, KILN_ACCEL="tcg")
os.environ.pop("KILN_FETCH_DELAY_US", None)
RDIR = os.path.join(DATA, "regions", REGION)


def log(msg):
    print("bench/boot: " + msg, file=sys.stderr, flush=True)


def kiln(*args):
    return subprocess.run([KILN] + list(args), check=True, capture_output=True,
                          text=True).stdout


class Serve:
    def __init__(self):
        self.proc = None
        self.port = None

    def start(self, delay_us=0):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        env = dict(os.environ)
        if delay_us:
            env["KILN_FETCH_DELAY_US"] = str(delay_us)
        out = open(os.path.join(W, "serve.log"), "a")
        self.proc = subprocess.Popen([KILN, "serve", "--data-dir", DATA, "--listen",
                                      "127.0.0.1:%d" % self.port], stdout=out, stderr=out,
                                     env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                if os.path.exists(os.path.join(DATA, "credentials")):
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("kiln serve did not start (%s/serve.log)" % W)
            time.sleep(0.1)
        c = configparser.ConfigParser()
        c.read(os.path.join(DATA, "credentials"))
        self.ec2 = boto3.client(
            "ec2", region_name=REGION, endpoint_url="http://127.0.0.1:%d" % self.port,
            aws_access_key_id=c["default"]["aws_access_key_id"],
            aws_secret_access_key=c["default"]["aws_secret_access_key"],
            config=Config(retries={"max_attempts": 2, "mode": "standard"}))

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=600)
            self.proc = None


SERVE = Serve()


def cleanup():
    SERVE.stop()
    if os.environ.get("KEEP") == "1":
        log("kept " + W)
    else:
        shutil.rmtree(W, ignore_errors=True)


def build_image():
    tiny_cache = os.environ.get("KILN_VM_CACHE", os.path.expanduser("~/.cache/kiln-test-debs"))
    names = [os.environ["KILN_BOOT_IMAGE"]] if os.environ.get("KILN_BOOT_IMAGE") \
        else ["debian", "tiny"]
    for name in names:
        cache = tiny_cache if name == "tiny" else \
            os.environ.get("KILN_BOOT_CACHE", os.path.expanduser("~/.cache/kiln-bench-" + name))
        os.makedirs(cache, exist_ok=True)
        r = subprocess.run([KILN, "base-image", "build", name, "--cache-dir", cache],
                           capture_output=True, text=True)
        if r.returncode == 0:
            ami, snap = r.stdout.split()[:2]
            return name, ami, snap
        log("the %s image did not build: %s" % (name, r.stderr.strip().splitlines()[-1:]))
    sys.exit(1)


def boot_stats(iid):
    path = os.path.join(RDIR, "instances", iid, "boot-stats")
    deadline = time.monotonic() + TIMEOUT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError("%s: no hello within %d s" % (iid, TIMEOUT))
        time.sleep(0.05)
    with open(path) as f:
        return {k: float(v) for k, v in (l.strip().split("=", 1) for l in f)}


def launch(size):
    """RunInstances; returns (instance id, seconds to hello, boot-stats)."""
    t0 = time.time()
    r = SERVE.ec2.run_instances(
        ImageId=AMI, MinCount=1, MaxCount=1, InstanceType=TYPE,
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                              "Ebs": {"VolumeSize": size, "DeleteOnTermination": True}}])
    iid = r["Instances"][0]["InstanceId"]
    st = boot_stats(iid)
    return iid, st["hello_unix"] - t0, st


def terminate(iid):
    SERVE.ec2.terminate_instances(InstanceIds=[iid])
    SERVE.ec2.get_waiter("instance_terminated").wait(
        InstanceIds=[iid], WaiterConfig={"Delay": 1, "MaxAttempts": 600})


RESULTS = []  # (case, size, seconds, stats or None)


def case(name, size):
    iid, secs, st = launch(size)
    log("%s %d GiB: %.2f s, %d chunks fetched, %d prefetched" %
        (name, size, secs, st["chunks_fetched"], st["prefetch_chunks"]))
    RESULTS.append((name, size, secs, st))
    global KERNEL_DIR
    if KERNEL_DIR is None:
        KERNEL_DIR = os.path.join(W, "kernel")
        os.makedirs(KERNEL_DIR)
        idir = os.path.join(RDIR, "instances", iid)
        for f in ("vmlinuz", "initrd.img"):
            if os.path.exists(os.path.join(idir, f)):
                shutil.copy(os.path.join(idir, f), KERNEL_DIR)
    terminate(iid)


def floor(run):
    d = os.path.join(W, "floor-%d" % run)
    os.makedirs(d)
    initrd = os.path.join(KERNEL_DIR, "initrd.img")
    t0 = time.time()
    q = subprocess.Popen([BOOT_FLOOR, d, os.path.join(KERNEL_DIR, "vmlinuz"),
                          initrd if os.path.exists(initrd) else "-", FLOOR_RAW, KILN, "tcg",
                          str(VCPUS), str(MEMORY)],
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "qemu.log"), "w"))
    try:
        subprocess.run([KILN, "vm", "agent", os.path.join(d, "agent.sock"), "hello",
                        "--timeout", str(TIMEOUT)], check=True, capture_output=True)
        secs = time.time() - t0
    finally:
        subprocess.run([KILN, "vm", "qmp", os.path.join(d, "qmp.sock"), "quit"],
                       capture_output=True)
        try:
            q.wait(timeout=30)
        except subprocess.TimeoutExpired:
            q.kill()
            q.wait()
    log("floor: %.2f s" % secs)
    RESULTS.append(("floor", 0, secs, None))


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def du(path):
    return sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(path) for f in fs)


def median(v):
    v = sorted(v)
    return v[(len(v) - 1) // 2]


def table():
    print("RunInstances to the agent's hello, image %s (snapshot %s GiB), TCG, %s, %d run(s); "
          "machine: %d vCPU, %s UTC, load average %s at the start, %s at the end" %
          (IMAGE, SNAP_GIB, TYPE, RUNS, os.cpu_count(), time.strftime("%Y-%m-%d %H:%M",
                                                                      time.gmtime(START)),
           LOAD0, loadavg()))
    print()
    print("| case | root volume | hello s (min / med) | x floor (med) | fetched MiB | "
          "read MiB (all / guest) | fetched / read | prefetch hits / prefetched | "
          "chunks fetched by reads |")
    print("|---|---|---|---|---|---|---|---|---|")
    fl = median([s for n, _, s, _ in RESULTS if n == "floor"] or [0])
    for name, size in (("floor", 0), ("cold", 2), ("cold", 20), ("cold+profile", 2),
                       ("cold+profile", 20), ("1ms+profile", 2), ("1ms+profile", 20)):
        rows = [(s, st) for n, z, s, st in RESULTS if n == name and z == size]
        if not rows:
            continue
        secs = [s for s, _ in rows]
        ratio = "%.2f" % (median(secs) / fl) if fl else "-"
        st = rows[-1][1]
        if st is None:
            print("| floor | local raw | %.2f / %.2f | 1.00 | - | - | - | - | - |" %
                  (min(secs), median(secs)))
            continue
        mib = 1048576.0
        print("| %s | %d GiB | %.2f / %.2f | %s | %.1f | %.1f / %.1f | %.2f | %d / %d | %d |" %
              (name, size, min(secs), median(secs), ratio, st["bytes_fetched"] / mib,
               st["bytes_read"] / mib, (st["bytes_read"] - st["boot_files_read"]) / mib,
               st["bytes_fetched"] / st["bytes_read"] if st["bytes_read"] else 0,
               st["prefetch_hits"], st["prefetch_chunks"],
               st["chunks_fetched"] - st["prefetch_chunks"]))


def create_image_after_write():
    print()
    print("| CreateImage (NoReboot) after the guest wrote 50 MiB | seconds to available | "
          "stored MB (store growth) |")
    print("|---|---|---|")
    for size in (2, 20):
        iid, _, _ = launch(size)
        sock = os.path.join(RDIR, "instances", iid, "agent.sock")
        if IMAGE == "tiny":  # tiny's file system is 64 MiB: write past it
            w = ["dd", "if=/dev/urandom", "of=/dev/vda", "bs=1M", "seek=1024", "count=50",
                 "conv=fsync"]
        else:
            w = ["dd", "if=/dev/urandom", "of=/var/tmp/bench-50m", "bs=1M", "count=50",
                 "conv=fsync"]
        subprocess.run([KILN, "vm", "agent", sock, "exec"] + w, check=True,
                       capture_output=True)
        before = du(os.path.join(RDIR, "store"))
        t0 = time.time()
        ami = SERVE.ec2.create_image(InstanceId=iid, Name="bench-write-%d" % size,
                                     NoReboot=True)["ImageId"]
        while True:
            st = SERVE.ec2.describe_images(ImageIds=[ami])["Images"][0]["State"]
            if st != "pending":
                break
            time.sleep(0.05)
        secs = time.time() - t0
        after = du(os.path.join(RDIR, "store"))
        if st != "available":
            raise RuntimeError("CreateImage of %s: %s" % (iid, st))
        print("| %d GiB root volume | %.2f | %.1f |" % (size, secs, (after - before) / 1e6),
              flush=True)
        terminate(iid)


def main():
    global IMAGE, AMI, SNAP, SNAP_GIB, KERNEL_DIR, FLOOR_RAW, START, LOAD0
    START, LOAD0 = time.time(), loadavg()
    IMAGE, AMI, SNAP = build_image()
    SNAP_GIB = [l.split()[1] for l in kiln("snapshot", "show", SNAP).splitlines()
                if l.startswith("VolumeSize")][0]
    profile = os.path.join(RDIR, "profiles", SNAP + ".profile")
    log("image %s %s, snapshot %s (%s GiB), work %s" % (IMAGE, AMI, SNAP, SNAP_GIB, W))
    KERNEL_DIR = None
    FLOOR_RAW = os.path.join(W, "floor.raw")
    kiln("-q", "snapshot", "export", SNAP, FLOOR_RAW)
    for run in range(1, RUNS + 1):
        log("run %d of %d (load %s)" % (run, RUNS, loadavg()))
        SERVE.start()
        for size in (2, 20):
            if os.path.exists(profile):
                os.unlink(profile)
            case("cold", size)
        for size in (2, 20):
            case("cold+profile", size)
        SERVE.stop()
        SERVE.start(delay_us=1000)
        for size in (2, 20):
            case("1ms+profile", size)
        SERVE.stop()
        floor(run)
    table()
    if os.environ.get("NO_CREATE_IMAGE") != "1":
        SERVE.start()
        create_image_after_write()
        SERVE.stop()


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
