#!/usr/bin/env bash
# Run step-ca in the foreground. Its whole output goes to stdout (the CA's log). Each request line that
# carries a signed certificate (/sign, /renew, /rekey; step-ca logs JSON), and each sign request made
# with a token, is also appended to $PKI_CA_LOG: the issuance journal, which the GUI reads to know
# certificates whose keys never came near the server (token enrolments, renewals) and which enrolment
# tokens the CA spent (their claims, never a usable token). It grows by a few KB per certificate, nothing else.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/start-ca.sh [--help]

Starts step-ca with $STEPPATH/config/ca.json and the CA-key password in $STEPPATH/secrets/password.
Output goes to stdout; request lines with a certificate are also appended to $PKI_CA_LOG
(default $STEPPATH/logs/step-ca.log). SIGTERM / SIGINT stop step-ca cleanly. SIGUSR1 pauses it
for a backup: step-ca stops, $STEPPATH/.paused appears, and it starts again when that file is removed.

PKI_CA_LISTEN / PKI_CRL_LISTEN (host:port) make it listen elsewhere than ca.json says: a second replica
of a CA whose database is PostgreSQL, on the same host (needs jq). It runs a copy of ca.json in
$STEPPATH/config/.replica.*/ (removed when it stops); its pid file is $STEPPATH/start-ca.<port>.pid.
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

# A replica listening elsewhere runs a copy of ca.json with its own addresses (removed when it stops).
config="$STEPPATH/config/ca.json"
pid_file="$STEPPATH/start-ca.pid"
if [ -n "${PKI_CA_LISTEN:-}" ] || [ -n "${PKI_CRL_LISTEN:-}" ]; then
  command -v jq >/dev/null 2>&1 || { echo "start-ca.sh: PKI_CA_LISTEN needs jq" >&2; exit 1; }
  # Next to ca.json (it holds the database's password, if any), not in a shared temporary folder.
  runtime=$(mktemp -d "$STEPPATH/config/.replica.XXXXXX")
  trap 'rm -rf "$runtime"' EXIT
  jq --arg ca "${PKI_CA_LISTEN:-}" --arg crl "${PKI_CRL_LISTEN:-}" '
    (if $ca != "" then .address = $ca else . end) | (if $crl != "" then .insecureAddress = $crl else . end)
  ' "$config" > "$runtime/ca.json"
  config="$runtime/ca.json"
  listen=${PKI_CA_LISTEN:-${PKI_CRL_LISTEN:-}}
  pid_file="$STEPPATH/start-ca.${listen##*:}.pid"
fi

# The "ott" field as step-ca writes it: a JSON string, escapes included (fields are sorted: one follows).
ott_field='^(.*)"ott":"(([^"\\]|\\.)*)",(.*)$'
spent='"path":"(/1\.0)?/sign".*"status":(201|403)[,}]'

# split_output: every line to stdout; certificate lines, and sign requests that spent a token, also to
# the journal (one write per line, no process started per line). step-ca logs the one-time token of
# each request ("ott"). A token the CA refused may still be good and no log keeps a credential, so it
# is dropped. A token the CA spent (201: signed with it; 403: spent, nothing signed) is kept without
# its signature ("ott-claims": header.payload, which nobody can use), so that the GUI can tell which
# enrolment token was spent; a token in another form than three dotted parts is kept as "unparsed".
split_output() {
  local line head tail token
  while IFS= read -r line || [ -n "$line" ]; do
    if [[ $line =~ $ott_field ]]; then
      head=${BASH_REMATCH[1]} token=${BASH_REMATCH[2]} tail=${BASH_REMATCH[4]}
      if [[ $line =~ $spent ]]; then
        token=${token//\\[nrt]/}  # step-ca ignores blanks in a token; JSON writes some as escapes
        token=${token//[[:space:]]/}
        if [[ $token =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$ ]]; then token=${token%.*}; else token=unparsed; fi
        line="$head\"ott-claims\":\"$token\",$tail"
      else
        line="$head$tail"
      fi
    fi
    printf '%s\n' "$line"
    if [[ $line == '{'*'"certificate":'* || $line == '{'*'"ott-claims":'* ]]; then
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
echo $$ > "$pid_file"
stopping=0 pausing=0
trap 'stopping=1; kill -TERM "$ca_pid" 2>/dev/null || true' TERM INT
trap 'pausing=1; kill -TERM "$ca_pid" 2>/dev/null || true' USR1
while true; do
  step-ca "$config" --password-file "$STEPPATH/secrets/password" </dev/null >&"$log_fd" 2>&1 &
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
rm -f "$pid_file"
exec {log_fd}>&-
wait "$splitter_pid" || true  # it ends at step-ca's last line: nothing outlives this script
exit "$status"
