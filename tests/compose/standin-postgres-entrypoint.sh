#!/bin/bash
# TEST FIXTURE: the ENTRYPOINT of the stand-in for postgres:15-bookworm (standin-postgres.Dockerfile). What
# the official entrypoint does that app-pki relies on: as root it hands the data folder to postgres and
# runs again as that user; a new data folder gets initdb (superuser password from POSTGRES_PASSWORD_FILE),
# host connections with a password, and the scripts of /docker-entrypoint-initdb.d run against a
# server listening on its socket only; then postgres starts, listening on every address.
set -euo pipefail

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA"
  chown -R postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups bash "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  password_file=$(mktemp)
  if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then cat "$POSTGRES_PASSWORD_FILE" > "$password_file"; else printf '%s' "${POSTGRES_PASSWORD:?}" > "$password_file"; fi
  initdb -D "$PGDATA" --username="${POSTGRES_USER:-postgres}" --pwfile="$password_file" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$password_file"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  for script in /docker-entrypoint-initdb.d/*; do
    # shellcheck disable=SC1090  # the image's init scripts, sourced as the official entrypoint does
    case "$script" in
      *.sh) if [ -x "$script" ]; then "$script"; else . "$script"; fi ;;
      *.sql) psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" -f "$script" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi

if [ "${1:-}" = postgres ]; then
  shift
  exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
fi
exec "$@"
