"""quarantine.json and the flake budget (lab/results/gating.py): bad entries are exit 2 naming
file and line from `lab validate` and `lab nightly`; a held quarantine keeps a failure from
gating until the run's day is past `until`; the budget counts flaky nights of the real SQLite
history. End to end on real nightlies: tests/integration/test_quarantine.py."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from test_results_support import case, framework, run

from lab.config import FlakeBudget, load_suite
from lab.contract import Outcome, Phase
from lab.errors import ConfigError
from lab.results.gating import (
    apply_quarantine,
    flake_budget_exceeded,
    load_known_failures,
    load_quarantine,
)
from lab.results.history import record_run
from lab.results.junit_xml import render_junit
from lab.results.summary_md import render_summary
from lab.results.triage import gating_failures, sign_failures, status_changes

ROOT = Path(__file__).resolve().parents[2]
ISSUE = "https://github.com/example/lab/issues/12"


def _suite(tmp: Path, entries: Any) -> tuple[Path, Path]:
    suite = tmp / "suite.json"
    one = {"id": "steady", "model": "ref://tiny", "num_gpus": 0, "frameworks": {"reference": {}}}
    suite.write_text(json.dumps({"cases": [one, {**one, "id": "broken"}]}))
    q = tmp / "quarantine.json"
    q.write_text(entries if isinstance(entries, str) else json.dumps(entries, indent=2))
    return suite, q


def _lab(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab.cli", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


GOOD = {"case": "broken", "issue": ISSUE, "reason": "crashes on start", "until": "2026-12-31"}


# (entries, the line of the bad entry, what the message says) — indent=2 puts entry i of
# {"quarantine": [...]} on line 3 + 6 * i (four fields, two braces).
BAD = [
    pytest.param({"quarantine": [GOOD, {**GOOD, "case": "nope"}]}, 9, "unknown case id", id="id"),
    pytest.param({"quarantine": [{**GOOD, "until": "2026-13-01"}]}, 3, "until", id="month"),
    pytest.param({"quarantine": [{**GOOD, "until": "next week"}]}, 3, "YYYY-MM-DD", id="date"),
    pytest.param(
        {"quarantine": [{k: v for k, v in GOOD.items() if k != "issue"}]},
        3,
        "issue URL",
        id="no-issue",
    ),
    pytest.param({"quarantine": [{**GOOD, "issue": "ask in chat"}]}, 3, "issue URL", id="not-url"),
    pytest.param({"quarantine": [{**GOOD, "reason": " "}]}, 3, "reason", id="no-reason"),
    pytest.param({"quarantine": [GOOD, "broken"]}, 9, "expected an object", id="not-object"),
    pytest.param({"quarantine": [GOOD, GOOD]}, 9, "already quarantined on line 3", id="twice"),
    pytest.param({"quarantine": [{**GOOD, "signature": "x"}]}, 3, "exactly one", id="both"),
    pytest.param({"quarantine": [{**GOOD, "untill": "x"}]}, 3, "unknown field", id="typo"),
    pytest.param('{"quarantine": [\n  {"case": "broken",}\n]}', 2, "not valid JSON", id="json"),
    pytest.param({"quarantine": {"case": "broken"}}, 1, "expected a list", id="not-list"),
]


@pytest.mark.parametrize(("entries", "line", "says"), BAD)
def test_a_bad_quarantine_entry_is_exit_2_from_validate_naming_file_and_line(
    tmp_path: Path, entries: Any, line: int, says: str
) -> None:
    suite, q = _suite(tmp_path, entries)
    r = _lab("validate", str(suite))
    assert r.returncode == 2, r.stderr
    assert f"{q}:{line}:" in r.stderr and says in r.stderr, r.stderr


def test_a_bad_quarantine_stops_lab_nightly_before_anything_starts(tmp_path: Path) -> None:
    suite, q = _suite(tmp_path, {"quarantine": [{**GOOD, "until": "31/12/2026"}]})
    out = tmp_path / "runs"
    r = _lab(
        "nightly", "--config", str(suite), "--runtime", "local", "--gpus", "none", "--out", str(out)
    )
    assert r.returncode == 2, r.stderr
    assert f"{q}:3: quarantine[0].until" in r.stderr
    assert not out.exists() or not list(out.iterdir())  # no run folder: nothing ran


def test_a_good_quarantine_validates_and_says_so(tmp_path: Path) -> None:
    suite, _ = _suite(tmp_path, [GOOD])  # the list alone is a quarantine file too
    r = _lab("validate", str(suite))
    assert r.returncode == 0, r.stderr
    assert "2 cases, 1 quarantined" in r.stdout


def test_brackets_inside_strings_do_not_move_the_line_named(tmp_path: Path) -> None:
    (tmp_path / "known_failures.json").write_text(
        '{"known_failures": [\n'
        '  {"regex": "CUDA error \\\\[\\\\{", "issue": "x"},\n'
        '  {"regex": "("  , "issue": "y"}\n'
        "]}"
    )
    with pytest.raises(Exception, match=r"known_failures.json:3: known_failures\[1\].regex"):
        load_known_failures(tmp_path)


def _failing(cid: str = "broken") -> Any:
    fw = framework("sglang", None, Outcome.crashed, reason="exit 4")
    reason = "server exited with code 4"
    return case(cid, [fw], Outcome.crashed, reason=reason, phase=Phase.startup)


def test_a_quarantine_holds_through_its_until_day_and_gates_the_day_after(tmp_path: Path) -> None:
    _, _ = _suite(tmp_path, [{**GOOD, "until": "2026-11-05"}])
    entries = load_quarantine(tmp_path, ["steady", "broken"])
    for night, expired in ((4, False), (5, False), (6, True)):  # run() starts on 2026-11-night
        results = run(night, [case("steady"), _failing()])
        sign_failures(results)
        apply_quarantine(results, entries)
        q = results.cases[1].quarantine
        assert q is not None and q.expired is expired and results.cases[0].quarantine is None
        gating = gating_failures(results, new_only=False, allow_flaky=False)
        assert [c.case_id for c in gating] == (["broken"] if expired else [])
        summary = render_summary(results)
        assert "## Quarantined (1)" in summary
        if expired:
            assert "quarantine expired on 2026-11-05" in summary
        suite_el = ET.fromstring(render_junit(results)).find("testsuite")
        assert suite_el is not None
        assert suite_el.get("failures") == ("1" if expired else "0")
        assert suite_el.get("skipped") == ("0" if expired else "1")
        (tc,) = [t for t in suite_el.iter("testcase") if t.get("name") == "broken"]
        if not expired:
            skipped = tc.find("skipped")
            assert skipped is not None and skipped.get("type") == "quarantined"
            assert "quarantined until 2026-11-05" in skipped.get("message", "")
            assert "server exited with code 4" in skipped.get("message", "")


def test_a_signature_quarantine_holds_only_the_cases_failing_with_it(tmp_path: Path) -> None:
    results = run(1, [_failing("a"), case("b")])
    sign_failures(results)
    sig_id = results.cases[0].failure_signature_id
    entry = {k: v for k, v in GOOD.items() if k != "case"} | {"signature": sig_id}
    (tmp_path / "quarantine.json").write_text(json.dumps([entry]))
    apply_quarantine(results, load_quarantine(tmp_path, ["a", "b"]))
    assert results.cases[0].quarantine is not None
    assert results.cases[0].quarantine.matched == f"signature {sig_id}"
    assert results.cases[1].quarantine is None


def test_a_held_degraded_case_does_not_fail_junit_under_fail_on_degraded() -> None:
    results = run(1, [case("deg", [framework("sglang", 2.0)], Outcome.degraded, rung="low-vram")])
    results.fail_on = ["degraded"]
    results.cases[0].quarantine = None
    assert ET.fromstring(render_junit(results)).get("failures") == "1"
    from lab.results.model import Quarantine

    results.cases[0].quarantine = Quarantine(
        issue=ISSUE, reason="r", until="2026-12-01", matched="case deg", expired=False
    )
    root = ET.fromstring(render_junit(results))
    assert root.get("failures") == "0"


def _flaky_night(n: int, flaky: bool, budget: FlakeBudget | None) -> Any:
    results = run(n, [case("f", outcome=Outcome.flaky if flaky else Outcome.passed)])
    results.cases[0].flake_budget = budget
    return results


def test_the_flake_budget_counts_the_flaky_nights_of_the_recorded_history(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite"
    budget = FlakeBudget(max_flaky=1, window=3)
    # Nights 1-4: flaky, passed, flaky, passed, recorded; tonight (5) flaky.
    for n, flaky in ((1, True), (2, False), (3, True), (4, False)):
        record_run(db, _flaky_night(n, flaky, budget))
    tonight = _flaky_night(5, True, budget)
    status_changes(db, tonight)
    c = tonight.cases[0]
    assert c.flake_rate is not None and (c.flake_rate.flaky, c.flake_rate.nights) == (2, 3)
    assert flake_budget_exceeded(c)  # nights 3, 4, 5: two flaky, one allowed
    assert "flake budget exceeded (2 of 3; 1 allowed)" in render_summary(tonight)
    wide = _flaky_night(5, True, FlakeBudget(max_flaky=3, window=10))
    status_changes(db, wide)
    assert wide.cases[0].flake_rate is not None and wide.cases[0].flake_rate.flaky == 3
    assert not flake_budget_exceeded(wide.cases[0])
    tonight.fail_on = ["flake_budget"]
    suite_el = ET.fromstring(render_junit(tonight)).find("testsuite")
    assert suite_el is not None and suite_el.get("failures") == "1"


def _budget_suite(tmp: Path, suite_budget: Any, case_budget: Any = None) -> Path:
    c: dict[str, Any] = {"id": "a", "model": "m", "frameworks": {"reference": {}}}
    if case_budget is not None:
        c["flake_budget"] = case_budget
    p = tmp / "suite.json"
    p.write_text(json.dumps({"flake_budget": suite_budget, "cases": [c, {**c, "id": "b"}]}))
    return p


def test_a_case_override_wins_over_the_suite_default(tmp_path: Path) -> None:
    loaded = load_suite(_budget_suite(tmp_path, {"max_flaky": 2, "window": 10}))
    assert loaded.case("a").flake_budget == FlakeBudget(max_flaky=2, window=10)
    loaded = load_suite(
        _budget_suite(tmp_path, {"max_flaky": 2, "window": 10}, {"max_flaky": 0, "window": 5})
    )
    assert loaded.case("a").flake_budget == FlakeBudget(max_flaky=0, window=5)


@pytest.mark.parametrize(
    ("budget", "says"),
    [
        ({"max_flaky": 3, "window": 3}, "must be below window"),
        ({"max_flaky": -1, "window": 3}, "greater than or equal to 0"),
        ({"max_flaky": 1}, "window"),
        ({"max_flaky": 1, "window": 5, "windw": 1}, "unknown key"),
    ],
)
def test_a_bad_flake_budget_names_the_case_and_field(
    tmp_path: Path, budget: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigError, match=says) as e:
        load_suite(_budget_suite(tmp_path, None, budget))
    assert "'a'" in str(e.value) or "a:" in str(e.value) or "case a" in str(e.value)
    assert "flake_budget" in str(e.value)
