"""Key pairs and security groups through the EC2 API against a real `kiln
serve` (started by run.sh): CreateKeyPair (RSA and Ed25519: ssh-keygen reads
the private key and derives the public key DescribeKeyPairs shows; the
fingerprint is the one EC2's documentation computes with openssl and
ssh-keygen), ImportKeyPair (an ssh-keygen key, the aws CLI's fileb://, every
refusal), DescribeKeyPairs (names, ids, filters, NotFound), DeleteKeyPair
(idempotent as EC2), another account not seeing them; CreateSecurityGroup,
AuthorizeSecurityGroupIngress (duplicates refused, nothing half-added),
DescribeSecurityGroups, DeleteSecurityGroup."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from botocore.exceptions import ClientError

from kilnapi import DATA, ENDPOINT, KILN, client, default_keys


_tmp = tempfile.TemporaryDirectory(prefix="kiln-keys-test.")


_other = None


def other_keys():
    global _other
    if _other is None:
        out = subprocess.run([KILN, "--data-dir", DATA, "account", "create", "keypairs-other",
                              "--json"], check=True, capture_output=True, text=True).stdout
        j = json.loads(out)
        _other = (j["AccessKeyId"], j["SecretAccessKey"])
    return _other


def sh(cmd, stdin=None):
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True,
                          input=stdin).stdout.strip()


def path(name):
    return os.path.join(_tmp.name, name)


@unittest.skipUnless(shutil.which("ssh-keygen") and shutil.which("openssl"),
                     "ssh-keygen and openssl are needed")
class KeyPairs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ec2 = client(default_keys())

    def assertCode(self, code, fn, *args, **kwargs):
        with self.assertRaises(ClientError) as e:
            fn(*args, **kwargs)
        self.assertEqual(e.exception.response["Error"]["Code"], code,
                         e.exception.response["Error"].get("Message"))

    def save_private(self, name, material):
        p = path(name)
        with open(p, "w") as f:
            f.write(material + "\n")
        os.chmod(p, 0o600)
        return p

    def describe_one(self, name):
        kps = self.ec2.describe_key_pairs(KeyNames=[name], IncludePublicKey=True)["KeyPairs"]
        self.assertEqual(len(kps), 1)
        return kps[0]

    def test_create_rsa(self):
        r = self.ec2.create_key_pair(KeyName="kp-rsa")
        self.assertTrue(r["KeyMaterial"].startswith("-----BEGIN RSA PRIVATE KEY-----"))
        self.assertTrue(r["KeyPairId"].startswith("key-"))
        p = self.save_private("kp-rsa.pem", r["KeyMaterial"])
        # EC2's recipe for a key pair it created.
        want = sh(f"openssl pkcs8 -in {p} -inform PEM -outform DER -topk8 -nocrypt"
                  " | openssl sha1 -c").split("= ")[-1]
        self.assertEqual(r["KeyFingerprint"], want)
        kp = self.describe_one("kp-rsa")
        self.assertEqual(kp["KeyPairId"], r["KeyPairId"])
        self.assertEqual(kp["KeyType"], "rsa")
        self.assertEqual(kp["KeyFingerprint"], want)
        self.assertEqual(kp["PublicKey"], sh(f"ssh-keygen -y -f {p}"))
        self.assertIn("CreateTime", kp)

    def test_create_ed25519(self):
        r = self.ec2.create_key_pair(KeyName="kp-ed", KeyType="ed25519")
        self.assertTrue(r["KeyMaterial"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----"))
        p = self.save_private("kp-ed", r["KeyMaterial"])
        sha = sh(f"ssh-keygen -l -E sha256 -f {p}").split()[1].removeprefix("SHA256:")
        self.assertEqual(r["KeyFingerprint"].rstrip("="), sha)
        kp = self.describe_one("kp-ed")
        self.assertEqual(kp["KeyType"], "ed25519")
        self.assertEqual(kp["PublicKey"], sh(f"ssh-keygen -y -f {p}"))

    def test_import(self):
        sh(f"ssh-keygen -q -t rsa -b 2048 -N '' -C 'someone@host' -f {path('imp')}")
        with open(path("imp.pub"), "rb") as f:
            material = f.read()
        r = self.ec2.import_key_pair(KeyName="kp-imported", PublicKeyMaterial=material)
        want = sh(f"ssh-keygen -e -m PKCS8 -f {path('imp.pub')}"
                  " | openssl pkey -pubin -outform DER | openssl md5 -c").split("= ")[-1]
        self.assertEqual(r["KeyFingerprint"], want)
        self.assertEqual(r["KeyName"], "kp-imported")
        kp = self.describe_one("kp-imported")
        self.assertEqual(kp["PublicKey"], " ".join(material.decode().split()[:2]))
        # The aws CLI's way: fileb://, an ed25519 key.
        sh(f"ssh-keygen -q -t ed25519 -N '' -f {path('imp2')}")
        env = dict(os.environ, AWS_ACCESS_KEY_ID=default_keys()[0],
                   AWS_SECRET_ACCESS_KEY=default_keys()[1], AWS_DEFAULT_REGION="us-east-1")
        out = subprocess.run(
            ["python3", "-m", "awscli", "ec2", "import-key-pair", "--endpoint-url", ENDPOINT,
             "--key-name", "kp-cli", "--public-key-material", f"fileb://{path('imp2.pub')}"],
            check=True, capture_output=True, text=True, env=env).stdout
        sha = sh(f"ssh-keygen -l -E sha256 -f {path('imp2.pub')}").split()[1][7:]
        self.assertEqual(json.loads(out)["KeyFingerprint"].rstrip("="), sha)

    def test_refusals(self):
        self.ec2.create_key_pair(KeyName="kp-dup", KeyType="ed25519")
        before = self.ec2.describe_key_pairs()["KeyPairs"]
        self.assertCode("InvalidKeyPair.Duplicate", self.ec2.create_key_pair, KeyName="kp-dup")
        sh(f"ssh-keygen -q -t ed25519 -N '' -f {path('dup')}")
        with open(path("dup.pub"), "rb") as f:
            self.assertCode("InvalidKeyPair.Duplicate", self.ec2.import_key_pair,
                            KeyName="kp-dup", PublicKeyMaterial=f.read())
        self.assertCode("InvalidParameterValue", self.ec2.create_key_pair,
                        KeyName="kp-x", KeyType="dsa")
        self.assertCode("InvalidParameterValue", self.ec2.create_key_pair,
                        KeyName="kp-x", KeyFormat="ppk")
        self.assertCode("InvalidParameterValue", self.ec2.create_key_pair, KeyName="")
        for bad in [b"not a key", b"ssh-dss AAAAB3NzaC1kc3MAAACBAP", b"ssh-rsa AAAA!!",
                    b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAEA==",
                    b"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAAX8="]:
            self.assertCode("InvalidKey.Format", self.ec2.import_key_pair,
                            KeyName="kp-bad", PublicKeyMaterial=bad)
        self.assertCode("DryRunOperation", self.ec2.create_key_pair, KeyName="kp-dry",
                        DryRun=True)
        self.assertEqual(self.ec2.describe_key_pairs()["KeyPairs"], before,
                         "no refused request left a key pair behind")
        self.assertCode("InvalidKeyPair.NotFound", self.ec2.describe_key_pairs,
                        KeyNames=["kp-nobody"])

    def test_delete_and_filters_and_accounts(self):
        a = self.ec2.create_key_pair(KeyName="kp-del-a", KeyType="ed25519")
        b = self.ec2.create_key_pair(KeyName="kp-del-b", KeyType="ed25519")
        got = self.ec2.describe_key_pairs(
            Filters=[{"Name": "key-name", "Values": ["kp-del-*"]}])["KeyPairs"]
        self.assertEqual([k["KeyName"] for k in got], ["kp-del-a", "kp-del-b"])
        got = self.ec2.describe_key_pairs(KeyPairIds=[b["KeyPairId"]])["KeyPairs"]
        self.assertEqual([k["KeyName"] for k in got], ["kp-del-b"])
        got = self.ec2.describe_key_pairs(
            Filters=[{"Name": "fingerprint", "Values": [a["KeyFingerprint"]]}])["KeyPairs"]
        self.assertEqual([k["KeyName"] for k in got], ["kp-del-a"])
        # Another account sees none of them and may use the same name.
        other = client(other_keys())
        self.assertCode("InvalidKeyPair.NotFound", other.describe_key_pairs,
                        KeyNames=["kp-del-a"])
        other.create_key_pair(KeyName="kp-del-a", KeyType="ed25519")
        other.delete_key_pair(KeyName="kp-del-a")
        # Delete by name and by id; deleting again succeeds, as EC2.
        self.ec2.delete_key_pair(KeyName="kp-del-a")
        self.ec2.delete_key_pair(KeyPairId=b["KeyPairId"])
        self.ec2.delete_key_pair(KeyName="kp-del-a")
        got = self.ec2.describe_key_pairs(
            Filters=[{"Name": "key-name", "Values": ["kp-del-*"]}])["KeyPairs"]
        self.assertEqual(got, [])
        self.assertCode("MissingParameter", self.ec2.delete_key_pair)


class SecurityGroups(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ec2 = client(default_keys())

    def assertCode(self, code, fn, *args, **kwargs):
        with self.assertRaises(ClientError) as e:
            fn(*args, **kwargs)
        self.assertEqual(e.exception.response["Error"]["Code"], code,
                         e.exception.response["Error"].get("Message"))

    def test_lifecycle(self):
        gid = self.ec2.create_security_group(GroupName="web",
                                             Description="web servers")["GroupId"]
        self.assertTrue(gid.startswith("sg-"))
        self.assertCode("InvalidGroup.Duplicate", self.ec2.create_security_group,
                        GroupName="web", Description="again")
        self.assertCode("InvalidParameterValue", self.ec2.create_security_group,
                        GroupName="sg-1", Description="x")
        self.ec2.authorize_security_group_ingress(
            GroupId=gid, IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                 "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
                {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 443,
                 "IpRanges": [{"CidrIp": "10.0.0.0/8"}, {"CidrIp": "192.168.1.0/24"}]}])
        # The legacy form, by name.
        self.ec2.authorize_security_group_ingress(GroupName="web", IpProtocol="icmp",
                                                  FromPort=-1, ToPort=-1, CidrIp="1.2.3.4/32")
        # A duplicate among new rules: refused, and none of the batch added.
        self.assertCode("InvalidPermission.Duplicate", self.ec2.authorize_security_group_ingress,
                        GroupId=gid, IpPermissions=[
                            {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53,
                             "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
                            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                             "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        for bad in [{"IpProtocol": "tcp", "FromPort": 90, "ToPort": 80,
                     "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
                    {"IpProtocol": "gre", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
                    {"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2,
                     "IpRanges": [{"CidrIp": "10.0.0.0/33"}]},
                    {"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2,
                     "IpRanges": [{"CidrIp": "10.0.0.01/8"}]}]:
            self.assertCode("InvalidParameterValue", self.ec2.authorize_security_group_ingress,
                            GroupId=gid, IpPermissions=[bad])
        g = self.ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
        self.assertEqual(g["GroupName"], "web")
        self.assertEqual(g["Description"], "web servers")
        self.assertRegex(g["OwnerId"], r"^[0-9]{12}$")
        rules = sorted((p["IpProtocol"], p.get("FromPort"), p.get("ToPort"),
                        tuple(r["CidrIp"] for r in p["IpRanges"]))
                       for p in g["IpPermissions"])
        self.assertEqual(rules, sorted([
            ("icmp", -1, -1, ("1.2.3.4/32",)),
            ("tcp", 22, 22, ("0.0.0.0/0",)),
            ("tcp", 80, 443, ("10.0.0.0/8",)),
            ("tcp", 80, 443, ("192.168.1.0/24",))]))
        self.assertEqual(g["IpPermissionsEgress"][0]["IpProtocol"], "-1")
        got = self.ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": ["web"]}])["SecurityGroups"]
        self.assertEqual([x["GroupId"] for x in got], [gid])
        other = client(other_keys())
        self.assertCode("InvalidGroup.NotFound", other.describe_security_groups,
                        GroupIds=[gid])
        self.assertCode("InvalidGroup.NotFound", other.delete_security_group, GroupId=gid)
        self.assertCode("InvalidGroupId.Malformed", self.ec2.describe_security_groups,
                        GroupIds=["sg-nope"])
        self.assertCode("DryRunOperation", self.ec2.delete_security_group, GroupId=gid,
                        DryRun=True)
        self.ec2.delete_security_group(GroupId=gid)
        self.assertCode("InvalidGroup.NotFound", self.ec2.delete_security_group, GroupId=gid)
        self.assertCode("InvalidGroup.NotFound", self.ec2.describe_security_groups,
                        GroupNames=["web"])


if __name__ == "__main__":
    unittest.main()
