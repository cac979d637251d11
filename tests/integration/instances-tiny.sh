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
requires_py boto3 awscli
export KILN_ACCEL=tcg
tiny_cache

base_image_build tiny "$cache"
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
on_cleanup kill_serve_and_guests

python3 "$(dirname "$0")/instances_tiny.py" -v || {
    echo "--- serve log" >&2
    tail -n 60 "$T"/serve.log >&2 || true
    die "instances_tiny.py failed"
}
