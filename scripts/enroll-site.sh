#!/usr/bin/env bash
# Put a site on the fleet: a client certificate from the app-pki CA, a Mosquitto bridge to the broker
# over mutual TLS, and automatic renewal. Everything is checked before anything is changed.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage:
  enroll-site.sh --token TOKEN | --token-file FILE [--site NAME] [--ca-url URL] [--fingerprint FP] [options]
      The key is made here and never leaves the site. TOKEN comes from the GUI ("Enroll a Site"),
      which prints this whole command.
  enroll-site.sh --bundle NAME.zip [--passphrase-file FILE] [--ca-url URL] [--fingerprint FP] [options]
      Install the ZIP bundle from the GUI's Issue Certificate page. Its key is encrypted: the
      passphrase the GUI showed comes from --passphrase-file, else APP_PKI_BUNDLE_PASSPHRASE, else
      it is asked for on the terminal; never give it as an argument.
  enroll-site.sh --print-bridge --site NAME [--broker HOST:PORT] [--topic 'SPEC']... [--prefix DIR]
      Print the Mosquitto bridge configuration a run would write, and change nothing.

Options:
  --broker HOST:PORT     the broker as the site dials it; HOST must be in the broker's certificate
                         (default mqtt.ak-sg.com:8883)
  --topic 'SPEC'         a Mosquitto bridge "topic" line, repeatable
                         (default: '# out 1 "" sites/<site>/': everything local, under the site's prefix)
  --renew-before DUR     renew when less than DUR is left (Go duration, e.g. 720h; default: a third
                         of the certificate's lifetime)
  --reload-cmd CMD       reloads the bridge after a renewal (default: systemctl restart mosquitto)
  --schedule KIND        systemd, cron or none (default: systemd if present, else cron)
  --token-file FILE      read the token from FILE, or from standard input with '-' (keeps it out of the
                         process list; the GUI's command passes it on standard input)
  --passphrase-file FILE the bundle's passphrase, from FILE or from standard input with '-'
  --prefix DIR           install under DIR instead of / (tests, unprivileged runs; nothing is enabled)
  --force                get a new certificate even if this token's certificate is installed (old files kept)
  --dry-run              run every check, print what would change, change nothing
  -h, --help             this text

Checks, in order: step is installed, this runs as root (or with --prefix) and can write where it
installs, the token is for this site, the CA answers at the URL, its root has the expected
fingerprint, this host's clock is within a minute of the CA's, the token has not expired.
Files (under --prefix): /etc/mosquitto/certs/{ca.crt,SITE.crt,SITE.key},
/etc/mosquitto/conf.d/app-pki-bridge.conf, /etc/app-pki/{site.env,renew.sh},
/etc/systemd/system/app-pki-renew.{service,timer} or /etc/cron.d/app-pki-renew.
Running it again with the same arguments changes nothing; a new token (after a revocation, say)
gets a new certificate.
EOF
}

die() { echo "enroll-site.sh: $*" >&2; exit 1; }
say() { echo "$*"; }

token="" site="" ca_url="" fingerprint="" bundle="" broker="mqtt.ak-sg.com:8883" renew_before="" passphrase_file=""
reload_cmd="" schedule="" prefix="" force=false dry_run=false print_bridge=false
topics=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --token) token=${2:?--token needs a value}; shift ;;
    --token-file)
      token_source=${2:?--token-file needs a value}
      [ "$token_source" != "-" ] || token_source=/dev/stdin
      token=$(tr -d ' \n\r' < "$token_source") || { echo "enroll-site.sh: cannot read $2" >&2; exit 2; }
      shift ;;
    --site) site=${2:?--site needs a value}; shift ;;
    --ca-url) ca_url=${2:?--ca-url needs a value}; shift ;;
    --fingerprint) fingerprint=${2:?--fingerprint needs a value}; shift ;;
    --bundle) bundle=${2:?--bundle needs a value}; shift ;;
    --passphrase-file) passphrase_file=${2:?--passphrase-file needs a value}; shift ;;
    --broker) broker=${2:?--broker needs a value}; shift ;;
    --topic) topics+=("${2:?--topic needs a value}"); shift ;;
    --renew-before) renew_before=${2:?--renew-before needs a value}; shift ;;
    --reload-cmd) reload_cmd=${2:?--reload-cmd needs a value}; shift ;;
    --schedule) schedule=${2:?--schedule needs a value}; shift ;;
    --prefix) prefix=${2:?--prefix needs a value}; shift ;;
    --force) force=true ;;
    --dry-run) dry_run=true ;;
    --print-bridge) print_bridge=true ;;
    *) echo "enroll-site.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# --- arguments ---
