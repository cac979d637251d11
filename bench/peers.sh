#!/usr/bin/env bash
# peers.sh [--tools "LIST"] [--targets] [DIR]: measures snapshot tools side by side on the bench
# images a, b, c, d in DIR (default $KILN_BENCH_DIR or /var/tmp/kiln-bench; built by
# make-images.sh) and prints Markdown to stdout: machine info, machine limits, and one table
# row per tool.
#
# Tools (default "restic borg casync qcow2 zstd"; also "kiln"):
#   restic  repository v2, --compression auto (encryption is mandatory; RESTIC_PASSWORD is set)
#   borg    --encryption=none, --compression zstd,1
#   casync  casync make --store=...; the .caibx indexes are kept in the store and counted
#   qcow2   qemu-img convert -c -O qcow2; incremental = qemu-img create -b NEW.raw + rebase onto
#           a.qcow2 (copies the clusters that differ at the same offset) + convert -c -B a.qcow2
#   zstd    zstd -1 -T2 of the whole image, no dedup
#   kiln    $KILN (default build/src/cmd/kiln) --data-dir STORE snapshot import/export;
#           skipped with a message when the binary is missing
#
# Per tool, the same sequence (measure_tool): ingest a into a new store; copies of that store
# then ingest b, c and d with a as parent (bytes added = du -sb of the store after minus
# before); restore b to a raw file (checked with cmp); d alone in a new store (cross-image
# saving = 1 - added d / d alone). Wall time and peak RSS come from /usr/bin/time; a sync after
# each step is not timed. Inputs are read once beforehand, so they are in the page cache.
#
# --targets prints the issue-2 targets as a row under kiln's. Raw results are left in
# DIR/results/TOOL/KEY (one value per file; run.sh reads them), tool output in DIR/logs/.
# Scratch stores live in $KILN_BENCH_WORK (default DIR/work) and are removed unless
# KILN_BENCH_KEEP=1.
set -euo pipefail
shopt -s inherit_errexit

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="restic borg casync qcow2 zstd"
TARGETS=0
while (($#)); do
	case $1 in
	--tools) TOOLS=$2; shift 2 ;;
	--targets) TARGETS=1; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	-*) echo "peers.sh: unknown option '$1'" >&2; exit 2 ;;
	*) break ;;
	esac
done
DIR=$(cd "${1:-${KILN_BENCH_DIR:-/var/tmp/kiln-bench}}" && pwd)
WORK=${KILN_BENCH_WORK:-$DIR/work}
RESULTS=$DIR/results
LOGS=$DIR/logs
KILN=${KILN:-$REPO/build/src/cmd/kiln}
IMAGE_MB=   # logical size of one image in MB, set in main

export RESTIC_PASSWORD=kiln-bench
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

note() { printf 'peers: %s\n' "$*" >&2; }
die() { printf 'peers: error: %s\n' "$*" >&2; exit 1; }

# --- timing: hooks run each measured command through `timed`; an operation's wall time is the
# sum of its commands' wall times and its RSS the largest of their peak RSS ----------------------

TIMELOG=/dev/null
timed() { /usr/bin/time -f '%e %M' -a -o "$TIMELOG" "$@"; }
time_total() {  # prints "SECONDS PEAK_RSS_KIB" for the commands logged in $TIMELOG
	awk '/^[0-9.]+ [0-9]+$/ { s += $1; if ($2 > m) m = $2; n++ }
		END { if (!n) exit 1; printf "%.2f %d\n", s, m }' "$TIMELOG"
}

# --- tool hooks ---------------------------------------------------------------------------
# TOOL_check            usable? (prints the reason and fails if not)
# TOOL_init STORE AUX   create an empty store (AUX holds tool state outside the measured store)
# TOOL_ingest STORE AUX FILE NAME [PARENT_ID]
#                       store FILE; print the snapshot id as the last line of stdout
# TOOL_restore STORE AUX ID OUT
#                       write snapshot ID to the raw file OUT
# Tool output goes to $TOOLLOG. Stored bytes are du -sb STORE for every tool.

