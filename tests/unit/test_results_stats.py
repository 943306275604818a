from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_results_support import case, framework, run

from lab.results import stats
from lab.results.history import record_run
from lab.results.regression import detect


def test_the_median_ci_covers_the_true_median_95_percent_where_n_allows_and_3_cannot():
    rng = np.random.default_rng(7)
    for n in (3, 10, 30):
        hits = 0
        for _ in range(400):
            ci = stats.median_ci(rng.normal(1.0, 0.05, n))
            hits += ci[0] <= 1.0 <= ci[1]
        if n == 3:  # no interval inside 3 samples covers more than 1 - 2 / 2**3 = 75 %
            assert hits / 400 <= 0.8
        else:
            assert 0.93 <= hits / 400 <= 1.0, n


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0.001, 1000.0), min_size=1, max_size=30))
def test_every_ci_lies_within_its_samples(samples):
    u = stats.uncertainty(samples)
    assert u is not None
    if len(samples) == 1:
        assert u.ci95 is None
    else:
        assert min(samples) <= u.ci95[0] <= u.median <= u.ci95[1] <= max(samples)


def test_the_bug_s_three_repeats_say_they_are_too_few_with_the_repeats_needed():
    samples = [0.42, 0.5, 0.58]  # CV 16 %: a t interval went below zero on samples like these
    u = stats.uncertainty(samples, effect_pct=5.0)
    assert u.ci95 is not None and u.ci95[0] >= 0.42 and u.ci95[1] <= 0.58
    assert u.mde_pct is None and u.ci_coverage is None
    need = stats.repeats_needed(samples, 5.0)
    assert u.too_few == f"n = 3: too few for a 5 % verdict; {need} repeats needed"
    # by hand: n = ((z_0.995 + z_0.8) * sqrt(2) * sqrt(pi / 2) * sd(log x) / ln 1.05)^2
    sd = np.std(np.log(samples), ddof=1)
    assert need == int(np.ceil(((2.5758 + 0.8416) * np.sqrt(np.pi) * sd / np.log(1.05)) ** 2))


def test_the_order_statistic_interval_against_a_hand_computed_binomial():
    # n = 10: [x(2), x(9)] covers 1 - 2 * P(Bin(10, 1/2) <= 1) = 1 - 2 * 11/1024 = 97.85 %;
    # [x(3), x(8)] covers 1 - 2 * 56/1024 = 89.1 %, under 95 %.
    samples = [1.9, 1.0, 1.8, 1.1, 1.7, 1.2, 1.6, 1.3, 1.5, 1.4]
    low, high, coverage = stats.order_statistic_ci(samples)
    assert (low, high) == (1.1, 1.8)
    assert coverage == pytest.approx(1 - 2 * 11 / 1024)
    assert stats.order_statistic_ci(samples[:5]) is None  # 1 - 2/32 = 93.75 % < 95 %


def test_more_samples_make_a_smaller_mde_and_one_sample_has_none():
    rng = np.random.default_rng(3)
    few, many = rng.normal(1.0, 0.05, 6), rng.normal(1.0, 0.05, 60)
    assert stats.sample_mde_pct(many) < stats.sample_mde_pct(few)
    assert stats.uncertainty([1.0]).ci95 is None and stats.uncertainty([1.0]).mde_pct is None
    assert stats.cv_pct([1.0, 1.1, 0.9]) == pytest.approx(10.0)


def test_a_quiet_history_detects_small_changes_and_a_noisy_one_does_not():
    quiet = [1.0, 1.002, 0.998, 1.001, 0.999]
    assert stats.judge(1.05, quiet).verdict == "regressed"
    assert stats.judge(1.01, quiet).verdict == "unchanged"  # under the 3 % minimum effect
    noisy = [1.0, 1.2, 0.85, 1.1, 0.9]
    j = stats.judge(1.05, noisy)
    assert j.verdict == "inconclusive" and j.mde_pct > 20
    assert stats.judge(1.5, [1.0, 1.0]).verdict == "inconclusive"  # 2 of 3 nights


def test_grown_peak_memory_is_flagged_with_its_baseline(tmp_path):
    db = tmp_path / "history.sqlite"
    for n in range(1, 6):
        record_run(db, run(n, [case("flux", [framework("sglang", 1.0, peak_mib=20000.0)])]))
    tonight = run(6, [case("flux", [framework("sglang", 1.0, peak_mib=24000.0)])])
    detect(db, tonight)
    c = tonight.cases[0]
    assert c.memory_regressed and c.regression is None
    (m,) = c.memory_regressions
    assert (m.verdict, m.baseline_median_mib, m.baseline_runs) == ("regressed", 20000.0, 5)
    assert "+20.0 % vs median 20000 MiB of 5 runs" in c.memory_regression_detail
    row = tonight.result_rows()[0]
    assert row["memory_regression"] == "regressed" and row["mde_pct"] is not None
