#!/usr/bin/env bash
# bench/boot/table.sh RESULTS IMAGE SNAP_GIB RUNS: the Markdown table of
# bench/boot/run.sh from its results file (one line per boot: name, wall
# seconds to hello, kiln's own seconds, bytes fetched, bytes read, prefetch
# hits, chunks prefetched, bytes the boot files' copy read, chunks fetched;
# "-" where a figure does not apply).
set -euo pipefail
R=$1 IMAGE=$2 SNAP_GIB=$3 RUNS=$4

mib() { awk -v b="$1" 'BEGIN { if (b == "-") print "-"; else printf "%.1f", b / 1048576 }'; }
stats() { # NAME COL -> "min median" of column COL over the runs
	awk -v n="$1" -v c="$2" '$1 == n { print $c }' "$R" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) { print "- -"; exit }
			printf "%.2f %.2f\n", v[1], v[int((NR + 1) / 2)] }'
}
read -r floor_min floor_med <<< "$(stats floor 2)"
echo "Boot to the agent's hello, image $IMAGE (snapshot $SNAP_GIB GiB), TCG, $RUNS run(s);"
echo "machine: $(nproc) vCPU $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(date -u +%Y-%m-%d)"
echo
echo "| case | volume | hello s (min / med) | x floor (min / med) | kiln's own s (med) | fetched MiB | read MiB (all / guest) | fetched / read | prefetch hits / prefetched | chunks fetched by reads |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for name in floor cold-2 cold-20 cold+profile-2 cold+profile-20 1ms-2 1ms-20 record-2 \
	1ms+profile-2 1ms+profile-20; do
	grep -q "^$name " "$R" || continue
	read -r mn med <<< "$(stats "$name" 2)"
	own=$(stats "$name" 3 | cut -d' ' -f2)
	last=$(awk -v n="$name" '$1 == n' "$R" | tail -n 1)
	read -r _ _ _ fetched read hits pref files chunks <<< "$last"
	ratio=$(awk -v a="$mn" -v b="$floor_min" -v c="$med" -v d="$floor_med" \
		'BEGIN { if (b == "-" || b == 0) print "-"; else printf "%.2f / %.2f", a / b, c / d }')
	guest=$(awk -v a="$read" -v b="$files" 'BEGIN { if (a == "-") print "-"; else print a - b }')
	waited=$(awk -v a="$chunks" -v b="$pref" 'BEGIN { if (a == "-") print "-"; else print a - b }')
	fr=$(awk -v a="$fetched" -v b="$read" 'BEGIN { if (a == "-" || b == 0) print "-"; else printf "%.2f", a / b }')
	case $name in floor) volname="local raw"; own=- ;; *) volname="${name##*-} GiB" ;; esac
	echo "| ${name%-*} | $volname | $mn / $med | $ratio | $own | $(mib "$fetched") | $(mib "$read") / $(mib "$guest") | $fr | $hits / $pref | $waited |"
done
