#!/bin/sh
# Export to a block device: holes are written as zeros (the device's old
# contents must not show through), and a device smaller than the volume is
# refused.  Needs root and loop devices; skips otherwise.
. "$(dirname "$0")/functions.sh"
requires losetup

truncate -s 8M "$T/sparse.raw"
dd if=/dev/urandom of="$T/sparse.raw" bs=4096 count=3 seek=100 conv=notrunc status=none
dd if=/dev/urandom of="$T/sparse.raw" bs=4096 count=1 seek=2000 conv=notrunc status=none
id=$(import_id "$T/sparse.raw")

dd if=/dev/urandom of="$T/dev.img" bs=1M count=16 status=none
loop=$(losetup -f --show "$T/dev.img" 2>/dev/null) || { echo "SKIP: no loop device"; exit 77; }
detach() { losetup -d "$loop"; }
on_cleanup detach

kiln snapshot export "$id" "$loop"
cmp -n 8388608 "$loop" "$T/sparse.raw" || die "device export differs from the image"

truncate -s 4M "$T/small.img"
small=$(losetup -f --show "$T/small.img") || die "second loop device"
detach_small() { losetup -d "$small"; }
on_cleanup detach_small
expect_fail kiln snapshot export "$id" "$small"
expect_stderr "holds 4194304 bytes"
echo PASS
