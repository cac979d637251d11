"""Sharing through the EC2 API against a real `kiln serve` (started by
run.sh): snapshot createVolumePermission (DescribeSnapshotAttribute,
ModifySnapshotAttribute in both request forms, ResetSnapshotAttribute), what
sharing makes visible (DescribeSnapshots with RestorableBy and Owner,
RegisterImage from a shared snapshot), that only the owner changes it, and
image block public access (Enable/Disable/GetImageBlockPublicAccessState,
enforced by ModifyImageAttribute)."""
import unittest
import uuid

from botocore.exceptions import ClientError

from test_snapshots import bob_keys, client, default_keys, import_snapshot


class Base(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ec2 = client(default_keys())
        sid = import_snapshot()
        cls.account = cls.ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["OwnerId"]
        bob = bob_keys()
        cls.bob = client(bob[:2])
        cls.bob_account = bob[2]

    def assertCode(self, code, fn, *args, **kwargs):
        with self.assertRaises(ClientError) as e:
            fn(*args, **kwargs)
        self.assertEqual(e.exception.response["Error"]["Code"], code,
                         e.exception.response["Error"])
        return e.exception.response

    def snapshot_ids(self, c, **kwargs):
        return [s["SnapshotId"] for s in c.describe_snapshots(**kwargs)["Snapshots"]]

    def share(self, sid, user=None, group=None, remove=False):
        item = {"UserId": user} if user else {"Group": group}
        perm = {"Remove" if remove else "Add": [item]}
        self.ec2.modify_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission",
                                           CreateVolumePermission=perm)

    def permissions(self, sid):
        return self.ec2.describe_snapshot_attribute(
            SnapshotId=sid, Attribute="createVolumePermission")["CreateVolumePermissions"]


