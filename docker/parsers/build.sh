#!/usr/bin/env bash
# `make parsers`: the environments in which sglang's and vLLM's own argument parsers run on CPU
# (tests/integration/test_real_parsers.py sends them every command line the lab generates).
#   build/parsers/sglang   sglang + docker/parsers/sglang-requirements.txt + the import stubs
#   build/parsers/vllm     vllm + docker/parsers/vllm-requirements.txt
# Each is a `pip install --no-deps --target` folder that the lab's .venv python runs with on
# PYTHONPATH (its torch and the rest are reused: no second torch). The folder is built once per
# key (the requirement list, the stubs, this script, the interpreter) in the cache outside the
# clone, so a fresh clone on the same machine links it in a second:
#   ${LAB_PARSERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nightly-lab/parsers}/<package>-<key>
# Usage: docker/parsers/build.sh [sglang] [vllm]   (no argument: both)
# Exit: 0 built or up to date; 4 PyPI cannot be reached (nothing changed); 1 any other failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=docker/lib.sh
source docker/lib.sh

EXIT_NO_NETWORK=4
PY=${VENV:-.venv}/bin/python
HERE=docker/parsers
CACHE=${LAB_PARSERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nightly-lab/parsers}
INDEX=${PIP_INDEX_URL:-https://pypi.org/simple/}
KEEP=2 # cached builds kept per package (the newest), so pin changes do not pile up GBs

key_of() {
  local pkg=$1
  {
    cat "$HERE/$pkg-requirements.txt" "$0"
    [[ $pkg == sglang ]] && find "$HERE/stubs" -name '*.py' -print0 | sort -z | xargs -0 cat
    "$PY" -c 'import sys; print(sys.version)'
  } | sha256sum | cut -c1-16
}

index_reachable() {
  "$PY" - "$INDEX" <<'EOF'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=15).close()
except Exception as e:
    print(f"{sys.argv[1]}: {e}", file=sys.stderr)
    sys.exit(1)
EOF
}

build_one() {
  local pkg=$1 key final tmp log
  key=$(key_of "$pkg")
  final=$CACHE/$pkg-$key
  mkdir -p build/parsers "$CACHE"
  if [[ ! -f $final/.lab-parsers-key ]]; then
    tmp=$final.tmp.$$
    log=build/parsers/$pkg-pip.log
    rm -rf "$tmp"
    say "parsers: building $pkg ($key) in $CACHE (log: $log)"
    if ! "$PY" -m pip install --no-deps --only-binary=:all: --target "$tmp" \
      -r "$HERE/$pkg-requirements.txt" >"$log" 2>&1; then
      rm -rf "$tmp"
      if ! index_reachable; then
        printf '[setup] ERROR: parsers: cannot reach %s to install %s (no network?); the real-parser test needs `make parsers` once online\n' \
          "$INDEX" "$pkg" >&2
        exit "$EXIT_NO_NETWORK"
      fi
      tail -n 20 "$log" >&2
      die "parsers: pip could not install $HERE/$pkg-requirements.txt (full log: $log)"
    fi
    [[ $pkg == sglang ]] && cp -r "$HERE"/stubs/* "$tmp"/
    echo "$key" >"$tmp/.lab-parsers-key"
    # another build of the same key may have finished first: keep that one
    mv -T "$tmp" "$final" 2>/dev/null || rm -rf "$tmp"
  fi
  # a folder there (not our link) is an older layout of build/: replaced
  [[ -L build/parsers/$pkg || ! -e build/parsers/$pkg ]] || rm -rf "build/parsers/$pkg"
  ln -sfn "$final" "build/parsers/$pkg"
  # older builds of this package beyond the newest $KEEP
  find "$CACHE" -maxdepth 1 -name "$pkg-*" ! -name '*.tmp.*' -printf '%T@ %p\n' | sort -rn |
    tail -n +$((KEEP + 1)) | cut -d' ' -f2- | xargs -r rm -rf
  say "parsers: $pkg ready, build/parsers/$pkg -> $final ($(du -sh "$final/" | cut -f1))"
}

[[ -x $PY ]] || die "no $PY: run make setup (or make venv) first"
pkgs=("$@")
((${#pkgs[@]})) || pkgs=(sglang vllm)
t_all=$(now)
for pkg in "${pkgs[@]}"; do
  [[ -f $HERE/$pkg-requirements.txt ]] || die "unknown parser environment '$pkg' (sglang, vllm)"
  t0=$(now)
  build_one "$pkg"
  say "parsers: $pkg: $(elapsed "$t0")"
done
say "parsers done in $(elapsed "$t_all")"
