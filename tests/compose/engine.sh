#!/usr/bin/env bash
# TEST INFRASTRUCTURE: a private Docker Engine (>= 26) with Compose v2, for running the project's real
# `docker compose` on a Debian bookworm machine that has no container registry and only a Docker client.
#
# Debian bookworm's docker.io (Engine 20.10) silently ignores `volume.subpath`, which docker-compose.yml
# relies on, so the engine comes from Debian trixie's packages (docker.io, containerd, docker-compose,
# docker-cli), fetched with apt through a PRIVATE state directory and sources list (the system's apt
# sources are never touched) and only unpacked (dpkg-deb -x). trixie's runc needs a newer glibc:
# bookworm's runc is installed instead. See ../shared/design/docker-facts.md.
#
# dockerd runs on a private socket and exec root and never touches the host firewall
# (--iptables=false --ip6tables=false --ip-masq=false --ip-forward=false). Its data root is in the
# cache, so images (stand-ins, project builds) persist between runs of fresh clones.
set -euo pipefail

cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/app-pki/docker"
run_dir="${APP_PKI_DOCKER_RUN_DIR:-/run/app-pki-docker}"
engine_dir="$cache_dir/engine"            # the unpacked trixie packages
apt_dir="$cache_dir/apt"                  # apt's private state (sources.list, lists, cache, status)
debs_dir="$cache_dir/debs"                # the downloaded .deb files
data_root="$cache_dir/data"               # dockerd's data root: images survive between runs
config_dir="$cache_dir/config"            # DOCKER_CONFIG: cli-plugins/docker-compose
exec_root="$run_dir/exec"
socket="$run_dir/docker.sock"
pidfile="$run_dir/dockerd.pid"
log_file="$run_dir/dockerd.log"
netstate_file="$run_dir/netstate.before"
packages=(docker.io containerd docker-compose docker-cli)
min_engine_major=26

