"""Makespan of a suite shaped like sglang's 13 diffusion cases on 4 GPUs: the lab's packing
against the sequential schedule sglang's nightly uses, and against the packing lower bound.

Durations are each case's est_time_s in configs/nightly.json (plausible figures: model load +
warmup + 3 measured requests). Run: .venv/bin/python benchmarks/scheduler_makespan.py"""

from __future__ import annotations

import json
from pathlib import Path

from lab.config import load_suite
from lab.host.scheduler import SimJob, packing_lower_bound, simulate_makespan

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    loaded = load_suite(ROOT / "configs" / "nightly.json")
    jobs = [
        SimJob(c.id, c.num_gpus, c.est_time_s)
        for c in loaded.suite.cases
        if not c.model.startswith("ref://")
    ]
    gpus = 4
    packed = simulate_makespan(jobs, gpus)
    sequential = sum(j.duration_s for j in jobs)
    bound = packing_lower_bound(jobs, gpus)
    out = {
        "cases": len(jobs),
        "gpus": gpus,
        "sequential_s": sequential,
        "packed_s": packed,
        "lower_bound_s": bound,
        "speedup_vs_sequential": round(sequential / packed, 2),
        "over_bound_pct": round(100 * (packed / bound - 1), 1),
    }
    print(json.dumps(out, indent=2))
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "scheduler_makespan.json").write_text(
        json.dumps(out, indent=2)
    )


if __name__ == "__main__":
    main()
