#!/usr/bin/env bash
# Run app-pki on this machine: step-ca and the GUI together, stopped together on Ctrl-C.
# The CA is created on the first run (scripts/init-ca.sh) under the git-ignored data folder.
set -euo pipefail

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
data_dir=${PKI_DATA_DIR:-$repo_dir/data}
ca_port=${CA_PORT:-9000}
crl_port=${CRL_PORT:-9080}
gui_port=${GUI_PORT:-8502}
gui_address=${GUI_ADDRESS:-127.0.0.1}

usage() {
  cat <<EOF
Usage: scripts/run-local.sh [--help]     (normally through: make run)

Starts step-ca (HTTPS on :$ca_port, CRL over HTTP on :$crl_port) and the GUI (http://$gui_address:$gui_port).
Creates the CA in $data_dir/ca on the first run. Ctrl-C stops both.

Environment:
  CA_PORT, CRL_PORT, GUI_PORT   ports (defaults 9000, 9080, 8502); the CA ports are fixed at first run
  GUI_ADDRESS                   address the GUI listens on (default 127.0.0.1; 0.0.0.0 for the network)
  PKI_DATA_DIR                  data folder (default <repo>/data)
  PKI_PUBLIC_HOSTS, PKI_PUBLIC_CA_URL, PKI_CRL_URL, ...   CA settings, see scripts/init-ca.sh --help
  PKI_PASSWORD                  if set, the GUI asks for it (until the first account exists)
  PKI_TLS, PKI_SSO_*            HTTPS and single sign-on, see README.md
EOF
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) echo "run-local.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac

die() { echo "run-local.sh: $*" >&2; exit 1; }

# Beyond this machine, only a GUI that asks who is there: a password, an account or single sign-on.
case "$gui_address" in
  127.*|localhost|::1) ;;
  *)
    if [ -z "${PKI_PASSWORD:-}" ] && [ -z "${PKI_SSO_ISSUER:-}" ] && [ ! -s "$data_dir/users.json" ]; then
      die "GUI_ADDRESS=$gui_address would serve the CA's GUI to the network with no login. Set PKI_PASSWORD, or create an account first (scripts/users.sh add NAME --role admin), or keep the default 127.0.0.1."
    fi ;;
