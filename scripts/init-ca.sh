#!/usr/bin/env bash
# Set up app-pki's step-ca. ONE setup for every runtime: `make run`, the tests, and the one-shot init
# service of docker compose all call this script, so what the tests exercise is what production runs.
#
# Non-interactive and idempotent. The settings it was run with are recorded in the CA; a second run
# with the same settings changes nothing, a run with other settings shows the difference and fails.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/init-ca.sh [--help]

Creates the app-pki certificate authority in $STEPPATH, or checks that the one already there was made
with the same settings. Settings come from the environment:

  STEPPATH               the CA's folder (required; empty or missing on first run)
  PKI_GUI_DIR            folder for the files the GUI may read (required): root and intermediate
                         certificates, one password file per device provisioner, ca-settings.env
  PKI_CA_NAME            CA name                                (default "AK-SG IoT CA")
  PKI_CA_DNS_NAMES       CA DNS names, comma-separated          (default "localhost,step-ca")
  PKI_PUBLIC_HOSTS       public host name(s) of the CA, comma-separated, added to its DNS names
  PKI_CA_ADDRESS         HTTPS listen address                   (default ":9000")
  PKI_CRL_ADDRESS        plain-HTTP listen address for the CRL  (default ":9080")
  PKI_PUBLIC_CA_URL      CA URL used by sites, in tokens and the bootstrap command
                         (default https://<first public host, or localhost>:<CA port>)
  PKI_CRL_URL            CRL URL written into EVERY certificate; cannot change later
                         (default http://<first public host, or localhost>:<CRL port>/1.0/crl)
  PKI_CERT_DEFAULT_DAYS  default certificate validity in days   (default 365)
  PKI_CERT_MAX_DAYS      maximum certificate validity in days   (default 730)
  PKI_CERT_MIN_DURATION  minimum certificate validity, Go syntax (default 1m)
  PKI_STEPCA_DB_URL      step-ca's database in PostgreSQL instead of its own folder, for replicas that
                         share it: postgresql://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=...
                         (read from the environment only; the password goes into ca.json, never into
                         the settings record; the database must exist, and hold no other CA)

Provisioners: admin (super-admin, JWK; its password never leaves $STEPPATH/secrets),
iot-devices (client certificates, clientAuth only), iot-servers (server certificates, serverAuth only).

Exit codes: 0 set up or already set up identically; 1 error; 3 the CA exists with other settings.
EOF
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) echo "init-ca.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac

die() { echo "init-ca.sh: $*" >&2; exit 1; }

[ -n "${STEPPATH:-}" ] || die "STEPPATH is not set: it names the folder the CA lives in."
[ -n "${PKI_GUI_DIR:-}" ] || die "PKI_GUI_DIR is not set: it names the folder of the files the GUI reads."
for tool in step step-ca jq; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not on PATH (scripts/install-step.sh installs it)."
done

client_provisioner=iot-devices
server_provisioner=iot-servers
admin_provisioner="admin"
admin_subject=step

ca_name=${PKI_CA_NAME:-AK-SG IoT CA}
ca_address=${PKI_CA_ADDRESS:-:9000}
crl_address=${PKI_CRL_ADDRESS:-:9080}
default_days=${PKI_CERT_DEFAULT_DAYS:-365}
max_days=${PKI_CERT_MAX_DAYS:-730}
min_duration=${PKI_CERT_MIN_DURATION:-1m}
ca_port=${ca_address##*:}
crl_port=${crl_address##*:}

# DNS names: localhost first (the loopback set-up below and the image's healthcheck use the first
# name), then the configured names, then the public hosts; duplicates dropped, order kept.
dns_names=localhost
IFS=, read -r -a requested_names <<< "${PKI_CA_DNS_NAMES:-localhost,step-ca},${PKI_PUBLIC_HOSTS:-}"
for name in "${requested_names[@]}"; do
  name=${name// /}
  [ -n "$name" ] || continue
  case ",$dns_names," in *",$name,"*) ;; *) dns_names="$dns_names,$name" ;; esac
done
public_host=${PKI_PUBLIC_HOSTS:-localhost}
public_host=${public_host%%,*}
public_host=${public_host// /}
public_ca_url=${PKI_PUBLIC_CA_URL:-https://$public_host:$ca_port}
crl_url=${PKI_CRL_URL:-http://$public_host:$crl_port/1.0/crl}
stepca_db=${PKI_STEPCA_DB_URL:-}
# What the settings record keeps of it: everything but the password (which may itself hold '@').
stepca_db_shown=""
if [ -n "$stepca_db" ]; then
  db_rest=${stepca_db#*://} db_query=""
  db_authority=${db_rest%%/*}
  [[ $db_rest == */* ]] && db_query=/${db_rest#*/}
  if [[ $db_authority == *@* ]]; then
    db_user=${db_authority%@*}
    db_authority="${db_user%%:*}@${db_authority##*@}"
  fi
  stepca_db_shown="${stepca_db%%://*}://$db_authority$db_query"
fi

# --- validate every setting before anything is written ---
is_port() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }
[[ $ca_address == *:* ]] || die "PKI_CA_ADDRESS '$ca_address' has no port (expected like ':9000' or '127.0.0.1:9000')."
[[ $crl_address == *:* ]] || die "PKI_CRL_ADDRESS '$crl_address' has no port (expected like ':9080' or '127.0.0.1:9080')."
is_port "$ca_port" || die "PKI_CA_ADDRESS '$ca_address' has no valid port (expected like ':9000')."
is_port "$crl_port" || die "PKI_CRL_ADDRESS '$crl_address' has no valid port (expected like ':9080')."
[ "$ca_port" != "$crl_port" ] || die "PKI_CA_ADDRESS and PKI_CRL_ADDRESS use the same port $ca_port."
[[ $default_days =~ ^[1-9][0-9]*$ ]] || die "PKI_CERT_DEFAULT_DAYS '$default_days' is not a positive whole number."
[[ $max_days =~ ^[1-9][0-9]*$ ]] || die "PKI_CERT_MAX_DAYS '$max_days' is not a positive whole number."
[ "$default_days" -le "$max_days" ] || die "PKI_CERT_DEFAULT_DAYS ($default_days) is above PKI_CERT_MAX_DAYS ($max_days)."
[[ $min_duration =~ ^[1-9][0-9]*[smh]$ ]] || die "PKI_CERT_MIN_DURATION '$min_duration' is not like '1m', '5m' or '1h'."
[[ $dns_names =~ ^[A-Za-z0-9.,:*-]+$ ]] || die "PKI_CA_DNS_NAMES/PKI_PUBLIC_HOSTS hold characters a host name cannot: '$dns_names'."
[[ $public_ca_url =~ ^https://([^/:]+)(:[0-9]+)?/?$ ]] || die "PKI_PUBLIC_CA_URL '$public_ca_url' is not like https://host:port."
public_ca_host=${BASH_REMATCH[1]}
case ",$dns_names," in
  *",$public_ca_host,"*) ;;
  *) die "the host of PKI_PUBLIC_CA_URL ($public_ca_host) is not one of the CA's DNS names ($dns_names): add it to PKI_PUBLIC_HOSTS." ;;
esac
# The CRL is fetched over plain HTTP: a CRL behind TLS would need the trust it is there to check.
[[ $crl_url =~ ^http://[^/\ ]+/(1\.0/)?crl$ ]] ||
  die "PKI_CRL_URL '$crl_url' is not like http://host:port/1.0/crl (step-ca serves the CRL at /crl and /1.0/crl)."
[ -z "$stepca_db" ] || [[ $stepca_db =~ ^postgres(ql)?://[^/]+/[A-Za-z0-9_]+(\?.*)?$ ]] ||
  die "PKI_STEPCA_DB_URL is not like postgresql://user:password@host:5432/database (not shown: it may hold a password)."
[[ ! ${stepca_db,,} =~ [?\&](ssl)?password= ]] ||
  die "PKI_STEPCA_DB_URL has a password in its query: put it after the user (user:password@host) or in a PGPASSFILE."
[[ $ca_name =~ ^[A-Za-z0-9][A-Za-z0-9\ ._-]{0,62}$ ]] || die "PKI_CA_NAME '$ca_name' must be 1-63 letters, digits, spaces, dots, dashes or underscores."

mkdir -p "$PKI_GUI_DIR"
gui_dir=$(cd "$PKI_GUI_DIR" && pwd)
settings_file="$STEPPATH/config/app-pki.env"

# The record of the settings: compared on every later run, and read by the GUI (ca-settings.env).
settings() {
  cat <<EOF
CA_NAME=$ca_name
CA_DNS_NAMES=$dns_names
CA_ADDRESS=$ca_address
CRL_ADDRESS=$crl_address
PUBLIC_CA_URL=$public_ca_url
CRL_URL=$crl_url
CERT_DEFAULT_DAYS=$default_days
CERT_MAX_DAYS=$max_days
CERT_MIN_DURATION=$min_duration
CLIENT_PROVISIONER=$client_provisioner
SERVER_PROVISIONER=$server_provisioner
EOF
  if [ -n "$stepca_db" ]; then echo "STEPCA_DB=$stepca_db_shown"; fi
}

# export_gui_files: put what the GUI may read into PKI_GUI_DIR. Never replaces a file that differs.
restored=0
export_gui_files() {
  local name source
  local -A sources=(
    [root_ca.crt]="$STEPPATH/certs/root_ca.crt"
    [intermediate_ca.crt]="$STEPPATH/certs/intermediate_ca.crt"
    [$client_provisioner.password]="$STEPPATH/secrets/$client_provisioner.password"
    [$server_provisioner.password]="$STEPPATH/secrets/$server_provisioner.password"
    [ca-settings.env]="$settings_file"
  )
  for name in "${!sources[@]}"; do
    source=${sources[$name]}
    [ -f "$source" ] || die "$source is missing: the CA in $STEPPATH is incomplete."
    if [ -e "$gui_dir/$name" ]; then
      cmp -s "$source" "$gui_dir/$name" ||
        die "$gui_dir/$name differs from the CA's copy $source; not replacing it. Remove it to have it restored."
    else
      (umask 077 && cp "$source" "$gui_dir/$name.tmp" && mv "$gui_dir/$name.tmp" "$gui_dir/$name")
      echo "Exported $gui_dir/$name"
      restored=$((restored + 1))
    fi
  done
}

# --- an existing CA: compare, change nothing ---
if [ -e "$STEPPATH/config/ca.json" ]; then
  [ -f "$settings_file" ] ||
    die "$STEPPATH holds a CA that this script did not finish setting up (no $settings_file). Remove $STEPPATH to start over (this destroys that CA)."
  if ! difference=$(diff -u --label "set up with" --label "asked for now" "$settings_file" <(settings)); then
    cat >&2 <<EOF
init-ca.sh: the CA in $STEPPATH was set up with other settings. Nothing was changed.
$difference

Certificates already issued carry the CA's names and CRL URL, so these cannot change in place.
Run again with the settings above, or remove $STEPPATH to create a new CA (every certificate it issued stops being trusted).
EOF
    exit 3
  fi
  export_gui_files
  if [ "$restored" -eq 0 ]; then
    echo "The CA in $STEPPATH is already set up with these settings. Nothing changed."
  else
    echo "The CA in $STEPPATH is already set up with these settings. Restored $restored missing GUI file(s); nothing else changed."
  fi
  exit 0
fi

for part in config certs secrets db templates; do
  [ ! -e "$STEPPATH/$part" ] ||
    die "$STEPPATH/$part exists but $STEPPATH/config/ca.json does not: not a CA this script made. Remove $STEPPATH/$part (or choose another STEPPATH)."
done

# --- a new CA ---
work=$(mktemp -d)
ca_pid=""
created_ca=false
cleanup() {
  local status=$?
  if [ -n "$ca_pid" ]; then kill "$ca_pid" 2>/dev/null || true; wait "$ca_pid" 2>/dev/null || true; fi
  if [ "$status" -ne 0 ] && [ "$created_ca" = true ]; then
    # Leave no half-made CA behind: a later run would refuse it.
    rm -rf "${STEPPATH:?}/config" "$STEPPATH/certs" "$STEPPATH/secrets" "$STEPPATH/db" "$STEPPATH/templates"
    echo "init-ca.sh: set-up failed; removed the partial CA from $STEPPATH." >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT
# A stop signal must count as a failure, so that cleanup removes the half-made CA.
trap 'exit 143' TERM
trap 'exit 130' INT

mkdir -p "$STEPPATH" "$work/cli"
umask 077
for secret in password admin "$client_provisioner" "$server_provisioner"; do
  step crypto rand --format alphanumeric 40 > "$work/$secret.pw"
done

echo "Creating the CA '$ca_name' in $STEPPATH (DNS names: $dns_names)..."
dns_flags=()
IFS=, read -r -a dns_list <<< "$dns_names"
for name in "${dns_list[@]}"; do dns_flags+=(--dns "$name"); done
# --remote-management writes the admin provisioner into the embedded database at once. With PostgreSQL,
# ca.json holds it instead, with enableAdmin (below): step-ca's first start moves it into the shared
# database and makes `step` its super-admin.
management=(--admin-subject "$admin_subject" --remote-management)
[ -z "$stepca_db" ] || management=()
created_ca=true
step ca init --deployment-type standalone --name "$ca_name" "${dns_flags[@]}" --address "$ca_address" \
  --provisioner "$admin_provisioner" "${management[@]}" \
  --password-file "$work/password.pw" --provisioner-password-file "$work/admin.pw" \
  </dev/null >"$work/init.log" 2>&1 || { cat "$work/init.log" >&2; die "step ca init failed."; }

# Authority settings that live in ca.json (provisioners live in the database, set below):
# - JSON logs: every signed and renewed certificate is in the request log, which the GUI reads to
#   know the certificates of sites that enrolled by token or renewed (their keys are not on the server);
# - disableIssuedAtCheck: tokens minted before a CA restart stay valid (pending site enrolments);
# - the CRL, regenerated on every revoke, served over plain HTTP; its Issuing Distribution Point is
#   exactly the URL the templates put in every certificate, or strict verifiers refuse valid ones.
jq --arg crl_url "$crl_url" --arg crl_address "$crl_address" '
  .logger.format = "json"
  | .authority.disableIssuedAtCheck = true
  | .insecureAddress = $crl_address
  | .crl = {enabled: true, generateOnRevoke: true, cacheDuration: "168h", renewPeriod: "24h",
            idpURL: $crl_url}
' "$STEPPATH/config/ca.json" > "$work/ca.json"
cat "$work/ca.json" > "$STEPPATH/config/ca.json"
if [ -n "$stepca_db" ]; then
  # The DSN holds a password: jq reads it from the environment, never from its command line.
  jq '.db = {type: "postgresql", dataSource: env.PKI_STEPCA_DB_URL} | .authority.enableAdmin = true' \
    "$STEPPATH/config/ca.json" > "$work/ca.json"
  cat "$work/ca.json" > "$STEPPATH/config/ca.json"
fi

# Start the CA briefly on loopback only, to configure its provisioners through the admin API.
# No CRL from this throw-away start: with a shared database it would be stored for the replicas to serve.
jq --arg address "127.0.0.1:$ca_port" '.address = $address | .insecureAddress = "" | .crl.enabled = false' \
  "$work/ca.json" > "$work/ca-loopback.json"
step-ca "$work/ca-loopback.json" --password-file "$work/password.pw" </dev/null >"$work/step-ca.log" 2>&1 &
ca_pid=$!
ca_url="https://localhost:$ca_port"
root="$STEPPATH/certs/root_ca.crt"
for _ in $(seq 1 100); do
  kill -0 "$ca_pid" 2>/dev/null || { cat "$work/step-ca.log" >&2; die "step-ca stopped during set-up (is port $ca_port free on 127.0.0.1?)."; }
  STEPPATH="$work/cli" step ca health --ca-url "$ca_url" --root "$root" >/dev/null 2>&1 && break
  sleep 0.2
done
STEPPATH="$work/cli" step ca health --ca-url "$ca_url" --root "$root" >/dev/null 2>&1 ||
  { cat "$work/step-ca.log" >&2; die "step-ca did not become healthy on $ca_url."; }

# A shared database that held provisioners before this start belongs to another CA (or to a set-up that
# failed half-way): its admin is not the one of this ca.json, or it has more than the admin.
if [ -n "$stepca_db" ]; then
  listed=$(STEPPATH="$work/cli" step ca provisioner list --ca-url "$ca_url" --root "$root" 2>/dev/null) ||
    die "the provisioners of the new CA cannot be listed."
  ours=$(jq -r --arg name "$admin_provisioner" '.authority.provisioners[]? | select(.name == $name) | .key.kid' "$work/ca.json")
  theirs=$(jq -r '[.[] | .name + "=" + (.key.kid // "")] | sort | join(",")' <<< "$listed")
  [ "$theirs" = "$admin_provisioner=$ours" ] ||
    die "the database $stepca_db_shown already holds the provisioners of another CA (or of a set-up that failed): use the CA folder that goes with it, or an empty database (DROP and CREATE it again)."
fi

# leaf_template EKU: the X.509 template of one provisioner. step-ca's default template gives every
# certificate both serverAuth and clientAuth; here each provisioner gives exactly one.
leaf_template() {
  cat <<EOF
{
  "subject": {{ toJson .Subject }},
  "sans": {{ toJson .SANs }},
{{- if typeIs "*rsa.PublicKey" .Insecure.CR.PublicKey }}
  "keyUsage": ["keyEncipherment", "digitalSignature"],
{{- else }}
  "keyUsage": ["digitalSignature"],
{{- end }}
  "extKeyUsage": ["$1"],
  "crlDistributionPoints": ["$crl_url"]
}
EOF
}
leaf_template clientAuth > "$work/client.tpl"
leaf_template serverAuth > "$work/server.tpl"

add_provisioner() {
  local name=$1 template=$2; shift 2
  STEPPATH="$work/cli" step ca provisioner add "$name" --type JWK --create \
    --password-file "$work/$name.pw" --x509-template "$template" \
    --x509-min-dur "$min_duration" --x509-max-dur "$((max_days * 24))h" \
    --x509-default-dur "$((default_days * 24))h" --disable-ssh-ca-user --disable-ssh-ca-host "$@" \
    --admin-subject "$admin_subject" --admin-provisioner "$admin_provisioner" \
    --admin-password-file "$work/admin.pw" --ca-url "$ca_url" --root "$root" \
    </dev/null >"$work/provisioner.log" 2>&1 ||
    { cat "$work/provisioner.log" >&2; die "adding the provisioner $name failed."; }
  echo "Provisioner $name added."
}
# Site certificates may renew after expiry: a site that was offline must be able to come back.
add_provisioner "$client_provisioner" "$work/client.tpl" --allow-renewal-after-expiry
add_provisioner "$server_provisioner" "$work/server.tpl"

kill "$ca_pid"
wait "$ca_pid" 2>/dev/null || true
ca_pid=""

# Only step-ca reads secrets/password (the CA keys) and secrets/admin.password (the super-admin).
cp "$work/password.pw" "$STEPPATH/secrets/password"
cp "$work/admin.pw" "$STEPPATH/secrets/$admin_provisioner.password"
cp "$work/$client_provisioner.pw" "$STEPPATH/secrets/$client_provisioner.password"
cp "$work/$server_provisioner.pw" "$STEPPATH/secrets/$server_provisioner.password"
# Written last: its presence marks a finished set-up.
settings > "$settings_file.tmp"
mv "$settings_file.tmp" "$settings_file"
created_ca=false

export_gui_files
cat <<EOF
CA '$ca_name' is set up in $STEPPATH.
  Root fingerprint: $(step certificate fingerprint "$root")
  Public CA URL:    $public_ca_url
  CRL URL:          $crl_url (in every certificate)
  Provisioners:     $admin_provisioner (super-admin), $client_provisioner (clients), $server_provisioner (servers)
Start it with: scripts/start-ca.sh (STEPPATH=$STEPPATH)
EOF
