"""Fault injection for the lab's tests: parse REFSERVER_FAULT / --fault and act it out.

Formats (exact; the lab's tests depend on them):
  exit-startup:CODE        print "fault: exiting during startup", exit CODE before HTTP is up
  never-healthy            /liveness 200, /health 503 forever
  hang-request:N           the N-th generation request hangs forever
  fatal-line:PHASE:TEXT    print TEXT to stderr at PHASE (startup | requestN), then hang
  malformed-json:N         the N-th generation request answers 200 with a body that is not JSON
  slow-warmup:SECONDS      /health stays 503 for SECONDS more after warmup
  flood:LINES              print LINES lines (~100 chars) to stdout during startup
  exit-request:N:CODE      exit with CODE during the N-th generation request
  fail-first-starts:N:CODE the first N starts of this case exit with CODE during startup (as
                           exit-startup), later ones run normally: a flake. Starts are counted
                           in `<case>.fault-starts` beside the attempt's own folder (lab case
                           exports it as LAB_ATTEMPT_DIR), so every attempt of the case counts
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from lab.refserver.log import flush_all, log

ENV_VAR = "REFSERVER_FAULT"
KINDS = (
    "exit-startup",
    "never-healthy",
    "hang-request",
    "fatal-line",
    "malformed-json",
    "slow-warmup",
    "flood",
    "exit-request",
    "fail-first-starts",
)
ATTEMPT_DIR_ENV = "LAB_ATTEMPT_DIR"


@dataclass(frozen=True)
class Fault:
    kind: str
    request: int | None = None  # the 1-based generation request it fires on
    code: int | None = None
    phase: str | None = None  # fatal-line: "startup" or "request"
    text: str = ""
    seconds: float = 0.0
    lines: int = 0
    starts: int = 0  # fail-first-starts: how many starts fail

    def fires_on(self, request_number: int) -> bool:
        return self.request == request_number


def _positive_int(value: str, what: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _exit_code(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 255:
        raise ValueError(f"exit code must be 0..255, got {value!r}")
    return int(value)


def parse_fault(spec: str) -> Fault:
    """Parse one fault spec; ValueError with a message naming the expected format."""
    kind, _, rest = spec.partition(":")
    if kind == "exit-startup":
        return Fault(kind, code=_exit_code(rest))
    if kind == "never-healthy" and not rest:
        return Fault(kind)
    if kind in ("hang-request", "malformed-json"):
        return Fault(kind, request=_positive_int(rest, "N"))
    if kind == "slow-warmup":
        try:
            seconds = float(rest)
        except ValueError:
            seconds = -1.0
        if seconds < 0:
            raise ValueError(f"slow-warmup:SECONDS needs a number >= 0, got {rest!r}")
        return Fault(kind, seconds=seconds)
    if kind == "flood":
        return Fault(kind, lines=_positive_int(rest, "LINES"))
    if kind == "exit-request":
        n, _, code = rest.partition(":")
        return Fault(kind, request=_positive_int(n, "N"), code=_exit_code(code))
    if kind == "fail-first-starts":
        n, _, code = rest.partition(":")
        return Fault(kind, starts=_positive_int(n, "N"), code=_exit_code(code))
    if kind == "fatal-line":
        phase, sep, text = rest.partition(":")
        if not sep:
            raise ValueError("fatal-line needs PHASE:TEXT, e.g. fatal-line:startup:Some text")
        if phase == "startup":
            return Fault(kind, phase="startup", text=text)
        if phase.startswith("request"):
            number = _positive_int(phase.removeprefix("request"), "requestN")
            return Fault(kind, phase="request", request=number, text=text)
        raise ValueError(f"fatal-line PHASE must be startup or requestN, got {phase!r}")
    raise ValueError(f"unknown fault {spec!r}; one of: {', '.join(KINDS)}")


def count_start(attempt_dir: str) -> int:
    """This start's number (1, 2, …) among the starts of the attempt folder's case.

    `runs/<id>/attempts/<case>__a2` counts in `runs/<id>/attempts/<case>.fault-starts`."""
    folder = Path(attempt_dir)
    counter = folder.parent / (re.sub(r"__a\d+$", "", folder.name) + ".fault-starts")
    with open(counter, "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        n = len(f.read().split()) + 1
        f.write(f"{n}\n")
    return n


def hang_forever() -> None:
    """Block this thread for good; the process stays alive and killable."""
    threading.Event().wait()


def print_fatal_line(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def exit_now(code: int, why: str) -> NoReturn:
    log(why)
    flush_all()
    os._exit(code)


def flood_stdout(lines: int) -> None:
    """Write `lines` ~100-char lines to stdout as fast as the reader takes them."""
    filler = "x" * 80
    chunk: list[str] = []
    for i in range(lines):
        chunk.append(f"flood line {i:08d} {filler}\n")
        if len(chunk) == 1000:
            sys.stdout.write("".join(chunk))
            chunk.clear()
    sys.stdout.write("".join(chunk))
    sys.stdout.flush()
