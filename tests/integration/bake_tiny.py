"""kiln bake on the tiny image, checked through boto3 against a `kiln serve`
on the same data directory.  Run by bake-tiny.sh, which builds the image and
exports KILN, KILN_DATA_DIR, KILN_TEST_DIR and KILN_TEST_IMAGE.  The tests
run in order (numbered) and share the layer cache."""
import json
import os
import re
import signal
import subprocess
import time
import unittest

import boto3

from kiln_serve import DATA, KILN, TDIR, Serve, ServeCase, default_key, instance_dir

TAG = "kiln:bake-build"

TEMPLATE = {
    "schema": "kiln-bake/1",
    "name": "tiny-web",
    "variables": {
        "greeting": {"type": "string", "default": "hello"},
        "flavour": {"type": "string", "default": "1"},
        "token": {"type": "string", "default": "tok-Zq81-secret", "sensitive": True},
    },
    "source": {"image_filter": {"owners": ["kiln"], "filters": {"name": "kiln/images/tiny-*"},
                                "most_recent": True}},
    "build": {"instance_type": "t3.micro", "timeout": "20m"},
    "steps": [
        {"name": "motd", "type": "file", "content": "{{var `greeting`}}\n",
         "destination": "/etc/motd", "mode": "0644"},
        {"name": "appdir", "type": "mkdir", "path": "/srv/app", "mode": "0750"},
        {"name": "page", "type": "file", "source": "files/page.txt",
         "destination": "/srv/app/page.txt"},
        {"name": "tree", "type": "file", "source": "files/", "destination": "/srv/tree",
         "executor": "agent"},
        {"name": "build", "type": "shell",
         "inline": ["echo the token is {{var `token`}}", "echo built > /srv/app/built",
                    "cat /etc/motd > /srv/app/motd-copy",
                    "cat /proc/sys/kernel/random/boot_id > /srv/app/boot1"]},
        {"name": "reboot", "type": "reboot"},
        {"name": "after", "type": "shell",
         "inline": ["cat /proc/sys/kernel/random/boot_id > /srv/app/boot2"]},
        {"name": "flavour", "type": "append_line", "path": "/etc/profile",
         "line": "export FLAVOUR={{var `flavour`}}"},
        {"name": "check", "type": "shell", "phase": "validate",
         "inline": ["test -s /srv/app/built"]},
    ],
    "tests": {"steps": [{"type": "shell", "inline": [
        "test \"$(cat /srv/app/built)\" = built",
        "grep -qx hello /srv/app/motd-copy",
        "grep -q '^export FLAVOUR=' /etc/profile",
        "grep -qx 'static page' /srv/app/page.txt",
        "grep -qx 'static page' /srv/tree/page.txt",
        "! cmp -s /srv/app/boot1 /srv/app/boot2",
        "test \"$(readlink /srv/tree/sub/link)\" = ../page.txt"]}]},
    "output": {"name": "tiny-web {{timestamp}}-{{uuid}}", "tags": {"app": "web"},
               "snapshot_tags": {"app": "web"}},
    "distribution": {"regions": ["us-west-2"], "launch_permission": {"groups": ["all"]},
                     "deprecate_after": "30d"},
}

SERVE = Serve()


def write_template(name, t):
    os.makedirs(os.path.join(TDIR, "files"), exist_ok=True)
    with open(os.path.join(TDIR, "files", "page.txt"), "w") as f:
        f.write("static page\n")
    os.makedirs(os.path.join(TDIR, "files", "sub"), exist_ok=True)
    if not os.path.islink(os.path.join(TDIR, "files", "sub", "link")):
        os.symlink("../page.txt", os.path.join(TDIR, "files", "sub", "link"))
    path = os.path.join(TDIR, name)
    with open(path, "w") as f:
        json.dump(t, f, indent=1)
    return path


