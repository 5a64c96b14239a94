#!/usr/bin/env bash
# Run step-ca in the foreground. Its whole output goes to stdout (the CA's log). Each request line that
# carries a signed certificate (/sign, /renew, /rekey; step-ca logs JSON), and each sign request made
# with a token, is also appended to $PKI_CA_LOG: the issuance journal, which the GUI reads to know
# certificates whose keys never came near the server (token enrolments, renewals) and which enrolment
# tokens the CA spent (by a hash of their id). It grows by a few KB per certificate, nothing else.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/start-ca.sh [--help]

Starts step-ca with $STEPPATH/config/ca.json and the CA-key password in $STEPPATH/secrets/password.
Output goes to stdout; request lines with a certificate are also appended to $PKI_CA_LOG
(default $STEPPATH/logs/step-ca.log). SIGTERM / SIGINT stop step-ca cleanly. SIGUSR1 pauses it
for a backup: step-ca stops, $STEPPATH/.paused appears, and it starts again when that file is removed.
USAGE
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) echo "start-ca.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac

: "${STEPPATH:?start-ca.sh: STEPPATH is not set}"
journal=${PKI_CA_LOG:-$STEPPATH/logs/step-ca.log}
[ -f "$STEPPATH/config/ca.json" ] || { echo "start-ca.sh: no CA in $STEPPATH (run scripts/init-ca.sh)" >&2; exit 1; }
mkdir -p "$(dirname "$journal")"
touch "$journal"  # present from the start: the GUI warns when it is missing

# token_ref TOKEN: what the journal names a token by: the first 32 hex digits of the SHA-256 of its "jti"
# claim ("unparsed" if it has none that can be read). Neither the token nor its id: step-ca spends a
# token by its id before it checks the signature, so an id alone would let anyone burn the token.
# Blanks are dropped first, as step-ca drops them (JSON escapes of them too).
token_ref() {
  local token payload jti
  token=$(printf '%s' "$1" | sed 's/\\[nrt]//g' | tr -d '[:space:]')
  payload=${token#*.}
  payload=${payload%%.*}
  payload=$(printf '%s' "$payload" | tr '_-' '/+')
  while [ $(( ${#payload} % 4 )) -ne 0 ]; do payload="$payload="; done
  jti=$(printf '%s' "$payload" | base64 -d 2>/dev/null | sed -n 's/.*"jti":"\([^"]*\)".*/\1/p' | head -n 1)
  if [ -z "$jti" ]; then printf 'unparsed'; return; fi
  printf '%s' "$jti" | sha256sum | cut -c1-32
}

# The "ott" field as step-ca writes it: a JSON string, escapes included (fields are sorted: one follows).
ott_field='^(.*)"ott":"(([^"\\]|\\.)*)",(.*)$'
token_sign='"path":"(/1\.0)?/sign".*"status":(201|403)[,}]'

# split_output: every line to stdout; certificate lines, and sign requests that spent a token, also to
# the journal (one write per line). step-ca logs the one-time token of each request ("ott"); a token
# that was refused may still be good, and no log keeps a credential, so the token is replaced by its
# reference ("ott-ref"): the journal then says which enrolment token the CA spent (201: signed with it;
# 403: spent, nothing signed). Requests the CA refused outright (400, 401) stay out of the journal.
split_output() {
  local line
  while IFS= read -r line || [ -n "$line" ]; do
    if [[ $line =~ $ott_field ]]; then
      line="${BASH_REMATCH[1]}\"ott-ref\":\"$(token_ref "${BASH_REMATCH[2]}")\",${BASH_REMATCH[4]}"
    fi
    printf '%s\n' "$line"
    if [[ $line == '{'*'"certificate":'* ]]; then
      printf '%s\n' "$line" >> "$journal"
    elif [[ $line == '{'*'"ott-ref":'* && $line =~ $token_sign ]]; then
      printf '%s\n' "$line" >> "$journal"
    fi
  done
}

# The splitter is started by this shell (not inside step-ca's job), so that this script can wait for it.
exec {log_fd}> >(split_output)
splitter_pid=$!

# SIGUSR1 pauses the CA for a consistent backup (scripts/backup.sh): step-ca stops cleanly (its database
# flushed), $STEPPATH/.paused appears, and step-ca starts again once the file is removed (at most 120 s).
paused_flag="$STEPPATH/.paused"
rm -f "$paused_flag"
echo $$ > "$STEPPATH/start-ca.pid"
stopping=0 pausing=0
trap 'stopping=1; kill -TERM "$ca_pid" 2>/dev/null || true' TERM INT
trap 'pausing=1; kill -TERM "$ca_pid" 2>/dev/null || true' USR1
while true; do
  step-ca "$STEPPATH/config/ca.json" --password-file "$STEPPATH/secrets/password" </dev/null >&"$log_fd" 2>&1 &
  ca_pid=$!
  status=0
  # A trapped signal ends a wait early; wait again until step-ca itself has finished.
  while kill -0 "$ca_pid" 2>/dev/null; do
    wait "$ca_pid" || status=$?
  done
  if [ "$pausing" -eq 0 ] || [ "$stopping" -eq 1 ]; then break; fi
  touch "$paused_flag"
  for _ in $(seq 1 600); do
    if [ ! -e "$paused_flag" ] || [ "$stopping" -eq 1 ]; then break; fi
    sleep 0.2
  done
  rm -f "$paused_flag"
  pausing=0
  [ "$stopping" -eq 0 ] || { status=0; break; }
done
[ "$stopping" -eq 0 ] || status=0
rm -f "$STEPPATH/start-ca.pid"
exec {log_fd}>&-
wait "$splitter_pid" || true  # it ends at step-ca's last line: nothing outlives this script
exit "$status"
