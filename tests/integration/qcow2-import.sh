#!/bin/sh
# qcow2 images made by qemu-img, read by kiln's own reader: v2 and v3,
# zlib and zstd compressed clusters, 512 byte and 2 MiB clusters, sparse
# and odd-sized; each imported with --format auto and --format qcow2 and
# exported byte-identical to the raw original.  The qcow2 of an image
# already imported raw adds no chunks.
. "$(dirname "$0")/functions.sh"
requires qemu-img mke2fs cmp python3

mkimage "$T/disk.raw" 32
# Scatter some unaligned data in the free space too, and end the image
# with data so the last cluster is partly used.
printf 'odd offset data' | dd of="$T/disk.raw" bs=1 seek=$((20 << 20 | 777)) conv=notrunc \
    status=none
head -c 4096 /dev/urandom | dd of="$T/disk.raw" bs=4096 seek=$(((32 << 20) / 4096 - 1)) \
    conv=notrunc status=none

import_id "$T/disk.raw" >/dev/null || die "import of the raw image failed"
chunks_raw=$(count_chunks)
[ "$chunks_raw" -gt 0 ] || die "the raw import stored no chunks"

# check_variant NAME RAW QEMU-IMG-CONVERT-OPTIONS...
check_variant() {
    _name=$1 _raw=$2
    shift 2
    qemu-img convert -f raw -O qcow2 "$@" "$_raw" "$T/$_name.qcow2" ||
        die "qemu-img convert for $_name failed"
    for fmt in auto qcow2; do
        kiln snapshot import "$T/$_name.qcow2" --format $fmt >"$T/out" 2>"$T/err" || {
            cat "$T/err" >&2
            die "import of $_name.qcow2 with --format $fmt failed"
        }
        _snap=$(tail -n 1 "$T/out")
        # Imported data is already in the store: no new chunk.
        grep -q ' 0 new ' "$T/out" || die "$_name.qcow2 ($fmt) added chunks: $(cat "$T/out")"
        _vs=$(kiln snapshot show "$_snap" --json | json_get 'j["VolumeSizeBytes"]')
        assert_eq "$_vs" "$(apparent_bytes "$_raw")" "$_name ($fmt) VolumeSizeBytes"
        kiln snapshot export "$_snap" "$T/$_name.out" || die "export of $_name failed"
        cmp "$_raw" "$T/$_name.out" || die "$_name.qcow2 ($fmt) exports different data"
        rm -f "$T/$_name.out"
    done
    echo "ok: $_name"
}

check_variant v2 "$T/disk.raw" -o compat=0.10
check_variant v3 "$T/disk.raw" -o compat=1.1
check_variant v3-compressed "$T/disk.raw" -c -o compat=1.1
check_variant v2-compressed "$T/disk.raw" -c -o compat=0.10
if qemu-img create -f qcow2 -o compression_type=zstd "$T/probe.qcow2" 1M >/dev/null 2>&1; then
    check_variant v3-zstd "$T/disk.raw" -c -o compression_type=zstd
else
    echo "this qemu-img has no zstd: zstd-compressed clusters not tested"
fi
check_variant cluster512 "$T/disk.raw" -o cluster_size=512
check_variant cluster2M "$T/disk.raw" -o cluster_size=2M
check_variant cluster2M-compressed "$T/disk.raw" -c -o cluster_size=2M
check_variant cluster512-compressed "$T/disk.raw" -c -o cluster_size=512
check_variant lazy-refcounts "$T/disk.raw" -o compat=1.1,lazy_refcounts=on
check_variant refcount-bits-1 "$T/disk.raw" -o refcount_bits=1
check_variant preallocated "$T/disk.raw" -o preallocation=metadata
# Extended L2 entries (subclusters) are an incompatible feature: either
# read correctly or refused, never misread.
if qemu-img create -f qcow2 -o extended_l2=on "$T/probe.qcow2" 1M >/dev/null 2>&1; then
    qemu-img convert -f raw -O qcow2 -o extended_l2=on "$T/disk.raw" "$T/ext-l2.qcow2"
    if snap=$(kiln -q snapshot import "$T/ext-l2.qcow2" 2>"$T/err"); then
        kiln snapshot export "$snap" "$T/ext-l2.out"
        cmp "$T/disk.raw" "$T/ext-l2.out" || die "extended_l2 image imported wrongly"
        rm -f "$T/ext-l2.out"
        echo "ok: extended-l2"
    else
        cat "$T/err"
        echo "ok: extended-l2 refused"
    fi
fi
assert_eq "$(count_chunks)" "$chunks_raw" "chunks after the qcow2 imports"

# Sizes and content the ext4 image does not cover: an odd size that is not a
# multiple of the cluster size, data in the last partial cluster, random
# (incompressible) data where compressed clusters fall back to plain ones.
head -c $((3 << 20)) /dev/urandom > "$T/odd.raw"
truncate -s $(((5 << 20) + 1536)) "$T/odd.raw"
printf 'tail' | dd of="$T/odd.raw" bs=1 seek=$(((5 << 20) + 1100)) conv=notrunc status=none
check_variant_new() {
    _name=$1 _raw=$2
    shift 2
    qemu-img convert -f raw -O qcow2 "$@" "$_raw" "$T/$_name.qcow2"
    _snap=$(import_id "$T/$_name.qcow2" --format auto) || die "import of $_name failed"
    kiln snapshot export "$_snap" "$T/$_name.out" || die "export of $_name failed"
    cmp "$_raw" "$T/$_name.out" || die "$_name.qcow2 exports different data"
    rm -f "$T/$_name.out"
    echo "ok: $_name"
}
check_variant_new odd-v3 "$T/odd.raw"
check_variant_new odd-v2-compressed "$T/odd.raw" -c -o compat=0.10
check_variant_new odd-cluster2M "$T/odd.raw" -o cluster_size=2M

# An empty qcow2 reads as zeros; one written through qemu-io (allocation
# order unlike convert's) reads back what was written.
qemu-img create -f qcow2 "$T/empty.qcow2" 16M >/dev/null
truncate -s 16M "$T/empty.raw"
snap=$(import_id "$T/empty.qcow2") || die "import of an empty qcow2 failed"
kiln snapshot export "$snap" "$T/empty.out"
cmp "$T/empty.raw" "$T/empty.out" || die "an empty qcow2 exports non-zero data"
if command -v qemu-io >/dev/null 2>&1; then
    qemu-img create -f qcow2 -o cluster_size=4096 "$T/io.qcow2" 8M >/dev/null
    qemu-io -f qcow2 -c 'write -P 0xab 7M 64k' -c 'write -P 0x11 0 4k' \
        -c 'write -P 0x22 3M 100k' -c 'write -z 3M 8k' "$T/io.qcow2" >/dev/null
    qemu-img convert -f qcow2 -O raw "$T/io.qcow2" "$T/io.raw"
    snap=$(import_id "$T/io.qcow2") || die "import of the qemu-io image failed"
    kiln snapshot export "$snap" "$T/io.out"
    cmp "$T/io.raw" "$T/io.out" || die "the qemu-io written qcow2 exports different data"
    echo "ok: qemu-io written"
fi

# --format raw on a qcow2 imports the container file itself, byte for byte.
snap=$(import_id "$T/v3.qcow2" --format raw) || die "--format raw on a qcow2 failed"
kiln snapshot export "$snap" "$T/asraw.out"
cmp "$T/v3.qcow2" "$T/asraw.out" || die "--format raw did not import the file as is"

assert_fsck_clean
echo PASS
