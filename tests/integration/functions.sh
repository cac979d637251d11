# Shared helpers for the integration tests (sourced, POSIX sh).
#
#   requires TOOL...     skip the test (exit 77) when a tool is missing
#   kiln ARGS...         run the kiln under test on the test's data directory
#   die MESSAGE          fail the test
#   expect_fail CMD...   run CMD, fail the test if it succeeds; its stderr is
#                        left in "$T/err"
#   mkimage FILE MiB     a small real ext4 disk image with files in it
#
# Every test gets a private directory $T (removed on exit) and
# KILN_DATA_DIR=$T/data.
set -eu

: "${KILN:?KILN must name the kiln binary under test}"
PATH=$PATH:/sbin:/usr/sbin

T=$(mktemp -d "${TMPDIR:-/tmp}/kiln-test.XXXXXX")
export KILN_DATA_DIR="$T/data"
cleanup_hooks=
cleanup() {
    status=$?
    for h in $cleanup_hooks; do "$h" || true; done
    rm -rf "$T"
    exit $status
}
trap cleanup EXIT INT TERM

on_cleanup() { cleanup_hooks="$1 $cleanup_hooks"; }

requires() {
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "SKIP: $tool not found"
            exit 77
        fi
    done
}

die() {
    echo "FAIL: $*" >&2
    exit 1
}

kiln() {
    "$KILN" "$@"
}

expect_fail() {
    if "$@" >"$T/out" 2>"$T/err"; then
        cat "$T/out" "$T/err" >&2
        die "expected failure: $*"
    fi
    cat "$T/err" >&2
}

expect_stderr() {
    grep -q -- "$1" "$T/err" || die "stderr lacks '$1': $(cat "$T/err")"
}

# mkimage FILE MiB: an ext4 image built from a tree of generated files.
mkimage() {
    _tree="$T/tree.$$"
    rm -rf "$_tree"
    mkdir -p "$_tree/a" "$_tree/b"
    _i=0
    while [ $_i -lt 40 ]; do
        head -c $((_i * 7919 + 1000)) /dev/urandom > "$_tree/a/f$_i"
        seq 1 $((_i * 500)) > "$_tree/b/text$_i"
        _i=$((_i + 1))
    done
    dd if=/dev/zero of="$1" bs=1M count=0 seek="$2" status=none
    mke2fs -q -t ext4 -E nodiscard -d "$_tree" "$1"
    rm -rf "$_tree"
}

# The last line of stdout of an import: the snapshot id.
import_id() {
    kiln snapshot import "$@" | tail -n 1
}

# ---- helpers added for the snapshot-store tests ------------------------------
#
#   REGION_DIR, STORE         the default region's directory and its store
#   count_chunks              number of chunk files in $STORE
#   count_maps                number of block map files in $STORE
#   assert_eq A B WHAT        fail unless A = B (string compare)
#   assert_fsck_clean [WHEN]  `kiln fsck` exits 0 and says "clean"
#   assert_no_snapshots [WHEN]  `kiln snapshot list --json` is []
#   assert_store_empty [WHEN] no chunk, map or temporary files in the store
#   json_get EXPR             evaluate python3 EXPR on the JSON on stdin as j
#   allocated_kib FILE        the file's allocated size in KiB
#   apparent_bytes FILE       the file's size in bytes
#   random_delay MAX_MS       print a random number of seconds in [0, MAX_MS ms]
#   sparse_file FILE SIZE OFFSET...  SIZE bytes, random 4 KiB runs at OFFSETs

REGION_DIR="$KILN_DATA_DIR/regions/us-east-1"
STORE="$REGION_DIR/store"

count_chunks() {
    if [ -d "$STORE/chunks" ]; then
        find "$STORE/chunks" -type f | wc -l | tr -d ' '
    else
        echo 0
    fi
}

count_maps() {
    if [ -d "$STORE/maps" ]; then
        find "$STORE/maps" -type f | wc -l | tr -d ' '
    else
        echo 0
    fi
}

