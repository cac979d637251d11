#!/bin/sh
# `kiln nbd VOLUME`: a volume created from a snapshot is served read-write.
# qemu-io write patterns and their verification; thousands of random writes,
# trims and zero-writes checked against a reference file; the volume then
# snapshotted incrementally, exported and compared; SIGTERM during writes
# keeps every answered write; kill -9 during writes keeps every flushed
# write; --readonly refuses writes; fsck stays clean.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/nbd-lib.sh"
requires qemu-img qemu-io python3 mke2fs cmp truncate

mkimage "$T/disk.img" 64
snap=$(import_id "$T/disk.img") || die "import failed"
vol=$(kiln volume create --snapshot "$snap" | tail -n 1) || die "volume create failed"
echo "$vol" | grep -Eq '^vol-[0-9a-f]{17}$' || die "volume create printed '$vol'"
vsize=$(kiln volume show "$vol" --json | json_get 'j["Size"] * 1024**3' 2>/dev/null ||
        echo $((1 << 30)))
cp "$T/disk.img" "$T/ref.img"
truncate -s "$vsize" "$T/ref.img"

sock="$T/vol.sock"
uri=$(nbd_uri "$sock")
nbd_start "$vol" "$sock"
qemu-img info --output=json "$uri" | json_get 'j["virtual-size"]' > "$T/vs"
assert_eq "$(cat "$T/vs")" "$vsize" "the export's size is the volume's"
qemu-img compare -f raw -F raw "$uri" "$T/ref.img" >/dev/null ||
    die "a new volume does not read as its snapshot"
# One writer per volume: a second server is refused and creates no socket.
expect_fail kiln nbd "$vol" --socket "$T/second.sock"
expect_stderr "in use"
[ ! -e "$T/second.sock" ] || die "a refused server left a socket"

# qemu-io patterns, mirrored into the reference.
io_cmds="-c 'write -P 0x5a 1M 3M' -c 'write -P 0x6b 100M 64k' -c 'write -z 2M 512k' \
         -c 'write -P 0x7c 5000 3000' -c 'discard 8M 1M' -c flush"
eval qemu-io -f raw $io_cmds "'$uri'" >/dev/null || die "qemu-io writes failed"
eval qemu-io -f raw $io_cmds "'$T/ref.img'" >/dev/null
qemu-io -f raw -c 'write -z 8M 1M' "$T/ref.img" >/dev/null # kiln's trim reads zeros
qemu-io -r -f raw -c 'read -P 0x5a 1M 1M' -c 'read -P 0 2M 512k' -c 'read -P 0x5a 3M 1M' \
    -c 'read -P 0x6b 100M 64k' -c 'read -P 0x7c 5000 3000' -c 'read -P 0 8M 1M' "$uri" \
    > "$T/io.out" || die "qemu-io reads failed"
grep -q "verification failed" "$T/io.out" && die "qemu-io pattern mismatch: $(cat "$T/io.out")"
qemu-img compare -f raw -F raw "$uri" "$T/ref.img" >/dev/null ||
    die "the volume differs from the reference after qemu-io"

# Thousands of random operations, then a full comparison.
python3 "$(dirname "$0")/nbd-random.py" "$sock" "$T/ref.img" 3000 42 ||
    die "random operations failed"
python3 "$(dirname "$0")/nbd-random.py" "$sock" "$T/ref.img" --verify ||
    die "the volume differs from the reference after random operations"
if command -v nbdcopy >/dev/null 2>&1; then
    nbdcopy --connections=4 "$uri" - | cmp - "$T/ref.img" || die "nbdcopy differs"
fi
nbd_stop

# Snapshot the volume (incremental), export it, compare.
snap2=$(kiln volume snapshot "$vol" | tail -n 1) || die "volume snapshot failed"
kiln snapshot export "$snap2" "$T/snap2.raw" || die "export of the volume's snapshot failed"
cmp "$T/snap2.raw" "$T/ref.img" || die "the volume's snapshot differs from the reference"
nbd_start "$snap2" "$T/s2.sock"
qemu-img compare -f raw -F raw "$(nbd_uri "$T/s2.sock")" "$T/ref.img" >/dev/null ||
    die "the new snapshot served over NBD differs"
nbd_stop

# SIGTERM during random writes: the requests already read are answered, the
# volume is flushed, the server exits 0; every write the client saw answered
# (the reference has exactly those) is there after a restart.
nbd_start "$vol" "$sock"
python3 "$(dirname "$0")/nbd-random.py" "$sock" "$T/ref.img" 100000 9 --no-flush-at-end \
    --ready "$T/writer.ready" 2>"$T/writer.err" &
writer=$!
while [ ! -e "$T/writer.ready" ]; do sleep 0.01; done
sleep 0.5
nbd_stop
if wait "$writer"; then
    die "the writer finished 100000 operations before SIGTERM: nothing was in flight"
fi
rm -f "$T/writer.ready"
nbd_start "$vol" "$sock"
python3 "$(dirname "$0")/nbd-random.py" "$sock" "$T/ref.img" --verify ||
    die "an answered write was lost across SIGTERM"
nbd_stop

# kill -9 during writes: what was flushed survives.
nbd_start "$vol" "$sock"
python3 "$(dirname "$0")/nbd-random.py" "$sock" "$T/ref.img" 500 7 ||
    die "random operations (flushed) failed"
cp "$T/ref.img" "$T/flushed.img"
python3 "$(dirname "$0")/nbd-random.py" "$sock" "$T/ref.img" 16000 8 --no-flush-at-end \
    --disjoint --ready "$T/writer.ready" 2>"$T/writer.err" &
writer=$!
while [ ! -e "$T/writer.ready" ]; do sleep 0.01; done
sleep 0.2 # about 1 GiB to write: it cannot be done by then
kill -9 "$nbd_pid"
wait "$nbd_pid" 2>/dev/null || true
nbd_pid=
if wait "$writer"; then
    die "the writer finished before kill -9: nothing was in flight"
fi
nbd_start "$vol" "$sock"
# Every byte is either what was flushed or what an unflushed write put there
# (the unflushed writes never overlap, and the reference has them all).
qemu-img convert -f raw -O raw "$uri" "$T/after.raw" || die "read after restart failed"
python3 - "$T/after.raw" "$T/flushed.img" "$T/ref.img" <<'PY' || die "a flushed write was lost"
import sys
a, f, r = (open(p, "rb") for p in sys.argv[1:4])
bad = 0
off = 0
while True:
    x, y, z = a.read(1 << 20), f.read(1 << 20), r.read(1 << 20)
    if not x:
        break
    if x != y and x != z:
        bad += sum(1 for i in range(len(x)) if x[i] != y[i] and x[i] != z[i])
    off += len(x)
if bad:
    print("%d bytes are neither flushed nor later data" % bad, file=sys.stderr)
    sys.exit(1)
PY
nbd_stop

# --readonly: writes refused, reads served.
nbd_start "$vol" "$sock" --readonly
if qemu-io -f raw -c 'write -P 1 0 4k' "$uri" > "$T/w.out" 2>&1 &&
    ! grep -qi "error\|denied\|read-only\|not permitted" "$T/w.out"; then
    die "a write to a --readonly volume succeeded"
fi
qemu-img convert -f raw -O raw "$uri" "$T/ro.raw" || die "read-only read failed"
nbd_stop
assert_fsck_clean "after serving volumes"
echo "PASS"
