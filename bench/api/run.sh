#!/usr/bin/env bash
# bench/api/run.sh [DIR]: DescribeImages throughput and latency, kiln against
# moto_server, on the same 10,000 images, in one run (issue 3, "Benchmarks").
#
# 1. Starts `kiln serve` on a fresh data directory (DIR/kiln, with a few
#    imported snapshots for the images to map) and moto_server (in-memory,
#    without its default AMIs), each on a free loopback port.
# 2. Loads both with load.py: COUNT images through RegisterImage and
#    CreateTags with boto3, as any client would (names bench-<role>-NNNNN,
#    tags Role and Env; see load.py for the mix).
# 3. Checks that both answer each query with the same images count (boto3,
#    so both answers are parsed by a real client) and that it is COUNT/100.
# 4. Runs loadgen (bench/api/loadgen.c: keep-alive connections, each request
#    freshly SigV4-signed) for each server x query x clients (1, 8, 32) and
#    prints a Markdown table: req/s, p50, p99 and the kiln/moto ratio, then
#    the issue's targets at 8 clients as met or missed.
#
# moto is slow enough that some cells cannot finish in any sensible time
# (a tag filter over 10,000 images takes it over a minute per request): a
# moto cell stops after $KILN_BENCH_API_MOTO_CAP seconds (default 90) of
# measuring; requests still unanswered then are reported as unfinished,
# moto's req/s as an upper bound ("<=") and its latencies as lower bounds
# (">="), so the ratio printed is a lower bound.  moto keeps computing an
# abandoned request, so it is restarted and reloaded after such a cell.
#
# Environment: KILN (default build/src/cmd/kiln), LOADGEN (default
# build/bench/api/loadgen), KILN_BENCH_API_COUNT (10000),
# KILN_BENCH_API_SECONDS (10 per cell), KILN_BENCH_API_CLIENTS ("1 8 32"),
# KILN_BENCH_API_MOTO_CAP (90), KILN_BENCH_API_MOTO (0: kiln alone).  DIR defaults to a new temporary directory
# under ${TMPDIR:-/var/tmp}, removed at the end.  Progress goes to stderr,
# the report (Markdown) to stdout.  moto_server comes with the machine's
# python3, like boto3; without it the kiln rows are still measured.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${BUILD:-$ROOT/build}
[[ -d $BUILD ]] && BUILD=$(cd "$BUILD" && pwd)
KILN=${KILN:-$BUILD/src/cmd/kiln}
LOADGEN=${LOADGEN:-$BUILD/bench/api/loadgen}
COUNT=${KILN_BENCH_API_COUNT:-10000}
SECONDS_PER_CELL=${KILN_BENCH_API_SECONDS:-10}
CLIENTS=${KILN_BENCH_API_CLIENTS:-1 8 32}
MOTO_CAP=${KILN_BENCH_API_MOTO_CAP:-90}
SNAPSHOTS=4

for f in "$KILN" "$LOADGEN"; do
	[[ -x $f ]] || { echo "bench/api: '$f' is missing: build first (ninja -C build)" >&2; exit 1; }
done
python3 -c 'import boto3' 2>/dev/null || { echo "bench/api: python3 with boto3 is needed" >&2; exit 1; }

