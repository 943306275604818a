"""results.json as the lab's own record (each row names the server that ran), and
`lab export sglang-dashboard`, judged by the rules of sglang's dashboard
(scripts/ci/utils/diffusion/generate_diffusion_dashboard.py at 13cf5569b24f; field lists and
rules in lab/results/upstream.py's docstring). Real model objects, real files, the real CLI."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from test_results_support import case, framework, run

from lab.config import EXPORTS
from lab.contract import Outcome, Phase
from lab.results import upstream
from lab.results.store import RunDir, write_exports, write_results

REPO = Path(__file__).resolve().parents[2]


def _rows(*cases):
    return {
        (r["case_id"], r["framework"]): r for r in run(3, list(cases)).to_results_json()["results"]
    }


def test_a_degraded_case_is_not_a_clean_like_for_like_row() -> None:
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


def test_results_json_names_the_server_that_ran_and_its_version() -> None:
    fr = framework("reference", 0.5)
    fr.server_latency_samples_s, fr.missing_perf_dumps = [0.4, 0.41], 1
    fr.server_version = "nightly-lab-refserver 0.1.0"
    fr.notes = ["1/3 server perf dump(s) missing or unreadable: server timings cover the rest"]
    rows = _rows(
        case("ref_only", [fr]),
        case("both", [framework("sglang", 1.0), framework("reference", 0.5)]),
    )
    assert set(rows) == {("ref_only", "reference"), ("both", "sglang"), ("both", "reference")}
    only = rows[("ref_only", "reference")]
    assert only["server_version"] == "nightly-lab-refserver 0.1.0" and only["latency_s"] == 0.5
    assert only["server_latency_samples_s"] == [0.4, 0.41] and only["missing_perf_dumps"] == 1
    assert only["notes"] and only["error"] is None
    assert not any("lab_framework" in r for r in rows.values())
    assert "missing_perf_dumps" not in rows[("both", "sglang")]  # upstream sets it only when > 0


# -- the dashboard's rules, as generate_diffusion_dashboard.py at 13cf5569b24f states them ------

DASHBOARD_BASELINE_RUNS = 5
DASHBOARD_THRESHOLD = 0.05


def dashboard_rules(current: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, str]:
    """Our own evaluator of the dashboard's rules (not its code): history runs count only with the
    current methodology and warmup_requests; per case in the file, on framework "sglang": no
    latency ❌; > 5 % above the median of the 5 newest history runs that have it ⚠️; slower than a
    competitor of the case 🔴; else ok. Any of the three raises the Performance Alert."""
    history = [
        h
        for h in history
        if h.get("methodology") == current.get("methodology")
        and h.get("warmup_requests") == current.get("warmup_requests")
    ]

    def latency(r: dict[str, Any]) -> dict[tuple[str, str], float | None]:
        return {(x["case_id"], x["framework"]): x.get("latency_s") for x in r["results"]}

    now = latency(current)
    verdicts = {}
    for cid in dict.fromkeys(r["case_id"] for r in current["results"]):
        sg = now.get((cid, "sglang"))
        base = [latency(h).get((cid, "sglang")) for h in history[:DASHBOARD_BASELINE_RUNS]]
        base = [b for b in base if b is not None]
        others = [v for (c, fw), v in now.items() if c == cid and fw != "sglang" and v is not None]
        if sg is None:
            verdicts[cid] = "❌"
        elif base and (med := statistics.median(base)) > 0 and (sg - med) / med > 0.05:
            verdicts[cid] = "⚠️"
        elif any(sg > o for o in others):
            verdicts[cid] = "🔴"
        else:
            verdicts[cid] = "ok"
    return verdicts


def alert(verdicts: dict[str, str]) -> bool:
    return any(v in ("❌", "⚠️", "🔴") for v in verdicts.values())


def cpu_night(n: int, latency: float = 0.5) -> Any:
    """What a CPU nightly of the shipped suites holds: sglang cases skipped (no GPU), the
    reference server's diffusion cases, an LLM case and a test case."""
    skipped = [
        case(f"sg_{i}", [], Outcome.skipped, reason="needs 1 GPU", phase=Phase.setup)
        for i in range(3)
    ]
    ref = [case(f"ref_{i}", [framework("reference", latency * (i + 1))]) for i in range(2)]
    llm = case("ref_llm_chat", [framework("reference-llm", 0.2)])
    llm.task = "chat"
    test = case("ref_weight_check", [framework("reference-llm", 0.1)])
    test.kind = "test"
    return run(n, [*skipped, *ref, llm, test])


def _case_ids(export: dict[str, Any]) -> set[str]:
    return {r["case_id"] for r in export["results"]}


def test_a_cpu_night_exports_no_case_that_did_not_run() -> None:
    night = cpu_night(3)
    export = upstream.sglang_dashboard(night)
    assert export["results"] == []  # sglang ran nowhere: nothing for its dashboard to judge
    assert export["left_out"]["sg_0"] == "did not run (skipped)"
    assert export["left_out"]["ref_llm_chat"] == upstream.NOT_DIFFUSION
    assert export["left_out"]["ref_weight_check"] == upstream.NOT_DIFFUSION
    assert export["left_out"]["ref_0"] == "no sglang row"
    notes = " ".join(export["methodology_notes"])
    assert "Left out 3 case(s): did not run (skipped): sg_0, sg_1, sg_2." in notes
    assert "Left out 2 case(s): no sglang row: ref_0, ref_1." in notes
    assert export["methodology"] == night.methodology  # comparable with sglang's own history

    demo = upstream.sglang_dashboard(night, stand_in="reference")
    assert _case_ids(demo) == {"ref_0", "ref_1"}
    assert {r["framework"] for r in demo["results"]} == {"sglang"}
    assert {r["served_by"] for r in demo["results"]} == {"reference"}
    assert demo["methodology"] == f"{night.methodology}+stand-in:reference"
    assert demo["methodology_notes"][0].startswith("Stand-in: rows named sglang were served")
    assert "sg_0" not in _case_ids(demo) and dashboard_rules(demo, []) == {
        "ref_0": "ok",
        "ref_1": "ok",
    }
    top = {"timestamp", "commit_sha", "methodology", "warmup_requests", "results"}
    row = {"case_id", "framework", "model", "latency_s", "measurement_count"}
    row |= {"first_request_latency_s", "server_latency_s", "server_stage_medians_ms"}
    assert top <= set(demo) and all(row <= set(r) for r in demo["results"])


