#!/usr/bin/env bash
# Run once by the PostgreSQL image when its data folder is new (docker-entrypoint-initdb.d): the roles and
# database of README "High availability", with the passwords ca/db-secrets.sh made, then ca/stepca-db.sql
# (mounted as stepca-db.sql.in, so that the image does not run it on its own) as the stepca role: step-ca
# owns its database and its tables; the GUI's role may read two of them.
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
SQL
# The tables step-ca would make, made by its own role with the guard on spent tokens (ca/stepca-db.sql).
{ echo "SET ROLE stepca;"; cat /docker-entrypoint-initdb.d/stepca-db.sql.in; } |
  psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname stepca
