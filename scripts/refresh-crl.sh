#!/usr/bin/env bash
# Keep a broker's copy of the CA's CRL current: fetch, verify, replace atomically, reload the broker.
# On any failure the previous CRL stays in place and the exit status is non-zero.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: refresh-crl.sh --url URL --ca-file FILE [--ca-file FILE] --out FILE [options]

  --url URL          the CRL URL (the one in every certificate, e.g. http://pki.ak-sg.com:9080/1.0/crl)
  --ca-file FILE     PEM certificates that establish the CRL's signer: the root (ca.crt) and the
                     intermediate (the broker's own certificate file carries it). Repeatable.
  --out FILE         the CRL file the broker reads (PEM), e.g. /etc/mosquitto/crl.pem
  --reload-cmd CMD   run after the CRL changed, e.g. 'systemctl restart mosquitto'
                     (Mosquitto re-reads its crlfile on restart; a SIGHUP reloads it but keeps
                     clients that are already connected, revoked or not)
  --min-valid DUR    refuse a CRL whose next update is less than DUR away (default 1h; s/m/h/d)
  --install-schedule systemd|cron   also install a run every 15 minutes with these arguments
  --prefix DIR       with --install-schedule: write the unit / cron file under DIR (tests)
  -h, --help         this text

Exit status: 0 the CRL is current (replaced or unchanged); 1 nothing was replaced (the reason is
printed); 2 bad arguments.
EOF
}

die() { echo "refresh-crl.sh: $*" >&2; exit 1; }

url="" out="" reload_cmd="" min_valid=1h schedule="" prefix=""
ca_files=()
original_args=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --url) url=${2:?--url needs a value}; shift ;;
    --ca-file) ca_files+=("${2:?--ca-file needs a value}"); shift ;;
    --out) out=${2:?--out needs a value}; shift ;;
    --reload-cmd) reload_cmd=${2:?--reload-cmd needs a value}; shift ;;
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
# else in single quotes. Neither reads an escaped single quote the same way, so those are refused.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"
  elif [[ $1 == *"'"* ]]; then echo "refresh-crl.sh: cannot schedule an argument with a single quote: $1" >&2; exit 2
  else printf "'%s'" "$1"; fi
}

if [ -n "$schedule" ]; then
  # The scheduled command is this script with the same arguments, minus the scheduling ones.
  script=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
  command="$(quote "$script") "
  skip=false
  for arg in "${original_args[@]}"; do
    if [ "$skip" = true ]; then skip=false; continue; fi
    case "$arg" in --install-schedule|--prefix) skip=true; continue ;; esac
    command+="$(quote "$arg") "
  done
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
      echo "Installed app-pki-crl-refresh.timer (every 15 minutes)." ;;
    cron)
      mkdir -p "$prefix/etc/cron.d"
      echo "*/15 * * * * root ${command% } 2>&1 | logger -t app-pki-crl-refresh" > "$prefix/etc/cron.d/app-pki-crl-refresh"
      echo "Installed $prefix/etc/cron.d/app-pki-crl-refresh (every 15 minutes)." ;;
    *) echo "refresh-crl.sh: --install-schedule must be systemd or cron" >&2; exit 2 ;;
  esac
  exit 0
fi

for tool in curl openssl; do command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (apt-get install $tool)."; done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat "${ca_files[@]}" > "$work/ca.pem" || die "cannot read --ca-file ${ca_files[*]}."
curl -fsS --max-time 30 -o "$work/crl.fetched" "$url" || die "cannot fetch $url; the previous CRL stays."
# step-ca serves DER; ?pem gives PEM. Accept either.
if grep -q -- '-----BEGIN X509 CRL-----' "$work/crl.fetched"; then
  openssl crl -in "$work/crl.fetched" -out "$work/crl.pem" 2>/dev/null || die "$url sent a damaged PEM CRL."
else
  openssl crl -inform DER -in "$work/crl.fetched" -out "$work/crl.pem" 2>/dev/null || die "$url sent something that is not a CRL."
fi

verdict=$(openssl crl -in "$work/crl.pem" -CAfile "$work/ca.pem" -noout 2>&1 || true)
[[ $verdict == *"verify OK"* ]] || die "the CRL from $url is not signed by the CA in ${ca_files[*]} ($verdict); the previous CRL stays."

now=$(date +%s)
next_update=$(date -d "$(openssl crl -in "$work/crl.pem" -noout -nextupdate | cut -d= -f2-)" +%s)
last_update=$(date -d "$(openssl crl -in "$work/crl.pem" -noout -lastupdate | cut -d= -f2-)" +%s)
[ "$last_update" -le $((now + 300)) ] || die "the CRL's lastUpdate is in the future (check this host's clock); the previous CRL stays."
[ "$next_update" -gt $((now + min_valid_seconds)) ] ||
  die "the CRL's nextUpdate ($(date -u -d "@$next_update" '+%F %T UTC')) is less than $min_valid away: the CA is not renewing it; the previous CRL stays."

crl_number() { openssl crl -in "$1" -noout -crlnumber 2>/dev/null | sed -n 's/^crlNumber=0x//p'; }
if [ -f "$out" ]; then
  if cmp -s "$work/crl.pem" "$out"; then
    echo "The CRL in $out is current (next update $(date -u -d "@$next_update" '+%F %T UTC'))."
    exit 0
  fi
  old_number=$(crl_number "$out")
  new_number=$(crl_number "$work/crl.pem")
  if [ -n "$old_number" ] && [ -n "$new_number" ] && [ $((16#$new_number)) -lt $((16#$old_number)) ]; then
    die "the fetched CRL (number $((16#$new_number))) is older than the one in $out ($((16#$old_number))); the previous CRL stays."
  fi
fi

mkdir -p "$(dirname "$out")"
cp "$work/crl.pem" "$out.tmp.$$"
chmod 0644 "$out.tmp.$$"
mv -f "$out.tmp.$$" "$out"
revoked=$(openssl crl -in "$out" -noout -text | grep -c 'Serial Number:' || true)
echo "Replaced $out: $revoked revoked serial(s), next update $(date -u -d "@$next_update" '+%F %T UTC')."
if [ -n "$reload_cmd" ]; then
  sh -c "$reload_cmd" || die "the CRL was replaced but '$reload_cmd' failed."
fi
