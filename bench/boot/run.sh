#!/usr/bin/env bash
# bench/boot/run.sh [RUNS]: boot to the agent's hello under TCG, measured
# (issue 5, "Benchmarks"; docs/benchmarks.md, "Boot").
#
# One base image (KILN_BOOT_IMAGE: debian or tiny; default debian when
# `kiln base-image build debian` works here, else tiny), one snapshot, and
# for each case a fresh volume of 2 GiB or 20 GiB made from it (the same
# content; a cold fetch cache: the volume's cache is empty, the store's
# files may be in the page cache), booted with `kiln vm boot` until the
# agent's hello (kiln writes DIR/boot-stats then):
#
#   cold          no boot profile (--no-profile)
#   cold+profile  the snapshot's boot profile prefetched
#   1ms           every chunk fetch slowed by 1 ms (KILN_FETCH_DELAY_US=1000,
#                 a remote store), no profile
#   1ms+profile   the same with the profile
#   record        the boot that records the profile (1 ms, no profile yet)
#   floor         the same QEMU command line, kernel, initrd and kernel
#                 arguments (boot-floor), its root disk a local raw file
#                 (`kiln snapshot export`)
#
# Time: from the launch of `kiln vm boot` (or of QEMU for the floor) to the
# hello, measured by this script (polling every 20 ms); kiln's own figure
# (from its start) is in boot-stats.  Bytes fetched from the store and bytes
# the guest read (NBD reads, plus the kernel and initrd kiln copies out of
# the volume first; "guest" leaves those out) are the volume's counters at
# the hello.  "Chunks fetched by reads" are those reads fetched themselves
# rather than the prefetcher: with a fetch latency L, each adds about L
# to the boot, since a boot's reads are serial (perf-baselines.md), whatever
# the machine's load does to the wall-clock figures.  RUNS (default
# 3) repetitions give min and median.
#
# Then "snapshot after writing 50 MiB": a 2 GiB and a 20 GiB volume each
# boot, the guest writes 50 MiB (dd from /dev/urandom, fsync), powers off,
# and `kiln volume snapshot` is timed; stored bytes are the growth of the
# store directory.  (CreateImage, being written, is this plus a reboot.)
#
# $KILN is the kiln binary (default build/src/cmd/kiln), $BOOT_FLOOR the
# boot-floor helper (default next to it in bench/boot).  Output: a Markdown
# table on stdout, logs under the work directory (kept with KEEP=1).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-build}
KILN=${KILN:-$REPO/$BUILD/src/cmd/kiln}
BOOT_FLOOR=${BOOT_FLOOR:-$(dirname "$KILN")/../../bench/boot/boot-floor}
RUNS=${1:-3}
IMAGE=${KILN_BOOT_IMAGE:-}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-boot-bench.XXXXXX")
export KILN_DATA_DIR=$W/data KILN_ACCEL=tcg
unset KILN_FETCH_DELAY_US
boot_pid=

