#!/bin/sh
# Stage 1 of the `debian` base image: debootstrap bookworm (minbase) with the
# packages below into a directory, a small initramfs configured, apt's lists
# and archives dropped, and the result written as a zstd tarball.  This is
# the slow, networked part; build.sh caches its tarball under a key that
# hashes this file, so any change here (the package list included) rebuilds
# it, and nothing else does.
#
#   rootfs.sh OUT.tar.zst MIRROR
set -eu
PATH=$PATH:/sbin:/usr/sbin

[ $# -eq 2 ] || { echo "usage: rootfs.sh OUT.tar.zst MIRROR" >&2; exit 2; }
out=$1 mirror=$2
for tool in debootstrap chroot tar zstd; do
    command -v "$tool" >/dev/null || { echo "rootfs.sh: '$tool' not found" >&2; exit 1; }
done

# The packages beyond minbase.  linux-image-cloud-amd64: the kernel for
# virtual machines (virtio, no hardware drivers); docs/vm.md has the
# measurement against linux-image-amd64.  python3-cffi-backend: it
# provides a virtual package python3-cryptography needs, and debootstrap's
# resolver does not follow virtual packages.
packages="linux-image-cloud-amd64 initramfs-tools systemd systemd-sysv udev dbus
cloud-init python3-cffi-backend openssh-server sudo ca-certificates iproute2
e2fsprogs netbase procps less"

work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-debian-rootfs.XXXXXX")
root=$work/root
cleanup() {
    # debootstrap mounts /proc and /sys in the target while it runs and
    # unmounts them at its end; after a failure they may still be there.
    for m in "$root/proc" "$root/sys" "$root/dev/pts" "$root/dev"; do
        mountpoint -q "$m" 2>/dev/null && umount -l "$m" || true
    done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# The initramfs: only what finds and mounts a virtio disk holding ext4
# (MODULES=list), written before the kernel's postinst builds it.
mkdir -p "$root/etc/initramfs-tools/conf.d"
printf 'MODULES=list\nCOMPRESS=gzip\n' > "$root/etc/initramfs-tools/conf.d/kiln.conf"
mkdir -p "$root/etc/initramfs-tools"
printf '%s\n' virtio_pci virtio_blk crc32c_generic ext4 > "$root/etc/initramfs-tools/modules"

debootstrap --variant=minbase --include="$(echo $packages | tr ' ' ',')" \
    bookworm "$root" "$mirror" >&2 ||
    { tail -n 30 "$root/debootstrap/debootstrap.log" >&2 2>/dev/null; exit 1; }

# The initramfs-tools package may have replaced the files above with its
# defaults (conffiles): rewrite them and build the initramfs again.
printf 'MODULES=list\nCOMPRESS=gzip\n' > "$root/etc/initramfs-tools/conf.d/kiln.conf"
printf '%s\n' virtio_pci virtio_blk crc32c_generic ext4 > "$root/etc/initramfs-tools/modules"
sed -i 's/^MODULES=.*/MODULES=list/' "$root/etc/initramfs-tools/initramfs.conf"
chroot "$root" update-initramfs -u -k all >&2

chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log \
    "$root"/debootstrap

tar -C "$root" --numeric-owner --xattrs --xattrs-include='*' -cf - . | zstd -q -T0 -3 > "$out.tmp"
mv "$out.tmp" "$out"
