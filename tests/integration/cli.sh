#!/bin/sh
# The command line: help texts, usage errors (exit 2), failures (exit 1),
# JSON output and --region.
. "$(dirname "$0")/functions.sh"
requires python3 mke2fs

# expect_exit STATUS CMD...: run CMD, fail unless it exits STATUS; its
# stdout and stderr are left in "$T/out" and "$T/err".
expect_exit() {
    _want=$1
    shift
    _st=0
    "$@" >"$T/out" 2>"$T/err" || _st=$?
    if [ "$_st" != "$_want" ]; then
        cat "$T/out" "$T/err" >&2
        die "expected exit $_want, got $_st: $*"
    fi
}

expect_stdout() {
    grep -q -- "$1" "$T/out" || die "stdout lacks '$1': $(cat "$T/out")"
}

# --- help ------------------------------------------------------------------
expect_exit 0 kiln --help
for w in snapshot fsck gc du --data-dir --region; do expect_stdout "$w"; done
for w in import export list show delete diff; do expect_stdout "snapshot $w"; done
expect_exit 0 kiln -h
expect_stdout 'usage: kiln'

expect_exit 0 kiln snapshot --help
for w in import export list show delete diff; do expect_stdout "$w"; done

expect_exit 0 kiln snapshot import --help
for w in --format raw qcow2 auto --parent --description --threads; do expect_stdout "$w"; done
expect_exit 0 kiln snapshot export --help
for w in --format raw qcow2; do expect_stdout "$w"; done
expect_exit 0 kiln snapshot list --help
expect_stdout --json
expect_exit 0 kiln snapshot show --help
expect_stdout --json
expect_stdout SNAP
expect_exit 0 kiln snapshot delete --help
expect_stdout SNAP
expect_exit 0 kiln snapshot diff --help
expect_stdout SNAP_A
expect_stdout '512 KiB'
expect_exit 0 kiln fsck --help
expect_stdout --repair
expect_exit 0 kiln gc --help
expect_stdout --dry-run
expect_stdout --grace
expect_exit 0 kiln du --help
expect_stdout --json
# Help never touches the data directory.
[ ! -e "$KILN_DATA_DIR" ] || die "--help created the data directory"

# --- usage errors: exit 2 --------------------------------------------------
expect_exit 2 kiln
expect_exit 2 kiln frobnicate
expect_stderr "unknown verb 'frobnicate'"
expect_exit 2 kiln snapshot
expect_exit 2 kiln snapshot frobnicate
expect_stderr "frobnicate"
expect_exit 2 kiln --frobnicate snapshot list
expect_stderr "unknown option"
expect_exit 2 kiln snapshot list --frobnicate
expect_exit 2 kiln fsck --frobnicate
expect_exit 2 kiln gc --frobnicate
expect_exit 2 kiln du --frobnicate
expect_exit 2 kiln snapshot list --parent snap-00000000000000000
expect_exit 2 kiln fsck --dry-run
expect_exit 2 kiln gc --grace soon
expect_stderr grace
expect_exit 2 kiln gc --grace -5
expect_exit 2 kiln fsck extra
expect_exit 2 kiln snapshot import
expect_exit 2 kiln snapshot export snap-00000000000000000
expect_exit 2 kiln snapshot diff snap-00000000000000000
expect_exit 2 kiln snapshot import "$T/x" --format vmdk
expect_stderr vmdk
expect_exit 2 kiln snapshot export snap-00000000000000000 "$T/x" --format auto
expect_exit 2 kiln snapshot import "$T/x" --threads 0
expect_exit 2 kiln snapshot import "$T/x" --description \
    "$(python3 -c 'print("d" * 256)')"
expect_stderr 255

# Bad snapshot ids: exit 2 naming the id and the expected form.
for bad in snap-123 snap-0000000000000000g SNAP-00000000000000000 \
           vol-00000000000000000 snap-000000000000000000 ""; do
    expect_exit 2 kiln snapshot show "$bad"
    expect_stderr "'$bad' is not a snapshot id"
done
expect_exit 2 kiln snapshot delete snap-12
expect_stderr "not a snapshot id"
expect_exit 2 kiln snapshot export snap-12 "$T/out.raw"
expect_stderr "not a snapshot id"
[ ! -e "$T/out.raw" ] || die "export with a bad id created its output"
expect_exit 2 kiln snapshot diff snap-00000000000000000 snap-12
expect_stderr "not a snapshot id"
expect_exit 2 kiln snapshot import "$T/x" --parent snap-12
expect_stderr "not a snapshot id"

# --- an empty region -------------------------------------------------------
expect_exit 0 kiln snapshot list
[ ! -s "$T/out" ] || die "list of an empty region printed: $(cat "$T/out")"
expect_exit 0 kiln snapshot list --json
python3 -m json.tool "$T/out" >/dev/null || die "list --json is not JSON: $(cat "$T/out")"
assert_eq "$(json_get 'len(j)' <"$T/out")" 0 "snapshots in an empty region"
expect_exit 0 kiln du --json
python3 -m json.tool "$T/out" >/dev/null || die "du --json is not JSON: $(cat "$T/out")"
assert_eq "$(json_get 'j["Chunks"], j["LogicalBytes"], len(j["Snapshots"])' <"$T/out")" \
    "(0, 0, 0)" "du of an empty region"
