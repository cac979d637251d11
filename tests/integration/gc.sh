#!/bin/sh
# gc: mark and sweep with a grace period.  Frees exactly the chunks and block
# maps no snapshot uses, nothing with --dry-run, nothing younger than the
# grace period; removes stale temporaries; refuses to sweep when a block map
# cannot be read.
. "$(dirname "$0")/functions.sh"
requires mke2fs python3 cmp

list_chunks() { find "$STORE/chunks" -type f -printf '%f\n' | sort; }
list_maps() { find "$STORE/maps" -type f -printf '%f\n' | sort; }

# gc_expect "EXPECTED SUMMARY PREFIX" ARGS...
gc_expect() {
    _want=$1
    shift
    kiln gc "$@" >"$T/gc" 2>&1 || die "gc $* failed: $(cat "$T/gc")"
    cat "$T/gc"
    case $(cat "$T/gc") in
        "$_want"*) ;;
        *) die "gc $*: expected '$_want...', got '$(cat "$T/gc")'" ;;
    esac
}

# X: an ext4 image.  Y: X with 2 MiB of new random data and a rewritten
# 64 KiB run, so it shares most chunks with X.
mkimage "$T/x.img" 32
cp "$T/x.img" "$T/y.img"
head -c $((2 << 20)) /dev/urandom | dd of="$T/y.img" bs=1M seek=24 conv=notrunc status=none
head -c 65536 /dev/urandom | dd of="$T/y.img" bs=4096 seek=300 conv=notrunc status=none

x=$(import_id "$T/x.img")
list_chunks > "$T/chunks-x"
list_maps > "$T/maps-x"
y=$(import_id "$T/y.img" --parent "$x")
list_chunks > "$T/chunks-y"
list_maps > "$T/maps-y"
comm -13 "$T/chunks-x" "$T/chunks-y" > "$T/only-y"
only_y=$(wc -l < "$T/only-y" | tr -d ' ')
[ "$only_y" -gt 0 ] || die "Y added no chunk"
[ "$(comm -12 "$T/chunks-x" "$T/chunks-y" | wc -l)" -gt "$only_y" ] ||
    die "X and Y share too little for this test"
assert_eq "$(wc -l < "$T/maps-y" | tr -d ' ')" 2 "block maps of two snapshots"
# What deleting Y would free, according to du.
u_y=$(kiln du --json | json_get "[s['UniqueStoredBytes'] for s in j['Snapshots'] if s['SnapshotId'] == '$y'][0]")

# Nothing to collect while both exist.
gc_expect "freed 0 chunks and 0 block maps (0 B), 0 temporaries" --grace 0
list_chunks | cmp -s - "$T/chunks-y" || die "gc freed chunks in use"

kiln snapshot delete "$y"
kiln snapshot show "$y" >/dev/null 2>&1 && die "deleted snapshot still shown"

# Default grace (900 s): everything was written seconds ago, nothing goes.
gc_expect "freed 0 chunks and 0 block maps (0 B)"
list_chunks | cmp -s - "$T/chunks-y" || die "gc with the default grace freed young chunks"
gc_expect "freed 0 chunks" --grace 3600

# --dry-run reports, frees nothing.
gc_expect "would free $only_y chunks and 1 block maps" --dry-run --grace 0
list_chunks | cmp -s - "$T/chunks-y" || die "gc --dry-run removed chunks"
list_maps | cmp -s - "$T/maps-y" || die "gc --dry-run removed block maps"
# The bytes it would free are what du said was unique to Y (plus Y's map).
dry_bytes=$(sed -n 's/^would free [0-9]* chunks and [0-9]* block maps (\([^)]*\)).*/\1/p' "$T/gc")
[ -n "$dry_bytes" ] || die "no byte count in: $(cat "$T/gc")"

