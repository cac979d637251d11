"""An instance of the debian image under TCG, driven as a user drives EC2:
boto3 and the aws CLI against a `kiln serve` this script starts, then ssh
with the key pair to the address DescribeInstances reports.  Run by
instances-debian.sh, which builds the image and exports KILN,
KILN_DATA_DIR, KILN_TEST_DIR and KILN_TEST_IMAGE.

The tests run in order (their names are numbered) and share one instance:
one debian boot per run.  The boot times (RunInstances to the agent's
hello, to the first ssh, to cloud-init's end) are printed, not asserted."""
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import time
import unittest

from botocore.exceptions import ClientError

from kiln_serve import TDIR, WAIT, Serve, ServeCase, agent, console, describe

IMAGE = os.environ["KILN_TEST_IMAGE"]
MARKER = "kiln-debian-marker-" + secrets.token_hex(6)
USER_DATA = """#cloud-config
write_files:
  - path: /etc/kiln-user-data
    content: "written by cloud-init from the user data\\n"
    permissions: "0644"
runcmd:
  - echo "%s ran as $(id -un)"
""" % MARKER
KEY = os.path.join(TDIR, "key")
KNOWN_HOSTS = os.path.join(TDIR, "known_hosts")

# IMDSv2 from inside the guest: the image has no curl, so python3 (which
# cloud-init brings) does what `curl -X PUT .../api/token` then
# `curl -H X-aws-ec2-metadata-token: ...` would.
IMDS_V2 = r"""
import urllib.request as u
t = u.urlopen(u.Request("http://169.254.169.254/latest/api/token", method="PUT",
    headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}), timeout=10).read().decode()
def get(p):
    return u.urlopen(u.Request("http://169.254.169.254/latest/" + p,
        headers={"X-aws-ec2-metadata-token": t}), timeout=10).read().decode()
print(get("meta-data/instance-id"))
print(get("meta-data/public-keys/0/openssh-key").strip())
"""

SERVE = Serve()
aws = SERVE.aws


def ssh_once(addr, *cmd, timeout=120):
    """ssh as admin with the key pair's key; (status, stdout, stderr)."""
    argv = ["ssh", "-i", KEY, "-p", "22", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=" + KNOWN_HOSTS, "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=30", "admin@" + addr,
            " ".join(shlex.quote(c) for c in cmd)]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return 255, "", "ssh timed out: %s" % e
    return r.returncode, r.stdout, r.stderr


def guest_ssh(addr, *cmd):
    """A command over ssh; a connection-level failure (status 255: refused,
    reset or timed out on this loaded machine) is tried again, the
    command's own status is not."""
    for _ in range(6):
        rc, out, err = ssh_once(addr, *cmd)
        if rc != 255:
            break
        time.sleep(5)
    if rc != 0:
        raise AssertionError("ssh %s: status %d: %s" % (cmd, rc, err))
    return out


