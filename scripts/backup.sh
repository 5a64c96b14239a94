#!/usr/bin/env bash
# One encrypted backup of everything a restore needs: the CA (keys, database, config, exported files,
# issuance journal), certs/, and the GUI's data (ledger, audit trail, accounts). Encrypted with age to
# a public key: the matching identity (private key) is needed to restore and never lives on this host.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/backup.sh (--recipient AGE_PUBLIC_KEY | --recipients-file FILE) --out FILE [--compose]
                        [--pg-url URL]

Writes FILE (mode 0600): a tar of age-encrypted parts and a plain manifest. Works on a running system:
step-ca is paused for the copy of its folder (a few seconds; issuing and revoking wait for it), so its
database is consistent. Nothing unencrypted is written to disk.

  --recipient KEY        age public key (age1...) to encrypt to; may be repeated
  --recipients-file F    a file of age public keys
  --out FILE             the backup to write (refused if it exists)
  --compose              back up the docker compose deployment in this folder (volumes step-ca-data and
                         gui-data, ./certs; with replicas (--profile ha) also the database, by pg_dump in
                         step-ca-db, and its passwords); run it next to docker-compose.yml
  --pg-url URL           (without --compose) also the CA's PostgreSQL database (replicas: README "High
                         availability"), with pg_dump: postgresql://stepca@HOST:5432/stepca. The password
                         comes from PGPASSWORD
                         or PGPASSFILE, never from the URL (it would be on pg_dump's command line).
                         step-ca is not paused for it: pg_dump reads one consistent snapshot.
Without --compose: the make run data folder (PKI_DATA_DIR, default <repo>/data) and PKI_CERTS_DIR
(default <repo>/certs).

Make a key pair once, on a machine other than the CA's: age-keygen -o app-pki-backup.key
(it prints the public key). Restore with scripts/restore.sh.
USAGE
}

