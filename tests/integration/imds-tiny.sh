#!/bin/sh
# The instance metadata service, for real (docs/imds.md): the tiny image
# boots under TCG with `kiln vm boot --metadata FILE`; inside the guest
# (through the agent) the address DHCP gave is the one the metadata says;
# busybox nc gets meta-data over IMDSv1 and over the IMDSv2 token flow
# (PUT /latest/api/token, then the token header); the identity document
# and the user data come back; the tiny image's init ran the user data at
# boot (its output on the console); when the instance file is switched to
# HttpTokens=required the next connection refuses v1 with 401 and still
# serves v2; a token from another instance key is refused; with the
# instance file removed the metadata address answers nothing; and a
# connection to any other 169.254.x.y address (or another port of
# 169.254.169.254) is refused (restrict=on).  A second boot with --egress
# (restrict=off) still has its metadata address caught.
#
# The tiny image's .debs are cached as in vm-tiny.sh ($KILN_VM_CACHE).
. "$(dirname "$0")/functions.sh"
requires qemu-system-x86_64 dpkg-deb mkfs.ext4 python3
export KILN_ACCEL=tcg
tiny_cache

# The metadata in the DIR/imds.instance form: `name hexvalue` lines.
write_metadata() { # FILE required(0|1)
    python3 - "$1" "$2" <<'PY'
import sys
f = {
    "instance_id": "i-0abc0123456789def",
    "image_id": "ami-0123456789abcdef0",
    "instance_type": "t3.micro",
    "availability_zone": "eu-west-1b",
    "region": "eu-west-1",
    "account_id": "123456789012",
    "private_ip": "169.254.0.15",
    "mac": "52:54:00:12:34:56",
    "reservation_id": "r-0abc0123456789def",
    "launch_time": "2026-11-27T11:00:00Z",
    "key_name": "test-key",
    "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKiln test-key",
    "security_groups": "default",
    "user_data": "#!/bin/sh\necho \"imds user data ran as $(id -u)\"\n",
}
with open(sys.argv[1], "w") as out:
    for k, v in f.items():
        out.write("%s %s\n" % (k, v.encode().hex()))
    if sys.argv[2] == "1":
        out.write("tokens_required 31\n")
PY
}

# ---- bad input ----
blank=$(kiln volume create --size 1 | tail -n 1)
printf 'instance_id zz\n' > "$T/bad.md"
expect_fail kiln vm boot "$blank" --dir "$T/blank" --metadata "$T/bad.md"
expect_stderr "bad hex digit"
expect_fail kiln vm boot "$blank" --dir "$T/blank" --metadata "$T/nonexistent.md"
expect_stderr "nonexistent.md"

# ---- build, boot with metadata ----
base_image_build tiny "$cache"
snap=$(sed -n 2p "$T/ids")
vol=$(kiln volume create --snapshot "$snap" | tail -n 1)
dir=$T/i
write_metadata "$T/md" 0

boot_pid=
kill_boot() { [ -z "$boot_pid" ] || kill -9 "$boot_pid" 2>/dev/null || true; }
on_cleanup kill_boot
kill_qemu() { [ -f "$dir/qemu.pid" ] && kill -9 "$(cat "$dir/qemu.pid")" 2>/dev/null || true; }
on_cleanup kill_qemu
"$KILN" vm boot "$vol" --dir "$dir" --metadata "$T/md" 2> "$T/boot.err" &
boot_pid=$!
agent() {
    kiln vm agent "$dir/agent.sock" "$@"
}
agent hello --timeout 600 > /dev/null || { cat "$T/boot.err" "$dir/qemu.log" >&2; die "no hello"; }
ps -o args= -p "$(cat "$dir/qemu.pid")" | grep -q "net=169.254.0.0/16.*guestfwd=tcp:169.254.169.254:80-cmd:" ||
    die "QEMU runs without the metadata network"
[ "$(stat -c %a "$dir/imds.key")" = 600 ] || die "imds.key is not 0600"

# the guest's address is the one the metadata states
agent exec ip -4 addr show eth0 > "$T/addr"
grep -q "inet 169.254.0.15/16" "$T/addr" || die "guest address: $(cat "$T/addr")"

# One HTTP exchange from inside the guest: REQUEST (printf format) to
# HOST:PORT with busybox nc; the whole response on stdout.
http() { # HOST PORT REQUEST
    agent exec sh -c 'printf "$3" | timeout 10 nc "$1" "$2"' sh "$1" "$2" "$3"
}
body() { sed '1,/^\r*$/d'; }
# The init runs the user data after the agent starts: wait (up to 5 min of
# a loaded TCG guest) until the console shows its output N times.
wait_user_data() { # N
    _i=0
    while [ "$(grep -c "user-data: imds user data ran as 0" "$dir/console.log")" -lt "$1" ]; do
        _i=$((_i + 1))
        [ "$_i" -lt 300 ] || die "user data did not run: $(tail -n 20 "$dir/console.log")"
        sleep 1
    done
}
status() { head -n 1 | cut -d' ' -f2; }

