"""The uncertainty of a measurement and the noise-aware test of a change against history.

One measurement (a case's latency samples of one night): its median, a 95 % confidence interval
of the median, its CV, and the smallest change a comparison with another night like it could
detect. One comparison (this night's value against the same case's comparable earlier nights):
a prediction-interval test of the new value against the distribution of the history (Student's t
on log values, so a change is relative), gated by a minimum effect size.

The MDE (minimum detectable change) is the true change that this test flags in `POWER` of nights:
`(t_crit + z_power) * sigma * sqrt(1 + 1/k)` on the log scale, never below the minimum effect."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

CONFIDENCE = 0.95
ALPHA = 0.01  # two-sided false-alarm probability per case-night of the history test
POWER = 0.8
MIN_EFFECT_PCT = 3.0
MIN_HISTORY = 3  # comparable earlier nights needed before a verdict other than inconclusive
# Below this many samples an order-statistic interval cannot reach 95 %; a t interval on the
# median's normal-approximation standard error is used instead.
ORDER_STAT_MIN_N = 6
# The median's standard error is sqrt(pi/2) times the mean's for normal samples.
MEDIAN_SE_FACTOR = math.sqrt(math.pi / 2)

# Latency samples as they arrive (a list) or once converted (np.asarray(..., dtype=float)).
Samples = Sequence[float] | npt.NDArray[np.float64]

REGRESSED = "regressed"
IMPROVED = "improved"
UNCHANGED = "unchanged"
INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Uncertainty:
    median: float
    ci95: tuple[float, float] | None  # None with fewer than 2 samples
    cv_pct: float | None
    mde_pct: float | None  # detectable against one more night like this one, from samples only


def median_ci(samples: Samples, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """A confidence interval of the median: order statistics (distribution-free) from 6 samples,
    a t interval on the median's standard error below that; None for fewer than 2 samples."""
    x = np.asarray(samples, dtype=float)
    if x.size < 2:
        return None
    if x.size >= ORDER_STAT_MIN_N:
        med = float(np.median(x))
        ci = sps.quantile_test(x, q=med, p=0.5).confidence_interval(confidence)
        return float(ci.low), float(ci.high)
    med = float(np.median(x))
    half = sps.t.ppf(0.5 + confidence / 2, x.size - 1) * median_se(x)
    return med - half, med + half


def median_se(samples: Samples) -> float:
    x = np.asarray(samples, dtype=float)
    if x.size < 2:
        return 0.0
    return float(MEDIAN_SE_FACTOR * np.std(x, ddof=1) / math.sqrt(x.size))


def cv_pct(samples: Sequence[float]) -> float | None:
    x = np.asarray(samples, dtype=float)
    if x.size < 2 or float(np.mean(x)) <= 0:
        return None
    return float(100.0 * sps.variation(x, ddof=1))


def _z(p: float) -> float:
    return float(sps.norm.ppf(p))


def _pct(log_change: float) -> float:
    return 100.0 * math.expm1(log_change)


def sample_mde_pct(
    samples: Sequence[float], alpha: float = ALPHA, power: float = POWER
) -> float | None:
    """The change (in %) that two nights each measured like this one would tell apart, from the
    width of this night's CI of the median alone (what `target_mde_pct` is met against)."""
    x = np.asarray(samples, dtype=float)
    ci = median_ci(x)
    med = float(np.median(x)) if x.size else 0.0
    if ci is None or med <= 0:
        return None
    se_rel = (ci[1] - ci[0]) / (2 * _z(0.5 + CONFIDENCE / 2)) / med
    return _pct((_z(1 - alpha / 2) + _z(power)) * math.sqrt(2) * se_rel)


def uncertainty(samples: Sequence[float]) -> Uncertainty | None:
    if not samples:
        return None
    return Uncertainty(
        median=float(np.median(np.asarray(samples, dtype=float))),
        ci95=median_ci(samples),
        cv_pct=cv_pct(samples),
        mde_pct=sample_mde_pct(samples),
    )


@dataclass(frozen=True)
class Judgement:
    verdict: str  # regressed | improved | unchanged | inconclusive
    delta_pct: float  # this value against the median of the history
    baseline_median: float
    baseline_runs: int
    mde_pct: float | None  # None when the history is too short to have one
    z_score: float | None
    p_value: float | None
    why: str  # one short phrase: what decided the verdict


def judge(
    value: float,
    history: Sequence[float],
    *,
    samples: Sequence[float] = (),
    min_effect_pct: float = MIN_EFFECT_PCT,
    alpha: float = ALPHA,
    power: float = POWER,
    min_history: int = MIN_HISTORY,
) -> Judgement:
    """This night's `value` against the comparable earlier values (oldest first, all > 0).

    Regressed / improved only when the change is both outside the history's prediction interval
    at `alpha` and at least `min_effect_pct`; inconclusive when there are fewer than
    `min_history` earlier values or the change is as large as the minimum effect but within the
    noise. `samples` (this night's own samples) put a floor under the noise: a history whose few
    nights happen to agree does not make a noisy measurement look precise."""
    hist = np.log(np.asarray(history, dtype=float))
    k = hist.size
    base_median = float(np.median(np.asarray(history, dtype=float)))
    delta = 100.0 * (value - base_median) / base_median
    if k < min_history:
        return Judgement(
            INCONCLUSIVE, delta, base_median, k, None, None, None, f"{k} of {min_history} nights"
        )
    center = float(np.mean(hist))
    sigma = float(np.std(hist, ddof=1))
    x = np.asarray(samples, dtype=float)
    if x.size >= 2 and float(np.median(x)) > 0:
        sigma = max(sigma, median_se(x) / float(np.median(x)))
    scale = sigma * math.sqrt(1 + 1 / k)
    t_crit = float(sps.t.ppf(1 - alpha / 2, k - 1))
    mde = max(min_effect_pct, _pct((t_crit + _z(power)) * scale))
    change = math.log(value) - center
    if scale > 0:
        z = change / scale
        p = float(2 * sps.t.sf(abs(z), k - 1))
    else:  # a history without any spread: only the minimum effect decides
        z = math.copysign(math.inf, change) if change else 0.0
        p = 0.0 if change else 1.0
    outside = p < alpha
    big = abs(delta) >= min_effect_pct
    if outside and big:
        verdict, why = (REGRESSED if delta > 0 else IMPROVED), f"p {p:.2g} < {alpha:g}"
    elif big:
        verdict, why = INCONCLUSIVE, f"within the noise (p {p:.2g})"
    else:
        verdict, why = UNCHANGED, f"under the {min_effect_pct:g} % minimum effect"
    return Judgement(verdict, delta, base_median, k, mde, z if math.isfinite(z) else None, p, why)
