from __future__ import annotations

import numpy as np
import pytest
from test_results_support import case, framework, run

from lab.results import stats
from lab.results.history import record_run
from lab.results.regression import detect


def test_the_median_ci_covers_the_true_median_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    for n in (3, 10, 30):
        hits = 0
        for _ in range(400):
            ci = stats.median_ci(rng.normal(1.0, 0.05, n))
            hits += ci[0] <= 1.0 <= ci[1]
        assert 0.9 <= hits / 400 <= 1.0, n


def test_more_samples_make_a_smaller_mde_and_one_sample_has_none():
    rng = np.random.default_rng(3)
    few, many = rng.normal(1.0, 0.05, 5), rng.normal(1.0, 0.05, 60)
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
