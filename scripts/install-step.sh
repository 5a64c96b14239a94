#!/usr/bin/env bash
# Install the pinned step CLI and step-ca (and jq when the system has none).
#
# The binaries are built with `go install` from the Go module proxy, so Go verifies every module
# against the checksum database. They are built once into a cache outside the clone and linked into
# the project's git-ignored tools folder: CI clones afresh every time, so a folder inside the clone
# could never be a cache.
set -euo pipefail

step_cli_version=v0.30.6
step_ca_version=v0.30.2
# gojq v0.12.20 needs a go-yaml pseudo-version whose module zip the Go proxy refuses.
gojq_version=v0.12.19

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/app-pki/tools"
tools_dir="${PKI_TOOLS_DIR:-$repo_dir/.tools/bin}"

usage() {
  cat <<EOF
Usage: scripts/install-step.sh [--help]

Installs step ${step_cli_version} and step-ca ${step_ca_version} into ${tools_dir}
(symlinks into the cache ${cache_dir}).
If no jq is on PATH, also installs gojq ${gojq_version} there as 'jq'.

Binaries already in the cache at the pinned version are reused: nothing is rebuilt.

Environment:
  XDG_CACHE_HOME   base of the cache (default \$HOME/.cache)
  PKI_TOOLS_DIR    where the links go (default <repo>/.tools/bin)
EOF
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) echo "install-step.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac

# version_of BINARY: the module version Go recorded in the binary, or nothing.
version_of() {
  [ -x "$1" ] || return 0
  if command -v go >/dev/null 2>&1; then
    go version -m "$1" 2>/dev/null | awk '$1 == "mod" { print $3; exit }'
  else
    # Without Go, trust the version the binary prints (stamped with -ldflags below).
    { "$1" version 2>/dev/null || "$1" --version 2>/dev/null; } |
      grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1 | sed 's/^/v/'
  fi
}

require_go() {
  if ! command -v go >/dev/null 2>&1; then
    cat >&2 <<'EOF'
install-step.sh: Go is not installed, and step and step-ca are built from source with it.
Install Go 1.25 or newer, then run this again:
  https://go.dev/doc/install   (for example: the linux-amd64 tarball unpacked into /usr/local/go,
                                then export PATH=/usr/local/go/bin:$PATH)
EOF
    exit 1
  fi
}

# install_tool NAME MODULE_PACKAGE VERSION: build NAME once into the cache, link it into tools_dir.
install_tool() {
  local name=$1 package=$2 version=$3
  local dir="$cache_dir/$name-$version"
  local binary="$dir/$name"
  if [ "$(version_of "$binary")" != "$version" ]; then
    require_go
    echo "Building $name $version with go install (first time only, a few minutes)..."
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    # CGO off: step-ca then has no YubiKey/PKCS#11 backends, which need cgo and pcsclite.
    # main.Version is stamped so that `$name version` names the release without Go at hand.
    CGO_ENABLED=0 GOBIN="$dir.tmp" GOFLAGS=-trimpath \
      go install -ldflags "-s -w -X main.Version=${version#v}" "$package@$version"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
  fi
  mkdir -p "$tools_dir"
  ln -sfn "$binary" "$tools_dir/$name"
  printf '%-8s %s  %s\n' "$name" "$version" "$binary"
}

install_tool step github.com/smallstep/cli/cmd/step "$step_cli_version"
install_tool step-ca github.com/smallstep/certificates/cmd/step-ca "$step_ca_version"

# init-ca.sh edits ca.json with jq. Debian and the step-ca image have it; elsewhere gojq stands in.
if [ -x "$tools_dir/jq" ] || ! command -v jq >/dev/null 2>&1; then
  install_tool gojq github.com/itchyny/gojq/cmd/gojq "$gojq_version"
  ln -sfn "$cache_dir/gojq-$gojq_version/gojq" "$tools_dir/jq"
fi