if [[ $# -ge 1 ]]; then
	DIR=$1
	mkdir -p "$DIR"
	KEEP=1
else
	DIR=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-bench-api.XXXXXX")
	KEEP=
fi
DIR=$(cd "$DIR" && pwd)
rm -rf "$DIR/kiln" "$DIR/results"
mkdir -p "$DIR/results"

kiln_pid= moto_pid=
cleanup() {
	local s=$?
	[[ -n $kiln_pid ]] && kill "$kiln_pid" 2>/dev/null && wait "$kiln_pid" 2>/dev/null
	[[ -n $moto_pid ]] && kill "$moto_pid" 2>/dev/null && wait "$moto_pid" 2>/dev/null
	[[ -z $KEEP ]] && rm -rf "$DIR"
	exit $s
}
trap cleanup EXIT INT TERM

log() { echo "bench/api: $*" >&2; }
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
	python3 - "$1" <<'PY'
import socket, sys, time
deadline = time.time() + 30
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("nothing listens on port %s" % sys.argv[1])
        time.sleep(0.1)
PY
}

# ---- kiln ---------------------------------------------------------------
KPORT=$(free_port)
snaps=()
head -c 1048576 /dev/urandom > "$DIR/disk.raw"
for ((i = 0; i < SNAPSHOTS; i++)); do
	printf '%08d' "$i" | dd of="$DIR/disk.raw" conv=notrunc status=none
	snaps+=("$("$KILN" --data-dir "$DIR/kiln" -q snapshot import "$DIR/disk.raw" | tail -n 1)")
done
"$KILN" serve --data-dir "$DIR/kiln" --listen "127.0.0.1:$KPORT" 2>"$DIR/kiln.log" &
kiln_pid=$!
wait_port "$KPORT"
KAKID=$(awk '$1 == "aws_access_key_id" { print $3 }' "$DIR/kiln/credentials")
KSECRET=$(awk '$1 == "aws_secret_access_key" { print $3 }' "$DIR/kiln/credentials")

# ---- moto ---------------------------------------------------------------
MOTO=
MPORT=
start_moto() {
	MPORT=$(free_port)
	MOTO_EC2_LOAD_DEFAULT_AMIS=false moto_server -H 127.0.0.1 -p "$MPORT" >"$DIR/moto.log" 2>&1 &
	moto_pid=$!
	wait_port "$MPORT"
}
stop_moto() {
	kill "$moto_pid" 2>/dev/null || true
	wait "$moto_pid" 2>/dev/null || true
	moto_pid=
}
load_moto() {
	python3 "$HERE/load.py" "http://127.0.0.1:$MPORT" testing testing "$COUNT" \
		>"$DIR/results/moto-load" 2>"$DIR/moto-load.log"
}
if [[ ${KILN_BENCH_API_MOTO:-1} == 0 ]]; then
	log "KILN_BENCH_API_MOTO=0: measuring kiln alone"
elif command -v moto_server >/dev/null && python3 -c 'import moto.server' 2>/dev/null; then
	MOTO=$(python3 -c 'import importlib.metadata as m; print(m.version("moto"))')
	start_moto
else
	log "moto_server not found: measuring kiln alone"
fi

log "loading $COUNT images into kiln${MOTO:+ and moto} (RegisterImage + CreateTags, boto3)"
python3 "$HERE/load.py" "http://127.0.0.1:$KPORT" "$KAKID" "$KSECRET" "$COUNT" "${snaps[@]}" \
	>"$DIR/results/kiln-load" 2>"$DIR/kiln-load.log" &
kload=$!
[[ -n $MOTO ]] && load_moto
wait "$kload" || { log "loading kiln failed:"; tail -n 5 "$DIR/kiln-load.log" >&2; exit 1; }
log "kiln: $(cat "$DIR/results/kiln-load")"
[[ -n $MOTO ]] && log "moto: $(cat "$DIR/results/moto-load")"

# ---- queries --------------------------------------------------------------
QUERIES=("name" "tag")
declare -A BODY LABEL FILTER
BODY[name]='Filter.1.Name=name&Filter.1.Value.1=bench-web-%2A'
BODY[tag]='Filter.1.Name=tag%3ARole&Filter.1.Value.1=db'
LABEL[name]='`name=bench-web-*`'
LABEL[tag]='`tag:Role=db`'
FILTER[name]='{"Name": "name", "Values": ["bench-web-*"]}'
FILTER[tag]='{"Name": "tag:Role", "Values": ["db"]}'

# The correctness guard: the same count from both, through boto3.
count_images() { # ENDPOINT AKID SECRET QUERY
	python3 - "$1" "$2" "$3" "${FILTER[$4]}" <<'PY'
import json, sys
import boto3
from botocore.config import Config
c = boto3.client("ec2", region_name="us-east-1", endpoint_url=sys.argv[1],
                 aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3],
                 config=Config(read_timeout=600, retries={"max_attempts": 1}))
print(len(c.describe_images(Filters=[json.loads(sys.argv[4])])["Images"]))
PY
}
for q in "${QUERIES[@]}"; do
	k=$(count_images "http://127.0.0.1:$KPORT" "$KAKID" "$KSECRET" "$q")
	want=$((COUNT / 100))
	if [[ $k != "$want" ]]; then
		log "kiln answers ${LABEL[$q]} with $k images, expected $want"
		exit 1
	fi
	if [[ -n $MOTO ]]; then
		# (moto's tag filter takes over a minute at this size: once.)
		m=$(count_images "http://127.0.0.1:$MPORT" testing testing "$q")
		if [[ $m != "$k" ]]; then
			log "kiln and moto disagree on ${LABEL[$q]}: $k and $m images"
			exit 1
		fi
	fi
	echo "$k" >"$DIR/results/count-$q"
done

# ---- measurements -----------------------------------------------------------
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

measure() { # SERVER QUERY CLIENTS LAST
	local server=$1 q=$2 c=$3 last=$4 out url akid secret cap=()
	if [[ $server == kiln ]]; then
		url=http://127.0.0.1:$KPORT akid=$KAKID secret=$KSECRET
	else
		url=http://127.0.0.1:$MPORT akid=testing secret=testing cap=(--max-seconds "$MOTO_CAP")
	fi
	log "$server, ${LABEL[$q]}, $c clients"
	out=$("$LOADGEN" --url "$url" --access-key "$akid" --secret-key "$secret" --clients "$c" \
		--duration "$SECONDS_PER_CELL" "${cap[@]}" \
		--body "Action=DescribeImages&Version=2016-11-15&${BODY[$q]}") || {
		log "loadgen failed against $server: $out"
		exit 1
	}
	echo "$out" >"$DIR/results/$server-$q-$c"
	local images
	images=$(field images "$out")
	if [[ $images != -1 && $images != "$(cat "$DIR/results/count-$q")" ]]; then
		log "$server answered ${LABEL[$q]} with $images images under load, expected $(cat "$DIR/results/count-$q")"
		exit 1
	fi
	if [[ $server == moto && $(field unfinished "$out") != 0 && -z $last ]]; then
		# moto goes on computing what was abandoned: start afresh.
		log "moto: $(field unfinished "$out") requests unfinished after ${MOTO_CAP}s; restarting and reloading it"
		stop_moto
		start_moto
		load_moto
	fi
}

