"""A real lab nightly (reference server, netns runtime) read by consumers written to the field
lists of sglang's own tools, as those tools read them. The field lists come from
sgl-project/sglang, scripts/ci/utils/diffusion/:
- generate_diffusion_dashboard.py at 13cf5569b24f55fb08ccdcd34738ca2d4050aa6a
  (_extract_case_results, _server_sample_coverage, _stage_group_seconds, the breakdown table)
- post_diffusion_comparison_to_slack.py at 2f92ff035fa6a8fc41acf5eadd122214146a22fb
  (_build_case_rows, failed_entries)
- run_comparison.py at 03635624690c11ff6ea89d288ca1854b521d9b1c (_read_perf_dump,
  _summarize_perf_dumps: the perf-dump fields total_duration_ms, steps[{name, duration_ms}],
  denoise_steps_ms[{duration_ms}])."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nightly_helpers import ref_case, run_nightly, write_suite

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the netns runtime needs root here"),
]

TOP_KEYS = ("timestamp", "commit_sha", "run_id", "measurement_repeats", "results")
ROW_KEYS = ("case_id", "framework", "model", "task", "latency_s", "error")


def dashboard_view(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the dashboard renders per case from framework "sglang": latency, risk, client and
    server samples, and the server-side breakdown (stage groups by name suffix, in s)."""
    view = {}
    for r in run["results"]:
        if r["framework"] != "sglang":
            continue
        total = r.get("measurement_count")
        samples = r.get("server_latency_samples_s")
        if not isinstance(total, int) or total <= 0:
            coverage = None
        elif isinstance(samples, list):
            coverage = (min(len(samples), total), total)
        elif "missing_perf_dumps" in r:
            coverage = (total - int(r["missing_perf_dumps"]), total)
        else:
            coverage = (total if r.get("server_latency_s") is not None else 0, total)
        stages = r.get("server_stage_medians_ms") or {}

        def group(*suffixes: str, stages: dict = stages) -> float | None:
            vals = [v for k, v in stages.items() if k.endswith(suffixes)]
            return sum(vals) / 1000.0 if vals else None

        view[r["case_id"]] = {
            "risk": "broken" if r.get("latency_s") is None else "ok",
            "server_samples": coverage,
            "server_total_s": r.get("server_latency_s"),
            "text_encode_s": group("TextEncodingStage", "TokenizationStage"),
            "denoise_s": group("DenoisingStage"),
            "decode_s": group("DecodingStage"),
            "denoise_step_ms": r.get("median_denoise_step_ms"),
        }
    return view


def slack_failed(run: dict[str, Any]) -> list[str]:
    return [r["case_id"] for r in run["results"] if r.get("latency_s") is None]


def upstream_summary(dumps: list[dict[str, Any]]) -> dict[str, Any]:
    """run_comparison.py's summary of the perf dumps it could read (total_duration_ms set)."""
    dumps = [d for d in dumps if d.get("total_duration_ms") is not None]
    totals = [round(d["total_duration_ms"] / 1000.0, 3) for d in dumps]
    stages: dict[str, list[float]] = {}
    steps = []
    for d in dumps:
        for s in d.get("steps", []):
            stages.setdefault(s["name"], []).append(float(s["duration_ms"]))
        steps += [float(s["duration_ms"]) for s in d.get("denoise_steps_ms", [])]
    return {
        "server_latency_s": round(statistics.median(totals), 3),
        "server_stage_medians_ms": {k: round(statistics.median(v), 3) for k, v in stages.items()},
        "median_denoise_step_ms": round(statistics.median(steps), 3),
    }


