"""What the user sees while a nightly runs: a live table in a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lab.results.model import CaseResult
from lab.results.report_common import one_line

# A long OOM line is shortened (at a word, with an ellipsis) to what a few wrapped lines hold.
REASON_CHARS = 160

STYLE = {
    "passed": "green",
    "degraded": "yellow",
    "skipped": "dim",
    "running": "cyan",
    "interrupted": "magenta",
}


def outcome_style(outcome: str) -> str:
    return STYLE.get(outcome, "red")


def _seconds(since: float) -> str:
    # Clamped: a row drawn in the same instant it started must not read "-0s".
    return f"{max(0.0, time.time() - since):.0f}s"


class Progress:
    def __init__(self, live: bool | None = None) -> None:
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.live_mode = sys.stderr.isatty() if live is None else live
        self._rows: dict[str, dict[str, str]] = {}
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()
        self._live: Live | None = None

    def __enter__(self) -> Progress:
        if self.live_mode:
            self._live = Live(
                self._table(),
                console=self.console,
                refresh_per_second=4,
                get_renderable=self._table,
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def _table(self) -> Table:
        # No vertical rules: at 80 columns the reason keeps room to wrap at word boundaries.
        t = Table(title="nightly", box=box.SIMPLE_HEAD, padding=0, show_edge=False)
        t.add_column("case", no_wrap=True)
        t.add_column("framework", overflow="ellipsis", max_width=12)
        t.add_column("#", no_wrap=True)
        t.add_column("rung", overflow="ellipsis", max_width=12)
        for col in ("time", "outcome"):
            t.add_column(col, no_wrap=True)
        # Wide enough for the first word of an OOM line ("torch.OutOfMemoryError:").
        t.add_column("reason", overflow="fold", ratio=1, min_width=24)
        with self._lock:
            for cid, row in self._rows.items():
                started = self._started.get(cid)
                elapsed = row.get("elapsed") or (_seconds(started) if started else "-")
                st = outcome_style(row["outcome"])
                t.add_row(
                    cid,
                    row["framework"],
                    row["attempt"],
                    row["rung"],
                    elapsed,
                    f"[{st}]{row['outcome']}[/]",
                    Text(row.get("reason", "")),
                )
        return t

    def _print(self, text: str) -> None:
        if self._live is None:
            self.console.print(text)

    def attempt_started(self, case_id: str, attempt: int, rung: str, gpus: list[int]) -> None:
        with self._lock:
            self._started.setdefault(case_id, time.time())
            row = self._rows.setdefault(case_id, {"framework": "", "outcome": "running"})
            row.update(attempt=str(attempt), rung=rung, outcome="running")
        where = f"GPUs {','.join(map(str, gpus))}" if gpus else "CPU"
        self._print(f"[cyan]start[/] {case_id} attempt {attempt} ({rung}) on {where}")

    def note(self, case_id: str, message: str) -> None:
        if self._live is not None:
            self._live.console.print(f"[yellow]{message}[/]")
        else:
            self.console.print(f"[yellow]{message}[/]")

    def case_done(self, r: CaseResult) -> None:
        o = str(r.outcome)
        with self._lock:
            row = self._rows.setdefault(r.case_id, {})
            row.update(
                framework=",".join(r.frameworks),
                attempt=str(len(r.attempts)) if r.attempts else "-",
                rung=r.degraded_rung or (r.attempts[-1].rung if r.attempts else "-"),
                outcome=o,
                reason=one_line(r.reason, REASON_CHARS) if o != "passed" else "",
            )
            if r.case_id in self._started:
                row["elapsed"] = _seconds(self._started[r.case_id])
        detail = f" — {r.reason}" if r.reason and o != "passed" else ""
        self._print(f"[{outcome_style(o)}]{o}[/] {r.case_id}{detail}")


class LogFollower:
    """`-v`: stream every server log of a run to the terminal, each line prefixed with its case."""

    def __init__(self, log_dir: Path, console: Console, interval_s: float = 0.2) -> None:
        self.log_dir, self.console, self.interval_s = log_dir, console, interval_s
        self._offsets: dict[Path, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-follower", daemon=True)

    def __enter__(self) -> LogFollower:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.poll()  # the last lines

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def poll(self) -> None:
        for path in sorted(self.log_dir.glob("*.log")):
            start = self._offsets.get(path, 0)
            try:
                with path.open("rb") as f:
                    f.seek(start)
                    data = f.read()
            except OSError:
                continue
            cut = data.rfind(b"\n") + 1
            self._offsets[path] = start + cut
            prefix = path.stem.split("__")[0]
            for line in data[:cut].decode("utf-8", "replace").splitlines():
                self.console.print(f"[dim]{prefix}[/] {line}", markup=True, highlight=False)
