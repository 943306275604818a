from __future__ import annotations

import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_results_support import case, framework, night, run

from lab.contract import Outcome, Phase
from lab.errors import LabError
from lab.results.history import (
    case_history,
    format_history,
    history_rows,
    rebuild_history,
    record_run,
)
from lab.results.regression import detect
from lab.results.store import RunDir, load_results, write_results


def test_a_recorded_run_comes_back_per_case_and_framework(tmp_path):
    db = tmp_path / "runs" / "history.sqlite"
    results = run(
        1,
        [
            case(
                "flux",
                [
                    framework("sglang", 1.2, peak_mib=30_000),
                    framework("vllm-omni", 1.8, speedup=0.67),
                ],
                vram_gib=32.0,
            ),
            case(
                "wan",
                [framework("sglang", None, Outcome.oom, reason="CUDA out of memory")],
                Outcome.oom,
                reason="CUDA out of memory",
                phase=Phase.startup,
            ),
        ],
    )
    record_run(db, results)

    rows = case_history(db, "flux")
    assert [(r.framework, r.latency_s, r.outcome) for r in rows] == [
        ("sglang", 1.2, "passed"),
        ("vllm-omni", 1.8, "passed"),
    ]
    assert rows[0].samples == pytest.approx([1.2 * 0.995, 1.2, 1.2 * 1.005])
    assert rows[0].peak_gpu_memory_mib == 30_000 and rows[0].vram_gib == 32.0
    assert rows[0].gpu_model == results.gpu_model and rows[0].warmup_requests == 1
    assert rows[1].speedup_vs_baseline == 0.67
    (wan,) = case_history(db, "wan")
    assert (wan.outcome, wan.reason, wan.latency_s) == ("oom", "CUDA out of memory", None)


def test_recording_the_same_run_again_replaces_it(tmp_path):
    db = tmp_path / "history.sqlite"
    record_run(db, night(1, {"flux": 1.0, "qwen": 2.0}))
    record_run(db, night(1, {"flux": 1.5}))  # e.g. `lab report` after a fix-up of results
    assert [(r.case_id, r.latency_s) for r in history_rows(db)] == [("flux", 1.5)]


def test_a_run_is_recorded_whole_or_not_at_all(tmp_path):
    db = tmp_path / "history.sqlite"
    record_run(db, night(1, {"flux": 1.0}))
    broken = night(2, {"flux": 1.0})
    broken.cases.append(broken.cases[0])  # the same case twice: the second insert fails
    with pytest.raises(LabError, match=str(db)):
        record_run(db, broken)
    assert {r.run_id for r in history_rows(db)} == {night(1, {}).run_id}
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1


def test_an_interrupted_run_is_recorded_as_interrupted(tmp_path):
    db = tmp_path / "history.sqlite"
    results = run(
        3,
        [case("flux"), case("wan", [], Outcome.interrupted, phase=Phase.warmup, reason="SIGINT")],
        status="interrupted",
    )
    record_run(db, results)
    (row,) = case_history(db, "wan")
    assert (row.status, row.outcome, row.phase, row.reason) == (
        "interrupted",
        "interrupted",
        "warmup",
        "SIGINT",
    )
    assert case_history(db, "flux")[0].status == "interrupted"


def test_case_history_keeps_the_last_runs_oldest_first(tmp_path):
    db = tmp_path / "history.sqlite"
    for n in (3, 1, 4, 2):  # recorded out of order: the timestamp decides
        record_run(db, night(n, {"flux": float(n), "other": 9.0}))
    rows = case_history(db, "flux", limit=3)
    assert [r.latency_s for r in rows] == [2.0, 3.0, 4.0]
    assert case_history(db, "unknown") == []
    assert case_history(tmp_path / "absent.sqlite", "flux") == []
    assert not (tmp_path / "absent.sqlite").exists()  # reading never creates a history