have() { command -v "$1" >/dev/null || { echo "$1 not installed"; return 1; }; }

restic_check() { have restic; }
restic_init() {
	restic -r "$1" init --repository-version 2 >>"$TOOLLOG" 2>&1
}
restic_ingest() {
	local parent_opt=()
	[[ -z ${5:-} ]] || parent_opt=(--parent "$5")
	RESTIC_CACHE_DIR=$2/cache timed restic -r "$1" backup --json --compression auto --host bench \
		"${parent_opt[@]}" "$3" >"$2/backup.json" 2>>"$TOOLLOG"
	sed -n 's/.*"message_type":"summary".*"snapshot_id":"\([0-9a-f]*\)".*/\1/p' "$2/backup.json"
}
restic_restore() {
	rm -rf "$2/restore"
	RESTIC_CACHE_DIR=$2/cache timed restic -r "$1" restore "$3" --target "$2/restore" >>"$TOOLLOG" 2>&1
	mv "$(find "$2/restore" -type f)" "$4"
}

borg_check() { have borg; }
borg_init() {
	BORG_BASE_DIR=$2 borg init --encryption=none "$1" >>"$TOOLLOG" 2>&1
}
borg_ingest() {
	BORG_BASE_DIR=$2 timed borg create --compression zstd,1 "$1::$4" "$3" >>"$TOOLLOG" 2>&1
	echo "$4"
}
borg_restore() {
	rm -rf "$2/restore"
	mkdir -p "$2/restore"
	(cd "$2/restore" && BORG_BASE_DIR=$2 timed borg extract "$1::$3" >>"$TOOLLOG" 2>&1)
	mv "$(find "$2/restore" -type f)" "$4"
}

casync_check() { have casync; }
casync_init() { mkdir -p "$1/chunks"; }
casync_ingest() {
	timed casync make --store="$1/chunks" "$1/$4.caibx" "$3" >>"$TOOLLOG" 2>&1
	echo "$4.caibx"
}
casync_restore() {
	timed casync extract --store="$1/chunks" "$1/$3" "$4" >>"$TOOLLOG" 2>&1
}

qcow2_check() { have qemu-img; }
qcow2_init() { :; }
qcow2_ingest() {
	local store=$1 file=$3 name=$4 parent=${5:-}
	if [[ -z $parent ]]; then
		timed qemu-img convert -q -c -O qcow2 "$file" "$store/$name.qcow2"
	else
		# names relative to the store, so copies of the store keep working
		(
			cd "$store"
			timed qemu-img create -q -f qcow2 -b "$file" -F raw "$name.tmp.qcow2"
			timed qemu-img rebase -q -f qcow2 -b "$parent" -F qcow2 "$name.tmp.qcow2"
			timed qemu-img convert -q -c -O qcow2 -B "$parent" -F qcow2 "$name.tmp.qcow2" "$name.qcow2"
			rm "$name.tmp.qcow2"
		) >>"$TOOLLOG" 2>&1
	fi
	echo "$name.qcow2"
}
qcow2_restore() {
	(cd "$1" && timed qemu-img convert -q -O raw "$3" "$4") >>"$TOOLLOG" 2>&1
}

zstd_check() { have zstd; }
zstd_init() { :; }
zstd_ingest() {
	timed zstd -1 -T2 -q -f "$3" -o "$1/$4.zst" >>"$TOOLLOG" 2>&1
	echo "$4.zst"
}
zstd_restore() {
	timed zstd -d -q -f "$1/$3" -o "$4" >>"$TOOLLOG" 2>&1
}

kiln_check() {
	[[ -x $KILN ]] || { echo "kiln binary '$KILN' not found (build it, or set KILN)"; return 1; }
}
kiln_init() { mkdir -p "$1"; }
kiln_ingest() {
	local parent_opt=()
	[[ -z ${5:-} ]] || parent_opt=(--parent "$5")
	timed "$KILN" --data-dir "$1" snapshot import "${parent_opt[@]}" "$3" >"$2/import.out" 2>>"$TOOLLOG"
	cat "$2/import.out" >>"$TOOLLOG"
	tail -n 1 "$2/import.out"
}
kiln_restore() {
	timed "$KILN" --data-dir "$1" snapshot export "$3" "$4" >>"$TOOLLOG" 2>&1
}

