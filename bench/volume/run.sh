#!/usr/bin/env bash
# run.sh [GiB]: copy-on-write volumes measured (bench/volume/volume-bench.c):
# create time, fetch amplification of cold random reads at several read
# sizes, warm reads, and CreateSnapshot on a small and a 20 GiB volume.
# Prints Markdown.  Uses $KILN_BENCH_DIR/volume (default /var/tmp/kiln-bench)
# as scratch space and removes it afterwards; $BUILD names the build
# directory (default build).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${BUILD:-$HERE/../../build}
DIR=${KILN_BENCH_DIR:-/var/tmp/kiln-bench}/volume
rm -rf "$DIR"
trap 'rm -rf "$DIR"' EXIT
echo "## Volumes ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -m))"
echo
"$BUILD/bench/volume/volume-bench" "$DIR" "${1:-2}"
