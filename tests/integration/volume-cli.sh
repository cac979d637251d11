#!/bin/sh
# kiln volume create|list|show|grow|snapshot|delete: what each prints, the
# incremental snapshot's numbers, and bad input refused with a precise
# message, exit 2 (usage) or 1 (refused), nothing created or changed.
. "$(dirname "$0")/functions.sh"
requires python3 cmp

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

head -c $((3 << 20)) /dev/urandom > "$T/disk.raw"
snap=$(import_id -q "$T/disk.raw")

# --- create, list, show -------------------------------------------------------
vol=$(kiln volume create --snapshot "$snap" | tail -n 1)
echo "$vol" | grep -Eq '^vol-[0-9a-f]{17}$' || die "create printed '$vol'"
[ -d "$REGION_DIR/volumes/$vol" ] || die "no directory for $vol"
blank=$(kiln volume create --size 2 | tail -n 1)
kiln volume list > "$T/list"
grep -q "^$vol available *1GiB  $snap" "$T/list" || die "list: $(cat "$T/list")"
grep -q "^$blank available *2GiB  -" "$T/list" || die "list: $(cat "$T/list")"
assert_eq "$(kiln volume list --json | json_get 'len(j)')" 2 "volumes listed"
assert_eq "$(kiln volume show "$vol" --json | json_get 'j["SnapshotId"]')" "$snap" "show --json"
kiln volume show "$vol" | grep -q "^AvailabilityZone: us-east-1a" || die "show: no zone"
kiln volume show "$vol" | grep -q "^Directory: *$REGION_DIR/volumes/$vol" || die "show: no directory"

# --- bad input: exit 2 or 1, precise, nothing created ----------------------------
expect_exit 2 kiln volume create
expect_stderr "needs --snapshot SNAP or --size GIB"
expect_exit 2 kiln volume create --size 0
expect_stderr "--size wants a number of GiB from 1 to 16384"
expect_exit 2 kiln volume create --size 16385
expect_exit 2 kiln volume create --size 1x
expect_exit 2 kiln volume create --snapshot snap-123
expect_stderr "'snap-123' is not a snapshot id"
expect_exit 1 kiln volume create --snapshot snap-00000000000000000
expect_stderr "snapshot 'snap-00000000000000000' does not exist in region 'us-east-1'"
big=$(python3 -c "import os; f=open('$T/big.raw','wb'); f.write(os.urandom(4096)); f.truncate((2<<30)+4096)"; import_id -q "$T/big.raw")
expect_exit 1 kiln volume create --snapshot "$big" --size 2
expect_stderr "volume size 2 GiB is smaller than snapshot '$big' (3 GiB)"
expect_exit 2 kiln volume show vol-1
expect_stderr "'vol-1' is not a volume id"
expect_exit 1 kiln volume show vol-00000000000000000
expect_stderr "volume 'vol-00000000000000000' does not exist in region 'us-east-1'"
expect_exit 2 kiln volume frobnicate
expect_stderr "unknown volume verb 'frobnicate'"
assert_eq "$(kiln volume list --json | json_get 'len(j)')" 2 "volumes after refusals"

# --- grow ------------------------------------------------------------------------
kiln volume grow "$vol" --size 3
assert_eq "$(kiln volume show "$vol" --json | json_get 'j["Size"]')" 3 "size after grow"
expect_exit 1 kiln volume grow "$vol" --size 2
expect_stderr "volume '$vol' cannot shrink from 3 to 2 GiB"
expect_exit 2 kiln volume grow "$vol"
assert_eq "$(kiln volume show "$vol" --json | json_get 'j["Size"]')" 3 "size after refusals"

# --- snapshot: nothing written, so nothing new; the data is the snapshot's -------
kiln volume snapshot "$vol" > "$T/out"
snap2=$(tail -n 1 "$T/out")
grep -q "0 blocks written, 0 B read" "$T/out" || die "snapshot: $(cat "$T/out")"
grep -q " 0 new" "$T/out" || die "snapshot stored chunks: $(cat "$T/out")"
assert_eq "$(kiln snapshot show "$snap2" --json | json_get 'j["ParentSnapshotId"]')" "$snap" \
    "parent of the volume's snapshot"
assert_eq "$(kiln snapshot show "$snap2" --json | json_get 'j["VolumeSize"]')" 3 \
    "size of the volume's snapshot"
kiln -q snapshot export "$snap2" "$T/out.raw"
head -c $((3 << 20)) "$T/out.raw" | cmp - "$T/disk.raw" || die "the snapshot's data differs"
expect_exit 2 kiln volume snapshot "$vol" --description "$(python3 -c 'print("x" * 256)')"

# --- delete; gc keeps what the remaining volume reads -----------------------------
kiln volume delete "$blank"
[ ! -e "$REGION_DIR/volumes/$blank" ] || die "the deleted volume's directory is still there"
expect_exit 1 kiln volume delete "$blank"
expect_stderr "volume '$blank' does not exist"
kiln snapshot delete "$snap2"
kiln snapshot delete "$snap"
kiln -q gc --grace 0
assert_fsck_clean "after deleting the volume's snapshot"
kiln volume snapshot "$vol" > /dev/null || die "the volume cannot be snapshotted after gc"
assert_fsck_clean "at the end"
echo "ok"