# --- the measurement ------------------------------------------------------------------------

put() { printf '%s\n' "$2" >"$RES/$1"; }
get() { if [[ -s $RESULTS/$1/$2 ]]; then cat "$RESULTS/$1/$2"; else echo -; fi; }
store_bytes() { du -sb "$1/store" | cut -f1; }
warm() { cat "$@" >/dev/null; }

# SLOT FILE NAME [PARENT]: one timed ingest into store slot $W/SLOT; records
# ingest_NAME_s and rss_ingest_NAME_kib, and leaves the snapshot id in $SNAP.
ingest() {
	local slot=$W/$1 file=$2 name=$3 parent=${4:-} s rss
	echo "ingest $name" >"$RES/.step"
	warm "$file"
	sync
	TIMELOG=$W/time.ingest-$name
	: >"$TIMELOG"
	SNAP=$("${TOOL}_ingest" "$slot/store" "$slot/aux" "$file" "$name" "$parent" | tail -n 1)
	[[ -n $SNAP ]] || die "$TOOL: ingest of $name printed no snapshot id (see $TOOLLOG)"
	read -r s rss < <(time_total)
	sync
	put "ingest_${name}_s" "$s"
	put "rss_ingest_${name}_kib" "$rss"
}

new_slot() {  # SLOT: an empty store
	rm -rf --one-file-system "${W:?}/$1"
	mkdir -p "$W/$1/store" "$W/$1/aux"
	"${TOOL}_init" "$W/$1/store" "$W/$1/aux"
}
copy_slot() { rm -rf --one-file-system "${W:?}/$2"; cp -a "$W/$1" "$W/$2"; }
drop_slot() { [[ ${KILN_BENCH_KEEP:-0} == 1 ]] || rm -rf --one-file-system "${W:?}/$1"; }

# measure_tool NAME: runs the sequence for tool NAME through its hooks, results in $RESULTS/NAME.
measure_tool() {
	TOOL=$1
	W=$WORK/$TOOL
	RES=$RESULTS/$TOOL
	TOOLLOG=$LOGS/peers-$TOOL.log
	local id_a n before out s rss t0
	rm -rf --one-file-system "$W" "$RES"
	mkdir -p "$W" "$RES"
	: >"$TOOLLOG"
	t0=$SECONDS

	new_slot a
	ingest a "$DIR/a.raw" a
	id_a=$SNAP
	before=$(store_bytes "$W/a")
	put stored_a "$before"
	note "$TOOL: a ingested in $(get "$TOOL" ingest_a_s) s, $before bytes stored"

	for n in b c d; do
		copy_slot a "$n"
		ingest "$n" "$DIR/$n.raw" "$n" "$id_a"
		put "added_$n" $(($(store_bytes "$W/$n") - before))
		put "id_$n" "$SNAP"
		note "$TOOL: $n after a in $(get "$TOOL" "ingest_${n}_s") s, $(get "$TOOL" "added_$n") bytes added"
		[[ $n == b ]] || drop_slot "$n"
	done

	echo "restore b" >"$RES/.step"
	out=$W/restore-b.raw
	rm -f "$out"
	sync
	TIMELOG=$W/time.restore-b
	: >"$TIMELOG"
	"${TOOL}_restore" "$W/b/store" "$W/b/aux" "$(get "$TOOL" id_b)" "$out"
	read -r s rss < <(time_total)
	sync
	put restore_b_s "$s"
	put rss_restore_b_kib "$rss"
	put restore_alloc "$(du -sB1 "$out" | cut -f1)"
	if cmp -s "$out" "$DIR/b.raw"; then put restore_ok yes; else put restore_ok NO; fi
	note "$TOOL: b restored in $s s, identical: $(get "$TOOL" restore_ok)"
	rm -f "$out"
	drop_slot b
	drop_slot a

	new_slot d0
	ingest d0 "$DIR/d.raw" d_alone
	put alone_d "$(store_bytes "$W/d0")"
	drop_slot d0

	put peak_rss_kib "$(cat "$RES"/rss_*_kib | sort -n | tail -n 1)"
	rm -f "$RES/.step" "$W"/time.*
	note "$TOOL: done in $((SECONDS - t0)) s"
}

