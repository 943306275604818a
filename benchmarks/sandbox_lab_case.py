"""`lab case` against sglang's constants (2 s health poll, 15 s post-case sleep, 30 s TERM grace):

- oom_to_stopped_s: OOM line read → result.json written and the process group gone (target ≤ 1 s)
- ready_lag_s: server first answers healthy → lab sees it ready (target ≤ 0.2 s)
- overhead_s: wall time of `lab case` minus the server's own start-up (target ≤ 0.5 s)
- watch_lines_per_s: log lines the watch timestamps, writes and checks per second (≥ 200,000)

Medians over REPEATS runs. Run: .venv/bin/python benchmarks/sandbox_lab_case.py [REPEATS]"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab.sandbox.server import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# A server that answers /health 503 until 0.5 s after it bound its port, then 200.
HEALTHY_AFTER_S = 0.5
SERVER = r"""
import http.server, sys, time
t0 = time.time()
first = []
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = time.time() - t0 > 0.5
        if ok and not first:
            first.append(time.time()); print(f"FIRST_200 {first[0]:.6f}", flush=True)
        self.send_response(200 if ok else 503); self.end_headers()
    def log_message(self, *a): pass
print(f"BOUND {time.time():.6f}", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def run_case(spec: dict, tmp: Path) -> tuple[float, dict]:
    path = tmp / "spec.json"
    path.write_text(json.dumps(spec))
    t0 = time.time()
    subprocess.run([PY, "-m", "lab.cli", "case", str(path)], capture_output=True, check=False)
    wall = time.time() - t0
    return wall, json.loads((Path(spec["out_dir"]) / "result.json").read_text())


def base_spec(tmp: Path, case: dict) -> dict:
    return {
        "run_id": "bench",
        "case": case,
        "frameworks": list(case.get("frameworks", {})),
        "out_dir": str(tmp / "out"),
        "log_dir": str(tmp / "logs"),
        "config_dir": str(tmp),
        "startup_timeout_s": 30,
        "port": 30123,
    }


def bench_oom(tmp: Path) -> float:
    cmd = (
        f"{PY} -c \"import time; print('loading', flush=True); time.sleep(0.2); "
        "print('torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB', "
        'flush=True); time.sleep(60)"'
    )
    spec = base_spec(tmp, {"id": "oom", "kind": "test", "command": cmd})
    _, res = run_case(spec, tmp)
    written = (Path(spec["out_dir"]) / "result.json").stat().st_mtime
    assert res["outcome"] == "oom", res
    return written - res["frameworks"][0]["fatal_line_at"]


def bench_ready(tmp: Path) -> tuple[float, float]:
    script = tmp / "server.py"
    script.write_text(SERVER)
    case = {
        "id": "ready",
        "model": "m",
        "frameworks": {
            "custom": {
                "command": f"{PY} {script} {{port}}",
                "health_path": "/health",
                "request": "none",
            }
        },
    }
    spec = base_spec(tmp, case)
    wall, res = run_case(spec, tmp)
    fr = res["frameworks"][0]
    log = Path(fr["log_path"]).read_text().split("\n")
    bound = float(next(ln.split("BOUND ")[1] for ln in log if "BOUND" in ln))
    healthy_from = bound + HEALTHY_AFTER_S  # the instant the server starts answering 200
    server_own = healthy_from - res["started_at"]  # interpreter start + bind + its 0.5 s
    return fr["ready_at"] - healthy_from, wall - server_own


def bench_watch(tmp: Path, lines: int = 2_000_000) -> float:
    src = tmp / "flood.txt"
    src.write_bytes((b"INFO " + b"x" * 94 + b"\n") * lines)
    t0 = time.perf_counter()
    sp = ServerProcess(["cat", str(src)], tmp / "flood.log")
    sp.proc.wait()
    sp.flush_log(60)
    dt = time.perf_counter() - t0
    assert sp.lines == lines, sp.lines
    return lines / dt


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    oom, ready, overhead, watch = [], [], [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as d:
            oom.append(bench_oom(Path(d)))
        with tempfile.TemporaryDirectory() as d:
            r, o = bench_ready(Path(d))
            ready.append(r)
            overhead.append(o)
    for _ in range(3):
        with tempfile.TemporaryDirectory() as d:
            watch.append(bench_watch(Path(d)))
    out = {
        "repeats": repeats,
        "oom_to_stopped_s_median": round(statistics.median(oom), 3),
        "ready_lag_s_median": round(statistics.median(ready), 3),
        "overhead_s_median": round(statistics.median(overhead), 3),
        "watch_lines_per_s_median": int(statistics.median(watch)),
        "sglang_constants": {"health_poll_s": 2.0, "post_case_sleep_s": 15.0, "term_grace_s": 30.0},
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(out, indent=2))
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "sandbox_lab_case.json").write_text(
        json.dumps(out, indent=2)
    )


if __name__ == "__main__":
    main()
