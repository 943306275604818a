# shellcheck shell=bash
# Helpers shared by the set-up scripts; sourced, not run. Callers cd to the repository root first.

say() { printf '[setup] %s\n' "$*"; }
warn() { printf '[setup] WARNING: %s\n' "$*" >&2; }
die() {
  printf '[setup] ERROR: %s\n' "$*" >&2
  exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }
is_root() { [[ $(id -u) -eq 0 ]]; }

# A hung engine must not hang the set-up, hence the timeout.
engine_up() { timeout 20 docker info >/dev/null 2>&1; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

lab_version() { sed -n "s/^__version__ *= *[\"']\([^\"']*\)[\"'].*/\1/p" lab/__init__.py; }

# Seconds since the epoch with a fraction, for the timings we print.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