class DebianInstance(ServeCase):
    SERVE = SERVE
    iid = None
    addr = None
    volume = None
    group = None
    t0 = None
    times = {}

    def need(self, *attrs):
        for a in attrs:
            if getattr(DebianInstance, a) is None:
                self.skipTest("an earlier step failed")

    def test_1_key_pair_and_group(self):
        ec2 = self.ec2
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kiln-test-key",
                        "-f", KEY], check=True)
        # ImportKeyPair through the aws CLI, as a user would
        kp = aws("import-key-pair", "--key-name", "debian-test",
                 "--public-key-material", "fileb://" + KEY + ".pub")
        self.assertEqual(kp["KeyName"], "debian-test")
        fp = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", KEY + ".pub"],
                            capture_output=True, text=True, check=True).stdout.split()[1]
        self.assertEqual(kp["KeyFingerprint"].rstrip("="), fp[len("SHA256:"):])
        d = ec2.describe_key_pairs(KeyNames=["debian-test"])["KeyPairs"]
        self.assertEqual([k["KeyFingerprint"] for k in d], [kp["KeyFingerprint"]])
        g = ec2.create_security_group(GroupName="debian-ssh", Description="ssh from anywhere")
        ec2.authorize_security_group_ingress(
            GroupId=g["GroupId"], IpPermissions=[{
                "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        sg = ec2.describe_security_groups(GroupIds=[g["GroupId"]])["SecurityGroups"][0]
        perms = [(p["IpProtocol"], p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]])
                 for p in sg["IpPermissions"]]
        self.assertEqual(perms, [("tcp", 22, 22, ["0.0.0.0/0"])])
        DebianInstance.group = g["GroupId"]

    def test_2_run(self):
        self.need("group")
        ec2 = self.ec2
        DebianInstance.t0 = time.monotonic()
        r = ec2.run_instances(
            ImageId=IMAGE, MinCount=1, MaxCount=1, InstanceType="t3.micro",
            KeyName="debian-test", SecurityGroupIds=[self.group], UserData=USER_DATA,
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "debian-test"}]},
                {"ResourceType": "volume", "Tags": [{"Key": "role", "Value": "root"}]}])
        inst = r["Instances"][0]
        DebianInstance.iid = iid = inst["InstanceId"]
        self.assertEqual(inst["ImageId"], IMAGE)
        self.assertEqual(inst["InstanceType"], "t3.micro")
        self.assertEqual(inst["KeyName"], "debian-test")
        self.assertEqual([g["GroupId"] for g in inst["SecurityGroups"]], [self.group])
        DebianInstance.volume = inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
        ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig=WAIT)
        rs = ec2.describe_instances(Filters=[{"Name": "tag:Name",
                                              "Values": ["debian-test"]}])["Reservations"]
        self.assertEqual([i["InstanceId"] for r in rs for i in r["Instances"]], [iid])
        vol = ec2.describe_volumes(VolumeIds=[self.volume])["Volumes"][0]
        self.assertEqual(vol["Tags"], [{"Key": "role", "Value": "root"}])
        self.assertEqual(vol["Attachments"][0]["InstanceId"], iid)
        inst = describe(ec2, iid)
        self.assertRegex(inst["PublicIpAddress"], r"^127\.100\.\d+\.\d+$")
        # the address a user reads with the aws CLI, where ssh goes
        cli = aws("describe-instances", "--instance-ids", iid)["Reservations"][0]["Instances"][0]
        self.assertEqual(cli["State"]["Name"], "running")
        self.assertEqual(cli["PublicIpAddress"], inst["PublicIpAddress"])
        DebianInstance.addr = cli["PublicIpAddress"]

    def test_3_boot_and_ssh(self):
        self.need("addr")
        iid, addr = self.iid, self.addr
        hello = agent(iid, "hello", timeout=900)
        self.times["hello"] = time.monotonic() - self.t0
        self.assertRegex(hello.strip(), r"^kiln-agent 1 on Linux .* x86_64$")
        self.assertIn("VERSION_CODENAME=bookworm\n", agent(iid, "exec", "cat", "/etc/os-release"))
        # sshd answers once cloud-init made the host keys and the key
        # pair's key is installed; a boot under TCG takes a minute or two
        deadline = time.monotonic() + 900
        while True:
            rc, out, err = ssh_once(addr, "true")
            if rc == 0:
                break
            if time.monotonic() > deadline:
                self.fail("no ssh as admin@%s: %s\n%s" % (addr, err, console(self.ec2, iid)[-3000:]))
            time.sleep(5)
        self.times["ssh"] = time.monotonic() - self.t0
        self.assertEqual(guest_ssh(addr, "id", "-un"), "admin\n")
        self.assertEqual(guest_ssh(addr, "sudo", "-n", "id", "-u"), "0\n")

    def test_4_cloud_init(self):
        self.need("addr")
        ec2, iid, addr = self.ec2, self.iid, self.addr
        deadline = time.monotonic() + 900
        while True:
            out = console(ec2, iid)
            if re.search(r"Cloud-init v\. .* finished at", out):
                break
            if time.monotonic() > deadline:
                self.fail("cloud-init did not finish:\n" + out[-3000:])
            time.sleep(2)
        self.times["cloud-init"] = time.monotonic() - self.t0
        # the runcmd's marker, in GetConsoleOutput
        self.assertIn(MARKER + " ran as root", out)
        status = guest_ssh(addr, "cloud-init", "status", "--long")
        self.assertRegex(status, r"(?m)^status: done$")
        self.assertIn("DataSourceEc2", status)
        # every stage's errors, and the datasource (Ec2Local: the EC2
        # datasource's first stage, before the network is up, as on EC2)
        result = json.loads(agent(iid, "exec", "cat", "/run/cloud-init/result.json"))["v1"]
        self.assertTrue(result["datasource"].startswith("DataSourceEc2"), result)
        self.assertEqual(result["errors"], [], result)
        self.assertEqual(guest_ssh(addr, "cat", "/etc/kiln-user-data"),
                         "written by cloud-init from the user data\n")
        # the instance id cloud-init took is RunInstances' id, and the
        # metadata service says so over IMDSv2
        self.assertEqual(guest_ssh(addr, "cat", "/var/lib/cloud/data/instance-id").strip(), iid)
        md = guest_ssh(addr, "python3", "-c", IMDS_V2).splitlines()
        with open(KEY + ".pub") as f:
            ours = f.read().split()[:2]
        self.assertEqual(md[0], iid)
        self.assertEqual(md[1].split()[:2], ours)
        # the authorized key is the key pair's, and only it
        keys = [ln.split()[:2] for ln in
                guest_ssh(addr, "cat", ".ssh/authorized_keys").splitlines()
                if ln.strip() and not ln.startswith("#")]
        self.assertEqual(keys, [ours])

    def test_5_nothing_baked(self):
        """The host keys are this boot's (made by cloud-init, printed on
        the console, the ones ssh met), machine-id is set, no account has
        a password; systemd's status lines are on the console."""
        self.need("addr")
        ec2, iid, addr = self.ec2, self.iid, self.addr
        hostkeys = agent(iid, "exec", "sh", "-c", "ls /etc/ssh/ssh_host_*_key.pub")
        self.assertIn("ed25519", hostkeys)
        out = console(ec2, iid)
        m = re.search(r"-----BEGIN SSH HOST KEY KEYS-----\s*(.*?)-----END SSH HOST KEY KEYS-----",
                      out, re.S)
        self.assertIsNotNone(m, "no host keys printed on the console")
        printed = {tuple(ln.split()[:2]) for ln in m.group(1).splitlines() if ln.strip()}
        with open(KNOWN_HOSTS) as f:
            met = {tuple(ln.split()[1:3]) for ln in f if ln.strip()}
        self.assertTrue(met and met <= printed, (met, printed))
        self.assertIn("ip-169-254-0-15", agent(iid, "exec", "cat", "/etc/hosts"))
        self.assertRegex(agent(iid, "exec", "cat", "/etc/machine-id"), r"^[0-9a-f]{32}\n$")
        self.assertEqual(agent(iid, "exec", "awk", "-F:", "$2 !~ /^[!*]/ { print $1 }",
                               "/etc/shadow"), "")
        # systemd logs to the serial console.  Checked on basic.target: once
        # serial-getty@ttyS0 runs (it may start before multi-user.target),
        # systemd prints no more status lines there (seen under load).
        self.assertRegex(out, r"Reached target.*Basic System")

    def test_6_stop(self):
        """StopInstances: ACPI power-off, systemd shuts down cleanly (no
        QMP quit after the 60 s grace)."""
        self.need("iid")
        ec2, iid = self.ec2, self.iid
        ch = ec2.stop_instances(InstanceIds=[iid])["StoppingInstances"][0]
        self.assertEqual(ch["PreviousState"]["Name"], "running")
        ec2.get_waiter("instance_stopped").wait(InstanceIds=[iid], WaiterConfig=WAIT)
        inst = describe(ec2, iid)
        self.assertEqual(inst["StateReason"]["Code"], "Client.UserInitiatedShutdown")
        # systemd's last words (systemd-shutdown, after every unit stopped)
        # and the kernel's power-off, after cloud-init's end
        out = console(ec2, iid)
        done = out.rfind("Cloud-init v. ")
        self.assertGreaterEqual(done, 0, out[-3000:])
        self.assertIn("systemd-shutdown[1]: Syncing filesystems and block devices", out[done:])
        self.assertIn("reboot: Power down", out[done:])
        with open(os.path.join(TDIR, "serve.log")) as f:
            self.assertNotIn("instance %s: quitting QEMU" % iid, f.read())

    def test_7_terminate(self):
        self.need("iid")
        ec2, iid = self.ec2, self.iid
        ch = ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"][0]
        self.assertEqual(ch["PreviousState"]["Name"], "stopped")
        ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig=WAIT)
        with self.assertRaises(ClientError) as cm:
            ec2.describe_volumes(VolumeIds=[self.volume])
        self.assertEqual(cm.exception.response["Error"]["Code"], "InvalidVolume.NotFound")
        self.assertIn("reboot: Power down", console(ec2, iid))


def main():
    r = unittest.main(argv=sys.argv, exit=False).result
    t = DebianInstance.times
    print("debian instance under TCG (t3.micro): RunInstances to agent hello %s s, ssh %s s, "
          "cloud-init finished %s s" % tuple(
              "%.1f" % t[k] if k in t else "-" for k in ("hello", "ssh", "cloud-init")),
          file=sys.stderr)
    sys.exit(0 if r.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
