#!/bin/sh
# The templates of examples/ baked for real on the debian base image
# (docs/baking.md): hardened-base (file steps only: offline, no build VM),
# web-server (offline steps, apt-get through the agent in a build VM, the
# tests on a fresh instance) and packer-web (a Packer template through
# `kiln bake`), each launched afterwards through boto3 and checked through
# the agent.  The guests need the Debian mirror for apt-get.
#
# The debootstrap tarball is cached as in instances-debian.sh.
. "$(dirname "$0")/functions.sh"
requires qemu-system-x86_64 debootstrap mkfs.ext4 zstd python3
if ! python3 -c 'import boto3, awscli' >/dev/null 2>&1; then
    echo "SKIP: python3 with boto3 and awscli not found"
    exit 77
fi
export KILN_ACCEL=tcg
cache=${KILN_DEBIAN_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/kiln-test-debian}
mkdir -p "$cache"

kiln base-image build debian --cache-dir "$cache" > "$T/ids" 2> "$T/build.err" ||
    { cat "$T/build.err" >&2; die "base-image build failed"; }
export KILN_TEST_IMAGE=$(sed -n 1p "$T/ids")
export KILN_TEST_DIR="$T"

kill_all() {
    [ -f "$T/serve.pid" ] && kill -9 "$(cat "$T/serve.pid")" 2>/dev/null
    for p in "$KILN_DATA_DIR"/regions/*/instances/*/qemu.pid; do
        [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null
    done
    return 0
}
on_cleanup kill_all

python3 "$(dirname "$0")/bake_examples.py" -v || {
    echo "--- serve log" >&2
    tail -n 60 "$T"/serve.log >&2 || true
    for f in "$KILN_DATA_DIR"/bake-logs/*/*.log; do
        [ -s "$f" ] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }
    done
    die "bake_examples.py failed"
}
