#!/bin/sh
# Bad input is refused with exit 1 and a message naming the problem, and
# leaves nothing behind: no snapshot row, no chunk, no block map, no
# temporary; fsck stays clean.
. "$(dirname "$0")/functions.sh"
requires qemu-img python3 gzip

# refused WHAT MESSAGE IMPORT-ARGS...: the import fails with exit 1 and
# MESSAGE (a grep -E pattern) on stderr; the store is untouched.
refused() {
    _what=$1 _msg=$2
    shift 2
    _st=0
    kiln snapshot import "$@" >"$T/out" 2>"$T/err" || _st=$?
    if [ $_st -ne 1 ]; then
        cat "$T/out" "$T/err" >&2
        die "$_what: expected exit 1, got $_st"
    fi
    grep -Eq -- "$_msg" "$T/err" || die "$_what: stderr lacks '$_msg': $(cat "$T/err")"
    if grep -q 'snap-' "$T/out"; then die "$_what: printed a snapshot id: $(cat "$T/out")"; fi
    assert_no_snapshots "$_what"
    assert_store_empty "$_what"
    assert_fsck_clean "$_what"
    echo "ok: $_what: $(cat "$T/err")"
}

# poke FILE OFFSET HEX-BYTES: overwrite bytes in place.
poke() {
    python3 - "$1" "$2" "$3" <<'PY'
import sys
with open(sys.argv[1], 'r+b') as f:
    f.seek(int(sys.argv[2]))
    f.write(bytes.fromhex(sys.argv[3]))
PY
}

# A small image with data in it, as raw and as qcow2 v3 (4 KiB of random
# data every 256 KiB over 8 MiB).
truncate -s 8M "$T/disk.raw"
i=0
while [ $i -lt 32 ]; do
    head -c 4096 /dev/urandom |
        dd of="$T/disk.raw" bs=4096 seek=$((i * 64)) conv=notrunc status=none
    i=$((i + 1))
done
qemu-img convert -f raw -O qcow2 -o compat=1.1 "$T/disk.raw" "$T/good.qcow2"
qemu-img convert -f raw -O qcow2 -o compat=0.10 "$T/disk.raw" "$T/good-v2.qcow2"

# The data directory exists with an empty store before the first case.
assert_no_snapshots
assert_store_empty

# --- qcow2 headers ------------------------------------------------------------
head -c 50 "$T/good.qcow2" > "$T/trunc50.qcow2"
refused "qcow2 truncated to 50 bytes" "truncated qcow2 header" "$T/trunc50.qcow2"
refused "qcow2 truncated to 50 bytes, --format qcow2" "truncated qcow2 header" \
    "$T/trunc50.qcow2" --format qcow2
head -c 4 "$T/good.qcow2" > "$T/trunc4.qcow2"
refused "qcow2 magic alone (--format qcow2)" "qcow2" "$T/trunc4.qcow2" --format qcow2

# incompatible_features: big-endian u64 at offset 72; bit 40 is in byte 74.
cp "$T/good.qcow2" "$T/feature40.qcow2"
poke "$T/feature40.qcow2" 74 01
refused "unknown incompatible feature bit 40" "incompatible feature bit 40" \
    "$T/feature40.qcow2"
cp "$T/good.qcow2" "$T/feature63.qcow2"
poke "$T/feature63.qcow2" 72 80
refused "unknown incompatible feature bit 63" "incompatible feature bit 63" \
    "$T/feature63.qcow2"
# The corrupt bit (1) and the dirty bit (0) are known bits that make the
# image unsafe to read as is.
cp "$T/good.qcow2" "$T/corrupt-bit.qcow2"
poke "$T/corrupt-bit.qcow2" 79 02
refused "qcow2 marked corrupt" "marked corrupt" "$T/corrupt-bit.qcow2"
cp "$T/good.qcow2" "$T/dirty.qcow2"
poke "$T/dirty.qcow2" 79 01
refused "qcow2 marked dirty" "dirty" "$T/dirty.qcow2"

# Other header fields: version (offset 4), cluster_bits (20), size (24),
# l1_size (36), l1_table_offset (40).
cp "$T/good.qcow2" "$T/v4.qcow2"
poke "$T/v4.qcow2" 4 00000004
refused "qcow2 version 4" "version 4" "$T/v4.qcow2"
cp "$T/good.qcow2" "$T/cb8.qcow2"
poke "$T/cb8.qcow2" 20 00000008
refused "qcow2 cluster_bits 8" "cluster" "$T/cb8.qcow2"
cp "$T/good.qcow2" "$T/cb40.qcow2"
poke "$T/cb40.qcow2" 20 00000028
refused "qcow2 cluster_bits 40" "cluster" "$T/cb40.qcow2"
cp "$T/good.qcow2" "$T/l1small.qcow2"
poke "$T/l1small.qcow2" 36 00000000
refused "qcow2 L1 table too small for the size" "L1" "$T/l1small.qcow2"
cp "$T/good.qcow2" "$T/l1far.qcow2"
poke "$T/l1far.qcow2" 40 0000010000000000
refused "qcow2 L1 table past the end of the file" "L1" "$T/l1far.qcow2"
cp "$T/good.qcow2" "$T/odd-size.qcow2"
poke "$T/odd-size.qcow2" 24 0000000000800001
refused "qcow2 virtual size not a multiple of 512" "512" "$T/odd-size.qcow2"
cp "$T/good.qcow2" "$T/huge.qcow2"
poke "$T/huge.qcow2" 24 7fffffffffffffff
refused "qcow2 virtual size of 2^63" "size" "$T/huge.qcow2"

