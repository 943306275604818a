"""Nothing lost, nothing left running: Ctrl-C and SIGTERM mid-run, SIGKILL of the host then
`lab clean`, a full output disk, and secrets that never reach a file under runs/."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from nightly_helpers import (
    ROOT,
    lab_argv,
    lab_clean,
    slow_case,
    start_nightly,
    wait_for_attempts,
)
from nightly_helpers import write_suite as _write_suite


def write_suite(tmp: Path, cases: list[dict[str, Any]]) -> Path:
    return _write_suite(tmp, cases, measurement_repeats=5, request_timeout_s=600)


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netns runtime, tmpfs)")


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
    # Every attempt that got as far as its server's log still leads to that log.
    log_paths = {
        f["log_path"]
        for c in results["cases"]
        for a in c["attempts"]
        for f in a["frameworks"]
        if f["log_path"]
    }
    on_disk = {str(p) for p in (run_dir / "logs").glob("*.log")}
    assert on_disk and log_paths == on_disk, (log_paths, on_disk)
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
    r = lab_clean(out)
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
            lab_argv("nightly", write_suite(tmp_path, cases), mnt / "runs", "netns"),
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
        lab_argv("nightly", write_suite(tmp_path, [case]), out, "netns"),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "HF_TOKEN": secret},
    )
    assert r.returncode == 0, r.stderr  # the command saw the token
    leaked = [p for p in out.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []
