#!/bin/sh
# Build the `tiny` base image: a raw ext4 disk (no partition table) holding
# busybox (static), the Debian kernel and a small initramfs with the virtio
# modules, kiln-agent and an init script.  Debian packages only; nothing is
# mounted (mkfs.ext4 -d builds the file system from a directory).
#
#   build.sh OUT.raw CACHE_DIR AGENT_BINARY
#
# CACHE_DIR keeps the downloaded .debs: a rebuild with them present does not
# touch the network.  Prints "kernel VERSION" on its last line.
set -eu
PATH=$PATH:/sbin:/usr/sbin

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
image_args "$@"
need dpkg-deb mkfs.ext4 gzip
image_workdir tiny

# ---- the packages (cached) ----
# debs PATTERN PACKAGE: the cached .deb matching PATTERN, downloaded with
# `apt-get download PACKAGE` when the cache has none.
deb() {
    _f=$(ls "$cache"/$1 2>/dev/null | sort | tail -n 1 || true)
    if [ -z "$_f" ]; then
        (cd "$cache" && apt-get download "$2" >&2) || die "cannot download '$2'"
        _f=$(ls "$cache"/$1 2>/dev/null | sort | tail -n 1 || true)
    fi
    [ -n "$_f" ] || die "no '$1' in $cache"
    echo "$_f"
}
kpkg=$(cat "$cache/kernel-package" 2>/dev/null || true)
if [ -z "$kpkg" ]; then
    kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')
    [ -n "$kpkg" ] || die "cannot resolve linux-image-amd64"
    echo "$kpkg" > "$cache/kernel-package"
fi
kdeb=$(deb "${kpkg}_*.deb" "$kpkg")
bdeb=$(deb "busybox-static_*.deb" busybox-static)

dpkg-deb -x "$kdeb" "$work/k"
dpkg-deb -x "$bdeb" "$work/bb"
kver=$(ls "$work/k/lib/modules" | head -n 1)
mods=$work/k/lib/modules/$kver
busybox=$work/bb/bin/busybox
[ -x "$busybox" ] || die "no busybox in $bdeb"

# ---- initramfs: busybox, the modules (dependencies first), /init ----
ird=$work/initramfs
mkdir -p "$ird/bin" "$ird/dev" "$ird/proc" "$ird/sys" "$ird/newroot" "$ird/lib/modules"
cp "$busybox" "$ird/bin/busybox"
for a in sh mount umount insmod switch_root sleep cat mkdir echo ls; do
    ln -s busybox "$ird/bin/$a"
done
modfile() { find "$mods/kernel" -name "$1.ko" -o -name "$1.ko.xz" | head -n 1; }
: > "$work/order"
addmod() {
    local _p _d # recursive: each call needs its own
    grep -qx "$1" "$work/order" && return 0
    _p=$(modfile "$1")
    [ -n "$_p" ] || die "module '$1' not in $kver"
    for _d in $(tr '\0' '\n' < "$_p" | sed -n 's/^depends=//p' | tr ',' ' '); do
        addmod "$_d"
    done
    case $_p in
    *.xz) xz -dc "$_p" > "$ird/lib/modules/$1.ko" ;;
    *) cp "$_p" "$ird/lib/modules/$1.ko" ;;
    esac
    echo "$1" >> "$work/order"
}
# crc32c_generic: ext4's checksums (a soft dependency, not in depends=);
# button and evdev: the ACPI power button that QMP system_powerdown presses.
for m in virtio_pci virtio_mmio virtio_blk virtio_console virtio_net crc32c_generic ext4 \
         button evdev; do
    addmod "$m"
done
cp "$work/order" "$ird/modules"
cp "$here/init-initramfs" "$ird/init"
chmod 755 "$ird/init"
(cd "$ird" && find . | LC_ALL=C sort | "$busybox" cpio -o -H newc 2>/dev/null | gzip -9) > "$work/initrd.img"

# ---- the root file system ----
root=$work/root
mkdir -p "$root/bin" "$root/sbin" "$root/usr/sbin" "$root/boot" "$root/dev" "$root/proc" \
    "$root/sys" "$root/run" "$root/tmp" "$root/etc/acpi/PWRF" "$root/root" "$root/var/log"
cp "$busybox" "$root/bin/busybox"
for a in $("$busybox" --list); do
    [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"
done
cp "$mods/../../../boot/vmlinuz-$kver" "$root/boot/vmlinuz-$kver"
cp "$work/initrd.img" "$root/boot/initrd.img-$kver"
image_boot_links "$root" "$kver"
cp "$agent" "$root/usr/sbin/kiln-agent"
cp "$here/init" "$root/sbin/init"
cp "$here/udhcpc.script" "$root/etc/udhcpc.script"
printf '#!/bin/sh\nexec /sbin/kiln-poweroff\n' > "$root/etc/acpi/PWRF/00000080"
cp "$here/poweroff" "$root/sbin/kiln-poweroff"
chmod 755 "$root/sbin/init" "$root/etc/udhcpc.script" "$root/etc/acpi/PWRF/00000080" \
    "$root/sbin/kiln-poweroff" "$root/usr/sbin/kiln-agent"
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"
echo "kiln-tiny" > "$root/etc/hostname"

image_disk "$root" 64M "$kver"
