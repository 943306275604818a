"""Summarise the h100-colocate phase: the gpu-colocate suite run alone (no history yet: every
case exclusive) and then co-located (the same --out: the estimates learned from the first run).
Writes colocate.json: device, wall time both ways, failures both ways, peak VRAM sum per GPU
against the card, per-case placements of the co-located run.
Run: python3 benchmarks/gpu/colocate.py OUT_ROOT OUT.json"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lab.results.store import load_results
from lab.results.timeline import placement_rows


def summary(run: Path) -> dict[str, object]:
    r = load_results(run)
    attempts = [a for c in r.cases for a in c.attempts]
    start = min(a.granted_at or a.started_at for a in attempts)
    wall = max(a.finished_at for a in attempts) - start
    per_gpu: dict[str, float] = {}
    for a in attempts:
        for f in a.frameworks:
            for i, mib in (f.telemetry.peak_gpu_memory_per_device_mib or {}).items():
                g = str(a.gpus[int(i)]) if int(i) < len(a.gpus) else i
                per_gpu[g] = max(per_gpu.get(g, 0.0), mib / 1024)
    return {
        "run_id": r.run_id,
        "wall_s": round(wall, 1),
        "failures": sorted(c.case_id for c in r.cases if str(c.outcome) != "passed"),
        "colocation_notes": {c.case_id: c.colocation_note for c in r.cases if c.colocation_note},
        "peak_device_gib_per_gpu": {g: round(v, 2) for g, v in per_gpu.items()},
        "placements": [
            dict(
                zip(
                    ("case", "attempt", "gpu", "start_s", "took_s", "share", "beside", "outcome"),
                    row,
                    strict=True,
                )
            )
            for row in placement_rows(r)
        ],
    }


def main() -> None:
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    runs = sorted(p.parent for p in root.glob("2*/results.json"))
    alone, shared = summary(runs[0]), summary(runs[-1])
    card = None
    smi = list(root.parent.glob("nvidia-smi-*.csv"))
    if smi:
        card = smi[0].read_text().splitlines()[-1]
    r = load_results(runs[-1])
    data = {
        "device": r.gpu_model,
        "nvidia_smi": card,
        "cases": len(r.cases),
        "exclusive": {k: v for k, v in alone.items() if k != "placements"},
        "colocated": shared,
        "speedup": round(float(alone["wall_s"]) / max(1e-9, float(shared["wall_s"])), 2),  # type: ignore[arg-type]
        "extra_failures": len(set(shared["failures"]) - set(alone["failures"])),  # type: ignore[arg-type]
    }
    out.write_text(json.dumps(data, indent=1))
    print(json.dumps({k: data[k] for k in ("device", "cases", "speedup", "extra_failures")}))
    print("exclusive", alone["wall_s"], "s; co-located", shared["wall_s"], "s;",
          "peak per GPU", shared["peak_device_gib_per_gpu"])  # fmt: skip


if __name__ == "__main__":
    main()
