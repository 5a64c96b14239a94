#!/usr/bin/env bash
# TEST INFRASTRUCTURE: builds TEST-ONLY stand-ins for the base images the project's Dockerfiles
# and docker-compose.yml name, because no container registry is reachable on the test machines:
#
#   golang:1.26-bookworm        standin-golang.Dockerfile   (host Go tree + file GOPROXY of the modules)
#   python:3.11-slim-bookworm   standin-python.Dockerfile   (Debian python3 + pre-downloaded wheels)
#   smallstep/step-ca:0.30.2    standin-step-ca.Dockerfile  (pinned step/step-ca from install-step.sh)
#   postgres:15-bookworm        standin-postgres.Dockerfile (Debian postgresql-15; the `ha` profile)
#   haproxy:2.6-bookworm        standin-haproxy.Dockerfile  (Debian haproxy 2.6; the `ha` profile)
#
# Each is labelled org.app-pki.test-fixture=true and built only when missing from the engine (or when
# its inputs changed: label org.app-pki.test-fixture.inputs). An image under the same tag WITHOUT the
# fixture label (the real one, loaded by hand) is always reused. See ../shared/design/docker-facts.md.
set -euo pipefail

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$repo_dir/tests/compose"
cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/app-pki/docker"
rootfs_dir="$cache_dir/rootfs"     # debootstrap tarballs
gomod_dir="$cache_dir/gomod"       # GOMODCACHE; its cache/download is the stand-in's GOPROXY
wheels_dir="$cache_dir/wheels"     # pip download of streamlit/requirements.txt
context_root="$cache_dir/context"  # build contexts (removed after each build)
docker=${DOCKER:-docker}
fixture_label=org.app-pki.test-fixture
inputs_label=org.app-pki.test-fixture.inputs

golang_tag=golang:1.26-bookworm
python_tag=python:3.11-slim-bookworm
stepca_tag=smallstep/step-ca:0.30.2
postgres_tag=postgres:15-bookworm
haproxy_tag=haproxy:2.6-bookworm

# The Debian root file systems: image name -> packages debootstrap adds to minbase.
declare -A rootfs_includes=(
  [bookworm]=""
  [bookworm-python]="python3,python3-pip,python-is-python3"
  [bookworm-step-ca]="curl,ca-certificates"
  [bookworm-postgres]="postgresql-15"
  [bookworm-haproxy]="haproxy"
)

usage() {
  cat <<EOF
Usage: tests/compose/standins.sh [--help]

Builds TEST-ONLY stand-ins for the base images the project's Dockerfiles need, in the engine that
DOCKER_HOST names (start it with tests/compose/engine.sh start), only when missing or outdated:
  $golang_tag        Debian bookworm + the host's Go tree + a file GOPROXY holding the modules the
                              project's Dockerfiles go install (versions read from their ARGs)
  $python_tag   Debian bookworm + python3, pip, python-is-python3 + the wheels of
                              streamlit/requirements.txt (PIP_NO_INDEX=1, PIP_FIND_LINKS=/wheels)
  $stepca_tag    Debian bookworm + curl + the pinned step and step-ca of scripts/install-step.sh
                              (run first when .tools/bin lacks them), laid out like the official image
  $postgres_tag        Debian bookworm + postgresql-15, with an entrypoint doing what app-pki needs of
                              the official one (POSTGRES_PASSWORD_FILE, docker-entrypoint-initdb.d)
  $haproxy_tag        Debian bookworm + haproxy 2.6, run like the official image
Base root file systems come from debootstrap --variant=minbase (tarballs cached), imported as
local/bookworm, local/bookworm-python and local/bookworm-step-ca.

Prints one line per image on stdout: reused or built, with the time taken. Progress goes to stderr.

Cache: $cache_dir (rootfs/, gomod/, wheels/)
Environment:
  DOCKER_HOST, DOCKER_CONFIG, DOCKER   as printed by tests/compose/engine.sh start (DOCKER default: docker)
  XDG_CACHE_HOME                       base of the cache (default \$HOME/.cache)
  APP_PKI_DEBIAN_MIRROR                Debian mirror for debootstrap (default: the one apt uses)
EOF
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) echo "standins.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac

log() { echo "standins.sh: $*" >&2; }
die() { log "$*"; exit 1; }
report() { printf '%-28s %s\n' "$1" "$2"; }
now() { date +%s; }

