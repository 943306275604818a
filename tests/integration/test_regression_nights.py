"""Regression verdicts over real history: several real `lab nightly` runs (netns runtime, the
reference server on the CPU) write runs/history.sqlite; the last night is judged against them.

Two cases share each night: `steady` never changes (A/A), `slowed` gets the reference server's
`--step-slowdown 300` on the last night only (a real sleep of 3x every measured denoising step;
with 32 steps at 64² denoising is most of a request). On this shared 2-core machine the load of
other jobs moved a night's median by up to 8x while this test was written (0.36-2.7 s, see
benchmarks/results/regression_power_nights.json): a 20 % or even a doubled step against four
such nights was, honestly, `inconclusive` here; benchmarks/regression_power.py
measures the detection rates at 3/5/10 % over many nights instead. The suite sets an 8 %
minimum effect and alpha 0.05."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nightly_helpers import ROOT, by_id, ref_case, run_nightly, write_suite

POLICY = {"min_effect_pct": 8.0, "alpha": 0.05}


def suite(tmp: Path, slowed_args: str = "") -> Path:
    serve = "--warmup-mode off"
    cases = [
        ref_case("steady", steps=32),
        ref_case(
            "slowed", steps=32, frameworks={"reference": {"serve_args": f"{serve} {slowed_args}"}}
        ),
    ]
    return write_suite(tmp, cases, measurement_repeats=5, regression=POLICY)


def row(results: dict, case_id: str) -> dict:
    return next(r for r in results["results"] if r["case_id"] == case_id)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the netns runtime needs root here")
def test_slowed_step_is_regressed_two_nights_are_inconclusive(
    tmp_path: Path,
) -> None:
    out = tmp_path / "runs"
    plain = suite(tmp_path)
    for _ in range(2):
        code, _, _, err = run_nightly(plain, out, "netns")
        assert code == 0, err

    # Night 3 against a two-night history: too short to call anything.
    code, results, _, err = run_nightly(plain, out, "netns")
    assert code == 0, err
    for cid in ("steady", "slowed"):
        r = row(results, cid)
        assert r["regression"] == "inconclusive", r
        low, high = r["latency_ci95_s"]
        assert low <= r["latency_s"] <= high and r["latency_cv_pct"] is not None
        # Five samples: below the order-statistic minimum, so no MDE, and the row says so.
        assert r["measurement_count"] == 5 and r["mde_pct"] is None, r
        assert r["too_few"].startswith("n = 5: too few for a "), r

    code, _, _, err = run_nightly(plain, out, "netns")
    assert code == 0, err
    slowed = tmp_path / "slowed"
    slowed.mkdir()
    code, results, run_dir, err = run_nightly(suite(slowed, "--step-slowdown 300"), out, "netns")
    assert code == 0, err
    steady, slow = row(results, "steady"), row(results, "slowed")
    # The A/A case is judged on the same four nights. Its verdict is a statistic of this
    # machine's load drift across nights (CI once saw -28 %, "improved"): the false-alarm rate
    # is measured by benchmarks/regression_power.py, not asserted here. What holds whatever
    # the load: the slowed case is regressed, and by far more than the A/A case moved.
    (aa,) = by_id(results)["steady"]["regressions"]
    assert steady["regression"] == aa["verdict"], aa
    assert aa["baseline_runs"] == 4 and aa["mde_pct"] is not None, aa
    assert slow["regression"] == "regressed", by_id(results)["slowed"]["regressions"]
    assert by_id(results)["slowed"]["regression"] == "regressed"
    (finding,) = by_id(results)["slowed"]["regressions"]
    assert finding["baseline_runs"] == 4 and finding["delta_pct"] > 50
    assert finding["delta_pct"] - aa["delta_pct"] > 50, (finding, aa)
    assert "regressed" in (run_dir / "summary.md").read_text()

    history = subprocess.run(
        [sys.executable, "-m", "lab.cli", "history", "slowed", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert history.returncode == 0, history.stderr
    header = history.stdout.splitlines()[0].split()
    assert {"ci", "cv", "mde"} <= set(header), history.stdout
    assert json.loads((run_dir / "results.json").read_text())["results"][0]["mde_pct"]
