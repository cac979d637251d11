#!/bin/sh
# `kiln image import`: a disk image becomes a snapshot and an available
# image mapping it at /dev/xvda, in one step.  A taken or invalid name is
# refused before anything is imported; nothing is left registered.
. "$(dirname "$0")/functions.sh"

mkimage "$T/disk.img" 16
kiln -q image import "$T/disk.img" --name "web server (1)" --description "first" > "$T/out"
snap=$(sed -n 1p "$T/out")
ami=$(sed -n 2p "$T/out")
case "$snap" in snap-*) ;; *) die "first line is not a snapshot id: $(cat "$T/out")" ;; esac
case "$ami" in ami-*) ;; *) die "last line is not an image id: $(cat "$T/out")" ;; esac

kiln image list --json > "$T/list.json"
assert_eq "$(json_get 'j[0]["ImageId"]' < "$T/list.json")" "$ami" "listed image"
assert_eq "$(json_get 'j[0]["State"]' < "$T/list.json")" available "image state"
assert_eq "$(json_get 'j[0]["RootSnapshotId"]' < "$T/list.json")" "$snap" "root snapshot"
assert_eq "$(json_get 'j[0]["Name"]' < "$T/list.json")" "web server (1)" "image name"

# The snapshot is the image's data, byte for byte.
kiln snapshot export "$snap" "$T/out.img"
cmp "$T/disk.img" "$T/out.img" || die "the image's snapshot differs from the disk"

# A taken name, an invalid name, a missing file: refused, nothing added.
expect_fail kiln image import "$T/disk.img" --name "web server (1)"
expect_stderr "already exists"
expect_fail kiln image import "$T/disk.img" --name "x"
expect_stderr "invalid image name"
expect_fail kiln image import "$T/nothing.img" --name "other name"
expect_stderr "cannot open"
expect_fail kiln image import "$T/disk.img"
expect_stderr "needs --name"
assert_eq "$(kiln snapshot list --json | json_get 'len(j)')" 1 "snapshots after refusals"
assert_eq "$(kiln image list --json | json_get 'len(j)')" 1 "images after refusals"
assert_fsck_clean
echo PASS
