#!/bin/sh
# CopyImage runs as a job that survives its server: a copy interrupted by
# `kill -9`, and one stopped by SIGTERM (serve exits 0, the job stays), are
# resumed by the next `kiln serve` start and end `available`; the resumed
# run finds the chunks the first one wrote (it copies only the rest); the
# copies export byte-identical to the source disk (cmp); a copy whose
# source region is gone when the server comes back fails cleanly (image
# `failed` with a StateReason, snapshot `error`); no job is left in the
# registry and fsck is clean.  Each copied chunk is slowed down
# (KILN_TEST_JOB_CHUNK_DELAY_US, docs/operations.md) so that the server can
# be stopped in the middle of a copy; nothing here depends on how long
# anything takes.
. "$(dirname "$0")/functions.sh"
requires sqlite3 cmp
python3 -c 'import awscli' 2>/dev/null || { echo "SKIP: aws CLI not found"; exit 77; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
WEST="$KILN_DATA_DIR/regions/us-west-2"
pid=

start_serve() { # LOG [DELAY_US]
    KILN_TEST_JOB_CHUNK_DELAY_US=${2:-0} "$KILN" serve --listen "127.0.0.1:$port" \
        --regions us-east-1,us-west-2,eu-west-1 --jobs 2 2>"$1" &
    pid=$!
    _i=0
    until grep -q "serving the EC2 API" "$1" 2>/dev/null; do
        _i=$((_i + 1)); [ $_i -lt 300 ] || die "server did not start: $(cat "$1")"
        kill -0 "$pid" 2>/dev/null || die "server exited: $(cat "$1")"
        sleep 0.1
    done
}
stop_serve() { [ -z "$pid" ] || kill -KILL "$pid" 2>/dev/null || true; }
on_cleanup stop_serve

aws_() {
    AWS_SHARED_CREDENTIALS_FILE="$KILN_DATA_DIR/credentials" \
        python3 -m awscli --region us-west-2 --endpoint-url "http://127.0.0.1:$port" "$@"
}

west_chunks() {
    if [ -d "$WEST/store/chunks" ]; then
        find "$WEST/store/chunks" -type f | wc -l | tr -d ' '
    else
        echo 0
    fi
}

# Wait until the copy has written at least N chunks to us-west-2 (it is in
# the middle: the image has hundreds).
wait_chunks() {
    _i=0
    until [ "$(west_chunks)" -ge "$1" ]; do
        _i=$((_i + 1)); [ $_i -lt 600 ] || die "the copy made no progress"
        sleep 0.1
    done
}

pending_jobs() { sqlite3 "$WEST/registry.db" 'SELECT count(*) FROM jobs'; }

root_snapshot() {
    aws_ ec2 describe-images --image-ids "$1" \
        --query 'Images[0].BlockDeviceMappings[0].Ebs.SnapshotId' --output text
}

# --jobs takes 1 to 64 threads; anything else is a usage error (exit 2),
# before anything starts.
for bad in 0 65 two ''; do
    st=0
    "$KILN" serve --listen "127.0.0.1:$port" --jobs "$bad" 2>"$T/err" || st=$?
    assert_eq "$st" 2 "kiln serve --jobs '$bad'"
    expect_stderr "--jobs must be a number from 1 to 64"
done
"$KILN" serve --help | grep -q -- "--jobs N" || die "serve --help lacks --jobs"

# A 48 MiB disk of random data: every 4 KiB block is data, so the copy
# moves hundreds of chunks, and the export must equal the file.
head -c $((48 * 1024 * 1024)) /dev/urandom > "$T/disk.raw"
kiln -q image import "$T/disk.raw" --name copy-source > "$T/import.out"
src_ami=$(sed -n 2p "$T/import.out")
case $src_ami in ami-*) ;; *) die "image import printed: $(cat "$T/import.out")" ;; esac

# ---- kill -9 in the middle of a copy ---------------------------------------
start_serve "$T/serve1.log" 20000
new1=$(aws_ ec2 copy-image --source-region us-east-1 --source-image-id "$src_ami" \
    --name copy-one --query ImageId --output text) || die "copy-image failed"
state=$(aws_ ec2 describe-images --image-ids "$new1" --query 'Images[0].State' --output text)
assert_eq "$state" pending "the copy right after CopyImage"
wait_chunks 20
kill -KILL "$pid"
wait "$pid" 2>/dev/null || true
pid=
before=$(west_chunks)
assert_eq "$(pending_jobs)" 1 "jobs left by kill -9"
state=$(sqlite3 "$WEST/registry.db" "SELECT state FROM images WHERE id = '$new1'")
assert_eq "$state" pending "the killed copy's image"

