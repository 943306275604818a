"""Quarantine with expiry and the flake budget on real `lab nightly` runs of the reference server
(netns): a quarantined crashing case runs, is reported and does not fail the run until its date
passes, then does; a case flaky on more recorded nights than its budget is reported so, and
--fail-on-flake-budget makes that gate."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nightly_helpers import by_id, run_nightly, write_suite
from nightly_helpers import ref_case as case
from test_triage import crashing, flaky_case

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the netns runtime needs root here"),
]
ISSUE = "https://github.com/example/lab/issues/31"


def _night(tmp: Path, cases: list[dict[str, Any]], *extra: str, **top: Any) -> Any:
    suite = write_suite(tmp, cases, measurement_repeats=1, **top)
    return run_nightly(suite, tmp / "runs", "netns", *extra)


def _quarantine(tmp: Path, until_days: int) -> str:
    until = (datetime.now(UTC).date() + timedelta(days=until_days)).isoformat()
    entry = {"case": "broken", "issue": ISSUE, "reason": "crashes at start", "until": until}
    skipped = {**entry, "case": "needs_gpus", "reason": "no 8 GPUs on the runner"}
    (tmp / "quarantine.json").write_text(json.dumps({"quarantine": [entry, skipped]}, indent=2))
    return until


def test_a_quarantined_failing_case_passes_the_run_until_its_date_then_fails_it(
    tmp_path: Path,
) -> None:
    cases = [case("steady"), crashing("broken"), case("needs_gpus", num_gpus=8)]
    until = _quarantine(tmp_path, 1)
    code, results, run_dir, err = _night(tmp_path, cases, "--fail-on-skipped")
    broken = by_id(results)["broken"]
    assert broken["outcome"] == "crashed" and len(broken["attempts"]) == 2  # it ran, re-run too
    assert code == 0, err  # held: neither the crash nor --fail-on-skipped fails the run
    assert broken["quarantine"]["until"] == until and not broken["quarantine"]["expired"]
    assert f"broken crashed: quarantined until {until}: {ISSUE}" in err
    assert f"[quarantined {until}]" in err
    summary = (run_dir / "summary.md").read_text()
    assert "## Failed (1)" in summary and "## Quarantined (2)" in summary
    assert f"quarantined until {until}: {ISSUE} (crashes at start)" in summary
    suite_el = ET.parse(run_dir / "junit.xml").getroot().find("testsuite")
    assert suite_el is not None and suite_el.get("failures") == "0"
    kinds = {tc.get("name"): tc.find("skipped") for tc in suite_el.iter("testcase")}
    assert all(kinds[n] is not None for n in ("broken", "needs_gpus"))
    assert kinds["broken"].get("type") == "quarantined"  # type: ignore[union-attr]
    html = (run_dir / "report.html").read_text()
    assert "<h2>Quarantined (2)</h2>" in html and f'href="{ISSUE}"' in html

    # The day after `until`: the same crash fails the run again, and every report says why.
    expired = _quarantine(tmp_path, -1)
    code2, r2, run2, err2 = _night(tmp_path, cases, "--fail-on-skipped")
    assert code2 == 1, err2
    assert by_id(r2)["broken"]["quarantine"]["expired"] is True
    assert f"quarantine expired on {expired}" in err2
    assert f"**yes: quarantine expired on {expired}**" in (run2 / "summary.md").read_text()
    suite2 = ET.parse(run2 / "junit.xml").getroot().find("testsuite")
    assert suite2 is not None and suite2.get("failures") == "2"  # the crash and the skip
    assert f"quarantine expired on {expired}" in (run2 / "report.html").read_text()


def test_a_case_flaky_on_more_nights_than_its_budget_is_reported_and_can_gate(
    tmp_path: Path,
) -> None:
    budget = {"max_flaky": 1, "window": 5}
    loose = {"max_flaky": 3, "window": 5}
    cases = [flaky_case("flake"), {**flaky_case("tolerated"), "flake_budget": loose}]
    code1, r1, run1, err = _night(tmp_path, cases, "--allow-flaky", flake_budget=budget)
    assert code1 == 0, err
    assert by_id(r1)["flake"]["outcome"] == "flaky"
    assert "flake budget exceeded" not in (run1 / "summary.md").read_text()  # 1 of 1
    code2, _, run2, err = _night(tmp_path, cases, "--allow-flaky", flake_budget=budget)
    assert code2 == 0, err  # reported, but no gate asked for
    summary = (run2 / "summary.md").read_text()
    assert "## Over the flake budget (1)" in summary
    assert "flake budget exceeded (2 of 2; 1 allowed)" in summary
    assert "tolerated" not in summary.split("## Over the flake budget")[1].split("##")[0]
    # Night 3 passes cleanly, yet two of the last three nights flaked: the flag gates it.
    calm = [case("flake"), case("tolerated", flake_budget=loose)]
    code3, _, run3, err = _night(tmp_path, calm, "--fail-on-flake-budget", flake_budget=budget)
    assert code3 == 1, err
    assert "--fail-on-flake-budget: flake: flake budget exceeded (2 of 3; 1 allowed)" in err
    suite_el = ET.parse(run3 / "junit.xml").getroot().find("testsuite")
    assert suite_el is not None and suite_el.get("failures") == "1"
    # The suite key does the same as the flag.
    code4, _, _, err = _night(tmp_path, calm, flake_budget=budget, fail_on_flake_budget=True)
    assert code4 == 1, err