def bake(path, *args, check=True, append=False):
    """kiln bake; (status, stdout, stderr, this run's manifest entry or
    None), the entry with `images` (region to image id) added; with
    `append`, the manifest of the previous runs is kept and appended to."""
    manifest = os.path.join(TDIR, "manifest.json")
    if os.path.exists(manifest) and not append:
        os.unlink(manifest)
    env = dict(os.environ, KILN_ACCEL="tcg")
    p = subprocess.run([KILN, "bake", "--data-dir", DATA, path, "--manifest", manifest]
                       + list(args), capture_output=True, text=True, env=env, timeout=1800)
    if check and p.returncode != 0:
        raise AssertionError("kiln bake %s: status %d\n%s\n%s" % (path, p.returncode, p.stdout,
                                                                  p.stderr))
    m = None
    if os.path.exists(manifest):
        with open(manifest) as f:
            doc = json.load(f)
        m = doc["builds"][-1]
        assert doc["last_run_uuid"] == m["run_uuid"] == m["packer_run_uuid"]
        assert m["artifact_id"] == ",".join(
            "%s:%s" % (r, a["image_id"]) for r, a in m["amis"].items()), m
        m["images"] = {r: a["image_id"] for r, a in m["amis"].items()}
        m["n_builds"] = len(doc["builds"])
    return p.returncode, p.stdout, p.stderr, m


def read(path):
    with open(path) as f:
        return f.read()


def start_hanging_bake(name):
    """A bake whose step `hang` sleeps an hour, started in the background:
    (the process, its output file, its output so far) once the step runs."""
    t = json.loads(json.dumps(TEMPLATE))
    t["steps"].insert(5, {"name": "hang", "type": "shell", "inline": ["sleep 3600"]})
    path = write_template(name + ".json", t)
    out_path = os.path.join(TDIR, name + ".out")
    with open(out_path, "w") as out:
        p = subprocess.Popen([KILN, "bake", "--data-dir", DATA, path, "--no-cache"],
                             stdout=out, stderr=subprocess.STDOUT,
                             env=dict(os.environ, KILN_ACCEL="tcg"))
    with open(os.path.join(TDIR, "bake.pid"), "w") as f:
        f.write("%d\n" % p.pid)
    deadline = time.monotonic() + 600
    text = ""
    while "] hang (shell, agent)" not in text:
        assert p.poll() is None, text
        assert time.monotonic() < deadline, text
        time.sleep(1)
        text = read(out_path)
    return p, out_path, text


def build_id(stdout):
    m = re.search(r"build (bld-[0-9a-f]{17})", stdout)
    assert m, "no build id in:\n" + stdout
    return m.group(1)