# ---- IMDSv1 ----
http 169.254.169.254 80 'GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\n' > "$T/r"
assert_eq "$(status < "$T/r")" 200 "v1 instance-id status"
assert_eq "$(body < "$T/r")" "i-0abc0123456789def" "v1 instance-id"
http 169.254.169.254 80 'GET /latest/meta-data/ HTTP/1.0\r\n\r\n' > "$T/r"
body < "$T/r" | grep -qx "public-keys/" || die "meta-data/ listing: $(cat "$T/r")"
http 169.254.169.254 80 'GET /latest/meta-data/public-keys/ HTTP/1.0\r\n\r\n' > "$T/r"
assert_eq "$(body < "$T/r")" "0=test-key" "public-keys/ listing"
http 169.254.169.254 80 'GET /latest/meta-data/placement/availability-zone HTTP/1.0\r\n\r\n' > "$T/r"
assert_eq "$(body < "$T/r")" "eu-west-1b" "availability zone"
http 169.254.169.254 80 'GET /latest/dynamic/instance-identity/document HTTP/1.0\r\n\r\n' > "$T/r"
body < "$T/r" | grep -q '"instanceId" : "i-0abc0123456789def"' || die "document: $(cat "$T/r")"
http 169.254.169.254 80 'GET /latest/meta-data/nothing HTTP/1.0\r\n\r\n' > "$T/r"
assert_eq "$(status < "$T/r")" 404 "unknown path"

# ---- the user data ran at boot, as root ----
wait_user_data 1

# ---- IMDSv2 ----
http 169.254.169.254 80 'PUT /latest/api/token HTTP/1.0\r\nX-aws-ec2-metadata-token-ttl-seconds: 300\r\n\r\n' > "$T/r"
assert_eq "$(status < "$T/r")" 200 "token status"
token=$(body < "$T/r")
[ -n "$token" ] || die "empty token"
http 169.254.169.254 80 'PUT /latest/api/token HTTP/1.0\r\n\r\n' > "$T/r"
assert_eq "$(status < "$T/r")" 400 "token without a TTL"
http 169.254.169.254 80 'PUT /latest/api/token HTTP/1.0\r\nX-aws-ec2-metadata-token-ttl-seconds: 300\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n' > "$T/r"
assert_eq "$(status < "$T/r")" 403 "token through a proxy"
get_v2() { # PATH TOKEN
    http 169.254.169.254 80 "GET $1 HTTP/1.0\\r\\nX-aws-ec2-metadata-token: $2\\r\\n\\r\\n"
}
get_v2 /latest/meta-data/instance-id "$token" > "$T/r"
assert_eq "$(body < "$T/r")" "i-0abc0123456789def" "v2 instance-id"
get_v2 /latest/meta-data/instance-id "1.$(printf '%064d' 0)" > "$T/r"
assert_eq "$(status < "$T/r")" 401 "a forged token"

# ---- HttpTokens=required: the instance file is read per connection ----
write_metadata "$T/md2" 1
cp "$T/md2" "$dir/.imds.instance.new" && mv "$dir/.imds.instance.new" "$dir/imds.instance"
http 169.254.169.254 80 'GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\n' > "$T/r"
assert_eq "$(status < "$T/r")" 401 "required mode refuses v1"
get_v2 /latest/user-data "$token" > "$T/r"
assert_eq "$(status < "$T/r")" 200 "required mode serves v2"
body < "$T/r" | grep -q "imds user data ran" || die "user data: $(cat "$T/r")"

# ---- nothing else in 169.254.0.0/16 ----
for target in "169.254.169.254 81" "169.254.169.253 80" "169.254.1.1 80" "169.254.170.2 80"; do
    rc=0
    agent exec sh -c 'printf "GET / HTTP/1.0\r\n\r\n" | timeout 10 nc $1 $2' sh $target \
        > "$T/r" 2>&1 || rc=$?
    [ "$rc" != 0 ] && ! grep -q HTTP "$T/r" || die "the guest reached $target: $(cat "$T/r")"
done

# ---- no metadata: the address is caught and answers nothing ----
rm "$dir/imds.instance"
rc=0
http 169.254.169.254 80 'GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\n' > "$T/r" 2>&1 || rc=$?
! grep -q HTTP "$T/r" || die "answered without an instance file: $(cat "$T/r")"
grep -q "imds.instance" "$dir/imds.log" || die "imds.log: $(cat "$dir/imds.log" 2>&1)"

poweroff() {
    agent poweroff || die "agent poweroff failed"
    rc=0
    wait "$boot_pid" || rc=$?
    boot_pid=
    [ "$rc" = 0 ] || { cat "$T/boot.err" >&2; die "kiln vm boot exited $rc"; }
}
poweroff

# ---- --egress (restrict=off): the metadata address is still caught ----
write_metadata "$T/md" 0
"$KILN" vm boot "$vol" --dir "$dir" --metadata "$T/md" --egress 2> "$T/boot.err" &
boot_pid=$!
agent hello --timeout 600 > /dev/null || { cat "$T/boot.err" "$dir/qemu.log" >&2; die "no hello"; }
ps -o args= -p "$(cat "$dir/qemu.pid")" | grep -q "restrict=off,guestfwd=tcp:169.254.169.254:80-cmd:" ||
    die "QEMU runs without restrict=off"
http 169.254.169.254 80 'GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\n' > "$T/r"
assert_eq "$(body < "$T/r")" "i-0abc0123456789def" "egress: v1 instance-id"
wait_user_data 2
poweroff
exit 0
