"""What the end-to-end tests (and benchmarks/load_30.py) share: reference-server cases, a suite
file, `lab nightly` and `lab clean` run as a user runs them, and the two-sandbox port probe."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
IMAGE_SERVER = ROOT / "tests" / "data" / "image_server.py"

# Run by each of two sandboxes: binds 127.0.0.1:30000, says so in a shared folder, waits until the
# other sandbox holds the same port at the same time, then fetches from itself over loopback.
PORT_PROBE = r"""
import http.server, os, pathlib, sys, threading, time, urllib.request
me, other, shared = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 30000), http.server.SimpleHTTPRequestHandler)
threading.Thread(target=srv.serve_forever, daemon=True).start()
(shared / f"bound-{me}").write_text(str(os.getpid()))
deadline = time.time() + 30
while not (shared / f"bound-{other}").exists():
    if time.time() > deadline:
        sys.exit("the other sandbox never bound port 30000")
    time.sleep(0.05)
status = urllib.request.urlopen("http://127.0.0.1:30000/", timeout=5).status
print("served", me, status, flush=True)
"""


def ref_case(cid: str, steps: int = 2, size: int = 64, **over: Any) -> dict[str, Any]:
    """A reference-server case on the CPU (ref://tiny: about 0.05 s a step at 256²)."""
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


def slow_case(cid: str, **over: Any) -> dict[str, Any]:
    """Several seconds of measuring: long enough to interrupt, kill or overlap."""
    return ref_case(cid, **{"steps": 60, "size": 256, **over})


def sandbox_work_dir(request: Any, prefix: str) -> Path:
    """A run folder the docker sandbox's user (1000) can reach: under the checkout's build/
    (pytest's own tmp is 0700 and /tmp is a tmpfs inside the sandbox); removed after the test."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=ROOT / "build"))
    work.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(work, ignore_errors=True))
    return work


def write_suite(tmp: Path, cases: list[dict[str, Any]], **top: Any) -> Path:
    p = tmp / "suite.json"
    suite = {"measurement_repeats": 2, "startup_timeout_s": 90, "request_timeout_s": 60}
    p.write_text(json.dumps({**suite, **top, "cases": cases}))
    return p


def lab_argv(command: str, suite: Path, out: Path, runtime: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lab.cli",
        command,
        "--config",
        str(suite),
        "--runtime",
        runtime,
        "--out",
        str(out),
        "--gpus",
        "none",
        *extra,
    ]


def run_nightly(
    suite: Path,
    out: Path,
    runtime: str,
    *extra: str,
    env: dict[str, str] | None = None,
    timeout_s: float = 600,
) -> tuple[int, dict, Path, str]:
    """Exit code, results.json, run dir and stderr of a finished `lab nightly`."""
    r = subprocess.run(
        lab_argv("nightly", suite, out, runtime, *extra),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    run_dir = (out / "latest").resolve()
    results = json.loads((run_dir / "results.json").read_text())
    return r.returncode, results, run_dir, r.stderr


def lab_clean(out: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`lab clean --out OUT`, as a user (or the next night) runs it."""
    return subprocess.run(
        [sys.executable, "-m", "lab.cli", "clean", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def start_nightly(
    suite: Path, out: Path, runtime: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """`lab nightly` in the background, its stdout and stderr together."""
    return subprocess.Popen(
        lab_argv("nightly", suite, out, runtime),
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


def by_id(results: dict) -> dict[str, dict]:
    return {c["case_id"]: c for c in results["cases"]}


def processes_mentioning(marker: Path | str) -> list[str]:
    """Command lines (other than pytest's) that hold `marker`: what a run left running."""
    hits = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            line = " ".join(p.info["cmdline"] or [])
        except psutil.Error:
            continue
        if str(marker) in line and "pytest" not in line:
            hits.append(line)
    return hits


def custom_image_case(cid: str, *server_args: str, **fw: object) -> dict[str, object]:
    """A `custom` case of tests/data/image_server.py: a 64² image in 200 ms."""
    command = " ".join(["{python}", str(IMAGE_SERVER), "{port}", "200", *server_args])
    return {
        "id": cid,
        "model": "m",
        "width": 64,
        "height": 64,
        "num_gpus": 0,
        "est_time_s": 5,
        "frameworks": {"custom": {"command": command, "request": "image", **fw}},
    }
