#!/usr/bin/env bash
# Install a broker's server bundle on a Debian host running Mosquitto. Everything is checked before
# anything the running broker reads is changed; Mosquitto is restarted once, at the end.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: install-broker.sh --crl-url URL [options]      (as root, in the unzipped server bundle's folder)

Checks, in order: this runs as root (or with --prefix), the bundle's files are here, the user mosquitto
exists, the key opens with the bundle's passphrase (openssl asks for it) and belongs to the certificate,
the certificate chains to ca.crt, the CRL can be fetched from URL and is signed by this CA. Any failure
says why and changes nothing. Then it installs:
  /etc/mosquitto/certs/{ca.crt,CN.crt}    0644
  /etc/mosquitto/certs/CN.key             0600, owned by mosquitto (Mosquitto 2 reads it after dropping root)
  /etc/mosquitto/conf.d/app-pki.conf      listener 8883, mutual TLS, CRL, ACL
  /etc/mosquitto/app-pki.acl              each site only under sites/<CN>/; fleet-reader reads all
  /etc/mosquitto/crl.pem and /usr/local/sbin/app-pki-refresh-crl, run every 15 minutes
and restarts Mosquitto. A file it replaces that differs is kept as FILE.bak.<date>.

Options:
  --crl-url URL        the CA's CRL (the one in every certificate)
  --schedule KIND      systemd (default) or cron: what runs the CRL refresh
  --reload-cmd CMD     reloads Mosquitto after a new CRL (default: systemctl reload mosquitto)
  --restart-cmd CMD    restarts it: at the end, and when a new CRL revokes a client
                       (default: systemctl restart mosquitto)
  --prefix DIR         install under DIR instead of / (tests; the configuration's paths follow)
  -h, --help           this text
EOF
}

die() { echo "install-broker.sh: $*" >&2; exit 1; }

crl_url="" schedule=systemd reload_cmd="systemctl reload mosquitto" restart_cmd="systemctl restart mosquitto" prefix=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --crl-url) crl_url=${2:?--crl-url needs a value}; shift ;;
    --schedule) schedule=${2:?--schedule needs a value}; shift ;;
    --reload-cmd) reload_cmd=${2:?--reload-cmd needs a value}; shift ;;
    --restart-cmd) restart_cmd=${2:?--restart-cmd needs a value}; shift ;;
    --prefix) prefix=${2:?--prefix needs a value}; shift ;;
    *) echo "install-broker.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$crl_url" ] || { echo "install-broker.sh: --crl-url is required (see --help)" >&2; exit 2; }
case "$schedule" in systemd|cron) ;; *) echo "install-broker.sh: --schedule must be systemd or cron" >&2; exit 2 ;; esac
if [ -n "$prefix" ]; then
  case "$prefix" in /*) prefix=${prefix%/} ;; *) die "--prefix must be an absolute path." ;; esac
elif [ "$(id -u)" -ne 0 ]; then
  die "run it as root (sudo), in the folder of the unzipped bundle."
fi

# --- the bundle ---
for tool in openssl curl; do command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed: apt-get install $tool"; done
cn=$(find . -maxdepth 1 -name '*.crt' ! -name ca.crt -printf '%f\n' | sed 's/\.crt$//' | head -n 1)
[ -n "$cn" ] || die "no certificate here: run this in the folder of the unzipped server bundle."
for file in ca.crt "$cn.crt" "$cn.key" app-pki.conf app-pki.acl refresh-crl.sh; do
  [ -f "$file" ] || die "$file is missing: this is not a whole server bundle of app-pki."
done
id mosquitto >/dev/null 2>&1 || die "there is no user mosquitto: apt-get install mosquitto"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The key is decrypted into the private scratch folder; openssl asks for the passphrase on the terminal.
openssl pkey -in "$cn.key" -out "$work/key" ||
  die "the passphrase does not open $cn.key (or it is not a key). Nothing was changed."
[ "$(openssl x509 -in "$cn.crt" -noout -pubkey)" = "$(openssl pkey -in "$work/key" -pubout)" ] ||
  die "$cn.key is not the key of $cn.crt. Nothing was changed."
openssl verify -CAfile ca.crt -untrusted "$cn.crt" "$cn.crt" >/dev/null 2>&1 ||
  die "$cn.crt does not chain to ca.crt. Nothing was changed."
bash refresh-crl.sh --url "$crl_url" --ca-file ca.crt --ca-file "$cn.crt" --out "$work/crl.pem" >/dev/null ||
  die "the CRL at $crl_url cannot be used (above). Nothing was changed."

# --- from here on, changes ---
etc="$prefix/etc/mosquitto"
# put_file SOURCE TARGET MODE [OWNER]: install atomically unless identical; a different file is kept as .bak.
put_file() {
  local source=$1 target=$2 mode=$3 owner=${4:-}
  mkdir -p "$(dirname "$target")"
  if [ -f "$target" ] && cmp -s "$source" "$target"; then return 0; fi
  if [ -f "$target" ]; then cp -p "$target" "$target.bak.$(date +%Y%m%d%H%M%S)"; fi
  cp "$source" "$target.tmp.$$"
  chmod "$mode" "$target.tmp.$$"
  if [ -n "$owner" ] && [ "$(id -u)" -eq 0 ]; then chown "$owner" "$target.tmp.$$"; fi
  mv -f "$target.tmp.$$" "$target"
  echo "Wrote $target"
}
sed "s#/etc/mosquitto#$etc#g" app-pki.conf > "$work/app-pki.conf"
put_file ca.crt "$etc/certs/ca.crt" 0644
put_file "$cn.crt" "$etc/certs/$cn.crt" 0644
put_file "$work/key" "$etc/certs/$cn.key" 0600 mosquitto:mosquitto
put_file app-pki.acl "$etc/app-pki.acl" 0644
put_file "$work/app-pki.conf" "$etc/conf.d/app-pki.conf" 0644
bash refresh-crl.sh --url "$crl_url" --ca-file "$etc/certs/ca.crt" --ca-file "$etc/certs/$cn.crt" \
  --out "$etc/crl.pem" --reload-cmd "$reload_cmd" --restart-cmd "$restart_cmd" \
  --install-schedule "$schedule" ${prefix:+--prefix "$prefix"}
sh -c "$restart_cmd" ||
  die "everything is installed but '$restart_cmd' failed: look at the broker's log (journalctl -u mosquitto)."
echo "Broker $cn is installed: mutual TLS on 8883 with the CRL of $crl_url."
