#!/usr/bin/env bash
# Build the lab's images, each only when it is missing or out of date. No registry needed except
# for the sglang image:
#   nightly-lab/base:bookworm       Debian 12 minbase + python3, made by debootstrap and imported
#   nightly-lab/host-empty:latest   an empty image for the lab's `host` image mode
#   nightly-lab/reference:VERSION   the lab and its dependencies in /opt/lab, installed offline
#                                   from build/wheelhouse; runs as user `lab` (uid 1000)
#   nightly-lab/sglang:TAG-labVERSION  lmsysorg/sglang:TAG with the lab on top; built only when
#                                   that image is here or a registry answers
# VERSION is __version__ in lab/__init__.py. The reference and sglang images carry the labels
# nightly-lab.version and nightly-lab.source-hash (sha256 of the lab's sources, pyproject.toml
# and the image's Dockerfile) and are rebuilt only when that hash changes.
#
# Usage: docker/build-images.sh [all|base|host-empty|wheelhouse|reference|sglang|hash]
# Environment:
#   SGLANG_IMAGE   1: build the sglang image (pulls; fails if it cannot), 0: never, unset: if possible
#   SGLANG_TAG     the lmsysorg/sglang release to build on (default v + SGLANG_VERSION of
#                  lab/frameworks/sglang.py, the one place the version is set)
#   SGLANG_REVISION  the sglang commit that release was built from, if known: the image's
#                  org.opencontainers.image.revision label (its version label is SGLANG_TAG)
#   REFERENCE_IMAGE  repository of the reference image (default nightly-lab/reference)
#   VENV           virtual environment whose pip builds the wheelhouse (default .venv)
#   TORCH_SPEC     torch for the reference image (default torch==2.13.0, the CPU wheel)
#   DEBIAN_MIRROR  for debootstrap (default http://deb.debian.org/debian)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=docker/lib.sh
source docker/lib.sh
export DOCKER_BUILDKIT=0 # no buildx here: the legacy builder

VERSION=$(lab_version)
[[ -n $VERSION ]] || die "cannot read __version__ from lab/__init__.py"
BASE=nightly-lab/base:bookworm
HOST_EMPTY=nightly-lab/host-empty:latest
REFERENCE_REPO=${REFERENCE_IMAGE:-nightly-lab/reference}
REFERENCE=$REFERENCE_REPO:$VERSION
SGLANG_TAG=${SGLANG_TAG:-v$(sed -n 's/^SGLANG_VERSION = "\(.*\)"$/\1/p' lab/frameworks/sglang.py)}
[[ $SGLANG_TAG != v ]] || die "cannot read SGLANG_VERSION from lab/frameworks/sglang.py"
SGLANG_FROM=lmsysorg/sglang:$SGLANG_TAG
SGLANG=nightly-lab/sglang:$SGLANG_TAG-lab$VERSION
WHEELS=build/wheelhouse
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PYTHON=${VENV:-.venv}/bin/python
LABEL_HASH=nightly-lab.source-hash

# sha256 over the files that make an image: the lab's sources, pyproject.toml, its Dockerfile.
source_hash() {
  local dockerfile=$1
  {
    find lab -type f ! -name '*.pyc' ! -path '*/__pycache__/*'
    printf '%s\n' pyproject.toml "$dockerfile"
  } | LC_ALL=C sort | xargs -d '\n' sha256sum | sha256sum | cut -d' ' -f1
}

image_label() {
  docker image inspect -f "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null || true
}

# Build into a log; say how much came from the cache, and show the log's end on failure.
docker_build() {
  local name=$1 log=build/$1-build.log
  shift
  mkdir -p build
  if ! docker build "$@" . >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "building the $name image failed (full log: $log)"
  fi
  say "  $name: $(grep -c -- '---> Using cache' "$log" || true) of $(grep -c '^Step ' "$log" || true) steps from the cache (log: $log)"
}

# A rebuilt image leaves its predecessor untagged; drop it so disk use does not grow per change.
remove_if_dangling() {
  local old_id=$1
  [[ -n $old_id ]] || return 0
  if [[ $(docker image inspect -f '{{len .RepoTags}}' "$old_id" 2>/dev/null) == 0 ]]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true
  fi
}