def test_an_unchanged_stand_in_night_raises_no_alert_against_two_earlier_exports() -> None:
    history = [upstream.sglang_dashboard(cpu_night(n), stand_in="reference") for n in (2, 1)]
    tonight = upstream.sglang_dashboard(cpu_night(3), stand_in="reference")
    verdicts = dashboard_rules(tonight, history)
    assert set(verdicts) == {"ref_0", "ref_1"} and not alert(verdicts)
    # the same rules do flag a real slowdown, so the check above can fail
    slower = upstream.sglang_dashboard(cpu_night(3, latency=0.6), stand_in="reference")
    assert dashboard_rules(slower, history) == {"ref_0": "⚠️", "ref_1": "⚠️"}
    # and a stand-in night is never judged against sglang's own history
    real = [
        upstream.sglang_dashboard(run(n, [case("ref_0", [framework("sglang", 0.1)])]))
        for n in (1, 2)
    ]
    assert dashboard_rules(tonight, real)["ref_0"] == "ok"


def test_a_case_sglang_failed_stays_in_the_export_as_broken() -> None:
    crashed = framework("sglang", None, Outcome.crashed, reason="CUDA error", phase=Phase.startup)
    night = run(
        3,
        [
            case("flux", [crashed, framework("vllm-omni", 2.0)], Outcome.crashed, reason="boom"),
            case("wan", [framework("sglang", 1.0), framework("vllm-omni", 2.0)]),
            case("qwen", [], Outcome.skipped, reason="needs 4 GPUs"),
        ],
    )
    export = upstream.sglang_dashboard(night)
    assert _case_ids(export) == {"flux", "wan"}
    flux = next(
        r for r in export["results"] if (r["case_id"], r["framework"]) == ("flux", "sglang")
    )
    assert flux["latency_s"] is None and flux["error"] == "crashed: boom"
    verdicts = dashboard_rules(export, [])
    assert verdicts == {"flux": "❌", "wan": "ok"} and alert(verdicts)
    assert "vllm-omni" in {r["framework"] for r in export["results"]}  # competitors kept


def test_the_nightly_writes_exports_and_only_baseline_worthy_ones_enter_the_history(
    tmp_path: Path,
) -> None:
    assert EXPORTS == (upstream.NAME,)
    night = run(3, [case("a", [framework("sglang", 1.0)])])
    night.timestamp = "2026-11-03T23:30:00-02:00"  # 01:30 UTC the next day: named by UTC
    rd = RunDir.create(tmp_path, night.run_id)
    assert write_exports(rd, night, []) == []
    beside, history = write_exports(rd, night, ["sglang-dashboard"])
    assert beside == rd.path / "sglang-dashboard.json"
    assert history == tmp_path / "diffusion-comparisons" / f"2026-11-04_{night.run_id}.json"
    assert json.loads(history.read_text()) == upstream.sglang_dashboard(night)
    assert json.loads(history.read_text())["export"] == "sglang-dashboard"
    for change in ({"kind": "repro"}, {"shared_host": True}, {"status": "interrupted"}):
        assert write_exports(rd, night.model_copy(update=change), ["sglang-dashboard"]) == [beside]
    assert [p.name for p in history.parent.iterdir()] == [history.name]  # no temp file left


def _lab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab.cli", *args], cwd=cwd, capture_output=True, text=True
    )


def test_lab_export_writes_the_file_and_refuses_bad_input_with_exit_2(tmp_path: Path) -> None:
    rd = RunDir.create(tmp_path, "20261103T010000Z-ab03")
    write_results(rd, cpu_night(3))
    out = tmp_path / "export.json"
    r = _lab(
        "export",
        "sglang-dashboard",
        str(rd.path),
        "-o",
        str(out),
        "--stand-in",
        "reference",
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    assert "2 case(s), 5 left out" in r.stdout and "Stand-in" in r.stdout
    assert _case_ids(json.loads(out.read_text())) == {"ref_0", "ref_1"}

    empty = tmp_path / "empty"
    empty.mkdir()
    r = _lab("export", "sglang-dashboard", str(empty), "-o", str(out), cwd=REPO)
    assert r.returncode == 2 and "results.json: no such file" in r.stderr
    r = _lab(
        "export", "sglang-dashboard", str(rd.path), "-o", str(out), "--stand-in", "vllm", cwd=REPO
    )
    assert r.returncode == 2 and "--stand-in 'vllm': only reference can stand in" in r.stderr


def test_a_suite_naming_an_unknown_export_is_refused_naming_the_field(tmp_path: Path) -> None:
    suite = json.loads((REPO / "configs" / "reference.json").read_text())
    suite["exports"] = ["sglang-dashbord"]
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(suite))
    r = _lab("validate", str(path), cwd=REPO)
    assert r.returncode == 2
    assert "exports" in r.stderr and "unknown export 'sglang-dashbord'" in r.stderr
