"""The host's GPUs, through NVML (nvidia-ml-py): the one host module that talks to NVML.

Indices are NVML's (PCI bus order). On a machine without an NVIDIA driver every function answers
"no GPUs" (empty inventory, empty sets) instead of raising."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from lab.errors import LabError

_lock = threading.Lock()
_nvml: ModuleType | None = None
_unavailable: str | None = None  # why NVML could not be used, once we know


@dataclass(frozen=True)
class GpuInfo:
    index: int  # NVML's index: PCI bus order
    name: str
    uuid: str  # "GPU-…": what CUDA_VISIBLE_DEVICES and NVML agree on everywhere
    memory_total_mib: float
    minor_number: int | None = None  # N of /dev/nvidiaN; usually, not always, the index
    pci_bus_id: str = ""


def visible_devices(infos: list[GpuInfo], gpus: list[int]) -> str:
    """CUDA_VISIBLE_DEVICES for these GPUs: UUIDs when NVML knows them all, else indices."""
    uuids = [g.uuid for g in infos if g.uuid]
    return ",".join(uuids) if gpus and len(uuids) == len(gpus) else ",".join(map(str, gpus))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml() -> ModuleType | None:
    """NVML, initialised once per process; None when there is no driver (or no nvidia-ml-py)."""
    global _nvml, _unavailable
    with _lock:
        if _nvml is not None or _unavailable is not None:
            return _nvml
        try:
            import pynvml

            pynvml.nvmlInit()
            _nvml = pynvml
        except ImportError:
            _unavailable = "nvidia-ml-py is not installed"
        except Exception as e:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
            _unavailable = f"NVML: {_text(e) or type(e).__name__}"
        return _nvml


def unavailable_reason() -> str | None:
    """Why there are no GPUs here (None when NVML works)."""
    nvml()
    return _unavailable


def inventory() -> list[GpuInfo]:
    """This machine's GPUs by NVML index; [] without a driver."""
    n = nvml()
    if n is None:
        return []
    gpus = []
    for i in range(n.nvmlDeviceGetCount()):
        h = n.nvmlDeviceGetHandleByIndex(i)
        try:
            minor: int | None = int(n.nvmlDeviceGetMinorNumber(h))
        except n.NVMLError:
            minor = None
        gpus.append(
            GpuInfo(
                index=i,
                name=_text(n.nvmlDeviceGetName(h)),
                uuid=_text(n.nvmlDeviceGetUUID(h)),
                memory_total_mib=n.nvmlDeviceGetMemoryInfo(h).total / 2**20,
                minor_number=minor,
                pci_bus_id=_text(n.nvmlDeviceGetPciInfo(h).busId),
            )
        )
    return gpus


def driver_versions() -> tuple[str | None, str | None]:
    """(driver version, newest CUDA version the driver supports, e.g. "12.4"); Nones without."""
    n = nvml()
    if n is None:
        return None, None
    cuda = None
    try:
        v = int(n.nvmlSystemGetCudaDriverVersion_v2())
        cuda = f"{v // 1000}.{v % 1000 // 10}"
    except n.NVMLError:
        pass
    return _text(n.nvmlSystemGetDriverVersion()), cuda