def test_a_corrupt_history_is_moved_aside_named_and_never_replaced(tmp_path):
    runs = tmp_path / "runs"
    db = runs / "history.sqlite"
    garbage = os.urandom(64 * 1024)
    runs.mkdir()
    db.write_bytes(garbage)
    results = night(7, {"flux": 1.0})
    rd = RunDir.create(runs, results.run_id)
    write_results(rd, results)  # the CLI writes results.json before touching history

    with pytest.raises(LabError) as err:
        record_run(db, results)

    aside = [p for p in runs.iterdir() if p.name.startswith("history.sqlite.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    assert str(db) in str(err.value) and str(aside[0]) in str(err.value)
    assert not db.exists()  # not silently re-created in the same call
    assert load_results(rd) == results  # the run's own results still stand


def test_a_database_with_a_damaged_page_is_reported_too(tmp_path):
    db = tmp_path / "history.sqlite"
    for n in range(1, 30):
        record_run(db, night(n, {f"case{i}": 1.0 + i for i in range(40)}))
    size = db.stat().st_size
    with open(db, "r+b") as f:  # keep the header, trash the pages after it
        f.seek(4096)
        f.write(os.urandom(size - 4096))

    with pytest.raises(LabError, match="not a readable SQLite database"):
        case_history(db, "case1")
    assert not db.exists()
    assert len(list(tmp_path.glob("history.sqlite.corrupt-*"))) == 1


def test_regression_detection_on_a_corrupt_history_is_an_error_not_silence(tmp_path):
    db = tmp_path / "history.sqlite"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LabError, match=r"history\.sqlite"):
        detect(db, night(2, {"flux": 1.0}))


def test_a_history_from_a_newer_lab_is_refused_and_left_alone(tmp_path):
    db = tmp_path / "history.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    before = db.read_bytes()
    with pytest.raises(LabError, match="newer lab"):
        record_run(db, night(1, {"flux": 1.0}))
    assert db.read_bytes() == before


def test_a_history_path_that_is_a_folder_is_an_error_and_is_not_moved(tmp_path):
    db = tmp_path / "history.sqlite"
    db.mkdir()
    with pytest.raises(LabError, match=str(db)):
        record_run(db, night(1, {"flux": 1.0}))
    assert db.is_dir()


def test_lab_history_table_shows_outcomes_regressions_and_trend(tmp_path):
    db = tmp_path / "history.sqlite"
    for n in range(1, 6):
        record_run(db, night(n, {"flux": 1.0}))
    slow = night(6, {"flux": 1.2})
    detect(db, slow)
    record_run(db, slow)
    oom = run(7, [case("flux", [framework("sglang", None, Outcome.oom)], Outcome.oom)])
    record_run(db, oom)

    text = format_history(case_history(db, "flux"))
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["date", "run", "framework", "outcome"]
    slow_line = next(line for line in lines if slow.run_id in line)
    assert "1.200 s" in slow_line and "regressed" in slow_line and slow_line.endswith("↑")
    oom_line = next(line for line in lines if oom.run_id in line)
    assert " oom " in oom_line and "regressed" not in oom_line
    assert "2026-11-05 01:00" in text
    assert lines[-1] == "latest: sglang +20.0 % vs median of 5 earlier"
    assert format_history([]) == "no recorded runs for this case"


def test_runs_recorded_at_the_same_time_all_land_in_a_new_history(tmp_path):
    db = tmp_path / "history.sqlite"
    nights = [night(n, {"flux": float(n)}) for n in range(1, 9)]
    with ThreadPoolExecutor(max_workers=4) as pool:  # each call opens its own connection
        list(pool.map(lambda r: record_run(db, r), nights))
    assert sorted(r.latency_s for r in case_history(db, "flux")) == [float(n) for n in range(1, 9)]


def test_history_can_be_rebuilt_from_the_run_folders_after_corruption(tmp_path):
    db = tmp_path / "history.sqlite"
    for n in (1, 2, 3):
        results = night(n, {"flux": float(n)})
        write_results(RunDir.create(tmp_path, results.run_id), results)
    db.write_bytes(os.urandom(4096))
    with pytest.raises(LabError):
        case_history(db, "flux")

    assert rebuild_history(db, sorted(tmp_path.glob("2026*"))) == 3
    assert [r.latency_s for r in case_history(db, "flux")] == [1.0, 2.0, 3.0]