build_base() {
  if image_exists "$BASE"; then
    say "$BASE: present"
    return
  fi
  if ! is_root; then
    warn "$BASE needs debootstrap, which needs root: run  sudo docker/build-images.sh base"
    exit 3 # set-up tells this known limit apart from a failure
  fi
  have debootstrap || die "debootstrap is missing: apt-get install -y debootstrap"
  local dir=build/debootstrap-bookworm t0
  t0=$(now)
  remove_rootfs "$dir"
  mkdir -p build
  say "$BASE: debootstrap bookworm minbase (about a minute; log: build/debootstrap.log)"
  if ! debootstrap --variant=minbase --include=python3,python3-venv bookworm "$dir" \
    "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >build/debootstrap.log 2>&1; then
    tail -n 20 build/debootstrap.log >&2
    remove_rootfs "$dir"
    die "debootstrap failed (log: build/debootstrap.log)"
  fi
  # apt's downloads and lists are dead weight in an image.
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" -c . | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase bookworm + python3" - "$BASE" >/dev/null
  remove_rootfs "$dir"
  say "$BASE: imported in $(elapsed "$t0")"
}

# A failed debootstrap can leave /proc or /sys mounted inside the tree: unmount before removing.
remove_rootfs() {
  local dir=$1 abs
  [[ -e $dir ]] || return 0
  abs=$(realpath "$dir")
  awk -v d="$abs/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
    xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf --one-file-system "$dir"
}

build_host_empty() {
  if image_exists "$HOST_EMPTY"; then
    say "$HOST_EMPTY: present"
    return
  fi
  tar cf - --files-from /dev/null |
    docker import --message "empty: the host image mode mounts the host's system folders" \
      - "$HOST_EMPTY" >/dev/null
  say "$HOST_EMPTY: created"
}

# pip 23 does not widen manylinux_2_X to older glibcs by itself, so name each one (Debian 12: 2.36).
platform_args() {
  local arch v
  arch=$(uname -m)
  for v in $(seq 36 -1 17); do printf -- '--platform manylinux_2_%s_%s ' "$v" "$arch"; done
  printf -- '--platform manylinux2014_%s' "$arch"
}

# Wheels of the runtime dependencies for Debian 12's python3 (cp311), whatever the host's Python.
build_deps_wheelhouse() {
  [[ -x $PYTHON ]] || die "$PYTHON is missing: run  make setup  first"
  local reqs key
  reqs=$(printf '%s\n' "$TORCH_SPEC" && "$PYTHON" -c '
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))')
  key=$(printf '%s\n%s\n' "$reqs" "$(platform_args)" | sha256sum | cut -d' ' -f1)
  if [[ -f $WHEELS/deps.key && $(<"$WHEELS/deps.key") == "$key" ]]; then
    say "wheelhouse: dependencies up to date"
    return
  fi
  local t0
  t0=$(now)
  say "wheelhouse: downloading the dependencies as cp311 wheels"
  rm -rf "$WHEELS/deps.tmp" "$WHEELS/deps.key"
  mkdir -p "$WHEELS/deps.tmp"
  printf '%s\n' "$reqs" >"$WHEELS/requirements.txt"
  # shellcheck disable=SC2046  # platform_args is a list of flags
  if ! "$PYTHON" -m pip download --dest "$WHEELS/deps.tmp" --only-binary=:all: \
    --implementation cp --python-version 3.11 --abi cp311 $(platform_args) \
    -r "$WHEELS/requirements.txt" >build/pip-download.log 2>&1; then
    tail -n 20 build/pip-download.log >&2
    die "pip download of the dependencies failed (log: build/pip-download.log)"
  fi
  rm -rf "$WHEELS/deps"
  mv "$WHEELS/deps.tmp" "$WHEELS/deps"
  echo "$key" >"$WHEELS/deps.key"
  say "wheelhouse: $(find "$WHEELS/deps" -name '*.whl' | wc -l) wheels in $(elapsed "$t0")"
}

build_lab_wheel() {
  local key
  key=$(source_hash /dev/null)
  if [[ -f $WHEELS/lab.key && $(<"$WHEELS/lab.key") == "$key" ]]; then
    return
  fi
  say "wheelhouse: building the lab's wheel"
  # From a clean copy: setuptools' build/ in the checkout would keep modules deleted since.
  local src=build/lab-src f
  rm -rf "$src" "$WHEELS/lab" "$WHEELS/lab.key"
  mkdir -p "$src" "$WHEELS/lab"
  for f in pyproject.toml README.md LICENSE lab; do
    [[ -e $f ]] && cp -r "$f" "$src/"
  done
  find "$src" -name __pycache__ -prune -exec rm -rf {} +
  if ! "$PYTHON" -m pip wheel --no-deps --wheel-dir "$WHEELS/lab" "$src" \
    >build/pip-wheel.log 2>&1; then
    tail -n 20 build/pip-wheel.log >&2
    die "building the lab's wheel failed (log: build/pip-wheel.log)"
  fi
  rm -rf "$src"
  echo "$key" >"$WHEELS/lab.key"
}

