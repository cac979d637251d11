#!/bin/sh
# `kiln serve` signs with the accounts of the data directory: the first start
# creates the account 'default' and writes its key to DATA/credentials, which
# the aws CLI uses as it is; a key made later with `kiln account create`
# works without a restart; a made-up key is refused (401, exit 255).
. "$(dirname "$0")/functions.sh"
python3 -c 'import awscli' 2>/dev/null || { echo "SKIP: aws CLI not found"; exit 77; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$KILN" serve --listen "127.0.0.1:$port" 2>"$T/serve.log" &
pid=$!
stop() { kill -TERM "$pid" 2>/dev/null || true; }
on_cleanup stop
i=0
until grep -q "serving the EC2 API" "$T/serve.log" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 100 ] || die "server did not start: $(cat "$T/serve.log")"
    sleep 0.1
done
grep -q "created the account 'default'" "$T/serve.log" || die "no default account: $(cat "$T/serve.log")"
grep -q "wrote the access key" "$T/serve.log" || die "no credentials file: $(cat "$T/serve.log")"
[ "$(stat -c %a "$KILN_DATA_DIR/credentials")" = 600 ] || die "credentials file is not 0600"

aws_() { python3 -m awscli --region us-east-1 --endpoint-url "http://127.0.0.1:$port" "$@"; }

AWS_SHARED_CREDENTIALS_FILE="$KILN_DATA_DIR/credentials" aws_ ec2 describe-regions \
    --query 'Regions[].RegionName' --output text > "$T/regions" || die "describe-regions failed"
grep -q us-east-1 "$T/regions" || die "regions: $(cat "$T/regions")"

kiln account create bob --json > "$T/bob.json"
akid=$(json_get 'j["AccessKeyId"]' < "$T/bob.json")
secret=$(json_get 'j["SecretAccessKey"]' < "$T/bob.json")
AWS_ACCESS_KEY_ID=$akid AWS_SECRET_ACCESS_KEY=$secret AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    aws_ ec2 describe-availability-zones --output json > "$T/az.json" || die "bob's key refused"

st=0
AWS_ACCESS_KEY_ID=AKIAAAAAAAAAAAAAAAAA AWS_SECRET_ACCESS_KEY=nothing \
    AWS_SHARED_CREDENTIALS_FILE=/dev/null aws_ ec2 describe-regions 2>"$T/err" || st=$?
[ $st -eq 255 ] || die "an unknown key: exit $st, want 255"
grep -q AuthFailure "$T/err" || die "an unknown key: $(cat "$T/err")"

kill -TERM "$pid"
wait "$pid" || die "server exit status $?"
grep -q "stopped" "$T/serve.log" || die "no clean stop: $(cat "$T/serve.log")"

# The default account made by an offline import first: the server still
# writes its key when DATA/credentials is missing, and never overwrites it.
rm "$KILN_DATA_DIR/credentials"
head -c 1048576 /dev/urandom > "$T/disk.raw"
kiln -q snapshot import "$T/disk.raw" >/dev/null
"$KILN" serve --listen "127.0.0.1:$port" 2>"$T/serve2.log" &
pid=$!
i=0
until grep -q "serving the EC2 API" "$T/serve2.log" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 100 ] || die "server did not start again: $(cat "$T/serve2.log")"
    sleep 0.1
done
[ -s "$KILN_DATA_DIR/credentials" ] || die "no credentials file after a restart: $(cat "$T/serve2.log")"
AWS_SHARED_CREDENTIALS_FILE="$KILN_DATA_DIR/credentials" aws_ ec2 describe-snapshots \
    --owner-ids self --query 'length(Snapshots)' --output text > "$T/n" || die "describe-snapshots"
assert_eq "$(cat "$T/n")" 1 "the offline import is the default account's"
kill -TERM "$pid"
wait "$pid" || die "server exit status $?"
echo PASS