usage() {
  cat <<EOF
Usage: tests/compose/engine.sh start|stop|env|--help

A private Docker Engine (>= $min_engine_major, from Debian trixie's packages) with Compose v2, for tests.

  start  fetch and unpack the engine into the cache if missing, install bookworm's runc, debootstrap,
         iptables (dockerd's embedded DNS uses it inside containers) and nftables (for the firewall
         check) when missing, start dockerd (if not running) and wait
         until it answers; then print the environment lines below
  stop   stop dockerd (SIGTERM, then SIGKILL after 30 s), remove the docker0 link; the cache stays
  env    print the environment lines without starting anything

Environment lines (stdout, KEY=VALUE, one per line, nothing else on stdout; progress goes to stderr):
  DOCKER_HOST=unix://$socket
  DOCKER_CONFIG=$config_dir
  DOCKER=$engine_dir/usr/bin/docker

Use them like:
  eval "\$(tests/compose/engine.sh start | sed 's/^/export /')"
  "\$DOCKER" compose version

start and stop warn when the nftables ruleset or /proc/sys/net/ipv4/ip_forward changed.

Cache (survives between runs, outside the clone): $cache_dir
Runtime (socket, pidfile, exec root, dockerd.log): $run_dir
Environment:
  XDG_CACHE_HOME           base of the cache (default \$HOME/.cache)
  APP_PKI_DOCKER_RUN_DIR   runtime folder (default /run/app-pki-docker)
  APP_PKI_DEBIAN_MIRROR    Debian mirror for trixie (default: the one apt uses for bookworm)
EOF
}

log() { echo "engine.sh: $*" >&2; }
die() { log "$*"; exit 1; }

print_env() {
  printf 'DOCKER_HOST=unix://%s\n' "$socket"
  printf 'DOCKER_CONFIG=%s\n' "$config_dir"
  printf 'DOCKER=%s\n' "$engine_dir/usr/bin/docker"
}

# --- the host's network state: must be the same before and after ---
net_state() {
  echo "ip_forward=$(cat /proc/sys/net/ipv4/ip_forward)"
  if command -v nft >/dev/null 2>&1; then
    echo "--- nft list ruleset"
    nft list ruleset 2>&1 || true
  else
    echo "--- nft missing: legacy table names only"
    cat /proc/net/ip_tables_names /proc/net/ip6_tables_names 2>/dev/null || true
  fi
}

check_net_state() {
  local when=$1 now
  [ -f "$netstate_file" ] || return 0
  now=$(net_state)
  if [ "$now" != "$(cat "$netstate_file")" ]; then
    log "WARNING: the host's nftables ruleset or ip_forward changed $when:"
    diff <(cat "$netstate_file") <(printf '%s\n' "$now") | sed 's/^/engine.sh:   /' >&2 || true
  else
    log "host firewall (nftables ruleset) and ip_forward unchanged $when."
  fi
}

# --- packages ---
debian_mirror() {
  if [ -n "${APP_PKI_DEBIAN_MIRROR:-}" ]; then echo "$APP_PKI_DEBIAN_MIRROR"; return; fi
  # The mirror apt already uses for bookworm's main component, e.g. http://deb.debian.org/debian
  local mirror
  mirror=$(apt-cache policy 2>/dev/null |
    awk '$3 ~ /^bookworm\/main$/ && $2 ~ /^https?:\/\// { print $2; exit }')
  echo "${mirror:-http://deb.debian.org/debian}"
}

engine_version_ok() {
  local dockerd="$engine_dir/usr/sbin/dockerd" version
  [ -x "$dockerd" ] && [ -x "$engine_dir/usr/bin/docker" ] && [ -x "$engine_dir/usr/bin/containerd" ] &&
    [ -x "$engine_dir/usr/libexec/docker/cli-plugins/docker-compose" ] || return 1
  version=$("$dockerd" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1) || return 1
  [ "${version%%.*}" -ge "$min_engine_major" ] 2>/dev/null
}

ensure_engine() {
  if [ -f "$engine_dir/.complete" ] && engine_version_ok; then
    log "engine in the cache: $(cat "$engine_dir/.complete")"
  else
    local mirror started
    started=$(date +%s)
    mirror=$(debian_mirror)
    log "fetching trixie's ${packages[*]} from $mirror (private apt state in $apt_dir)..."
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/empty" "$debs_dir"
    : > "$apt_dir/status"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" \
      > "$apt_dir/sources.list"
    local apt_opts=(
      -o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o "Dir::Etc::sourceparts=$apt_dir/empty"
      -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
      -o "Dir::State::status=$apt_dir/status"
      -o "Dir::Etc::preferences=$apt_dir/empty/none" -o "Dir::Etc::preferencesparts=$apt_dir/empty"
      # Private folders under root's home: apt's _apt sandbox user could not write them.
      -o APT::Sandbox::User=root
    )
    apt-get "${apt_opts[@]}" -q update >&2
    rm -f "$debs_dir"/*.deb
    (cd "$debs_dir" && apt-get "${apt_opts[@]}" -q download "${packages[@]}" >&2)
    rm -rf "$engine_dir.tmp"
    mkdir -p "$engine_dir.tmp"
    local deb
    for deb in "$debs_dir"/*.deb; do dpkg-deb -x "$deb" "$engine_dir.tmp"; done
    rm -rf "$engine_dir"
    mv "$engine_dir.tmp" "$engine_dir"
    engine_version_ok || die "the unpacked dockerd is missing or older than $min_engine_major ($debs_dir)."
    for deb in "$debs_dir"/*.deb; do printf '%s ' "${deb##*/}"; done > "$engine_dir/.complete"
    log "engine unpacked in $(( $(date +%s) - started )) s: $(cat "$engine_dir/.complete")"
  fi
  mkdir -p "$config_dir/cli-plugins"
  ln -sfn "$engine_dir/usr/libexec/docker/cli-plugins/docker-compose" "$config_dir/cli-plugins/docker-compose"
}

ensure_host_packages() {
  local missing=()
  command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || missing+=(runc)
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
  command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || missing+=(nftables)
  # dockerd's embedded DNS (service names on a user network) sets up its redirect with iptables INSIDE
  # each container's network namespace, even with --iptables=false; without the binary every lookup
  # of a service name fails ("Resolver Start failed ... iptables not found"). The host's ruleset is
  # not touched (checked below).
  command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing+=(iptables)
  [ "${#missing[@]}" -gt 0 ] || return 0
  log "installing bookworm's ${missing[*]} with apt-get..."
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  fi
}

