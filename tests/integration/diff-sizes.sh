#!/bin/sh
# `kiln snapshot diff` between volumes of different sizes: bytes past the
# end of the shorter one compare as zeros, so only blocks where the longer
# one holds data differ.  The expected list is computed independently.
. "$(dirname "$0")/functions.sh"

head -c 3000000 /dev/urandom > "$T/small.raw"
truncate -s 3000320 "$T/small.raw"            # a multiple of 512, not of 4096
cp "$T/small.raw" "$T/big.raw"
truncate -s 1G "$T/big.raw"                   # same bytes, then holes
dd if=/dev/urandom of="$T/big.raw" bs=4096 count=2 seek=100000 conv=notrunc status=none
dd if=/dev/urandom of="$T/big.raw" bs=1 count=1 seek=2999999 conv=notrunc status=none

s=$(import_id "$T/small.raw")
b=$(import_id "$T/big.raw")
kiln snapshot diff "$s" "$b" > "$T/got"
kiln snapshot diff "$b" "$s" > "$T/got2"
python3 - "$T/small.raw" "$T/big.raw" > "$T/want" <<'PY'
import sys
BS = 512 * 1024
a = open(sys.argv[1], "rb"); b = open(sys.argv[2], "rb")
size = max(a.seek(0, 2), b.seek(0, 2)); a.seek(0); b.seek(0)
for k in range((size + BS - 1) // BS):
    x = a.read(BS).ljust(BS, b"\0"); y = b.read(BS).ljust(BS, b"\0")
    if x != y:
        print(k)
PY
cmp "$T/want" "$T/got" || die "diff small big: got $(cat "$T/got"), want $(cat "$T/want")"
cmp "$T/want" "$T/got2" || die "diff big small differs from diff small big"
[ "$(wc -l < "$T/want")" -eq 2 ] || die "expected two differing blocks: $(cat "$T/want")"
echo PASS
