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
if ! python3 -c 'import boto3, awscli' >/dev/null 2>&1; then
    echo "SKIP: python3 with boto3 and awscli not found"
    exit 77
fi
export KILN_ACCEL=tcg
cache=${KILN_VM_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/kiln-test-debs}
mkdir -p "$cache"
if ! ls "$cache"/linux-image-*.deb >/dev/null 2>&1; then
    requires apt-get
fi

kiln base-image build tiny --cache-dir "$cache" > "$T/ids" 2> "$T/build.err" ||
    { cat "$T/build.err" >&2; die "base-image build failed"; }
export KILN_TEST_IMAGE=$(sed -n 1p "$T/ids")
export KILN_TEST_DIR="$T"

kill_all() {
    [ -f "$T/serve.pid" ] && kill -9 "$(cat "$T/serve.pid")" 2>/dev/null
    [ -f "$T/bake.pid" ] && kill -9 "$(cat "$T/bake.pid")" 2>/dev/null
    for p in "$KILN_DATA_DIR"/regions/*/instances/*/qemu.pid; do
        [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null
    done
    return 0
}
on_cleanup kill_all

python3 "$(dirname "$0")/bake_tiny.py" -v || {
    echo "--- serve log" >&2
    tail -n 60 "$T"/serve.log >&2 || true
    die "bake_tiny.py failed"
}
