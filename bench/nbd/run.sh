#!/usr/bin/env bash
# bench/nbd/run.sh [RUNS]: warm NBD read latency and throughput, the same
# client (qemu-img bench over NBD on a unix socket) against kiln's NBD server and two
# peers serving the same data, printed as a Markdown table.
#
#   kiln-snap      `kiln nbd SNAP`: a snapshot of the image, served lazily
#                  through the volume read path (a private cache file)
#   kiln-snap-mem  `kiln nbd SNAP --cache-size 2xIMAGE`: the same through the
#                  in-memory cache of decoded chunks
#   kiln-vol       `kiln nbd VOL`: a volume created from that snapshot
#                  (overlay, local cache file, chunk store)
#   nbdkit      `nbdkit file` serving the raw image
#   qemu-nbd    `qemu-nbd -r` serving the raw image
#
# Per server and run: one warm-up pass over the whole export (so every
# chunk is cached and the raw file is in the page cache), then 4 KiB reads
# at queue depth 1 (µs per request) and 64 KiB reads at queue depth 16
# (GB/s), sequential over the export, wrapping.  RUNS (default 3) runs give
# the min-max ranges.  $KILN is the kiln binary (default build/src/cmd/kiln),
# $KILN_BENCH_SIZE_MB the image size (default 256).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KILN=${KILN:-$REPO/build/src/cmd/kiln}
RUNS=${1:-3}
SIZE_MB=${KILN_BENCH_SIZE_MB:-256}
N4K=${KILN_BENCH_N4K:-40000}
N64K=${KILN_BENCH_N64K:-40000}
W=$(mktemp -d "${TMPDIR:-/tmp}/kiln-nbd-bench.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT

for t in qemu-img nbdkit qemu-nbd; do
	command -v $t >/dev/null || { echo "bench/nbd: $t is missing (tools/deps.txt)" >&2; exit 77; }
done
[ -x "$KILN" ] || { echo "bench/nbd: no kiln binary at $KILN" >&2; exit 77; }

export KILN_DATA_DIR=$W/data
head -c $((SIZE_MB << 20)) /dev/urandom > "$W/img.raw"
snap=$("$KILN" -q snapshot import "$W/img.raw" | tail -n 1)
vol=$("$KILN" -q volume create --snapshot "$snap" | tail -n 1)
# The volume is 1 GiB at least: every server is read through a raw layer
# limited to the image's bytes, so all read the same data.
uri() { echo "driver=raw,size=$((SIZE_MB << 20)),file.driver=nbd,file.server.type=unix,file.server.path=$1"; }

wait_sock() {
	for _ in $(seq 600); do [ -S "$1" ] && return 0; sleep 0.05; done
	echo "bench/nbd: $1 never appeared" >&2; exit 1
}

start() { # NAME -> socket path in $sock
	sock=$W/$1.sock
	rm -f "$sock"
	case $1 in
	kiln-snap) "$KILN" -q nbd "$snap" --socket "$sock" 2>>"$W/kiln.log" & ;;
	kiln-snap-mem) "$KILN" -q nbd "$snap" --socket "$sock" --cache-size $((SIZE_MB * 2))M 2>>"$W/kiln.log" & ;;
	kiln-vol) "$KILN" -q nbd "$vol" --socket "$sock" 2>>"$W/kiln.log" & ;;
	nbdkit) nbdkit -f -U "$sock" file "$W/img.raw" 2>>"$W/nbdkit.log" & ;;
	qemu-nbd) qemu-nbd -r -f raw -k "$sock" -t "$W/img.raw" 2>>"$W/qemu-nbd.log" & ;;
	esac
	pids+=($!)
	server=$!
	wait_sock "$sock"
}

stop() {
	kill -TERM "$server"
	wait "$server" 2>/dev/null || true
}

# bench URI COUNT DEPTH SIZE -> seconds
bench() {
	qemu-img bench --image-opts -t none -c "$2" -d "$3" -s "$4" "$1" 2>&1 |
		sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p'
}

declare -A lat tput
for name in kiln-snap kiln-snap-mem kiln-vol nbdkit qemu-nbd; do
	for run in $(seq "$RUNS"); do
		start "$name"
		u=$(uri "$sock")
		# Warm-up: the image's bytes once (64 KiB, QD16).
		bench "$u" $((SIZE_MB * 16)) 16 65536 >/dev/null
		s4=$(bench "$u" "$N4K" 1 4096)
		s64=$(bench "$u" "$N64K" 16 65536)
		stop
		lat[$name]+="$(awk -v s="$s4" -v n="$N4K" 'BEGIN { printf "%.1f", s / n * 1e6 }') "
		tput[$name]+="$(awk -v s="$s64" -v n="$N64K" 'BEGIN { printf "%.2f", n * 65536 / s / 1e9 }') "
	done
done

range() { tr ' ' '\n' | sed '/^$/d' | sort -g | sed -n '1p;$p' | paste -sd- | sed 's/-/ – /'; }
echo "| server | 4 KiB reads, QD1 (µs/request) | 64 KiB reads, QD16 (GB/s) |"
echo "| --- | --- | --- |"
for name in kiln-snap kiln-snap-mem kiln-vol nbdkit qemu-nbd; do
	echo "| $name | $(echo "${lat[$name]}" | range) | $(echo "${tput[$name]}" | range) |"
done
echo
echo "$RUNS runs; ${SIZE_MB} MiB of random data; qemu-img bench $(qemu-img --version | head -1 | awk '{print $3}'),"
echo "nbdkit $(nbdkit --version | awk '{print $2}'); $(nproc) cores; $(date -u +%Y-%m-%d)."