# url_has_password URL: whether a PostgreSQL URL carries a password (user:password@host, or ?password=).
url_has_password() {
  local authority=${1#*://}
  authority=${authority%%/*}
  [[ $authority == *@* && ${authority%@*} == *:* ]] || [[ ${1,,} =~ [?\&](ssl)?password= ]]
}

die() { echo "backup.sh: $*" >&2; exit 1; }

recipients=() out="" compose=0 pg_url="" database=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --recipient) [ $# -ge 2 ] || die "--recipient needs a key"; recipients+=(-r "$2"); shift 2 ;;
    --recipients-file) [ $# -ge 2 ] || die "--recipients-file needs a file"; recipients+=(-R "$2"); shift 2 ;;
    --out) [ $# -ge 2 ] || die "--out needs a file"; out=$2; shift 2 ;;
    --compose) compose=1; shift ;;
    --pg-url) [ $# -ge 2 ] || die "--pg-url needs a URL"; pg_url=$2; shift 2 ;;
    *) echo "backup.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ "${#recipients[@]}" -gt 0 ] || die "give --recipient or --recipients-file (see --help)."
[ -n "$out" ] || die "give --out FILE."
[ ! -e "$out" ] || die "$out exists: choose a new name (a backup is never overwritten)."
command -v age >/dev/null || die "age is missing: apt-get install age."
if [ -n "$pg_url" ]; then
  [[ $pg_url =~ ^postgres(ql)?://[^/]+/[A-Za-z0-9_]+ ]] || die "--pg-url is not like postgresql://stepca@host:5432/stepca."
  ! url_has_password "$pg_url" ||
    die "--pg-url holds a password: give it in PGPASSWORD or PGPASSFILE instead (a command line is public)."
  command -v pg_dump >/dev/null || die "pg_dump is missing: apt-get install postgresql-client."
fi

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
staging=$(mktemp -d "$(dirname "$out")/.app-pki-backup.XXXXXX")
paused=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  [ -z "$paused" ] || "$paused" || true
  rm -rf "$staging"
}
trap cleanup EXIT

# part NAME: standard input (a tar stream) encrypted into the staging folder.
part() { age "${recipients[@]}" -o "$staging/$1.tar.age"; }

wait_for() {  # wait_for WHAT COMMAND...: up to 30 s
  local what=$1
  shift
  for _ in $(seq 1 150); do "$@" && return 0; sleep 0.2; done
  die "$what did not happen within 30 s."
}

if [ "$compose" -eq 1 ]; then
  [ -f docker-compose.yml ] || die "run it next to docker-compose.yml (or leave out --compose)."
  dc() { docker compose "$@"; }
  running=$(dc ps --status running --services 2>/dev/null || true)
  grep -qx step-ca <<<"$running" || die "the step-ca service is not running: start it (docker compose up -d)."
  # A CA whose records are in PostgreSQL (replicas) is backed up with its database, or not at all.
  if [ -n "$(dc exec -T step-ca sh -c 'grep -s "^STEPCA_DB=" /home/step/config/app-pki.env || true')" ] &&
     ! grep -qx step-ca-db <<<"$running"; then
    die "the CA keeps its records in PostgreSQL but step-ca-db is not running: start it (docker compose --profile ha up -d)."
  fi
  fingerprint=$(dc exec -T step-ca step certificate fingerprint /home/step/certs/root_ca.crt)
  # shellcheck disable=SC2317  # called through $paused
  resume() { dc exec -T step-ca rm -f /home/step/.paused; }
  dc kill -s USR1 step-ca >/dev/null
  paused=resume
  # shellcheck disable=SC2317  # called through wait_for
  is_paused() { dc exec -T step-ca test -e /home/step/.paused; }
  wait_for "pausing step-ca" is_paused
  dc exec -T step-ca tar -C /home/step -cf - . | part step-ca-data
  resume
  paused=""
  if grep -qx pki-gui <<<"$running"; then
    dc exec -T pki-gui tar -C /app/data -cf - . | part gui-data
  else
    dc run --rm --no-deps -T --entrypoint tar pki-gui -C /app/data -cf - . | part gui-data
  fi
  tar -C . -cf - certs | part certs
  if grep -qx step-ca-db <<<"$running"; then
    # Replicas: the shared database (one consistent snapshot) and the passwords it was made with.
    dc exec -T step-ca-db pg_dump --username postgres --format custom stepca | part stepca-db ||
      die "pg_dump in step-ca-db failed (see above); no backup was written."
    dc exec -T step-ca-db tar -C /run/app-pki-db -cf - . | part ca-db-secrets
    database=postgresql
  fi
  mode=compose
else
  data_dir=${PKI_DATA_DIR:-$repo_dir/data}
  certs_dir=${PKI_CERTS_DIR:-$repo_dir/certs}
  steppath="$data_dir/ca"
  [ -f "$steppath/config/ca.json" ] || die "no CA in $steppath: nothing to back up."
  if grep -qs "^STEPCA_DB=" "$steppath/config/app-pki.env" && [ -z "$pg_url" ]; then
    die "the CA keeps its records in PostgreSQL ($(sed -n 's/^STEPCA_DB=//p' "$steppath/config/app-pki.env")): give --pg-url."
  fi
  fingerprint=$(step certificate fingerprint "$data_dir/gui/root_ca.crt")
  pid=$(cat "$steppath/start-ca.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    # shellcheck disable=SC2317  # called through $paused
    resume() { rm -f "$steppath/.paused"; }
    kill -USR1 "$pid"
    paused=resume
    # shellcheck disable=SC2317  # called through wait_for
    is_paused() { [ -e "$steppath/.paused" ]; }
    wait_for "pausing step-ca" is_paused
    tar -C "$data_dir" -cf - --exclude=./ca/.paused . | part data
    resume
    paused=""
  else
    tar -C "$data_dir" -cf - . | part data
  fi
  tar -C "$certs_dir" -cf - . | part certs
  mode=local
fi

if [ -n "$pg_url" ]; then
  pg_dump --format=custom --no-password "$pg_url" | part stepca-db ||
    die "pg_dump of the CA's database failed (see above); no backup was written."
  database=postgresql
fi

cat > "$staging/manifest.txt" <<EOF
app-pki backup
mode=$mode
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
root_fingerprint=$fingerprint
database=$database
EOF
tmp_out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out").partial"
(cd "$staging" && umask 077 && tar -cf "$tmp_out" manifest.txt ./*.tar.age)
sync "$tmp_out" 2>/dev/null || true
mv "$tmp_out" "$out"
echo "backup.sh: wrote $out ($mode, root $fingerprint)."
