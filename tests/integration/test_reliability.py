"""Nothing lost, nothing left running: Ctrl-C and SIGTERM mid-run, SIGKILL of the host then
`lab clean`, a full output disk, and secrets that never reach a file under runs/."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netns runtime, tmpfs)")


def slow_case(cid: str, **over: Any) -> dict[str, Any]:
    c = {
        "id": cid,
        "model": "ref://tiny",
        "task": "text-to-image",
        "prompt": "a slow one",
        "width": 256,
        "height": 256,
        "num_inference_steps": 60,
        "num_gpus": 0,
        "frameworks": {"reference": {"serve_args": "--warmup-mode off"}},
    }
    c.update(over)
    return c


def write_suite(tmp: Path, cases: list[dict[str, Any]]) -> Path:
    p = tmp / "suite.json"
    p.write_text(json.dumps({"measurement_repeats": 5, "startup_timeout_s": 90, "cases": cases}))
    return p


def start_nightly(
    suite: Path, out: Path, runtime: str, env: dict | None = None
) -> subprocess.Popen:
    return subprocess.Popen(
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
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_for_attempts(out: Path, n: int, timeout_s: float = 60) -> Path:
    """Until n attempts have a server that answered (its log shows a generation request)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        logs = list(out.glob("*/logs/*.log"))
        busy = [p for p in logs if "POST /v1/images" in p.read_text(errors="replace")]
        if len(busy) >= n:
            return busy[0].parents[1]
        time.sleep(0.2)
    raise AssertionError(f"no {n} running attempts under {out} after {timeout_s} s")


def our_processes(run_dir: Path) -> list[str]:
    found = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except psutil.Error:
            continue
        if str(run_dir) in cmd or ("lab.refserver" in cmd and str(run_dir.parent) in cmd):
            found.append(cmd)
    return found


@root_only
@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_run_marks_unfinished_cases_interrupted(
    tmp_path: Path, sig: int, code: int
) -> None:
    out = tmp_path / "runs"
    proc = start_nightly(write_suite(tmp_path, [slow_case("one"), slow_case("two")]), out, "netns")
    run_dir = wait_for_attempts(out, 1)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == code, output
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted"
    assert {c["outcome"] for c in results["cases"]} == {"interrupted"}
    assert (run_dir / "junit.xml").exists() and (run_dir / "summary.md").exists()
    time.sleep(0.5)
    left = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "lab.refserver" in " ".join(p.info["cmdline"] or [])
        and any(str(tmp_path) in a for a in p.info["cmdline"] or [])
    ]
    assert left == []
    assert not any(
        "lab.refserver" in " ".join(p.info["cmdline"] or []) and p.ppid() == proc.pid
        for p in psutil.process_iter(["cmdline"])
    )


@root_only
@pytest.mark.slow
def test_sigkill_of_the_host_then_lab_clean_removes_the_leftovers(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    proc = start_nightly(write_suite(tmp_path, [slow_case("orphan")]), out, "netns")
    run_dir = wait_for_attempts(out, 1)
    proc.kill()
    proc.wait(10)
    time.sleep(0.3)
    orphans = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "lab.cli case" in " ".join(p.info["cmdline"] or [])
        and str(run_dir) in " ".join(p.info["cmdline"] or [])
    ]
    assert orphans, "the dead host left no sandbox behind (the test proves nothing)"
    r = subprocess.run(
        [sys.executable, "-m", "lab.cli", "clean", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "removed" in r.stdout and "orphan" in r.stdout
    time.sleep(0.5)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in orphans)


@root_only
@pytest.mark.slow
def test_full_output_disk_is_a_clear_error_and_written_results_stay_valid(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], check=True)
    try:
        # the second case's server floods its log until the 3 MB disk is full
        cases = [
            slow_case("quiet", num_inference_steps=2),
            slow_case(
                "flooder",
                num_inference_steps=2,
                frameworks={
                    "reference": {
                        "serve_args": "--warmup-mode off",
                        "extra_env": {"REFSERVER_FAULT": "flood:100000"},
                    }
                },
            ),
        ]
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "lab.cli",
                "nightly",
                "--config",
                str(write_suite(tmp_path, cases)),
                "--runtime",
                "netns",
                "--out",
                str(mnt / "runs"),
                "--gpus",
                "none",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
        assert r.returncode == 2, r.stderr
        assert "No space left" in r.stderr and "Traceback" not in r.stderr
        results = list((mnt / "runs").glob("*/results.json"))
        for f in results:
            json.loads(f.read_text())  # whatever was written is whole
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@root_only
@pytest.mark.slow
def test_secrets_reach_the_server_but_no_file_under_runs(tmp_path: Path) -> None:
    secret = "hf_secret_value_123456"
    digest = hashlib.sha256(secret.encode()).hexdigest()  # the config never holds the secret
    case = {
        "id": "needs_token",
        "kind": "test",
        "command": f'printf %s "$HF_TOKEN" | sha256sum | grep -q {digest} && echo token-ok',
    }
    out = tmp_path / "runs"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "lab.cli",
            "nightly",
            "--config",
            str(write_suite(tmp_path, [case])),
            "--runtime",
            "netns",
            "--out",
            str(out),
            "--gpus",
            "none",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "HF_TOKEN": secret},
    )
    assert r.returncode == 0, r.stderr  # the command saw the token
    leaked = [p for p in out.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []
