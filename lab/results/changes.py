"""Change points on a case's series over its comparable history: where its level moved, and what
changed between the two nights.

The series (one value per night: latency median, peak GPU memory) is searched on the log scale
by binary segmentation (ruptures' Binseg, l2 cost, at least `MIN_NIGHTS` nights a side, so one
odd night is never a segment of its own): the best split of the series is kept when the nights
before and after it differ by a pooled t-test at `ALPHA` and by at least `MIN_EFFECT_PCT`, then
each side is split again. Kept changes are re-tested between their neighbours; the weakest
failing one is dropped until all pass. benchmarks/changepoint_power.py
measured this against E-divisive (signal-processing-algorithms) and Apache Otava on the lab's
own night-to-night noise (README "Change points")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ruptures as rpt
from scipy import stats as sps

from lab.results import stats
from lab.results.history import HistoryRow

ALPHA = 0.001  # two-sided, per candidate change point
MIN_EFFECT_PCT = 3.0
MIN_NIGHTS = 2  # nights on each side of a change: one slow night is never a change
METRICS = {"latency_s": "latency median", "peak_gpu_memory_mib": "peak GPU memory"}


def _test(left: np.ndarray[Any, Any], right: np.ndarray[Any, Any]) -> tuple[float, float]:
    """(p of a pooled two-sample t-test, change in % of the medians), on log values."""
    effect = 100.0 * math.expm1(float(np.median(right) - np.median(left)))
    dof = left.size + right.size - 2
    var = (
        (float(np.var(left, ddof=1)) * (left.size - 1) if left.size > 1 else 0.0)
        + (float(np.var(right, ddof=1)) * (right.size - 1) if right.size > 1 else 0.0)
    ) / max(dof, 1)
    diff = float(np.mean(right) - np.mean(left))
    if var <= 0:
        return (0.0 if diff else 1.0), effect
    t = diff / math.sqrt(var * (1 / left.size + 1 / right.size))
    return float(2 * sps.t.sf(abs(t), dof)), effect


def change_points(
    values: Sequence[float],
    *,
    alpha: float = ALPHA,
    min_effect_pct: float = MIN_EFFECT_PCT,
    min_nights: int = MIN_NIGHTS,
) -> list[tuple[int, float, float]]:
    """(index of the first night after the change, p, change %) of every confirmed change of a
    series of positive values, oldest first."""
    x = np.log(np.asarray(values, dtype=float))
    cps: list[int] = []

    def split(lo: int, hi: int) -> None:  # top down: the best split of a part, if it holds
        if hi - lo < 2 * min_nights:
            return
        seg = (x[lo:hi] - x[lo]).reshape(-1, 1)
        algo = rpt.Binseg(model="l2", min_size=min_nights, jump=1).fit(seg)
        bk = lo + int(algo.predict(n_bkps=1)[0])
        p, effect = _test(x[lo:bk], x[bk:hi])
        if p < alpha and abs(effect) >= min_effect_pct:
            split(lo, bk)
            cps.append(bk)
            split(bk, hi)

    split(0, x.size)
    while cps:  # each must also hold between its neighbours, not only within its part
        bounds = [0, *cps, x.size]
        tested = [
            _test(x[bounds[i - 1] : bounds[i]], x[bounds[i] : bounds[i + 1]])
            for i in range(1, len(bounds) - 1)
        ]
        failing = [
            (p, i)
            for i, (p, effect) in enumerate(tested)
            if p >= alpha or abs(effect) < min_effect_pct
        ]
        if not failing:
            return [(cp, p, effect) for cp, (p, effect) in zip(cps, tested, strict=True)]
        cps.pop(max(failing)[1])
    return []


@dataclass(frozen=True)
class Change:
    metric: str  # a key of METRICS
    framework: str
    index: int  # of the first night after the change, in the series
    first_run_id: str
    timestamp: str
    before: dict[str, Any]  # median, ci95, nights (of the segment before)
    after: dict[str, Any]
    change_pct: float
    p_value: float
    between: dict[str, list[str | None]]  # what differs from the night before: [was, now]
    gradual: bool  # the level moved over several nights (a drift), not in one step

    def to_json(self) -> dict[str, Any]:
        return {
            "first_run_id": self.first_run_id,
            "timestamp": self.timestamp,
            "metric": self.metric,
            "framework": self.framework,
            "before": self.before,
            "after": self.after,
            "change_pct": round(self.change_pct, 2),
            "p_value": float(f"{self.p_value:.3g}"),
            "between": self.between,
            "gradual": self.gradual,
        }

    def describe(self) -> str:
        what = "drifted" if self.gradual else ("slower" if self.change_pct > 0 else "faster")
        if self.metric != "latency_s":
            what = "grew" if self.change_pct > 0 else "shrank"
        text = (
            f"{self.timestamp[:10]} {self.first_run_id} {self.framework or '-'} "
            f"{METRICS[self.metric]} {self.change_pct:+.1f} % ({what}): "
            f"{_level(self.before)} -> {_level(self.after)}"
        )
        if self.between:
            text += "; between: " + ", ".join(
                f"{k} {a or '?'} -> {b or '?'}" for k, (a, b) in self.between.items()
            )
        return text


def _level(seg: dict[str, Any]) -> str:
    ci = seg["ci95"]
    band = f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
    return f"{seg['median']:.4g}{band} over {seg['nights']} nights"


def _segment(values: Sequence[float]) -> dict[str, Any]:
    ci = stats.median_ci(values)
    return {
        "median": round(float(np.median(np.asarray(values, dtype=float))), 6),
        "ci95": [round(ci[0], 6), round(ci[1], 6)] if ci else None,
        "nights": len(values),
    }


def between(was: HistoryRow, now: HistoryRow) -> dict[str, list[str | None]]:
    """Lab-visible differences between two nights: commit, server version, runner fingerprint."""
    out: dict[str, list[str | None]] = {}
    if was.commit_sha != now.commit_sha:
        out["commit"] = [was.commit_sha, now.commit_sha]
    if was.server_version != now.server_version:
        out["server_version"] = [was.server_version, now.server_version]
    out.update(runner_diff(was.runner, now.runner))
    return out


def runner_diff(was: dict[str, str], now: dict[str, str]) -> dict[str, list[str | None]]:
    """The fingerprint keys that differ (a side that did not record the fingerprint: none)."""
    if not was or not now:
        return {}
    keys = sorted(set(was) | set(now))
    return {k: [was.get(k), now.get(k)] for k in keys if was.get(k) != now.get(k)}


def series_changes(rows: Sequence[HistoryRow], metric: str = "latency_s") -> list[Change]:
    """The confirmed changes of one framework's series of one case (rows oldest first, all
    comparable with each other and carrying `metric`)."""
    pts = [(r, float(getattr(r, metric))) for r in rows if getattr(r, metric)]
    values = [v for _, v in pts]
    found = change_points(values)
    bounds = [0, *(i for i, _, _ in found), len(values)]
    out = []
    for k, (i, p, effect) in enumerate(found):
        before, after = values[bounds[k] : i], values[i : bounds[k + 2]]
        # A step: the two nights either side already differ by most of the change.
        edge = 100.0 * math.expm1(math.log(after[0]) - math.log(before[-1]))
        out.append(
            Change(
                metric=metric,
                framework=pts[i][0].framework,
                index=i,
                first_run_id=pts[i][0].run_id,
                timestamp=pts[i][0].timestamp,
                before=_segment(before),
                after=_segment(after),
                change_pct=effect,
                p_value=p,
                between=between(pts[i - 1][0], pts[i][0]),
                gradual=abs(edge) < abs(effect) / 2,
            )
        )
    return out


def series_json(rows: Sequence[HistoryRow]) -> list[dict[str, Any]]:
    """`lab history --changes --json`'s "series": one point per night and framework."""
    return [
        {
            "run_id": r.run_id,
            "timestamp": r.timestamp,
            "framework": r.framework,
            "latency_s": r.latency_s,
            "latency_ci95_s": list(ci) if (ci := stats.median_ci(r.samples)) else None,
            "peak_gpu_memory_mib": r.peak_gpu_memory_mib,
            "commit_sha": r.commit_sha,
            "runner": r.runner,
        }
        for r in rows
    ]
