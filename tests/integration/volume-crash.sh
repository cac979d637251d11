#!/bin/sh
# kill -9 of a process writing to a volume: a helper (volume-crash-helper.c)
# writes, zero-writes and trims a volume over a snapshot and flushes every 8
# operations, logging each completed flush; it is killed at a random moment,
# then every flushed operation must read back (bytes that the unflushed
# operations touched may hold either), and `kiln fsck` is clean.  Several
# rounds, each starting from what the last one left.
. "$(dirname "$0")/functions.sh"
: "${VOLUME_CRASH_HELPER:?VOLUME_CRASH_HELPER must name the helper}"
requires python3

ROUNDS=${VOLUME_CRASH_ROUNDS:-8}
H=$VOLUME_CRASH_HELPER

# A 48 MiB disk: random data with a hole, so the volume has a real base.
python3 - "$T/disk.raw" <<'PY'
import os, sys
with open(sys.argv[1], 'wb') as f:
    f.write(os.urandom(20 << 20))
    f.seek(24 << 20)
    f.write(os.urandom(24 << 20))
PY
snap=$(kiln -q snapshot import "$T/disk.raw" | tail -1)
vol=$(kiln volume create --snapshot "$snap" | tail -1)
head -c $((32 << 20)) "$T/disk.raw" > "$T/state.0"

round=1
while [ "$round" -le "$ROUNDS" ]; do
    log="$T/log.$round"
    : > "$log"
    "$H" write "$KILN_DATA_DIR" us-east-1 "$vol" "$round" "$log" &
    pid=$!
    # Let it run a while: 100 to 1500 ms (a kill point, not a measurement).
    sleep "$(python3 -c 'import random; print(random.randint(100, 1500) / 1000)')"
    kill -9 "$pid" 2>/dev/null || die "the writer exited early (round $round)"
    wait "$pid" 2>/dev/null || true
    [ -s "$log" ] || echo "round $round: killed before its first flush"
    "$H" verify "$KILN_DATA_DIR" us-east-1 "$vol" "$round" "$log" \
        "$T/state.$((round - 1))" "$T/state.$round" ||
        die "round $round: a flushed write is missing"
    kiln -q fsck >/dev/null || die "round $round: fsck found damage"
    round=$((round + 1))
done

# The volume still snapshots, and the snapshot holds what the volume holds.
snap2=$(kiln -q volume snapshot "$vol" | tail -1)
kiln -q snapshot export "$snap2" "$T/out.raw"
head -c $((32 << 20)) "$T/out.raw" | cmp - "$T/state.$ROUNDS" ||
    die "the snapshot differs from the volume"
kiln -q fsck >/dev/null || die "fsck after the snapshot"
echo "ok: $ROUNDS kill -9 rounds, every flushed write present, fsck clean"
