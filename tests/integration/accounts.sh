#!/bin/sh
# Accounts: `kiln account create` prints an id, a key id and a secret of the
# right shapes (plain and --json); a taken name fails with a message; `kiln
# account list` shows the accounts and never a secret; the database and
# credentials files are owner-only; help texts.
. "$(dirname "$0")/functions.sh"
requires python3

# expect_exit STATUS CMD...: run CMD, fail unless it exits STATUS; its
# stdout and stderr are left in "$T/out" and "$T/err".
expect_exit() {
    _want=$1
    shift
    _st=0
    "$@" >"$T/out" 2>"$T/err" || _st=$?
    if [ "$_st" != "$_want" ]; then
        cat "$T/out" "$T/err" >&2
        die "expected exit $_want, got $_st: $*"
    fi
}

expect_stdout() {
    grep -q -- "$1" "$T/out" || die "stdout lacks '$1': $(cat "$T/out")"
}

mode_of() {
    stat -c %a "$1"
}

# --- help --------------------------------------------------------------------
expect_exit 0 kiln --help
expect_stdout 'account create NAME'
expect_stdout 'account list'
expect_exit 0 kiln account --help
for w in create list; do expect_stdout "$w"; done
expect_exit 0 kiln account create --help
for w in NAME --json --credentials --profile AccountId AccessKeyId SecretAccessKey; do
    expect_stdout "$w"
done
expect_exit 0 kiln account list --help
expect_stdout --json
[ ! -e "$KILN_DATA_DIR" ] || die "--help created the data directory"

# --- an empty data directory lists nothing and creates nothing ---------------
expect_exit 0 kiln account list --json
assert_eq "$(cat "$T/out")" "[]" "account list --json before any account"
[ ! -e "$KILN_DATA_DIR" ] || die "account list created the data directory"

# --- create with --json ------------------------------------------------------
expect_exit 0 kiln account create alice --json
python3 - "$T/out" <<'PY' || die "bad JSON from account create: $(cat "$T/out")"
import json, re, sys
j = json.load(open(sys.argv[1]))
assert set(j) == {"AccountId", "AccessKeyId", "SecretAccessKey"}, j
assert re.fullmatch(r"[1-9][0-9]{11}", j["AccountId"]), j["AccountId"]
assert re.fullmatch(r"AKIA[A-Z2-7]{16}", j["AccessKeyId"]), j["AccessKeyId"]
assert re.fullmatch(r"[A-Za-z0-9+/]{40}", j["SecretAccessKey"]), j["SecretAccessKey"]
PY
alice_id=$(json_get 'j["AccountId"]' <"$T/out")
alice_key=$(json_get 'j["AccessKeyId"]' <"$T/out")
alice_secret=$(json_get 'j["SecretAccessKey"]' <"$T/out")
assert_eq "$(mode_of "$KILN_DATA_DIR/accounts.db")" 600 "mode of accounts.db"

# --- a taken name: exit 1 with a message, nothing changed ---------------------
expect_exit 1 kiln account create alice
grep -q "account 'alice' exists" "$T/err" || die "no message for a taken name: $(cat "$T/err")"
[ ! -s "$T/out" ] || die "a failed create printed: $(cat "$T/out")"
expect_exit 1 kiln account create ALICE --json
grep -q "exists" "$T/err" || die "names are not unique without case: $(cat "$T/err")"

# --- bad names: usage errors -------------------------------------------------
expect_exit 2 kiln account create 'a b'
grep -q "invalid account name" "$T/err" || die "no message for a bad name: $(cat "$T/err")"
expect_exit 2 kiln account create ''
expect_exit 2 kiln account create "$(printf '%065d' 0)"
expect_exit 2 kiln account create
expect_exit 2 kiln account create bob carol
expect_exit 2 kiln account frobnicate
expect_exit 2 kiln account create bob --profile p
# The provider account's name is reserved, in any case.
expect_exit 2 kiln account create kiln
grep -q "account name 'kiln' is reserved" "$T/err" || die "no message for 'kiln': $(cat "$T/err")"
expect_exit 2 kiln account create KILN --json
grep -q "reserved" "$T/err" || die "'KILN' is not reserved: $(cat "$T/err")"
[ ! -s "$T/out" ] || die "a refused create printed: $(cat "$T/out")"

