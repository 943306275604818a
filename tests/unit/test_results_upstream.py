"""results.json rows as sglang's dashboard and Slack scripts read them (field lists of
sgl-project/sglang scripts/ci/utils/diffusion/generate_diffusion_dashboard.py at 13cf5569b24f,
post_diffusion_comparison_to_slack.py at 2f92ff035fa6; see lab/results/upstream.py)."""

from __future__ import annotations

from test_results_support import case, framework, run

from lab.contract import Outcome


def _rows(*cases):
    return {
        (r["case_id"], r["framework"]): r for r in run(3, list(cases)).to_results_json()["results"]
    }


def test_a_degraded_case_is_not_a_clean_like_for_like_row_upstream() -> None:
    why = "oom on as-configured: torch.OutOfMemoryError: CUDA out of memory."
    big = case("big", [framework("sglang", 4.0)], Outcome.degraded, rung="low-vram")
    big.original_failure = why
    rows = _rows(big)
    r = rows[("big", "sglang")]
    # the dashboard shows latency None as broken and keeps it out of its baseline; Slack counts it
    assert r["latency_s"] is None and r["measurement_count"] == 0
    assert r["server_latency_s"] is None and r["latency_samples_s"] == []
    assert r["error"].startswith("degraded: passed only on ladder rung 'low-vram'")
    assert "OutOfMemoryError" in r["error"]
    assert r["degraded_measurement"]["latency_s"] == 4.0  # the lab keeps its figure
    assert r["outcome"] == "degraded" and r["degraded_rung"] == "low-vram"


def test_reference_rows_export_as_sglang_unless_the_case_runs_sglang_itself() -> None:
    fr = framework("reference", 0.5)
    fr.server_latency_samples_s, fr.missing_perf_dumps = [0.4, 0.41], 1
    fr.notes = ["1/3 server perf dump(s) missing or unreadable: server timings cover the rest"]
    rows = _rows(
        case("ref_only", [fr]),
        case("both", [framework("sglang", 1.0), framework("reference", 0.5)]),
    )
    only = rows[("ref_only", "sglang")]
    assert only["lab_framework"] == "reference" and only["latency_s"] == 0.5
    assert only["server_latency_samples_s"] == [0.4, 0.41] and only["missing_perf_dumps"] == 1
    assert only["notes"] and only["error"] is None
    assert {("both", "sglang"), ("both", "reference")} <= set(rows)
    assert "lab_framework" not in rows[("both", "reference")]
    assert "missing_perf_dumps" not in rows[("both", "sglang")]  # upstream sets it only when > 0


def test_only_baseline_worthy_nightlies_enter_the_dashboards_history_folder(tmp_path) -> None:
    from lab.results.store import RunDir, write_dashboard_history

    night = run(3, [case("a", [framework("sglang", 1.0)])])
    night.timestamp = "2026-11-03T23:30:00-02:00"  # 01:30 UTC the next day: named by UTC
    rd = RunDir.create(tmp_path, night.run_id)
    path = write_dashboard_history(rd, night)
    assert path == tmp_path / "diffusion-comparisons" / f"2026-11-04_{night.run_id}.json"
    assert path is not None and path.read_text().startswith('{\n  "timestamp"')
    for change in ({"kind": "repro"}, {"shared_host": True}, {"status": "interrupted"}):
        assert write_dashboard_history(rd, night.model_copy(update=change)) is None
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left either