# --- corrupt qcow2 data: found while reading, after chunks may have been
# written; still nothing may stay behind.
size=$(apparent_bytes "$T/good.qcow2")
head -c $((size / 2)) "$T/good.qcow2" > "$T/half.qcow2"
refused "qcow2 truncated in its data clusters" "qcow2" "$T/half.qcow2"
head -c $((size / 2)) "$T/good-v2.qcow2" > "$T/half-v2.qcow2"
refused "qcow2 v2 truncated in its data clusters" "qcow2" "$T/half-v2.qcow2"

# --- images kiln will not read -------------------------------------------------
qemu-img create -f qcow2 -F raw -b "$T/disk.raw" "$T/backed.qcow2" >/dev/null
refused "qcow2 with a backing file" "backing file '$T/disk.raw'" "$T/backed.qcow2"
refused "qcow2 with a backing file, --format qcow2" "backing file" "$T/backed.qcow2" \
    --format qcow2
if qemu-img create -f qcow2 -o data_file="$T/external.raw" "$T/datafile.qcow2" 8M \
        >/dev/null 2>&1; then
    refused "qcow2 with an external data file" "external data file" "$T/datafile.qcow2"
    qemu-img create -f qcow2 -o data_file="$T/external2.raw",data_file_raw=on \
        "$T/datafile-raw.qcow2" 8M >/dev/null
    refused "qcow2 with a raw external data file" "external data file" \
        "$T/datafile-raw.qcow2"
else
    echo "this qemu-img cannot make external data files: case skipped"
fi

# --- files that are no disk image ------------------------------------------------
head -c $((1 << 20)) /dev/urandom > "$T/payload"
gzip -c "$T/payload" > "$T/payload.gz"
refused "a gzip file" "gzip" "$T/payload.gz"
# ... also when its size happens to be a multiple of 512.
head -c $((512 * 4)) "$T/payload.gz" > "$T/payload512.gz"
refused "a gzip file of 2048 bytes" "gzip" "$T/payload512.gz"
printf 'hello, this is not a disk image\n' > "$T/text.txt"
refused "a text file" "not a multiple of 512" "$T/text.txt"
refused "a text file, --format raw" "not a multiple of 512" "$T/text.txt" --format raw
head -c $((3 * 1048576 + 100)) /dev/urandom > "$T/odd.raw"
refused "3 MiB + 100 bytes" "not a multiple of 512" "$T/odd.raw"
: > "$T/empty"
refused "an empty file" "empty" "$T/empty"
refused "an empty file, --format qcow2" "empty|truncated|qcow2" "$T/empty" --format qcow2
refused "a nonexistent file" "cannot open '$T/nonexistent': No such file" \
    "$T/nonexistent"
mkdir "$T/adir"
refused "a directory" "not a regular file" "$T/adir"
refused "--format qcow2 on a raw file" "not a qcow2 image" "$T/disk.raw" --format qcow2
refused "--parent that does not exist" "snap-0123456789abcdef0' does not exist" \
    "$T/disk.raw" --parent snap-0123456789abcdef0

# The good images import fine in the same store afterwards.
snap=$(import_id "$T/good.qcow2") || die "the good qcow2 does not import"
kiln snapshot export "$snap" "$T/good.out"
cmp "$T/disk.raw" "$T/good.out" || die "the good qcow2 exports different data"
# A raw disk whose first two bytes happen to be gzip's ID1 ID2 is a disk.
{ printf '\037\213\000'; head -c 4093 /dev/urandom; } > "$T/gzip-like.raw"
kiln snapshot import -q "$T/gzip-like.raw" >/dev/null ||
    die "a raw disk starting 1f 8b 00 was refused"

# A --parent that exists but is in another region is not found either.
kiln --region other snapshot list >/dev/null
st=0
kiln --region other snapshot import "$T/disk.raw" --parent "$snap" >"$T/out" 2>"$T/err" ||
    st=$?
assert_eq $st 1 "exit status of --parent from another region"
expect_stderr "does not exist"
assert_eq "$(kiln --region other snapshot list --json)" "[]" "snapshots in region other"

# A fifo must be refused, not waited on for a writer that never comes.
if command -v mkfifo >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1; then
    mkfifo "$T/fifo"
    list_before=$(kiln snapshot list --json)
    chunks_before=$(count_chunks)
    st=0
    timeout 10 "$KILN" snapshot import "$T/fifo" >"$T/out" 2>"$T/err" || st=$?
    [ $st -ne 124 ] || die "import of a fifo hangs (blocked opening it)"
    assert_eq $st 1 "exit status of an import of a fifo"
    expect_stderr "not a regular file"
    assert_eq "$(kiln snapshot list --json)" "$list_before" "snapshots after a fifo"
    assert_eq "$(count_chunks)" "$chunks_before" "chunks after a fifo"
    assert_fsck_clean "a fifo"
    echo "ok: a fifo: $(cat "$T/err")"
fi

echo PASS