class SnapshotSharing(Base):
    def test_share_with_bob(self):
        sid = import_snapshot()
        self.assertNotIn(sid, self.snapshot_ids(self.bob))
        self.assertCode("InvalidSnapshot.NotFound", self.bob.describe_snapshots,
                        SnapshotIds=[sid])

        self.share(sid, user=self.bob_account)
        self.assertEqual(self.permissions(sid), [{"UserId": self.bob_account}])
        self.assertIn(sid, self.snapshot_ids(self.bob, RestorableByUserIds=["self"]))
        self.assertIn(sid, self.snapshot_ids(self.bob, OwnerIds=[self.account]))
        self.assertIn(sid, self.snapshot_ids(
            self.bob, Filters=[{"Name": "owner-id", "Values": [self.account]}]))
        self.assertNotIn(sid, self.snapshot_ids(self.bob, OwnerIds=["self"]))
        self.assertNotIn(sid, self.snapshot_ids(self.bob, RestorableByUserIds=["all"]))
        # The owner asks who else may restore it.
        self.assertIn(sid, self.snapshot_ids(self.ec2, RestorableByUserIds=[self.bob_account]))
        s = self.bob.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
        self.assertEqual(s["OwnerId"], self.account)
        self.assertEqual(s["Tags"], [])

        # bob can look but not change or read the permissions.
        self.assertCode("AuthFailure", self.bob.modify_snapshot_attribute, SnapshotId=sid,
                        Attribute="createVolumePermission",
                        CreateVolumePermission={"Add": [{"Group": "all"}]})
        self.assertCode("AuthFailure", self.bob.reset_snapshot_attribute, SnapshotId=sid,
                        Attribute="createVolumePermission")
        self.assertCode("AuthFailure", self.bob.describe_snapshot_attribute, SnapshotId=sid,
                        Attribute="createVolumePermission")
        self.assertEqual(self.permissions(sid), [{"UserId": self.bob_account}])

        # bob registers an image from it.
        name = "shared-%s" % uuid.uuid4().hex[:12]
        iid = self.bob.register_image(
            Name=name, Architecture="x86_64", RootDeviceName="/dev/xvda",
            VirtualizationType="hvm",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid}}])["ImageId"]
        img = self.bob.describe_images(ImageIds=[iid])["Images"][0]
        self.assertEqual(img["OwnerId"], self.bob_account)
        self.assertEqual(img["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"], sid)
        # ... and the owner cannot delete the snapshot while it is used.
        self.assertCode("InvalidSnapshot.InUse", self.ec2.delete_snapshot, SnapshotId=sid)
        self.bob.deregister_image(ImageId=iid)

        # Removing the permission hides it again.
        self.share(sid, user=self.bob_account, remove=True)
        self.assertEqual(self.permissions(sid), [])
        self.assertNotIn(sid, self.snapshot_ids(self.bob))
        self.assertNotIn(sid, self.snapshot_ids(self.bob, RestorableByUserIds=["self"]))
        self.assertCode("InvalidSnapshot.NotFound", self.bob.describe_snapshots,
                        SnapshotIds=[sid])
        self.assertCode("InvalidSnapshot.NotFound", self.bob.modify_snapshot_attribute,
                        SnapshotId=sid, Attribute="createVolumePermission",
                        CreateVolumePermission={"Add": [{"Group": "all"}]})
        self.assertCode("InvalidSnapshot.NotFound", self.bob.register_image,
                        Name="unshared-%s" % uuid.uuid4().hex[:12], Architecture="x86_64",
                        RootDeviceName="/dev/xvda", VirtualizationType="hvm",
                        BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                              "Ebs": {"SnapshotId": sid}}])

    def test_public_and_reset(self):
        sid = import_snapshot()
        try:
            self.share(sid, group="all")
            self.assertEqual(self.permissions(sid), [{"Group": "all"}])
            self.assertIn(sid, self.snapshot_ids(self.ec2, RestorableByUserIds=["all"]))
            self.assertIn(sid, self.snapshot_ids(self.bob, RestorableByUserIds=["all"]))
            self.assertIn(sid, self.snapshot_ids(self.bob))
            self.assertEqual(self.bob.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
                             ["SnapshotId"], sid)
            # Public is not an explicit permission for bob.
            self.assertNotIn(sid, self.snapshot_ids(self.bob, RestorableByUserIds=["self"]))
        finally:
            self.ec2.reset_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission")
        self.assertEqual(self.permissions(sid), [])
        self.assertNotIn(sid, self.snapshot_ids(self.ec2, RestorableByUserIds=["all"]))
        self.assertNotIn(sid, self.snapshot_ids(self.bob))

    def test_legacy_form(self):
        sid = import_snapshot()
        self.ec2.modify_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission",
                                           OperationType="add",
                                           UserIds=[self.bob_account, "999999999999"])
        self.assertEqual(self.permissions(sid), [{"UserId": "999999999999"},
                                                 {"UserId": self.bob_account}]
                         if "999999999999" < self.bob_account else
                         [{"UserId": self.bob_account}, {"UserId": "999999999999"}])
        self.ec2.modify_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission",
                                           OperationType="remove",
                                           UserIds=[self.bob_account, "999999999999"])
        self.assertEqual(self.permissions(sid), [])
        self.ec2.modify_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission",
                                           OperationType="add", GroupNames=["all"])
        self.assertEqual(self.permissions(sid), [{"Group": "all"}])
        self.ec2.reset_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission")
        self.assertEqual(self.permissions(sid), [])

    def test_describe_attribute_shapes(self):
        sid = import_snapshot()
        r = self.ec2.describe_snapshot_attribute(SnapshotId=sid,
                                                 Attribute="createVolumePermission")
        self.assertEqual(r["SnapshotId"], sid)
        self.assertEqual(r["CreateVolumePermissions"], [])
        r = self.ec2.describe_snapshot_attribute(SnapshotId=sid, Attribute="productCodes")
        self.assertEqual(r["SnapshotId"], sid)
        self.assertEqual(r["ProductCodes"], [])

    def test_bad_input(self):
        sid = import_snapshot()
        self.assertCode("InvalidParameterValue", self.ec2.describe_snapshot_attribute,
                        SnapshotId=sid, Attribute="volumeSize")
        self.assertCode("InvalidSnapshotID.Malformed", self.ec2.describe_snapshot_attribute,
                        SnapshotId="snap-nothex", Attribute="createVolumePermission")
        self.assertCode("InvalidSnapshot.NotFound", self.ec2.describe_snapshot_attribute,
                        SnapshotId="snap-0000000000000000f", Attribute="createVolumePermission")
        self.assertCode("InvalidParameterValue", self.ec2.modify_snapshot_attribute,
                        SnapshotId=sid, Attribute="createVolumePermission",
                        CreateVolumePermission={"Add": [{"UserId": "12345"}]})
        self.assertCode("InvalidParameterValue", self.ec2.modify_snapshot_attribute,
                        SnapshotId=sid, Attribute="createVolumePermission",
                        CreateVolumePermission={"Add": [{"Group": "admins"}]})
        self.assertCode("InvalidParameterCombination", self.ec2.modify_snapshot_attribute,
                        SnapshotId=sid, Attribute="createVolumePermission",
                        CreateVolumePermission={"Add": [{"UserId": self.bob_account}],
                                                "Remove": [{"Group": "all"}]})
        self.assertCode("MissingParameter", self.ec2.modify_snapshot_attribute,
                        SnapshotId=sid, Attribute="createVolumePermission")
        self.assertCode("InvalidParameterValue", self.ec2.reset_snapshot_attribute,
                        SnapshotId=sid, Attribute="productCodes")
        self.assertCode("DryRunOperation", self.ec2.modify_snapshot_attribute,
                        SnapshotId=sid, Attribute="createVolumePermission",
                        CreateVolumePermission={"Add": [{"Group": "all"}]}, DryRun=True)
        self.assertEqual(self.permissions(sid), [])


