"""Seconds from starting the VRAM ballast to its READY line (memory held), per path.

    python3 benchmarks/gpu/ballast_time.py OUT.json [--keep-gib 24] [--runs 3]

`driver`: the CUDA driver API by ctypes (the default); `torch`: LAB_BALLAST_TORCH=1, the old
path. Each run is a fresh process, as each attempt of the ladder starts one."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lab.sandbox.ballast import READY, TORCH_ENV


def one(path: str, keep_gib: float, device: str) -> tuple[float, str]:
    env = {**os.environ, TORCH_ENV: "1" if path == "torch" else "0"}
    argv = [sys.executable, "-m", "lab.sandbox.ballast", "--keep-gib", str(keep_gib)]
    t0 = time.monotonic()
    p = subprocess.Popen(
        [*argv, "--devices", device],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert p.stdout is not None
    lines = []
    for line in p.stdout:
        lines.append(line.strip())
        if line.startswith(READY):
            break
    held_s = time.monotonic() - t0
    free = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader", "-i", device],
        capture_output=True,
        text=True,
    ).stdout.strip()
    p.terminate()
    p.wait(30)
    return held_s, f"{' | '.join(lines)} | nvidia-smi free while held: {free}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--keep-gib", type=float, default=24.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="0")
    args = ap.parse_args()
    result: dict[str, object] = {"keep_gib": args.keep_gib}
    for path in ("driver", "torch"):
        runs = [one(path, args.keep_gib, args.device) for _ in range(args.runs)]
        result[path] = {
            "seconds": [round(s, 3) for s, _ in runs],
            "median_s": round(statistics.median(s for s, _ in runs), 3),
            "output": [o for _, o in runs],
        }
        print(path, result[path]["seconds"], runs[-1][1], flush=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