def summary() -> dict[str, Any]:
    """Count, GPUs, driver and CUDA version, for manifests and `lab list`."""
    gpus = inventory()
    driver, cuda = driver_versions()
    return {
        "count": len(gpus),
        "gpus": [asdict(g) for g in gpus],
        "driver_version": driver,
        "cuda_version": cuda,
        "unavailable": unavailable_reason(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def runner_fingerprint(lab_commit: str | None = None) -> dict[str, str]:
    """What a night's numbers were measured on: GPU name, driver, NVML max SM / memory clocks
    (where the driver gives them), CPU model and count, kernel, lab commit. Keys absent where
    unknown, so a machine without GPUs still has a fingerprint."""
    fp: dict[str, str] = {
        "cpu_model": _cpu_model(),
        "cpu_count": str(os.cpu_count() or ""),
        "kernel": platform.release(),
    }
    if lab_commit:
        fp["lab_commit"] = lab_commit
    gpus = inventory()
    driver, _ = driver_versions()
    n = nvml()
    if gpus and n is not None:
        fp["gpu_name"] = gpus[0].name
        if driver:
            fp["driver"] = driver
        h = n.nvmlDeviceGetHandleByIndex(gpus[0].index)
        for key, clock in (
            ("sm_clock_max_mhz", "NVML_CLOCK_SM"),
            ("mem_clock_max_mhz", "NVML_CLOCK_MEM"),
        ):
            with contextlib.suppress(n.NVMLError):
                fp[key] = str(n.nvmlDeviceGetMaxClockInfo(h, getattr(n, clock)))
    return fp


def gpu_count() -> int:
    n = nvml()
    return int(n.nvmlDeviceGetCount()) if n is not None else 0


def minor_numbers(indices: Iterable[int]) -> dict[int, int]:
    """index -> N of /dev/nvidiaN; the index itself when NVML can't say (no driver here)."""
    n = nvml()
    out = {}
    for i in indices:
        try:
            out[i] = int(n.nvmlDeviceGetMinorNumber(n.nvmlDeviceGetHandleByIndex(i))) if n else i
        except Exception:  # NVMLError: an index this driver doesn't know, or no minor number
            out[i] = i
    return out


def _wanted(arg: str) -> list[int] | None:
    """`--gpus 0,1 | none` as indices (None for none); LabError for anything else."""
    if arg.strip().lower() == "none":
        return None
    try:
        wanted = [int(x) for x in arg.split(",") if x.strip()]
    except ValueError:
        wanted = []
    if not wanted or min(wanted) < 0:
        raise LabError(f"--gpus {arg!r}: expected a comma-separated list of indices, or none")
    if len(set(wanted)) != len(wanted):
        raise LabError(f"--gpus {arg}: a GPU is named twice")
    return wanted


def resolve_gpus(arg: str | None) -> list[GpuInfo]:
    """`--gpus 0,1 | none`: the GPUs named, checked against NVML; None: all NVML sees."""
    found = inventory()
    if arg is None:
        return found
    wanted = _wanted(arg)
    if wanted is None:
        return []
    if not found:  # a sandbox would fail on the missing device, after retries: say it now
        why = unavailable_reason() or "NVML lists no GPU"
        raise LabError(
            f"--gpus {arg}: this machine has no GPU the lab can use ({why}); "
            "use --gpus none for the CPU cases"
        )
    by_index = {g.index: g for g in found}
    missing = [i for i in wanted if i not in by_index]
    if missing:
        raise LabError(f"--gpus {arg}: no GPU {missing} here; NVML sees {sorted(by_index)}")
    return [by_index[i] for i in wanted]


PLANNED = "planned"  # the name of a GPU a dry run plans for and this machine lacks


def planned_gpus(arg: str | None) -> tuple[list[GpuInfo], str] | None:
    """`--dry-run --gpus ...` naming GPUs this machine lacks: the runner's GPUs to plan for, and
    the line that says so; None when the GPUs named are here (or none are named).

    `--gpus 0,1,2,3` is that runner's indices; a single number N that is not a GPU here is a
    runner with N GPUs (0..N-1), as in `--gpus 8` (`--gpus 0`: GPU 0, one GPU). Their memory
    is unknown here (infinite, as `lab render k8s` plans pods); CUDA_VISIBLE_DEVICES names them
    by index."""
    if arg is None:
        return None
    wanted = _wanted(arg)
    here = {g.index for g in inventory()}
    if wanted is None or set(wanted) <= here:
        return None
    if len(wanted) == 1 and "," not in arg and wanted[0] > 0:
        wanted = list(range(wanted[0]))
    gpus = [GpuInfo(index=i, name=PLANNED, uuid="", memory_total_mib=math.inf) for i in wanted]
    none_why = unavailable_reason() or "NVML lists no GPU"
    why = f"this machine has GPUs {sorted(here)}" if here else f"this machine has none: {none_why}"
    line = (
        f"# plan for a runner with {len(wanted)} GPU{'' if len(wanted) == 1 else 's'} "
        f"({','.join(map(str, wanted))}), not present here ({why}): each command line as that "
        "runner would run it; nothing is started"
    )
    return gpus, line


def free_gib(index: int) -> float | None:
    """NVML's free memory of a GPU in GiB: what the pool waits on before it starts a case beside
    (or after) another (lab/host/scheduler.py). None without NVML or for an unknown index."""
    n = nvml()
    if n is None:
        return None
    try:
        return float(n.nvmlDeviceGetMemoryInfo(n.nvmlDeviceGetHandleByIndex(index)).free) / 2**30
    except Exception:  # NVMLError: an index this driver doesn't know
        return None
