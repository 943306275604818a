"""Regression detection: this run's median latency against the comparable earlier runs.

A case and framework is `regressed` when its median is more than `threshold_pct` above the median
of the medians of its last `window` comparable runs, `improved` when more than that below.
Comparable: same methodology, warmup count, measurement repeats, GPU model, emulated VRAM and
degrade rung (a run on an offload rung is slower by design, not a regression), and a measured
latency (passed or degraded). Call it before `record_run` stores this run."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path

from lab.contract import Outcome
from lab.results.history import HistoryRow, history_rows, normalize_timestamp
from lab.results.model import CaseResult, RegressionFinding, RunResults, spread_pct

REGRESSED = "regressed"
IMPROVED = "improved"
UNCHANGED = "unchanged"


def _same_vram(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-6)


def comparable(row: HistoryRow, results: RunResults, case: CaseResult) -> bool:
    """Whether an earlier row may serve as a baseline for this run's case."""
    return (
        row.measured
        and row.run_id != results.run_id
        and row.methodology == results.methodology
        and row.warmup_requests == results.warmup_requests
        and row.measurement_repeats == results.measurement_repeats
        and row.gpu_model == results.gpu_model
        and _same_vram(row.vram_gib, case.vram_gib)
        and row.degraded_rung == case.degraded_rung
    )


def _secs(v: float) -> str:
    return f"{v:#.3g}".rstrip(".")  # 3 significant digits, trailing zeros kept: 2.00, 12.3


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def detect(
    history: str | os.PathLike[str] | Sequence[HistoryRow],
    results: RunResults,
    threshold_pct: float = 5.0,
    window: int = 5,
) -> list[RegressionFinding]:
    """Set `regression`, `regression_detail` and `regressions` on every case of `results`.

    `history` is the database path or rows already read. Returns every finding, unchanged ones
    included; a case without comparable history gets `regression = None`."""
    if isinstance(history, str | os.PathLike):
        rows = history_rows(Path(history), [c.case_id for c in results.cases])
    else:
        rows = list(history)
    now = normalize_timestamp(results.timestamp)
    earlier = sorted((r for r in rows if r.timestamp < now), key=lambda r: r.timestamp)

    findings: list[RegressionFinding] = []
    for case in results.cases:
        case.regression, case.regression_detail, case.regressions = None, None, []
        if case.outcome not in (Outcome.passed, Outcome.degraded):
            continue
        for fr in case.framework_results():
            if fr.latency_s is None:
                continue
            base = [
                r.latency_s
                for r in earlier
                if r.case_id == case.case_id
                and r.framework == fr.framework
                and r.latency_s is not None
                and comparable(r, results, case)
            ][-window:]
            if not base:
                continue
            median = statistics.median(base)
            if median <= 0:
                continue
            delta = 100.0 * (fr.latency_s - median) / median
            verdict = UNCHANGED
            if delta > threshold_pct:
                verdict = REGRESSED
            elif delta < -threshold_pct:
                verdict = IMPROVED
            spread = spread_pct(base)
            detail = f"{delta:+.1f} % vs median {_secs(median)} s of {_plural(len(base), 'run')}"
            if spread is not None:
                detail += f" (spread {spread:.1f} %)"
            case.regressions.append(
                RegressionFinding(
                    framework=fr.framework,
                    verdict=verdict,
                    latency_s=fr.latency_s,
                    baseline_median_s=median,
                    baseline_runs=len(base),
                    baseline_spread_pct=spread,
                    delta_pct=round(delta, 2),
                    detail=detail,
                )
            )
        findings += case.regressions
        verdicts = {f.verdict for f in case.regressions}
        # One framework slower is a regression of the case even if another got faster.
        case.regression = (
            REGRESSED if REGRESSED in verdicts else (IMPROVED if IMPROVED in verdicts else None)
        )
        flagged = [f for f in case.regressions if f.verdict != UNCHANGED]
        if flagged:
            case.regression_detail = "; ".join(f"{f.framework}: {f.detail}" for f in flagged)
    return findings
