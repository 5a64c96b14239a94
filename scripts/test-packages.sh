#!/usr/bin/env bash
# The Debian packages `make test` needs: installed when run as root, otherwise named in one line.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/test-packages.sh [--help]     (run first by make test and .ci/run)

Checks the Debian packages the tests use (Mosquitto, HAProxy, Chromium, shellcheck, ...). As root it
installs the missing ones with apt-get; as anyone else it names them in one line and exits 1.
USAGE
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) echo "test-packages.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac

packages=(make jq curl unzip openssl ca-certificates procps shellcheck mosquitto mosquitto-clients haproxy chromium age prometheus postgresql)
# Debian's own Python needs python3-venv for `python3 -m venv` (make test makes a .venv).
python3 -c 'import ensurepip' 2>/dev/null || packages+=(python3-venv)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "make test needs these Debian packages first: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "Installing Debian packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
