"""VRAM emulation inside the sandbox: a process that holds all but N GiB of each GPU, started
before the server and stopped after it, so any server (even one that sizes its pools from free
memory) sees an N GiB GPU and meets the real CUDA OOM beyond it.

Run as `python -m lab.sandbox.ballast --keep-gib N --devices 0,1`; prints one READY line."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

GIB = 1024**3
CHUNK = 256 * 1024**2
READY = "ballast ready"


def hold(keep_gib: float, devices: list[int]) -> list[object]:
    import torch

    held: list[object] = []
    for d in devices:
        free, total = torch.cuda.mem_get_info(d)
        keep = int(keep_gib * GIB)
        if keep > total:
            raise SystemExit(
                f"ballast: GPU {d} has {total / GIB:.1f} GiB in all; cannot offer {keep_gib} GiB"
            )
        if free < keep:
            raise SystemExit(
                f"ballast: GPU {d} has only {free / GIB:.1f} GiB free; cannot offer {keep_gib} GiB"
            )
        # One big block, then chunks: our own CUDA context also takes memory.
        first = free - keep - CHUNK
        if first > 0:
            held.append(torch.empty(first, dtype=torch.uint8, device=f"cuda:{d}"))
        while torch.cuda.mem_get_info(d)[0] - keep > CHUNK // 4:
            size = min(CHUNK, torch.cuda.mem_get_info(d)[0] - keep)
            held.append(torch.empty(size, dtype=torch.uint8, device=f"cuda:{d}"))
        free_now = torch.cuda.mem_get_info(d)[0]
        print(
            f"ballast: GPU {d}: {free_now / GIB:.2f} GiB left free of {total / GIB:.1f}", flush=True
        )
    return held


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lab.sandbox.ballast")
    ap.add_argument("--keep-gib", type=float, required=True)
    ap.add_argument("--devices", required=True, help="comma-separated CUDA device indices")
    args = ap.parse_args(argv)
    held = hold(args.keep_gib, [int(x) for x in args.devices.split(",") if x != ""])
    print(READY, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    del held
    sys.exit(0)


if __name__ == "__main__":
    main()
