#!/usr/bin/env bash
# Run once by the PostgreSQL image when its data folder is new (docker-entrypoint-initdb.d): the roles and
# database of README "High availability", with the passwords ca/db-secrets.sh made. step-ca owns its
# database and makes its tables; the GUI's role may only read them.
set -euo pipefail
case "${1:-}" in
  -h|--help)
    echo "Usage: ca/postgres-init.sh [--help]"
    echo "Run by the PostgreSQL image at its first start (docker-entrypoint-initdb.d): roles stepca and"
    echo "pki_gui, database stepca, with the passwords in /run/app-pki-db (ca/db-secrets.sh)."
    exit 0 ;;
esac
secrets=/run/app-pki-db
stepca_password=$(cat "$secrets/stepca.password")
gui_password=$(cat "$secrets/pki_gui.password")
# The passwords go in on standard input, never on a command line (they are letters and digits only).
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres <<SQL
CREATE ROLE stepca LOGIN PASSWORD '$stepca_password';
CREATE ROLE pki_gui LOGIN PASSWORD '$gui_password';
CREATE DATABASE stepca OWNER stepca;
\c stepca
GRANT USAGE ON SCHEMA public TO pki_gui;
ALTER DEFAULT PRIVILEGES FOR ROLE stepca IN SCHEMA public GRANT SELECT ON TABLES TO pki_gui;
SQL
