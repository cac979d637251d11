#!/bin/sh
# kiln bake cache list|prune and kiln bake distribute (docs/baking.md,
# "Layer cache commands" and "Distribution"): usage errors exit 2 naming
# what is wrong; a real offline-only bake of a small ext4 image fills the
# cache (no VM: every step is a file step); list shows its layers (table and
# JSON); prune --dry-run changes nothing; prune by age keeps recent layers;
# prune --max-size 0 removes every row and the snapshots nothing else uses,
# keeping (and naming) the one the baked image maps; the next bake misses
# and fills the cache again.  distribute refuses an unknown build; after a
# bake (which distributes its image) it has nothing left to copy; a region
# that fails in the bake's distribution fails alone and `kiln bake
# distribute` retries only it.
. "$(dirname "$0")/functions.sh"
requires mke2fs python3

# expect_exit CODE CMD...: CMD exits with CODE; its stderr is in $T/err.
expect_exit() {
    _want=$1
    shift
    set +e
    "$@" >"$T/out" 2>"$T/err"
    _got=$?
    set -e
    [ "$_got" = "$_want" ] || {
        cat "$T/out" "$T/err" >&2
        die "'$*' exited $_got, expected $_want"
    }
}

# ---- refusals: nothing touches the data directory ----
expect_exit 2 kiln bake cache
expect_exit 2 kiln bake cache frob
expect_stderr "unknown bake cache verb 'frob'"
expect_exit 2 kiln bake cache list extra
expect_stderr "expected 0 arguments, got 1"
expect_exit 2 kiln bake cache list --dry-run
expect_stderr "option '--dry-run' does not apply here"
expect_exit 2 kiln bake cache prune
expect_stderr "prune needs --older-than or --max-size"
expect_exit 2 kiln bake cache prune --older-than 5x
expect_stderr "wants a duration such as 90s"
expect_exit 2 kiln bake cache prune --older-than 0s
expect_exit 2 kiln bake cache prune --max-size -1
expect_stderr "wants a size such as"
expect_exit 2 kiln bake cache prune --max-size 12Q
expect_exit 2 kiln bake distribute
expect_stderr "expected 1 argument, got 0"
expect_exit 2 kiln bake distribute ami-0123456789abcdef0
expect_stderr "is not a build id"
expect_exit 2 kiln bake distribute bld-00000000000000001 --timeout never
expect_exit 2 kiln bake distribute bld-00000000000000001 --region Bad_Region
[ ! -e "$KILN_DATA_DIR" ] || die "a refused command created the data directory"
expect_exit 0 kiln bake cache --help
grep -q "usage: kiln bake cache list|prune" "$T/out" || die "cache --help: $(cat "$T/out")"
expect_exit 0 kiln bake cache prune --help
grep -q "least recently used first" "$T/out" || die "prune --help: $(cat "$T/out")"

# ---- an empty cache ----
expect_exit 0 kiln bake cache list
[ ! -s "$T/out" ] || die "an empty cache lists something: $(cat "$T/out")"
assert_eq "$(kiln bake cache list --json)" "[]" "empty cache --json"
expect_exit 0 kiln bake cache prune --max-size 0
grep -q "^removed 0 layers" "$T/out" || die "empty prune: $(cat "$T/out")"
expect_exit 1 kiln bake distribute bld-00000000000000001
expect_stderr "build 'bld-00000000000000001' does not exist in region 'us-east-1'"

# ---- a real offline bake fills the cache ----
mkimage "$T/root.img" 32
ami=$(kiln image import "$T/root.img" --name base-1 | tail -n 1)
cat > "$T/t.json" <<EOF
{"schema": "kiln-bake/1", "name": "cache-test",
 "source": {"image_id": "$ami"},
 "build": {"executor": "offline"},
 "steps": [{"name": "hello", "type": "file", "content": "hello\n", "destination": "/etc/hello"},
           {"name": "srv", "type": "mkdir", "path": "/srv/x"}],
 "output": {"name": "cache-test {{uuid}}", "tags": {"app": "cache"}},
 "distribution": {"regions": ["us-west-2"],
                  "launch_permission": {"user_ids": ["111122223333"]}}}