cleanup() {
	if [ -n "$boot_pid" ]; then kill -9 "$boot_pid" 2>/dev/null || true; fi
	for f in "$W"/*/qemu.pid; do
		[ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	if [ "${KEEP:-0}" = 1 ]; then echo "bench/boot: kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

for t in qemu-system-x86_64 dpkg-deb mkfs.ext4; do
	command -v $t >/dev/null || { echo "bench/boot: $t is missing (tools/deps.txt)" >&2; exit 77; }
done
[ -x "$KILN" ] || { echo "bench/boot: no kiln binary at $KILN" >&2; exit 77; }
[ -x "$BOOT_FLOOR" ] || { echo "bench/boot: no boot-floor at $BOOT_FLOOR" >&2; exit 77; }
KILN=$(realpath "$KILN")

log() { echo "bench/boot: $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# ---- the image ----
build_image() { # NAME -> "ami snap" on stdout
	local cache
	case $1 in
	tiny) cache=${KILN_VM_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/kiln-test-debs} ;;
	*) cache=${KILN_BOOT_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/kiln-bench-$1} ;;
	esac
	mkdir -p "$cache"
	"$KILN" base-image build "$1" --cache-dir "$cache" > "$W/ids" 2> "$W/build-$1.err" ||
		return 1
	echo "$(sed -n 1p "$W/ids") $(sed -n 2p "$W/ids")"
}
if [ -z "$IMAGE" ]; then
	if ids=$(build_image debian); then
		IMAGE=debian
	else
		log "the debian image did not build ($(tail -n 1 "$W/build-debian.err")): tiny"
		IMAGE=tiny
		ids=$(build_image tiny) || { cat "$W/build-tiny.err" >&2; exit 1; }
	fi
else
	ids=$(build_image "$IMAGE") || { cat "$W/build-$IMAGE.err" >&2; exit 1; }
fi
snap=${ids#* }
region_dir=$KILN_DATA_DIR/regions/us-east-1
profile=$region_dir/profiles/$snap.profile
snap_bytes=$("$KILN" snapshot show "$snap" | awk '/^VolumeSize/ {print $2}')
log "image $IMAGE, snapshot $snap (${snap_bytes} GiB)"

# ---- one boot ----
# boot NAME SIZE_GIB DELAY_US PROFILE(yes|no) [keep]: boots a new volume
# until the hello, then powers it off (unless `keep`: the caller does).
# Sets $vol, $dir; appends "NAME seconds kiln_seconds fetched read hits
# prefetched" to $W/results.
boot() {
	local name=$1 size=$2 delay=$3 prof=$4 keep=${5:-} t0 t1 extra=()
	vol=$("$KILN" -q volume create --snapshot "$snap" --size "$size" | tail -n 1)
	dir=$W/$name-$RANDOM
	mkdir -p "$dir"
	[ "$prof" = no ] && extra+=(--no-profile)
	t0=$(now)
	if [ "$delay" -gt 0 ]; then
		KILN_FETCH_DELAY_US=$delay "$KILN" vm boot "$vol" --dir "$dir" "${extra[@]}" \
			2> "$dir/boot.err" &
	else
		"$KILN" vm boot "$vol" --dir "$dir" "${extra[@]}" 2> "$dir/boot.err" &
	fi
	boot_pid=$!
	for _ in $(seq 30000); do
		[ -f "$dir/boot-stats" ] && break
		kill -0 "$boot_pid" 2>/dev/null ||
			{ cat "$dir/boot.err" >&2; log "$name: kiln vm boot exited"; exit 1; }
		sleep 0.02
	done
	t1=$(now)
	[ -f "$dir/boot-stats" ] || { log "$name: no hello"; exit 1; }
	local s; s() { sed -n "s/^$1=//p" "$dir/boot-stats"; }
	echo "$name $(elapsed "$t0" "$t1") $(s hello_seconds) $(s bytes_fetched)" \
		"$(s bytes_read) $(s prefetch_hits) $(s prefetch_chunks) $(s boot_files_read)" \
		"$(s chunks_fetched)" \
		>> "$W/results"
	[ -n "$keep" ] || stop_boot
}
stop_boot() {
	kill -TERM "$boot_pid" 2>/dev/null || true
	wait "$boot_pid" || true
	boot_pid=
}

floor() { # RUN
	local dir=$W/floor-$1 t0 t1
	mkdir -p "$dir"
	t0=$(now)
	"$BOOT_FLOOR" "$dir" "$kernel_dir/vmlinuz" "$initrd" "$W/floor.raw" "$KILN" tcg \
		> "$dir/qemu.log" 2>&1 &
	local qpid=$!
	echo $qpid > "$dir/qemu.pid"
	"$KILN" vm agent "$dir/agent.sock" hello --timeout 900 > /dev/null ||
		{ cat "$dir/qemu.log" >&2; log "floor: no hello"; exit 1; }
	t1=$(now)
	echo "floor $(elapsed "$t0" "$t1") - - - - - - -" >> "$W/results"
	"$KILN" vm qmp "$dir/qmp.sock" quit > /dev/null 2>&1 || kill -9 $qpid 2>/dev/null || true
	wait $qpid 2>/dev/null || true
	rm -f "$dir/qemu.pid"
}

: > "$W/results"
rm -f "$profile"
# Each run: the cold boots without a profile, the recording, the boots
# with it, then the floor (kernel and initrd from the first boot's copy).
for run in $(seq "$RUNS"); do
	log "run $run of $RUNS"
	rm -f "$profile"
	for size in 2 20; do boot "cold-$size" $size 0 no; done
	kernel_dir=$dir
	for size in 2 20; do boot "1ms-$size" $size 1000 no; done
	boot record-2 2 1000 yes
	[ -f "$profile" ] || { log "no profile was recorded"; exit 1; }
	for size in 2 20; do
		boot "cold+profile-$size" $size 0 yes
		boot "1ms+profile-$size" $size 1000 yes
	done
	if [ "$run" = 1 ]; then
		"$KILN" -q snapshot export "$snap" "$W/floor.raw"
		initrd=$kernel_dir/initrd.img
		[ -f "$initrd" ] || initrd=-
	fi
	floor "$run"
done

# ---- the table ----
echo
"$(dirname "${BASH_SOURCE[0]}")/table.sh" "$W/results" "$IMAGE" "$snap_bytes" "$RUNS"

# ---- snapshot after writing 50 MiB ----
echo
echo "| snapshot after the guest wrote 50 MiB | seconds | stored MB (store growth) |"
echo "|---|---|---|"
for size in 2 20; do
	boot "write-$size" $size 0 yes keep
	if [ "$IMAGE" = tiny ]; then
		# tiny's file system is 64 MiB: write past it, on the disk itself
		w=(dd if=/dev/urandom of=/dev/vda bs=1M seek=1024 count=50 conv=fsync)
	else
		w=(dd if=/dev/urandom of=/var/tmp/bench-50m bs=1M count=50 conv=fsync)
	fi
	"$KILN" vm agent "$dir/agent.sock" exec "${w[@]}" > /dev/null 2>&1 ||
		{ log "write-$size: the guest could not write"; exit 1; }
	stop_boot
	before=$(du -sb "$region_dir/store" | cut -f1)
	t0=$(now)
	"$KILN" -q volume snapshot "$vol" > /dev/null
	t1=$(now)
	after=$(du -sb "$region_dir/store" | cut -f1)
	echo "| $size GiB volume | $(elapsed "$t0" "$t1") | $(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.1f", (a - b) / 1e6 }') |"
done