[ -n "${DOCKER_HOST:-}" ] || die "DOCKER_HOST is not set: run tests/compose/engine.sh start and export its lines."
"$docker" info >/dev/null 2>&1 || die "no Docker engine answers at $DOCKER_HOST (tests/compose/engine.sh start)."

image_exists() { "$docker" image inspect "$1" >/dev/null 2>&1; }
image_label() { "$docker" image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null; }

# arg_default DOCKERFILE NAME FALLBACK: the default of `ARG NAME=...` in one of the project's Dockerfiles.
arg_default() {
  local value
  value=$(sed -n "s/^ARG $2=\\(.*\\)\$/\\1/p" "$repo_dir/$1" | head -n 1)
  echo "${value:-$3}"
}
step_cli_version=$(arg_default streamlit/Dockerfile STEP_CLI_VERSION v0.30.6)
gojq_version=$(arg_default ca/Dockerfile GOJQ_VERSION v0.12.19)
go_modules=(
  "github.com/smallstep/cli/cmd/step@$step_cli_version"
  "github.com/itchyny/gojq/cmd/gojq@$gojq_version"
)

debian_mirror() {
  if [ -n "${APP_PKI_DEBIAN_MIRROR:-}" ]; then echo "$APP_PKI_DEBIAN_MIRROR"; return; fi
  local mirror
  mirror=$(apt-cache policy 2>/dev/null |
    awk '$3 ~ /^bookworm\/main$/ && $2 ~ /^https?:\/\// { print $2; exit }')
  echo "${mirror:-http://deb.debian.org/debian}"
}

# --- the fingerprints of each stand-in's inputs (cheap: no download needed to compute them) ---
sha() { sha256sum | cut -c1-16; }
go_version() { go env GOVERSION; }
fingerprint_golang() {
  { cat "$here/standin-golang.Dockerfile"; go_version; printf '%s\n' "${go_modules[@]}"; } | sha
}
fingerprint_python() {
  { cat "$here/standin-python.Dockerfile" "$repo_dir/streamlit/requirements.txt"
    echo "${rootfs_includes[bookworm-python]}"; } | sha
}
step_binary() { readlink -f "$repo_dir/.tools/bin/$1"; }
ensure_step_tools() {
  if [ ! -x "$repo_dir/.tools/bin/step" ] || [ ! -x "$repo_dir/.tools/bin/step-ca" ]; then
    log "the pinned step and step-ca are missing from .tools/bin: running scripts/install-step.sh"
    "$repo_dir/scripts/install-step.sh" >&2
  fi
}
fingerprint_stepca() {
  { cat "$here/standin-step-ca.Dockerfile" "$here/standin-step-ca-entrypoint.sh"
    sha256sum "$(step_binary step)" "$(step_binary step-ca)" | cut -d' ' -f1
    echo "${rootfs_includes[bookworm-step-ca]}"; } | sha
}

fingerprint_postgres() {
  { cat "$here/standin-postgres.Dockerfile" "$here/standin-postgres-entrypoint.sh"
    echo "${rootfs_includes[bookworm-postgres]}"; } | sha
}
fingerprint_haproxy() {
  { cat "$here/standin-haproxy.Dockerfile"; echo "${rootfs_includes[bookworm-haproxy]}"; } | sha
}

# needs_build TAG FINGERPRINT: 0 when the image must be built.
needs_build() {
  image_exists "$1" || return 0
  [ "$(image_label "$1" "$fixture_label")" = true ] || return 1  # not ours (the real image): keep it
  [ "$(image_label "$1" "$inputs_label")" != "$2" ]
}

# --- base root file systems ---
debootstrap_pids=()
debootstrap_names=()
start_debootstrap() {
  local name=$1 dir="$rootfs_dir/$1.tmp" includes=${rootfs_includes[$1]}
  command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing (tests/compose/engine.sh start installs it)."
  mkdir -p "$rootfs_dir"
  umount_under "$dir"
  rm -rf "$dir"
  log "debootstrap $name (minbase${includes:+ + $includes}) in the background, log $rootfs_dir/$name.log"
  (
    debootstrap --variant=minbase ${includes:+--include="$includes"} bookworm "$dir" "$(debian_mirror)"
    rm -rf "$dir/var/cache/apt/archives/"*.deb "$dir/var/lib/apt/lists/"*
    tar --numeric-owner -C "$dir" -cf "$rootfs_dir/$name.tar.tmp" .
    mv "$rootfs_dir/$name.tar.tmp" "$rootfs_dir/$name.tar"
    rm -rf "$dir"
  ) >"$rootfs_dir/$name.log" 2>&1 &
  debootstrap_pids+=("$!")
  debootstrap_names+=("$name")
}

