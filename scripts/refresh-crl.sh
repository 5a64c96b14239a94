#!/usr/bin/env bash
# Keep a broker's copy of the CA's CRL current: fetch, verify, replace atomically, reload the broker.
# On any failure the previous CRL stays in place and the exit status is non-zero.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: refresh-crl.sh --url URL --ca-file FILE [--ca-file FILE] --out FILE [options]

  --url URL          the CRL URL (the one in every certificate, e.g. http://pki.ak-sg.com:9080/1.0/crl)
  --ca-file FILE     PEM certificates that establish the CRL's signer: the root (ca.crt) and the
                     intermediate (the broker's own certificate file carries it). Repeatable. Only
                     these are trusted: the system's CA store is never consulted.
  --out FILE         the CRL file the broker reads (PEM), e.g. /etc/mosquitto/crl.pem
  --reload-cmd CMD   run when the CRL file changed, e.g. 'systemctl reload mosquitto' (SIGHUP: Mosquitto
                     re-reads its crlfile but keeps clients that are already connected)
  --restart-cmd CMD  run instead of --reload-cmd when the new CRL revokes serials the previous one did
                     not, e.g. 'systemctl restart mosquitto': connected revoked clients are dropped
  --min-valid DUR    refuse a CRL whose next update is less than DUR away (default 1h; s/m/h/d)
  --install-schedule systemd|cron   fetch the CRL now (no reload: the broker needs the file before
                     its first start), install this script as /usr/local/sbin/app-pki-refresh-crl and
                     run that every 15 minutes with these arguments. Nothing is installed if the fetch fails.
  --prefix DIR       with --install-schedule: install under DIR instead of / (tests)
  -h, --help         this text

A reload or restart that fails is tried again on the next run.
Exit status: 0 the CRL is current (replaced or unchanged); 1 nothing was replaced, or the reload
failed (the reason is printed); 2 bad arguments.
EOF
}

die() { echo "refresh-crl.sh: $*" >&2; exit 1; }

url="" out="" reload_cmd="" restart_cmd="" min_valid=1h schedule="" prefix=""
ca_files=()
original_args=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --url) url=${2:?--url needs a value}; shift ;;
    --ca-file) ca_files+=("${2:?--ca-file needs a value}"); shift ;;
    --out) out=${2:?--out needs a value}; shift ;;
    --reload-cmd) reload_cmd=${2:?--reload-cmd needs a value}; shift ;;
    --restart-cmd) restart_cmd=${2:?--restart-cmd needs a value}; shift ;;
    --min-valid) min_valid=${2:?--min-valid needs a value}; shift ;;
    --install-schedule) schedule=${2:?--install-schedule needs a value}; shift ;;
    --prefix) prefix=${2:?--prefix needs a value}; shift ;;
    *) echo "refresh-crl.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$url" ] || [ -z "$out" ] || [ ${#ca_files[@]} -eq 0 ]; then
  echo "refresh-crl.sh: --url, --ca-file and --out are required (see --help)" >&2
  exit 2
fi
[[ $url =~ ^https?:// ]] || { echo "refresh-crl.sh: --url '$url' is not an http(s) URL" >&2; exit 2; }
[[ $min_valid =~ ^([0-9]+)([smhd])$ ]] || { echo "refresh-crl.sh: --min-valid '$min_valid' is not like 1h" >&2; exit 2; }
declare -A unit_seconds=([s]=1 [m]=60 [h]=3600 [d]=86400)
min_valid_seconds=$(( BASH_REMATCH[1] * unit_seconds[${BASH_REMATCH[2]}] ))

# quote ARG: the argument as both sh (cron) and systemd (ExecStart=) read it back: bare when plain,
# else in single quotes. Characters the two treat differently (quotes, %, $, \) are refused.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@+,-]+$ ]]; then printf '%s' "$1"
  elif [[ $1 =~ [\'%\$\\] ]]; then
    echo "refresh-crl.sh: cannot schedule an argument with ' % \$ or \\: $1" >&2; exit 2
  else printf "'%s'" "$1"; fi
}

if [ -n "$schedule" ]; then
  case "$schedule" in systemd|cron) ;; *) echo "refresh-crl.sh: --install-schedule must be systemd or cron" >&2; exit 2 ;; esac
  [ -z "$prefix" ] || [[ $prefix == /* ]] || { echo "refresh-crl.sh: --prefix must be an absolute path" >&2; exit 2; }
  # The job runs the installed copy, at a path that does not depend on where this was unpacked.
  installed="$prefix/usr/local/sbin/app-pki-refresh-crl"
  command="$(quote "$installed") "
  fetch_now=()
  set -- "${original_args[@]}"
  while [ $# -gt 0 ]; do
    case "$1" in
      --install-schedule|--prefix) ;;
      # The first fetch of a new installation has no reload: the broker does not read this file yet (it
      # starts after this). Installing again over a CRL a broker reads does reload (or restart) it.
      --reload-cmd|--restart-cmd)
        command+="$(quote "$1") $(quote "$2") "
        if [ -f "$out" ]; then fetch_now+=("$1" "$2"); fi ;;
      *) command+="$(quote "$1") $(quote "$2") "; fetch_now+=("$1" "$2") ;;
    esac
    shift 2
  done
  bash "${BASH_SOURCE[0]}" "${fetch_now[@]}" ||
    die "no CRL could be fetched, so nothing was installed: fix the cause above and run this again."
  if [ ! "${BASH_SOURCE[0]}" -ef "$installed" ]; then
    mkdir -p "$(dirname "$installed")"
    cp "${BASH_SOURCE[0]}" "$installed.tmp.$$"
    chmod 0755 "$installed.tmp.$$"
    mv -f "$installed.tmp.$$" "$installed"
  fi
  case "$schedule" in
    systemd)
      mkdir -p "$prefix/etc/systemd/system"
      cat > "$prefix/etc/systemd/system/app-pki-crl-refresh.service" <<EOF
[Unit]
Description=Refresh the broker's copy of the app-pki CRL
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=${command% }
EOF
      cat > "$prefix/etc/systemd/system/app-pki-crl-refresh.timer" <<'EOF'
[Unit]
Description=Refresh the app-pki CRL every 15 minutes

[Timer]
OnBootSec=1min
OnUnitActiveSec=15min

[Install]
WantedBy=timers.target
EOF
      if [ -z "$prefix" ]; then systemctl daemon-reload && systemctl enable --now app-pki-crl-refresh.timer; fi
      echo "Installed $installed, run every 15 minutes by app-pki-crl-refresh.timer (at once: systemctl start app-pki-crl-refresh)." ;;
    cron)
      mkdir -p "$prefix/etc/cron.d"
      {
        echo "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        echo "*/15 * * * * root ${command% } 2>&1 | logger -t app-pki-crl-refresh"
      } > "$prefix/etc/cron.d/app-pki-crl-refresh"
      echo "Installed $installed, run every 15 minutes by $prefix/etc/cron.d/app-pki-crl-refresh." ;;
  esac
  exit 0
fi

for tool in curl openssl; do command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (apt-get install $tool)."; done
work=$(mktemp -d)
trap 'rm -rf "$work"; rm -f "$out.tmp.$$"' EXIT
pending="$out.reload-pending"

cat "${ca_files[@]}" > "$work/ca.pem" || die "cannot read --ca-file ${ca_files[*]}."
curl -fsS --max-time 30 -o "$work/crl.fetched" "$url" || die "cannot fetch $url; the previous CRL stays."
# step-ca serves DER; ?pem gives PEM. Accept either.
if grep -q -- '-----BEGIN X509 CRL-----' "$work/crl.fetched"; then
  openssl crl -in "$work/crl.fetched" -out "$work/crl.pem" 2>/dev/null || die "$url sent a damaged PEM CRL."
else
  openssl crl -inform DER -in "$work/crl.fetched" -out "$work/crl.pem" 2>/dev/null || die "$url sent something that is not a CRL."
fi

# Only the given certificates may vouch for the CRL: a CRL signed by any publicly trusted CA must not
# replace ours (the URL is plain HTTP), so the system's certificate folders and stores are left out.
verdict=$(openssl crl -in "$work/crl.pem" -CAfile "$work/ca.pem" -no-CApath -no-CAstore -noout 2>&1 || true)
[[ $verdict == *"verify OK"* ]] || die "the CRL from $url is not signed by the CA in ${ca_files[*]} ($verdict); the previous CRL stays."

crl_date() {  # crl_date FILE -nextupdate|-lastupdate: seconds since the epoch, or nothing
  local value
  value=$(openssl crl -in "$1" -noout "$2" | cut -d= -f2-)
  [ "$value" = NONE ] || date -d "$value" +%s 2>/dev/null || true
}
now=$(date +%s)
next_update=$(crl_date "$work/crl.pem" -nextupdate)
last_update=$(crl_date "$work/crl.pem" -lastupdate)
if [ -z "$next_update" ] || [ -z "$last_update" ]; then
  die "the CRL from $url has no usable lastUpdate/nextUpdate; the previous CRL stays."
fi
[ "$last_update" -le $((now + 300)) ] || die "the CRL's lastUpdate is in the future (check this host's clock); the previous CRL stays."
[ "$next_update" -gt $((now + min_valid_seconds)) ] ||
  die "the CRL's nextUpdate ($(date -u -d "@$next_update" '+%F %T UTC')) is less than $min_valid away: the CA is not renewing it; the previous CRL stays."

crl_number() { openssl crl -in "$1" -noout -crlnumber 2>/dev/null | sed -n 's/^crlNumber=0x//p'; }
revoked_serials() { openssl crl -in "$1" -noout -text | sed -n 's/^ *Serial Number: *//p' | sort; }

# run_reload: the restart or reload command; a failure leaves the marker so that the next run retries.
run_reload() {
  local cmd=$1
  [ -n "$cmd" ] || { rm -f "$pending"; return 0; }
  echo "$cmd" > "$pending"
  sh -c "$cmd" || die "the CRL is in place but '$cmd' failed; the next run tries again."
  rm -f "$pending"
}

if [ -f "$out" ] && cmp -s "$work/crl.pem" "$out"; then
  echo "The CRL in $out is current (next update $(date -u -d "@$next_update" '+%F %T UTC'))."
  if [ -f "$pending" ]; then run_reload "$(cat "$pending")"; fi
  exit 0
fi

command_to_run=$reload_cmd
if [ -f "$out" ]; then
  old_number=$(crl_number "$out")
  new_number=$(crl_number "$work/crl.pem")
  if [ -n "$old_number" ] && [ -n "$new_number" ] && [ $((16#$new_number)) -lt $((16#$old_number)) ]; then
    die "the fetched CRL (number $((16#$new_number))) is older than the one in $out ($((16#$old_number))); the previous CRL stays."
  fi
  newly_revoked=$(comm -13 <(revoked_serials "$out") <(revoked_serials "$work/crl.pem") | wc -l)
  if [ "$newly_revoked" -gt 0 ] && [ -n "$restart_cmd" ]; then command_to_run=$restart_cmd; fi
fi

mkdir -p "$(dirname "$out")"
cp "$work/crl.pem" "$out.tmp.$$"
chmod 0644 "$out.tmp.$$"
mv -f "$out.tmp.$$" "$out"
revoked=$(revoked_serials "$out" | wc -l)
echo "Replaced $out: $revoked revoked serial(s), next update $(date -u -d "@$next_update" '+%F %T UTC')."
run_reload "$command_to_run"
