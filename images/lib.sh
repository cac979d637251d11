# What the base image recipes (images/NAME/build.sh) share.  Each sources it
# after `set -eu`, with $here its own directory:
#
#   . "$here/../lib.sh"
#
# Messages start with "build.sh: ", as `kiln base-image build` shows them.

# die MESSAGE: say it and exit 1.
die() {
    echo "build.sh: $*" >&2
    exit 1
}

# image_args "$@": the arguments every recipe takes, OUT.raw CACHE_DIR
# AGENT_BINARY, into $out, $cache and $agent (usage: exit 2).
image_args() {
    [ $# -eq 3 ] || { echo "usage: build.sh OUT.raw CACHE_DIR AGENT_BINARY" >&2; exit 2; }
    out=$1 cache=$2 agent=$3
    [ -x "$agent" ] || die "agent '$agent' is not an executable"
}

# need TOOL...: each is on the PATH.
need() {
    for _tool in "$@"; do
        command -v "$_tool" >/dev/null || die "'$_tool' not found"
    done
}

# image_workdir NAME: makes $cache, and $work, a temporary directory
# kiln-NAME.XXXXXX removed when the script exits.
image_workdir() {
    mkdir -p "$cache"
    work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-$1.XXXXXX")
    trap 'rm -rf "$work"' EXIT INT TERM
}

# image_boot_links ROOT KVER: /vmlinuz and /initrd.img in ROOT, the links
# kiln reads the kernel and initrd through (docs/vm.md).
image_boot_links() {
    ln -sfn "boot/vmlinuz-$2" "$1/vmlinuz"
    ln -sfn "boot/initrd.img-$2" "$1/initrd.img"
}

# image_disk ROOT SIZE KVER: records KVER in ROOT/etc/kiln-kernel, writes
# $out, a bare ext4 labelled kiln-root of SIZE (sparse) made from ROOT
# (mkfs.ext4 -d: nothing is mounted), and prints "kernel KVER", the last
# line kiln reads.
image_disk() {
    echo "$3" > "$1/etc/kiln-kernel"
    rm -f "$out"
    truncate -s "$2" "$out"
    mkfs.ext4 -q -F -L kiln-root -E nodiscard -d "$1" "$out"
    echo "kernel $3"
}