EOF
kiln bake "$T/t.json" > "$T/bake1.out" 2>&1 || { cat "$T/bake1.out" >&2; die "first bake"; }
build=$(sed -n 's/.* build \(bld-[0-9a-f]*\) .*/\1/p' "$T/bake1.out" | head -n 1)
image=$(awk '$1 == "us-east-1" && $2 ~ /^ami-/ {print $2}' "$T/bake1.out" | tail -n 1)
case "$build" in bld-*) ;; *) cat "$T/bake1.out" >&2; die "no build id in the bake's output" ;; esac
case "$image" in ami-*) ;; *) cat "$T/bake1.out" >&2; die "no image id in the bake's output" ;; esac

kiln bake cache list > "$T/list"
assert_eq "$(wc -l < "$T/list" | tr -d ' ')" 3 "cache list: a header and two layers"
grep -q '^KEY  *SNAPSHOT  *SIZE  *CREATED  *LAST USED  *STEP$' "$T/list" ||
    die "cache list header: $(cat "$T/list")"
grep -q '^[0-9a-f]\{12\}  snap-[0-9a-f]\{17\} .* cache-test: file hello$' "$T/list" ||
    die "cache list lacks the file step's layer: $(cat "$T/list")"
kiln bake cache list --json > "$T/list.json"
assert_eq "$(json_get 'len(j)' < "$T/list.json")" 2 "cache list --json: two layers"
assert_eq "$(json_get 'all(len(l["Key"]) == 64 for l in j)' < "$T/list.json")" True "full keys"
# The last step's layer is the snapshot the image maps.
last_snap=$(json_get '[l["SnapshotId"] for l in j if l["Summary"].endswith("srv")][0]' \
    < "$T/list.json")
first_snap=$(json_get '[l["SnapshotId"] for l in j if l["Summary"].endswith("hello")][0]' \
    < "$T/list.json")
kiln image list --json > "$T/image.json"
grep -q "$last_snap" "$T/image.json" || die "the image does not map the last layer's snapshot"

# ---- prune: dry run, by age, by size ----
expect_exit 0 kiln bake cache prune --max-size 0 --dry-run
grep -q "^would remove 2 layers" "$T/out" || die "dry run: $(cat "$T/out")"
assert_eq "$(kiln bake cache list --json | json_get 'len(j)')" 2 "the dry run removed nothing"
expect_exit 0 kiln bake cache prune --older-than 1d
grep -q "^removed 0 layers" "$T/out" || die "prune by age removed fresh layers: $(cat "$T/out")"
expect_exit 0 kiln bake cache prune --max-size 100G
grep -q "^removed 0 layers" "$T/out" || die "prune under the size limit: $(cat "$T/out")"
expect_exit 0 kiln bake cache prune --max-size 0
grep -q "removed layer [0-9a-f]\{12\} and snapshot $first_snap" "$T/out" ||
    die "prune did not delete the first layer's snapshot: $(cat "$T/out")"
grep -q "kept snapshot $last_snap: an image uses it" "$T/out" ||
    die "prune did not keep the image's snapshot: $(cat "$T/out")"
assert_eq "$(kiln bake cache list --json)" "[]" "cache after prune --max-size 0"
kiln snapshot list > "$T/snaps"
grep -q "$last_snap" "$T/snaps" || die "the image's snapshot is gone"
! grep -q "$first_snap" "$T/snaps" || die "the first layer's snapshot is still there"

# ---- the next bake misses and fills the cache again ----
kiln bake "$T/t.json" > "$T/bake2.out" 2>&1 || { cat "$T/bake2.out" >&2; die "second bake"; }
grep -q 'cached' "$T/bake2.out" && { cat "$T/bake2.out" >&2; die "a pruned layer was a hit"; }
assert_eq "$(kiln bake cache list --json | json_get 'len(j)')" 2 "the cache is filled again"

