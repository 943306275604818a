"""`lab nightly` end to end on the real engine and real namespaces: every case in its own
sandbox, servers on the same default port at the same time, nothing left behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]


def case(cid: str, steps: int = 2, size: int = 64, **over: Any) -> dict[str, Any]:
    c = {
        "id": cid,
        "model": "ref://tiny",
        "task": "text-to-image",
        "prompt": f"{cid} prompt",
        "width": size,
        "height": size,
        "num_inference_steps": steps,
        "num_gpus": 0,
        "est_time_s": 10,
        "frameworks": {"reference": {"serve_args": "--warmup-mode off"}},
    }
    c.update(over)
    return c


def write_suite(tmp: Path, cases: list[dict[str, Any]], **top: Any) -> Path:
    p = tmp / "suite.json"
    p.write_text(
        json.dumps(
            {
                "measurement_repeats": 2,
                "startup_timeout_s": 90,
                "request_timeout_s": 60,
                "cases": cases,
                **top,
            }
        )
    )
    return p


def nightly(suite: Path, out: Path, runtime: str, *extra: str) -> tuple[int, dict, Path, str]:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "lab.cli",
            "nightly",
            "--config",
            str(suite),
            "--runtime",
            runtime,
            "--out",
            str(out),
            "--gpus",
            "none",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    run_dir = (out / "latest").resolve()
    results = json.loads((run_dir / "results.json").read_text())
    return r.returncode, results, run_dir, r.stderr


def by_id(results: dict) -> dict[str, dict]:
    return {c["case_id"]: c for c in results["cases"]}


def overlapped(a: dict, b: dict) -> bool:
    fa, fb = a["attempts"][-1]["frameworks"][0], b["attempts"][-1]["frameworks"][0]
    return fa["ready_at"] < fb["stopped_at"] and fb["ready_at"] < fa["stopped_at"]


def leftover_processes(run_dir: Path) -> list[str]:
    hits = []
    for p in psutil.process_iter(["cmdline"]):
        line = " ".join(p.info["cmdline"] or [])
        if str(run_dir) in line and "pytest" not in line:
            hits.append(line)
    return hits


# Long enough measuring (several seconds) that the two servers are surely up at the same time.
SUITE = [case("alpha", steps=30, size=256), case("beta", steps=30, size=256)]


@pytest.mark.slow
def test_docker_nightly_two_servers_on_port_30000_at_once(
    request: pytest.FixtureRequest, reference_image: str, docker_client: Any
) -> None:
    # Not under pytest's /tmp folder (mode 0700, and /tmp is a tmpfs inside the sandbox): the
    # sandbox user must reach the run folder, as it does under a checkout's runs/.
    work = Path(tempfile.mkdtemp(prefix="docker-nightly-", dir=ROOT / "build"))
    work.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(work, ignore_errors=True))
    code, results, run_dir, err = nightly(write_suite(work, SUITE), work / "runs", "docker")
    cases = by_id(results)
    assert code == 0, err
    assert {c["outcome"] for c in cases.values()} == {"passed"}
    for c in cases.values():
        fr = c["attempts"][0]["frameworks"][0]
        assert fr["command"][fr["command"].index("--port") + 1] == "30000"
        assert c["image_id"] and c["image_id"].startswith("sha256:")
        sandbox = json.loads(
            (run_dir / "attempts" / f"{c['case_id']}__a1" / "sandbox.json").read_text()
        )
        assert sandbox["network_mode"] == "none" and sandbox["cap_drop"] == ["ALL"]
    assert overlapped(cases["alpha"], cases["beta"]), "the two servers did not run side by side"
    label = f"nightly-lab.run-id={results['run_id']}"
    assert docker_client.containers.list(all=True, filters={"label": label}) == []
    for f in ("summary.md", "junit.xml", "report.html", "manifest.json"):
        assert (run_dir / f).stat().st_size > 0


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the netns runtime needs root here")
def test_netns_nightly_same_suite_passes_side_by_side(tmp_path: Path) -> None:
    code, results, run_dir, err = nightly(write_suite(tmp_path, SUITE), tmp_path / "runs", "netns")
    cases = by_id(results)
    assert code == 0, err
    assert {c["outcome"] for c in cases.values()} == {"passed"}
    assert overlapped(cases["alpha"], cases["beta"])
    assert leftover_processes(run_dir) == []


@pytest.mark.slow
def test_ladder_oom_then_degraded_on_low_vram_and_crash_not_retried(tmp_path: Path) -> None:
    cases = [
        # 0.36 GiB is too small for ref://small at 512² as configured, enough once offloaded
        case("needs_offload", size=512, model="ref://small", vram_gib=0.36),
        case(
            "crasher",
            frameworks={
                "reference": {
                    "serve_args": "--warmup-mode off",
                    "extra_env": {"REFSERVER_FAULT": "exit-startup:4"},
                }
            },
        ),
        case("hopeless", size=256, vram_gib=0.0005),
    ]
    code, results, run_dir, err = nightly(write_suite(tmp_path, cases), tmp_path / "runs", "netns")
    got = by_id(results)
    assert code == 1, err  # crasher and hopeless failed
    deg = got["needs_offload"]
    assert deg["outcome"] == "degraded" and deg["degraded_rung"] == "low-vram"
    # on the CPU cfg-parallel 2 runs too (two gloo ranks), and still OOMs at this budget
    assert [a["rung"] for a in deg["attempts"]] == ["as-configured", "cfg-parallel-2", "low-vram"]
    a1, a2 = deg["attempts"][0], deg["attempts"][-1]
    assert [a["outcome"] for a in deg["attempts"]] == ["oom", "oom", "passed"]
    assert "OutOfMemoryError" in a1["reason"]
    assert deg["attempts"][1]["extra_args"]["reference"][:2] == ["--cfg-parallel-size", "2"]
    assert a1["extra_args"] == {"reference": ["--device-memory-gib", "0.36"]}
    assert a2["extra_args"]["reference"][:3] == [
        "--dit-layerwise-offload",
        "--text-encoder-cpu-offload",
        "--vae-cpu-offload",
    ]
    assert "--dit-layerwise-offload" in a2["frameworks"][0]["command"]
    crash = got["crasher"]
    assert crash["outcome"] == "crashed" and len(crash["attempts"]) == 1
    hope = got["hopeless"]
    assert hope["outcome"] == "oom"
    assert [a["outcome"] for a in hope["attempts"]] == ["oom"] * len(hope["attempts"])
    assert len(hope["attempts"]) >= 2
    summary = (run_dir / "summary.md").read_text()
    assert "needs_offload" in summary and "low-vram" in summary
