"""`lab`: the command line. Errors a user can meet print one paragraph and exit 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lab import __version__
from lab.errors import LabError

# What `lab nightly`, `repro`, `replay` and `selftest` exit with (also in the README).
EXIT_CODES = """exit codes:
  0    every case passed (degraded and skipped count as passed unless a flag says not; flaky
       only with --allow-flaky)
  1    a case failed, or was flaky (without --allow-flaky), degraded (--fail-on-degraded),
       skipped (--fail-on-skipped) or over its flake budget (--fail-on-flake-budget), unless
       quarantine.json holds it; stderr names the cases
  2    bad input: a config, an option, a repro that cannot run here, a history it cannot use;
       nothing was started
  130  interrupted (Ctrl-C); 143: terminated (SIGTERM)"""


def _cmd_case(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from lab.contract import EXIT_BAD_SPEC, load_spec
    from lab.sandbox.case import run_attempt

    try:
        spec = load_spec(args.spec)
    except (OSError, ValueError, ValidationError) as e:
        print(f"lab case: bad attempt spec {args.spec}: {e}", file=sys.stderr)
        return EXIT_BAD_SPEC
    if args.shell:
        from pathlib import Path

        from lab.sandbox.shell import open_shell

        return open_shell(spec, Path(args.spec).resolve())
    result = run_attempt(spec, echo=args.verbose)
    print(
        f"lab case: {spec.case.id} attempt {spec.attempt} ({spec.rung}): {result.outcome}"
        + (f" in {result.phase}: {result.reason}" if result.reason else ""),
        file=sys.stderr,
    )
    return result.exit_code


def build_parser(host: bool = True) -> argparse.ArgumentParser:
    """The whole command line; host=False: only `lab case`, so the sandbox loads no host module."""
    p = argparse.ArgumentParser(
        prog="lab",
        description="Nightly Lab: reproducible GPU serving nightlies",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"lab {__version__}", help="and exit")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("case", help="sandbox side: run one attempt of one case from its spec")
    s.add_argument("spec", help="the attempt's spec.json")
    s.add_argument("-v", "--verbose", action="store_true", help="echo the server's log")
    s.add_argument(
        "--shell", action="store_true", help="an interactive shell with the server command ready"
    )
    s.set_defaults(func=_cmd_case)
    if host:
        from lab.host import commands

        commands.add_host_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(host=argv[:1] != ["case"])
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LabError as e:
        print(f"lab {args.command}: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
