"""Load: a suite of 30 CPU reference cases with bounded concurrency. Checks that every result is
present and nothing is left running, and reports the peak RSS of the host's `lab` process.

Run: .venv/bin/python benchmarks/load_30.py [RUNTIME] [CASES]   (default: netns 30)"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    runtime = sys.argv[1] if len(sys.argv) > 1 else "netns"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    cases = [
        {
            "id": f"load_{i:02d}",
            "model": "ref://tiny",
            "task": "text-to-image",
            "prompt": f"case {i}",
            "width": 64,
            "height": 64,
            "num_inference_steps": 2,
            "num_gpus": 0,
            "frameworks": {"reference": {"serve_args": "--warmup-mode off"}},
        }
        for i in range(n)
    ]
    with tempfile.TemporaryDirectory(dir=ROOT / "build") as d:
        suite = Path(d) / "suite.json"
        suite.write_text(
            json.dumps({"cases": cases, "measurement_repeats": 2, "cpu_concurrency": 2})
        )
        t0 = time.monotonic()
        proc = subprocess.Popen(
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
                f"{d}/runs",
                "--gpus",
                "none",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        samples: list[float] = []

        def sample() -> None:
            p = psutil.Process(proc.pid)
            while proc.poll() is None:
                try:
                    samples.append(p.memory_info().rss / 2**20)
                except psutil.Error:
                    break
                time.sleep(0.2)

        t = threading.Thread(target=sample)
        t.start()
        code = proc.wait()
        t.join()
        wall = time.monotonic() - t0
        res = json.loads((Path(d) / "runs" / "latest" / "results.json").read_text())
        outcomes = [c["outcome"] for c in res["cases"]]
        left = [
            p.info["cmdline"]
            for p in psutil.process_iter(["cmdline"])
            if d in " ".join(p.info["cmdline"] or [])
        ]
    tenth = max(1, len(samples) // 10)
    out = {
        "runtime": runtime,
        "cases": n,
        "exit_code": code,
        "wall_s": round(wall, 1),
        "passed": outcomes.count("passed"),
        "results": len(outcomes),
        "leftover_processes": len(left),
        "host_rss_peak_mib": round(max(samples), 1),
        "host_rss_first_10pct_max_mib": round(max(samples[:tenth]), 1),
        "host_rss_last_10pct_max_mib": round(max(samples[-tenth:]), 1),
    }
    print(json.dumps(out, indent=2))
    (ROOT / "benchmarks" / "results" / f"load_{n}_{runtime}.json").write_text(
        json.dumps(out, indent=2)
    )


if __name__ == "__main__":
    main()
