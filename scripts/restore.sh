#!/usr/bin/env bash
# Put a backup made by scripts/backup.sh back: onto a fresh machine, empty compose volumes, or (only when
# told) over an existing CA, which is then kept aside, never deleted.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/restore.sh --identity KEYFILE [--compose] [--force] [--pg-url URL] BACKUP

Decrypts BACKUP with the age identity (private key) in KEYFILE and restores it. The CA must be stopped
(make run not running; docker compose down). A CA already there is refused unless --force, which moves it
aside first (data.before-restore-DATE and certs.before-restore-DATE; with --compose, into a tar in the
current folder). The backup's mode must match: --compose for one made with --compose.

A backup that holds the CA's PostgreSQL database (backup.sh --pg-url) needs --pg-url URL: an empty
database the CA's role owns (README "High availability"); the password comes from PGPASSWORD or PGPASSFILE.

After a restore, start as usual (make run, or docker compose up -d) and check the root fingerprint that
restore.sh prints against the one you know. Certificates issued after the backup are unknown to the
restored CA: revoke any you do not trust by serial (python -m pki.revoke SERIAL; README "Backup and restore").
USAGE
}

# url_has_password URL: whether a PostgreSQL URL carries a password (user:password@host, or ?password=).
url_has_password() {
  local authority=${1#*://}
  authority=${authority%%/*}
  [[ $authority == *@* && ${authority%@*} == *:* ]] || [[ ${1,,} =~ [?\&](ssl)?password= ]]
}

die() { echo "restore.sh: $*" >&2; exit 1; }

identity="" compose=0 force=0 backup="" pg_url=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --identity) [ $# -ge 2 ] || die "--identity needs a file"; identity=$2; shift 2 ;;
    --compose) compose=1; shift ;;
    --force) force=1; shift ;;
    --pg-url) [ $# -ge 2 ] || die "--pg-url needs a URL"; pg_url=$2; shift 2 ;;
    -*) echo "restore.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    *) [ -z "$backup" ] || die "one backup at a time"; backup=$1; shift ;;
  esac
done
if [ -z "$identity" ] || [ ! -r "$identity" ]; then die "give --identity KEYFILE (readable)."; fi
if [ -z "$backup" ] || [ ! -r "$backup" ]; then die "give the backup file to restore."; fi
command -v age >/dev/null || die "age is missing: apt-get install age."

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
tar -C "$staging" -xf "$backup" || die "$backup is not a backup.sh archive."
[ -f "$staging/manifest.txt" ] || die "$backup has no manifest: not a backup.sh archive."
mode=$(sed -n 's/^mode=//p' "$staging/manifest.txt")
fingerprint=$(sed -n 's/^root_fingerprint=//p' "$staging/manifest.txt")
wanted=local
[ "$compose" -eq 0 ] || wanted=compose
[ "$mode" = "$wanted" ] || die "$backup was made in $mode mode; restore it in the same mode (--compose for compose)."
# Check the key before anything is touched.
age -d -i "$identity" -o /dev/null "$staging/certs.tar.age" 2>/dev/null ||
  die "$identity cannot decrypt $backup (wrong key?). Nothing was changed."

if [ -f "$staging/stepca-db.tar.age" ] && [ "$compose" -eq 0 ]; then
  [ -n "$pg_url" ] || die "$backup holds the CA's PostgreSQL database: give --pg-url (an empty database). Nothing was changed."
  ! url_has_password "$pg_url" ||
    die "--pg-url holds a password: give it in PGPASSWORD or PGPASSFILE instead. Nothing was changed."
  command -v pg_restore >/dev/null || die "pg_restore is missing: apt-get install postgresql-client. Nothing was changed."
  tables=$(psql --no-password -At -d "$pg_url" -c "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") ||
    die "the database at --pg-url cannot be read (see above). Nothing was changed."
  [ "$tables" = 0 ] || die "the database at --pg-url is not empty ($tables tables): restore into an empty one. Nothing was changed."
elif [ -n "$pg_url" ]; then
  die "$backup holds no database (it was made without --pg-url). Nothing was changed."
fi

# decrypted PART: the tar stream of a part.
decrypted() { age -d -i "$identity" "$staging/$1.tar.age"; }
stamp=$(date -u +%Y%m%dT%H%M%SZ)

if [ "$compose" -eq 1 ]; then
  [ -f docker-compose.yml ] || die "run it next to docker-compose.yml."
  dc() { docker compose "$@"; }
  [ -z "$(dc ps -q 2>/dev/null)" ] || die "the deployment is running: docker compose down first (volumes stay)."
  if [ -f "$staging/stepca-db.tar.age" ]; then
    # Replicas: checked before anything changes. The database is made anew from the backup's passwords.
    age -d -i "$identity" -o /dev/null "$staging/stepca-db.tar.age" || die "the database part cannot be decrypted."
    has_db=$(dc --profile ha run --rm --no-deps -T --entrypoint sh step-ca-db -c \
      'test -s /var/lib/postgresql/data/PG_VERSION && echo yes || true')
    [ "$has_db" != yes ] ||
      die "the step-ca-pg volume holds a database: remove it first (docker volume rm <project>_step-ca-pg). Nothing was changed."
  fi
  has_ca=$(dc run --rm --no-deps -T --entrypoint sh step-ca-init -c 'test -f /home/step/config/ca.json && echo yes || true')
  if [ "$has_ca" = yes ]; then
    [ "$force" -eq 1 ] || die "the step-ca-data volume holds a CA: give --force to replace it (it is saved first)."
    dc run --rm --no-deps -T --entrypoint tar step-ca-init -C /home/step -cf - . > "step-ca-data.before-restore-$stamp.tar"
    dc run --rm --no-deps -T --entrypoint tar pki-gui -C /app/data -cf - . > "gui-data.before-restore-$stamp.tar"
    echo "restore.sh: the replaced volumes are saved in step-ca-data.before-restore-$stamp.tar and gui-data.before-restore-$stamp.tar (they hold the old CA's keys: protect or delete them)."
    dc run --rm --no-deps -T --entrypoint sh step-ca-init -c 'find /home/step -mindepth 1 -delete'
    dc run --rm --no-deps -T --entrypoint sh pki-gui -c 'find /app/data -mindepth 1 -delete'
  fi
  decrypted step-ca-data | dc run --rm --no-deps -T --entrypoint tar step-ca-init -C /home/step -xf -
  dc run --rm --no-deps -T --entrypoint rm step-ca-init -f /home/step/.paused /home/step/start-ca.pid
  decrypted gui-data | dc run --rm --no-deps -T --entrypoint tar pki-gui -C /app/data -xf -
  if [ -n "$(find certs -mindepth 1 -maxdepth 1 ! -name .gitkeep 2>/dev/null)" ]; then
    [ "$force" -eq 1 ] || die "./certs is not empty: give --force to replace it (it is moved aside first)."
    mv certs "certs.before-restore-$stamp"
  fi
  mkdir -p certs
  decrypted certs | tar -C . -xf -
  [ "$(id -u)" -ne 0 ] || chown -R 1000:1000 certs
  if [ -f "$staging/stepca-db.tar.age" ]; then
    # Replicas: the database's passwords first, then a new database made with them, then its contents
    # (in place of the empty tables its first start made).
    decrypted ca-db-secrets | dc --profile ha run --rm --no-deps -T --entrypoint tar step-ca-db-secrets -C /run/app-pki-db -xf -
    dc --profile ha up -d --wait step-ca-db
    decrypted stepca-db | dc --profile ha exec -T step-ca-db pg_restore --username postgres --no-owner --role stepca \
      --clean --if-exists --exit-on-error --dbname stepca || die "pg_restore in step-ca-db failed (see above)."
    dc --profile ha stop step-ca-db >/dev/null
  fi
else
  data_dir=${PKI_DATA_DIR:-$repo_dir/data}
  certs_dir=${PKI_CERTS_DIR:-$repo_dir/certs}
  pid=$(cat "$data_dir/ca/start-ca.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    die "the CA in $data_dir is running: stop make run first."
  fi
  if [ -f "$data_dir/ca/config/ca.json" ]; then
    [ "$force" -eq 1 ] || die "$data_dir holds a CA: give --force to replace it (it is moved aside first)."
    mv "$data_dir" "$data_dir.before-restore-$stamp"
    echo "restore.sh: the replaced CA is in $data_dir.before-restore-$stamp (it holds its keys: protect or delete it)."
  fi
  if [ -n "$(find "$certs_dir" -mindepth 1 -maxdepth 1 ! -name .gitkeep 2>/dev/null)" ]; then
    [ "$force" -eq 1 ] || die "$certs_dir is not empty: give --force to replace it (it is moved aside first)."
    mv "$certs_dir" "$certs_dir.before-restore-$stamp"
  fi
  mkdir -p "$data_dir" "$certs_dir"
  chmod 700 "$data_dir"
  decrypted data | tar -C "$data_dir" -xf -
  decrypted certs | tar -C "$certs_dir" -xf -
  rm -f "$data_dir/ca/.paused" "$data_dir/ca/start-ca.pid"
fi
if [ -n "$pg_url" ]; then
  decrypted stepca-db | pg_restore --no-password --no-owner --exit-on-error -d "$pg_url" ||
    die "pg_restore into the database failed (see above); the files are restored already."
fi
echo "restore.sh: restored the $mode backup of $(sed -n 's/^created=//p' "$staging/manifest.txt"); root fingerprint $fingerprint."
