"""VRAM emulation inside the sandbox: a process that holds all but N GiB of each GPU, started
before the server and stopped after it, so any server (even one that sizes its pools from free
memory) sees an N GiB GPU and meets the real CUDA OOM beyond it.

Run as `python -m lab.sandbox.ballast --keep-gib N --devices 0,1`; prints one READY line once
every device's memory is held. `lab case` starts the server only after that line, so the ballast
always allocates before the server's first CUDA allocation: no race by construction.

The memory is held through the CUDA driver API (libcuda.so.1 by ctypes: cuInit, the device's
primary context, cuMemAlloc), not torch: importing torch and creating its context took 4-7 s per
attempt on an H200, paid again on every ladder rung. LAB_BALLAST_TORCH=1 selects the old torch
path (kept for the before/after benchmark in benchmarks/gpu/run.sh)."""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import threading

GIB = 1024**3
CHUNK = 256 * 1024**2
READY = "ballast ready"
TORCH_ENV = "LAB_BALLAST_TORCH"


class CudaError(RuntimeError):
    pass


class BallastFailed(RuntimeError):
    """The ballast exited before holding the memory; the message is its last line."""


def launch(keep_gib: float, devices: list[int]) -> subprocess.Popen[str]:
    """Start the ballast as its own process and return once it holds the memory."""
    argv = [sys.executable, "-m", "lab.sandbox.ballast", "--keep-gib", str(keep_gib)]
    argv += ["--devices", ",".join(map(str, devices))]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith(READY):
            return proc
    proc.wait()
    raise BallastFailed(lines[-1] if lines else "no output")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Driver:
    """The few driver calls the ballast needs, each checked (CUresult 0 is success)."""

    def __init__(self, lib: ctypes.CDLL | None = None) -> None:
        self.lib = lib if lib is not None else ctypes.CDLL("libcuda.so.1")
        self.check("cuInit", self.lib.cuInit(0))

    def check(self, what: str, code: int) -> None:
        if code != 0:
            name = ctypes.c_char_p()
            self.lib.cuGetErrorName(code, ctypes.byref(name))
            text = name.value.decode() if name.value else f"CUresult {code}"
            raise CudaError(f"{what} failed: {text}")

    def use_device(self, ordinal: int) -> None:
        dev, ctx = ctypes.c_int(), ctypes.c_void_p()
        self.check("cuDeviceGet", self.lib.cuDeviceGet(ctypes.byref(dev), ordinal))
        # the primary context: what the runtime API (and so the server) would share per process
        self.check(
            "cuDevicePrimaryCtxRetain", self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev)
        )
        self.check("cuCtxSetCurrent", self.lib.cuCtxSetCurrent(ctx))

    def mem_get_info(self) -> tuple[int, int]:
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        self.check(
            "cuMemGetInfo", self.lib.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total))
        )
        return free.value, total.value

    def alloc(self, size: int) -> int:
        ptr = ctypes.c_uint64()
        self.check(
            f"cuMemAlloc({size})", self.lib.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(size))
        )
        return ptr.value


def plan_first_block(free: int, total: int, keep_gib: float, device: int) -> int:
    """Bytes of the first (big) block; SystemExit when the GPU cannot offer `keep_gib`."""
    keep = int(keep_gib * GIB)
    if keep > total:
        raise SystemExit(
            f"ballast: GPU {device} has {total / GIB:.1f} GiB in all; cannot offer {keep_gib} GiB"
        )
    if free < keep:
        raise SystemExit(
            f"ballast: GPU {device} has only {free / GIB:.1f} GiB free; cannot offer {keep_gib} GiB"
        )
    # One big block, then chunks: allocation granularity and the context take memory too.
    return max(0, free - keep - CHUNK)


def hold_driver(keep_gib: float, devices: list[int], driver: Driver | None = None) -> list[int]:
    drv = driver or Driver()
    held: list[int] = []
    keep = int(keep_gib * GIB)
    for d in devices:
        drv.use_device(d)
        free, total = drv.mem_get_info()
        first = plan_first_block(free, total, keep_gib, d)
        if first > 0:
            held.append(drv.alloc(first))
        while (free_now := drv.mem_get_info()[0]) - keep > CHUNK // 4:
            held.append(drv.alloc(min(CHUNK, free_now - keep)))
        left = drv.mem_get_info()[0]
        print(f"ballast: GPU {d}: {left / GIB:.2f} GiB left free of {total / GIB:.1f}", flush=True)
    return held  # freed when the process exits


def hold_torch(keep_gib: float, devices: list[int]) -> list[object]:
    import torch

    held: list[object] = []
    keep = int(keep_gib * GIB)
    for d in devices:
        free, total = torch.cuda.mem_get_info(d)
        first = plan_first_block(free, total, keep_gib, d)
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


def hold(keep_gib: float, devices: list[int]) -> list[object]:
    if os.environ.get(TORCH_ENV) == "1":
        return hold_torch(keep_gib, devices)
    try:
        return list(hold_driver(keep_gib, devices))
    except (OSError, CudaError) as e:  # no driver library, or the driver said no
        raise SystemExit(f"ballast: {e}") from None


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
