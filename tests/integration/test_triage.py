"""Triage across nights, end to end: real `lab nightly` runs on the reference server write the
real SQLite history, and the next night reads it (new / still failing / fixed / flaky)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from nightly_helpers import ROOT, by_id, lab_argv, run_nightly, write_suite
from nightly_helpers import ref_case as case
from test_report_browser import CHROMIUM, _chromium

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the netns runtime needs root here"),
]


def crashing(cid: str, **over: Any) -> dict[str, Any]:
    fault = {"serve_args": "--warmup-mode off", "extra_env": {"REFSERVER_FAULT": "exit-startup:4"}}
    return case(cid, frameworks={"reference": fault}, **over)


def night(
    tmp: Path, n: int, cases: list[dict[str, Any]], *extra: str, **top: Any
) -> tuple[int, dict, Path, str]:
    """Night n: `lab nightly` of these cases into tmp/runs, at commit n."""
    suite = write_suite(tmp, cases, measurement_repeats=1, **top)
    env = {"LAB_COMMIT_SHA": f"{n:040x}"}
    return run_nightly(suite, tmp / "runs", "netns", *extra, env=env)


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
    if CHROMIUM:  # as a user sees it: the DOM the real headless browser built from the file
        dom = _chromium(
            "--dump-dom", (run3 / "report.html").as_uri(), profile=tmp_path / "p"
        ).stdout
        failures = dom.index("<h2>Failures")
        assert failures < dom.index("still failing since") < dom.index("Failures by signature")
        assert dom.count('class="signature"') == 1  # broken and later_bad: one crash
        assert "(crashed in startup)" in dom and ": broken, later_bad</li>" in dom


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


def flaky_case(cid: str, fault: str = "fail-first-starts:1:4") -> dict[str, Any]:
    fw = {"serve_args": "--warmup-mode off", "extra_env": {"REFSERVER_FAULT": fault}}
    return case(cid, frameworks={"reference": fw})


def test_a_server_failing_its_first_start_is_flaky_not_green(tmp_path: Path) -> None:
    cases = [flaky_case("flake"), crashing("broken"), case("steady")]
    code, results, run_dir, err = night(tmp_path, 1, cases)
    assert code == 1, err  # flaky counts as a failure
    got = by_id(results)
    flake = got["flake"]
    assert flake["outcome"] == "flaky"
    assert [a["outcome"] for a in flake["attempts"]] == ["crashed", "passed"]
    assert flake["attempts"][0]["rung"] == flake["attempts"][1]["rung"]
    assert (
        flake["attempts"][0]["failure_signature_id"]
        and not flake["attempts"][1]["failure_signature_id"]
    )
    assert "flaky" in flake["confirmation"]
    assert (run_dir / "attempts" / "flake.fault-starts").read_text().split() == ["1", "2"]
    broken = got["broken"]
    assert [a["outcome"] for a in broken["attempts"]] == ["crashed", "crashed"]
    assert "failed again, same signature" in broken["confirmation"]
    assert got["steady"]["outcome"] == "passed" and len(got["steady"]["attempts"]) == 1
    row = next(r for r in results["results"] if r["case_id"] == "flake")
    assert row["outcome"] == "flaky" and row["error"].startswith("flaky")
    # Second night, --allow-flaky: the flake alone does not fail the run; the history counts it.
    second = [flaky_case("flake"), case("steady")]
    code2, r2, run2, err = night(tmp_path, 2, second, "--allow-flaky")
    assert code2 == 0, err
    assert by_id(r2)["flake"]["flake_rate"] == {"flaky": 2, "nights": 2}
    assert "flaky in 2 of the last 2 nights" in (run2 / "summary.md").read_text()
    hist = subprocess.run(
        [sys.executable, "-m", "lab.cli", "history", "flake", "--out", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "flaky in 2 of the last 2 nights" in hist.stdout
    # confirm_failures 0: the first crash is the verdict.
    code3, r3, _, err = night(tmp_path, 3, [flaky_case("flake")], confirm_failures=0)
    assert code3 == 1, err
    assert by_id(r3)["flake"]["outcome"] == "crashed"
    assert len(by_id(r3)["flake"]["attempts"]) == 1


def test_same_oom_text_shares_a_signature_and_a_known_failure_is_marked(tmp_path: Path) -> None:
    # Both OOM with torch's text on budgets of different sizes: one signature. One rung each
    # (the ladder would only OOM again, slower).
    one = [{"name": "as-configured"}]
    cases = [
        case("oom_a", vram_gib=0.0005, ladder=one),
        case("oom_b", vram_gib=0.0007, ladder=one),
    ]
    (tmp_path / "known_failures.json").write_text(
        json.dumps(
            {
                "known_failures": [
                    {
                        "regex": "OutOfMemoryError",
                        "issue": "https://github.com/example/lab/issues/7",
                        "note": "tiny budget on purpose",
                    }
                ]
            }
        )
    )
    code, results, run_dir, err = night(tmp_path, 1, cases)
    assert code == 1, err
    a, b = by_id(results)["oom_a"], by_id(results)["oom_b"]
    assert a["outcome"] == b["outcome"] == "oom"
    assert a["failure_signature_id"] == b["failure_signature_id"]
    sig = a["failure_signature"]
    assert sig.startswith("oom in ") and "OutOfMemoryError" in sig and "<N>" in sig
    assert a["attempts"][0]["reason"] != b["attempts"][0]["reason"]  # the budgets differ
    assert a["known_failure"]["issue"] == "https://github.com/example/lab/issues/7"
    summary = (run_dir / "summary.md").read_text()
    assert f"2 cases: `{sig.partition(': ')[2]}`" in summary
    assert "known: https://github.com/example/lab/issues/7" in summary
    # Only known (or already failing) failures: --fail-on-new-only passes the night.
    code2, _, _, err = night(tmp_path, 2, cases, "--fail-on-new-only")
    assert code2 == 0, err


def test_a_known_failures_file_that_does_not_parse_is_exit_2_naming_file_and_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "known_failures.json").write_text('{"known_failures": [\n  {"regex": "x",}\n]}')
    suite = write_suite(tmp_path, [case("steady")])
    r = subprocess.run(
        lab_argv("nightly", suite, tmp_path / "runs", "netns"),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 2
    assert f"{tmp_path / 'known_failures.json'}:2:" in r.stderr
    assert not list((tmp_path / "runs").glob("*/results.json"))  # nothing ran


def test_lab_fit_bisects_to_the_boundary_the_cpu_budget_implies(tmp_path: Path) -> None:
    from lab.refserver.budget import MIB, Placement, estimate_peak
    from lab.refserver.model import build_on_meta, weight_bytes
    from lab.refserver.presets import PRESETS

    tiny = PRESETS["tiny"]
    resident = Placement(False, "resident", False)
    need_gib = estimate_peak(
        tiny, weight_bytes(build_on_meta(tiny), 4), resident, el=4, width=256, height=256
    ) / (MIB * 1024)
    suite = write_suite(tmp_path, [case("tiny256", size=256)], measurement_repeats=1)
    argv = [
        *lab_argv("fit", suite, tmp_path / "runs", "netns"),
        "--lo",
        "0.01",
        "--hi",
        "0.08",
        "--step",
        "0.01",
    ]
    argv.insert(argv.index("fit") + 1, "tiny256")
    r = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    fit = json.loads(next((tmp_path / "runs").glob("*/fit.json")).read_text())
    assert fit["boundary_gib"] - 0.01 < need_gib <= fit["boundary_gib"], (need_gib, fit)
    assert f"tiny256 needs {fit['boundary_gib']:g} GiB" in r.stdout
    by_size = {p["vram_gib"]: p for p in fit["probes"]}
    assert by_size[fit["boundary_gib"]]["outcome"] == "passed"
    below = round(fit["boundary_gib"] - 0.01, 6)
    assert below in by_size and by_size[below]["outcome"] == "oom"
    # One run directory holds every probe, as a nightly's does.
    run_dir = next((tmp_path / "runs").glob("*/fit.json")).parent
    results = json.loads((run_dir / "results.json").read_text())
    assert len(results["cases"]) == len(fit["probes"])
    assert (run_dir / "summary.md").is_file()
    assert not (tmp_path / "runs" / "history.sqlite").exists()  # a fit is not a night
