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
from lab.results import changes, stats
from lab.results.history import HistoryRow, history_rows, normalize_timestamp, rows_for_run
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
UNCONFIRMED = "unconfirmed"  # flagged by tonight's test, not (yet) a change of the series
RUNNER_SHIFTED = "runner_shifted"  # moved with the canaries: the machine, not the code
SERIES_NIGHTS = 60  # comparable nights the change-point view searches (tonight's last)


def _same_vram(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-6)


def comparable(row: HistoryRow, results: RunResults, case: CaseResult) -> bool:
    """Whether an earlier row may serve as a baseline for this run's case."""
    setup = (results.methodology, results.warmup_requests, results.measurement_repeats)
    return row.run_id != results.run_id and _same_setup(
        row, (*setup, results.gpu_model, case.degraded_rung), case.vram_gib
    )


def comparable_rows(row: HistoryRow, ref: HistoryRow) -> bool:
    """Whether `row` may serve as a baseline for `ref` (a row of the same case and framework)."""
    setup = (ref.methodology, ref.warmup_requests, ref.measurement_repeats)
    return _same_setup(row, (*setup, ref.gpu_model, ref.degraded_rung), ref.vram_gib)


def _same_setup(row: HistoryRow, setup: tuple[object, ...], vram_gib: float | None) -> bool:
    return (
        row.measured
        and may_be_baseline(row.kind, row.shared_host)
        and (
            row.methodology,
            row.warmup_requests,
            row.measurement_repeats,
            row.gpu_model,
            row.degraded_rung,
        )
        == setup
        and _same_vram(row.vram_gib, vram_gib)
    )


def comparable_series(rows: Sequence[HistoryRow], framework: str) -> list[HistoryRow]:
    """One framework's nights of one case that are comparable with its latest measured night
    (oldest first): the series `lab history --changes` searches for change points."""
    mine = [r for r in rows if r.framework == framework and r.measured]
    if not mine:
        return []
    return [r for r in mine if comparable_rows(r, mine[-1]) or r is mine[-1]]


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
    tonight = {(r.case_id, r.framework): r for r in rows_for_run(results)}
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
            series = [
                r
                for r in earlier
                if r.case_id == case.case_id
                and r.framework == fr.framework
                and r.latency_s is not None
                and r.latency_s > 0
                and comparable(r, results, case)
            ][-SERIES_NIGHTS:]
            mine = series[-policy.window :]
            if not mine:
                continue
            base = [r.latency_s for r in mine if r.latency_s is not None]
            j = judge(fr.latency_s, base, policy, fr.latency_samples_s)
            spread = spread_pct(base)
            view, note = series_view(
                [*series, tonight[(case.case_id, fr.framework)]], j.verdict, policy.window
            )
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
                    series_verdict=view,
                    series_note=note,
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
        views = {f.series_verdict for f in case.regressions}
        case.series_verdict = next(
            (v for v in (REGRESSED, IMPROVED, UNCONFIRMED) if v in views), None
        )
        noted = [f for f in case.regressions if f.series_note]
        if noted:
            case.change_note = "; ".join(f"{f.framework}: {f.series_note}" for f in noted)
        grown = [f for f in case.memory_regressions if f.verdict == REGRESSED]
        if grown:
            case.memory_regressed = True
            case.memory_regression_detail = "; ".join(
                f"{f.framework}: peak GPU memory {f.detail}" for f in grown
            )
    label_runner_shift(results)
    results.runner_changed = _runner_changed(earlier, results)
    return findings


def series_view(
    series: Sequence[HistoryRow], test_verdict: str, window: int
) -> tuple[str | None, str | None]:
    """Tonight's verdict from both views: the change points of the series (tonight last) and the
    test of tonight against history. A change in the last `window` nights decides ("regressed
    since RUN (+X %)", "drifted since ..." when it came over several nights); without one, a
    night the test flags is "unconfirmed" (one night is never a change point)."""
    found = [c for c in changes.series_changes(series) if c.index >= len(series) - window]
    if found:
        last = found[-1]
        word = "drifted" if last.gradual else (REGRESSED if last.change_pct > 0 else IMPROVED)
        verdict = REGRESSED if last.change_pct > 0 else IMPROVED
        return verdict, f"{word} since {last.first_run_id} ({last.change_pct:+.1f} %)"
    if test_verdict in (REGRESSED, IMPROVED):
        return UNCONFIRMED, f"unconfirmed: {test_verdict} tonight, not (yet) a change in the series"
    return None, None


def label_runner_shift(results: RunResults) -> None:
    """When the suite's canaries moved beyond their MDE tonight (at least half of those with a
    verdict), every case flagged in the same direction is labelled a runner shift instead of a
    change of the code."""
    canaries = [(c, f) for c in results.cases if c.canary for f in c.regressions]
    moved = [
        (c, f)
        for c, f in canaries
        if f.verdict in (REGRESSED, IMPROVED)
        and abs(f.delta_pct) >= (f.mde_pct or stats.MIN_EFFECT_PCT)
    ]
    if not moved or 2 * len(moved) < len(canaries):
        return
    sign = math.copysign(1.0, statistics.median(f.delta_pct for _, f in moved))
    label = (
        "runner shifted ("
        + ", ".join(f"canary {c.case_id} {f.delta_pct:+.1f} %" for c, f in moved)
        + ")"
    )
    for case in results.cases:
        shifted = False
        for f in case.regressions:
            if f.series_verdict and f.delta_pct * sign > 0:
                f.series_verdict, f.series_note, shifted = RUNNER_SHIFTED, label, True
        if shifted:
            case.series_verdict, case.change_note = RUNNER_SHIFTED, label


def _runner_changed(earlier: Sequence[HistoryRow], results: RunResults) -> str | None:
    """What of the runner fingerprint differs from the latest earlier nightly that has one."""
    last = next((r for r in reversed(earlier) if r.runner and r.kind == "nightly"), None)
    if last is None:
        return None
    diff = changes.runner_diff(last.runner, results.runner)
    if not diff:
        return None
    return f"since {last.run_id}: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in diff.items())