# The real thing frees exactly the chunks only Y used, and Y's block map.
gc_expect "freed $only_y chunks and 1 block maps" --grace 0
list_chunks | cmp -s - "$T/chunks-x" || {
    list_chunks | diff "$T/chunks-x" - >&2
    die "after gc the store does not hold exactly X's chunks"
}
list_maps | cmp -s - "$T/maps-x" || die "after gc the store does not hold exactly X's map"
grep -q "kept $(wc -l < "$T/chunks-x" | tr -d ' ') chunks" "$T/gc" ||
    die "gc kept count wrong: $(cat "$T/gc")"
kiln snapshot export "$x" "$T/x.out" || die "export of X after gc failed"
cmp "$T/x.img" "$T/x.out" || die "X exports different data after gc"
assert_fsck_clean "after gc"
assert_eq "$(kiln du --json | json_get 'j["Chunks"]')" "$(count_chunks)" "du Chunks vs chunk files"
[ "$u_y" -gt 0 ] || die "du said nothing was unique to Y"
# A second run has nothing left to do.
gc_expect "freed 0 chunks and 0 block maps (0 B), 0 temporaries" --grace 0

# Temporaries: a stale *.tmp goes after the grace period, a fresh one stays;
# other names in tmp/ are not touched.
mkdir -p "$STORE/tmp"
head -c 10000 /dev/urandom > "$STORE/tmp/12345.0.tmp"
touch -d '2 hours ago' "$STORE/tmp/12345.0.tmp"
head -c 100 /dev/urandom > "$STORE/tmp/12345.1.tmp"
gc_expect "would free 0 chunks and 0 block maps (0 B), 1 temporaries" --dry-run
[ -f "$STORE/tmp/12345.0.tmp" ] || die "gc --dry-run removed a temporary"
gc_expect "freed 0 chunks and 0 block maps (0 B), 1 temporaries" 
[ ! -e "$STORE/tmp/12345.0.tmp" ] || die "gc kept a temporary older than the grace period"
[ -f "$STORE/tmp/12345.1.tmp" ] || die "gc removed a fresh temporary"
gc_expect "freed 0 chunks and 0 block maps (0 B), 1 temporaries" --grace 0
[ ! -e "$STORE/tmp/12345.1.tmp" ] || die "gc --grace 0 kept a temporary"

# Old unreferenced objects go with the default grace: age Y's former chunks
# by re-importing Y, deleting it, and back-dating the files.
y2=$(import_id "$T/y.img")
kiln snapshot delete "$y2"
while read -r h; do
    touch -d '2 hours ago' "$STORE/chunks/$(echo "$h" | cut -c1-2)/$h"
done < "$T/only-y"
gc_expect "freed $only_y chunks and 0 block maps"
list_chunks | cmp -s - "$T/chunks-x" || die "default-grace gc did not free the old chunks"
# (Y's block map is young, so it stays until it is old enough.)
gc_expect "freed 0 chunks and 1 block maps" --grace 0

# A snapshot whose block map cannot be read stops gc: its chunks cannot be
# marked, and sweeping them would turn damage into loss.
z=$(import_id "$T/y.img")
map_z=$(kiln snapshot show "$z" --json | json_get 'j["BlockMapId"]')
list_chunks > "$T/chunks-z"
printf 'garbage' | dd of="$STORE/maps/$(echo "$map_z" | cut -c1-2)/$map_z" bs=1 seek=20 \
    conv=notrunc status=none
kiln snapshot delete "$x"
st=0
kiln gc --grace 0 >"$T/gc" 2>&1 || st=$?
cat "$T/gc"
assert_eq $st 1 "gc exit status with an unreadable block map"
grep -q "$z" "$T/gc" || die "gc does not name the snapshot with the unreadable map"
list_chunks | cmp -s - "$T/chunks-z" || die "gc swept chunks despite an unreadable map"
# Once the damaged snapshot is gone, gc empties the store.
kiln snapshot delete "$z"
gc_expect "freed $(wc -l < "$T/chunks-z" | tr -d ' ') chunks and 2 block maps" --grace 0
assert_store_empty "after deleting every snapshot and gc"
assert_fsck_clean "of an empty store"

echo PASS
