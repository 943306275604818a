"""--fail-on-degraded in junit.xml: with the flag on, a degraded case is a <failure> saying why;
without it, it passes with a note."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from test_results_support import case, framework, run

from lab.contract import Outcome
from lab.results.junit_xml import render_junit


def _suite(fail_on: list[str]) -> ET.Element:
    results = run(
        1,
        [
            case("ok", [framework("sglang", 1.0)]),
            case("deg", [framework("sglang", 2.0)], Outcome.degraded, rung="low-vram"),
        ],
    )
    results.fail_on = fail_on
    el = ET.fromstring(render_junit(results)).find("testsuite")
    assert el is not None
    return el


def test_degraded_is_a_failure_only_when_the_run_fails_on_it() -> None:
    on = _suite(["degraded"])
    assert on.get("failures") == "1"
    (tc,) = [tc for tc in on.iter("testcase") if tc.find("failure") is not None]
    failure = tc.find("failure")
    assert tc.get("name") == "deg" and failure is not None
    assert "--fail-on-degraded" in failure.get("message", "")
    assert "low-vram" in failure.get("message", "")
    off = _suite([])
    assert off.get("failures") == "0"
    assert all(tc.find("failure") is None for tc in off.iter("testcase"))


def test_suite_time_is_the_wall_time_not_the_sum_of_the_cases() -> None:
    results = run(1, [case("a", attempt_s=60.0), case("b", attempt_s=40.0)])  # side by side
    el = ET.fromstring(render_junit(results))
    assert float(el.get("time", "0")) == 60.0
    suite = el.find("testsuite")
    assert suite is not None and float(suite.get("time", "0")) == 60.0
    assert sorted(float(tc.get("time", "0")) for tc in suite.iter("testcase")) == [40.0, 60.0]