class PackerForm(Base):
    def test_legacy_lists_repeating_the_structured_form(self):
        """Packer 1.6.6's snapshot_users and snapshot_groups send UserIds or
        GroupNames and CreateVolumePermission.Add with the same entries, no
        Attribute and no OperationType (EC2 accepts it).  Lists that say
        anything else beside the structured form are refused, changing
        nothing."""
        sid = import_snapshot()
        self.ec2.modify_snapshot_attribute(
            SnapshotId=sid, UserIds=[self.bob_account],
            CreateVolumePermission={"Add": [{"UserId": self.bob_account}]})
        self.assertEqual(self.permissions(sid), [{"UserId": self.bob_account}])
        self.assertIn(sid, self.snapshot_ids(self.bob, RestorableByUserIds=["self"]))
        self.ec2.modify_snapshot_attribute(
            SnapshotId=sid, GroupNames=["all"], CreateVolumePermission={"Add": [{"Group": "all"}]})
        self.assertEqual(sorted(self.permissions(sid), key=str),
                         sorted([{"UserId": self.bob_account}, {"Group": "all"}], key=str))
        self.ec2.reset_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission")
        other = "210987654321"
        for kw in [dict(UserIds=[other]), dict(UserIds=[self.bob_account, other]),
                   dict(GroupNames=["all"]), dict(OperationType="add")]:
            self.assertCode("InvalidParameterCombination", self.ec2.modify_snapshot_attribute,
                            SnapshotId=sid,
                            CreateVolumePermission={"Add": [{"UserId": self.bob_account}]}, **kw)
        # a Remove is not repeated by UserIds either
        self.assertCode("InvalidParameterCombination", self.ec2.modify_snapshot_attribute,
                        SnapshotId=sid, UserIds=[self.bob_account],
                        CreateVolumePermission={"Remove": [{"UserId": self.bob_account}]})
        self.assertEqual(self.permissions(sid), [])


class ImageBlockPublicAccess(Base):
    def register(self):
        sid = import_snapshot()
        return self.ec2.register_image(
            Name="bpa-%s" % uuid.uuid4().hex[:12], Architecture="x86_64",
            RootDeviceName="/dev/xvda", VirtualizationType="hvm",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                  "Ebs": {"SnapshotId": sid}}])["ImageId"]

    def state(self, c=None):
        return (c or self.ec2).get_image_block_public_access_state()[
            "ImageBlockPublicAccessState"]

    def test_block_and_unblock(self):
        iid = self.register()
        public = self.register()
        self.ec2.modify_image_attribute(ImageId=public,
                                        LaunchPermission={"Add": [{"Group": "all"}]})
        self.assertEqual(self.state(), "unblocked")
        r = self.ec2.get_image_block_public_access_state()
        self.assertEqual(r["ManagedBy"], "account")
        try:
            r = self.ec2.enable_image_block_public_access(
                ImageBlockPublicAccessState="block-new-sharing")
            self.assertEqual(r["ImageBlockPublicAccessState"], "block-new-sharing")
            self.assertEqual(self.state(), "block-new-sharing")
            # Per account: bob is not blocked.
            self.assertEqual(self.state(self.bob), "unblocked")

            r = self.assertCode("OperationNotPermitted", self.ec2.modify_image_attribute,
                                ImageId=iid, LaunchPermission={"Add": [{"Group": "all"}]})
            self.assertIn("block public access", r["Error"]["Message"])
            self.assertCode("OperationNotPermitted", self.ec2.modify_image_attribute,
                            ImageId=iid, Attribute="launchPermission", OperationType="add",
                            UserGroups=["all"])
            self.assertIs(self.ec2.describe_images(ImageIds=[iid])["Images"][0]["Public"],
                          False)
            # Sharing with an account still works; public images stay public.
            self.ec2.modify_image_attribute(
                ImageId=iid, LaunchPermission={"Add": [{"UserId": self.bob_account}]})
            self.assertIs(self.ec2.describe_images(ImageIds=[public])["Images"][0]["Public"],
                          True)
        finally:
            r = self.ec2.disable_image_block_public_access()
        self.assertEqual(r["ImageBlockPublicAccessState"], "unblocked")
        self.assertEqual(self.state(), "unblocked")
        self.ec2.modify_image_attribute(ImageId=iid, LaunchPermission={"Add": [{"Group": "all"}]})
        self.assertIs(self.ec2.describe_images(ImageIds=[iid])["Images"][0]["Public"], True)
        for i in (iid, public):
            self.ec2.reset_image_attribute(ImageId=i, Attribute="launchPermission")

    def test_bad_input(self):
        self.assertCode("InvalidParameterValue", self.ec2.enable_image_block_public_access,
                        ImageBlockPublicAccessState="block-all-sharing")
        self.assertCode("DryRunOperation", self.ec2.enable_image_block_public_access,
                        ImageBlockPublicAccessState="block-new-sharing", DryRun=True)
        self.assertEqual(self.state(), "unblocked")


if __name__ == "__main__":
    unittest.main()
