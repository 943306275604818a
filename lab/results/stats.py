"""The uncertainty of a measurement and the noise-aware test of a change against history.

One measurement (a case's latency samples of one night): its median, a 95 % confidence interval
of the median, its CV, and the smallest change a comparison with another night like it could
detect. One comparison (this night's value against the same case's comparable earlier nights):
a prediction-interval test of the new value against the distribution of the history (Student's t
on log values, so a change is relative), gated by a minimum effect size.

The MDE (minimum detectable change) is the true change that this test flags in `POWER` of nights:
`(t_crit + z_power) * sigma * sqrt(1 + 1/k)` on the log scale, never below the minimum effect.
The CI of one night's median is distribution-free and never leaves [min, max] of its samples
(README "Regression verdicts and measurement uncertainty")."""

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
# The fewest samples whose widest interval, [min, max], covers the median at 95 %: it does with
# probability 1 - 2 * 0.5**n (96.9 % at 6; 75 % at 3). Below it no interval inside the samples
# reaches 95 %: a seeded bootstrap on log latency is shown and the row says it is too few.
ORDER_STAT_MIN_N = 6
BOOTSTRAP_SEED = 0  # the same samples give the same interval, night after night
BOOTSTRAP_RESAMPLES = 2000
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
    ci95: tuple[float, float] | None  # None with fewer than 2 samples; always inside [min, max]
    ci_coverage: float | None  # what the order-statistic interval achieves; None: bootstrap
    cv_pct: float | None
    mde_pct: float | None  # detectable against one more night like this one, from samples only
    too_few: str | None  # "n = 3: too few for a 3 % verdict; 14 repeats needed", else None


def order_statistic_ci(
    samples: Samples, confidence: float = CONFIDENCE
) -> tuple[float, float, float] | None:
    """The narrowest symmetric [x_(k), x_(n+1-k)] whose binomial coverage of the median,
    P(k <= B <= n - k) for B ~ Bin(n, 1/2), is at least `confidence`: (low, high, coverage);
    None below ORDER_STAT_MIN_N samples (at 95 %)."""
    x = np.sort(np.asarray(samples, dtype=float))
    n = x.size
    best = None
    for k in range(1, n // 2 + 1):
        coverage = 1.0 - 2.0 * float(sps.binom.cdf(k - 1, n, 0.5))
        if coverage < confidence:
            break
        best = (float(x[k - 1]), float(x[n - k]), coverage)
    return best


def median_ci(samples: Samples, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """A distribution-free confidence interval of the median, never outside [min, max]:
    order statistics where n allows, else a seeded percentile bootstrap of the median of log
    latency; None for fewer than 2 samples."""
    x = np.asarray(samples, dtype=float)
    if x.size < 2:
        return None
    exact = order_statistic_ci(x, confidence)
    if exact is not None:
        return exact[0], exact[1]
    lo, hi = float(np.min(x)), float(np.max(x))
    if lo == hi or lo <= 0:
        return lo, hi
    res = sps.bootstrap(
        (np.log(x),),
        np.median,
        confidence_level=confidence,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    ci = res.confidence_interval
    med = float(np.median(x))  # exp(log(v)) may miss v by an ulp: clamp to the samples
    return min(med, max(lo, float(np.exp(ci.low)))), max(med, min(hi, float(np.exp(ci.high))))


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


def _log_sd(x: npt.NDArray[np.float64]) -> float | None:
    if x.size < 2 or float(np.min(x)) <= 0:
        return None
    return float(np.std(np.log(x), ddof=1))


def _mde_factor(alpha: float, power: float) -> float:
    """MDE on the log scale = this * sd(log samples) / sqrt(n): two nights, each a median."""
    return (_z(1 - alpha / 2) + _z(power)) * math.sqrt(2) * MEDIAN_SE_FACTOR


def sample_mde_pct(
    samples: Sequence[float], alpha: float = ALPHA, power: float = POWER
) -> float | None:
    """The change (in %) that two nights each measured like this one would tell apart, from the
    spread of this night's log samples (what `target_mde_pct` is met against); None below
    ORDER_STAT_MIN_N samples, too few for a distribution-free 95 % interval of the median."""
    x = np.asarray(samples, dtype=float)
    sd = _log_sd(x)
    if sd is None or x.size < ORDER_STAT_MIN_N:
        return None
    return _pct(_mde_factor(alpha, power) * sd / math.sqrt(x.size))


def repeats_needed(
    samples: Sequence[float], effect_pct: float, alpha: float = ALPHA, power: float = POWER
) -> int:
    """The fewest samples, at this night's spread, whose MDE is at most `effect_pct` (and never
    fewer than ORDER_STAT_MIN_N)."""
    sd = _log_sd(np.asarray(samples, dtype=float)) or 0.0
    n = (_mde_factor(alpha, power) * sd / math.log1p(effect_pct / 100.0)) ** 2
    return max(ORDER_STAT_MIN_N, math.ceil(n - 1e-9))


def too_few(
    samples: Sequence[float], effect_pct: float, alpha: float = ALPHA, power: float = POWER
) -> str | None:
    """The sentence a row shows instead of an interval and MDE that cannot support a verdict at
    `effect_pct`; None when the samples are enough."""
    n = len(samples)
    if n < 2:
        need_at_least = f"at least {ORDER_STAT_MIN_N} repeats needed"
        return f"n = {n}: too few for a {effect_pct:g} % verdict; {need_at_least}"
    need = repeats_needed(samples, effect_pct, alpha, power)
    if n >= need:
        return None
    return f"n = {n}: too few for a {effect_pct:g} % verdict; {need} repeats needed"


def uncertainty(samples: Sequence[float], effect_pct: float = MIN_EFFECT_PCT) -> Uncertainty | None:
    """`effect_pct`: the smallest change a verdict is about (regression.verdict_effect_pct)."""
    if not samples:
        return None
    exact = order_statistic_ci(samples)
    return Uncertainty(
        median=float(np.median(np.asarray(samples, dtype=float))),
        ci95=median_ci(samples),
        ci_coverage=None if exact is None else exact[2],
        cv_pct=cv_pct(samples),
        mde_pct=sample_mde_pct(samples),
        too_few=too_few(samples, effect_pct),
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
