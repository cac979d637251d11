#!/bin/sh
# `kiln nbd SNAPSHOT` serves a snapshot read-only and lazily to real NBD
# clients: qemu-img info/convert/compare, qemu-io read patterns, nbdinfo
# (--map holes match the snapshot's, --list), nbdcopy; writes are refused;
# SIGTERM stops it cleanly and removes the socket.  Both snapshot backends:
# the volume view (default) and the in-memory chunk cache (--cache-size).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/nbd-lib.sh"
requires qemu-img qemu-io mke2fs cmp truncate python3

# A 64 MiB image: known patterns in whole 4 KiB blocks at known places,
# holes elsewhere, and a partial last block (size not a multiple of 4 KiB).
size=$(((64 << 20) + 1536))
truncate -s $size "$T/disk.img"
qemu-io -f raw -c 'write -P 0xa1 0 1M' -c 'write -P 0xb2 5M 12k' \
    -c 'write -P 0xc3 33M 256k' -c 'write -P 0xd4 60M 4k' "$T/disk.img" >/dev/null
printf 'the last bytes' | dd of="$T/disk.img" bs=1 seek=$((size - 100)) conv=notrunc status=none
snap=$(import_id "$T/disk.img") || die "import failed"
kiln snapshot export "$snap" "$T/export.raw" || die "export failed"

sock="$T/nbd.sock"
uri=$(nbd_uri "$sock")
nbd_start "$snap" "$sock"

# qemu-img info: the size; convert: byte-identical to `kiln snapshot export`.
qemu-img info --output=json "$uri" > "$T/info.json" || die "qemu-img info failed"
assert_eq "$(json_get 'j["virtual-size"]' < "$T/info.json")" "$size" "qemu-img info size"
qemu-img convert -f raw -O raw "$uri" "$T/converted.raw" || die "qemu-img convert failed"
cmp "$T/converted.raw" "$T/export.raw" || die "qemu-img convert differs from the export"
cmp "$T/converted.raw" "$T/disk.img" || die "qemu-img convert differs from the image"
qemu-img compare -f raw -F raw "$uri" "$T/disk.img" >/dev/null || die "qemu-img compare differs"

# qemu-io read patterns, read-only, straight from the export.
qemu-io -r -f raw -c 'read -P 0xa1 0 1M' -c 'read -P 0 1M 4M' -c 'read -P 0xb2 5M 12k' \
    -c 'read -P 0xc3 33M 256k' -c 'read -P 0xd4 60M 4k' -c 'read -P 0 61M 1M' \
    "$uri" > "$T/qemu-io.out" || die "qemu-io read patterns failed: $(cat "$T/qemu-io.out")"
if grep -q "Pattern verification failed" "$T/qemu-io.out"; then
    die "qemu-io pattern mismatch: $(cat "$T/qemu-io.out")"
fi

# Writes to a snapshot are refused (read-only export).
if qemu-io -f raw -c 'write -P 0xff 0 4k' "$uri" > "$T/w.out" 2>&1 &&
    ! grep -qi "error\|denied\|read-only\|not permitted" "$T/w.out"; then
    die "a write to a snapshot succeeded: $(cat "$T/w.out")"
fi
qemu-io -r -f raw -c 'read -P 0xa1 0 4k' "$uri" | grep -q "verification failed" &&
    die "a refused write changed the snapshot"

# qemu-img map over NBD (base:allocation): data exactly where the image has
# it (the chunker stores whole blocks; zero blocks are holes).
qemu-img map -f raw --output=json "$uri" > "$T/map.json" || die "qemu-img map failed"
python3 - "$T/map.json" "$size" <<'PY' || die "qemu-img map does not match the snapshot's holes"
import json, sys
m = json.load(open(sys.argv[1])); size = int(sys.argv[2])
data = [(e["start"], e["length"]) for e in m if e["data"]]
last = size - size % 4096
want = [(0, 1 << 20), (5 << 20, 12 << 10), (33 << 20, 256 << 10), (60 << 20, 4096), (last, size - last)]
if data != want:
    print("got", data, "want", want, file=sys.stderr); sys.exit(1)
PY