# --- output -----------------------------------------------------------------------------------

# Numbers for the table; "-" (missing) passes through.
mb() { awk -v b="$1" 'BEGIN { if (b == "-") print "-"; else printf "%.1f", b / 1e6 }'; }
mib() { awk -v k="$1" 'BEGIN { if (k == "-") print "-"; else printf "%.0f", k / 1024 }'; }

table_header() {
	echo '| tool | ingest a s | logical MB/s | stored a MB | ingest b s | **added b MB** | ingest c s | **added c MB** | ingest d s | added d MB | d alone MB | **d saving** | **restore b s** | restore = b | restore allocated MB | peak RSS MiB |'
	echo '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|'
}

table_row() {  # TOOL [LABEL]
	local t=$1 ia rate saving ad al
	ia=$(get "$t" ingest_a_s)
	rate=$(awk -v m="$IMAGE_MB" -v s="$ia" 'BEGIN { if (s == "-" || s <= 0) print "-"; else printf "%.0f", m / s }')
	ad=$(get "$t" added_d)
	al=$(get "$t" alone_d)
	saving=$(awk -v a="$ad" -v b="$al" 'BEGIN { if (a == "-" || b == "-" || b <= 0) print "-"; else printf "%.0f%%", 100 * (1 - a / b) }')
	printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
		"${2:-$t}" "$ia" "$rate" "$(mb "$(get "$t" stored_a)")" \
		"$(get "$t" ingest_b_s)" "$(mb "$(get "$t" added_b)")" \
		"$(get "$t" ingest_c_s)" "$(mb "$(get "$t" added_c)")" \
		"$(get "$t" ingest_d_s)" "$(mb "$ad")" "$(mb "$al")" "$saving" \
		"$(get "$t" restore_b_s)" "$(get "$t" restore_ok)" "$(mb "$(get "$t" restore_alloc)")" \
		"$(mib "$(get "$t" peak_rss_kib)")"
}

# The issue-2 targets, in the table's columns.
target_row() {
	echo '| *target (issue 2)* | ≤ 1.7 | ≥ 1263 | ≤ 280 | ≤ 1.5 | ≤ 20 | ≤ 1.5 | ≤ 30 | ≤ 1.5 | | | ≥ 45% | ≤ 1.1 | yes | sparse | bounded |'
}

tool_label() {
	case $1 in
	restic) echo "restic $(restic version | awk '{ print $2 }') (v2, auto)" ;;
	borg) echo "$(borg --version) (zstd,1)" ;;
	casync) echo "casync $(casync --version | awk 'NR == 1 { print $2 }')" ;;
	qcow2) echo "qemu-img $(qemu-img --version | awk 'NR == 1 { print $3 }') convert -c (qcow2)" ;;
	zstd) echo "zstd -1 -T2 (no dedup)" ;;
	*) echo "$1" ;;
	esac
}

machine_info() {
	echo '## Machine'
	echo
	echo "- date: $(date -u '+%F %T UTC')"
	echo "- CPU: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), nproc $(nproc)," \
		"SHA-NI $(grep -qw sha_ni /proc/cpuinfo && echo yes || echo no)"
	echo "- memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)," \
		"kernel $(uname -r), $(sed -n 's/^PRETTY_NAME="\(.*\)"$/\1/p' /etc/os-release)"
	echo "- images: $DIR/{a,b,c,d}.raw, $(stat -c %s "$DIR/a.raw") bytes each"
	echo
}

