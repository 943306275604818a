"""Triage across nights, end to end: real `lab nightly` runs on the reference server write the
real SQLite history, and the next night reads it (new / still failing / fixed / flaky)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from nightly_helpers import by_id, run_nightly, write_suite
from nightly_helpers import ref_case as case

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the netns runtime needs root here"),
]


def crashing(cid: str, **over: Any) -> dict[str, Any]:
    fault = {"serve_args": "--warmup-mode off", "extra_env": {"REFSERVER_FAULT": "exit-startup:4"}}
    return case(cid, frameworks={"reference": fault}, **over)


def night(tmp: Path, n: int, cases: list[dict[str, Any]]) -> tuple[int, dict, Path, str]:
    suite = write_suite(tmp, cases, measurement_repeats=1)
    return run_nightly(suite, tmp / "runs", "netns", env={"LAB_COMMIT_SHA": f"{n:040x}"})


def test_three_nights_new_still_failing_since_the_first_and_fixed(tmp_path: Path) -> None:
    code1, r1, _, err = night(
        tmp_path, 1, [case("steady"), crashing("broken"), crashing("fixme"), case("later_bad")]
    )
    assert code1 == 1, err
    assert {c["status_change"] for c in r1["cases"]} == {"first_run"}
    _, r2, _, err = night(
        tmp_path, 2, [case("steady"), crashing("broken"), crashing("fixme"), crashing("later_bad")]
    )
    got2 = by_id(r2)
    assert got2["later_bad"]["status_change"] == "new_failure"
    assert got2["broken"]["status_change"] == "still_failing"
    code3, r3, run3, err = night(
        tmp_path, 3, [case("steady"), crashing("broken"), case("fixme"), crashing("later_bad")]
    )
    assert code3 == 1, err
    got = by_id(r3)
    assert got["steady"]["status_change"] == "still_passing"
    assert got["fixme"]["status_change"] == "fixed" and got["fixme"]["failing_since"] is None
    broken = got["broken"]
    assert broken["status_change"] == "still_failing"
    assert broken["failing_since"]["run_id"] == r1["run_id"]
    assert broken["failing_since"]["commit_sha"] == f"{1:040x}"
    assert broken["failing_since"]["streak"] == 3
    later = got["later_bad"]["failing_since"]
    assert (later["run_id"], later["streak"]) == (r2["run_id"], 2)
    # The sglang-shaped rows carry it too, failures first.
    rows = r3["results"]
    assert [r["case_id"] for r in rows][:2] == ["broken", "later_bad"]
    assert rows[0]["status_change"] == "still_failing"
    assert rows[0]["failing_since"]["run_id"] == r1["run_id"]
    summary = (run3 / "summary.md").read_text()
    assert f"still failing since {r1['run_id']}" in summary and "3 nights" in summary
    assert "**Fixed since the last comparable night:** fixme" in summary
    props = {
        p.get("name"): p.get("value")
        for p in ET.parse(run3 / "junit.xml").getroot().iter("property")
    }
    assert props["still_failing"] == "broken,later_bad" and props["fixed"] == "fixme"
    assert props["failing_since.broken"].startswith(r1["run_id"])
    html = (run3 / "report.html").read_text()
    assert html.index('class="status still-failing"') < html.index('class="status fixed"')


def test_corrupt_history_gives_first_run_with_a_note_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "history.sqlite").write_bytes(b"not a database at all" * 100)
    code, results, run_dir, err = night(tmp_path, 1, [case("steady"), crashing("broken")])
    assert code == 2, err  # the history problem is reported, after every file is written
    for c in results["cases"]:
        assert c["status_change"] == "first_run"
        assert "no history to compare with" in c["status_note"]
    assert list((tmp_path / "runs").glob("history.sqlite.corrupt-*"))
    assert "first run" in (run_dir / "summary.md").read_text()
