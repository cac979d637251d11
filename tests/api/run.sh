#!/bin/sh
# Start a real `kiln serve` on a free port with a static credential, run the
# Python API tests (boto3, aws CLI, raw signed requests; snapshots and
# tags, images, sharing) against it, then
# check that the server stops cleanly (exit 0) on SIGTERM.
# Skips (77) when python3, boto3 or the aws CLI is missing.
#
#   run.sh MODULE...    the test modules (tests/api/test_*.py) to run
set -eu

: "${KILN:?KILN must name the kiln binary under test}"
[ $# -gt 0 ] || { echo "usage: run.sh MODULE..." >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)

if ! python3 -c 'import boto3, awscli' >/dev/null 2>&1; then
    echo "SKIP: python3 with boto3 and awscli not found"
    exit 77
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/kiln-api.XXXXXX")
pid=
cleanup() {
    status=$?
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    if [ $status -ne 0 ] && [ -f "$T/serve.log" ]; then
        echo "--- server log" >&2
        tail -n 50 "$T/serve.log" >&2
    fi
    rm -rf "$T"
    exit $status
}
trap cleanup EXIT INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export KILN_TEST_ENDPOINT="http://127.0.0.1:$port"
export KILN_TEST_ACCESS_KEY=AKIDKILNTEST0001
export KILN_TEST_SECRET_KEY='kiln/Test+Secret0123456789abcdefghijklmn'
export KILN_TEST_ACCOUNT=123456789012
# Tests import snapshots into the server's data directory and sign with the
# default account's key that the first start writes to DATA/credentials.
export KILN_TEST_DATA_DIR="$T/data"
export KILN

# Each copied chunk waits 50 ms, so that a copy is seen pending
# (test_copy.py; a 3 MiB image takes seconds); docs/operations.md.
KILN_TEST_JOB_CHUNK_DELAY_US=50000 \
"$KILN" serve --data-dir "$T/data" --listen "127.0.0.1:$port" \
    --access-key "$KILN_TEST_ACCESS_KEY" --secret-key "$KILN_TEST_SECRET_KEY" \
    --account "$KILN_TEST_ACCOUNT" 2>"$T/serve.log" &
pid=$!

# Wait until it answers (any HTTP response will do) and has written the
# default account's credentials.
python3 - "$port" "$T/data/credentials" <<'PY'
import os, socket, sys, time
deadline = time.time() + 20
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        if os.path.exists(sys.argv[2]):
            break
        raise OSError("no credentials yet")
    except OSError:
        if time.time() > deadline:
            sys.exit("kiln serve did not start listening")
        time.sleep(0.05)
PY

status=0
(cd "$here" && python3 -m unittest -v "$@") || status=$?

kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
if [ $rc -ne 0 ]; then
    echo "FAIL: kiln serve exited $rc after SIGTERM" >&2
    exit 1
fi
grep -q "stopped" "$T/serve.log" || { echo "FAIL: no clean stop in the log" >&2; exit 1; }
# Every request's log line carries its request id.
grep -Eq '^kiln: info: [0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-' "$T/serve.log" ||
    { echo "FAIL: log lines lack request ids" >&2; exit 1; }
exit $status
