#!/usr/bin/env bash
# Alerts on the machine of `make run` (in Docker the pki-alerts service runs them every hour): look once
# and send what is new, or send a test alert. For cron: */30 * * * * /path/to/app-pki/scripts/alerts.sh run
set -euo pipefail

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

case "${1:-}" in
  -h|--help|"")
    cat <<'USAGE'
Usage: scripts/alerts.sh run|test

  run    look once: expiring certificates, sites whose renewal stopped, the CRL, the CA, Reconcile,
         lock-outs; send what is new by e-mail and webhook (each event once per threshold)
  test   send a test alert on every configured channel

Channels and thresholds come from the environment (README "Monitoring and alerts"): PKI_ALERT_SMTP_*,
PKI_ALERT_MAIL_FROM, PKI_ALERT_MAIL_TO, PKI_ALERT_WEBHOOK_URL_FILE, ... The state (what was sent) is
PKI_DATA_DIR/alerts-state.json (default <repo>/data). The CA is https://localhost:$CA_PORT (default 9000).
USAGE
    [ -n "${1:-}" ] || exit 2
    exit 0 ;;
esac

[ -x "$repo_dir/.venv/bin/python" ] || { echo "alerts.sh: the Python environment is missing: run make run first." >&2; exit 1; }
export PATH="$repo_dir/.tools/bin:$PATH"
export PKI_DATA_DIR="${PKI_DATA_DIR:-$repo_dir/data}"
export STEP_CA_URL="${STEP_CA_URL:-https://localhost:${CA_PORT:-9000}}"
PYTHONPATH="$repo_dir/streamlit" exec "$repo_dir/.venv/bin/python" -m pki.alerts "$@"
