#!/bin/sh
# Damage in the store is found and never exported as data: a flipped byte
# in a chunk, a chunk truncated to nothing, a deleted chunk, a damaged
# block map.  fsck names the snapshot, the bytes and the chunk; export fails
# and writes no file; fsck --repair removes damaged objects so a re-import
# writes them anew.
. "$(dirname "$0")/functions.sh"
requires mke2fs python3 cmp sha256sum

chunk_path() { echo "$STORE/chunks/$(echo "$1" | cut -c1-2)/$1"; }
map_path() { echo "$STORE/maps/$(echo "$1" | cut -c1-2)/$1"; }
list_chunks() { find "$STORE/chunks" -type f -printf '%f\n' | sort; }

# flip FILE: invert one byte in the middle of the payload (after the
# 16-byte header).
flip() {
    python3 - "$1" <<'PY'
import os, sys
p = sys.argv[1]
size = os.path.getsize(p)
assert size > 17, "object too small to flip: %d bytes" % size
off = 16 + (size - 16) // 2
with open(p, 'r+b') as f:
    f.seek(off)
    b = f.read(1)
    f.seek(off)
    f.write(bytes([b[0] ^ 0xff]))
PY
}

# run_fsck [ARGS]: fsck must exit 1; output in "$T/fsck".
fsck_damaged() {
    _st=0
    kiln fsck "$@" >"$T/fsck" 2>&1 || _st=$?
    cat "$T/fsck"
    assert_eq $_st 1 "fsck exit status on a damaged store"
}
fsck_says() {
    grep -q -- "$1" "$T/fsck" || die "fsck output lacks '$1': $(cat "$T/fsck")"
}
fsck_silent_on() {
    if grep -q -- "$1" "$T/fsck"; then die "fsck output names '$1': $(cat "$T/fsck")"; fi
}

# Snapshot A: an ext4 image.  Snapshot B: unrelated random data, so no
# chunk is shared between them.
mkimage "$T/a.img" 32
a=$(import_id "$T/a.img")
list_chunks > "$T/chunks-a"
head -c $((4 << 20)) /dev/urandom > "$T/b.img"
b=$(import_id "$T/b.img")
list_chunks | comm -13 "$T/chunks-a" - > "$T/chunks-b"
[ -s "$T/chunks-b" ] || die "snapshot B added no chunk"
assert_fsck_clean "before any damage"

# Three of A's chunks, the largest first (plenty of payload to flip).
for h in $(cat "$T/chunks-a"); do
    echo "$(stat -c %s "$(chunk_path "$h")") $h"
done | sort -rn | head -n 3 | cut -d' ' -f2 > "$T/victims"
c1=$(sed -n 1p "$T/victims")
c2=$(sed -n 2p "$T/victims")
c3=$(sed -n 3p "$T/victims")
[ -n "$c3" ] || die "snapshot A has fewer than three chunks"

# --- 1. a flipped byte ---------------------------------------------------------
flip "$(chunk_path "$c1")"
fsck_damaged
fsck_says "^snapshot $a: bytes [0-9]*-[0-9]* (512 KiB blocks\{0,1\} [0-9-]*): chunk $c1 is corrupt\$"
fsck_silent_on "$b"
fsck_silent_on "$c2"
# The reported byte range holds exactly the chunk's data: its SHA-256 is
# the chunk id, and the 512 KiB blocks named are those of its first and last
# bytes ("block K" or "blocks K-L").
grep "chunk $c1 is corrupt" "$T/fsck" | head -n 1 |
    sed 's/^.*: bytes \([0-9]*\)-\([0-9]*\) (512 KiB blocks\{0,1\} \([0-9]*\)-\{0,1\}\([0-9]*\)).*$/\1 \2 \3 \4/' > "$T/range"
