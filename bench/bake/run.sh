#!/usr/bin/env bash
# bench/bake/run.sh [TEMPLATE]: the layer cache, measured (issue 6,
# "Benchmarks"; docs/benchmarks.md, "Bake").
#
# On the debian base image (built once into a fresh data directory; its
# debootstrap tarball cached as the tests cache it), TEMPLATE (default
# examples/web-server.json) is baked four times:
#
#   cold        an empty layer cache: every step runs
#   last step   the template with its last build step changed (one more
#               unit in its systemd step, or one more line in a file step):
#               the steps before it are cache hits
#   no change   the same template again: every step and the tests hit
#   no cache    --no-cache: every step runs, what Packer does every time
#
# and the table gives each time and its ratio to the cold time, the steps
# run and hit, and the VMs booted (from each bake's manifest).  Targets:
# last step <= 25% of cold, no change < 5% of cold.  Logs and manifests
# stay in the work directory with KEEP=1.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-build}
KILN=${KILN:-$REPO/$BUILD/src/cmd/kiln}
TEMPLATE=${1:-$REPO/examples/web-server.json}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-bake-bench.XXXXXX")
export KILN_DATA_DIR=$W/data KILN_ACCEL=tcg
cleanup() { [ "${KEEP:-0}" = 1 ] && echo "kept $W" >&2 || rm -rf "$W"; }
trap cleanup EXIT
cache=${KILN_DEBIAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln-test-debian}
mkdir -p "$cache"

"$KILN" base-image build debian --cache-dir "$cache" > "$W/ids" 2> "$W/build.log"

# the template next to its input files, and its variant with the last
# build step changed
tdir=$(dirname "$TEMPLATE")
cp -r "$tdir"/. "$W/t/" 2>/dev/null || { mkdir -p "$W/t" && cp -r "$tdir"/. "$W/t/"; }
base="$W/t/$(basename "$TEMPLATE")"
python3 - "$base" "$W/t/last-step.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
last = [s for s in t["steps"] if s.get("phase", "build") == "build"][-1]
if last["type"] == "systemd":
    last.setdefault("mask", []).append("kiln-bench-changed.service")
elif last["type"] == "file" and "content" in last:
    last["content"] += "# changed\n"
elif last["type"] == "shell" and "inline" in last:
    last["inline"].append("true changed")
else:
    sys.exit("cannot change a last step of type %s" % last["type"])
json.dump(t, open(sys.argv[2], "w"), indent=1)
PY

run() { # name template [args]: time a bake
    local name=$1 tpl=$2
    shift 2
    local t0 t1
    sleep 1 # output names carry the time to the second
    t0=$(date +%s.%N)
    (cd "$W/t" && "$KILN" bake "$tpl" --manifest "$W/$name.json" "$@") > "$W/$name.out" 2>&1 ||
        { cat "$W/$name.out" >&2; exit 1; }
    t1=$(date +%s.%N)
    echo "$name $(echo "$t1 - $t0" | bc)" >> "$W/times"
}
run cold "$base"
run last-step "$W/t/last-step.json"
run no-change "$W/t/last-step.json"
run no-cache "$W/t/last-step.json" --no-cache

python3 - "$W" <<'PY'
import json, os, sys
w = sys.argv[1]
times = dict(l.split() for l in open(os.path.join(w, "times")))
cold = float(times["cold"])
print("| bake | seconds | of cold | steps run | steps hit | VMs booted |")
print("|---|---:|---:|---:|---:|---:|")
for name in ["cold", "last-step", "no-change", "no-cache"]:
    m = json.load(open(os.path.join(w, name + ".json")))["builds"][-1]
    hits = sum(s["cache"] == "hit" for s in m["steps"])
    t = float(times[name])
    print("| %s | %.1f | %.1f%% | %d | %d | %d |" % (name, t, 100 * t / cold,
          len(m["steps"]) - hits, hits, m["instances_launched"]))
PY
