#!/bin/sh
# CreateSnapshot of a volume runs as a job of `kiln serve` that survives
# its server: the snapshot answers `pending`; a job interrupted by
# `kill -9`, and one stopped by SIGTERM (serve exits 0, the job stays), are
# finished by the next start and end `completed`; `kiln gc` with no grace
# while the job is pending keeps what it needs; the snapshots export equal
# to what was written before the call, not to what was written after it
# (point in time); a job whose captured chunk is gone when the server comes
# back ends `error` with a StateMessage, never pending forever; no job is
# left in the registry.  Each chunk the job reads back is slowed down
# (KILN_TEST_JOB_CHUNK_DELAY_US, docs/operations.md) so that the server can
# be stopped in the middle; nothing here depends on how long anything takes.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/nbd-lib.sh"
requires sqlite3 cmp qemu-img
python3 -c 'import awscli' 2>/dev/null || { echo "SKIP: aws CLI not found"; exit 77; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
EAST="$KILN_DATA_DIR/regions/us-east-1"
pid=

start_serve() { # LOG [DELAY_US]
    KILN_TEST_JOB_CHUNK_DELAY_US=${2:-0} "$KILN" serve --listen "127.0.0.1:$port" \
        --regions us-east-1 --jobs 2 2>"$1" &
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
        python3 -m awscli --region us-east-1 --endpoint-url "http://127.0.0.1:$port" "$@"
}

pending_jobs() { sqlite3 "$EAST/registry.db" 'SELECT count(*) FROM jobs'; }
snap_state() { sqlite3 "$EAST/registry.db" "SELECT state FROM snapshots WHERE id = '$1'"; }
snap_progress() { sqlite3 "$EAST/registry.db" "SELECT progress FROM snapshots WHERE id = '$1'"; }

# Wait until the job has read back some chunks (progress >= 10%).
wait_progress() {
    _i=0
    until [ "$(snap_progress "$1")" -ge 10 ]; do
        _i=$((_i + 1)); [ $_i -lt 600 ] || die "the snapshot job made no progress"
        sleep 0.1
    done
}

# Write FILE over the start of volume VOL through `kiln nbd`.
write_volume() {
    nbd_start "$1" "$T/vol.sock"
    qemu-img convert -n -f raw -O raw "$2" "$(nbd_uri "$T/vol.sock")" ||
        die "writing the volume failed"
    nbd_stop
}

# A blank volume with 32 MiB of random data: every chunk is new, so the
# job reads back hundreds of them.
vol=$(kiln volume create --size 1 | tail -n 1)
echo "$vol" | grep -Eq '^vol-[0-9a-f]{17}$' || die "volume create printed '$vol'"
head -c $((32 * 1024 * 1024)) /dev/urandom > "$T/a.raw"
write_volume "$vol" "$T/a.raw"

# ---- kill -9 in the middle of the job ---------------------------------------
start_serve "$T/serve1.log" 20000
sid1=$(aws_ ec2 create-snapshot --volume-id "$vol" --query SnapshotId --output text) ||
    die "create-snapshot failed"
state=$(aws_ ec2 describe-snapshots --snapshot-ids "$sid1" --query 'Snapshots[0].State' \
    --output text)
assert_eq "$state" pending "the snapshot right after CreateSnapshot"
wait_progress "$sid1"
kill -KILL "$pid"
wait "$pid" 2>/dev/null || true
pid=
assert_eq "$(pending_jobs)" 1 "jobs left by kill -9"
assert_eq "$(snap_state "$sid1")" pending "the killed job's snapshot"

# Written after the call: not in the snapshot.
head -c $((32 * 1024 * 1024)) /dev/urandom > "$T/b.raw"
write_volume "$vol" "$T/b.raw"
# gc with no grace keeps the captured map and chunks of the pending job.
kiln gc --grace 0 > "$T/gc.out" 2>&1 || die "gc: $(cat "$T/gc.out")"

start_serve "$T/serve2.log"
aws_ ec2 wait snapshot-completed --snapshot-ids "$sid1" ||
    die "the resumed job did not complete: $(cat "$T/serve2.log")"
grep -q "job $sid1 (us-east-1): done" "$T/serve2.log" || die "no resume: $(cat "$T/serve2.log")"
kiln snapshot export "$sid1" "$T/one.raw"
cmp -n $((32 * 1024 * 1024)) "$T/a.raw" "$T/one.raw" ||
    die "the snapshot is not the volume at the moment of the call"
got=$(aws_ ec2 describe-snapshots --snapshot-ids "$sid1" --query 'Snapshots[0].VolumeId' \
    --output text)
assert_eq "$got" "$vol" "the snapshot's VolumeId"
kill -TERM "$pid"
wait "$pid" || die "serve exited $? on SIGTERM"
pid=

# ---- SIGTERM in the middle of the job ---------------------------------------
start_serve "$T/serve3.log" 20000
sid2=$(aws_ ec2 create-snapshot --volume-id "$vol" --query SnapshotId --output text) ||
    die "create-snapshot failed"
wait_progress "$sid2"
kill -TERM "$pid"
wait "$pid" || die "serve exited $? on SIGTERM during a snapshot job"
pid=
grep -q "job $sid2 (us-east-1): stopped" "$T/serve3.log" ||
    die "the job did not stop at a safe point: $(cat "$T/serve3.log")"
grep -q "kiln: stopped" "$T/serve3.log" || die "no clean stop: $(cat "$T/serve3.log")"
assert_eq "$(pending_jobs)" 1 "jobs left by SIGTERM"
assert_eq "$(snap_state "$sid2")" pending "the stopped job's snapshot"

start_serve "$T/serve4.log"
aws_ ec2 wait snapshot-completed --snapshot-ids "$sid2" || die "the stopped job did not resume"
kiln snapshot export "$sid2" "$T/two.raw"
cmp -n $((32 * 1024 * 1024)) "$T/b.raw" "$T/two.raw" || die "the second snapshot differs"
kill -TERM "$pid"
wait "$pid" || die "serve exited $? on SIGTERM"
pid=
assert_eq "$(pending_jobs)" 0 "jobs left after the resumed runs"
kiln fsck > "$T/fsck.out" 2>&1 || die "fsck: $(cat "$T/fsck.out")"

# ---- a captured chunk lost while the server is down -------------------------
head -c $((8 * 1024 * 1024)) /dev/urandom > "$T/c.raw"
write_volume "$vol" "$T/c.raw"
start_serve "$T/serve5.log" 20000
sid3=$(aws_ ec2 create-snapshot --volume-id "$vol" --query SnapshotId --output text) ||
    die "create-snapshot failed"
kill -KILL "$pid"
wait "$pid" 2>/dev/null || true
pid=
# A chunk the third capture wrote (c.raw is random: new chunks only).
lost=$(find "$EAST/store/chunks" -type f -newer "$T/c.raw" | head -n 1)
[ -n "$lost" ] || die "no chunk of the third snapshot found"
assert_eq "$(snap_state "$sid3")" pending "the third snapshot before the restart"
rm -f "$lost"
start_serve "$T/serve6.log"
i=0
while [ "$(snap_state "$sid3")" = pending ]; do
    i=$((i + 1)); [ $i -lt 600 ] || die "a job with a lost chunk stays pending"
    sleep 0.1
done
state=$(aws_ ec2 describe-snapshots --snapshot-ids "$sid3" --query 'Snapshots[0].State' \
    --output text)
assert_eq "$state" error "the snapshot whose chunk was lost"
msg=$(aws_ ec2 describe-snapshots --snapshot-ids "$sid3" \
    --query 'Snapshots[0].StateMessage' --output text)
case $msg in *missing*"$vol"*|*"$vol"*missing*) ;; *) die "state message: '$msg'" ;; esac
kill -TERM "$pid"
wait "$pid" || die "serve exited $? on SIGTERM"
pid=
assert_eq "$(pending_jobs)" 0 "jobs left at the end"