def test_a_lab_nightly_reads_in_sglangs_dashboard_slack_and_perf_dump_dialect(
    tmp_path: Path,
) -> None:
    suite = write_suite(
        tmp_path,
        [
            ref_case("image", steps=3),
            ref_case("video", steps=2, task="text-to-video", num_frames=3, fps=4),
        ],
    )
    no_ci = {"LAB_COMMIT_SHA": "", "GITHUB_SHA": ""}
    code, record, run_dir, err = run_nightly(suite, tmp_path / "runs", "netns", env=no_ci)
    assert code == 0, err
    assert {r["framework"] for r in record["results"]} == {"reference"}  # what ran
    out = tmp_path / "export.json"
    lab = [sys.executable, "-m", "lab.cli", "export", "sglang-dashboard", str(run_dir)]
    subprocess.run([*lab, "-o", str(out), "--stand-in", "reference"], check=True)
    run = json.loads(out.read_text())
    assert list(record)[:5] == list(TOP_KEYS)
    # no commit named and no image (netns): the lab's own checkout is not taken for sglang's
    if run.get("commit_sha") is None:
        assert "no server reported its version" in run["commit_unknown_because"]
    else:  # a server that reports its version (FrameworkResult.server_version) names it
        assert run["commit_source"].startswith("server-version:")
    assert all(set(ROW_KEYS) <= set(r) for r in run["results"])
    rows = {r["case_id"]: r for r in run["results"]}

    view = dashboard_view(run)
    assert set(view) == {"image", "video"}  # the lab's own cases show up
    for cid in ("image", "video"):
        v = view[cid]
        assert v["risk"] == "ok" and rows[cid]["served_by"] == "reference"
        assert v["server_samples"] == (2, 2)
        assert None not in (v["server_total_s"], v["text_encode_s"], v["denoise_s"], v["decode_s"])
        assert v["denoise_step_ms"] > 0
        # the dumps on disk, read as sglang reads them, give the row's figures
        dumps = [
            json.loads(p.read_text())
            for p in sorted(run_dir.glob(f"attempts/{cid}__a1/**/perf/reference_*.json"))
        ]
        assert len(dumps) == 2
        want = upstream_summary(dumps)
        assert {k: rows[cid][k] for k in want} == want
    assert slack_failed(run) == []


MAX_HISTORY_RUNS = 29  # generate_diffusion_dashboard.py at 13cf5569b24f55fb08ccdcd34738ca2d4050aa6a


def dashboard_history(history_dir: Path, current: dict[str, Any]) -> list[dict[str, Any]]:
    """The history sglang's dashboard uses (generate_diffusion_dashboard.py at 13cf5569…):
    `--history-dir`'s *.json, newest first by file name, the 29 newest, unreadable ones skipped;
    then only runs with the current run's methodology and warmup_requests. The file name is
    publish_comparison_results.py's (7e7b2dfd…): {YYYY-MM-DD}_{run id}.json."""
    names = sorted(
        (p.name for p in history_dir.iterdir() if p.name.endswith(".json")), reverse=True
    )
    runs = []
    for name in names[:MAX_HISTORY_RUNS]:
        try:
            runs.append(json.loads((history_dir / name).read_text()))
        except (OSError, ValueError):
            continue
    return [
        r
        for r in runs
        if r.get("methodology") == current.get("methodology")
        and r.get("warmup_requests") == current.get("warmup_requests")
    ]


def test_each_nightly_lands_in_the_history_folder_sglangs_dashboard_reads(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, [ref_case("image", steps=2)], exports=["sglang-dashboard"])
    out = tmp_path / "runs"
    nights = []
    for _ in range(2):
        code, _, run_dir, err = run_nightly(suite, out, "netns")
        assert code == 0, err
        nights.append(json.loads((run_dir / "sglang-dashboard.json").read_text()))
    folder = out / "diffusion-comparisons"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"{r['timestamp'][:10]}_{r['run_id']}.json" for r in nights]  # UTC dates
    history = dashboard_history(folder, nights[-1])
    assert [h["run_id"] for h in history] == [nights[1]["run_id"], nights[0]["run_id"]]
    assert history[::-1] == nights  # each file is that night's export, as finished
    # no sglang ran: nothing for its dashboard to mark broken, and the export says why
    assert all(h["results"] == [] and h["left_out"] == {"image": "no sglang row"} for h in history)
