#!/usr/bin/env bash
# make-images.sh [DIR]: builds the four 2 GiB raw ext4 benchmark images of issue 2
# (see ../shared/reference/perf-baselines.md, "Test images") in DIR, default
# $KILN_BENCH_DIR or /var/tmp/kiln-bench:
#
#   a.raw  debootstrap --variant=minbase bookworm + a server package set     (baseline "v1")
#   b.raw  a copy of a.raw changed in place through a loop mount             (baseline "v2i")
#   c.raw  the same changed tree rebuilt from scratch with mke2fs -d         (baseline "v2")
#   d.raw  an unrelated minbase bootstrap of the same suite, other packages  (baseline "c")
#
# Every image is DENSE: zero-filled with dd, then mke2fs -t ext4 -E nodiscard -d TREE, so free
# space is real zero blocks as in a dd of a block device. The root trees are cached in
# DIR/trees/ and every step skips what already exists, so a rerun only builds what is missing.
# The changed tree (DIR/trees/a2) is built once, with a fixed seed, and both b and c derive
# from it. DIR/READY is written once all four images are complete.
#
# Needs root (debootstrap, chroot, mount -o loop) and the network (the Debian mirror
# configured for apt, or $KILN_BENCH_MIRROR). Verbose output goes to DIR/logs/make-images.log.
set -euo pipefail

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C

DIR=${1:-${KILN_BENCH_DIR:-/var/tmp/kiln-bench}}
SUITE=${KILN_BENCH_SUITE:-bookworm}
IMAGE_MIB=2048
SEED=${KILN_BENCH_SEED:-20261127}   # chooses the files that the "update" rewrites
N_REWRITE=555                       # existing files rewritten, as in perf-baselines "v2"
FIXED_MTIME='2026-01-15 12:00:00 UTC'

PKGS_A=(systemd-sysv openssh-server python3 curl ca-certificates iproute2 linux-image-amd64
        less vim-tiny sudo cloud-init ifupdown isc-dhcp-client)
PKGS_UPDATE=(rsync htop jq tmux strace tcpdump)
PKGS_D=(postgresql-15 nginx-light python3 python3-pip openssh-server)

# Fixed filesystem UUIDs (also used as the directory hash seed) so rebuilt images do not vary
# for that reason; b.raw is a copy of a.raw and keeps its UUID, as a volume would.
UUID_A=6b696c6e-6265-4e63-8800-00000000000a
UUID_C=6b696c6e-6265-4e63-8800-00000000000c
UUID_D=6b696c6e-6265-4e63-8800-00000000000d

TREES=$DIR/trees
LOG=$DIR/logs/make-images.log

