#!/bin/sh
# Build the `debian` base image: Debian 12 (bookworm) minbase with the cloud
# kernel, systemd, cloud-init, openssh-server and kiln-agent, configured as a
# stock EC2 cloud image is (docs/vm.md, "The debian image").  The disk is a
# bare ext4 (no partition table), 2 GiB logical and sparse, made with
# mkfs.ext4 -d: nothing is mounted here (debootstrap, in rootfs.sh, mounts
# /proc and /sys inside its target while it installs).
#
#   build.sh OUT.raw CACHE_DIR AGENT_BINARY
#
# CACHE_DIR keeps rootfs.sh's result, debian-rootfs-KEY.tar.zst, KEY a hash of
# rootfs.sh (which holds the package list): a rebuild with it present does
# not touch the network.  The mirror is $KILN_DEBIAN_MIRROR, else the first
# bookworm source of /etc/apt/sources.list{,.d/*}.  Prints "kernel VERSION"
# on its last line.
set -eu
PATH=$PATH:/sbin:/usr/sbin

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
image_args "$@"
need mkfs.ext4 tar zstd sha256sum chroot flock

# The first bookworm mirror apt knows: one-line (.list) or deb822 (.sources).
apt_mirror() {
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                           if ($(i + 1) == "bookworm") { print $i; exit } }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk 'function flush() { if (suites ~ /(^| )bookworm( |$)/ && uris != "") print uris
                                uris = ""; suites = "" }
             /^[ \t]*$/ { flush(); next }
             /^URIs:/ { uris = $2 } /^Suites:/ { $1 = ""; suites = $0 " " }
             END { flush() }' "$f"
    done
}
mirror=${KILN_DEBIAN_MIRROR:-$(apt_mirror | head -n 1)}
mirror=${mirror:-http://deb.debian.org/debian}

image_workdir debian

# ---- stage 1: the debootstrapped tree (cached, one builder at a time) ----
key=$(sha256sum < "$here/rootfs.sh" | cut -c 1-16)
tarball=$cache/debian-rootfs-$key.tar.zst
(
    flock 9
    # A damaged tarball (a disk error, a hand edit) would fail every build:
    # refuse it once, precisely, and drop it so that the next build makes it
    # again.
    if [ -e "$tarball" ] && ! zstd -q -t "$tarball" 2>/dev/null; then
        rm -f "$tarball"
        die "the cached '$tarball' is corrupt: removed (the next build makes it again)"
    fi
    if [ ! -s "$tarball" ]; then
        echo "build.sh: debootstrap bookworm from $mirror (cached as $tarball)" >&2
        sh "$here/rootfs.sh" "$tarball" "$mirror"
        # Older keys are dead weight.
        for old in "$cache"/debian-rootfs-*.tar.zst; do
            [ "$old" = "$tarball" ] || rm -f "$old"
        done
    fi
) 9> "$cache/.debian-rootfs.lock"

root=$work/root
mkdir "$root"
zstd -dc "$tarball" | tar -C "$root" --numeric-owner --xattrs --xattrs-include='*' -xf -

# ---- stage 2: kiln's configuration (cheap, redone every build) ----
kver=$(ls "$root/lib/modules" | sort -V | tail -n 1)
[ -n "$kver" ] && [ -e "$root/boot/vmlinuz-$kver" ] && [ -e "$root/boot/initrd.img-$kver" ] ||
    die "no kernel and initrd in $tarball"
image_boot_links "$root" "$kver"

install -m 755 "$agent" "$root/usr/sbin/kiln-agent"
install -m 644 "$here/kiln-agent.service" "$root/etc/systemd/system/kiln-agent.service"
install -m 644 "$here/60-kiln-agent.rules" "$root/etc/udev/rules.d/60-kiln-agent.rules"
install -m 644 "$here/80-kiln-dhcp.network" "$root/etc/systemd/network/80-kiln-dhcp.network"
install -m 644 "$here/cloud.cfg" "$root/etc/cloud/cloud.cfg.d/01_kiln.cfg"

printf 'LABEL=kiln-root / ext4 rw,errors=remount-ro 0 1\n' > "$root/etc/fstab"
echo localhost > "$root/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
# DNS: kiln's instance network answers at 169.254.0.3 (QEMU's slirp,
# docs/imds.md), as EC2's at 169.254.169.253; networkd alone (no resolved)
# would leave the DHCP-given server out of resolv.conf.  It resolves only
# for guests with egress (a bake's build VMs, docs/vm.md).
rm -f "$root/etc/resolv.conf"
printf 'nameserver 169.254.0.3\n' > "$root/etc/resolv.conf"
cat > "$root/etc/apt/sources.list" <<SRC
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://security.debian.org/debian-security bookworm-security main
SRC

# Units: the network by systemd-networkd; kiln-agent; boot to multi-user;
# nothing periodic that a short-lived instance pays for.
chroot "$root" systemctl -q enable systemd-networkd.service kiln-agent.service
chroot "$root" systemctl -q set-default multi-user.target
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
         fstrim.timer man-db.timer systemd-pstore.service; do
    chroot "$root" systemctl -q mask "$u"
done

# Nothing that identifies one machine, and no way in but the instance's key:
# no host keys (cloud-init makes them on the first boot), an empty
# machine-id (systemd fills it), root locked, no cloud-init state.
rm -f "$root"/etc/ssh/ssh_host_*
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
rm -rf "$root"/var/lib/cloud/* "$root"/var/log/journal/* "$root"/tmp/* "$root"/root/.bash_history
chroot "$root" passwd -q -l root >/dev/null
if awk -F: '$2 != "*" && $2 !~ /^!/ { bad = 1 } END { exit !bad }' "$root/etc/shadow"; then
    die "an account has a password"
fi

image_disk "$root" 2G "$kver"