n_cells=$((${#QUERIES[@]} * $(wc -w <<<"$CLIENTS"))) cell_no=0
for q in "${QUERIES[@]}"; do
	for c in $CLIENTS; do
		cell_no=$((cell_no + 1))
		measure kiln "$q" "$c" ""
		if [[ -n $MOTO ]]; then
			measure moto "$q" "$c" "$([[ $cell_no == "$n_cells" ]] && echo last)"
		fi
	done
done

# ---- report ---------------------------------------------------------------
# rps/p50/p99 of one cell as printed: "123.4", or "<= 0.1" / ">= 60000" for
# a moto cell with unfinished requests.
cell() { # FILE KEY
	local out u
	out=$(cat "$1")
	u=$(field unfinished "$out")
	case $2 in
	rps) awk -v r="$(field requests "$out")" -v u="$u" -v s="$(field seconds "$out")" 'BEGIN {
		if (u > 0) printf "<= %.2f", (r + u) / s; else printf "%.1f", r / s }' ;;
	*) awk -v v="$(field "$2" "$out")" -v u="$u" 'BEGIN { printf "%s%.1f", (u > 0 ? ">= " : ""), v }' ;;
	esac
}
ratio() { # KILNFILE MOTOFILE
	awk -v k="$(field rps "$(cat "$1")")" -v r="$(field requests "$(cat "$2")")" \
		-v u="$(field unfinished "$(cat "$2")")" -v s="$(field seconds "$(cat "$2")")" 'BEGIN {
		m = (r + u) / s
		if (m <= 0) { print "-"; exit }
		printf "%s%.0fx", (u > 0 ? ">= " : ""), k / m }'
}

echo "## DescribeImages: kiln against moto_server"
echo
echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), $(uname -r)"
echo "- $("$KILN" --version 2>/dev/null | head -n 1 || echo 'kiln (version unknown)'), git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); moto ${MOTO:-not available}"
echo "- $COUNT images in each server; each query selects $(cat "$DIR/results/count-name") (name) and $(cat "$DIR/results/count-tag") (tag) of them, with no MaxResults (one response holds them all)"
echo "- loading through the API: kiln $(cat "$DIR/results/kiln-load")${MOTO:+; moto $(cat "$DIR/results/moto-load")}"
echo "- $SECONDS_PER_CELL s per cell after 1 s of warm-up; loadgen: one kept-alive connection per client, every request SigV4-signed afresh; latency from the first byte sent to the last byte received"
echo
echo "| query | clients | kiln req/s | kiln p50 ms | kiln p99 ms | moto req/s | moto p50 ms | moto p99 ms | kiln/moto |"
echo "|---|---|---|---|---|---|---|---|---|"
for q in "${QUERIES[@]}"; do
	for c in $CLIENTS; do
		k=$DIR/results/kiln-$q-$c m=$DIR/results/moto-$q-$c
		if [[ -n $MOTO ]]; then
			echo "| ${LABEL[$q]} | $c | $(cell "$k" rps) | $(cell "$k" p50_ms) | $(cell "$k" p99_ms) | $(cell "$m" rps) | $(cell "$m" p50_ms) | $(cell "$m" p99_ms) | $(ratio "$k" "$m") |"
		else
			echo "| ${LABEL[$q]} | $c | $(cell "$k" rps) | $(cell "$k" p50_ms) | $(cell "$k" p99_ms) | - | - | - | - |"
		fi
	done
done

echo
echo "Targets (issue 3) at 8 clients:"
echo
echo '| query | target | measured | |'
echo '|---|---|---|---|'
for q in "${QUERIES[@]}"; do
	k=$DIR/results/kiln-$q-8 m=$DIR/results/moto-$q-8
	[[ -f $k ]] || continue
	p99=$(field p99_ms "$(cat "$k")")
	awk -v q="${LABEL[$q]}" -v p="$p99" 'BEGIN {
		printf "| %s | p99 < 50 ms | %.1f ms | %s |\n", q, p, (p < 50 ? "met" : "**missed**") }'
	if [[ -f $m ]]; then
		awk -v q="${LABEL[$q]}" -v k="$(field rps "$(cat "$k")")" -v r="$(field requests "$(cat "$m")")" \
			-v u="$(field unfinished "$(cat "$m")")" -v s="$(field seconds "$(cat "$m")")" 'BEGIN {
			m = (r + u) / s
			x = (m > 0) ? k / m : 0
			printf "| %s | >= 20x moto req/s | %s%.0fx | %s |\n", q, (u > 0 ? ">= " : ""), x, (x >= 20 ? "met" : "**missed**") }'
	else
		echo "| ${LABEL[$q]} | >= 20x moto req/s | moto not available | not measured |"
	fi
done
