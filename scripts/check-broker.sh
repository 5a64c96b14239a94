#!/usr/bin/env bash
# Is revocation enforced at the broker? Six checks against HOST:PORT as the sites dial it (through
# HAProxy), with canary certificates the check issues for itself. On the machine of `make run`; in Docker:
# docker compose exec pki-gui python -m pki.broker_check HOST:PORT
set -euo pipefail

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

case "${1:-}" in
  -h|--help|"")
    cat <<'USAGE'
Usage: scripts/check-broker.sh HOST:PORT [--crl-interval SECONDS]

  1. the broker's certificate chains to our root, names HOST, has serverAuth; days left
  2. a TLS client without a certificate is refused
  3. a client certificate of another CA is refused
  4. a valid canary certificate gets an MQTT CONNACK
  5. a revoked canary is refused (WAIT until the broker's CRL refresh had time: --crl-interval, 900 s)
  6. a server-only certificate presented as a client is refused

Prints PASS, FAIL or WAIT per check with the reason and the fix; exits 0 only when all pass. The canaries
(CN app-pki-canary-*) live in PKI_DATA_DIR/broker-check/ and never count among the fleet's certificates.
The CA is https://localhost:$CA_PORT (default 9000). Every run is in the audit trail.
USAGE
    [ -n "${1:-}" ] || exit 2
    exit 0 ;;
esac

[ -x "$repo_dir/.venv/bin/python" ] || { echo "check-broker.sh: the Python environment is missing: run make run first." >&2; exit 1; }
export PATH="$repo_dir/.tools/bin:$PATH"
export PKI_DATA_DIR="${PKI_DATA_DIR:-$repo_dir/data}"
export STEP_CA_URL="${STEP_CA_URL:-https://localhost:${CA_PORT:-9000}}"
PYTHONPATH="$repo_dir/streamlit" exec "$repo_dir/.venv/bin/python" -m pki.broker_check "$@"
