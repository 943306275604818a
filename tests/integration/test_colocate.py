"""GPU sharing end to end on the CPU: a held-out suite of kind "test" cases whose recorded
histories make some fit one card together and one not; a measured comparison beside them.
The GPU is the one fake (GpuInfo for a card NVML would list; no NVML, so no release check and no
new peaks): the sandboxes, servers, netns, history and reports are the real ones. The dry run
places the cases as the estimates say; the run does so too; a co-location OOM (a case whose
real need is above its learned share) is re-run alone and reported passed with the note, and its
estimate is raised for the next run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lab.config import load_suite
from lab.contract import AttemptResult, FrameworkResult, Outcome, Telemetry
from lab.errors import RuntimeUnavailable
from lab.host.estimates import COMPARISON_NEVER_SHARES, learn, planned_placements
from lab.host.gpus import GpuInfo
from lab.host.plan import plan_cases
from lab.host.progress import Progress
from lab.host.run import RunExecutor, RunOptions
from lab.host.runtimes.netns import NetnsRuntime
from lab.results.history import record_run
from lab.results.model import CaseResult, RunResults
from lab.results.reports import write_reports
from lab.results.store import RunDir, write_results

ROOT = Path(__file__).resolve().parents[2]
CARD = GpuInfo(0, "NVIDIA H100 80GB HBM3 (fake)", "GPU-00000000-fake", 80 * 1024.0)
TEST_CMD = (
    "{env} {{python}} -m lab.e2e {{config_dir}}/tests/test_colocate_e2e.py "
    "--junit {{out_dir}}/junit.xml"
)
# case id -> (peak GiB on record, extra env of its command); None: no history
CASES: dict[str, tuple[float | None, str]] = {
    "small_a": (10.0, "LAB_COLOCATE_GIB=0.5"),
    "small_b": (10.5, "LAB_COLOCATE_GIB=0.5"),
    "needs_more": (10.0, "LAB_COLOCATE_NEEDS_GIB=30"),  # learned 10, really needs 30
    "big": (60.0, "LAB_COLOCATE_GIB=0.5"),  # fits the card alone, not beside the others
    "unknown": (None, "LAB_COLOCATE_GIB=0.5"),  # no history: alone
}


def _suite(tmp: Path) -> Path:
    (tmp / "tests").mkdir(parents=True, exist_ok=True)
    src = ROOT / "configs" / "tests" / "test_colocate_e2e.py"
    (tmp / "tests" / "test_colocate_e2e.py").write_text(src.read_text())
    cases: list[dict[str, object]] = [
        {
            "id": cid,
            "kind": "test",
            "model": "ref-llm://tiny",
            "num_gpus": 1,
            "est_time_s": 30,
            "command": TEST_CMD.format(env=env),
            "junit_path": "junit.xml",
        }
        for cid, (_peak, env) in CASES.items()
    ]
    cases.append(
        {
            "id": "perf_chat",
            "model": "ref-llm://tiny",
            "task": "chat",
            "prompt": "Hi",
            "num_gpus": 1,
            "est_time_s": 30,
            "measurement_repeats": 1,
            "warmup_requests": 0,
            "frameworks": {"reference-llm": {}},
        }
    )
    path = tmp / "colocate.json"
    path.write_text(
        json.dumps({"suite": "colocate", "image": "host", "startup_timeout_s": 120, "cases": cases})
    )
    return path


def _history(root: Path, peaks: dict[str, float]) -> None:
    """One recorded earlier run on this GPU class, each case alone, with its NVML peak."""
    rd = RunDir.create(root, "20260101T000000Z-past")
    t0 = time.time() - 3600

    def case(cid: str, peak: float) -> CaseResult:
        fr = FrameworkResult(
            framework="test",
            outcome=Outcome.passed,
            telemetry=Telemetry(peak_gpu_memory_mib=peak * 1024),
        )
        a = AttemptResult(
            run_id=rd.run_id, case_id=cid, attempt=1, rung="as-configured",
            outcome=Outcome.passed, frameworks=[fr], gpus=[0], started_at=t0, finished_at=t0 + 5,
        )  # fmt: skip
        return CaseResult(case_id=cid, outcome=Outcome.passed, attempts=[a], gpus=[0])

    results = RunResults(
        run_id=rd.run_id,
        timestamp="2026-01-01T00:00:00+00:00",
        host="h",
        gpu_model=CARD.name,
        status="finished",
        cases=[case(c, p) for c, p in peaks.items()],
    )
    write_results(rd, results)
    record_run(root / "history.sqlite", results)


def _peaks() -> dict[str, float]:
    found = {c: p for c, (p, _e) in CASES.items() if p is not None}
    return found | {"perf_chat": 5.0}


def test_the_dry_run_places_the_cases_as_their_estimates_say(tmp_path: Path) -> None:
    loaded = load_suite(_suite(tmp_path))
    _history(tmp_path / "runs", _peaks())
    ests = learn(loaded.suite.cases, CARD.name, tmp_path / "runs", 80.0)
    assert ests["small_a"].vram_gib == pytest.approx(12.0)  # p90 10 x 1.2
    assert "1 peaks" in ests["small_a"].vram_source
    assert ests["unknown"].share_gib is None and "no peak VRAM" in ests["unknown"].vram_source
    assert ests["perf_chat"].exclusive_reason == COMPARISON_NEVER_SHARES
    placed = planned_placements([(c.id, 1, ests[c.id]) for c in loaded.suite.cases], 1, 80.0)
    # the three small ones share the card; big (72 GiB) does not fit beside them; the rest alone
    assert set(placed["small_a"].neighbours) == {"small_b", "needs_more"}
    assert placed["big"].neighbours == [] and placed["big"].start_s >= placed["small_a"].end_s
    assert placed["perf_chat"].neighbours == [] and placed["unknown"].neighbours == []


def test_a_corrupt_history_teaches_nothing_and_stays_for_the_run_to_report(tmp_path: Path) -> None:
    # A dry run changes nothing; a nightly reports the corrupt file when it records (exit 2).
    loaded = load_suite(_suite(tmp_path))
    db = tmp_path / "runs" / "history.sqlite"
    db.parent.mkdir()
    db.write_bytes(b"not a database" * 100)
    ests = learn(loaded.suite.cases, CARD.name, tmp_path / "runs", 80.0)
    assert all(e.share_gib is None for e in ests.values())
    assert db.read_bytes() == b"not a database" * 100
    assert not list(db.parent.glob("history.sqlite.corrupt-*"))


@pytest.mark.netns
@pytest.mark.slow
def test_sharing_runs_end_to_end_and_a_colocation_oom_passes_alone(tmp_path: Path) -> None:
    runtime = NetnsRuntime(state_dir=tmp_path / "state")
    try:
        runtime.check()
    except RuntimeUnavailable as e:
        pytest.skip(f"no network namespaces here: {e}")
    loaded = load_suite(_suite(tmp_path))
    root = tmp_path / "runs"
    _history(root, _peaks())
    plans = plan_cases(loaded, loaded.suite.cases, [CARD], None)
    rd = RunDir.create(root)
    executor = RunExecutor(
        loaded, plans, runtime, [CARD], rd.path, rd.run_id, RunOptions(out_root=root),
        Progress(live=False),
    )  # fmt: skip
    results = executor.run()
    by = {c.case_id: c for c in results.cases}
    assert all(c.outcome is Outcome.passed for c in results.cases), [
        (c.case_id, c.outcome, c.reason) for c in results.cases
    ]
    # the co-located failure is in the record, then the alone re-run that counts
    first, alone = by["needs_more"].attempts
    assert first.outcome is not Outcome.passed and first.neighbours and first.share_gib == 12.0
    assert alone.outcome is Outcome.passed and not alone.neighbours and alone.share_gib is None
    note = by["needs_more"].colocation_note or ""
    assert "co-location" in note and "passed alone" in note
    if first.outcome is Outcome.oom:
        assert note.startswith("co-location OOM")
    # the measured comparison and the case without history never had a neighbour
    for cid in ("perf_chat", "unknown", "big"):
        assert all(not a.neighbours for a in by[cid].attempts), cid
    assert COMPARISON_NEVER_SHARES in (by["perf_chat"].gpu_sharing or "")
    assert "small_b#a1" in by["small_a"].attempts[0].neighbours
    # reports: the GPU lanes and the placements table
    write_reports(rd, results, None)
    assert "GPU 0" in (rd.path / "report.html").read_text()
    summary = (rd.path / "summary.md").read_text()
    assert "## GPU placements" in summary and "co-location" in summary
    # recorded, the next run's estimate for needs_more is above the share it failed at
    record_run(root / "history.sqlite", results)
    again = learn(loaded.suite.cases, CARD.name, root, 80.0)["needs_more"]
    assert again.vram_gib is not None and again.vram_gib >= 18.0
    assert "co-location failure" in again.vram_source