# --- create, plain -----------------------------------------------------------
expect_exit 0 kiln account create bob
[ "$(wc -l <"$T/out")" -eq 3 ] || die "plain create is not three lines: $(cat "$T/out")"
grep -Eq '^AccountId [1-9][0-9]{11}$' "$T/out" || die "no AccountId line: $(cat "$T/out")"
grep -Eq '^AccessKeyId AKIA[A-Z2-7]{16}$' "$T/out" || die "no AccessKeyId line"
grep -Eq '^SecretAccessKey [A-Za-z0-9+/]{40}$' "$T/out" || die "no SecretAccessKey line"
bob_id=$(sed -n 's/^AccountId //p' "$T/out")
bob_secret=$(sed -n 's/^SecretAccessKey //p' "$T/out")
[ "$bob_id" != "$alice_id" ] || die "two accounts share id $bob_id"

# --- list ----------------------------------------------------------------------
expect_exit 0 kiln account list
expect_stdout "$alice_id"
expect_stdout "alice"
expect_stdout "$alice_key"
expect_stdout "$bob_id"
for s in "$alice_secret" "$bob_secret"; do
    ! grep -qF -- "$s" "$T/out" || die "account list shows a secret"
done
expect_exit 0 kiln account list --json
for s in "$alice_secret" "$bob_secret"; do
    ! grep -qF -- "$s" "$T/out" || die "account list --json shows a secret"
done
python3 - "$T/out" "$alice_id" "$alice_key" <<'PY' || die "bad list JSON: $(cat "$T/out")"
import json, sys
j = json.load(open(sys.argv[1]))
assert [a["Name"] for a in j] == ["alice", "bob"], j
a = j[0]
assert a["AccountId"] == sys.argv[2], a
assert [k["AccessKeyId"] for k in a["AccessKeys"]] == [sys.argv[3]], a
assert a["AccessKeys"][0]["Status"] == "Active", a
assert all("Secret" not in k for acct in j for k in acct["AccessKeys"]), j
PY

# --- the database holds the secret the command printed -------------------------
if command -v sqlite3 >/dev/null 2>&1; then
    got=$(sqlite3 "$KILN_DATA_DIR/accounts.db" \
        "SELECT secret FROM access_keys WHERE access_key_id = '$alice_key'")
    assert_eq "$got" "$alice_secret" "stored secret"
fi

# --- a credentials file ----------------------------------------------------------
expect_exit 0 kiln account create carol --credentials "$T/credentials" --profile kiln-carol
assert_eq "$(mode_of "$T/credentials")" 600 "mode of the credentials file"
carol_key=$(sed -n 's/^AccessKeyId //p' "$T/out")
carol_secret=$(sed -n 's/^SecretAccessKey //p' "$T/out")
printf '[kiln-carol]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
    "$carol_key" "$carol_secret" >"$T/want"
cmp -s "$T/credentials" "$T/want" || die "credentials file: $(cat "$T/credentials")"
# An existing file is never overwritten, and no account is created then.
expect_exit 1 kiln account create dave --credentials "$T/credentials"
grep -q "exists" "$T/err" || die "no message for an existing credentials file"
expect_exit 0 kiln account list --json
[ "$(json_get 'len(j)' <"$T/out")" = 3 ] || die "a refused create left an account"

# --- accounts are global: --region does not matter ---------------------------------
expect_exit 0 kiln --region eu-west-1 account list --json
[ "$(json_get 'len(j)' <"$T/out")" = 3 ] || die "--region changed the accounts"

echo "PASS"
