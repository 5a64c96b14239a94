#!/usr/bin/env bash
# Run step-ca in the foreground, its output also appended to a log file.
# The log is the CA's record of every certificate it signs or renews (JSON, one request per line):
# the GUI reads it to know site certificates whose keys never came near the server.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/start-ca.sh [--help]

Starts step-ca with $STEPPATH/config/ca.json and the CA-key password in $STEPPATH/secrets/password.
Output goes to stdout and is appended to $PKI_CA_LOG (default $STEPPATH/logs/step-ca.log).
SIGTERM / SIGINT stop step-ca cleanly.
USAGE
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) echo "start-ca.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac

: "${STEPPATH:?start-ca.sh: STEPPATH is not set}"
log=${PKI_CA_LOG:-$STEPPATH/logs/step-ca.log}
[ -f "$STEPPATH/config/ca.json" ] || { echo "start-ca.sh: no CA in $STEPPATH (run scripts/init-ca.sh)" >&2; exit 1; }
mkdir -p "$(dirname "$log")"

# The tee is started by this shell (not inside step-ca's job), so that this script can wait for it.
exec {log_fd}> >(tee -a "$log")
tee_pid=$!
step-ca "$STEPPATH/config/ca.json" --password-file "$STEPPATH/secrets/password" </dev/null >&"$log_fd" 2>&1 &
ca_pid=$!
trap 'kill -TERM "$ca_pid" 2>/dev/null || true' TERM INT
status=0
wait "$ca_pid" || status=$?
# A trapped signal ends the first wait early; wait for step-ca itself to finish.
if kill -0 "$ca_pid" 2>/dev/null; then
  status=0
  wait "$ca_pid" || status=$?
fi
exec {log_fd}>&-
wait "$tee_pid" || true  # it ends at step-ca's last line: nothing outlives this script
exit "$status"
