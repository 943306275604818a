"""Perf dumps are asked for only where the framework writes them; a missing one costs the wait
once per attempt and makes one note; phase timings reach the attempt and the reports."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lab.config import Case, load_suite
from lab.contract import AttemptResult, FrameworkResult, Outcome
from lab.errors import ConfigError
from lab.frameworks import REGISTRY, get_framework
from lab.results import report_common as rc
from lab.results.model import CaseResult, RunResults
from lab.results.report_html import render_html
from lab.results.summary_md import render_summary
from lab.sandbox.result import PerfDumps


def _case(frameworks: dict[str, dict[str, object]]) -> Case:
    return Case.model_validate({"id": "a", "model": "m", "frameworks": frameworks})


def test_only_sglang_and_the_reference_server_write_dumps_unless_a_custom_one_says_so() -> None:
    cfgs = {n: {"command": "srv {port}"} if n == "custom" else {} for n in REGISTRY}
    writers = {
        n for n, c in cfgs.items() if get_framework(n).perf_dumps(_case({n: c}).frameworks[n])
    }
    assert writers == {"sglang", "reference"}
    plain = _case({"custom": {"command": "srv {port}", "request": "image"}})
    assert not get_framework("custom").perf_dumps(plain.frameworks["custom"])
    says = _case({"custom": {"command": "srv {port}", "request": "image", "perf_dumps": True}})
    assert get_framework("custom").perf_dumps(says.frameworks["custom"])


@pytest.mark.parametrize(
    ("fw", "words"),
    [
        ({"sglang": {"perf_dumps": False}}, "frameworks.sglang.perf_dumps: only a 'custom'"),
        ({"custom": {"command": "srv", "perf_dumps": True}}, "needs 'request' image or video"),
    ],
)
def test_perf_dumps_key_is_checked_at_load(tmp_path: Path, fw: dict, words: str) -> None:
    p = tmp_path / "suite.json"
    p.write_text(json.dumps({"cases": [{"id": "a", "model": "m", "frameworks": fw}]}))
    with pytest.raises(ConfigError) as e:
        load_suite(p)
    assert words in str(e.value) and str(p) in str(e.value) and "case 'a'" in str(e.value)


def test_a_server_that_stops_writing_dumps_costs_the_bound_once_and_makes_one_note(
    tmp_path: Path,
) -> None:
    bound = 0.5
    dumps = PerfDumps(bound_s=bound)
    paths = [tmp_path / f"custom_{i}.json" for i in range(1, 6)]
    paths[0].write_text(json.dumps({"total_duration_ms": 200.0}))
    t0 = time.monotonic()
    for p in paths:
        dumps.look(p)
    spent = time.monotonic() - t0
    assert bound <= spent < 2 * bound  # one wait for 4 missing dumps, not four
    paths[3].write_text(json.dumps({"total_duration_ms": 210.0}))  # late, but there at the end
    res = FrameworkResult(framework="custom", outcome=Outcome.passed, measurement_count=5)
    dumps.record(res)
    assert res.missing_perf_dumps == 3
    assert res.server_latency_samples_s == [0.2, 0.21]
    (note,) = [n for n in res.notes if "perf dump" in n]
    assert note.startswith("3/5 server perf dump(s) missing")
    assert "custom_2.json: file never appeared after 0.5 s" in note


def _attempt(fw_timings: dict[str, float], own: dict[str, float], wall: float) -> AttemptResult:
    fr = FrameworkResult(framework="custom", outcome=Outcome.passed, phase_timings_s=fw_timings)
    return AttemptResult(
        run_id="r",
        case_id="c",
        attempt=1,
        rung="as-configured",
        outcome=Outcome.passed,
        frameworks=[fr],
        phase_timings_s=own,
        started_at=100.0,
        finished_at=100.0 + wall,
    )


def test_reports_show_where_a_case_went_also_for_attempts_recorded_before_the_sum() -> None:
    phases = {"healthy": 0.2, "ready": 0.0, "warmup": 0.3, "measure": 1.0, "teardown": 0.1}
    new = _attempt(phases, {"ballast": 0.4, **phases}, wall=2.5)
    old = _attempt(phases, {}, wall=1.7)  # results.json of before: the attempt's dict empty
    cases = [
        CaseResult(case_id=cid, outcome=Outcome.passed, frameworks=["custom"], attempts=[a])
        for cid, a in (("new", new), ("old", old))
    ]
    split = rc.time_split(cases[0])
    assert [k for k, _ in split] == [
        "ballast",
        "healthy",
        "ready",
        "warmup",
        "measure",
        "teardown",
        "other",
    ]
    assert dict(split)["other"] == pytest.approx(0.5)
    assert dict(rc.time_split(cases[1]))["measure"] == 1.0
    results = RunResults(run_id="r", timestamp="2026-12-06T00:00:00Z", cases=cases)
    md = render_summary(results)
    assert "## Where the time went" in md
    assert "| new | 2.50 s / 1 | ballast 0.40 · healthy 0.20 · ready 0.00 · warmup 0.30" in md
    html = render_html(results, [])
    assert html.count('<div class="split">') == 2
    assert 'class="phase measure" title="measure 1.00 s" style="width:40.0%' in html