say() { printf 'make-images: %s\n' "$*"; }
die() { printf 'make-images: error: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- mounts: everything mounted is recorded and undone on exit, innermost first -------------

MOUNTED=()
mount_at() {  # TARGET MOUNT-ARGS...
	local target=$1
	shift
	mkdir -p "$target"
	mount "$@" "$target"
	MOUNTED+=("$target")
}
undo_mounts() {
	local i
	for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
		umount "${MOUNTED[i]}" 2>/dev/null || umount -l "${MOUNTED[i]}" || true
	done
	MOUNTED=()
}
trap undo_mounts EXIT
trap 'exit 130' INT TERM

# True if anything is mounted at or below directory $1.
has_mounts_under() {
	findmnt -rn -o TARGET | awk -v p="${1%/}" '$0 == p || index($0, p "/") == 1 { f = 1 } END { exit !f }'
}

# rm -rf a tree, refusing if something (proc, sysfs, a loop mount) is still mounted inside it.
remove_tree() {
	[[ -e $1 ]] || return 0
	has_mounts_under "$1" && die "refusing to remove '$1': something is mounted under it"
	rm -rf --one-file-system "$1"
}

# --- the Debian mirror ------------------------------------------------------------------------

# Prints the mirror URL that apt uses for $SUITE (deb822 *.sources or one-line *.list format).
find_mirror() {
	if [[ -n ${KILN_BENCH_MIRROR:-} ]]; then
		echo "$KILN_BENCH_MIRROR"
		return
	fi
	local uri='' files
	shopt -s nullglob
	files=(/etc/apt/sources.list.d/*.sources)
	if ((${#files[@]})); then
		uri=$(awk -v s="$SUITE" '
			function flush() { if (u != "" && ok) { print u; u = ""; exit } u = ""; ok = 0 }
			FNR == 1 || /^[[:space:]]*$/ { flush() }
			/^URIs:/ { u = $2 }
			/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) ok = 1 }
			END { flush() }' "${files[@]}" || true)
	fi
	files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
	if [[ -z $uri ]] && ((${#files[@]})); then
		uri=$(awk -v s="$SUITE" '$1 == "deb" {
				i = 2
				if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
				if ($(i + 1) == s) { print $i; exit }
			}' "${files[@]}" 2>/dev/null || true)
	fi
	shopt -u nullglob
	echo "${uri:-http://deb.debian.org/debian}"
}

# --- chroot helpers -----------------------------------------------------------------------------

# Mounts what maintainer scripts need inside TREE and keeps services from starting.
chroot_begin() {
	local t=$1
	mount_at "$t/proc" -t proc proc
	mount_at "$t/sys" -t sysfs sysfs
	mount_at "$t/dev/pts" -t devpts -o newinstance,ptmxmode=0666 devpts
	mount_at "$t/dev/shm" -t tmpfs -o mode=1777 tmpfs
	printf '#!/bin/sh\nexit 101\n' >"$t/usr/sbin/policy-rc.d"
	chmod 755 "$t/usr/sbin/policy-rc.d"
}
chroot_end() {
	rm -f "$1/usr/sbin/policy-rc.d"
	undo_mounts
}

# Runs a command inside TREE with a clean environment.
in_chroot() {
	local t=$1
	shift
	chroot "$t" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
		DEBIAN_FRONTEND=noninteractive "$@"
}

# apt-get update + install PKG... inside TREE, then drop apt's caches and lists.
chroot_install() {
	local t=$1
	shift
	chroot_begin "$t"
	in_chroot "$t" apt-get -q update >>"$LOG" 2>&1 || die "apt-get update in '$t' failed, see $LOG"
	in_chroot "$t" apt-get -q -y --no-install-recommends install "$@" >>"$LOG" 2>&1 ||
		die "apt-get install $* in '$t' failed, see $LOG"
	in_chroot "$t" apt-get clean >>"$LOG" 2>&1
	chroot_end "$t"
	find "$t/var/lib/apt/lists" -maxdepth 1 -type f ! -name lock -delete
	rm -f "$t"/var/cache/apt/*.bin
}

tree_summary() {  # TREE: "N MB, N files"
	printf '%s MB, %s files' \
		"$(du -sb "$1" | awk '{ printf "%.1f", $1 / 1e6 }')" "$(find "$1" -xdev -type f | wc -l)"
}

# --- root trees -----------------------------------------------------------------------------

# NAME PKG...: DIR/trees/NAME = debootstrap minbase + PKGs, apt caches removed (cached).
build_base_tree() {
	local name=$1
	shift
	local tree=$TREES/$name t0
	if [[ -d $tree ]]; then
		say "tree $name: cached in $tree"
		return
	fi
	t0=$(now)
	remove_tree "$tree.tmp"
	say "tree $name: debootstrap --variant=minbase $SUITE from $MIRROR, then: $*"
	debootstrap --variant=minbase --cache-dir="$DIR/cache/debs" "$SUITE" "$tree.tmp" "$MIRROR" \
		>>"$LOG" 2>&1 || die "debootstrap of tree $name failed, see $LOG"
	chroot_install "$tree.tmp" "$@"
	mv "$tree.tmp" "$tree"
	say "tree $name: built in $(since "$t0") s ($(tree_summary "$tree"))"
}

# /etc edits of the update: a new admin user, sshd, sudo and sysctl drop-ins, hostname, motd.
# Plain file edits (no chroot) so they are the same on every run.
edit_etc() {
	local t=$1
	echo kiln-bench-v2 >"$t/etc/hostname"
	printf '127.0.1.1\tkiln-bench-v2\n10.0.0.10\tdb.internal\n10.0.0.11\tcache.internal\n' >>"$t/etc/hosts"
	echo 'deploy:x:1000:1000:Deploy,,,:/home/deploy:/bin/bash' >>"$t/etc/passwd"
	echo 'deploy:x:1000:' >>"$t/etc/group"
	echo 'deploy:!:20468:0:99999:7:::' >>"$t/etc/shadow"
	echo 'deploy:!::' >>"$t/etc/gshadow"
	sed -i 's/^\(sudo:.*:\)$/\1deploy/' "$t/etc/group"
	mkdir -p "$t/home/deploy/.ssh"
	cp -a "$t"/etc/skel/. "$t/home/deploy/"
	echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKilnBenchKeyNotARealKeyJustTextForTheImage deploy@ci' \
		>"$t/home/deploy/.ssh/authorized_keys"
	chmod 700 "$t/home/deploy/.ssh"
	chmod 600 "$t/home/deploy/.ssh/authorized_keys"
	chown -R 1000:1000 "$t/home/deploy"
	mkdir -p "$t/etc/ssh/sshd_config.d" "$t/etc/sudoers.d" "$t/etc/sysctl.d"
	printf 'PasswordAuthentication no\nPermitRootLogin no\nClientAliveInterval 120\n' \
		>"$t/etc/ssh/sshd_config.d/50-kiln-bench.conf"
	echo 'deploy ALL=(ALL) NOPASSWD:ALL' >"$t/etc/sudoers.d/90-deploy"
	chmod 440 "$t/etc/sudoers.d/90-deploy"
	printf 'net.core.somaxconn = 4096\nvm.swappiness = 10\nfs.file-max = 2097152\n' \
		>"$t/etc/sysctl.d/90-kiln-bench.conf"
	printf 'kiln benchmark image v2\nManaged by configuration management; local changes are overwritten.\n' \
		>"$t/etc/motd"
	echo 'APP_ENV=production' >>"$t/etc/environment"
	touch -d "$FIXED_MTIME" "$t"/etc/{hostname,hosts,passwd,group,shadow,gshadow,motd,environment} \
		"$t/etc/ssh/sshd_config.d/50-kiln-bench.conf" "$t/etc/sudoers.d/90-deploy" \
		"$t/etc/sysctl.d/90-kiln-bench.conf"
}

# A 1.3 MB application log (deterministic text).
write_log() {
	local t=$1
	mkdir -p "$t/var/log/kiln-bench-app"
	awk 'BEGIN {
		for (i = 0; i < 11460; i++)
			printf "2026-01-15T%02d:%02d:%02d.%03dZ %-5s worker-%d request id=%08x method=GET path=/api/v1/items/%d status=%d ms=%d\n",
				int(i / 3600) % 24, int(i / 60) % 60, i % 60, (i * 37) % 1000,
				(i % 97 == 0) ? "WARN" : "INFO", i % 8, (i * 2654435761) % 4294967296,
				(i * 7919) % 100000, (i % 211 == 0) ? 500 : 200, (i * 31) % 250
	}' >"$t/var/log/kiln-bench-app/app.log"
	touch -d "$FIXED_MTIME" "$t/var/log/kiln-bench-app/app.log"
}

# "Package updates": N_REWRITE existing single-link files of 4 KiB .. 1 MiB under /usr, chosen
# with the fixed seed, are rewritten with one byte flipped in every 4 KiB, mtime set to
# FIXED_MTIME. Prints the number of files and bytes rewritten.
rewrite_files() {
	(cd "$1" && find usr -xdev -type f -links 1 -size +4095c -size -1048577c -print0 | sort -z) |
		perl -e '
			use strict; use warnings;
			my ($root, $n, $seed, $mtime) = @ARGV;
			chdir($root) or die "cannot chdir to $root: $!\n";
			local $/ = "\0";
			my @files = <STDIN>;
			chomp @files;
			die "only " . scalar(@files) . " candidate files\n" if @files < $n;
			srand($seed);
			for (my $i = $#files; $i > 0; $i--) {      # Fisher-Yates shuffle
				my $j = int(rand($i + 1));
				@files[$i, $j] = @files[$j, $i];
			}
			my $bytes = 0;
			for my $f (@files[0 .. $n - 1]) {
				open(my $fh, "+<:raw", $f) or die "cannot open $f: $!\n";
				my $size = -s $fh;
				for (my $off = 0; $off < $size; $off += 4096) {
					my $len = $size - $off < 4096 ? $size - $off : 4096;
					my $pos = $off + int(rand($len));
					my $c;
					seek($fh, $pos, 0) && read($fh, $c, 1) == 1 or die "cannot read $f: $!\n";
					seek($fh, $pos, 0) && print {$fh} chr(ord($c) ^ 0xff) or die "cannot write $f: $!\n";
				}
				close($fh) or die "cannot write $f: $!\n";
				utime($mtime, $mtime, $f) or die "cannot set mtime of $f: $!\n";
				$bytes += $size;
			}
			printf "%d files, %.1f MB\n", $n, $bytes / 1e6;
		' "$1" "$N_REWRITE" "$SEED" "$(date -d "$FIXED_MTIME" +%s)"
}

# DIR/trees/a2 = tree a + the update (packages added, files rewritten, /etc edits, a log).
build_changed_tree() {
	local tree=$TREES/a2 t0 before after rewritten
	if [[ -d $tree ]]; then
		say "tree a2 (a + update): cached in $tree"
		return
	fi
	t0=$(now)
	remove_tree "$tree.tmp"
	say "tree a2: copy of tree a + packages ${PKGS_UPDATE[*]}, $N_REWRITE rewritten files, /etc edits, a log"
	rsync -aHAX "$TREES/a/" "$tree.tmp/"
	before=$(find "$tree.tmp" -xdev -type f | wc -l)
	chroot_install "$tree.tmp" "${PKGS_UPDATE[@]}"
	after=$(find "$tree.tmp" -xdev -type f | wc -l)
	say "tree a2: packages added $((after - before)) files"
	edit_etc "$tree.tmp"
	write_log "$tree.tmp"
	# last: rewriting binaries may break the chroot's own tools
	rewritten=$(rewrite_files "$tree.tmp")
	say "tree a2: rewritten with one byte flipped per 4 KiB: $rewritten"
	mv "$tree.tmp" "$tree"
	say "tree a2: built in $(since "$t0") s ($(tree_summary "$tree"))"
}

# --- images ---------------------------------------------------------------------------------

# NAME TREE UUID: DIR/NAME.raw, a dense 2 GiB file holding an ext4 built from TREE.
make_fs_image() {
	local name=$1 tree=$2 uuid=$3 img=$DIR/$1.raw t0
	if [[ -f $img ]]; then
		say "$name.raw: exists"
		return
	fi
	has_mounts_under "$tree" && die "cannot build $name.raw: something is mounted under '$tree'"
	t0=$(now)
	rm -f "$img.tmp"
	dd if=/dev/zero of="$img.tmp" bs=1M count="$IMAGE_MIB" status=none
	mke2fs -q -F -t ext4 -E "nodiscard,hash_seed=$uuid" -U "$uuid" -L "kiln-bench-$name" -d "$tree" \
		"$img.tmp" >>"$LOG" 2>&1 || die "mke2fs -d for $name.raw failed, see $LOG"
	e2fsck -fn "$img.tmp" >>"$LOG" 2>&1 || die "e2fsck of the new $name.raw failed, see $LOG"
	mv "$img.tmp" "$img"
	say "$name.raw: built from $tree in $(since "$t0") s"
}

# DIR/b.raw: a copy of a.raw, loop-mounted and brought to tree a2 with rsync as a live volume
# would be updated (changed files are written anew and renamed over the old ones).
make_inplace_image() {
	local img=$DIR/b.raw mnt=$DIR/mnt t0
	if [[ -f $img ]]; then
		say "b.raw: exists"
		return
	fi
	t0=$(now)
	rm -f "$img.tmp"
	cp --sparse=never "$DIR/a.raw" "$img.tmp"
	# noinit_itable: the kernel would otherwise zero the uninitialised inode tables in the
	# background, for as long as the mount lasts (so not reproducibly), and through the loop
	# device that punches holes into the file
	mount_at "$mnt" -o loop,noinit_itable "$img.tmp"
	# --checksum: files whose content is unchanged are never rewritten, whatever their mtime
	rsync -aHAX --checksum --delete --exclude=/lost+found --stats "$TREES/a2/" "$mnt/" >>"$LOG" 2>&1 ||
		die "rsync into the loop-mounted b.raw failed, see $LOG"
	undo_mounts
	rmdir "$mnt"
	e2fsck -fn "$img.tmp" >>"$LOG" 2>&1 || die "e2fsck of the new b.raw failed, see $LOG"
	# keep the image dense even if something still punched a hole (the content is unchanged)
	if (($(stat -c '%b * %B' "$img.tmp") < $(stat -c %s "$img.tmp"))); then
		cp --sparse=never "$img.tmp" "$img.dense"
		mv "$img.dense" "$img.tmp"
	fi
	mv "$img.tmp" "$img"
	say "b.raw: a.raw changed in place (loop mount + rsync from tree a2) in $(since "$t0") s"
}

# Per image: non-zero 4 KiB blocks, and 4 KiB blocks that differ from a.raw at the same offset
# (what offset-aligned CoW such as qcow2 backing files sees).
image_stats() {
	printf '\n| image | file size | non-zero 4 KiB blocks | differs from a.raw at the same offset |\n|---|---|---|---|\n'
	local n
	for n in a b c d; do
		perl -e '
			use strict; use warnings;
			my ($name, $img, $ref) = @ARGV;
			open(my $f, "<:raw", $img) or die "$img: $!\n";
			my $r;
			if ($name ne "a") { open($r, "<:raw", $ref) or die "$ref: $!\n" }
			my $zero = "\0" x 4096;
			my ($nz, $diff, $blocks, $buf, $rbuf) = (0, 0, 0);
			while (my $got = read($f, $buf, 1 << 20)) {
				read($r, $rbuf, $got) if $r;
				for (my $o = 0; $o < $got; $o += 4096) {
					my $b = substr($buf, $o, 4096);
					$blocks++;
					$nz++ if $b ne $zero;
					$diff++ if $r && $b ne substr($rbuf, $o, 4096);
				}
			}
			my $mib = sub { sprintf "%.1f MiB", $_[0] * 4096 / 1048576 };
			printf "| %s.raw | %.0f MiB | %s (%.0f%%) | %s |\n", $name, (-s $img) / 1048576,
				$mib->($nz), 100 * $nz / $blocks, $r ? $mib->($diff) : "-";
		' "$n" "$DIR/$n.raw" "$DIR/a.raw"
	done
}

main() {
	[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot, mount -o loop)"
	mkdir -p "$DIR" "$TREES" "$DIR/logs" "$DIR/cache/debs"
	DIR=$(cd "$DIR" && pwd)
	TREES=$DIR/trees
	LOG=$DIR/logs/make-images.log

	# one builder at a time per DIR; a second caller waits for the first to finish
	exec 9>"$DIR/.lock"
	if ! flock -n 9; then
		say "another make-images.sh is building in $DIR; waiting for it"
		flock 9
	fi

	local t0 n
	t0=$(now)
	if [[ -f $DIR/READY ]]; then
		for n in a b c d; do [[ -f $DIR/$n.raw ]] || rm -f "$DIR/READY"; done
	fi
	if [[ ! -f $DIR/READY ]]; then
		MIRROR=$(find_mirror)
		say "building in $DIR (mirror $MIRROR, log $LOG)"
		if [[ ! -f $DIR/a.raw || ! -f $DIR/b.raw || ! -f $DIR/c.raw ]]; then
			build_base_tree a "${PKGS_A[@]}"
			make_fs_image a "$TREES/a" "$UUID_A"
			build_changed_tree
			make_inplace_image
			make_fs_image c "$TREES/a2" "$UUID_C"
		fi
		if [[ ! -f $DIR/d.raw ]]; then
			build_base_tree d "${PKGS_D[@]}"
			make_fs_image d "$TREES/d" "$UUID_D"
		fi
		image_stats | tee "$DIR/image-stats.md"
		printf 'built %s\n' "$(date -u +%FT%TZ)" >"$DIR/READY"
		say "all four images ready in $(since "$t0") s: $DIR/{a,b,c,d}.raw"
	else
		say "all four images already built in $DIR (remove $DIR/READY or an image to rebuild)"
	fi
}

main
