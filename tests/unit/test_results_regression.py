from __future__ import annotations

import pytest
from test_results_support import case, framework, night, run

from lab.config import RegressionPolicy
from lab.contract import Outcome
from lab.results.history import case_history, history_rows, record_run
from lab.results.regression import detect

CASES = {"flux": 1.00, "qwen": 2.00, "wan": 40.0, "ltx": 12.5}
NOISE = [1.00, 1.01, 0.99, 1.005, 0.995]  # five nights, within 1 % of each other


@pytest.fixture
def seeded(tmp_path):
    """Five nights of the same four cases on the H100, latencies within 1 %."""
    db = tmp_path / "history.sqlite"
    for n, k in enumerate(NOISE, start=1):
        record_run(db, night(n, {c: lat * k for c, lat in CASES.items()}))
    return db


def verdicts(results):
    return {c.case_id: c.regression for c in results.cases}


def test_one_case_ten_percent_slower_is_the_only_regression(seeded):
    tonight = night(6, {**CASES, "wan": CASES["wan"] * 1.10})
    detect(seeded, tonight)

    assert verdicts(tonight) == {"flux": None, "qwen": None, "wan": "regressed", "ltx": None}
    wan = tonight.cases[2]
    assert wan.regression_detail == (
        "sglang: +10.0 % vs median 40.0 s of 5 runs (spread 2.0 %); MDE 4.8 %"
    )
    (finding,) = wan.regressions
    assert finding.baseline_runs == 5 and finding.delta_pct == pytest.approx(10.0)


def test_one_case_ten_percent_faster_is_improved(seeded):
    tonight = night(6, {**CASES, "qwen": CASES["qwen"] * 0.90})
    detect(seeded, tonight)
    assert verdicts(tonight) == {"flux": None, "qwen": "improved", "wan": None, "ltx": None}


def test_changes_under_the_minimum_effect_are_unchanged(seeded):
    tonight = night(6, {c: lat * 1.02 for c, lat in CASES.items()})
    findings = detect(seeded, tonight)
    assert set(verdicts(tonight).values()) == {None}
    assert {f.verdict for f in findings} == {"unchanged"}  # compared, and found alike
    assert all(f.mde_pct is not None and f.mde_pct >= 3.0 for f in findings)


def test_a_change_the_noise_explains_is_inconclusive_not_red(tmp_path):
    db = tmp_path / "history.sqlite"
    for n, k in enumerate([1.0, 1.12, 0.9, 1.08, 0.95], start=1):  # a noisy case: CV ~9 %
        record_run(db, night(n, {"flux": k}))
    tonight = night(6, {"flux": 1.10})
    (finding,) = detect(db, tonight)
    assert tonight.cases[0].regression is None
    assert finding.verdict == "inconclusive" and finding.mde_pct > 10.0
    assert "inconclusive: within the noise" in finding.detail


def test_the_fixed_rule_is_kept_selectable(tmp_path):
    db = tmp_path / "history.sqlite"
    for n, k in enumerate([1.0, 1.12, 0.9, 1.08, 0.95], start=1):
        record_run(db, night(n, {"flux": k}))
    tonight = night(6, {"flux": 1.10})
    detect(db, tonight, RegressionPolicy(method="fixed"))
    assert tonight.cases[0].regression == "regressed"  # the noise it cannot tell from a change


def test_no_history_means_no_verdict(tmp_path):
    tonight = night(1, {"flux": 5.0})
    assert detect(tmp_path / "history.sqlite", tonight) == []
    assert tonight.cases[0].regression is None
    assert not (tmp_path / "history.sqlite").exists()


@pytest.mark.parametrize(
    "other",
    [
        {"gpu": "NVIDIA H200"},
        {"vram_gib": 32.0},
        {"warmup": 0},
        {"repeats": 5},
        {"methodology": "client-e2e-v0"},
    ],
)
def test_runs_that_are_not_comparable_are_ignored(tmp_path, other):
    db = tmp_path / "history.sqlite"
    for n in range(1, 6):
        record_run(db, night(n, {"flux": 1.0}))
    for n in range(6, 11):  # twice as slow, but measured another way: must not count
        record_run(db, night(n, {"flux": 2.0}, **other))

    tonight = night(11, {"flux": 1.0})
    detect(db, tonight)
    (finding,) = tonight.cases[0].regressions
    assert (finding.verdict, finding.baseline_median_s) == ("unchanged", 1.0)

    tonight_other = night(11, {"flux": 2.0}, **other)
    detect(db, tonight_other)
    assert tonight_other.cases[0].regressions[0].baseline_median_s == 2.0


