"""Triage across nights: is a failure new or has it failed for a week, is it fixed.

`status_changes` sets `status_change` and `failing_since` on every case from the comparable
earlier nights of `runs/history.sqlite` (comparable as regression detection defines it). Call it
before `record_run` stores this run.

Small parts (status changes, failure signatures, flake rates, fleet fit) that all answer "what
should a reader do about this failure"; what a team accepted (known failures, quarantine, flake
budget) is lab/results/gating.py."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from lab.config import GpuClass
from lab.contract import AttemptResult, Outcome
from lab.errors import LabError
from lab.host.ladder import confirmed_pair
from lab.redact import redact_text
from lab.results.gating import (
    KnownEntry,
    describe_flake_budget,
    flake_budget_exceeded,
    match_known,
    quarantined,
)
from lab.results.history import HistoryRow, history_rows, normalize_timestamp
from lab.results.model import (
    CaseResult,
    FailingSince,
    FlakeRate,
    FleetFit,
    RunResults,
    status_rank,
)
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
    flake_rates(rows, results)
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


# ---- failure signatures ------------------------------------------------------------------------

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_PATH = re.compile(r"(?<![\w<])(?:~|\.{1,2})?(?:/[\w.@%+:=,-]+)+/?")
_ADDR = re.compile(r"\b0x[0-9a-fA-F]+\b")
_HEX = re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b")
_PID = re.compile(r"\b(pid|PID|process|worker)(\s*[=:#]?\s*)\d+")
_NUM = re.compile(r"(?<![A-Za-z_<])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
SIGNATURE_CHARS = 300


def normalize_failure(text: str) -> str:
    """The failure line without what differs between two runs of the same problem: numbers,
    sizes, addresses, PIDs, paths, hex ids. Secrets are redacted before anything else."""
    text = " ".join(redact_text(text).split())
    text = _UUID.sub("<id>", text)
    text = _PATH.sub("<path>", text)
    text = _ADDR.sub("<addr>", text)
    text = _HEX.sub("<id>", text)
    text = _PID.sub(lambda m: f"{m.group(1)}{m.group(2)}<pid>", text)
    text = _NUM.sub("<N>", text)
    return text[:SIGNATURE_CHARS]


def signature(outcome: str, phase: str | None, reason: str) -> tuple[str, str]:
    """(`<outcome> in <phase>: <normalized line>`, its 10-hex-digit hash)."""
    sig = f"{outcome} in {phase or 'setup'}: {normalize_failure(reason)}"
    return sig, hashlib.sha256(sig.encode()).hexdigest()[:10]


def _sign(attempt: AttemptResult) -> None:
    if attempt.outcome in (Outcome.passed, Outcome.skipped):
        attempt.failure_signature = attempt.failure_signature_id = None
        return
    phase = str(attempt.phase) if attempt.phase else None
    attempt.failure_signature, attempt.failure_signature_id = signature(
        str(attempt.outcome), phase, attempt.reason
    )


def sign_failures(results: RunResults, known: Sequence[KnownEntry] = ()) -> None:
    """Signatures on every failed attempt and case, what a re-run confirmed, known failures."""
    for case in results.cases:
        case.failure_signature = case.failure_signature_id = None
        case.confirmation = case.known_failure = None
        for a in case.attempts:
            _sign(a)
        if bucket(case.outcome) != "failed":
            continue
        pair = confirmed_pair(case.attempts)
        failure = pair[0] if case.outcome is Outcome.flaky and pair else case.final
        if failure is not None and failure.failure_signature:
            case.failure_signature = failure.failure_signature
            case.failure_signature_id = failure.failure_signature_id
        else:
            phase = str(case.phase) if case.phase else None
            case.failure_signature, case.failure_signature_id = signature(
                str(case.outcome), phase, case.reason
            )
        if pair is not None:
            first, rerun = pair
            if case.outcome is Outcome.flaky:
                case.confirmation = (
                    f"flaky: attempt {first.attempt} ended {first.outcome}, its identical "
                    f"re-run (attempt {rerun.attempt}) passed"
                )
            else:
                same = first.failure_signature_id == rerun.failure_signature_id
                case.confirmation = (
                    f"confirmed: the identical re-run (attempt {rerun.attempt}) failed again, "
                    + (
                        "same signature"
                        if same
                        else f"another signature ({first.failure_signature_id} then "
                        f"{rerun.failure_signature_id})"
                    )
                )
        case.known_failure = match_known(case, known)


def signature_groups(results: RunResults) -> list[tuple[str, str, list[CaseResult]]]:
    """(signature id, signature, its failing cases), the most cases first."""
    groups: dict[str, list[CaseResult]] = {}
    for c in results.cases:
        if c.failure_signature_id:
            groups.setdefault(c.failure_signature_id, []).append(c)
    out = [(k, v[0].failure_signature or "", v) for k, v in groups.items()]
    return sorted(out, key=lambda g: -len(g[2]))


def describe_group(signature_text: str, cases: Sequence[CaseResult]) -> str:
    """`4 cases: `torch.OutOfMemoryError: … <N> GiB` in warmup`."""
    outcome_phase, _, line = signature_text.partition(": ")
    n = len(cases)
    return f"{n} case{'' if n == 1 else 's'}: `{line}` ({outcome_phase})"


def gating_failures(results: RunResults, *, new_only: bool, allow_flaky: bool) -> list[CaseResult]:
    """The failed cases that fail the run: all of them but those a quarantine holds, less flaky
    ones with `allow_flaky`; with `new_only`, only those neither known nor failing since an
    earlier night."""
    out = []
    for c in results.failed:
        if quarantined(c) or (allow_flaky and c.outcome is Outcome.flaky):
            continue
        if new_only and (c.known_failure is not None or c.status_change == STILL_FAILING):
            continue
        out.append(c)
    return out


# ---- flake rate --------------------------------------------------------------------------------

FLAKE_WINDOW = 14


def flake_rates(rows: Sequence[HistoryRow], results: RunResults) -> None:
    """`flake_rate` on every case: of its last FLAKE_WINDOW recorded nights (its flake budget's
    window where it has one), tonight included, how many ended flaky."""
    for case in results.cases:
        window = case.flake_budget.window if case.flake_budget else FLAKE_WINDOW
        runs: dict[str, tuple[str, bool]] = {}
        for r in rows:
            if r.case_id == case.case_id and r.run_id != results.run_id:
                ts, flaky = runs.get(r.run_id, (r.timestamp, False))
                runs[r.run_id] = (ts, flaky or r.outcome == str(Outcome.flaky))
        earlier = sorted(runs.values())
        last = earlier[max(0, len(earlier) - (window - 1)) :]
        flaky_nights = sum(f for _, f in last) + (case.outcome is Outcome.flaky)
        case.flake_rate = FlakeRate(flaky=flaky_nights, nights=len(last) + 1)


def triage_notes(case: CaseResult) -> list[str]:
    """What the reports say beside a failing case: status across nights, what its re-run
    showed, its known issue, its quarantine, how often it flaked and whether over its budget."""
    out = [describe_status(case)] if case.status_change else []
    if case.confirmation:
        out.append(case.confirmation)
    if case.known_failure:
        k = case.known_failure
        out.append(f"known: {k.issue}" + (f" ({k.note})" if k.note else ""))
    if case.quarantine:
        out.append(str(case.quarantine))
    if case.flake_rate and case.flake_rate.flaky:
        out.append(str(case.flake_rate))
    if flake_budget_exceeded(case):
        out.append(describe_flake_budget(case))
    return out


# ---- fleet fit ---------------------------------------------------------------------------------

TIGHT_HEADROOM_PCT = 10.0


def peak_per_gpu_gib(case: CaseResult) -> float | None:
    """The largest peak of the case's frameworks, per GPU it ran on, in GiB."""
    final = case.final
    peaks = [
        fr.telemetry.peak_gpu_memory_mib
        for fr in case.framework_results()
        if fr.telemetry.peak_gpu_memory_mib is not None
    ]
    if not peaks or final is None:
        return None
    return max(peaks) / max(1, len(final.gpus)) / 1024


def fit_verdict(needs_gib: float, vram_gib: float) -> tuple[str, float]:
    """("fits" | "tight" | "does not fit", headroom in % of the card)."""
    headroom = 100.0 * (vram_gib - needs_gib) / vram_gib
    if needs_gib > vram_gib:
        return "does not fit", headroom
    return ("tight" if headroom < TIGHT_HEADROOM_PCT else "fits"), headroom


def fleet_fit(results: RunResults, fleet: Sequence[GpuClass]) -> None:
    """`fleet_fit` on every case that ran, one entry per GPU class of the suite's fleet."""
    for case in results.cases:
        case.fleet_fit = []
        if not fleet or not case.attempts:
            continue
        needs = peak_per_gpu_gib(case)
        for g in fleet:
            if needs is None:
                case.fleet_fit.append(
                    FleetFit(
                        gpu_class=g.name, vram_gib=g.vram_gib, needs_gib=None, verdict="unknown"
                    )
                )
                continue
            verdict, headroom = fit_verdict(needs, g.vram_gib)
            case.fleet_fit.append(
                FleetFit(
                    gpu_class=g.name,
                    vram_gib=g.vram_gib,
                    needs_gib=round(needs, 3),
                    verdict=verdict,
                    headroom_pct=round(headroom, 1),
                )
            )
