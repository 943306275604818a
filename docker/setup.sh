#!/usr/bin/env bash
# Set up this checkout on a fresh machine; safe and fast to re-run (a step with nothing to do
# costs milliseconds):
#   venv    .venv with the project installed editable plus its dev tools; CPU torch without a GPU
#   engine  a Docker engine that answers (docker/ensure-engine.sh; installs and starts it as root)
#   images  the lab's images (docker/build-images.sh)
#   models  the random-weight models real servers load offline (lab models make, build/models/)
# Usage: docker/setup.sh [venv] [engine] [images] [models] [tools]   (no argument: all, in order)
# Environment:
#   REQUIRE_DOCKER=1  no engine, or no images, is an error (CI). Otherwise set-up goes on without
#                     Docker, says so, and the docker tests skip; `make nightly RUNTIME=netns` works.
#   PYTHON            the interpreter for .venv (default python3; 3.11 or newer)
#   TORCH_SPEC        torch to install first when there is no GPU (default torch==2.13.0, CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=docker/lib.sh
source docker/lib.sh

PYTHON=${PYTHON:-python3}
STAMP=.venv/.lab-setup

setup_venv() {
  local torch_spec key
  # No GPU: take the CPU wheel first, or pip resolves torch to several GB of CUDA packages.
  if have nvidia-smi; then torch_spec=""; else torch_spec=${TORCH_SPEC:-torch==2.13.0}; fi
  key=$(printf 'pyproject.toml %s\ntorch %s\n' "$(sha256sum <pyproject.toml | cut -d' ' -f1)" \
    "${torch_spec:-as pip chooses}")
  if [[ -f $STAMP && $(<"$STAMP") == "$key" ]] && .venv/bin/python -c '' 2>/dev/null; then
    say "venv: up to date"
    return
  fi
  if ! .venv/bin/python -c '' 2>/dev/null; then
    make_venv
  fi
  rm -f "$STAMP"
  mkdir -p build
  if [[ -n $torch_spec ]]; then
    say "venv: installing $torch_spec (no nvidia-smi here, so the CPU build)"
    pip_logged .venv/bin/pip install "$torch_spec"
  fi
  say "venv: installing the project with its dev tools (log: build/pip-install.log)"
  pip_logged .venv/bin/pip install -e '.[dev]'
  echo "$key" >"$STAMP"
}

make_venv() {
  have "$PYTHON" || die "$PYTHON not found: install Python 3.11 or newer, or set PYTHON=/path/to/python3"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$PYTHON is $("$PYTHON" -V 2>&1); the lab needs 3.11 or newer (set PYTHON=...)"
  say "venv: creating .venv with $("$PYTHON" -V 2>&1)"
  rm -rf .venv
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    # Debian/Ubuntu split venv off into python3-venv.
    if ! is_root || ! have apt-get; then
      die "$PYTHON -m venv failed: install python3-venv (apt-get) and retry"
    fi
    say "venv: installing python3-venv with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
    rm -rf .venv
    "$PYTHON" -m venv .venv
  fi
}

pip_logged() {
  if ! "$@" >>build/pip-install.log 2>&1; then
    tail -n 25 build/pip-install.log >&2
    die "'$*' failed (full log: build/pip-install.log)"
  fi
}

# 0: the engine answers. Without one, set-up goes on unless REQUIRE_DOCKER=1.
setup_engine() {
  docker/ensure-engine.sh && return 0
  [[ ${REQUIRE_DOCKER:-0} == 1 ]] && die "no Docker engine, and REQUIRE_DOCKER=1"
  warn "going on without Docker: the docker tests will skip, and the nightly needs RUNTIME=netns"
  return 1
}

setup_images() {
  if ! engine_up; then
    [[ ${REQUIRE_DOCKER:-0} == 1 ]] && die "no Docker engine for the images, and REQUIRE_DOCKER=1"
    warn "images: skipped, no Docker engine answers"
    return 0
  fi
  local rc=0
  docker/build-images.sh all || rc=$?
  # 3: the base image needs root (debootstrap); a known limit for non-root users, said above.
  if ((rc == 3)) && [[ ${REQUIRE_DOCKER:-0} != 1 ]]; then
    warn "images: not built; the docker tests will skip"
    return 0
  fi
  return "$rc"
}

# Debian's Chromium, for the test that opens report.html in a real browser. Never fatal: without
# it that one test skips and says why.
setup_tools() {
  have chromium && return 0
  if is_root && have apt-get; then
    say "tools: installing chromium (report.html is checked in a real headless browser)"
    mkdir -p build
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >build/apt-chromium.log 2>&1 ||
      warn "tools: chromium did not install (build/apt-chromium.log); the browser test will skip"
  else
    warn "tools: no chromium; the browser test will skip (apt-get install chromium)"
  fi
}

# Debian's Slurm and munge, for the tests that start a real single-node cluster of their own
# (tests/integration/test_slurm.py runs and stops its daemons). Never fatal: without them those
# tests skip and say why. The packages must leave no daemon running: for the install only, a
# policy-rc.d that refuses every service start, unless the machine has its own already.
setup_slurm() {
  have slurmctld && have slurmd && have sbatch && have munged && return 0
  if ! is_root || ! have apt-get; then
    warn "tools: no Slurm; the slurm tests will skip (apt-get install slurmctld slurmd slurm-client munge)"
    return 0
  fi
  say "tools: installing slurmctld, slurmd, slurm-client and munge (for the slurm tests)"
  mkdir -p build
  local policy=/usr/sbin/policy-rc.d ours=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    slurmctld slurmd slurm-client munge >build/apt-slurm.log 2>&1 ||
    warn "tools: Slurm did not install (build/apt-slurm.log); the slurm tests will skip"
  if ((ours)); then rm -f "$policy"; fi
}

# configs/transformers.json's models: made offline by the lab's own seeded maker; a folder that
# holds a model is kept (the maker is deterministic, so it would make the same bytes).
setup_models() {
  local py=${VENV:-.venv}/bin/python
  "$py" -m lab.cli models make tiny-llama --out build/models/tiny-llama --if-missing
  "$py" -m lab.cli models make tiny-llama --out build/models/llama-200m-bf16 --hidden 1024 \
    --layers 12 --heads 16 --dtype bfloat16 --if-missing
}

steps=("$@")
((${#steps[@]})) || steps=(venv engine images models tools)
t_all=$(now)
for step in "${steps[@]}"; do
  t0=$(now)
  case $step in
    venv) setup_venv ;;
    engine) setup_engine || true ;;
    images) setup_images ;;
    models) setup_models ;;
    tools) setup_tools && setup_slurm ;;
    *) die "unknown step '$step' (usage: docker/setup.sh [venv] [engine] [images] [models] [tools])" ;;
  esac
  say "$step: $(elapsed "$t0")"
done
say "set-up done in $(elapsed "$t_all")"
