"""Triage across nights: is a failure new or has it failed for a week, is it fixed.

`status_changes` sets `status_change` and `failing_since` on every case from the comparable
earlier nights of `runs/history.sqlite` (comparable as regression detection defines it). Call it
before `record_run` stores this run."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from lab.errors import LabError
from lab.results.history import HistoryRow, history_rows, normalize_timestamp
from lab.results.model import CaseResult, FailingSince, RunResults, status_rank
from lab.results.regression import comparable
from lab.results.report_common import bucket

NEW_FAILURE = "new_failure"
STILL_FAILING = "still_failing"
FIXED = "fixed"
STILL_PASSING = "still_passing"
FIRST_RUN = "first_run"
_JUDGED = ("passed", "degraded", "failed")  # a skipped or interrupted night says nothing


@dataclasses.dataclass(frozen=True)
class Night:
    run_id: str
    timestamp: str
    commit_sha: str | None
    failed: bool


def _comparable_night(row: HistoryRow, results: RunResults, case: CaseResult) -> bool:
    # `comparable` asks for a measured row on the same rung (a latency baseline); a night that
    # failed is a baseline for the outcome all the same, so judge it as if it had been measured.
    as_measured = dataclasses.replace(
        row, outcome="passed", latency_s=row.latency_s or 1.0, degraded_rung=case.degraded_rung
    )
    return comparable(as_measured, results, case)


def nights(rows: Sequence[HistoryRow], results: RunResults, case: CaseResult) -> list[Night]:
    """The case's comparable earlier nights that passed or failed, oldest first."""
    now = normalize_timestamp(results.timestamp)
    by_run: dict[str, list[HistoryRow]] = {}
    for r in rows:
        if r.case_id == case.case_id and r.timestamp < now and r.run_id != results.run_id:
            by_run.setdefault(r.run_id, []).append(r)
    out = []
    for run_rows in by_run.values():
        kinds = {bucket(r.outcome) for r in run_rows}
        if not kinds & set(_JUDGED) or not any(
            _comparable_night(r, results, case) for r in run_rows
        ):
            continue
        first = run_rows[0]
        out.append(Night(first.run_id, first.timestamp, first.commit_sha, "failed" in kinds))
    return sorted(out, key=lambda n: (n.timestamp, n.run_id))


def read_history(
    db_path: str | os.PathLike[str], results: RunResults
) -> tuple[list[HistoryRow], LabError | None]:
    """This run's cases' history rows, or none and the reason (corrupt, unreadable)."""
    try:
        return history_rows(Path(db_path), [c.case_id for c in results.cases]), None
    except LabError as e:
        return [], e


def status_changes(
    history: str | os.PathLike[str] | Sequence[HistoryRow],
    results: RunResults,
    problem: LabError | None = None,
) -> str | None:
    """Set `status_change`, `failing_since` and `status_note` on every case of `results`.

    `history` is the database path or rows already read; `problem`, why rows could not be read.
    A history that cannot be read makes every case `first_run` with a note, never an error; the
    note is returned too (None when all went well)."""
    if isinstance(history, str | os.PathLike):
        rows, problem = read_history(history, results)
    else:
        rows = list(history)
    note = f"no history to compare with: {problem}" if problem else None
    for case in results.cases:
        case.status_change, case.failing_since, case.status_note = None, None, note
        now = bucket(case.outcome)
        if now not in _JUDGED:
            continue
        past = nights(rows, results, case)
        failing = now == "failed"
        if not past:
            case.status_change = FIRST_RUN
            if failing:  # the streak starts tonight
                case.failing_since = _since(results.run_id, results.timestamp, results, 1)
            continue
        last_failed = past[-1].failed
        if not failing:
            case.status_change = FIXED if last_failed else STILL_PASSING
            continue
        if not last_failed:
            case.status_change = NEW_FAILURE
            case.failing_since = _since(results.run_id, results.timestamp, results, 1)
            continue
        streak = _tail_streak(past)
        first = streak[0]
        case.status_change = STILL_FAILING
        case.failing_since = FailingSince(
            run_id=first.run_id,
            timestamp=first.timestamp,
            commit_sha=first.commit_sha,
            streak=len(streak) + 1,
        )
    return note


def _tail_streak(past: list[Night]) -> list[Night]:
    """The failing nights at the end of `past`, oldest first."""
    out: list[Night] = []
    for n in reversed(past):
        if not n.failed:
            break
        out.append(n)
    return out[::-1]


def _since(run_id: str, timestamp: str, results: RunResults, streak: int) -> FailingSince:
    return FailingSince(
        run_id=run_id,
        timestamp=normalize_timestamp(timestamp),
        commit_sha=results.commit_sha,
        streak=streak,
    )


def by_status(cases: Sequence[CaseResult]) -> list[CaseResult]:
    """New failures first, then what still fails, what got fixed, the rest (order kept)."""
    return sorted(cases, key=lambda c: status_rank(c.status_change))


def describe_status(case: CaseResult) -> str:
    """`still failing since 20261121T… (commit abc123def456, 3 nights)` and the like."""
    s = case.status_change
    if s is None:
        return ""
    text = s.replace("_", " ")
    fs = case.failing_since
    if s == STILL_FAILING and fs is not None:
        commit = f"commit {fs.commit_sha[:12]}, " if fs.commit_sha else ""
        text += f" since {fs.run_id} ({fs.timestamp[:16].replace('T', ' ')}, {commit}"
        text += f"{fs.streak} nights)"
    return text
