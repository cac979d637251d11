"""The examples/ templates baked on the debian base image with `kiln bake`,
then launched through boto3 against a `kiln serve` on the same data
directory and checked through the agent.  Run by bake-examples.sh."""
import json
import os
import subprocess
import unittest

from kiln_serve import DATA, KILN, TDIR, WAIT, Serve, ServeCase, agent

EXAMPLES = os.path.join(os.environ.get("SRCDIR", os.path.join(os.path.dirname(__file__), "..",
                                                               "..")), "examples")
SERVE = Serve()


def bake(name):
    """kiln bake examples/NAME; the manifest."""
    manifest = os.path.join(TDIR, name + ".manifest.json")
    p = subprocess.run([KILN, "bake", "--data-dir", DATA, os.path.join(EXAMPLES, name),
                        "--manifest", manifest],
                       capture_output=True, text=True, timeout=3600,
                       env=dict(os.environ, KILN_ACCEL="tcg"), cwd=TDIR)
    print(p.stdout)
    if p.returncode != 0:
        raise AssertionError("kiln bake %s: status %d\n%s\n%s" % (name, p.returncode, p.stdout,
                                                                  p.stderr))
    with open(manifest) as f:
        m = json.load(f)["builds"][-1]
    m["images"] = {r: a["image_id"] for r, a in m["amis"].items()}
    return m


class BakeExamples(ServeCase):
    SERVE = SERVE

    def launch_and_run(self, image, *argv):
        """Launch `image`, run argv through its agent; the output."""
        ec2 = self.ec2
        iid = ec2.run_instances(ImageId=image, InstanceType="t3.small", MinCount=1,
                                MaxCount=1)["Instances"][0]["InstanceId"]
        try:
            ec2.get_waiter("instance_running").wait(InstanceIds=[iid], WaiterConfig=WAIT)
            return agent(iid, *argv, timeout=600)
        finally:
            ec2.terminate_instances(InstanceIds=[iid])
            ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig=WAIT)

    def available(self, m):
        image = m["images"]["us-east-1"]
        img = self.ec2.describe_images(ImageIds=[image])["Images"][0]
        self.assertEqual(img["State"], "available")
        return image, {t["Key"]: t["Value"] for t in img.get("Tags", [])}

    def test_hardened_base(self):
        m = bake("hardened-base.json")
        self.assertEqual({s["executor"] for s in m["steps"]}, {"offline"})
        self.assertEqual(m["instances_launched"], 1)  # the tests' instance only
        self.assertEqual(m["tests"]["passed"], m["tests"]["run"])
        self.assertGreater(m["tests"]["run"], 0)
        image, tags = self.available(m)
        self.assertEqual(tags["hardened"], "true")
        out = self.launch_and_run(image, "exec", "/bin/sh", "-c",
                                  "cat /etc/ssh/sshd_config.d/50-hardening.conf; "
                                  "readlink /etc/issue.net")
        self.assertIn("PermitRootLogin no", out)
        self.assertIn("/etc/motd", out)

    def test_web_server(self):
        m = bake("web-server.json")
        self.assertIn("agent", {s["executor"] for s in m["steps"]})
        self.assertEqual(m["tests"]["passed"], m["tests"]["run"])
        image, tags = self.available(m)
        self.assertEqual(tags["app"], "web")
        out = self.launch_and_run(image, "exec", "/bin/sh", "-c",
                                  "systemctl is-active nginx; cat /var/www/html/index.html")
        self.assertIn("active", out)
        self.assertIn("kiln", out)

    def test_packer_template(self):
        m = bake("packer-web.json")
        image, tags = self.available(m)
        self.assertEqual(tags["built_by"], "packer-template")
        out = self.launch_and_run(image, "exec", "/bin/sh", "-c",
                                  "systemctl is-active nginx; cat /etc/motd")
        self.assertIn("active", out)
        self.assertIn("baked from a Packer template", out)


if __name__ == "__main__":
    unittest.main()
