"""`lab nightly --runtime slurm` against a real Slurm cluster started here (slurm_cluster.py):
each attempt one job, the ladder across jobs, GPUs from GRES, Slurm's own endings (scancel, a
time limit) as outcomes with Slurm's reason, and nothing left after Ctrl-C or `lab clean`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nightly_helpers import (
    ROOT,
    by_id,
    lab_argv,
    processes_mentioning,
    ref_case,
    run_nightly,
    sandbox_work_dir,
)
from nightly_helpers import start_nightly as start_lab_nightly
from nightly_helpers import write_suite as write_lab_suite
from slurm_cluster import INSTALL_HINT, SlurmCluster, missing_tools

from lab.host.runtimes.base import host_identity

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    if os.geteuid() != 0:
        pytest.skip(f"the test cluster's daemons run as root; {INSTALL_HINT}")
    if missing := missing_tools():
        pytest.skip(f"no {', '.join(missing)} here; {INSTALL_HINT}")
    cluster = SlurmCluster(gpus=2)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def command_case(cid: str, command: str, **over: Any) -> dict[str, Any]:
    return {"id": cid, "kind": "test", "command": command, "num_gpus": 0, **over}


# alpha passes as configured; needs_offload OOMs at 0.36 GiB until the low-vram rung
REFERENCE = [
    ref_case("alpha"),
    ref_case("needs_offload", width=512, height=512, model="ref://small", vram_gib=0.36),
]


def write_suite(
    d: Path, cases: list[dict[str, Any]], confirm_failures: int = 1, **slurm: Any
) -> Path:
    settings = {"sandbox": "netns", "poll_s": 0.3, "max_jobs": 4, **slurm}
    return write_lab_suite(d, cases, slurm=settings, confirm_failures=confirm_failures)


def nightly(
    cluster: SlurmCluster, suite: Path, out: Path, runtime: str = "slurm", **env: str
) -> tuple[int, dict[str, Any], Path, str]:
    return run_nightly(suite, out, runtime, env={**cluster.env, **env}, timeout_s=300)


def start_nightly(cluster: SlurmCluster, suite: Path, out: Path) -> subprocess.Popen[str]:
    return start_lab_nightly(suite, out, "slurm", env=cluster.env)


def wait_running(cluster: SlurmCluster, name_part: str, timeout_s: float = 60) -> str:
    """The id of the first RUNNING job whose name holds name_part."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in cluster.jobs("%i", "%j", "%T"):
            job_id, name, state = line.split("|")
            if name_part in name and state == "RUNNING":
                return job_id
        time.sleep(0.2)
    raise AssertionError(f"no running job named *{name_part}* after {timeout_s} s")


def job_field(cluster: SlurmCluster, job_id: str, key: str) -> str:
    out = cluster.run("scontrol", "show", "job", "-o", job_id).stdout
    return next(w.split("=", 1)[1] for w in out.split() if w.startswith(f"{key}="))


def run_jobs(cluster: SlurmCluster, run_id: str) -> list[str]:
    """Active jobs of one run (pending, running, completing)."""
    return [j for j in cluster.jobs("%i", "%j") if f"-{run_id}-" in j]


def shape(results: dict[str, Any]) -> dict[str, Any]:
    """The keys at every level of results.json, and each case's ladder and outcomes."""
    cases = results["cases"]
    attempts = [a for c in cases for a in c["attempts"]]
    return {
        "top": sorted(results),
        "case": sorted({k for c in cases for k in c}),
        "attempt": sorted({k for a in attempts for k in a}),
        "framework": sorted({k for a in attempts for f in a["frameworks"] for k in f}),
        "outcomes": {
            c["case_id"]: (
                c["outcome"],
                c["degraded_rung"],
                [(a["rung"], a["outcome"]) for a in c["attempts"]],
            )
            for c in cases
        },
    }


