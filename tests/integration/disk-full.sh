#!/bin/sh
# The disk filling up: an import that cannot fit fails cleanly with a
# message about space, registers nothing, leaves a consistent store whose
# debris gc reclaims, and the store stays usable.  An export onto a full
# disk leaves no file.  Needs root (tmpfs or loop mount); skips otherwise.
. "$(dirname "$0")/functions.sh"
requires python3 cmp mke2fs

MNT="$T/mnt"
EXPORT_MNT="$T/export-mnt"
mkdir -p "$MNT" "$EXPORT_MNT"
mounted=
unmount_all() {
    for m in $mounted; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
}
on_cleanup unmount_all

# small_fs DIR MiB: mount a filesystem of MiB at DIR: tmpfs, else a loop
# mounted ext4 image.
small_fs() {
    if mount -t tmpfs -o size="$2"m tmpfs "$1" 2>/dev/null; then
        mounted="$1 $mounted"
        return 0
    fi
    dd if=/dev/zero of="$T/$(basename "$1").ext4" bs=1M count=0 seek="$2" status=none
    mke2fs -q -t ext4 -m 0 "$T/$(basename "$1").ext4" 2>/dev/null || return 1
    if mount -o loop "$T/$(basename "$1").ext4" "$1" 2>/dev/null; then
        mounted="$1 $mounted"
        return 0
    fi
    return 1
}
if ! small_fs "$MNT" 40; then
    echo "SKIP: cannot mount a small filesystem (tmpfs or loop; needs root)"
    exit 77
fi

export KILN_DATA_DIR="$MNT/data"
REGION_DIR="$KILN_DATA_DIR/regions/us-east-1"
STORE="$REGION_DIR/store"
kiln snapshot list >/dev/null || die "cannot create a store on the small filesystem"

# 100 MiB of random data cannot fit in 40 MiB, compressed or not.
head -c $((100 << 20)) /dev/urandom > "$T/big.img"
st=0
kiln snapshot import "$T/big.img" >"$T/out" 2>"$T/err" || st=$?
cat "$T/out" "$T/err"
assert_eq $st 1 "exit status of an import onto a full disk"
grep -qi 'space' "$T/err" || die "the error does not mention space: $(cat "$T/err")"
# ... and says what failed, not just the errno text.
grep -q '^kiln: .*: .*[Ss]pace' "$T/err" || die "the error does not say what failed: $(cat "$T/err")"
if grep -q 'snap-' "$T/out"; then die "the failed import printed a snapshot id"; fi
assert_no_snapshots "after the failed import"
assert_fsck_clean "after the failed import"
echo "left behind: $(count_chunks) chunks, $(df -k "$MNT" | awk 'NR == 2 { print $3 }') KiB used"

# gc reclaims everything the failed import wrote.
kiln gc --grace 0 || die "gc on the full store failed"
assert_store_empty "after gc"
used=$(df -k "$MNT" | awk 'NR == 2 { print $3 }')
[ "$used" -lt 4096 ] || die "$used KiB still used on the small filesystem after gc"

# The store is still usable: a small image imports and exports.
mkimage "$T/small.img" 16
snap=$(import_id "$T/small.img") || die "a small import after the failure failed"
kiln snapshot export "$snap" "$T/small.out" || die "export failed"
cmp "$T/small.img" "$T/small.out" || die "the small image exports different data"
assert_fsck_clean "after the small import"

# Leave only a little room, from nothing to about the image's size, and
# import 2 MiB of new random data each time: the import runs out of space at
# different points (opening the registry, storing chunks, writing the block
# map, registering the snapshot).  Each either fails cleanly or succeeds and
# exports correctly.
for free_kib in 0 16 64 256 1024 1800 2060 2090 2120 2150 2180 2210 2240 2270 2300 4096; do
    rm -f "$MNT/filler"
    rows_before=$(kiln snapshot list --json | json_get 'len(j)')
    avail=$(df -k "$MNT" | awk 'NR == 2 { print $4 }')
    if [ "$avail" -gt "$free_kib" ]; then
        dd if=/dev/zero of="$MNT/filler" bs=1k count=$((avail - free_kib)) status=none \
            2>/dev/null || true
    fi
    head -c $((2 << 20)) /dev/urandom > "$T/tiny.img"
    st=0
    kiln snapshot import "$T/tiny.img" >"$T/out" 2>"$T/err" || st=$?
    echo "import with ${free_kib} KiB free: exit $st $(cat "$T/err")"
    rm -f "$MNT/filler"
    case $st in
        0)
            s=$(tail -n 1 "$T/out")
            rm -f "$T/check.out"
            kiln snapshot export "$s" "$T/check.out" || die "export of $s failed"
            cmp "$T/tiny.img" "$T/check.out" || die "the image exports different data"
            ;;
        1)
            grep -Eqi 'space|disk is full' "$T/err" ||
                die "the error does not say the disk is full: $(cat "$T/err")"
            assert_eq "$(kiln snapshot list --json | json_get 'len(j)')" "$rows_before" \
                "snapshots after a failed import with ${free_kib} KiB free"
            ;;
        *) die "import with ${free_kib} KiB free exited $st" ;;
    esac
    assert_fsck_clean "after the import with ${free_kib} KiB free"
done
assert_fsck_clean "after the full-disk imports"
kiln snapshot list --json | json_get '" ".join(s["SnapshotId"] for s in j)' > "$T/ids"
for s in $(cat "$T/ids"); do
    kiln snapshot export "$s" "$T/check.out" >/dev/null || die "export of $s failed"
done
kiln gc --grace 0 >/dev/null || die "gc after the full-disk imports failed"
assert_eq "$(count_chunks)" "$(kiln du --json | json_get 'j["Chunks"]')" \
    "chunk files vs chunks referenced"
assert_fsck_clean "after gc"

# An export onto a full disk fails and leaves no file behind.
if small_fs "$EXPORT_MNT" 8; then
    head -c $((16 << 20)) /dev/urandom > "$T/random16.img"
    snap=$(import_id "$T/random16.img") || die "import of 16 MiB failed"
    st=0
    kiln snapshot export "$snap" "$EXPORT_MNT/out.img" 2>"$T/err" || st=$?
    cat "$T/err"
    assert_eq $st 1 "exit status of an export onto a full disk"
    grep -qi 'space' "$T/err" || die "the export error does not mention space: $(cat "$T/err")"
    [ -z "$(ls -A "$EXPORT_MNT")" ] || die "a failed export left files: $(ls -A "$EXPORT_MNT")"
    st=0
    kiln snapshot export "$snap" "$EXPORT_MNT/out.qcow2" --format qcow2 2>"$T/err" || st=$?
    assert_eq $st 1 "exit status of a qcow2 export onto a full disk"
    [ -z "$(ls -A "$EXPORT_MNT")" ] || die "a failed export left files: $(ls -A "$EXPORT_MNT")"
else
    echo "no second small filesystem: export onto a full disk not tested"
fi

echo PASS