class BakeTiny(ServeCase):
    SERVE = SERVE

    def leftovers(self, bid):
        """What still carries the build's tag: live instances, volumes,
        snapshots, images."""
        f = [{"Name": "tag:" + TAG, "Values": [bid]}]
        ec2 = self.ec2
        live = [i["InstanceId"] for r in ec2.describe_instances(Filters=f)["Reservations"]
                for i in r["Instances"] if i["State"]["Name"] != "terminated"]
        vols = [v["VolumeId"] for v in ec2.describe_volumes(Filters=f)["Volumes"]]
        snaps = [s["SnapshotId"] for s in ec2.describe_snapshots(Filters=f,
                                                                 OwnerIds=["self"])["Snapshots"]]
        imgs = [i["ImageId"] for i in ec2.describe_images(Filters=f, Owners=["self"])["Images"]]
        return live + vols + snaps + imgs

    def test_01_bad_templates(self):
        cases = [
            ({"steps": [{"type": "file", "content": "x", "destinaton": "/x"}]},
             "steps[0].destinaton: unknown key"),
            ({"steps": [{"type": "file", "content": 3, "destination": "/x"}]},
             "steps[0].content: expected a string"),
            ({"source": {"image_id": "ami-00000000000000000"}},
             "source.image_id: image 'ami-00000000000000000' does not exist"),
            ({"source": {"image_filter": {"owners": ["kiln"], "filters": {"name": "nope-*"}}}},
             "source.image_filter: no image matches"),
            ({"steps": [{"type": "file", "content": "{{var `nosuch`}}", "destination": "/x"}]},
             "nosuch"),
            ({"variables": {"a": {"type": "string", "default": "{{var `b`}}"},
                            "b": {"type": "string", "default": "{{var `a`}}"}}},
             "cycle"),
        ]
        for change, want in cases:
            t = json.loads(json.dumps(TEMPLATE))
            t.update(change)
            path = write_template("bad.json", t)
            rc, out, err, _ = bake(path, check=False)
            self.assertEqual(rc, 1, err)
            self.assertIn(want, err)
        rc, out, err, _ = bake(write_template("ok.json", TEMPLATE), "--var", "nosuch=1",
                               check=False)
        self.assertEqual(rc, 1)
        self.assertIn("nosuch", err)
        # nothing was built: no image of the template exists
        imgs = self.ec2.describe_images(Owners=["self"],
                                        Filters=[{"Name": "tag:kiln:bake-template",
                                                  "Values": ["tiny-web"]}])["Images"]
        self.assertEqual(imgs, [])

    def test_02_bake(self):
        rc, out, err, m = bake(write_template("web.json", TEMPLATE))
        for name, how in [("motd", "file, offline"), ("appdir", "mkdir, offline"),
                          ("page", "file, offline"), ("tree", "file, agent"),
                          ("build", "shell, agent"), ("reboot", "reboot, agent"),
                          ("after", "shell, agent"),
                          ("flavour", "append_line, offline")]:
            self.assertRegex(out, r"\] %s \(%s\) \.\.\. done [0-9.]+s" % (name, how))
        # the last step ran offline: validate runs in the tests' instance, no extra boot
        self.assertRegex(out, r"\[validate\] check \(shell, agent, in the tests' instance\) "
                              r"\.\.\. passed")
        self.assertNotIn("tok-Zq81-secret", out + err)
        image = m["images"]["us-east-1"]
        copy = m["images"]["us-west-2"]
        self.assertTrue(out.rstrip().endswith("us-east-1 %s\nus-west-2 %s" % (image, copy)), out)
        west = boto3.client("ec2", region_name="us-west-2", endpoint_url=self.SERVE.endpoint(),
                            aws_access_key_id=default_key()[0],
                            aws_secret_access_key=default_key()[1])
        wimg = west.describe_images(ImageIds=[copy])["Images"][0]
        self.assertEqual(wimg["State"], "available")
        self.assertTrue(wimg["Public"])
        self.assertIn("DeprecationTime", wimg)
        self.assertEqual({t["Key"]: t["Value"] for t in wimg.get("Tags", [])}.get("app"), "web")
        img = self.ec2.describe_images(ImageIds=[image])["Images"][0]
        self.assertEqual(img["State"], "available")
        tags = {t["Key"]: t["Value"] for t in img.get("Tags", [])}
        self.assertEqual(tags["app"], "web")
        self.assertEqual(tags["kiln:bake-template"], "tiny-web")
        self.assertNotIn(TAG, tags)
        self.assertEqual([s["cache"] for s in m["steps"]], ["miss"] * 8)
        self.assertEqual(m["tests"], {"status": "passed", "run": 1, "passed": 1,
                                      "cached": False})
        self.assertTrue(all(len(s["key"]) == 64 for s in m["steps"]))
        self.assertEqual(m["instances_launched"], 2)  # the build VM, the test VM
        # the step log has the output, the secret masked
        bid = m["build_id"]
        log = read(os.path.join(DATA, "bake-logs", bid, "05-build.log"))
        self.assertIn("the token is <sensitive>", log)
        self.assertEqual(self.leftovers(bid), [])
        # the image launches and has what the steps put there (the tests said so)
        snap = img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
        st = {t["Key"]: t["Value"] for t in self.ec2.describe_snapshots(
            SnapshotIds=[snap])["Snapshots"][0].get("Tags", [])}
        self.assertEqual(st.get("app"), "web")

    def test_03_no_change(self):
        rc, out, err, m = bake(write_template("web.json", TEMPLATE), append=True)
        self.assertEqual(m["n_builds"], 2)  # appended to test_02's, as Packer's
        self.assertIn("[validate] passed before on this very state", out)
        self.assertEqual([s["cache"] for s in m["steps"]], ["hit"] * 8)
        self.assertEqual(m["instances_launched"], 0)
        self.assertTrue(m["tests"]["cached"])
        self.assertEqual(self.ec2.describe_images(ImageIds=[m["images"]["us-east-1"]])
                         ["Images"][0]["State"], "available")

    def test_04_last_step_changed(self):
        rc, out, err, m = bake(write_template("web.json", TEMPLATE), "--var", "flavour=2")
        self.assertEqual([s["cache"] for s in m["steps"]], ["hit"] * 7 + ["miss"])
        self.assertEqual(m["instances_launched"], 1)  # only the tests' VM
        self.assertEqual(m["tests"]["run"], 1)
        # a step changed: it and the ones after it run again
        t = json.loads(json.dumps(TEMPLATE))
        t["steps"][2]["content"] = "static page\n"
        del t["steps"][2]["source"]
        rc, out, err, m = bake(write_template("web2.json", t), "--var", "flavour=2")
        self.assertEqual([s["cache"] for s in m["steps"]], ["hit"] * 2 + ["miss"] * 6)

    def test_05_failing_step_leaves_nothing(self):
        t = json.loads(json.dumps(TEMPLATE))
        t["steps"].insert(5, {"name": "broken", "type": "shell",
                              "inline": ["echo about to fail >&2", "exit 3"]})
        rc, out, err, m = bake(write_template("fail.json", t), "--no-cache", check=False)
        self.assertEqual(rc, 1, out + err)
        self.assertIn("steps[5] (broken): inline exited with status 3", err)
        self.assertIn("about to fail", err)
        bid = build_id(out)
        self.assertEqual(self.leftovers(bid), [])

    def test_06_kill9_then_serve_cleans_up(self):
        p, out_path, text = start_hanging_bake("hang")
        bid = build_id(text)
        # the build instance runs the hanging step
        f = [{"Name": "tag:" + TAG, "Values": [bid]},
             {"Name": "instance-state-name", "Values": ["running"]}]
        deadline = time.monotonic() + 300
        while True:
            res = self.ec2.describe_instances(Filters=f)["Reservations"]
            if res:
                break
            self.assertLess(time.monotonic(), deadline)
            time.sleep(2)
        iid = res[0]["Instances"][0]["InstanceId"]
        time.sleep(3)
        p.kill()
        p.wait()
        qemu = int(read(os.path.join(instance_dir(iid), "qemu.pid")))
        self.assertNotEqual(self.leftovers(bid), [])
        # the next serve's janitor
        self.assertEqual(self.SERVE.stop(), 0)
        self.SERVE.start()
        self.ec2 = self.SERVE.client()
        deadline = time.monotonic() + 120
        while self.leftovers(bid):
            self.assertLess(time.monotonic(), deadline, self.leftovers(bid))
            time.sleep(1)
        self.assertFalse(os.path.exists("/proc/%d/cmdline" % qemu) and
                         "qmp.sock" in open("/proc/%d/cmdline" % qemu).read(),
                         "the killed bake's QEMU still runs")
        self.assertEqual(describe_state(self.ec2, iid), "terminated")


class BakeCancel(ServeCase):
    """Ctrl-C (SIGINT) in the middle of a step: the bake cancels, kills its
    build VM and removes everything itself, no janitor needed."""
    SERVE = SERVE

    def test_sigint_cleans_up(self):
        p, out_path, text = start_hanging_bake("hang2")
        time.sleep(3)
        p.send_signal(signal.SIGINT)
        self.assertEqual(p.wait(timeout=300), 1)
        text = read(out_path)
        self.assertIn("cancelling the bake", text)
        self.assertIn("the bake was cancelled", text)
        bid = build_id(text)
        self.assertEqual(BakeTiny.leftovers(self, bid), [])


def describe_state(ec2, iid):
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0][
        "State"]["Name"]


if __name__ == "__main__":
    unittest.main()