start_serve "$T/serve2.log"
aws_ ec2 wait image-available --image-ids "$new1" || die "the resumed copy did not become available"
grep -q "job $new1 (us-west-2): done" "$T/serve2.log" || die "no resume: $(cat "$T/serve2.log")"
# The resumed run found what the killed one had written.
present=$(sed -n "s/.*job $new1 (us-west-2): done: .* copied in [0-9]* chunks, \(.*\) already present.*/\1/p" \
    "$T/serve2.log")
[ -n "$present" ] && [ "$present" != "0 B" ] || die "the resumed copy found nothing present ($before chunks were written): $(cat "$T/serve2.log")"
sid1=$(root_snapshot "$new1")
kiln --region us-west-2 snapshot export "$sid1" "$T/one.raw"
cmp "$T/disk.raw" "$T/one.raw" || die "the resumed copy differs from the source"
kill -TERM "$pid"
wait "$pid" || die "serve exited $? on SIGTERM"
pid=

# ---- SIGTERM in the middle of a copy ----------------------------------------
# us-west-2 has every chunk by now: copy a second image of new data.
head -c $((48 * 1024 * 1024)) /dev/urandom > "$T/disk2.raw"
kiln -q image import "$T/disk2.raw" --name copy-source-2 > "$T/import2.out"
src2=$(sed -n 2p "$T/import2.out")
start_serve "$T/serve3.log" 20000
base=$(west_chunks)
new2=$(aws_ ec2 copy-image --source-region us-east-1 --source-image-id "$src2" \
    --name copy-two --query ImageId --output text) || die "copy-image failed"
wait_chunks $((base + 20))
kill -TERM "$pid"
wait "$pid" || die "serve exited $? on SIGTERM during a copy"
pid=
grep -q "job $new2 (us-west-2): stopped" "$T/serve3.log" ||
    die "the job did not stop at a safe point: $(cat "$T/serve3.log")"
grep -q "kiln: stopped" "$T/serve3.log" || die "no clean stop: $(cat "$T/serve3.log")"
assert_eq "$(pending_jobs)" 1 "jobs left by SIGTERM"

start_serve "$T/serve4.log"
aws_ ec2 wait image-available --image-ids "$new2" || die "the stopped copy did not resume"
sid2=$(root_snapshot "$new2")
kiln --region us-west-2 snapshot export "$sid2" "$T/two.raw"
cmp "$T/disk2.raw" "$T/two.raw" || die "the resumed copy differs from the source"
state=$(aws_ ec2 describe-snapshots --snapshot-ids "$sid2" --query 'Snapshots[0].State' --output text)
assert_eq "$state" completed "the copy's snapshot"
kill -TERM "$pid"
wait "$pid" || die "serve exited $? on SIGTERM"
pid=

# ---- the source region vanishes while the server is down ----------------------
head -c $((48 * 1024 * 1024)) /dev/urandom > "$T/disk3.raw"
kiln -q --region eu-west-1 image import "$T/disk3.raw" --name doomed > "$T/import3.out"
src3=$(sed -n 2p "$T/import3.out")
start_serve "$T/serve5.log" 20000
base=$(west_chunks)
new3=$(aws_ ec2 copy-image --source-region eu-west-1 --source-image-id "$src3" \
    --name copy-three --query ImageId --output text) || die "copy-image failed"
wait_chunks $((base + 20))
kill -KILL "$pid"
wait "$pid" 2>/dev/null || true
pid=
rm -rf "$KILN_DATA_DIR/regions/eu-west-1"
start_serve "$T/serve6.log"
i=0
while state=$(sqlite3 "$WEST/registry.db" "SELECT state FROM images WHERE id = '$new3'") &&
    [ "$state" = pending ]; do
    i=$((i + 1)); [ $i -lt 600 ] || die "the copy of a vanished source stays pending"
    sleep 0.1
done
state=$(aws_ ec2 describe-images --image-ids "$new3" --query 'Images[0].State' --output text)
assert_eq "$state" failed "the copy of a vanished source"
reason=$(aws_ ec2 describe-images --image-ids "$new3" \
    --query 'Images[0].StateReason.Message' --output text)
case $reason in *eu-west-1*) ;; *) die "state reason: '$reason'" ;; esac
sid3=$(root_snapshot "$new3")
state=$(aws_ ec2 describe-snapshots --snapshot-ids "$sid3" --query 'Snapshots[0].State' --output text)
assert_eq "$state" error "the failed copy's snapshot"
kill -TERM "$pid"
wait "$pid" || die "serve exited $? on SIGTERM"
pid=

assert_eq "$(pending_jobs)" 0 "jobs left at the end"
kiln --region us-west-2 fsck > "$T/fsck.out" 2>&1 || die "fsck: $(cat "$T/fsck.out")"
