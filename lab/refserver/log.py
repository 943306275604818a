"""The server's log: short plain lines on stderr, flushed at once so a watcher sees them live."""

from __future__ import annotations

import contextlib
import sys
import time

_prefix = "refserver"


def set_rank(rank: int) -> None:
    """Mark the lines of a cfg-parallel worker so both ranks can share one log."""
    global _prefix
    _prefix = "refserver" if rank == 0 else f"refserver r{rank}"


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    sys.stderr.write(f"[{_prefix} {stamp}] {message}\n")
    sys.stderr.flush()


def flush_all() -> None:
    """Flush both streams before the process ends, so the last lines (a traceback) are not lost."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
