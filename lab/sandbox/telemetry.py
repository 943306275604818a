"""Peak memory of the server: GPU memory from NVML (per process tree and per device) and host RSS
of the process tree from psutil, sampled every 50 ms. No GPU or no NVML → None, never an error.

NVML reports host PIDs. Inside a container with its own PID namespace the server's PIDs do not
match, so the tree's GPU peak falls back to the rise of device memory above its idle level."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from lab.contract import Telemetry

SAMPLE_INTERVAL_S = 0.05
MIB = 1024 * 1024


class Nvml:
    """The sandbox's one handle on NVML; every method degrades to empty on a machine without it."""

    def __init__(self) -> None:
        self.ok = False
        self._nv: Any = None  # the pynvml module, untyped
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nv = pynvml
            self.ok = True
        except Exception:  # no driver, no library, no GPU: telemetry is simply absent
            self._nv = None

    def _handle(self, uuid: str) -> Any:
        # By UUID: NVML's indices ignore CUDA_VISIBLE_DEVICES and differ inside containers.
        return self._nv.nvmlDeviceGetHandleByUUID(uuid)

    def used_mib(self, uuid: str) -> float:
        return float(self._nv.nvmlDeviceGetMemoryInfo(self._handle(uuid)).used) / MIB

    def processes(self, uuid: str) -> dict[int, float]:
        """PID → MiB of the compute processes on a device."""
        out: dict[int, float] = {}
        procs = self._nv.nvmlDeviceGetComputeRunningProcesses(self._handle(uuid))
        for p in procs:
            out[p.pid] = (p.usedGpuMemory or 0) / MIB
        return out

    def all_pids(self, devices: list[str]) -> set[int]:
        pids: set[int] = set()
        for d in devices:
            with contextlib.suppress(Exception):
                pids.update(self.processes(d))
        return pids


class Sampler:
    """Samples memory of the tree rooted at `root_pid` on a thread until stopped."""

    def __init__(self, pids: Callable[[], set[int]], nvml: Nvml, devices: list[str]) -> None:
        self._pids = pids
        self._nvml = nvml
        self._devices = devices if nvml.ok else []
        self._stop = threading.Event()
        self.telemetry = Telemetry()
        self._idle = {d: self._safe_used(d) for d in self._devices}
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)

    def _safe_used(self, d: str) -> float:
        try:
            return self._nvml.used_mib(d)
        except Exception:
            return 0.0

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> Telemetry:
        self._stop.set()
        self._thread.join(2.0)
        return self.telemetry

    def _run(self) -> None:
        t = self.telemetry
        while not self._stop.is_set():
            self.sample_once()
            t.samples += 1
            self._stop.wait(SAMPLE_INTERVAL_S)

    def sample_once(self) -> None:
        t = self.telemetry
        pids = self._pids()
        rss = 0.0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                rss += psutil.Process(pid).memory_info().rss / MIB
        t.peak_host_rss_mib = max(t.peak_host_rss_mib or 0.0, round(rss, 1))
        if not self._devices:
            return
        tree_gpu = 0.0
        matched = False
        rise = 0.0
        per_device = dict(t.peak_gpu_memory_per_device_mib or {})
        for i, d in enumerate(self._devices):
            try:
                used = self._nvml.used_mib(d)
                procs = self._nvml.processes(d)
            except Exception:
                continue
            per_device[str(i)] = round(max(per_device.get(str(i), 0.0), used), 1)
            rise += max(0.0, used - self._idle.get(d, 0.0))
            for pid, mib in procs.items():
                if pid in pids:
                    matched = True
                    tree_gpu += mib
        t.peak_gpu_memory_per_device_mib = per_device
        value = tree_gpu if matched else rise
        t.peak_gpu_memory_mib = round(max(t.peak_gpu_memory_mib or 0.0, value), 1)


def wait_gpu_released(
    nvml: Nvml, devices: list[str], before: set[int], timeout_s: float = 60.0
) -> float | None:
    """Wait until no process that appeared on `devices` since `before` is listed by NVML.

    Compares NVML's own PID lists with each other, so it works whatever PID namespace we are in.
    Returns the seconds it took, or None without NVML; raises TimeoutError past the bound."""
    if not nvml.ok or not devices:
        return None
    t0 = time.monotonic()
    while True:
        if not (nvml.all_pids(devices) - before):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"GPU processes still listed by NVML after {timeout_s:.0f} s")
        time.sleep(0.02)