# Hashing and compression limits: openssl sha256 on 16 KiB blocks (1 and 2 processes), and
# zstd -1 -T2 of a.raw (and its decompression) as the no-dedup reference.
machine_limits() {
	local one two zs zr zsize
	one=$(openssl speed -seconds 2 -bytes 16384 -evp sha256 2>/dev/null | tail -n 1 | awk '{ sub(/k$/, "", $NF); printf "%.0f", $NF * 1000 / 1e6 }')
	two=$(openssl speed -multi 2 -seconds 2 -bytes 16384 -evp sha256 2>/dev/null | tail -n 1 | awk '{ sub(/k$/, "", $NF); printf "%.0f", $NF * 1000 / 1e6 }')
	mkdir -p "$WORK"
	warm "$DIR/a.raw"
	TIMELOG=$WORK/time.zstd
	: >"$TIMELOG"
	timed zstd -1 -T2 -q -f "$DIR/a.raw" -o "$WORK/a.raw.zst"
	zs=$(time_total | cut -d' ' -f1)
	zsize=$(stat -c %s "$WORK/a.raw.zst")
	: >"$TIMELOG"
	timed zstd -d -q -f "$WORK/a.raw.zst" -o /dev/null
	zr=$(time_total | cut -d' ' -f1)
	rm -f "$WORK/a.raw.zst" "$TIMELOG"
	echo '## Machine limits'
	echo
	echo '| probe | result |'
	echo '|---|---|'
	echo "| openssl speed -evp sha256, 16 KiB blocks, 1 core | $one MB/s |"
	echo "| same, -multi 2 (2 cores) | $two MB/s |"
	echo "| zstd -1 -T2 of a.raw | $zs s ($(awk -v m="$IMAGE_MB" -v s="$zs" 'BEGIN { printf "%.0f", m / s }') MB/s logical), $(mb "$zsize") MB |"
	echo "| zstd -d of that, 1 thread, to /dev/null | $zr s |"
	echo
}

main() {
	local n t rc reason
	for n in a b c d; do
		[[ -f $DIR/$n.raw ]] || die "$DIR/$n.raw is missing: run bench/make-images.sh first"
	done
	[[ -x /usr/bin/time ]] || die "GNU time (/usr/bin/time) is not installed"
	IMAGE_MB=$(awk -v b="$(stat -c %s "$DIR/a.raw")" 'BEGIN { printf "%.2f", b / 1e6 }')
	mkdir -p "$WORK" "$RESULTS" "$LOGS"

	machine_info
	machine_limits

	local rows=()
	for t in $TOOLS; do
		declare -F "${t}_check" >/dev/null || die "unknown tool '$t'"
		if ! reason=$("${t}_check"); then
			note "skipping $t: $reason"
			rm -rf --one-file-system "${RESULTS:?}/$t"
			rows+=("| $t | skipped: $reason ||||||||||||||")
			continue
		fi
		note "measuring $t"
		# in a subshell with errexit, so one failing tool leaves its row incomplete, not the run
		set +e
		(
			set -e
			measure_tool "$t"
		)
		rc=$?
		set -e
		if ((rc != 0)); then
			note "$t failed during '$(cat "$RESULTS/$t/.step" 2>/dev/null || echo setup)' (see $LOGS/peers-$t.log)"
		fi
		[[ ${KILN_BENCH_KEEP:-0} == 1 ]] || rm -rf --one-file-system "${WORK:?}/$t"
		rows+=("$(table_row "$t" "$(tool_label "$t")")")
		if [[ $t == kiln && $TARGETS == 1 ]]; then rows+=("$(target_row)"); fi
	done

	echo '## Tools'
	echo
	table_header
	printf '%s\n' "${rows[@]}"
	echo
	echo "Sizes are du -sb of the store in MB (10^6 bytes); added = store after minus store after a;"
	echo "d saving = 1 - added d / d alone; restore allocated = du of the restored b.raw (sparse or dense);"
	echo "peak RSS = the largest max RSS over all steps."
}

main
