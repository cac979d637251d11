#!/bin/sh
# Incremental import: an ext4 image changed in place through the filesystem
# (debugfs) and imported with --parent stores few new chunks, reports the
# changed 512 KiB blocks, and `snapshot diff` lists exactly the blocks that
# differ; identical data is never stored twice.
. "$(dirname "$0")/functions.sh"
requires mke2fs debugfs python3 cmp

# new_chunks / total_chunks: from the import summary line in "$T/out".
summary() {
    grep '^imported ' "$T/out" || die "no summary line: $(cat "$T/out")"
}
total_chunks() {
    summary | sed -n 's/.* \([0-9][0-9]*\) chunks, [0-9][0-9]* new .*/\1/p'
}
new_chunks() {
    summary | sed -n 's/.* [0-9][0-9]* chunks, \([0-9][0-9]*\) new .*/\1/p'
}

mkimage "$T/v1.img" 64
kiln snapshot import "$T/v1.img" --description v1 >"$T/out" || die "import of v1 failed"
v1=$(tail -n 1 "$T/out")
t1=$(total_chunks)
n1=$(new_chunks)
[ -n "$t1" ] && [ "$t1" -gt 0 ] || die "v1 summary has no chunk count: $(cat "$T/out")"
chunks_v1=$(count_chunks)
# Chunks repeated inside the image are stored once.
assert_eq "$chunks_v1" "$n1" "chunk files vs new chunks of the first import"
# Alone in the store, every stored byte is unique to v1.
kiln du --json > "$T/du1.json" || die "du failed"
u1_alone=$(json_get 'j["Snapshots"][0]["UniqueStoredBytes"]' < "$T/du1.json")
# (its chunks and its block map: what deleting it and running gc frees)
chunk_bytes=$(find "$STORE/chunks" "$STORE/maps" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
assert_eq "$u1_alone" "$chunk_bytes" "unique bytes of the only snapshot vs its chunk and map files"

# Change the image in place as a running instance would: new files, a
# rewritten file, removed files.
cp "$T/v1.img" "$T/v2.img"
head -c 300000 /dev/urandom > "$T/new1"
head -c 70000 /dev/urandom > "$T/new2"
seq 1 20000 > "$T/new3"
{
    echo "mkdir c"
    echo "write $T/new1 c/new1"
    echo "write $T/new2 c/new2"
    echo "write $T/new3 a/new3"
    echo "rm a/f3"
    echo "rm b/text7"
    echo "rm a/f30"
    echo "write $T/new2 b/text9-replaced"
} > "$T/debugfs.cmds"
debugfs -w -f "$T/debugfs.cmds" "$T/v2.img" >"$T/debugfs.out" 2>&1 ||
    die "debugfs failed: $(cat "$T/debugfs.out")"
debugfs -R "ls -l c" "$T/v2.img" 2>/dev/null | grep -q new1 || die "debugfs wrote nothing"
if cmp -s "$T/v1.img" "$T/v2.img"; then die "debugfs did not change the image"; fi

kiln snapshot import "$T/v2.img" --parent "$v1" --description v2 >"$T/out" ||
    die "incremental import failed"
cat "$T/out"
v2=$(tail -n 1 "$T/out")
t2=$(total_chunks)
n2=$(new_chunks)
[ "$n2" -gt 0 ] || die "the changed image added no chunk: $(cat "$T/out")"
[ $((n2 * 4)) -lt "$t2" ] || die "too many new chunks: $n2 of $t2 (want < 25%)"
assert_eq "$(count_chunks)" $((chunks_v1 + n2)) "chunk files after the incremental import"

changed_line=$(grep ' 512 KiB blocks changed from ' "$T/out") ||
    die "no 'blocks changed' line: $(cat "$T/out")"
changed=$(echo "$changed_line" | sed -n "s/^at most \([0-9]*\) of \([0-9]*\) 512 KiB blocks changed from $v1 .*/\1/p")
total=$(echo "$changed_line" | sed -n "s/^at most \([0-9]*\) of \([0-9]*\) 512 KiB blocks changed from $v1 .*/\2/p")
[ -n "$changed" ] || die "unexpected changed line: $changed_line"
assert_eq "$total" $((64 * 2)) "total 512 KiB blocks of a 64 MiB image"
[ "$changed" -gt 0 ] && [ "$changed" -lt "$total" ] ||
    die "changed blocks $changed not in (0, $total)"

# The blocks that differ, computed independently.
python3 - "$T/v1.img" "$T/v2.img" > "$T/expected" <<'PY'
import sys
B = 512 * 1024
with open(sys.argv[1], 'rb') as a, open(sys.argv[2], 'rb') as b:
    i = 0
    while True:
        x, y = a.read(B), b.read(B)
        if not x and not y:
            break
        if x != y:
            print(i)
        i += 1
PY
kiln snapshot diff "$v1" "$v2" > "$T/diff" || die "snapshot diff failed"
[ -s "$T/diff" ] || die "snapshot diff of different images is empty"
diff -u "$T/expected" "$T/diff" || die "snapshot diff lists other blocks than differ"
kiln snapshot diff "$v2" "$v1" > "$T/diff-rev" || die "reverse diff failed"
diff -u "$T/expected" "$T/diff-rev" || die "diff A B and diff B A disagree"
# The import's count comes from comparing block maps, without reading the
# parent's data: it may include a block whose bytes are the same but were cut
# into chunks differently, never miss one that differs.
exact=$(wc -l < "$T/expected" | tr -d ' ')
[ "$changed" -ge "$exact" ] ||
    die "the import reports $changed changed blocks, but $exact differ"

# A snapshot against itself: nothing.
assert_eq "$(kiln snapshot diff "$v1" "$v1")" "" "diff of v1 with itself"
assert_eq "$(kiln snapshot diff "$v2" "$v2")" "" "diff of v2 with itself"

# Identical data again, with and without --parent: nothing new is stored.
before=$(count_chunks)
kiln snapshot import "$T/v2.img" >"$T/out" || die "re-import failed"
assert_eq "$(new_chunks)" 0 "new chunks of re-importing v2"
v2b=$(tail -n 1 "$T/out")
kiln snapshot import "$T/v2.img" --parent "$v2" >"$T/out" || die "re-import with parent failed"
assert_eq "$(new_chunks)" 0 "new chunks of re-importing v2 with --parent v2"
grep -q "^at most 0 of $total 512 KiB blocks changed from $v2 " "$T/out" ||
    die "re-import with --parent reports changes: $(cat "$T/out")"
v2c=$(tail -n 1 "$T/out")
assert_eq "$(count_chunks)" "$before" "chunk files after re-imports"
assert_eq "$(kiln snapshot diff "$v2" "$v2b")" "" "diff of v2 and its re-import"
kiln snapshot show "$v2c" --json | json_get 'j["ParentSnapshotId"]' > "$T/parent"
assert_eq "$(cat "$T/parent")" "$v2" "ParentSnapshotId of the re-import"
kiln snapshot show "$v2" --json | json_get 'j["ParentSnapshotId"]' > "$T/parent"
assert_eq "$(cat "$T/parent")" "$v1" "ParentSnapshotId of v2"
kiln snapshot delete "$v2b"
kiln snapshot delete "$v2c"

# du: v2 shares most of its data with v1, so far fewer bytes are unique to
# it than were unique to v1 alone, and few against its own data.
kiln du --json > "$T/du.json" || die "du failed"
python3 -m json.tool "$T/du.json" >/dev/null || die "du --json is not JSON"
u2=$(json_get "[s['UniqueStoredBytes'] for s in j['Snapshots'] if s['SnapshotId'] == '$v2'][0]" \
    < "$T/du.json")
d2=$(json_get "[s['DataBytes'] for s in j['Snapshots'] if s['SnapshotId'] == '$v2'][0]" \
    < "$T/du.json")
[ "$u2" -gt 0 ] || die "nothing unique to v2 in du: $(cat "$T/du.json")"
[ "$u2" -lt "$u1_alone" ] ||
    die "v2 unique bytes $u2 not below v1's $u1_alone when alone: $(cat "$T/du.json")"
[ $((u2 * 4)) -lt "$d2" ] || die "v2 unique bytes $u2 not below 25% of its data $d2"
assert_eq "$(json_get 'j["Chunks"]' < "$T/du.json")" "$(count_chunks)" "du Chunks vs chunk files"
dedup=$(json_get 'j["DedupRatio"] > 1.5' < "$T/du.json")
assert_eq "$dedup" True "dedup ratio of two mostly equal snapshots above 1.5"
kiln du | grep -q "$v2" || die "kiln du does not list v2"

# Both export identical to their sources.
kiln snapshot export "$v1" "$T/v1.out" || die "export of v1 failed"
cmp "$T/v1.img" "$T/v1.out" || die "v1 export differs"
kiln snapshot export "$v2" "$T/v2.out" || die "export of v2 failed"
cmp "$T/v2.img" "$T/v2.out" || die "v2 export differs"

# The parent may go: the child keeps all its data.
kiln snapshot delete "$v1"
kiln gc --grace 0 >/dev/null
rm -f "$T/v2.out"
kiln snapshot export "$v2" "$T/v2.out" || die "export of v2 after deleting v1 failed"
cmp "$T/v2.img" "$T/v2.out" || die "v2 export differs after deleting its parent"
assert_fsck_clean

echo PASS