fingerprint=$(tr -d ':' <<<"$fingerprint" | tr 'A-F' 'a-f')
# A site's identity, as the GUI names it: case and a trailing dot do not count.
site=${site%.}
site=${site,,}
if [ "$print_bridge" = true ]; then
  [ -n "$site" ] || die "--print-bridge needs --site NAME."
  [[ $site =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ && $site != *..* ]] ||
    die "the site name '$site' may hold only letters, digits, dots, dashes and underscores."
fi
if [ -n "$token" ] && [ -n "$bundle" ]; then die "give --token or --bundle, not both."; fi
if [ -z "$token" ] && [ -z "$bundle" ] && [ "$print_bridge" = false ]; then die "give --token (from the GUI's Enroll a Site) or --bundle FILE.zip (see --help)."; fi
if [ -n "$prefix" ]; then
  case "$prefix" in /*) prefix=${prefix%/} ;; *) die "--prefix must be an absolute path." ;; esac
fi
[[ $broker =~ ^[A-Za-z0-9.:_-]+:[0-9]{1,5}$ ]] || die "--broker '$broker' is not like mqtt.ak-sg.com:8883."
[[ -z $renew_before || $renew_before =~ ^[0-9]+(h|m|s)$ ]] || die "--renew-before '$renew_before' is not like 720h."
case "${schedule:-auto}" in auto|systemd|cron|none) ;; *) die "--schedule must be systemd, cron or none." ;; esac
valid_name() { [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ && $1 != *..* ]]; }

# bridge_config: the Mosquitto bridge of $site to $broker, with the certificate files in $certs_dir.
# The GUI's client bundles show this same text (--print-bridge).
bridge_config() {
  cat <<EOF
# Written by app-pki enroll-site.sh: the bridge of site $site to the broker (mutual TLS).
connection app-pki-$site
address $broker
remote_clientid $site
bridge_protocol_version mqttv311
cleansession false
restart_timeout 2 30
bridge_cafile $certs_dir/ca.crt
bridge_certfile $certs_dir/$site.crt
bridge_keyfile $certs_dir/$site.key
bridge_tls_version tlsv1.2
bridge_insecure false
# No notifications: the local copy would be forwarded again under the site's prefix.
notifications false
EOF
  local topic
  for topic in "${topics[@]}"; do echo "topic $topic"; done
}

# cert_cn FILE, cert_expiry FILE, is_client_cert FILE: read with step's text output (no jq on sites).
cert_cn() { step certificate inspect "$1" | sed -n 's/^ *Subject: .*CN=\([^,]*\).*/\1/p' | head -n 1; }
cert_expiry() { step certificate inspect "$1" --short | sed -n 's/^ *to: *//p' | head -n 1; }
is_client_cert() { step certificate inspect "$1" | grep -A2 'Extended Key Usage' | grep -q 'Client Authentication'; }
# json_field NAME: a string or number field of the compact JSON on stdin (the token's claims).
json_field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p" | head -n 1; }
# token_claims: the token's payload, base64url-decoded (the signature is the CA's to check).
token_claims() {
  local payload
  payload=$(printf '%s' "$token" | cut -d. -f2 | tr '_-' '/+')
  while [ $(( ${#payload} % 4 )) -ne 0 ]; do payload="$payload="; done
  printf '%s' "$payload" | base64 -d 2>/dev/null
}

if [ "$print_bridge" = true ]; then
  [ ${#topics[@]} -gt 0 ] || topics=("# out 1 \"\" sites/$site/")
  certs_dir="$prefix/etc/mosquitto/certs"
  bridge_config
  exit 0
fi

# --- tools ---
if ! command -v step >/dev/null 2>&1; then
  cat >&2 <<'EOF'
enroll-site.sh: the step CLI is not installed. Install Smallstep's official package, then run this again:
  curl -fsSLO https://dl.smallstep.com/cli/docs-cli-install/latest/step-cli_amd64.deb
  sudo dpkg -i step-cli_amd64.deb
(for arm64 use step-cli_arm64.deb)
EOF
  exit 1
fi
step_bin=$(command -v step)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] ||
  die "Mosquitto is not installed: apt-get install mosquitto"
command -v curl >/dev/null 2>&1 || die "curl is needed to compare this host's clock with the CA's: apt-get install curl"
[ -z "$bundle" ] || command -v unzip >/dev/null 2>&1 || die "unzip is needed to read the bundle: apt-get install unzip"

# Where things go. Checked before any token is spent: a run that cannot write would burn it.
certs_dir="$prefix/etc/mosquitto/certs"
conf_file="$prefix/etc/mosquitto/conf.d/app-pki-bridge.conf"
state_dir="$prefix/etc/app-pki"
site_steppath="$prefix/var/lib/app-pki/step"
if [ -z "$prefix" ] && [ "$(id -u)" -ne 0 ]; then
  die "run it as root (sudo), or give --prefix DIR to install under a folder of your own."
fi
# writable DIR: DIR, or its nearest existing parent, can be written by this user.
writable() {
  local dir=$1
  while [ ! -e "$dir" ]; do dir=$(dirname "$dir"); done
  [ -d "$dir" ] && [ -w "$dir" ]
}
for dir in "$certs_dir" "$(dirname "$conf_file")" "$state_dir" "$site_steppath"; do
  writable "$dir" || die "cannot write $dir (or create it): nothing was changed."
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# decrypt_bundle_key KEY: replace the bundle's encrypted key (in the private scratch folder) by the
# plain one. The passphrase goes to step in a file of the scratch folder, never as an argument.
decrypt_bundle_key() {
  local passphrase=""
  if [ -n "$passphrase_file" ]; then
    if [ "$passphrase_file" = "-" ]; then IFS= read -r passphrase || true
    else IFS= read -r passphrase < "$passphrase_file" || [ -n "$passphrase" ] || die "cannot read $passphrase_file."; fi
  elif [ -n "${APP_PKI_BUNDLE_PASSPHRASE:-}" ]; then
    passphrase=$APP_PKI_BUNDLE_PASSPHRASE
  elif (exec 3<>/dev/tty) 2>/dev/null; then  # a terminal to ask on (tried in a subshell: exec would exit)
    exec 3<>/dev/tty
    printf 'Passphrase of the bundle (shown by the GUI when it made it): ' >&3
    IFS= read -rs passphrase <&3 || true
    printf '\n' >&3
    exec 3>&-
  fi
  unset APP_PKI_BUNDLE_PASSPHRASE  # not handed on to --reload-cmd or anything else this script runs
  passphrase=${passphrase//$'\r'/}
  passphrase=${passphrase#"${passphrase%%[![:space:]]*}"}  # blanks around it come from copying, not from the GUI
  passphrase=${passphrase%"${passphrase##*[![:space:]]}"}
  [ -n "$passphrase" ] || die "the bundle's key is encrypted: give its passphrase with --passphrase-file FILE (or -), in APP_PKI_BUNDLE_PASSPHRASE, or on a terminal."
  (umask 077 && printf '%s' "$passphrase" > "$work/passphrase")
  STEPPATH="$work/step" step crypto change-pass "$1" --password-file "$work/passphrase" \
      --no-password --insecure --out "$1.plain" --force </dev/null >/dev/null 2>&1 ||
    die "the passphrase does not open the bundle's key. Nothing was changed."
  mv "$1.plain" "$1"
  rm -f "$work/passphrase"
}
export STEPPATH="$work/step"
mkdir -p "$STEPPATH"

# --- the token: for this site, not expired, and it names the CA ---
if [ -n "$token" ]; then
  claims=$(token_claims) || true
  [ -n "$claims" ] || die "the token cannot be read: copy it again from the GUI, whole."
  token_site=$(json_field sub <<<"$claims")
  token_exp=$(json_field exp <<<"$claims")
  token_aud=$(json_field aud <<<"$claims")
  token_sha=$(json_field sha <<<"$claims")
  [ -n "$site" ] || site=$token_site
  [ "$token_site" = "$site" ] || die "the token is for site '$token_site', not '$site'."
  token_id=$(json_field jti <<<"$claims")
  [[ $token_exp =~ ^[0-9]+$ ]] || die "the token has no expiry: it is not an app-pki enrolment token."
  [ -n "$ca_url" ] || ca_url=${token_aud%/1.0/sign}
  [ -n "$fingerprint" ] || fingerprint=$token_sha
  [ "$token_sha" = "$fingerprint" ] || die "the token was made for a CA with root fingerprint $token_sha, not $fingerprint."
fi

# --- the bundle: four files, one client certificate for one site, chained to its ca.crt ---
if [ -n "$bundle" ]; then
  [ -f "$bundle" ] || die "no bundle at $bundle."
  mkdir -p "$work/bundle"
  unzip -q -o "$bundle" -d "$work/bundle" || die "$bundle is not a readable ZIP."
  crt_in_bundle=$(find "$work/bundle" -maxdepth 1 -name '*.crt' ! -name ca.crt | head -n 1)
  if [ -z "$crt_in_bundle" ] || [ ! -f "$work/bundle/ca.crt" ]; then
    die "$bundle holds no certificate and ca.crt: not an app-pki bundle."
  fi
  bundle_site=$(basename "$crt_in_bundle" .crt)
  [ -f "$work/bundle/$bundle_site.key" ] || die "$bundle holds no $bundle_site.key."
  if grep -q "ENCRYPTED PRIVATE KEY" "$work/bundle/$bundle_site.key"; then
    decrypt_bundle_key "$work/bundle/$bundle_site.key"
  fi
  [ -n "$site" ] || site=$bundle_site
  [ "$bundle_site" = "$site" ] || die "the bundle is for site '$bundle_site', not '$site'."
  step certificate verify "$crt_in_bundle" --roots "$work/bundle/ca.crt" >/dev/null 2>&1 ||
    die "the certificate in $bundle does not chain to its ca.crt."
  is_client_cert "$crt_in_bundle" ||
    die "the certificate in $bundle is not a client certificate (a broker's bundle?)."
  [ "$(step certificate key "$crt_in_bundle")" = "$(step crypto key public "$work/bundle/$bundle_site.key")" ] ||
    die "the key in $bundle does not belong to its certificate."
  bundle_fp=$(step certificate fingerprint "$work/bundle/ca.crt")
  [ -z "$fingerprint" ] || [ "$fingerprint" = "$bundle_fp" ] ||
    die "the bundle's root has fingerprint $bundle_fp, not $fingerprint."
  fingerprint=$bundle_fp
fi

valid_name "$site" || die "the site name '$site' may hold only letters, digits, dots, dashes and underscores."
[ ${#topics[@]} -gt 0 ] || topics=("# out 1 \"\" sites/$site/")

# --- the CA: reachable, the right root, a clock that agrees ---
root="$work/root_ca.crt"
if [ -n "$ca_url" ]; then
  [[ $ca_url =~ ^https://[^/]+$ ]] || die "--ca-url '$ca_url' is not like https://pki.example.com:9000."
  if ! out=$(step ca root "$root" --ca-url "$ca_url" --fingerprint "$fingerprint" </dev/null 2>&1); then
    case "$out" in
      *"was not found"*|*fingerprint*|*mismatch*) die "the CA at $ca_url has another root than fingerprint $fingerprint: wrong CA, or someone in between. Nothing was changed." ;;
      *) die "the CA at $ca_url cannot be reached: $(tail -n 1 <<<"$out")" ;;
    esac
  fi
  step ca health --ca-url "$ca_url" --root "$root" </dev/null >/dev/null 2>&1 ||
    die "the CA at $ca_url does not answer its health check."
  ca_date=$(curl -fsS --max-time 15 --cacert "$root" -D - -o /dev/null "$ca_url/health" | tr -d '\r' |
    sed -n 's/^[Dd]ate: //p' | head -n 1)
  [ -n "$ca_date" ] || die "the CA at $ca_url sent no Date header to compare clocks with."
  skew=$(( $(date +%s) - $(date -d "$ca_date" +%s) ))
  [ "${skew#-}" -le 60 ] ||
    die "this host's clock is ${skew}s off the CA's ($ca_date): certificates would look not yet valid or expired. Fix the time (e.g. systemd-timesyncd) and run again."
  # The token's expiry, judged by the CA's clock (the one that will check it).
  if [ -n "$token" ] && [ "$token_exp" -le "$(date -d "$ca_date" +%s)" ]; then
    die "the token expired at $(date -u -d "@$token_exp" '+%Y-%m-%d %H:%M UTC'). Ask for a new one (GUI: Enroll a Site)."
  fi
else
  cp "$work/bundle/ca.crt" "$root"
  say "No --ca-url: the bundle is installed without automatic renewal."
  schedule=none
fi

# --- the files of this site ---
crt="$certs_dir/$site.crt"
key="$certs_dir/$site.key"
ca_crt="$certs_dir/ca.crt"
has_systemd=false
[ -d /run/systemd/system ] && has_systemd=true
if [ -z "$schedule" ]; then
  if [ -z "$prefix" ] && [ "$has_systemd" = false ]; then schedule=cron; else schedule=systemd; fi
fi
if [ -z "$reload_cmd" ]; then
  if [ -n "$prefix" ]; then reload_cmd=true
  elif [ "$has_systemd" = true ]; then reload_cmd="systemctl restart mosquitto"
  else reload_cmd="service mosquitto restart"; fi
fi

# Was this very token already used here? Then its certificate is installed and the token is not
# spent again. A different token (a re-enrolment after a revocation, say) gets a new certificate.
have_valid=false
if [ -n "$token" ] && [ "$force" = false ] && [ -f "$crt" ] && [ -f "$key" ] && [ -f "$state_dir/site.env" ] &&
   grep -qx "TOKEN_ID=$token_id" "$state_dir/site.env" &&
   step certificate verify "$crt" --roots "$root" >/dev/null 2>&1 && [ "$(cert_cn "$crt")" = "$site" ]; then
  have_valid=true
fi

if [ "$dry_run" = true ]; then
  say "Checks passed. A run without --dry-run would:"
  if [ "$have_valid" = true ]; then say "  keep the valid certificate in $crt"
  elif [ -n "$token" ]; then say "  make a key here and get the certificate of $site from $ca_url with the token"
  else say "  install the certificate and key from $bundle"; fi
  say "  write $ca_crt, $crt, $key (0600), $conf_file (bridge to $broker)"
  [ "$schedule" = none ] || say "  install renewal ($schedule) running $state_dir/renew.sh, then: $reload_cmd"
  exit 0
fi

# --- from here on, changes ---
changed=0
# put_file SOURCE TARGET MODE: install unless identical; a different existing file is kept as .bak.
put_file() {
  local source=$1 target=$2 mode=$3
  mkdir -p "$(dirname "$target")"
  if [ -f "$target" ] && cmp -s "$source" "$target"; then return 0; fi
  if [ -f "$target" ]; then cp -p "$target" "$target.bak.$(date +%Y%m%d%H%M%S)"; fi
  cp "$source" "$target.tmp.$$"
  chmod "$mode" "$target.tmp.$$"
  mv -f "$target.tmp.$$" "$target"
  say "Wrote $target"
  changed=$((changed + 1))
}
owner_mosquitto() {
  if [ "$(id -u)" -eq 0 ] && id mosquitto >/dev/null 2>&1; then chown mosquitto: "$@"; fi
}

# The certificate first, into the scratch folder: if the CA refuses, nothing on this host has changed.
if [ "$have_valid" = false ] && [ -n "$token" ]; then
  # The token reaches step in its environment, never as an argument: any local user can read arguments.
  if ! out=$(STEP_TOKEN="$token" step ca certificate "$site" "$work/$site.crt" "$work/$site.key" \
        --kty EC --curve P-256 --ca-url "$ca_url" --root "$root" --force </dev/null 2>&1); then
    case "$out" in
      *authorization*|*unauthorized*|*401*) die "the CA refused the token: it was already used, has expired, or was made for another CA. Ask for a new one (GUI: Enroll a Site). Nothing was changed." ;;
      *) die "getting the certificate failed: $(tail -n 1 <<<"$out"). Nothing was changed." ;;
    esac
  fi
fi

mkdir -p "$certs_dir" "$state_dir" "$site_steppath"
put_file "$root" "$ca_crt" 0644
if [ "$have_valid" = true ]; then
  say "A valid certificate of $site is installed ($crt): kept, the token was not used."
elif [ -n "$token" ]; then
  put_file "$work/$site.crt" "$crt" 0644
  put_file "$work/$site.key" "$key" 0600
else
  put_file "$work/bundle/$site.crt" "$crt" 0644
  put_file "$work/bundle/$site.key" "$key" 0600
fi
owner_mosquitto "$crt" "$key"

bridge_config > "$work/bridge.conf"
put_file "$work/bridge.conf" "$conf_file" 0644

cat > "$work/site.env" <<EOF
SITE=$site
CA_URL=$ca_url
FINGERPRINT=$fingerprint
BROKER=$broker
TOKEN_ID=${token_id:-}
EOF
put_file "$work/site.env" "$state_dir/site.env" 0644

if [ "$schedule" != none ]; then
  renew_flag=""
  [ -z "$renew_before" ] || renew_flag=" --expires-in $renew_before"
  due_when="a third of its lifetime is left"
  [ -z "$renew_before" ] || due_when="less than $renew_before is left"
  cat > "$work/renew.sh" <<EOF
#!/bin/sh
# Written by app-pki enroll-site.sh: renew the certificate of site $site when it is due, then reload
# the bridge. Run daily by app-pki-renew.timer (or cron).
#   renew.sh           renew if due ($due_when), else say so; exit 0 either way
#   renew.sh --check   say whether a renewal is due and change nothing
#   renew.sh --force   renew now, due or not
set -eu
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH STEPPATH='$site_steppath'
mode=\${1:-}
case \$mode in
  ''|--check|--force) ;;
  *) echo "usage: \$0 [--check | --force]" >&2; exit 2 ;;
esac
expires=\$('$step_bin' certificate inspect '$crt' --short 2>/dev/null | sed -n 's/^ *to: *//p' | head -n 1) || true
[ -n "\$expires" ] || { echo "app-pki-renew: cannot read $crt" >&2; exit 1; }
status=0
'$step_bin' certificate needs-renewal '$crt'$renew_flag >/dev/null 2>&1 || status=\$?
case \$status in
  0) due=yes ;;
  1) due=no ;;
  *) echo "app-pki-renew: cannot read $crt" >&2; exit 1 ;;
esac
if [ "\$mode" = --check ]; then
  if [ \$due = yes ]; then echo "The certificate of $site (valid until \$expires) is due for renewal: the next run renews it."
  else echo "The certificate of $site is valid until \$expires; it is renewed once $due_when. Nothing to do."; fi
  exit 0
fi
if [ \$due = no ] && [ "\$mode" != --force ]; then
  echo "Not renewed: the certificate of $site is valid until \$expires and is renewed once $due_when (--force renews now)."
  exit 0
fi
if ! out=\$('$step_bin' ca renew --force --ca-url '$ca_url' --root '$ca_crt' '$crt' '$key' 2>&1); then
  echo "app-pki-renew: the CA did not renew the certificate of $site (revoked, or the CA cannot be reached): \$out" >&2
  exit 1
fi
expires=\$('$step_bin' certificate inspect '$crt' --short | sed -n 's/^ *to: *//p' | head -n 1)
echo "Renewed the certificate of $site: valid until \$expires. Reloading the bridge."
$reload_cmd
EOF
  put_file "$work/renew.sh" "$state_dir/renew.sh" 0755
  if [ "$schedule" = systemd ]; then
    cat > "$work/renew.service" <<EOF
[Unit]
Description=Renew the app-pki certificate of site $site
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=$state_dir/renew.sh
EOF
    cat > "$work/renew.timer" <<EOF
[Unit]
Description=Daily renewal check of the app-pki certificate of site $site

[Timer]
OnCalendar=daily
RandomizedDelaySec=1h
Persistent=true

[Install]
WantedBy=timers.target
EOF
    put_file "$work/renew.service" "$prefix/etc/systemd/system/app-pki-renew.service" 0644
    put_file "$work/renew.timer" "$prefix/etc/systemd/system/app-pki-renew.timer" 0644
  else
    echo "23 3 * * * root $state_dir/renew.sh 2>&1 | logger -t app-pki-renew" > "$work/renew.cron"
    put_file "$work/renew.cron" "$prefix/etc/cron.d/app-pki-renew" 0644
  fi
fi

# Activate what changed. A marker makes a run after a failed activation try again, even though
# the files are then already in place.
pending="$state_dir/.activation-pending"
if [ -z "$prefix" ] && { [ "$changed" -gt 0 ] || [ -f "$pending" ]; }; then
  touch "$pending"
  if [ "$schedule" = systemd ]; then
    systemctl daemon-reload
    systemctl enable --now app-pki-renew.timer
  fi
  sh -c "$reload_cmd" || die "the bridge configuration is written but '$reload_cmd' failed: look at the Mosquitto log, then run this again."
  rm -f "$pending"
fi

expiry=$(cert_expiry "$crt")
if [ "$changed" -eq 0 ]; then
  say "Site $site is already enrolled; nothing changed. Certificate valid until $expiry."
else
  say "Site $site is enrolled: bridge to $broker, certificate valid until $expiry${prefix:+ (installed under $prefix)}."
fi
