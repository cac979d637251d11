#!/bin/sh
# Instances for real (docs/vm.md, "Instances"): the tiny base image is
# built into the test's data directory, then instances_tiny.py drives a
# `kiln serve` it starts, stops and kills itself with boto3 and the aws
# CLI: RunInstances with user data that fetches the metadata (v1, and v2
# with HttpTokens=required), GetConsoleOutput, stop/start keeping data
# written through the agent, a crashed QEMU, the restart policy (SIGTERM,
# then kill -9 of serve), terminate with and without DeleteOnTermination,
# the image, key, group and capacity refusals, which leave nothing behind.
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
export KILN_TEST_SNAPSHOT=$(sed -n 2p "$T/ids")
export KILN_TEST_DIR="$T"
# a snapshot of the default account (the one the tests sign as), for the
# images that cannot be launched (deregistered, disabled, private)
mkimage "$T/small.img" 32
kiln image import "$T/small.img" --name instances-small > "$T/small.ids" 2> "$T/import.err" ||
    { cat "$T/import.err" >&2; die "image import failed"; }
export KILN_TEST_OWN_SNAPSHOT=$(sed -n 1p "$T/small.ids")
rm -f "$T/small.img"

# whatever a failed run leaves: serve and the guests of this data directory
kill_all() {
    [ -f "$T/serve.pid" ] && kill -9 "$(cat "$T/serve.pid")" 2>/dev/null
    for p in "$KILN_DATA_DIR"/regions/*/instances/*/qemu.pid; do
        [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null
    done
    return 0
}
on_cleanup kill_all

python3 "$(dirname "$0")/instances_tiny.py" -v || {
    echo "--- serve log" >&2
    tail -n 60 "$T"/serve.log >&2 || true
    die "instances_tiny.py failed"
}