if command -v nbdinfo >/dev/null 2>&1; then
    nbdinfo "$uri" > "$T/nbdinfo.out" || die "nbdinfo failed"
    grep -q "export-size: $size" "$T/nbdinfo.out" || die "nbdinfo size: $(cat "$T/nbdinfo.out")"
    grep -q "is_read_only: true" "$T/nbdinfo.out" || die "nbdinfo: not read-only"
    grep -q "can_multi_conn: true" "$T/nbdinfo.out" || die "nbdinfo: no multi-conn"
    grep -q "base:allocation" "$T/nbdinfo.out" || die "nbdinfo: no base:allocation"
    nbdinfo --list "$uri" > "$T/list.out" || die "nbdinfo --list failed"
    grep -q "export=\"$snap\"" "$T/list.out" || grep -q "$snap" "$T/list.out" ||
        die "nbdinfo --list lacks the export: $(cat "$T/list.out")"
    nbdinfo --map "$uri" > "$T/nbdmap.out" || die "nbdinfo --map failed"
    # offset length type description: the data extents, in order.
    got=$(awk '$3 == 0 { printf "%s:%s ", $1, $2 }' "$T/nbdmap.out")
    last=$((size - size % 4096))
    want="0:1048576 5242880:12288 34603008:262144 62914560:4096 $last:$((size - last)) "
    assert_eq "$got" "$want" "nbdinfo --map data extents"
    holes=$(awk '$3 == 3 { n++ } END { print n + 0 }' "$T/nbdmap.out")
    assert_eq "$holes" 4 "nbdinfo --map holes (hole,zero)"
else
    echo "SKIP: nbdinfo not installed (libnbd-bin): --map and --list not checked"
fi

if command -v nbdcopy >/dev/null 2>&1; then
    nbdcopy "$uri" "$T/nbdcopy.raw" || die "nbdcopy failed"
    cmp "$T/nbdcopy.raw" "$T/disk.img" || die "nbdcopy output differs"
    # Several connections at once (multi-conn): same bytes.
    nbdcopy --connections=4 --requests=16 "$uri" - | cmp - "$T/disk.img" ||
        die "nbdcopy over 4 connections differs"
fi

# Bad input: an unknown snapshot, a volume id, a socket in use.
expect_fail kiln nbd snap-0123456789abcdef0 --socket "$T/other.sock"
expect_stderr "does not exist"
expect_fail kiln nbd "$snap" --socket "$sock"
expect_stderr "in use"
expect_fail kiln nbd "$snap"
expect_stderr "socket"
expect_fail kiln nbd not-a-snapshot --socket "$T/x.sock"
[ ! -e "$T/other.sock" ] && [ ! -e "$T/x.sock" ] || die "a failed start left a socket behind"

nbd_stop
[ ! -e "$sock" ] || die "the socket is left behind after SIGTERM"
grep -q "stopped:" "$T/nbd.log" || die "no clean stop in the log: $(cat "$T/nbd.log")"

# The in-memory chunk cache (--cache-size), 1 MiB: smaller than the data, so
# chunks are evicted and fetched again; the same bytes and the same map.
# Also on TCP (loopback, any free port).
nbd_start "$snap" "$sock" --cache-size 1M --threads 4 --tcp 127.0.0.1:0
port=$(sed -n 's/^kiln: serving .* TCP port \([0-9]*\)$/\1/p' "$T/nbd.log" | tail -n 1)
[ -n "$port" ] || die "no TCP port in the log: $(cat "$T/nbd.log")"
qemu-img compare -f raw -F raw "nbd://127.0.0.1:$port" "$T/disk.img" >/dev/null ||
    die "the export over TCP differs"
qemu-img convert -f raw -O raw "$uri" "$T/converted2.raw" || die "convert (memory cache) failed"
cmp "$T/converted2.raw" "$T/disk.img" || die "convert (memory cache) differs"
qemu-io -r -f raw -c 'read -P 0xc3 33M 256k' -c 'read -P 0 61M 1M' -c 'read -P 0xa1 0 1M' \
    "$uri" > "$T/qemu-io2.out" || die "qemu-io (memory cache) failed"
grep -q "verification failed" "$T/qemu-io2.out" && die "qemu-io pattern mismatch (memory cache)"
qemu-img map -f raw --output=json "$uri" > "$T/map2.json" || die "qemu-img map failed"
cmp "$T/map.json" "$T/map2.json" || die "the two snapshot backends report different maps"
if command -v nbdcopy >/dev/null 2>&1; then
    nbdcopy --connections=4 --requests=16 "$uri" - | cmp - "$T/disk.img" ||
        die "nbdcopy (memory cache) differs"
fi
nbd_stop
grep -q "chunk cache .* hits" "$T/nbd.log" || die "no cache counters in the log"
# The store is untouched by serving.
assert_fsck_clean "after serving"
echo "PASS"