# ---- distribute ----
# The bake distributed its image (the driver calls bake_distribute()):
# `kiln bake distribute` afterwards has nothing left to do.
distribute() {
    set +e
    kiln bake distribute "$@" > "$T/dist.out" 2> "$T/dist.err"
    status=$?
    set -e
}
grep -q "us-west-2: copying $image as ami-" "$T/bake1.out" ||
    die "the bake did not copy its image: $(cat "$T/bake1.out")"
distribute "$build" --timeout 5m
[ "$status" = 0 ] || { cat "$T/dist.out" "$T/dist.err" >&2; die "distribute failed"; }
! grep -q "copying" "$T/dist.err" || die "a distribute after the bake's copied again"
grep -q "^us-east-1  *done  *$image$" "$T/dist.out" || die "distribute: $(cat "$T/dist.out")"
grep -q "^us-west-2  *done  *ami-[0-9a-f]\{17\}$" "$T/dist.out" ||
    die "distribute: $(cat "$T/dist.out")"
west=$(awk '$1 == "us-west-2" {print $3}' "$T/dist.out")
kiln image list --region us-west-2 > "$T/west"
grep -q "^$west" "$T/west" || die "us-west-2 lacks $west: $(cat "$T/west")"
# --region names the build's region: no search elsewhere.
distribute "$build" --region us-west-2
assert_eq "$status" 1 "distribute in the wrong region"
grep -q "build '$build' does not exist in region 'us-west-2'" "$T/dist.err" ||
    die "wrong region: $(cat "$T/dist.err")"

# A region that fails (a file where its directory goes) fails the bake's
# distribution alone (the image stays); `kiln bake distribute` retries only
# that region.
sed 's/"regions": \["us-west-2"\]/"regions": ["eu-north-1", "us-west-2"]/' "$T/t.json" > "$T/t3.json"
echo x > "$KILN_DATA_DIR/regions/eu-north-1"
bake3_status=0
kiln bake "$T/t3.json" > "$T/bake3.out" 2>&1 || bake3_status=$?
[ "$bake3_status" != 0 ] || die "a bake whose distribution failed exited 0"
build3=$(sed -n 's/.* build \(bld-[0-9a-f]*\) .*/\1/p' "$T/bake3.out" | head -n 1)
case "$build3" in bld-*) ;; *) cat "$T/bake3.out" >&2; die "no build id in the third bake" ;; esac
grep -q "eu-north-1: failed: " "$T/bake3.out" || die "the bake's distribution: $(cat "$T/bake3.out")"
grep -q "us-west-2: .* published" "$T/bake3.out" || die "us-west-2 not published: $(cat "$T/bake3.out")"
distribute "$build3" --timeout 5m
assert_eq "$status" 1 "distribute with eu-north-1 blocked"
grep -q "distribution failed in 1 of 3 regions: eu-north-1: " "$T/dist.err" ||
    die "blocked region: $(cat "$T/dist.err")"
grep -q "^eu-north-1  *failed  *- .*Not a directory" "$T/dist.out" ||
    die "distribute: $(cat "$T/dist.out")"
grep -q "^us-west-2  *done  *ami-" "$T/dist.out" || die "distribute: $(cat "$T/dist.out")"
rm "$KILN_DATA_DIR/regions/eu-north-1"
distribute "$build3" --timeout 5m
assert_eq "$status" 0 "the retry: $(cat "$T/dist.err")"
! grep -q "us-west-2:" "$T/dist.err" || die "the retry touched us-west-2"
grep -q "eu-north-1: copying" "$T/dist.err" || die "the retry did not copy: $(cat "$T/dist.err")"
grep -q "^eu-north-1  *done  *ami-" "$T/dist.out" || die "retry: $(cat "$T/dist.out")"
echo "ok"
