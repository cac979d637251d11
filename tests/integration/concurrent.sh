#!/bin/sh
# Several processes on one store at once: three imports of images that share
# content, an export, and a gc started while they run.  gc waits for the
# writers (it takes the store's lock exclusively), so nothing an import
# reuses or writes is swept; afterwards every snapshot exports identically,
# fsck is clean, and the chunk count is exactly what the snapshots use.
. "$(dirname "$0")/functions.sh"
requires mke2fs debugfs

mkimage "$T/a.img" 48
cp "$T/a.img" "$T/b.img"
head -c 2000000 /dev/urandom > "$T/blob"
debugfs -w -R "write $T/blob /new-file" "$T/b.img" >/dev/null 2>&1
cp "$T/a.img" "$T/c.img"
debugfs -w -R "rm /a/f7" "$T/c.img" >/dev/null 2>&1

base=$(import_id "$T/a.img")
kiln snapshot delete "$base" # its chunks are now garbage, older than nothing

for x in a b c; do
    kiln -q snapshot import "$T/$x.img" > "$T/id.$x" &
done
kiln snapshot export "$base" "$T/none.raw" 2>/dev/null &  # a deleted one: fails cleanly
sleep 0.2
kiln gc --grace 0 > "$T/gc.out" &
wait

for x in a b c; do
    id=$(tail -n 1 "$T/id.$x")
    case "$id" in snap-*) ;; *) die "import of $x printed no id: $(cat "$T/id.$x")" ;; esac
    kiln snapshot export "$id" "$T/$x.out"
    cmp "$T/$x.img" "$T/$x.out" || die "export of $x differs"
done
[ ! -e "$T/none.raw" ] || die "export of a deleted snapshot wrote a file"
assert_fsck_clean

# Whatever gc did while the imports ran, a gc now frees only garbage: the
# snapshots' chunks are all still there and nothing else is.
kiln gc --grace 0 >/dev/null
assert_fsck_clean
used=$(kiln du --json | json_get 'j["Chunks"]')
assert_eq "$(count_chunks)" "$used" "chunk files vs chunks the snapshots use"
echo PASS