build_wheelhouse() {
  build_deps_wheelhouse
  build_lab_wheel
}

build_reference() {
  local hash old_id t0
  hash=$(source_hash docker/reference.Dockerfile)
  if [[ $(image_label "$REFERENCE" "$LABEL_HASH") == "$hash" ]]; then
    say "$REFERENCE: up to date (source hash ${hash:0:12})"
    return
  fi
  t0=$(now)
  image_exists "$BASE" || build_base
  build_wheelhouse
  old_id=$(docker image inspect -f '{{.Id}}' "$REFERENCE" 2>/dev/null || true)
  say "$REFERENCE: building (source hash ${hash:0:12})"
  docker_build reference -f docker/reference.Dockerfile \
    --build-arg "LAB_VERSION=$VERSION" --build-arg "SOURCE_HASH=$hash" \
    -t "$REFERENCE" -t "$REFERENCE_REPO:latest"
  remove_if_dangling "$old_id"
  say "$REFERENCE: built in $(elapsed "$t0")"
}

# Whether lmsysorg/sglang:TAG can be had: here already, forced, or the registry answers. A failed
# probe is remembered for an hour, so that a registry that drops packets does not slow every run.
sglang_reachable() {
  image_exists "$SGLANG_FROM" && return 0
  [[ ${SGLANG_IMAGE:-} == 1 ]] && return 0
  local err stamp=build/registry-unreachable
  if [[ -f $stamp && -n $(find "$stamp" -mmin -60) ]]; then
    say "$SGLANG: skipped: no registry answered within the last hour ($(<"$stamp"))"
    say "  (SGLANG_IMAGE=1 forces the build; rm $stamp asks the registry again)"
    return 1
  fi
  if err=$(timeout 10 docker manifest inspect "$SGLANG_FROM" 2>&1 >/dev/null); then
    rm -f "$stamp"
    return 0
  fi
  mkdir -p build
  echo "${err%%$'\n'*}" >"$stamp"
  say "$SGLANG: skipped: $SGLANG_FROM is not here and no registry answers (${err%%$'\n'*})"
  say "  (SGLANG_IMAGE=1 forces the build, e.g. with a registry mirror set up in the engine)"
  return 1
}

build_sglang() {
  if [[ ${SGLANG_IMAGE:-} == 0 ]]; then
    say "$SGLANG: skipped (SGLANG_IMAGE=0)"
    return
  fi
  local hash old_id
  hash=$(source_hash docker/sglang.Dockerfile)
  if [[ $(image_label "$SGLANG" "$LABEL_HASH") == "$hash" ]]; then
    say "$SGLANG: up to date (source hash ${hash:0:12})"
    return
  fi
  sglang_reachable || return 0
  build_lab_wheel
  old_id=$(docker image inspect -f '{{.Id}}' "$SGLANG" 2>/dev/null || true)
  say "$SGLANG: building on $SGLANG_FROM (the pull is many GB the first time)"
  docker_build sglang -f docker/sglang.Dockerfile --build-arg "SGLANG_TAG=$SGLANG_TAG" \
    --build-arg "SGLANG_REVISION=${SGLANG_REVISION:-}" \
    --build-arg "LAB_VERSION=$VERSION" --build-arg "SOURCE_HASH=$hash" -t "$SGLANG" \
    -t nightly-lab/sglang:latest
  remove_if_dangling "$old_id"
}

require_engine() {
  engine_up || die "no Docker engine answers: run  docker/ensure-engine.sh  (or make setup)"
}

case ${1:-all} in
  hash) source_hash "${2:-docker/reference.Dockerfile}" ;;
  base) require_engine && build_base ;;
  host-empty) require_engine && build_host_empty ;;
  wheelhouse) build_wheelhouse ;;
  reference) require_engine && build_reference ;;
  sglang) require_engine && build_sglang ;;
  all)
    require_engine
    build_base
    build_host_empty
    build_reference
    build_sglang
    ;;
  *) die "usage: docker/build-images.sh [all|base|host-empty|wheelhouse|reference|sglang|hash]" ;;
esac