assert_eq() {
    [ "$1" = "$2" ] || die "$3: expected '$2', got '$1'"
}

assert_fsck_clean() {
    if ! kiln fsck >"$T/fsck.out" 2>&1; then
        cat "$T/fsck.out" >&2
        die "fsck is not clean${1:+ ($1)}"
    fi
    grep -q '^clean$' "$T/fsck.out" || die "fsck output lacks 'clean': $(cat "$T/fsck.out")"
}

assert_no_snapshots() {
    _l=$(kiln snapshot list --json) || die "snapshot list failed"
    assert_eq "$_l" "[]" "snapshot list --json${1:+ ($1)}"
}

assert_store_empty() {
    _c=$(count_chunks)
    _m=$(count_maps)
    assert_eq "$_c" 0 "chunk files left behind${1:+ ($1)}"
    assert_eq "$_m" 0 "block map files left behind${1:+ ($1)}"
    if [ -d "$STORE/tmp" ]; then
        _t=$(find "$STORE/tmp" -type f -name '*.tmp' | wc -l | tr -d ' ')
        assert_eq "$_t" 0 "temporary files left behind${1:+ ($1)}"
    fi
}

json_get() {
    python3 -c 'import json, sys
j = json.load(sys.stdin)
print(eval(sys.argv[1]))' "$1"
}

allocated_kib() {
    du -k "$1" | cut -f1
}

apparent_bytes() {
    stat -c %s "$1"
}

random_delay() {
    python3 -c 'import random, sys; print("%.3f" % (random.randint(0, int(sys.argv[1])) / 1000))' "$1"
}

sparse_file() {
    _f=$1 _size=$2
    shift 2
    rm -f "$_f"
    truncate -s "$_size" "$_f"
    for _off in "$@"; do
        head -c 4096 /dev/urandom |
            dd of="$_f" bs=4096 seek="$_off" oflag=seek_bytes conv=notrunc status=none
    done
}

# ---- helpers for the tests that build base images and boot guests -----------
#
#   requires_py MODULE...     skip the test (exit 77) unless python3 imports
#                             every MODULE
#   tiny_cache                $cache: the tiny image's .debs, cached in
#                             $KILN_VM_CACHE, default
#                             ${XDG_CACHE_HOME:-~/.cache}/kiln-test-debs and
#                             shared by every build directory; a cold cache
#                             requires apt-get
#   base_image_build NAME CACHE  `kiln base-image build NAME`: its ids (image,
#                             snapshot) in $T/ids, its stderr in
#                             $T/build.err, shown when it fails
#   kill_serve_and_guests     kill -9 of the `kiln serve` in $T/serve.pid and
#                             of every QEMU of $KILN_DATA_DIR: the cleanup of
#                             a test whose serve or guests a failure may
#                             leave running (on_cleanup kill_serve_and_guests)

requires_py() {
    _mods=$(echo "$*" | sed 's/ /, /g')
    if ! python3 -c "import $_mods" >/dev/null 2>&1; then
        echo "SKIP: python3 with $* not found"
        exit 77
    fi
}

tiny_cache() {
    cache=${KILN_VM_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/kiln-test-debs}
    mkdir -p "$cache"
    if ! ls "$cache"/linux-image-*.deb >/dev/null 2>&1; then
        requires apt-get
    fi
}

base_image_build() {
    kiln base-image build "$1" --cache-dir "$2" > "$T/ids" 2> "$T/build.err" ||
        { cat "$T/build.err" >&2; die "base-image build failed"; }
}

kill_serve_and_guests() {
    [ -f "$T/serve.pid" ] && kill -9 "$(cat "$T/serve.pid")" 2>/dev/null
    for _p in "$KILN_DATA_DIR"/regions/*/instances/*/qemu.pid; do
        [ -f "$_p" ] && kill -9 "$(cat "$_p")" 2>/dev/null
    done
    return 0
}
