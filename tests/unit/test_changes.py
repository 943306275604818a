"""Change points over real history records (SQLite through record_run / detect): a step is named
at its first night, one slow night is never a change, canaries moving together are a runner
shift, a fingerprint change is reported."""

from __future__ import annotations

import json

import numpy as np
from test_results_support import night, run_id_for

from lab.cli import main
from lab.results.history import case_history, record_run
from lab.results.regression import RUNNER_SHIFTED, UNCONFIRMED, detect

NOISE = np.random.default_rng(29).normal(0.0, 0.01, 40)  # 1 % night-to-night noise


def _nights(tmp_path, latency_of_night) -> list:
    """Twelve nights of case `flux`, each judged by detect before it is recorded (as nightly
    does)."""
    db = tmp_path / "history.sqlite"
    out = []
    for n in range(1, 13):
        r = night(n, {"flux": latency_of_night(n) * float(np.exp(NOISE[n]))})
        detect(db, r)
        record_run(db, r)
        out.append(r)
    return out


def _changes_json(tmp_path, capsys) -> dict:
    capsys.readouterr()
    assert main(["history", "flux", "--changes", "--json", "--out", str(tmp_path)]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_30_percent_step_at_night_7_is_the_one_change(tmp_path, capsys) -> None:
    runs = _nights(tmp_path, lambda n: 1.3 if n >= 7 else 1.0)
    doc = _changes_json(tmp_path, capsys)
    assert len(doc["series"]) == 12
    (change,) = [c for c in doc["changes"] if c["metric"] == "latency_s"]
    assert change["first_run_id"] == run_id_for(7)
    assert 25 < change["change_pct"] < 35
    assert change["before"]["nights"] == 6 and change["after"]["nights"] == 6
    assert change["before"]["ci95"][0] < change["before"]["median"] < change["before"]["ci95"][1]
    assert change["between"]["commit"] == [f"{6:040x}", f"{7:040x}"]
    # the nightly verdicts: night 7 alone is unconfirmed, night 8 confirms it and names night 7
    assert runs[6].cases[0].series_verdict == UNCONFIRMED
    assert runs[7].cases[0].series_verdict == "regressed"
    assert f"sglang: regressed since {run_id_for(7)} (+" in (runs[7].cases[0].change_note or "")
    capsys.readouterr()
    assert main(["history", "flux", "--changes", "--out", str(tmp_path)]) == 0
    assert run_id_for(7) in capsys.readouterr().out


def test_one_slow_night_in_a_flat_series_is_not_called_regressed(tmp_path, capsys) -> None:
    runs = _nights(tmp_path, lambda n: 1.3 if n == 7 else 1.0)
    assert _changes_json(tmp_path, capsys)["changes"] == []
    assert runs[6].cases[0].series_verdict == UNCONFIRMED  # the test flagged it; one night only
    assert [r.cases[0].series_verdict for r in runs[7:]] == [None] * 5


def test_a_drift_no_single_night_flags_is_reported(tmp_path) -> None:
    # +1.5 % a night: never outside tonight's test against the last nights, plain in the series
    runs = _nights(tmp_path, lambda n: 1.015**n)
    assert runs[-1].cases[0].regression != "regressed"  # tonight's test alone says nothing
    last = runs[-1].cases[0]
    assert last.series_verdict == "regressed"
    assert "since" in (last.change_note or "")


def test_canaries_and_a_case_moving_together_are_a_runner_shift(tmp_path) -> None:
    db = tmp_path / "history.sqlite"
    base = {"canary_a": 1.0, "canary_b": 2.0, "flux": 3.0}
    for n in range(1, 9):
        r = night(n, {c: v * float(np.exp(NOISE[n + i])) for i, (c, v) in enumerate(base.items())})
        for c in r.cases:
            c.canary = c.case_id.startswith("canary")
        record_run(db, r)
    tonight = night(9, {c: v * 1.2 for c, v in base.items()})
    for c in tonight.cases:
        c.canary = c.case_id.startswith("canary")
    detect(db, tonight)
    flux = next(c for c in tonight.cases if c.case_id == "flux")
    assert flux.regression == "regressed"  # tonight's test saw it
    assert flux.series_verdict == RUNNER_SHIFTED  # but it is charged to the runner
    assert flux.change_note and "runner shifted (canary canary_a +" in flux.change_note
    assert "canary_b" in flux.change_note
    record_run(db, tonight)
    assert case_history(db, "canary_a")[-1].canary


def test_a_case_moving_alone_is_not_a_runner_shift(tmp_path) -> None:
    db = tmp_path / "history.sqlite"
    base = {"canary_a": 1.0, "flux": 3.0}
    for n in range(1, 9):
        r = night(n, {c: v * float(np.exp(NOISE[n + i])) for i, (c, v) in enumerate(base.items())})
        r.cases[0].canary = True
        record_run(db, r)
    tonight = night(9, {"canary_a": 1.0, "flux": 3.6})
    tonight.cases[0].canary = True
    detect(db, tonight)
    assert tonight.cases[1].series_verdict == UNCONFIRMED


def test_a_runner_fingerprint_change_is_reported(tmp_path) -> None:
    db = tmp_path / "history.sqlite"
    r = night(1, {"flux": 1.0})
    r.runner = {"gpu_name": "NVIDIA H100", "driver": "570.1", "kernel": "6.8"}
    record_run(db, r)
    assert case_history(db, "flux")[0].runner == r.runner
    tonight = night(2, {"flux": 1.0})
    tonight.runner = {"gpu_name": "NVIDIA H100", "driver": "580.2", "kernel": "6.8"}
    detect(db, tonight)
    assert tonight.runner_changed == f"since {run_id_for(1)}: driver 570.1 -> 580.2"


def test_the_latency_chart_marks_the_change_point_at_its_first_night(tmp_path, monkeypatch):
    """report.html's latency chart draws the step of night 7 where `--changes` names it."""
    from lab.results import charts

    runs = _nights(tmp_path, lambda n: 1.3 if n >= 7 else 1.0)
    drawn: list = []
    real_png = charts._png
    monkeypatch.setattr(charts, "_png", lambda fig: drawn.append(fig) or real_png(fig))
    rows = case_history(tmp_path / "history.sqlite", "flux")
    assert charts.latency_history(rows, ["flux"], runs[-1].run_id) is not None
    (ax,) = [a for a in drawn[0].axes if a.get_visible()]
    marked = [ln.get_xdata()[0] for ln in ax.lines if ln.get_linestyle() == ":"]
    assert marked == [6]  # the 7th night, counted from 0
    assert any(t.get_text().startswith("+") and " %" in t.get_text() for t in ax.texts)


def test_the_latency_chart_marks_nothing_for_one_slow_night(tmp_path, monkeypatch):
    from lab.results import charts

    runs = _nights(tmp_path, lambda n: 1.3 if n == 7 else 1.0)
    drawn: list = []
    real_png = charts._png
    monkeypatch.setattr(charts, "_png", lambda fig: drawn.append(fig) or real_png(fig))
    rows = case_history(tmp_path / "history.sqlite", "flux")
    charts.latency_history(rows, ["flux"], runs[-1].run_id)
    (ax,) = [a for a in drawn[0].axes if a.get_visible()]
    assert [ln for ln in ax.lines if ln.get_linestyle() == ":"] == []
