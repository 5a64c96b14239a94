#!/usr/bin/env bash
# The passwords of the CA's PostgreSQL database for `docker compose --profile ha` (README "High
# availability"), made once, at random, and put only where each is needed:
#   ca-db-secrets volume (step-ca-db only):  postgres.password, stepca.password, pki_gui.password
#   step-ca-data volume (the CA):            db-secrets/stepca.pgpass   (step-ca's login, a pgpass file)
#   step-ca-data volume, gui/ (the GUI):     ca-db.password             (the read-only role's password)
# A later run changes nothing: the database was made with these passwords.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: ca/db-secrets.sh [--help]

Run by the step-ca-db-secrets service (as root) with the ca-db-secrets volume at /run/app-pki-db and the
step-ca-data volume at /home/step. Makes the database passwords once; a later run changes nothing.
USAGE
}
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) echo "db-secrets.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac

db=/run/app-pki-db
ca=/home/step
postgres_uid=999   # the postgres user of the official PostgreSQL image
step_uid=1000      # the step user of the step-ca image and the GUI's user
umask 077

new_password() { head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40; }

if [ ! -s "$db/stepca.password" ]; then
  for role in postgres stepca pki_gui; do
    new_password > "$db/$role.password.tmp"
    mv "$db/$role.password.tmp" "$db/$role.password"
  done
  echo "db-secrets.sh: made the database passwords."
fi
chown "$postgres_uid:$postgres_uid" "$db"/*.password
chmod 0400 "$db"/*.password

mkdir -p "$ca/db-secrets" "$ca/gui"
chown "$step_uid:$step_uid" "$ca" "$ca/db-secrets" "$ca/gui"
printf '*:*:*:stepca:%s\n' "$(cat "$db/stepca.password")" > "$ca/db-secrets/stepca.pgpass"
cat "$db/pki_gui.password" > "$ca/gui/ca-db.password"
chown "$step_uid:$step_uid" "$ca/db-secrets/stepca.pgpass" "$ca/gui/ca-db.password"
chmod 0600 "$ca/db-secrets/stepca.pgpass" "$ca/gui/ca-db.password"