esac
export PATH="$repo_dir/.tools/bin:$PATH"
for tool in step step-ca; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: run scripts/install-step.sh (make run does)."
done
[ -x "$repo_dir/.venv/bin/streamlit" ] || die "the Python environment is missing: run make run."

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for entry in "CA_PORT:$ca_port" "CRL_PORT:$crl_port" "GUI_PORT:$gui_port"; do
  name=${entry%%:*} port=${entry#*:}
  [[ $port =~ ^[0-9]+$ ]] || die "$name '$port' is not a port number."
  if port_taken "$port"; then
    die "port $port ($name) is already in use. Stop what uses it (see: ss -ltnp 'sport = :$port') or choose another, e.g. make run $name=$((port + 1))."
  fi
done

mkdir -p "$data_dir/logs"
# The CA and its CRL listen on loopback only: this is the CA of a trial, not of a fleet. A CA created
# before they did keeps listening where it was created to (its address is part of its settings).
ca_address="127.0.0.1:$ca_port" crl_address="127.0.0.1:$crl_port"
existing="$data_dir/ca/config/app-pki.env"
if [ -f "$existing" ]; then
  ca_address=$(sed -n 's/^CA_ADDRESS=//p' "$existing")
  crl_address=$(sed -n 's/^CRL_ADDRESS=//p' "$existing")
  [ "${ca_address##*:}:${crl_address##*:}" = "$ca_port:$crl_port" ] ||
    die "the CA in $data_dir/ca listens on ports ${ca_address##*:} and ${crl_address##*:}, fixed when it was created: make run CA_PORT=${ca_address##*:} CRL_PORT=${crl_address##*:}"
fi
STEPPATH="$data_dir/ca" PKI_GUI_DIR="$data_dir/gui" \
  PKI_CA_ADDRESS="$ca_address" PKI_CRL_ADDRESS="$crl_address" \
  bash "$repo_dir/scripts/init-ca.sh"

ca_pid="" gui_pid=""
# shellcheck disable=SC2317  # called by the EXIT trap, which shellcheck cannot see
stop_all() {
  trap - INT TERM EXIT
  [ -z "$gui_pid" ] || kill "$gui_pid" 2>/dev/null || true
  [ -z "$ca_pid" ] || kill "$ca_pid" 2>/dev/null || true
  # Up to 20 s to stop cleanly; then whatever is left of either goes, its children first.
  local pid alive
  for _ in $(seq 1 100); do
    alive=0
    for pid in $gui_pid $ca_pid; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" -eq 1 ] || break
    sleep 0.2
  done
  for pid in $gui_pid $ca_pid; do
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  echo "app-pki stopped."
}
trap stop_all EXIT
trap 'exit 0' INT TERM

# wait_until WHAT PID LOG CHECK...: up to 30 s for CHECK to succeed; fails with LOG's tail if PID dies.
wait_until() {
  local what=$1 pid=$2 log=$3
  shift 3
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$log" >&2; die "$what stopped (log: $log)."; }
    "$@" && return 0
    sleep 0.2
  done
  "$@" || { tail -n 20 "$log" >&2; die "$what did not become ready within 30 s (log: $log)."; }
}

ca_log="$data_dir/logs/step-ca.log"
journal="$data_dir/logs/issued.log"
STEPPATH="$data_dir/ca" PKI_CA_LOG="$journal" bash "$repo_dir/scripts/start-ca.sh" >>"$ca_log" &
ca_pid=$!
root="$data_dir/gui/root_ca.crt"
ca_url="https://localhost:$ca_port"
# shellcheck disable=SC2317  # called through wait_until
ca_healthy() { STEPPATH="$data_dir/gui-step" step ca health --ca-url "$ca_url" --root "$root" >/dev/null 2>&1; }
wait_until "step-ca at $ca_url" "$ca_pid" "$ca_log" ca_healthy

# The GUI as the container starts it (python -m pki.serve: Streamlit, its flags, SSO secrets, HTTPS if asked).
STEP_CA_URL="$ca_url" STEP_CA_ROOT="$root" PKI_DATA_DIR="$data_dir" PKI_GUI_DIR="$data_dir/gui" PKI_CA_LOG="$journal" \
  PKI_GUI_PORT="$gui_port" PKI_GUI_ADDRESS="$gui_address" PYTHONPATH="$repo_dir/streamlit" \
  "$repo_dir/.venv/bin/python" -m pki.serve >>"$data_dir/logs/gui.log" 2>&1 &
gui_pid=$!
# The GUI answers where it listens; 0.0.0.0 and :: mean every address, loopback included.
probe_address=$gui_address
case "$probe_address" in 0.0.0.0|::|"") probe_address=127.0.0.1 ;; esac
# shellcheck disable=SC2317  # called through wait_until
gui_up() { (exec 3<>"/dev/tcp/$probe_address/$gui_port") 2>/dev/null; }
wait_until "the GUI on $probe_address:$gui_port" "$gui_pid" "$data_dir/logs/gui.log" gui_up
crl_url=$(sed -n 's/^CRL_URL=//p' "$data_dir/gui/ca-settings.env")
gui_scheme=http
[ "${PKI_TLS:-off}" = off ] && [ -z "${PKI_TLS_CERT_FILE:-}" ] || gui_scheme=https

cat <<EOF

app-pki is running.
  GUI:  $gui_scheme://$gui_address:$gui_port
  CA:   $ca_url   (root: $root)
  CRL:  $crl_url
  Logs: $data_dir/logs/
Press Ctrl-C to stop both.
EOF
# Whichever stops first, stop the other.
wait -n "$ca_pid" "$gui_pid" || true
echo "run-local.sh: a process stopped on its own; see $data_dir/logs/." >&2
exit 1
