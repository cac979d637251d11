#!/bin/sh
# Import then export is byte-identical: a real ext4 image, sparse files,
# odd sizes, a single sector, all zeros, random data; raw exports are sparse;
# qcow2 exports are valid images with the same content.
. "$(dirname "$0")/functions.sh"
requires mke2fs cmp truncate python3

# roundtrip NAME: import $T/NAME, export it raw, compare.  Leaves the
# snapshot id in $snap and the export in $T/NAME.out.
roundtrip() {
    snap=$(import_id "$T/$1") || die "import of $1 failed"
    echo "$snap" | grep -Eq '^snap-[0-9a-f]{17}$' || die "import of $1 printed '$snap'"
    kiln snapshot export "$snap" "$T/$1.out" || die "export of $1 failed"
    cmp "$T/$1" "$T/$1.out" || die "$1: export differs from the imported file"
    assert_eq "$(apparent_bytes "$T/$1.out")" "$(apparent_bytes "$T/$1")" "$1: exported size"
    _vs=$(kiln snapshot show "$snap" --json | json_get 'j["VolumeSizeBytes"]')
    assert_eq "$_vs" "$(apparent_bytes "$T/$1")" "$1: VolumeSizeBytes"
}

# assert_sparse FILE MAX_KIB: FILE occupies at most MAX_KIB on disk.
assert_sparse() {
    _a=$(allocated_kib "$1")
    [ "$_a" -le "$2" ] ||
        die "$1 is not sparse: $_a KiB allocated for $(apparent_bytes "$1") bytes (limit $2 KiB)"
}

# 1. A real ext4 image.
mkimage "$T/ext4.img" 32
roundtrip ext4.img
ext4_snap=$snap
# ext4 with 16 MiB of files in 32 MiB: the export must not be fully allocated.
assert_sparse "$T/ext4.img.out" $((28 * 1024))

# 2. A sparse file: 4 KiB of random data at scattered offsets, including
# unaligned ones, the first and the last 4 KiB of a 64 MiB file.
sparse_file "$T/sparse.img" $((64 << 20)) 0 4096 $((1 << 20)) $((5 << 20 | 512)) \
    $((17 << 20 | 1536)) $((33 << 20 | 524288 - 512)) $((50 << 20)) $(((64 << 20) - 4096))
roundtrip sparse.img
sparse_snap=$snap
# Eight 4 KiB extents of data: allow generous filesystem overhead, but a
# non-sparse export would allocate 64 MiB.
assert_sparse "$T/sparse.img.out" 2048
[ "$(allocated_kib "$T/sparse.img.out")" -gt 0 ] || die "the sparse export holds no data"

# 3. A size that is a multiple of 512 but not of 4096, data up to the end.
head -c $(((10 << 20) + 1536)) /dev/urandom > "$T/odd.img"
roundtrip odd.img
odd_snap=$snap
# ... and the same size with zeros at the end and a partial block of data.
truncate -s $(((10 << 20) + 1536)) "$T/odd-sparse.img"
printf 'the last bytes' | dd of="$T/odd-sparse.img" bs=1 seek=$(((10 << 20) + 1024)) \
    conv=notrunc status=none
roundtrip odd-sparse.img

# 4. A single sector.
head -c 512 /dev/urandom > "$T/sector.img"
roundtrip sector.img
sector_snap=$snap

# 5. All zeros: no chunks stored, and the export is a hole.
before=$(count_chunks)
truncate -s $((32 << 20)) "$T/zero.img"
roundtrip zero.img
zero_snap=$snap
assert_eq "$(count_chunks)" "$before" "chunks stored for an all-zero image"
assert_sparse "$T/zero.img.out" 64
# Zeros written out explicitly (allocated, not a hole) are also stored as
# nothing and exported as a hole.
dd if=/dev/zero of="$T/zero-written.img" bs=1M count=16 status=none
roundtrip zero-written.img
assert_eq "$(count_chunks)" "$before" "chunks stored for an image of written zeros"
assert_sparse "$T/zero-written.img.out" 64

# 6. Random data (incompressible), 24 MiB.
head -c $((24 << 20)) /dev/urandom > "$T/random.img"
roundtrip random.img
random_snap=$snap

# An export onto an existing file replaces it.
echo stale > "$T/over.out"
kiln snapshot export "$sector_snap" "$T/over.out"
cmp "$T/sector.img" "$T/over.out" || die "export over an existing file differs"
# Nothing but the outputs is left next to them.
if ls "$T" | grep -q 'kiln-tmp'; then die "export left a temporary file: $(ls "$T")"; fi

assert_fsck_clean

# 7. qcow2 exports (need qemu-img to check them).
if command -v qemu-img >/dev/null 2>&1; then
    for pair in "ext4.img $ext4_snap" "sparse.img $sparse_snap" "odd.img $odd_snap" \
                "sector.img $sector_snap" "zero.img $zero_snap" "random.img $random_snap"; do
        set -- $pair
        kiln snapshot export "$2" "$T/$1.qcow2" --format qcow2 ||
            die "qcow2 export of $1 failed"
        qemu-img check -f qcow2 "$T/$1.qcow2" >"$T/check" 2>&1 ||
            die "qemu-img check of $1.qcow2: $(cat "$T/check")"
        qemu-img info --output=json -f qcow2 "$T/$1.qcow2" >"$T/info" ||
            die "qemu-img info of $1.qcow2 failed"
        assert_eq "$(json_get 'j["format"], j["virtual-size"]' <"$T/info")" \
            "('qcow2', $(apparent_bytes "$T/$1"))" "$1.qcow2 format and size"
        qemu-img compare -f raw -F qcow2 "$T/$1" "$T/$1.qcow2" >"$T/cmp" 2>&1 ||
            die "qemu-img compare $1 vs its qcow2 export: $(cat "$T/cmp")"
        qemu-img convert -f qcow2 -O raw "$T/$1.qcow2" "$T/$1.back"
        cmp "$T/$1" "$T/$1.back" || die "$1.qcow2 converted back to raw differs"
        # Our own reader takes our own output back.
        back=$(import_id "$T/$1.qcow2") || die "re-import of $1.qcow2 failed"
        diff_out=$(kiln snapshot diff "$2" "$back") || die "diff failed"
        assert_eq "$diff_out" "" "blocks differing between $1 and its qcow2 round trip"
        rm -f "$T/$1.back"
    done
    # A mostly empty image makes a small qcow2.
    [ "$(apparent_bytes "$T/zero.img.qcow2")" -lt $((1 << 20)) ] ||
        die "the qcow2 export of an all-zero image is $(apparent_bytes "$T/zero.img.qcow2") bytes"
    [ "$(apparent_bytes "$T/sparse.img.qcow2")" -lt $((4 << 20)) ] ||
        die "the qcow2 export of a sparse image is $(apparent_bytes "$T/sparse.img.qcow2") bytes"
    assert_fsck_clean
else
    echo "qemu-img not found: qcow2 exports not checked"
fi

echo PASS
