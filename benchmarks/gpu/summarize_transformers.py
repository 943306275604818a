"""One line per attempt of a `transformers` run (benchmarks/gpu/run.sh h100-transformers):
start → ready, the OOM line → the attempt's end, peak VRAM of the rung. Usage: RUN_ROOT."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(root: str) -> int:
    results = json.loads((Path(root) / "latest" / "results.json").read_text())
    for case in results["cases"]:
        print(f"{case['case_id']}: {case['outcome']}")
        for a in case["attempts"]:
            for fr in a["frameworks"]:
                t = fr.get("phase_timings_s") or {}
                peak = (fr.get("telemetry") or {}).get("peak_gpu_memory_mib")
                line = f"  a{a['attempt']} {a['rung']}: {fr['outcome']}"
                line += f", start→ready {t['startup']} s" if "startup" in t else ""
                if fr.get("fatal_line_at") and fr.get("stopped_at"):
                    line += f", OOM line→ended {fr['stopped_at'] - fr['fatal_line_at']:.2f} s"
                line += f", peak VRAM {peak} MiB" if peak is not None else ""
                line += f", median {fr['latency_s']} s" if fr.get("latency_s") else ""
                print(line)
                if fr.get("reason"):
                    print(f"    {fr['reason'][:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
