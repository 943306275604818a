"""The figures of the GPU proof, from the results.json files a GPU run wrote:
  python3 benchmarks/gpu/summarize.py benchmarks/gpu/results/h100
One row per framework attempt: outcome, OOM line → process group gone, GPU memory back after the
stop, peak GPU memory, and the median and coefficient of variation of the measured latencies."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def rows(results_json: Path) -> list[dict[str, object]]:
    run = json.loads(results_json.read_text())
    out: list[dict[str, object]] = []
    for case in run["cases"]:
        for attempt in case["attempts"]:
            for fw in attempt["frameworks"]:
                lat = fw.get("latency_samples_s") or []
                cv = statistics.stdev(lat) / statistics.mean(lat) if len(lat) > 1 else None
                tel = fw.get("telemetry") or {}
                oom_to_stop = None
                if fw.get("fatal_line_at") and fw.get("stopped_at"):
                    oom_to_stop = round(fw["stopped_at"] - fw["fatal_line_at"], 3)
                out.append(
                    {
                        "run": run["run_id"],
                        "runtime": run["runtime"],
                        "case": case["case_id"],
                        "rung": attempt["rung"],
                        "outcome": attempt["outcome"],
                        "oom_line_to_stopped_s": oom_to_stop,
                        "gpu_free_after_s": tel.get("gpu_free_after_s"),
                        "peak_gpu_mib": tel.get("peak_gpu_memory_mib"),
                        "latency_median_s": round(statistics.median(lat), 3) if lat else None,
                        "latency_cv_pct": round(100 * cv, 2) if cv is not None else None,
                        "n": len(lat),
                    }
                )
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    found = sorted(p for d in argv for p in Path(d).rglob("results.json"))
    for path in found:
        for row in rows(path):
            print(json.dumps(row))
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
