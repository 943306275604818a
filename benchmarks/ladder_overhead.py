"""Time the ladder adds between attempts, beyond the attempts themselves (target ≤ 2 s): from one
attempt's result written to the next attempt's `lab case` starting, i.e. sandbox teardown, the
next rung's plan, a new sandbox, and `lab case` starting up.

A reference case whose device budget no rung can meet climbs the whole ladder (4 attempts).
Run: .venv/bin/python benchmarks/ladder_overhead.py [RUNTIME ...]   (default: netns docker)"""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASE = {"id": "hopeless", "model": "ref://tiny", "task": "text-to-image", "prompt": "p",
        "width": 64, "height": 64, "num_inference_steps": 2, "num_gpus": 0, "vram_gib": 0.0005,
        "frameworks": {"reference": {"serve_args": "--warmup-mode off"}}}  # fmt: skip


def gaps(runtime: str, runs: int = 3) -> list[float]:
    out: list[float] = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as d:
            suite = Path(d) / "suite.json"
            suite.write_text(json.dumps({"cases": [CASE], "measurement_repeats": 1}))
            subprocess.run([sys.executable, "-m", "lab.cli", "nightly", "--config", str(suite),
                            "--runtime", runtime, "--out", f"{d}/runs", "--gpus", "none"],
                           cwd=ROOT, capture_output=True, check=False)  # fmt: skip
            res = json.loads((Path(d) / "runs" / "latest" / "results.json").read_text())
            att = res["cases"][0]["attempts"]
            out += [b["started_at"] - a["finished_at"] for a, b in itertools.pairwise(att)]
    return out


def main() -> None:
    runtimes = sys.argv[1:] or ["netns", "docker"]
    report = {}
    for rt in runtimes:
        g = gaps(rt)
        report[rt] = {"median_s": round(statistics.median(g), 3), "max_s": round(max(g), 3),
                      "gaps": len(g), "target_s": 2.0}  # fmt: skip
    print(json.dumps(report, indent=2))
    (ROOT / "benchmarks" / "results" / "ladder_overhead.json").write_text(
        json.dumps(report, indent=2)
    )


if __name__ == "__main__":
    main()
