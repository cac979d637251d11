#!/bin/sh
# The EBS direct API keeps what it answered for: blocks accepted by
# PutSnapshotBlock (201) survive the server being killed with SIGKILL and
# restarted, and CompleteSnapshot afterwards makes a snapshot whose content
# is exactly those blocks (checked with `kiln snapshot export` and cmp).  A
# block refused for a wrong checksum before the kill is not there after it.
# Clients: boto3's ebs and ec2 clients.
. "$(dirname "$0")/functions.sh"
requires python3 cmp
python3 -c 'import boto3' 2>/dev/null || { echo "SKIP: boto3 not found"; exit 77; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pid=
start_server() {
    "$KILN" serve --listen "127.0.0.1:$port" 2>>"$T/serve.log" &
    pid=$!
    i=0
    until [ -s "$KILN_DATA_DIR/credentials" ] &&
          python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; do
        i=$((i + 1)); [ $i -lt 200 ] || die "server did not start: $(cat "$T/serve.log")"
        sleep 0.1
    done
}
stop() { [ -z "$pid" ] || kill -KILL "$pid" 2>/dev/null || true; }
on_cleanup stop

cat > "$T/ebs.py" <<'PY'
import base64, configparser, hashlib, json, os, sys
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

data_dir, port, step, state = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
cp = configparser.ConfigParser()
cp.read(os.path.join(data_dir, "credentials"))
keys = cp["default"]
def client(name):
    return boto3.client(name, region_name="us-east-1", endpoint_url="http://127.0.0.1:" + port,
                        aws_access_key_id=keys["aws_access_key_id"],
                        aws_secret_access_key=keys["aws_secret_access_key"],
                        config=Config(retries={"max_attempts": 1}))
ebs = client("ebs")
B = 512 * 1024
def b64(d):
    return base64.b64encode(hashlib.sha256(d).digest()).decode()
def block(k):
    return hashlib.sha256(b"block %d" % k).digest() * (B // 32)

if step == "upload":
    sid = ebs.start_snapshot(VolumeSize=1, Description="restart")["SnapshotId"]
    for k in (0, 3, 2047):
        ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=k, BlockData=block(k), DataLength=B,
                               Checksum=b64(block(k)), ChecksumAlgorithm="SHA256")
    try:
        ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=5, BlockData=block(5), DataLength=B,
                               Checksum=b64(block(6)), ChecksumAlgorithm="SHA256")
        sys.exit("a wrong checksum was accepted")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "ValidationException", e.response
    json.dump({"sid": sid}, open(state, "w"))
elif step == "complete":
    sid = json.load(open(state))["sid"]
    digests = b"".join(hashlib.sha256(block(k)).digest() for k in (0, 3, 2047))
    r = ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=3,
                              Checksum=base64.b64encode(hashlib.sha256(digests).digest()).decode(),
                              ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    assert r["Status"] == "completed", r
    client("ec2").get_waiter("snapshot_completed").wait(
        SnapshotIds=[sid], WaiterConfig={"Delay": 1, "MaxAttempts": 20})
    blocks = ebs.list_snapshot_blocks(SnapshotId=sid)["Blocks"]
    assert [b["BlockIndex"] for b in blocks] == [0, 3, 2047], blocks
    # The expected disk, for cmp.
    with open(state + ".raw", "wb") as f:
        f.truncate(1 << 30)
        for k in (0, 3, 2047):
            f.seek(k * B)
            f.write(block(k))
    print(sid)
PY

start_server
python3 "$T/ebs.py" "$KILN_DATA_DIR" "$port" upload "$T/state.json" || die "upload failed"
kill -KILL "$pid"
wait "$pid" 2>/dev/null || true
pid=
start_server
sid=$(python3 "$T/ebs.py" "$KILN_DATA_DIR" "$port" complete "$T/state.json") ||
    die "completion after the restart failed: $(tail -n 20 "$T/serve.log")"
kill -TERM "$pid"
wait "$pid" || die "server exit status $?"
pid=
kiln snapshot export "$sid" "$T/out.raw" >/dev/null 2>&1 || die "export of $sid failed"
cmp "$T/state.json.raw" "$T/out.raw" || die "the snapshot differs from the accepted blocks"
[ ! -e "$KILN_DATA_DIR/regions/us-east-1/ebs-uploads/$sid" ] || die "staged blocks left behind"
echo "ok: accepted blocks survived kill -9 and completed into $sid"
