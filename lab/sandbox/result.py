"""What a result says about why: the telling line of a log, the failed tests of a JUnit file and
the server's own timings from its perf dumps, written onto a FrameworkResult."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lab import e2e, perfdump
from lab.contract import FrameworkResult, Outcome, Phase

_TELLING = re.compile(r"\b(error|exception|fatal|panic|killed|abort(ed)?)\b", re.IGNORECASE)


def last_line(lines: list[str]) -> str:
    return next((ln for ln in reversed(lines) if ln.strip()), "")


def telling_line(lines: list[str]) -> str:
    """The line that says why a process died: the exception line of the last traceback, else
    the last line naming an error, exception or fatal condition, else the last line."""
    start = max((i for i, ln in enumerate(lines) if ln.startswith("Traceback (")), default=None)
    if start is not None:
        for ln in lines[start + 1 :]:
            if ln.strip() and not ln[0].isspace() and not ln.startswith("Traceback ("):
                return ln.strip()
    hit = next((ln for ln in reversed(lines) if _TELLING.search(ln)), None)
    return hit.strip() if hit else last_line(lines).strip()


def record_test_failures(res: FrameworkResult, junit: Path) -> None:
    """A test whose own assertions failed is `test_failed`, naming them (not `crashed`)."""
    failed = e2e.failed_tests(junit)
    if not failed:
        return
    res.failed_tests = [name for name, _ in failed]
    res.outcome, res.phase = Outcome.test_failed, Phase.measure
    names = ", ".join(res.failed_tests[:5]) + (" …" if len(failed) > 5 else "")
    res.reason = f"{len(failed)} test(s) failed: {names}: {failed[0][1]}"


class PerfDumps:
    """The perf dumps of one framework's measured requests. The first missing one is waited for
    up to the bound; after a miss the next are only looked at, so a server that stopped writing
    them costs the bound once, not per request; each miss is looked at again at the end (a late
    dump still counts) and the misses make one note."""

    def __init__(self, bound_s: float = perfdump.DUMP_WAIT_S) -> None:
        self.bound_s = bound_s
        self.dumps: list[tuple[Path, dict[str, Any] | None, str]] = []

    def look(self, path: Path) -> None:
        missed = any(d is None for _, d, _ in self.dumps)
        dump, why = perfdump.wait_for_dump(path, 0.0 if missed else self.bound_s)
        self.dumps.append((path, dump, why))

    def record(self, res: FrameworkResult) -> None:
        found: list[dict[str, Any]] = []
        first_miss = ""
        for path, dump, why in self.dumps:
            if dump is None:
                dump, _ = perfdump.parse_dump(path)
            if dump is not None:
                found.append(dump)
            else:
                res.missing_perf_dumps += 1
                first_miss = first_miss or f"{path.name}: {why}"
        record_server_timings(res, found, first_miss)


def record_server_timings(
    res: FrameworkResult, perfs: list[dict[str, Any]], first_miss: str = ""
) -> None:
    """Server-side latency and stage medians from the perf dumps the server wrote, as sglang's
    nightly summarizes them."""
    summary = perfdump.summarize(perfs)
    res.server_latency_samples_s = summary.get("server_latency_samples_s", [])
    res.server_latency_s = summary.get("server_latency_s")
    res.server_stage_medians_ms = summary.get("server_stage_medians_ms")
    res.median_denoise_step_ms = summary.get("median_denoise_step_ms")
    if res.missing_perf_dumps:
        res.notes.append(
            f"{res.missing_perf_dumps}/{res.measurement_count} server perf dump(s) missing or "
            "unreadable: server timings cover the rest"
            + (f" (first: {first_miss})" if first_miss else "")
        )
