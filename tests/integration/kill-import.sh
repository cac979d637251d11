#!/bin/sh
# kill -9 of an import at random points: afterwards fsck is clean, every
# registered snapshot exports exactly its image, no row points at a missing
# block map, the import re-runs, and gc reclaims what the killed imports
# left.  Takes a minute or two.
. "$(dirname "$0")/functions.sh"
requires python3 cmp

ITERATIONS=${KILL_ITERATIONS:-15}

# ~480 MiB: per 3 MiB, 1 MiB random (incompressible), 1 MiB of numbered
# text (compressible, distinct), 1 MiB of zeros.
python3 - "$T/big.img" <<'PY'
import os, sys
with open(sys.argv[1], 'wb') as f:
    for i in range(160):
        f.write(os.urandom(1 << 20))
        text = b''.join(b'%d: line %d of a compressible megabyte\n' % (i, j)
                        for j in range(30000))
        f.write(text[:1 << 20])
        f.seek(1 << 20, 1)
    f.truncate(f.tell())
PY

# How long one import takes, in a scratch data directory.
t0=$(date +%s%N)
"$KILN" --data-dir "$T/measure" -q snapshot import "$T/big.img" >/dev/null ||
    die "the measuring import failed"
t1=$(date +%s%N)
rm -rf "$T/measure"
duration_ms=$(((t1 - t0) / 1000000))
echo "one import takes ${duration_ms} ms"
# Kill anywhere from before the start to a little after the end.
max_ms=$((duration_ms + duration_ms / 10 + 1))

# check_map_rows: every row with a block map points at a map file.
check_map_rows() {
    if command -v sqlite3 >/dev/null 2>&1; then
        sqlite3 "$REGION_DIR/registry.db" \
            "SELECT id || ' ' || map_id FROM snapshots WHERE map_id IS NOT NULL" |
        while read -r id map; do
            [ -f "$STORE/maps/$(echo "$map" | cut -c1-2)/$map" ] ||
                die "snapshot $id points at missing block map $map"
        done
        bad=$(sqlite3 "$REGION_DIR/registry.db" \
            "SELECT count(*) FROM snapshots WHERE state <> 'completed' OR map_id IS NULL")
        assert_eq "$bad" 0 "rows not completed or without a map"
    fi
}

# check_store_exact: the store holds exactly the chunks and block maps the
# registered snapshots reference, and no temporaries.
check_store_exact() {
    assert_eq "$(count_chunks)" "$(kiln du --json | json_get 'j["Chunks"]')" \
        "chunk files vs chunks referenced after gc ($1)"
    assert_eq "$(count_maps)" \
        "$(kiln snapshot list --json | json_get 'len(set(s["BlockMapId"] for s in j))')" \
        "block map files vs block maps referenced after gc ($1)"
    assert_eq "$(find "$STORE/tmp" -name '*.tmp' | wc -l | tr -d ' ')" 0 \
        "temporaries left after gc --grace 0 ($1)"
}

# A base snapshot (the first 64 MiB) that later imports may name as parent
# and that shares chunks with them; it stays throughout.
head -c $((64 << 20)) "$T/big.img" > "$T/base.img"
base=$(import_id "$T/base.img") || die "import of the base image failed"

# Each iteration starts an import, kills it, checks the store, verifies and
# deletes a snapshot the import may have finished; every other iteration
# collects, so that kills hit imports into an emptied store as well as into
# one that holds the debris of earlier kills.
finished=0 partial=0
i=1
while [ $i -le "$ITERATIONS" ]; do
    delay=$(random_delay $max_ms)
    parent_args=
    if [ $((i % 3)) -eq 0 ]; then parent_args="--parent $base"; fi
    before=$(count_chunks)
    # Every other run uses the named-temporary fallback, which leaves
    # *.tmp files behind when killed.
    if [ $((i % 2)) -eq 0 ]; then
        KILN_NO_TMPFILE=1 "$KILN" -q snapshot import "$T/big.img" $parent_args \
            >"$T/import.out" 2>&1 &
    else
        "$KILN" -q snapshot import "$T/big.img" $parent_args >"$T/import.out" 2>&1 &
    fi
    pid=$!
    sleep "$delay"
    kill -9 $pid 2>/dev/null || true
    st=0
    wait $pid || st=$?
    echo "iteration $i: killed after ${delay}s${parent_args:+ ($parent_args)}, exit $st," \
        "chunk files $before -> $(count_chunks)"
    # A kill that came too late finds a finished import: it must have succeeded.
    [ $st -eq 137 ] || [ $st -eq 0 ] || die "import failed on its own: $(cat "$T/import.out")"
    [ $st -eq 0 ] || partial=$((partial + 1))

    assert_fsck_clean "after kill $i"
    check_map_rows
    for snap in $(kiln snapshot list --json | json_get '" ".join(s["SnapshotId"] for s in j)'); do
        [ "$snap" = "$base" ] && continue
        kiln snapshot export "$snap" "$T/out.img" || die "export of $snap failed"
        cmp "$T/big.img" "$T/out.img" || die "snapshot $snap exports different data"
        rm -f "$T/out.img"
        kiln snapshot delete "$snap"
        finished=$((finished + 1))
    done
    [ "$(kiln snapshot list --json | json_get 'len(j)')" = 1 ] || die "snapshots left over"
    if [ $((i % 2)) -eq 0 ]; then
        kiln gc --grace 0 || die "gc after kill $i failed"
        check_store_exact "after kill $i"
    fi
    i=$((i + 1))
done
echo "$finished of $ITERATIONS imports finished before the kill"
[ $partial -gt 0 ] || die "no kill hit a running import"

# The import re-runs fine.
snap=$(import_id "$T/big.img") || die "import after the kills failed"
kiln snapshot export "$snap" "$T/out.img" || die "export after the kills failed"
cmp "$T/big.img" "$T/out.img" || die "the re-run import exports different data"
rm -f "$T/out.img"

# gc reclaims the chunks and temporaries of killed imports: afterwards the
# store holds exactly the chunks the snapshots reference.
kiln gc --grace 0 || die "gc failed"
check_store_exact "at the end"
assert_fsck_clean "at the end"

# And with every snapshot deleted, gc empties the store.
for s in $(kiln snapshot list --json | json_get '" ".join(s["SnapshotId"] for s in j)'); do
    kiln snapshot delete "$s"
done
kiln gc --grace 0 >/dev/null
assert_store_empty "after deleting every snapshot"

echo PASS