umount_under() {
  local mount_point
  while read -r mount_point; do
    umount -l "$mount_point" 2>/dev/null || true
  done < <(awk -v a="$1/" 'index($2, a) == 1 { print $2 }' /proc/mounts | sort -r)
}

wait_debootstraps() {
  local i failed=0
  for i in "${!debootstrap_pids[@]}"; do
    if ! wait "${debootstrap_pids[$i]}"; then
      log "debootstrap ${debootstrap_names[$i]} failed; the end of $rootfs_dir/${debootstrap_names[$i]}.log:"
      tail -n 20 "$rootfs_dir/${debootstrap_names[$i]}.log" >&2
      umount_under "$rootfs_dir/${debootstrap_names[$i]}.tmp"
      failed=1
    fi
  done
  [ "$failed" -eq 0 ] || exit 1
}

import_base() {
  local name=$1 started
  image_exists "local/$name" && return 0
  started=$(now)
  "$docker" import --change "LABEL $fixture_label=true" "$rootfs_dir/$name.tar" "local/$name" >/dev/null
  report "local/$name" "imported from $rootfs_dir/$name.tar in $(( $(now) - started )) s"
}

# --- inputs downloaded on the host ---
download_go_modules() {
  command -v go >/dev/null 2>&1 || die "Go is not installed: the golang stand-in copies the host's Go tree."
  local module output
  for module in "${go_modules[@]}"; do
    log "go: pre-downloading $module into $gomod_dir"
    # -n loads (and downloads) every module the build needs without compiling anything; CGO off as in
    # the project's Dockerfiles, so that the same files (and imports) are selected.
    if ! output=$(cd / && CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local GOMODCACHE="$gomod_dir" \
        GOBIN=/nonexistent go install -n "$module" 2>&1 >/dev/null); then
      printf '%s\n' "$output" | tail -n 20 >&2
      die "downloading $module failed."
    fi
  done
}

download_wheels() {
  local platforms=() minor
  # Debian bookworm has glibc 2.36: every manylinux wheel for glibc <= 2.36 fits.
  for minor in $(seq 36 -1 5); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
  platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
  log "pip: downloading the wheels of streamlit/requirements.txt into $wheels_dir"
  mkdir -p "$wheels_dir"
  env -u PIP_FIND_LINKS -u PIP_NO_INDEX python3 -m pip download -q --disable-pip-version-check \
    --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
    "${platforms[@]}" -r "$repo_dir/streamlit/requirements.txt" -d "$wheels_dir" >&2 ||
    die "pip download failed."
}

# copy_tree SOURCE DEST: hard links when possible (same file system), else a copy.
copy_tree() {
  cp -al "$1" "$2" 2>/dev/null || { rm -rf "$2"; cp -a "$1" "$2"; }
}

# build TAG DOCKERFILE CONTEXT FINGERPRINT
build() {
  local old_id new_id
  old_id=$("$docker" image inspect -f '{{.Id}}' "$1" 2>/dev/null || true)
  log "building $1 ..."
  # The legacy builder: the engine's CLI has no buildx, and these Dockerfiles need nothing more.
  DOCKER_BUILDKIT=0 "$docker" build -q -f "$2" -t "$1" --label "$inputs_label=$4" "$3" >&2
  rm -rf "$3"
  new_id=$("$docker" image inspect -f '{{.Id}}' "$1")
  # The outdated stand-in it replaces (kept if something still uses it).
  if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    "$docker" image rm "$old_id" >/dev/null 2>&1 || true
  fi
}

# reused TAG SECONDS: the report line of an image that is kept.
reused() {
  if [ "$(image_label "$1" "$fixture_label")" = true ]; then
    report "$1" "reused ($2 s)"
  else
    report "$1" "reused, NOT a test fixture (the real image?) ($2 s)"
  fi
}

# --- what is to be done ---
script_started=$(now)
fp_golang=$(fingerprint_golang)
fp_python=$(fingerprint_python)
ensure_step_tools
fp_stepca=$(fingerprint_stepca)

