#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`, and that debootstrap and docker-compose exist.
# As root on Debian/Ubuntu it installs what is missing (apt-get) and starts dockerd in the
# background; an engine that already answers is left alone.
# Exit 0: the engine answers. Exit 1: it does not; the message says what to run by hand.
#
# Environment: ENGINE_WAIT_S (default 60): how long to wait for a starting engine;
#   DOCKERD_FLAGS: extra dockerd flags (e.g. "--iptables=false --bridge=none" on the GPU machines).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=docker/lib.sh
source docker/lib.sh

WAIT_S=${ENGINE_WAIT_S:-60}
LOG=build/dockerd.log

print_manual_steps() {
  cat >&2 <<'EOF'
[setup] To get a Docker engine, run once as root (Debian/Ubuntu):
    sudo apt-get install -y docker.io debootstrap docker-compose
    sudo systemctl start docker        # without systemd: sudo sh -c 'setsid dockerd >/var/log/dockerd.log 2>&1 </dev/null &'
    sudo usermod -aG docker "$USER"    # then log in again, so that `docker info` works without sudo
    sudo docker/build-images.sh base   # the offline base image needs debootstrap, which needs root
  then run `make setup` again.
  Without Docker, the nightly can still run each case in its own network namespace:
    make nightly RUNTIME=netns
EOF
}

dockerd_running() { pgrep -x dockerd >/dev/null 2>&1 || pidof dockerd >/dev/null 2>&1; }

install_missing_tools() {
  local pkgs=()
  have dockerd || pkgs+=(docker.io)
  have debootstrap || pkgs+=(debootstrap)
  have docker-compose || pkgs+=(docker-compose)
  ((${#pkgs[@]})) || return 0
  if ! is_root || ! have apt-get; then
    warn "missing: ${pkgs[*]} (installing them needs root and apt-get)"
    return 0
  fi
  say "installing ${pkgs[*]} with apt-get (log: build/apt.log)"
  mkdir -p build
  # apt output goes to a log: on success nobody reads it, on failure we show its end.
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}"; } >build/apt.log 2>&1; then
    tail -n 20 build/apt.log >&2
    die "apt-get install ${pkgs[*]} failed (full log: build/apt.log)"
  fi
}

start_engine() {
  if [[ -d /run/systemd/system ]] && have systemctl; then
    say "starting the docker service (systemctl)"
    systemctl start docker || warn "systemctl start docker failed; starting dockerd by hand"
    engine_up && return 0
  fi
  if dockerd_running; then
    say "dockerd is running but not answering yet; waiting"
    return 0
  fi
  mkdir -p build
  say "starting dockerd in the background (log: $LOG)"
  # setsid + redirected stdio: the engine outlives make and holds no pipe of the caller open.
  # shellcheck disable=SC2086  # DOCKERD_FLAGS is a list of flags
  setsid dockerd ${DOCKERD_FLAGS:-} >"$LOG" 2>&1 </dev/null &
}

wait_for_engine() {
  local deadline=$((SECONDS + WAIT_S))
  until engine_up; do
    if ((SECONDS >= deadline)); then
      [[ -f $LOG ]] && tail -n 20 "$LOG" >&2
      warn "the Docker engine did not answer within ${WAIT_S} s (log: $LOG)"
      return 1
    fi
    if ! dockerd_running; then
      [[ -f $LOG ]] && tail -n 20 "$LOG" >&2
      warn "dockerd exited while starting (log: $LOG)"
      return 1
    fi
    sleep 0.5
  done
}

install_missing_tools

if engine_up; then
  say "Docker engine: up (server $(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?'))"
  exit 0
fi

if ! have dockerd || ! is_root; then
  if have docker && [[ -S /var/run/docker.sock ]] && ! is_root; then
    warn "an engine seems to run, but this user may not use it (docker.sock permission?)"
  else
    warn "no Docker engine answers, and set-up cannot install or start one without root"
  fi
  print_manual_steps
  exit 1
fi

start_engine
if ! wait_for_engine; then
  print_manual_steps
  exit 1
fi
say "Docker engine: up (server $(docker version -f '{{.Server.Version}}'))"
