#!/bin/sh
# Protocol abuse (tests/integration/nbd-abuse.py: bad magic, oversized
# options and requests, out-of-range offsets, unknown commands, options and
# flags, requests before negotiation, disconnects mid-option, mid-request
# and mid-payload) against `kiln nbd`, while a qemu-img client copies the
# export in parallel: every abuse gets the right error or a clean close,
# the parallel client is unaffected, the server survives and stops cleanly.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/nbd-lib.sh"
requires qemu-img python3 mke2fs cmp

mkimage "$T/disk.img" 32
snap=$(import_id "$T/disk.img") || die "import failed"
size=$(apparent_bytes "$T/disk.img")
sock="$T/nbd.sock"
uri=$(nbd_uri "$sock")
nbd_start "$snap" "$sock"

# The well-behaved client: copy the export over and over while the abuse
# runs, each copy compared with the image.
(
    i=0
    while [ ! -e "$T/abuse.done" ] || [ $i -lt 2 ]; do
        qemu-img convert -f raw -O raw "$uri" "$T/copy.raw" || exit 1
        cmp "$T/copy.raw" "$T/disk.img" || exit 2
        i=$((i + 1))
    done
    echo "$i" > "$T/copies"
) &
copier=$!

python3 "$(dirname "$0")/nbd-abuse.py" "$sock" "$snap" "$size" || abuse_failed=1
touch "$T/abuse.done"
wait "$copier" || die "the parallel qemu-img client failed (status $?)"
[ -z "${abuse_failed:-}" ] || die "protocol abuse checks failed"
echo "parallel client: $(cat "$T/copies") full copies verified during the abuse"

qemu-img compare -f raw -F raw "$uri" "$T/disk.img" >/dev/null || die "the server no longer serves"
grep -q "bad request magic" "$T/nbd.log" || die "the bad magic was not logged"
nbd_stop
echo "PASS"
