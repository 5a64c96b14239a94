#!/usr/bin/env bash
# Manage the GUI's accounts from a shell on the machine of `make run` (in Docker:
# `docker compose exec pki-gui python -m pki.accounts ...`). Passwords are asked for on the terminal,
# or read from one line of standard input with --password-stdin: never from the command line.
set -euo pipefail

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

case "${1:-}" in
  -h|--help|"")
    cat <<'USAGE'
Usage: scripts/users.sh COMMAND [ARGS]

  add NAME [--role viewer|operator|admin] [--password-stdin]   add an account
  reset NAME [--password-stdin]                                set a new password
  role NAME viewer|operator|admin                              change the role
  disable NAME | enable NAME                                   lock an account out, or let it in again
  list                                                         the accounts

The accounts are PKI_DATA_DIR/users.json (default <repo>/data). Every change is in the audit trail.
Once the first account exists, the GUI password PKI_PASSWORD no longer logs in.
USAGE
    [ -n "${1:-}" ] || exit 2
    exit 0 ;;
esac

[ -x "$repo_dir/.venv/bin/python" ] || { echo "users.sh: the Python environment is missing: run make run first." >&2; exit 1; }
export PKI_DATA_DIR="${PKI_DATA_DIR:-$repo_dir/data}"
PYTHONPATH="$repo_dir/streamlit" exec "$repo_dir/.venv/bin/python" -m pki.accounts "$@"
