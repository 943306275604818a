"""Regression detection: this run's median latency (and peak GPU memory) against the comparable
earlier runs of the same case and framework.

The default method ("noise", lab/results/stats.py `judge`): `regressed` / `improved` only when
the change is outside the prediction interval of the last `window` comparable nights (Student's t
on log values, two-sided `alpha`) AND at least `min_effect_pct`; `inconclusive` with fewer than
`min_history` such nights, or when a change that large is within the case's noise. Every finding
carries the case's MDE. "fixed" keeps the old rule: more than `threshold_pct` from the median.
Peak GPU memory goes through the same `judge`; only growth is flagged (`memory_regressed`).
Comparable: same methodology, warmup count, measurement repeats, GPU model, emulated VRAM and
degrade rung (a run on an offload rung is slower by design, not a regression), and a measured
latency (passed or degraded). Call it before `record_run` stores this run."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path

from lab.config import RegressionPolicy
from lab.contract import Outcome
from lab.results import stats
from lab.results.history import HistoryRow, history_rows, normalize_timestamp
from lab.results.model import (
    CaseResult,
    MemoryFinding,
    RegressionFinding,
    RunResults,
    may_be_baseline,
    spread_pct,
)

REGRESSED = stats.REGRESSED
IMPROVED = stats.IMPROVED
UNCHANGED = stats.UNCHANGED
INCONCLUSIVE = stats.INCONCLUSIVE


def _same_vram(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-6)


def comparable(row: HistoryRow, results: RunResults, case: CaseResult) -> bool:
    """Whether an earlier row may serve as a baseline for this run's case."""
    return (
        row.measured
        and may_be_baseline(row.kind, row.shared_host)
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


def fixed_rule(
    value: float, history: Sequence[float], threshold_pct: float = 5.0
) -> stats.Judgement:
    """The old rule: more than `threshold_pct` from the median of the history."""
    median = statistics.median(history)
    delta = 100.0 * (value - median) / median
    verdict = UNCHANGED
    if delta > threshold_pct:
        verdict = REGRESSED
    elif delta < -threshold_pct:
        verdict = IMPROVED
    return stats.Judgement(
        verdict, delta, median, len(history), None, None, None, f"fixed {threshold_pct:g} % line"
    )


def judge(
    value: float,
    history: Sequence[float],
    policy: RegressionPolicy,
    samples: Sequence[float] = (),
) -> stats.Judgement:
    """One value against its comparable history under the suite's policy (latency and memory)."""
    if policy.method == "fixed":
        return fixed_rule(value, history, policy.threshold_pct)
    return stats.judge(
        value,
        history,
        samples=samples,
        min_effect_pct=policy.min_effect_pct,
        alpha=policy.alpha,
        min_history=policy.min_history,
    )


def _detail(j: stats.Judgement, unit: str, fmt: str, spread: float | None) -> str:
    text = f"{j.delta_pct:+.1f} % vs median {fmt} {unit} of {_plural(j.baseline_runs, 'run')}"
    if spread is not None:
        text += f" (spread {spread:.1f} %)"
    if j.verdict == INCONCLUSIVE:
        text += f"; inconclusive: {j.why}"
    if j.mde_pct is not None:
        text += f"; MDE {j.mde_pct:.1f} %"
    return text


def detect(
    history: str | os.PathLike[str] | Sequence[HistoryRow],
    results: RunResults,
    policy: RegressionPolicy | None = None,
) -> list[RegressionFinding]:
    """Set `regression`, `regression_detail`, `regressions` and the memory verdicts on every case
    of `results`.

    `history` is the database path or rows already read. Returns every latency finding,
    unchanged and inconclusive ones included; a case without comparable history gets
    `regression = None` and no finding."""
    policy = policy or RegressionPolicy()
    if isinstance(history, str | os.PathLike):
        rows = history_rows(Path(history), [c.case_id for c in results.cases])
    else:
        rows = list(history)
    now = normalize_timestamp(results.timestamp)
    earlier = sorted((r for r in rows if r.timestamp < now), key=lambda r: r.timestamp)

    findings: list[RegressionFinding] = []
    for case in results.cases:
        case.regression, case.regression_detail, case.regressions = None, None, []
        case.memory_regressed, case.memory_regression_detail = False, None
        case.memory_regressions = []
        if case.outcome not in (Outcome.passed, Outcome.degraded):
            continue
        for fr in case.framework_results():
            if fr.latency_s is None:
                continue
            mine = [
                r
                for r in earlier
                if r.case_id == case.case_id
                and r.framework == fr.framework
                and r.latency_s is not None
                and r.latency_s > 0
                and comparable(r, results, case)
            ][-policy.window :]
            if not mine:
                continue
            base = [r.latency_s for r in mine if r.latency_s is not None]
            j = judge(fr.latency_s, base, policy, fr.latency_samples_s)
            spread = spread_pct(base)
            case.regressions.append(
                RegressionFinding(
                    framework=fr.framework,
                    verdict=j.verdict,
                    latency_s=fr.latency_s,
                    baseline_median_s=j.baseline_median,
                    baseline_runs=j.baseline_runs,
                    baseline_spread_pct=spread,
                    delta_pct=round(j.delta_pct, 2),
                    mde_pct=None if j.mde_pct is None else round(j.mde_pct, 2),
                    z_score=None if j.z_score is None else round(j.z_score, 2),
                    detail=_detail(j, "s", _secs(j.baseline_median), spread),
                )
            )
            peak = fr.telemetry.peak_gpu_memory_mib
            peaks = [r.peak_gpu_memory_mib for r in mine if r.peak_gpu_memory_mib]
            if peak and peaks:
                m = judge(peak, peaks, policy)
                case.memory_regressions.append(
                    MemoryFinding(
                        framework=fr.framework,
                        verdict=m.verdict,
                        peak_gpu_memory_mib=peak,
                        baseline_median_mib=m.baseline_median,
                        baseline_runs=m.baseline_runs,
                        delta_pct=round(m.delta_pct, 2),
                        mde_pct=None if m.mde_pct is None else round(m.mde_pct, 2),
                        detail=_detail(m, "MiB", f"{m.baseline_median:.0f}", spread_pct(peaks)),
                    )
                )
        findings += case.regressions
        verdicts = {f.verdict for f in case.regressions}
        # One framework slower is a regression of the case even if another got faster.
        case.regression = (
            REGRESSED if REGRESSED in verdicts else (IMPROVED if IMPROVED in verdicts else None)
        )
        flagged = [f for f in case.regressions if f.verdict in (REGRESSED, IMPROVED)]
        if flagged:
            case.regression_detail = "; ".join(f"{f.framework}: {f.detail}" for f in flagged)
        grown = [f for f in case.memory_regressions if f.verdict == REGRESSED]
        if grown:
            case.memory_regressed = True
            case.memory_regression_detail = "; ".join(
                f"{f.framework}: peak GPU memory {f.detail}" for f in grown
            )
    return findings