def test_only_the_last_window_of_runs_is_the_baseline(tmp_path):
    db = tmp_path / "history.sqlite"
    for n in range(1, 6):
        record_run(db, night(n, {"flux": 2.0}))  # old and slow
    for n in range(6, 11):
        record_run(db, night(n, {"flux": 1.0}))
    tonight = night(11, {"flux": 1.0})
    detect(db, tonight, RegressionPolicy(window=5))
    assert tonight.cases[0].regressions[0].baseline_runs == 5
    assert tonight.cases[0].regressions[0].verdict == "unchanged"
    detect(db, tonight, RegressionPolicy(window=10))
    assert tonight.cases[0].regressions[0].baseline_runs == 10
    # half the window twice as slow: a history that noisy cannot call tonight anything
    assert tonight.cases[0].regressions[0].verdict == "inconclusive"


def test_failed_nights_and_degraded_rungs_do_not_make_a_baseline(tmp_path):
    db = tmp_path / "history.sqlite"
    record_run(db, night(1, {"flux": 1.0}))
    oom = framework("sglang", None, Outcome.oom, reason="CUDA out of memory")
    record_run(db, run(2, [case("flux", [oom], Outcome.oom)]))
    # Passed only with CPU offload: slower by design, compared only with the same rung.
    offload = case("flux", [framework("sglang", 3.0)], Outcome.degraded, rung="cpu-offload")
    record_run(db, run(3, [offload]))

    tonight = night(4, {"flux": 1.02})
    detect(db, tonight)
    (finding,) = tonight.cases[0].regressions
    assert (finding.baseline_runs, finding.baseline_median_s) == (1, 1.0)

    degraded_again = run(
        4, [case("flux", [framework("sglang", 3.5)], Outcome.degraded, rung="cpu-offload")]
    )
    detect(db, degraded_again)
    (finding,) = degraded_again.cases[0].regressions
    assert (finding.baseline_runs, finding.baseline_median_s) == (1, 3.0)
    assert finding.verdict == "inconclusive"  # one night is too few to judge


def test_a_failed_case_tonight_gets_no_verdict(seeded):
    tonight = night(6, CASES)
    tonight.cases[0] = case("flux", [framework("sglang", 5.0, Outcome.timeout)], Outcome.timeout)
    detect(seeded, tonight)
    assert tonight.cases[0].regression is None and tonight.cases[0].regressions == []


def test_each_framework_is_judged_against_its_own_history(tmp_path):
    db = tmp_path / "history.sqlite"
    for n in range(1, 6):
        record_run(
            db, run(n, [case("flux", [framework("sglang", 1.0), framework("vllm-omni", 2.0)])])
        )
    tonight = run(6, [case("flux", [framework("sglang", 1.0), framework("vllm-omni", 2.5)])])
    detect(db, tonight)
    c = tonight.cases[0]
    assert c.regression == "regressed"
    assert [(f.framework, f.verdict) for f in c.regressions] == [
        ("sglang", "unchanged"),
        ("vllm-omni", "regressed"),
    ]
    assert c.regression_detail.startswith("vllm-omni: +25.0 %")

    record_run(db, tonight)  # the flag is kept per framework in the history
    rows = {
        r.framework: r.regression for r in case_history(db, "flux") if r.run_id == tonight.run_id
    }
    assert rows == {"sglang": None, "vllm-omni": "regressed"}


def test_detect_accepts_rows_already_read_and_ignores_this_run_and_later_ones(seeded):
    later = night(9, {"flux": 50.0})
    record_run(seeded, later)
    tonight = night(6, {"flux": 1.0})
    record_run(seeded, night(6, {"flux": 99.0}))  # this run recorded before: must not count
    detect(history_rows(seeded), tonight)
    (finding,) = tonight.cases[0].regressions
    assert finding.baseline_median_s == pytest.approx(1.0) and finding.baseline_runs == 5
