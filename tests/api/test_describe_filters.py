"""DescribeImages name and tag filters, which the server hands to the
registry as a pre-filter (src/api/images.c, "prefilter"): whatever the
registry is told, the answer must be exactly what the API's own matching
says, fnmatch without escapes ('*', '?', '[...]' bracket expressions, a
backslash is an ordinary character).  Each case registers images whose
names and tag values hold the characters the translation has to get right
and compares the answer with Python's fnmatchcase (the same rules for
ASCII) over what was registered.  Against a real `kiln serve` (run.sh)."""
import fnmatch
import unittest
import uuid

from test_images import Base


class PreFilter(Base):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.p = "pf%s" % uuid.uuid4().hex[:8]
        # name suffix -> tag values (Role, Note)
        cls.spec = {
            "web-1": ("web", "plain"),
            "web-22": ("web", "two words"),
            "db-1": ("db", "back\\slash"),
            "db-[x]": ("db", "star*literal"),
            "db_(7)": ("db?", "question?mark"),
            "cache.1": ("cache", "brackets[ab]"),
            "o'brien @x/y": ("caché", "naïve value"),
        }
        cls.images = {}
        for suffix, (role, note) in cls.spec.items():
            name = "%s-%s" % (cls.p, suffix)
            iid, _ = cls.register(cls, name=name, tags={"Role": role, "Note": note})
            cls.images[iid] = (name, role, note)

    def plain_image(self):
        """An image whose name has no pattern character (`*?[`), so that it
        matches itself as a name filter value."""
        return min(i for i, (name, _, _) in self.images.items()
                   if not any(c in name for c in "*?["))

    def mine(self, **kwargs):
        """Ids of this class's images in the answer."""
        return sorted(i for i in self.ids(**kwargs) if i in self.images)

    def expect(self, pred):
        return sorted(i for i, v in self.images.items() if pred(*v))

    def test_name_patterns(self):
        p = self.p
        patterns = [p + "-*", p + "-web-?", p + "-web-??", p + "-db-[[]x]", p + "-db?*",
                    p + "-[cd]*", p + "-[!w]*", p + "-*[0-9]", p + "-db_(?)", p + "*'*",
                    p + "-o'brien @x/y", p + "-*\\*", "*" + p[2:] + "-cache.?", p + "-db-\\[x]",
                    p + "-db-[x]"]
        for pat in patterns:
            with self.subTest(pattern=pat):
                self.assertEqual(self.mine(Filters=[{"Name": "name", "Values": [pat]}]),
                                 self.expect(lambda n, r, t: fnmatch.fnmatchcase(n, pat)))

    def test_several_values_and_several_name_filters(self):
        p = self.p
        vals = [p + "-web-1", p + "-cache*", p + "-nothing"]
        self.assertEqual(self.mine(Filters=[{"Name": "name", "Values": vals}]),
                         self.expect(lambda n, r, t: any(fnmatch.fnmatchcase(n, v)
                                                         for v in vals)))
        # Two name filters must both match (only the first goes to the
        # registry; the second is the API's alone).
        self.assertEqual(self.mine(Filters=[{"Name": "name", "Values": [p + "-web*"]},
                                            {"Name": "name", "Values": ["*-22"]}]),
                         self.expect(lambda n, r, t: n == p + "-web-22"))
        self.assertEqual(self.mine(Filters=[{"Name": "name", "Values": [p + "-web*"]},
                                            {"Name": "name", "Values": [p + "-db*"]}]), [])

    def test_tag_patterns(self):
        patterns = ["web", "db", "db?", "d*", "?b", "caché", "cach*", "c[a]che", "*",
                    "back\\slash", "back\\*", "*\\*", "star\\*literal", "star*literal",
                    "question?mark", "brackets[[]ab]", "brackets[ab]", "*[ab]*", "naïve*",
                    "*value", "two words", "two?words"]
        for key in ("Role", "Note"):
            for pat in patterns:
                with self.subTest(key=key, pattern=pat):
                    col = 1 if key == "Role" else 2
                    self.assertEqual(
                        self.mine(Filters=[{"Name": "tag:" + key, "Values": [pat]}]),
                        self.expect(lambda *v: fnmatch.fnmatchcase(v[col], pat)))

    def test_tag_key_and_combinations(self):
        self.assertEqual(self.mine(Filters=[{"Name": "tag-key", "Values": ["Ro?e"]}]),
                         sorted(self.images))
        self.assertEqual(self.mine(Filters=[{"Name": "tag-key", "Values": ["[N]ote"]}]),
                         sorted(self.images))
        self.assertEqual(self.mine(Filters=[{"Name": "tag-key", "Values": ["Nothing*"]}]), [])
        self.assertEqual(
            self.mine(Filters=[{"Name": "tag:Role", "Values": ["db", "web"]},
                               {"Name": "tag:Note", "Values": ["*a*"]},
                               {"Name": "name", "Values": [self.p + "-*"]}]),
            self.expect(lambda n, r, t: r in ("db", "web") and "a" in t))
        # A filter given without values matches nothing.
        self.assertEqual(self.mine(Filters=[{"Name": "tag:Role", "Values": []}]), [])
        self.assertEqual(self.mine(Filters=[{"Name": "name", "Values": []}]), [])

    def test_other_accounts_see_no_tags(self):
        """A public image is visible to bob, but his tag filters match none of
        its tags, even though the registry's pre-filter finds them."""
        iid = self.plain_image()
        self.ec2.modify_image_attribute(ImageId=iid, LaunchPermission={"Add": [{"Group": "all"}]})
        try:
            name = self.images[iid][0]
            flt = [{"Name": "name", "Values": [name]}]
            self.assertEqual(self.ids(self.bob, Filters=flt), [iid])
            self.assertEqual(self.ids(self.bob, Filters=flt + [
                {"Name": "tag:Role", "Values": [self.images[iid][1]]}]), [])
            self.assertEqual(self.ids(Filters=flt + [
                {"Name": "tag:Role", "Values": [self.images[iid][1]]}]), [iid])
        finally:
            self.ec2.reset_image_attribute(ImageId=iid, Attribute="launchPermission")

    def test_ids_with_filters(self):
        """Ids asked for and excluded by a filter: an empty answer, not
        InvalidAMIID.NotFound."""
        iid = self.plain_image()
        self.assertEqual(self.ids(ImageIds=[iid],
                                  Filters=[{"Name": "name", "Values": ["no-such-*"]}]), [])
        self.assertEqual(self.ids(ImageIds=[iid],
                                  Filters=[{"Name": "name", "Values": [self.images[iid][0]]}]),
                         [iid])

    def test_kept_handles_see_every_write(self):
        """DescribeImages answers from region handles kept open between
        requests (region-cache.c): each answer must still show every write
        committed before it, on any connection."""
        name = "%s-fresh" % self.p
        flt = [{"Name": "name", "Values": [name]}]
        for _ in range(3):  # every idle handle has served a request
            self.assertEqual(self.ids(Filters=flt), [])
        iid, _ = self.register(name=name)
        self.assertEqual(self.ids(Filters=flt), [iid])
        self.ec2.create_tags(Resources=[iid], Tags=[{"Key": "Fresh", "Value": "yes"}])
        self.assertEqual(self.ids(Filters=[{"Name": "tag:Fresh", "Values": ["yes"]}]), [iid])
        self.ec2.deregister_image(ImageId=iid)
        self.assertEqual(self.ids(Filters=flt), [])
        self.assertEqual(self.ids(Filters=[{"Name": "tag:Fresh", "Values": ["yes"]}]), [])

    def test_paging_with_filters(self):
        flt = [{"Name": "name", "Values": [self.p + "-*"]}]
        seen = []
        for page in self.ec2.get_paginator("describe_images").paginate(
                Filters=flt, PaginationConfig={"PageSize": 5}):
            seen += [i["ImageId"] for i in page["Images"]]
        self.assertEqual(sorted(seen), sorted(self.images))
        self.assertEqual(len(seen), len(set(seen)))


if __name__ == "__main__":
    unittest.main()
