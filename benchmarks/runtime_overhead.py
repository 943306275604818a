"""Host overhead of one sandbox per attempt: start (docker: create + start) + the trivial command
`true` + wait + stop (docker: remove). Target: median ≤ 1.5 s per attempt.

docker uses the `host` image (needs no built image); netns and local run the same `true`.
Medians over REPEATS runs after one warm-up each; written to
benchmarks/results/runtime_overhead.json.
Run: .venv/bin/python benchmarks/runtime_overhead.py [REPEATS]"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from lab.errors import RuntimeUnavailable
from lab.host.runtimes.base import SandboxRequest
from lab.host.runtimes.docker import DockerRuntime
from lab.host.runtimes.local import LocalRuntime
from lab.host.runtimes.netns import NetnsRuntime

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 1.5


def one_attempt(runtime, tmp: Path, run_id: str, n: int) -> tuple[float, float]:
    """(total seconds, seconds until wait() returned) of one attempt running `true`."""
    req = SandboxRequest(
        run_id=run_id,
        case_id="bench",
        attempt=n,
        spec_path=tmp / "run" / "attempts" / f"a{n}" / "spec.json",
        run_dir=tmp / "run",
        config_dir=tmp,
        image="host",
        command=["true"],
    )
    t0 = time.perf_counter()
    box = runtime.start(req)
    ex = box.wait(60)
    t_wait = time.perf_counter() - t0
    box.stop(grace_s=1)
    total = time.perf_counter() - t0
    if ex.exit_code != 0:
        raise RuntimeError(f"{runtime.name}: `true` exited {ex.exit_code}: {ex.log_tail}")
    return total, t_wait


def measure(runtime, repeats: int) -> dict[str, object]:
    try:
        runtime.check()
    except RuntimeUnavailable as e:
        return {"skipped": str(e)}
    run_id = f"bench-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="lab-bench-") as d:
        tmp = Path(d)
        os.chmod(tmp, 0o755)
        try:
            one_attempt(runtime, tmp, run_id, 0)  # warm-up: image import, caches
            samples = [one_attempt(runtime, tmp, run_id, n) for n in range(1, repeats + 1)]
        finally:
            runtime.cleanup(run_id)
    totals = [s[0] for s in samples]
    median = statistics.median(totals)
    return {
        "median_s": round(median, 3),
        "min_s": round(min(totals), 3),
        "max_s": round(max(totals), 3),
        "median_until_exit_noticed_s": round(statistics.median(s[1] for s in samples), 3),
        "samples_s": [round(t, 3) for t in totals],
        "target_s": TARGET_S,
        "meets_target": median <= TARGET_S,
    }


def main() -> int:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    out: dict[str, object] = {
        "what": "start + `true` + wait + stop/remove, per attempt, median",
        "repeats": repeats,
        "cpu_count": os.cpu_count(),
        "kernel": platform.release(),
    }
    for runtime in (DockerRuntime(), NetnsRuntime(), LocalRuntime()):
        out[runtime.name] = measure(runtime, repeats)
        print(runtime.name, json.dumps(out[runtime.name]), flush=True)
    if isinstance(out["docker"], dict) and "median_s" in out["docker"]:
        info = DockerRuntime().client.version()
        out["docker_engine"] = info.get("Version")
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    path = ROOT / "benchmarks" / "results" / "runtime_overhead.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    failed = [
        name
        for name in ("docker", "netns", "local")
        if isinstance(out[name], dict) and out[name].get("meets_target") is False
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
