#!/bin/sh
# kiln bake on the tiny image (docs/baking.md): bad templates refused with
# the place named; a bake whose file steps run offline and whose shell step
# runs through the agent, tested on a fresh instance; the cache (no change:
# nothing runs, no VM boots; the last step changed: only it runs); a
# failing step and a kill -9 mid-bake leave nothing behind (the second
# through the janitor of the next `kiln serve`).  bake_tiny.py drives it
# with boto3 against a `kiln serve` on the same data directory.
#
# The tiny image's .debs are cached as in vm-tiny.sh ($KILN_VM_CACHE).
. "$(dirname "$0")/functions.sh"
requires qemu-system-x86_64 dpkg-deb mkfs.ext4 python3
requires_py boto3 awscli
export KILN_ACCEL=tcg
tiny_cache
base_image_build tiny "$cache"
export KILN_TEST_IMAGE=$(sed -n 1p "$T/ids")
export KILN_TEST_DIR="$T"

kill_all() {
    [ -f "$T/bake.pid" ] && kill -9 "$(cat "$T/bake.pid")" 2>/dev/null
    kill_serve_and_guests
}
on_cleanup kill_all

python3 "$(dirname "$0")/bake_tiny.py" -v || {
    echo "--- serve log" >&2
    tail -n 60 "$T"/serve.log >&2 || true
    die "bake_tiny.py failed"
}
