"""What the boto3 integration tests (instances_tiny.py, instances_debian.py)
share: a `kiln serve` the test starts, stops (SIGTERM) and kills (SIGKILL)
itself on a free port, its boto3 client and aws CLI, the instance
directory, the agent, GetConsoleOutput and DescribeInstances of one
instance, and a TestCase whose class runs one serve around its tests.

The calling shell script exports KILN, KILN_DATA_DIR and KILN_TEST_DIR;
serve's log and pid go to KILN_TEST_DIR (serve.log, serve.pid), where the
script's cleanup finds them."""
import configparser
import json
import os
import signal
import socket
import subprocess
import time
import unittest

import boto3
from botocore.config import Config

KILN = os.environ["KILN"]
DATA = os.environ["KILN_DATA_DIR"]
TDIR = os.environ["KILN_TEST_DIR"]
REGION = "us-east-1"
WAIT = {"Delay": 2, "MaxAttempts": 300}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def default_key():
    """The default account's key, from the credentials file serve writes."""
    c = configparser.ConfigParser()
    c.read(os.path.join(DATA, "credentials"))
    return c["default"]["aws_access_key_id"], c["default"]["aws_secret_access_key"]


class Serve:
    """One `kiln serve` at a time on a fixed port, under TCG; args are
    added to its command line at every start."""

    def __init__(self, args=()):
        self.port = free_port()
        self.args = list(args)
        self.proc = None

    def start(self):
        env = dict(os.environ, KILN_ACCEL="tcg")
        with open(os.path.join(TDIR, "serve.log"), "a") as log:
            self.proc = subprocess.Popen(
                [KILN, "serve", "--data-dir", DATA, "--listen", "127.0.0.1:%d" % self.port]
                + self.args,
                stdout=log, stderr=log, env=env)
        with open(os.path.join(TDIR, "serve.pid"), "w") as f:
            f.write("%d\n" % self.proc.pid)
        creds = os.path.join(DATA, "credentials")
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                if os.path.exists(creds):
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("kiln serve did not start")
            time.sleep(0.1)

    def stop(self):
        """SIGTERM; serve's exit status."""
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=300)
        self.proc = None
        return rc

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    def client(self, key=None):
        """An EC2 client signing with key, (access key id, secret), or with
        the default account's key."""
        akid, secret = key or default_key()
        return boto3.client(
            "ec2", region_name=REGION, endpoint_url=self.endpoint(),
            aws_access_key_id=akid, aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 2, "mode": "standard"}))

    def aws(self, *args):
        """`aws ec2 ARGS` as the default account; its JSON output."""
        env = dict(os.environ, AWS_SHARED_CREDENTIALS_FILE=os.path.join(DATA, "credentials"),
                   AWS_CONFIG_FILE="/dev/null", AWS_PAGER="")
        out = subprocess.run(["aws", "--region", REGION, "--endpoint-url", self.endpoint(),
                              "--output", "json", "ec2"] + list(args),
                             env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise AssertionError("aws ec2 %s: %s" % (" ".join(args), out.stderr))
        return json.loads(out.stdout) if out.stdout.strip() else {}


class ServeCase(unittest.TestCase):
    """Starts SERVE (a Serve the subclass sets) before its tests, with an
    EC2 client in ec2, and checks that SIGTERM stops it cleanly after."""

    SERVE = None

    @classmethod
    def setUpClass(cls):
        cls.SERVE.start()
        cls.ec2 = cls.SERVE.client()

    @classmethod
    def tearDownClass(cls):
        if cls.SERVE.proc:
            rc = cls.SERVE.stop()
            assert rc == 0, "kiln serve exited %d after SIGTERM" % rc


def instance_dir(iid):
    return os.path.join(DATA, "regions", REGION, "instances", iid)


def agent_run(iid, *argv, timeout=300):
    """`kiln vm agent` on the instance's agent socket; the CompletedProcess."""
    sock = os.path.join(instance_dir(iid), "agent.sock")
    return subprocess.run([KILN, "vm", "agent", sock, "--timeout", str(timeout)] + list(argv),
                          capture_output=True, text=True)


def agent(iid, *argv, timeout=300):
    """As agent_run(); its stdout, or AssertionError if it failed."""
    r = agent_run(iid, *argv, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError("agent %s: status %d: %s" % (argv, r.returncode, r.stderr))
    return r.stdout


def console(ec2, iid):
    # botocore decodes the base64 Output itself
    return ec2.get_console_output(InstanceId=iid).get("Output", "")


def describe(ec2, iid):
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
