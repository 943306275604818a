"""The loop every real-parser checker shares (check_sglang.py, check_vllm.py). It runs inside a
parser environment (build/parsers/<package>, docker/parsers/build.sh), never inside lab.

Reads a JSON list of items from stdin, each with an "argv" (a whole server command line, as the
lab starts it) and any other fields (case, rung, ...), and writes one JSON line per item to
stdout: the item's fields plus "verdict" and "message":
  accepted    the real parser took the line, and the package's checks after it passed
  rejected    the package refused it before loading anything: argparse's exit (unknown flag,
              bad value or choice), or a check of the parsed values that raises ValueError
              (e.g. a parallelism the model's pipeline does not support); "message" is its
              error line, e.g. "unrecognized arguments: --x"
  unverified  the parser took the line, then a later step of the package failed in another way
              that a machine without the model's files cannot avoid (the checker says which);
              "message" names the exception. Not a rejection; the test lists these lines.
  error       the check itself failed (e.g. a line that is not this package's); the lab treats
              it as a failure, never as accepted
One process checks every line: the package is imported once (that takes seconds).

With `--options` it instead writes one JSON object: lab framework → every option string its
real parser has (what lab/frameworks/llm_flag_lists.py is generated from)."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Callable
from contextlib import redirect_stderr
from typing import Any

Check = Callable[[list[str]], None]  # raises SystemExit when the parser rejects argv
Options = Callable[[], dict[str, argparse.ArgumentParser]]  # lab framework → its real parser


class Unverified(Exception):
    """Raised by a check: the parser accepted the line; a later step could not run here."""


def refused(package_cli: str, e: Exception) -> SystemExit:
    """A check that raises where argparse exits: the CLI ends on it too, before loading."""
    return SystemExit(f"{package_cli}: error: {e}")


def parser_message(exit_code: object, stderr: str) -> str:
    """argparse prints usage then `PROG: error: MESSAGE` and exits 2; some checks exit with the
    message itself as the code."""
    if isinstance(exit_code, str):
        return exit_code.strip()
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    return (errors or lines or [f"exit code {exit_code}"])[-1]


def verdict(check: Check, argv: list[str]) -> tuple[str, str]:
    captured = io.StringIO()
    try:
        with redirect_stderr(captured):
            check(argv)
    except SystemExit as e:
        if e.code in (0, None):  # e.g. --help: printed and left, which is no verdict
            return "error", f"the parser exited 0 without parsing: {captured.getvalue()[-300:]}"
        return "rejected", parser_message(e.code, captured.getvalue())
    except Unverified as e:
        return "unverified", str(e)
    except Exception as e:  # any other failure is reported, not raised
        return "error", f"{type(e).__name__}: {e}"
    return "accepted", ""


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """The long options a parser accepts, --help aside (no server is started by it)."""
    return sorted(o for o in parser._option_string_actions if o.startswith("--") and o != "--help")


def main(check: Check, parsers: Options) -> int:
    # Answers get their own copy of stdout; whatever the package prints (at any level, C
    # included) goes to stderr, so it cannot break the JSON.
    with os.fdopen(os.dup(1), "w") as out:
        os.dup2(2, 1)
        if sys.argv[1:] == ["--options"]:
            out.write(json.dumps({fw: option_strings(p) for fw, p in parsers().items()}) + "\n")
            return 0
        items: list[dict[str, Any]] = json.load(sys.stdin)
        for item in items:
            v, message = verdict(check, [str(a) for a in item["argv"]])
            out.write(json.dumps({**item, "verdict": v, "message": message}) + "\n")
            out.flush()
    return 0