fp_postgres=$(fingerprint_postgres)
fp_haproxy=$(fingerprint_haproxy)

build_golang=false build_python=false build_stepca=false build_postgres=false build_haproxy=false
needs_build "$golang_tag" "$fp_golang" && build_golang=true
needs_build "$python_tag" "$fp_python" && build_python=true
needs_build "$stepca_tag" "$fp_stepca" && build_stepca=true
needs_build "$postgres_tag" "$fp_postgres" && build_postgres=true
needs_build "$haproxy_tag" "$fp_haproxy" && build_haproxy=true

bases=()
$build_golang && bases+=(bookworm)
$build_python && bases+=(bookworm-python)
$build_stepca && bases+=(bookworm-step-ca)
$build_postgres && bases+=(bookworm-postgres)
$build_haproxy && bases+=(bookworm-haproxy)
for name in "${bases[@]}"; do
  if ! image_exists "local/$name" && [ ! -f "$rootfs_dir/$name.tar" ]; then start_debootstrap "$name"; fi
done
debootstrap_started=$(now)

# While debootstrap runs: the host-side downloads.
go_download_s=0 pip_download_s=0
if $build_golang; then started=$(now); download_go_modules; go_download_s=$(( $(now) - started )); fi
if $build_python; then started=$(now); download_wheels; pip_download_s=$(( $(now) - started )); fi

wait_debootstraps
if [ "${#debootstrap_names[@]}" -gt 0 ]; then
  report "debootstrap" "${debootstrap_names[*]}: $(( $(now) - debootstrap_started )) s (in parallel, tarballs cached in $rootfs_dir)"
fi
for name in "${bases[@]}"; do import_base "$name"; done

started=$(now)
if $build_golang; then
  context="$context_root/golang"
  rm -rf "$context"; mkdir -p "$context"
  copy_tree "$(go env GOROOT)" "$context/go"
  copy_tree "$gomod_dir/cache/download" "$context/goproxy"
  build "$golang_tag" "$here/standin-golang.Dockerfile" "$context" "$fp_golang"
  report "$golang_tag" "built in $(( $(now) - started )) s + ${go_download_s} s go downloads (Go $(go_version); ${go_modules[*]})"
else
  reused "$golang_tag" "$(( $(now) - started ))"
fi

started=$(now)
if $build_python; then
  context="$context_root/python"
  rm -rf "$context"; mkdir -p "$context"
  copy_tree "$wheels_dir" "$context/wheels"
  build "$python_tag" "$here/standin-python.Dockerfile" "$context" "$fp_python"
  report "$python_tag" "built in $(( $(now) - started )) s + ${pip_download_s} s pip download ($(find "$wheels_dir" -name '*.whl' | wc -l) wheels)"
else
  reused "$python_tag" "$(( $(now) - started ))"
fi

started=$(now)
if $build_stepca; then
  context="$context_root/step-ca"
  rm -rf "$context"; mkdir -p "$context"
  cp "$(step_binary step)" "$context/step"
  cp "$(step_binary step-ca)" "$context/step-ca"
  cp "$here/standin-step-ca-entrypoint.sh" "$context/entrypoint.sh"
  build "$stepca_tag" "$here/standin-step-ca.Dockerfile" "$context" "$fp_stepca"
  report "$stepca_tag" "built in $(( $(now) - started )) s"
else
  reused "$stepca_tag" "$(( $(now) - started ))"
fi
started=$(now)
if $build_postgres; then
  context="$context_root/postgres"
  rm -rf "$context"; mkdir -p "$context"
  cp "$here/standin-postgres-entrypoint.sh" "$context/entrypoint.sh"
  build "$postgres_tag" "$here/standin-postgres.Dockerfile" "$context" "$fp_postgres"
  report "$postgres_tag" "built in $(( $(now) - started )) s"
else
  reused "$postgres_tag" "$(( $(now) - started ))"
fi

started=$(now)
if $build_haproxy; then
  context="$context_root/haproxy"
  rm -rf "$context"; mkdir -p "$context"
  build "$haproxy_tag" "$here/standin-haproxy.Dockerfile" "$context" "$fp_haproxy"
  report "$haproxy_tag" "built in $(( $(now) - started )) s"
else
  reused "$haproxy_tag" "$(( $(now) - started ))"
fi

report "all stand-ins" "ready in $(( $(now) - script_started )) s"
