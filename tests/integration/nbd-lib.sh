# Helpers for the NBD tests (sourced after functions.sh).
#
#   nbd_start SNAP SOCK [ARGS...]  start `kiln nbd` in the background, wait
#                                  until it serves; its pid in $nbd_pid, its
#                                  stderr in $T/nbd.log
#   nbd_stop                       SIGTERM, wait, fail unless it exits 0
#   nbd_uri SOCK                   the nbd+unix URI of a socket

nbd_pid=

nbd_kill_leftover() {
    if [ -n "$nbd_pid" ]; then
        kill -9 "$nbd_pid" 2>/dev/null || true
    fi
}
on_cleanup nbd_kill_leftover

nbd_uri() {
    echo "nbd+unix:///?socket=$1"
}

# Ready means it said so in the log (a stale socket left by a killed server
# may already exist: the new server replaces it).
nbd_start() {
    _snap=$1 _sock=$2
    shift 2
    touch "$T/nbd.log"
    _before=$(grep -c '^kiln: serving' "$T/nbd.log" || true)
    "$KILN" nbd "$_snap" --socket "$_sock" "$@" 2>>"$T/nbd.log" &
    nbd_pid=$!
    _i=0
    while [ "$(grep -c '^kiln: serving' "$T/nbd.log" || true)" = "$_before" ]; do
        kill -0 "$nbd_pid" 2>/dev/null || { cat "$T/nbd.log" >&2; die "kiln nbd exited"; }
        _i=$((_i + 1))
        [ $_i -lt 600 ] || die "kiln nbd did not create $_sock"
        sleep 0.05
    done
}

nbd_stop() {
    kill -TERM "$nbd_pid"
    _rc=0
    wait "$nbd_pid" || _rc=$?
    nbd_pid=
    [ "$_rc" = 0 ] || { cat "$T/nbd.log" >&2; die "kiln nbd exited $_rc after SIGTERM"; }
}