read -r from to blk lastblk < "$T/range"
assert_eq "$blk" $((from / 524288)) "first 512 KiB block index of byte $from"
assert_eq "${lastblk:-$blk}" $((to / 524288)) "last 512 KiB block index of byte $to"
got=$(python3 -c 'import hashlib, sys
f = open(sys.argv[1], "rb"); f.seek(int(sys.argv[2]))
print(hashlib.sha256(f.read(int(sys.argv[3]) - int(sys.argv[2]) + 1)).hexdigest())' \
    "$T/a.img" "$from" "$to")
assert_eq "$got" "$c1" "SHA-256 of the bytes fsck names"

# Export refuses to write wrong data, and leaves no file.
st=0
kiln snapshot export "$a" "$T/a.out" >"$T/out" 2>"$T/err" || st=$?
cat "$T/err"
assert_eq $st 1 "export exit status with a corrupt chunk"
grep -Eqi 'corrupt|digest mismatch' "$T/err" || die "export error does not say corrupt: $(cat "$T/err")"
[ ! -e "$T/a.out" ] || die "a failed export left its output file"
if ls "$T" | grep -q 'kiln-tmp'; then die "a failed export left a temporary: $(ls "$T")"; fi
# Nor over an existing file: it stays as it was.
echo "precious" > "$T/a.out"
kiln snapshot export "$a" "$T/a.out" 2>/dev/null && die "export over a file succeeded"
assert_eq "$(cat "$T/a.out")" "precious" "file an export failed to replace"
rm -f "$T/a.out"
if command -v qemu-img >/dev/null 2>&1; then
    kiln snapshot export "$a" "$T/a.qcow2" --format qcow2 2>/dev/null &&
        die "qcow2 export with a corrupt chunk succeeded"
    [ ! -e "$T/a.qcow2" ] || die "a failed qcow2 export left its output file"
fi
# Undamaged snapshot B still exports.
kiln snapshot export "$b" "$T/b.out" || die "export of undamaged B failed"
cmp "$T/b.img" "$T/b.out" || die "B exports different data"

# --- 2. a chunk truncated to 0 bytes -------------------------------------------
: > "$(chunk_path "$c2")"
fsck_damaged
fsck_says "chunk $c1 is corrupt"
fsck_says "^snapshot $a: bytes [0-9]*-[0-9]* (512 KiB blocks\{0,1\} [0-9-]*): chunk $c2 is"
fsck_silent_on "$b"

# --- 3. a deleted chunk ----------------------------------------------------------
rm "$(chunk_path "$c3")"
fsck_damaged
fsck_says "^snapshot $a: bytes [0-9]*-[0-9]* (512 KiB blocks\{0,1\} [0-9-]*): chunk $c3 is missing\$"
fsck_silent_on "$b"
st=0
kiln snapshot export "$a" "$T/a.out" 2>"$T/err" || st=$?
assert_eq $st 1 "export exit status with a missing chunk"
[ ! -e "$T/a.out" ] || die "a failed export left its output file"

# --- 4. a damaged block map -----------------------------------------------------
map_b=$(kiln snapshot show "$b" --json | json_get 'j["BlockMapId"]')
[ -f "$(map_path "$map_b")" ] || die "no block map file for B at $(map_path "$map_b")"
flip "$(map_path "$map_b")"
fsck_damaged
fsck_says "^snapshot $b: block map $map_b is corrupt"
fsck_says "chunk $c1 is corrupt"
st=0
kiln snapshot export "$b" "$T/b2.out" 2>"$T/err" || st=$?
assert_eq $st 1 "export exit status with a corrupt block map"
[ ! -e "$T/b2.out" ] || die "a failed export left its output file"
st=0
kiln snapshot diff "$a" "$b" >/dev/null 2>"$T/err" || st=$?
assert_eq $st 1 "diff exit status with a corrupt block map"

# --- 5. repair, re-import -------------------------------------------------------
fsck_damaged --repair
fsck_says removed
[ ! -e "$(chunk_path "$c1")" ] || die "fsck --repair kept corrupt chunk $c1"
[ ! -e "$(chunk_path "$c2")" ] || die "fsck --repair kept truncated chunk $c2"
# Good chunks stay.
for h in $(grep -vxF -f "$T/victims" "$T/chunks-a"); do
    [ -f "$(chunk_path "$h")" ] || die "fsck --repair removed chunk $h"
done
# Snapshots are not deleted by a repair.
assert_eq "$(kiln snapshot list --json | json_get 'sorted(s["SnapshotId"] for s in j)')" \
    "$(python3 -c 'import sys; print(sorted(sys.argv[1:]))' "$a" "$b")" "snapshots after repair"

# Importing the same data writes the removed chunks anew, which heals A.
a2=$(import_id "$T/a.img") || die "re-import of A failed"
for h in "$c1" "$c2" "$c3"; do
    [ -f "$(chunk_path "$h")" ] || die "re-import did not restore chunk $h"
done
kiln snapshot export "$a" "$T/a.out" || die "export of healed A failed"
cmp "$T/a.img" "$T/a.out" || die "healed A exports different data"
kiln snapshot export "$a2" "$T/a2.out" || die "export of A2 failed"
cmp "$T/a.img" "$T/a2.out" || die "A2 exports different data"
fsck_damaged
fsck_silent_on "$a"
fsck_says "snapshot $b: block map $map_b is"

# Re-importing B writes its block map anew (the repair removed the damaged
# one), so the new snapshot is whole.
b2=$(import_id "$T/b.img") || die "re-import of B failed"
rm -f "$T/b2.out"
kiln snapshot export "$b2" "$T/b2.out" || die "export of B2 failed"
cmp "$T/b.img" "$T/b2.out" || die "B2 exports different data"

# Delete the damaged snapshot (if it is still damaged), collect, and fsck
# is clean.
kiln snapshot delete "$b"
kiln gc --grace 0 || die "gc failed"
assert_fsck_clean "after repair, re-import, delete and gc"
rm -f "$T/a.out"
kiln snapshot export "$a" "$T/a.out"
cmp "$T/a.img" "$T/a.out" || die "A exports different data at the end"

echo PASS
