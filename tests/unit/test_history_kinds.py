"""History knows what kind of run each was and whether it shared the host: only unshared
nightlies are baselines for the next night's verdict."""

from __future__ import annotations

import sqlite3

import pytest
from test_results_support import night

from lab.results.history import case_history, record_run
from lab.results.regression import detect

CASES = {"flux": 1.00, "wan": 40.0}


@pytest.mark.parametrize(
    "other", [{"kind": "repro"}, {"kind": "selftest"}, {"kind": "replay"}, {"shared_host": True}]
)
def test_only_unshared_nightlies_are_baselines(tmp_path, other: dict) -> None:
    db = tmp_path / "history.sqlite"
    slower = {c: v * 2 for c, v in CASES.items()}
    # (night() dates one digit of day: nights 1 to 9)
    for n in range(1, 5):  # four nightlies, twice as slow as the runs after them: the baseline
        record_run(db, night(n, slower))
    for n in range(5, 9):  # four faster runs of another kind, or sharing the host
        r = night(n, CASES)
        for k, v in other.items():
            setattr(r, k, v)
        record_run(db, r)
    tonight = night(9, slower)
    detect(db, tonight)
    for case in tonight.cases:  # judged against the four nightlies alone
        (finding,) = case.regressions
        assert finding.baseline_runs == 4
        assert finding.baseline_median_s == pytest.approx(2 * CASES[case.case_id])
    rows = case_history(db, "flux")
    assert rows[-1].kind == other.get("kind", "nightly")
    assert rows[-1].shared_host is other.get("shared_host", False)


def test_a_history_from_before_the_kind_column_still_reads(tmp_path) -> None:
    db = tmp_path / "history.sqlite"
    record_run(db, night(1, CASES))
    with sqlite3.connect(db) as conn:  # as the lab wrote it before: no kind, no shared_host
        conn.execute("ALTER TABLE runs DROP COLUMN kind")
        conn.execute("ALTER TABLE runs DROP COLUMN shared_host")
    record_run(db, night(2, CASES))
    rows = case_history(db, "flux")
    assert [(r.kind, r.shared_host) for r in rows] == [("nightly", False)] * 2


def test_lab_history_takes_an_alias(tmp_path, capsys) -> None:
    import json

    from lab.cli import main

    suite = tmp_path / "suite.json"
    c = {"id": "flux", "aliases": ["fx"], "model": "org/flux", "frameworks": {"sglang": {}}}
    suite.write_text(json.dumps({"cases": [c]}))
    record_run(tmp_path / "history.sqlite", night(1, CASES))
    for name in ("fx", "org/flux"):
        assert main(["history", name, "--config", str(suite), "--out", str(tmp_path)]) == 0
        assert "20261101T010000Z" in capsys.readouterr().out  # the run of case flux
    assert main(["history", "nope", "--config", str(suite), "--out", str(tmp_path)]) == 2