expect_exit 0 kiln du
expect_exit 0 kiln fsck
expect_stdout '^clean$'
expect_exit 0 kiln gc --grace 0
expect_stdout 'freed 0 chunks'

# --- missing snapshots: exit 1, "does not exist" ---------------------------
missing=snap-0123456789abcdef0
expect_exit 1 kiln snapshot show $missing
expect_stderr "'$missing' does not exist"
expect_exit 1 kiln snapshot delete $missing
expect_stderr "does not exist"
expect_exit 1 kiln snapshot export $missing "$T/out.raw"
expect_stderr "does not exist"
[ ! -e "$T/out.raw" ] || die "export of a missing snapshot created its output"
expect_exit 1 kiln snapshot diff $missing $missing
expect_stderr "does not exist"

# --- a snapshot: show, list, JSON ------------------------------------------
mkimage "$T/disk.img" 16
expect_exit 0 kiln snapshot import "$T/disk.img" --description 'cli "test" image'
snap=$(tail -n 1 "$T/out")
echo "$snap" | grep -Eq '^snap-[0-9a-f]{17}$' || die "last line is not a snapshot id: $snap"
expect_stdout "^imported '$T/disk.img'"
# -q: the id alone.
expect_exit 0 kiln -q snapshot import "$T/disk.img"
assert_eq "$(wc -l <"$T/out" | tr -d ' ')" 1 "lines printed by a quiet import"
snap2=$(cat "$T/out")
echo "$snap2" | grep -Eq '^snap-[0-9a-f]{17}$' || die "quiet import printed: $snap2"
[ "$snap" != "$snap2" ] || die "two imports got the same id"

expect_exit 0 kiln snapshot list
expect_stdout "^$snap "
expect_stdout "^$snap2 "
expect_exit 0 kiln snapshot list --json
python3 -m json.tool "$T/out" >/dev/null || die "list --json is not JSON: $(cat "$T/out")"
ids=$(json_get '" ".join(sorted(s["SnapshotId"] for s in j))' <"$T/out")
assert_eq "$ids" "$(printf '%s\n%s\n' "$snap" "$snap2" | sort | tr '\n' ' ' | sed 's/ $//')" \
    "ids in list --json"
size=$(apparent_bytes "$T/disk.img")
expect_exit 0 kiln snapshot show "$snap" --json
python3 -m json.tool "$T/out" >/dev/null || die "show --json is not JSON: $(cat "$T/out")"
assert_eq "$(json_get 'j["SnapshotId"], j["State"], j["VolumeSizeBytes"], j["Description"]' \
    <"$T/out")" "('$snap', 'completed', $size, 'cli \"test\" image')" "show --json"
expect_exit 0 kiln snapshot show "$snap"
expect_stdout "SnapshotId: *$snap"
expect_stdout "$size bytes"
expect_exit 0 kiln du --json
python3 -m json.tool "$T/out" >/dev/null || die "du --json is not JSON: $(cat "$T/out")"
assert_eq "$(json_get 'len(j["Snapshots"]), j["LogicalBytes"]' <"$T/out")" \
    "(2, $((size * 2)))" "du --json"
expect_exit 0 kiln snapshot diff "$snap" "$snap2"
[ ! -s "$T/out" ] || die "diff of identical imports is not empty: $(cat "$T/out")"

# Global options go anywhere.
expect_exit 0 kiln snapshot list --json --data-dir "$KILN_DATA_DIR"
assert_eq "$(json_get 'len(j)' <"$T/out")" 2 "snapshots with --data-dir after the verb"
expect_exit 0 kiln --data-dir "$T/other" snapshot list --json
assert_eq "$(cat "$T/out")" "[]" "list of another data directory"

# --- regions ----------------------------------------------------------------
expect_exit 0 kiln --region region-a snapshot import "$T/disk.img"
snap_a=$(tail -n 1 "$T/out")
[ -f "$KILN_DATA_DIR/regions/region-a/registry.db" ] || die "region-a has no registry.db"
expect_exit 0 kiln --region region-a snapshot list --json
assert_eq "$(json_get '[s["SnapshotId"] for s in j]' <"$T/out")" "['$snap_a']" "region-a list"
expect_exit 0 kiln snapshot list --json --region region-b
assert_eq "$(cat "$T/out")" "[]" "region-b list"
expect_exit 1 kiln --region region-b snapshot show "$snap_a"
expect_stderr "does not exist"
expect_exit 0 kiln snapshot list --json
if grep -q "$snap_a" "$T/out"; then die "region-a's snapshot listed in us-east-1"; fi
KILN_REGION=region-a "$KILN" snapshot show "$snap_a" >/dev/null ||
    die "KILN_REGION does not select the region"

for bad in '' ../escape 'Upper' 'a/b' '.' '-x' "$(python3 -c 'print("r" * 33)')" 'a b'; do
    st=0
    kiln --region "$bad" snapshot list >"$T/out" 2>"$T/err" || st=$?
    [ $st -ne 0 ] || die "region name '$bad' accepted"
    expect_stderr "invalid region name"
done
[ ! -e "$KILN_DATA_DIR/escape" ] || die "a region name escaped the data directory"

echo PASS