# --- dockerd ---
dockerd_pid() {
  local pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

docker_answers() {
  DOCKER_HOST="unix://$socket" DOCKER_CONFIG="$config_dir" "$engine_dir/usr/bin/docker" info >/dev/null 2>&1
}

engine_path() {
  # dockerd finds containerd, containerd-shim-runc-v2, runc, docker-proxy and docker-init on PATH.
  echo "$engine_dir/usr/sbin:$engine_dir/usr/bin:$engine_dir/usr/libexec/docker:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

start() {
  ensure_host_packages
  ensure_engine
  mkdir -p "$run_dir" "$exec_root" "$data_root"
  if dockerd_pid >/dev/null && docker_answers; then
    [ "$(cat "$run_dir/data-root" 2>/dev/null)" = "$data_root" ] ||
      die "the dockerd on $socket uses another data root ($(cat "$run_dir/data-root" 2>/dev/null)): stop it first (XDG_CACHE_HOME differs)."
    log "dockerd already running (pid $(dockerd_pid)) on $socket"
    print_env
    return 0
  fi
  if pid=$(dockerd_pid); then
    die "dockerd (pid $pid) is running but does not answer on $socket; run 'engine.sh stop' first."
  fi
  net_state > "$netstate_file"
  echo '{}' > "$run_dir/daemon.json"  # never /etc/docker/daemon.json of the host
  echo "$data_root" > "$run_dir/data-root"
  log "starting dockerd (data root $data_root, log $log_file)..."
  # setsid: dockerd leaves this script's process group, so it outlives the caller's job control.
  PATH=$(engine_path) setsid "$engine_dir/usr/sbin/dockerd" \
    --config-file "$run_dir/daemon.json" \
    --data-root "$data_root" --exec-root "$exec_root" --pidfile "$pidfile" \
    -H "unix://$socket" \
    --iptables=false --ip6tables=false --ip-masq=false --ip-forward=false \
    --storage-driver overlay2 \
    --userland-proxy-path "$engine_dir/usr/sbin/docker-proxy" \
    </dev/null >"$log_file" 2>&1 &
  local started pid=$!
  started=$(date +%s)
  while ! docker_answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "dockerd exited; the end of $log_file:"
      tail -n 40 "$log_file" >&2
      exit 1
    fi
    if [ $(( $(date +%s) - started )) -ge 60 ]; then
      log "dockerd did not answer within 60 s; the end of $log_file:"
      tail -n 40 "$log_file" >&2
      exit 1
    fi
    sleep 0.5
  done
  log "dockerd $("$engine_dir/usr/sbin/dockerd" --version | grep -oE '[0-9]+\.[0-9.]+' | head -n 1) ready (pid $pid) in $(( $(date +%s) - started )) s on $socket"
  check_net_state "by start"
  print_env
}

stop() {
  local pid waited=0
  if pid=$(dockerd_pid); then
    # dockerd writes the pid of the containerd it started here; it must not outlive dockerd.
    local containerd_pid=""
    [ -f "$exec_root/containerd/containerd.pid" ] && containerd_pid=$(cat "$exec_root/containerd/containerd.pid")
    log "stopping dockerd (pid $pid)..."
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 60 ]; do sleep 0.5; waited=$((waited + 1)); done
    if kill -0 "$pid" 2>/dev/null; then
      log "dockerd did not stop within 30 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
    fi
    if [ -n "$containerd_pid" ] && kill -0 "$containerd_pid" 2>/dev/null &&
       grep -q containerd "/proc/$containerd_pid/comm" 2>/dev/null; then
      log "stopping the containerd dockerd left behind (pid $containerd_pid)"
      kill -TERM "$containerd_pid" 2>/dev/null || true
      sleep 2
      kill -KILL "$containerd_pid" 2>/dev/null || true
    fi
    # Mounts a killed dockerd may leave (container root file systems, network namespaces).
    local mount_point
    while read -r mount_point; do
      umount -l "$mount_point" 2>/dev/null || true
    done < <(awk -v a="$exec_root" -v b="$data_root" 'index($2, a) == 1 || index($2, b) == 1 { print $2 }' /proc/mounts | sort -r)
    log "dockerd stopped."
  else
    log "dockerd is not running."
  fi
  rm -f "$pidfile"
  if ip link show docker0 >/dev/null 2>&1; then
    ip link del docker0
    log "removed the docker0 link."
  fi
  check_net_state "by start/stop"
}

case "${1:-}" in
  -h|--help) usage ;;
  start) start ;;
  stop) stop ;;
  env) print_env ;;
  "") usage >&2; exit 2 ;;
  *) log "unknown argument '$1' (see --help)"; exit 2 ;;
esac
