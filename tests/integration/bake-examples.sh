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
requires_py boto3 awscli
export KILN_ACCEL=tcg
cache=${KILN_DEBIAN_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/kiln-test-debian}
mkdir -p "$cache"
base_image_build debian "$cache"
export KILN_TEST_IMAGE=$(sed -n 1p "$T/ids")
export KILN_TEST_DIR="$T"
on_cleanup kill_serve_and_guests

python3 "$(dirname "$0")/bake_examples.py" -v || {
    echo "--- serve log" >&2
    tail -n 60 "$T"/serve.log >&2 || true
    for f in "$KILN_DATA_DIR"/bake-logs/*/*.log; do
        [ -s "$f" ] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }
    done
    die "bake_examples.py failed"
}
