#!/usr/bin/env bash
# run.sh [DIR]: the whole benchmark of issue 2. Builds the test images if needed
# (make-images.sh), measures kiln and the peers on the same files (peers.sh; kiln is skipped
# with a message if $KILN / build/src/cmd/kiln is missing), and prints Markdown to stdout: the
# images, machine info and limits, the comparison table with a header row and the issue's
# targets under kiln's row, then each target for kiln as met or missed.
# DIR defaults to $KILN_BENCH_DIR or /var/tmp/kiln-bench; the peer list to
# $KILN_BENCH_PEERS ("restic borg casync qcow2 zstd"). Progress goes to stderr.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${1:-${KILN_BENCH_DIR:-/var/tmp/kiln-bench}}
PEERS=${KILN_BENCH_PEERS:-restic borg casync qcow2 zstd}

"$HERE/make-images.sh" "$DIR" >&2
DIR=$(cd "$DIR" && pwd)

echo '## Images'
cat "$DIR/image-stats.md"
echo
"$HERE/peers.sh" --tools "kiln $PEERS" --targets "$DIR"

# --- kiln against the targets, from peers.sh's raw results (DIR/results/kiln/KEY) -------------

R=$DIR/results/kiln
val() { if [[ -s $R/$1 ]]; then cat "$R/$1"; else echo -; fi; }

# LABEL MEASURED OP LIMIT UNIT: one row; OP is <= or >=.
check() {
	awk -v label="$1" -v m="$2" -v op="$3" -v lim="$4" -v unit="$5" 'BEGIN {
		if (m == "-") { printf "| %s | %s %s %s | not measured | - |\n", label, op, lim, unit; exit }
		ok = (op == "<=") ? (m + 0 <= lim + 0) : (m + 0 >= lim + 0)
		printf "| %s | %s %s %s | %s %s | %s |\n", label, op, lim, unit, m, unit, ok ? "met" : "**missed**"
	}'
}
in_mb() { awk -v b="$1" 'BEGIN { if (b == "-") print "-"; else printf "%.1f", b / 1e6 }'; }

echo
echo '## kiln against the issue-2 targets'
echo
if [[ ! -d $R ]]; then
	echo 'kiln was not measured (binary missing; see above).'
	exit 0
fi
saving=$(awk -v a="$(val added_d)" -v b="$(val alone_d)" \
	'BEGIN { if (a == "-" || b == "-" || b <= 0) print "-"; else printf "%.1f", 100 * (1 - a / b) }')
sparse=$(awk -v a="$(val restore_alloc)" -v s="$(stat -c %s "$DIR/b.raw")" \
	'BEGIN { if (a == "-") print "-"; else print (a < s ? "yes" : "no") }')
echo '| target | limit | kiln | |'
echo '|---|---|---|---|'
check 'full ingest of a' "$(val ingest_a_s)" '<=' 1.7 s
check 'stored size of a' "$(in_mb "$(val stored_a)")" '<=' 280 MB
check 'bytes added by b (in place) after a' "$(in_mb "$(val added_b)")" '<=' 20 MB
check 'bytes added by c (rebuilt) after a' "$(in_mb "$(val added_c)")" '<=' 30 MB
check 'cross-image saving of d after a' "$saving" '>=' 45 %
check 'incremental ingest of b' "$(val ingest_b_s)" '<=' 1.5 s
check 'incremental ingest of c' "$(val ingest_c_s)" '<=' 1.5 s
check 'restore of b' "$(val restore_b_s)" '<=' 1.1 s
echo "| restore of b is byte-identical | yes | $(val restore_ok) | $([[ $(val restore_ok) == yes ]] && echo met || echo '**missed**') |"
echo "| restore of b is sparse | yes | $sparse | $([[ $sparse == yes ]] && echo met || echo '**missed**') |"

# Memory: peak RSS of importing a 256 MiB prefix of a, all of a, and a
# 20 GiB sparse image holding a and d, each into a fresh store.  Bounded
# means the three are about the same.
KILN=${KILN:-$(cd "$HERE/.." && pwd)/build/src/cmd/kiln}
rss_of() {
	local store
	store=$(mktemp -d "$DIR/rss.XXXXXX")
	/usr/bin/time -f %M -o "$store.rss" "$KILN" --data-dir "$store" -q snapshot import "$1" >/dev/null
	cat "$store.rss"
	rm -rf "$store" "$store.rss"
}
head -c 268435456 "$DIR/a.raw" > "$DIR/rss-small.raw"
truncate -s 20G "$DIR/rss-large.raw"
dd if="$DIR/a.raw" of="$DIR/rss-large.raw" bs=4M conv=notrunc,sparse status=none
dd if="$DIR/d.raw" of="$DIR/rss-large.raw" bs=4M seek=4000 conv=notrunc,sparse status=none
r1=$(rss_of "$DIR/rss-small.raw")
r2=$(rss_of "$DIR/a.raw")
r3=$(rss_of "$DIR/rss-large.raw")
rm -f "$DIR/rss-small.raw" "$DIR/rss-large.raw"
bounded=$(awk -v a="$r1" -v c="$r3" 'BEGIN { print (c < 1.25 * a ? "met" : "**missed**") }')
echo "| peak RSS bounded (256 MiB / 2 GiB / 20 GiB sparse image) | within 25% | $((r1 / 1024)) / $((r2 / 1024)) / $((r3 / 1024)) MiB | $bounded |"
