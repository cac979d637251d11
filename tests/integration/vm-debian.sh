#!/bin/sh
# The debian base image's build refuses bad input precisely and registers
# nothing (docs/vm.md, "The debian image"): an unknown image name, a
# missing agent, a damaged cached debootstrap tarball (refused, removed).
# The build itself and the boot (cloud-init with the EC2 datasource, ssh
# with the key pair, the agent, a clean power-off) are checked by
# instances-debian.sh, through RunInstances: one debian boot for the vm
# suite instead of two.
#
# No network and no boot here: the damaged tarball is refused before
# anything is fetched.
. "$(dirname "$0")/functions.sh"
requires mkfs.ext4 zstd chroot flock
cache=$T/cache
mkdir -p "$cache"

# ---- bad input ----
expect_fail kiln base-image build huge
expect_stderr "unknown base image 'huge' (known: tiny, debian)"
expect_fail env KILN_AGENT="$T/no-agent" "$KILN" base-image build debian --cache-dir "$cache"
expect_stderr "cannot find the recipe '.*/debian/build.sh' or the agent '$T/no-agent'"

# A damaged cached tarball: refused precisely, removed, nothing registered.
mkdir -p "$T/badcache"
key=$(sha256sum < "$SRCDIR/images/debian/rootfs.sh" | cut -c 1-16)
head -c 100000 /dev/urandom > "$T/badcache/debian-rootfs-$key.tar.zst"
expect_fail kiln base-image build debian --cache-dir "$T/badcache"
expect_stderr "the cached '$T/badcache/debian-rootfs-$key.tar.zst' is corrupt: removed"
[ ! -e "$T/badcache/debian-rootfs-$key.tar.zst" ] || die "the corrupt tarball is still cached"
assert_eq "$(kiln image list | grep -c debian-12 || true)" 0 "images after a failed build"