# --- started first: Slurm enforces a one-minute limit up to 30 s late, so it runs meanwhile ----
@pytest.fixture(scope="module")
def time_limited(slurm: SlurmCluster) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    work = Path(tempfile.mkdtemp(prefix="slurm-timelimit-"))
    suite = write_suite(
        work,
        [command_case("overtime", "echo start; sleep 601", startup_timeout_s=900)],
        sbatch_args=["--time=1"],  # last on sbatch's line: wins over the lab's own --time
        confirm_failures=0,  # one time limit is the point here; test_triage covers the re-run
    )
    proc = start_nightly(slurm, suite, work / "runs")
    yield proc, work / "runs"
    if proc.poll() is None:
        proc.kill()
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same suite through the local netns runtime, to compare with."""
    d = tmp_path_factory.mktemp("local")
    r = subprocess.run(
        lab_argv("nightly", write_suite(d, REFERENCE), d / "runs", "netns"),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(((d / "runs" / "latest").resolve() / "results.json").read_text())


@pytest.mark.parametrize("sandbox", ["netns", "docker"])
def test_reference_suite_through_slurm_matches_the_local_run(
    request: pytest.FixtureRequest,
    slurm: SlurmCluster,
    time_limited: tuple[subprocess.Popen[str], Path],
    local_reference: dict[str, Any],
    sandbox: str,
) -> None:
    if sandbox == "docker":
        request.getfixturevalue("reference_image")  # skips, saying why, without the image
    work = sandbox_work_dir(request, "slurm-ref-")
    suite = write_suite(work, REFERENCE, sandbox=sandbox, shared_dir=str(work))
    code, results, run_dir, err = nightly(slurm, suite, work / "runs")
    assert code == 0, err
    assert results["runtime"] == "slurm"
    assert shape(results) == shape(local_reference)
    deg = by_id(results)["needs_offload"]
    assert deg["outcome"] == "degraded" and deg["degraded_rung"] == "low-vram"
    # The ladder across jobs: one Slurm job per rung, named and commented after its attempt.
    jobs = []
    for a in deg["attempts"]:
        box = json.loads(
            (run_dir / "attempts" / f"needs_offload__a{a['attempt']}" / "sandbox.json").read_text()
        )
        jobs.append(box["job_id"])
        assert box["node_sandbox"] == sandbox
        assert job_field(slurm, box["job_id"], "JobName") == box["name"]
        comment = job_field(slurm, box["job_id"], "Comment")
        assert f"run={results['run_id']}" in comment and f"attempt={a['attempt']}" in comment
        assert "--gres" not in " ".join(box["sbatch"])  # a CPU case asks for no GPU
    assert len(set(jobs)) == len(deg["attempts"]) == 3
    if sandbox == "docker":
        assert deg["image_id"] and deg["image_id"].startswith("sha256:")
    assert run_jobs(slurm, results["run_id"]) == []


def test_gpu_case_asks_gres_and_sees_slurms_gpu_count(slurm: SlurmCluster, tmp_path: Path) -> None:
    secret = "hf_slurm_secret_987654"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    check = (
        'echo "gpus=$SLURM_GPUS_ON_NODE cuda=$CUDA_VISIBLE_DEVICES"; '
        f'printf %s "$HF_TOKEN" | sha256sum | grep -q {digest} && echo token-ok'
    )
    suite = write_suite(tmp_path, [command_case("on_gpu", check, num_gpus=1)])
    code, results, run_dir, err = nightly(slurm, suite, tmp_path / "runs", HF_TOKEN=secret)
    assert code == 0, err
    attempt_dir = run_dir / "attempts" / "on_gpu__a1"
    box = json.loads((attempt_dir / "sandbox.json").read_text())
    assert "--gres=gpu:1" in box["sbatch"]
    assert job_field(slurm, box["job_id"], "TresPerNode") == "gres:gpu:1"
    node = json.loads((attempt_dir / "slurm-node.json").read_text())
    assert node["gpus_from"] == "SLURM_GPUS_ON_NODE" and node["gpus"] == [0]
    assert by_id(results)["on_gpu"]["attempts"][0]["gpus"] == [0]
    log = (run_dir / "logs" / "on_gpu__test__a1.log").read_text()
    assert "gpus=1 cuda=0" in log and "token-ok" in log
    leaked = [p for p in run_dir.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []


def test_scancel_mid_run_is_infra_error_with_slurms_reason_then_retried(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    suite = write_suite(tmp_path, [command_case("victim", "echo start; sleep 4")])
    proc = start_nightly(slurm, suite, tmp_path / "runs")
    job_id = wait_running(slurm, "-victim-a1")
    slurm.run("scancel", job_id)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output  # the retry passed
    results = json.loads((tmp_path / "runs" / "latest" / "results.json").read_text())
    first, second = by_id(results)["victim"]["attempts"]
    assert first["outcome"] == "infra_error"
    assert (
        f"Slurm: job {job_id} CANCELLED" in first["reason"] and "not by the lab" in first["reason"]
    )
    assert second["outcome"] == "passed"
    assert run_jobs(slurm, results["run_id"]) == []


def test_sigint_cancels_the_runs_jobs_and_leaves_nothing(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    suite = write_suite(
        tmp_path,
        [command_case("long_a", "echo start; sleep 602"), command_case("long_b", "sleep 602")],
    )
    proc = start_nightly(slurm, suite, tmp_path / "runs")
    wait_running(slurm, "-long_a-a1")
    wait_running(slurm, "-long_b-a1")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert time.monotonic() - t0 < 30
    results = json.loads((tmp_path / "runs" / "latest" / "results.json").read_text())
    assert results["status"] == "interrupted"
    assert {c["outcome"] for c in results["cases"]} == {"interrupted"}
    assert run_jobs(slurm, results["run_id"]) == []
    assert processes_mentioning("sleep 602") == []
    assert processes_mentioning(str(tmp_path)) == []


def test_lab_clean_cancels_a_dead_runs_job_and_keeps_a_live_ones(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    suite = write_suite(tmp_path, [command_case("orphan", "echo start; sleep 603")])
    proc = start_nightly(slurm, suite, tmp_path / "runs")
    orphan = wait_running(slurm, "-orphan-a1")
    proc.kill()  # SIGKILL: the host cannot cancel anything
    proc.wait(10)
    # A job of another run whose lab process (this test) is alive.
    (tmp_path / "live.sh").write_text("#!/bin/sh\nsleep 604\n")
    live = slurm.run(
        "sbatch",
        "--parsable",
        "--job-name=lab-otherrun-x-a1",
        f"--comment=nightly-lab;run=otherrun;case=x;attempt=1;host={host_identity()}",
        f"--output={tmp_path}/live-%j.out",
        str(tmp_path / "live.sh"),
    ).stdout.strip()
    wait_running(slurm, "lab-otherrun-x-a1")
    assert orphan in " ".join(slurm.jobs())
    r = subprocess.run(
        [sys.executable, "-m", "lab.cli", "clean", "--out", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env=slurm.env,
    )
    assert r.returncode == 0, r.stderr
    assert f"slurm job {orphan}" in r.stdout and "orphan" in r.stdout
    active = [line.split("|")[0] for line in slurm.jobs("%i", "%T")]
    assert orphan not in active and live in active
    assert processes_mentioning("sleep 603") == []
    slurm.run("scancel", live)


def test_time_limit_is_timeout_with_slurms_reason(
    slurm: SlurmCluster, time_limited: tuple[subprocess.Popen[str], Path]
) -> None:
    proc, out = time_limited
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 1, output
    results = json.loads((out / "latest" / "results.json").read_text())
    over = by_id(results)["overtime"]
    assert over["outcome"] == "timeout" and len(over["attempts"]) == 1
    assert "TIMEOUT" in over["reason"] and "TimeLimit" in over["reason"], over["reason"]
    assert run_jobs(slurm, results["run_id"]) == []
    assert processes_mentioning("sleep 601") == []
