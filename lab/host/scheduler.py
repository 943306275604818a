"""Packing cases onto GPUs by VRAM and time (the one placement policy: `grant_order`).

Waiting requests are served longest estimated time first, and a smaller request that fits is
served before a bigger one that does not (backfill). A request with a share (`share_gib`, a
learned VRAM estimate: lab/host/estimates.py) may join other shared requests on one GPU while
their shares fit the GPU's shareable capacity; it takes the first GPU it fits, GPUs already
shared before idle ones (first fit by VRAM), so idle GPUs stay whole for what cannot share.
Every other request (measured comparisons, multi-GPU cases, cases without a trusted estimate)
takes whole idle GPUs. CPU-only requests (0 GPUs) share a bounded number of CPU slots.

The live pool (`ResourcePool`) and the makespan simulation (`simulate`) both call grant_order."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# After a holder leaves a GPU, a new one starts there only once NVML shows the memory it needs
# free (the old process may still be tearing down), or after this long (NVML stuck: go on).
RELEASE_SEEN_TIMEOUT_S = 60.0
RELEASE_POLL_S = 0.25


class Cancelled(Exception):
    """The run is stopping: no more resources are granted."""


@dataclass(order=True)
class Request:
    sort_key: tuple[float, int]
    num_gpus: int = field(compare=False)
    key: str = field(compare=False)
    granted: list[int] | None = field(default=None, compare=False)
    share_gib: float | None = field(default=None, compare=False)  # None: whole GPUs only


@dataclass
class GpuLoad:
    """Who holds one GPU: one whole holder, or shared holders with their shares (GiB)."""

    capacity_gib: float = 0.0  # what shares may add up to (the card less a safety margin)
    shares: dict[str, float] = field(default_factory=dict)
    whole: str | None = None

    @property
    def idle(self) -> bool:
        return self.whole is None and not self.shares

    def fits(self, gib: float) -> bool:
        """An idle GPU takes any one share; a shared one while the shares fit its capacity."""
        if self.whole is not None:
            return False
        return not self.shares or sum(self.shares.values()) + gib <= self.capacity_gib + 1e-9

    def copy(self) -> GpuLoad:
        return GpuLoad(self.capacity_gib, dict(self.shares), self.whole)


Ready = Callable[[int, float], bool]  # (gpu, GiB it needs free) -> may a holder start there now


def _loads(gpus: list[int] | dict[int, GpuLoad]) -> dict[int, GpuLoad]:
    if isinstance(gpus, dict):
        return {g: load.copy() for g, load in gpus.items()}
    return {g: GpuLoad() for g in gpus}  # a list: idle GPUs that never share


def grant_order(
    waiting: list[Request],
    gpus: list[int] | dict[int, GpuLoad],
    free_cpu_slots: int,
    ready: Ready | None = None,
) -> list[tuple[Request, list[int]]]:
    """Which waiting requests get what now, in priority order with backfill.

    `gpus`: free GPU indices (no sharing), or every GPU's load. `ready`: whether NVML shows the
    memory free on a GPU (the live pool's check that a departed holder's memory is released)."""
    grants: list[tuple[Request, list[int]]] = []
    loads = _loads(gpus)
    cpu = free_cpu_slots
    ok = ready or (lambda _g, _gib: True)
    for req in sorted(waiting):
        if req.num_gpus == 0:
            if cpu > 0:
                cpu -= 1
                grants.append((req, []))
            continue
        if req.share_gib is not None and req.num_gpus == 1:
            gib = req.share_gib
            order = sorted(loads, key=lambda g: (loads[g].idle, g))
            g = next((g for g in order if loads[g].fits(gib) and ok(g, gib)), None)
            if g is not None:
                loads[g].shares[req.key] = gib
                grants.append((req, [g]))
            continue
        idle = [g for g in sorted(loads) if loads[g].idle and ok(g, loads[g].capacity_gib)]
        if req.num_gpus <= len(idle):
            chosen = idle[: req.num_gpus]
            for g in chosen:
                loads[g].whole = req.key
            grants.append((req, chosen))
    return grants


class ResourcePool:
    """GPUs and CPU slots for attempts; `acquire` blocks until granted or cancelled.

    `capacity_gib`: each GPU's shareable capacity (none: GPUs are never shared). `free_gib`: NVML's
    free memory of a GPU (lab/host/gpus.py), None where NVML cannot say."""

    def __init__(
        self,
        gpus: list[int],
        cpu_slots: int,
        capacity_gib: dict[int, float] | None = None,
        free_gib: Callable[[int], float | None] | None = None,
    ) -> None:
        self.all_gpus = list(gpus)
        cap = capacity_gib or {}
        self._loads = {g: GpuLoad(cap.get(g, 0.0)) for g in gpus}
        self._cpu = cpu_slots
        self._waiting: list[Request] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._cancelled = False
        self._free_gib = free_gib
        self._released: dict[int, float] = {}  # GPU -> when a holder last left it
        self._neighbours: dict[str, set[str]] = {}

    @property
    def _free(self) -> list[int]:
        """The GPUs no one holds (for tests and the record)."""
        return [g for g, load in self._loads.items() if load.idle]

    def acquire(
        self, num_gpus: int, est_time_s: float, key: str, share_gib: float | None = None
    ) -> list[int]:
        if num_gpus > len(self.all_gpus):
            raise ValueError(f"{key}: needs {num_gpus} GPUs, the pool has {len(self.all_gpus)}")
        req = Request((-est_time_s, next(self._seq)), num_gpus, key, share_gib=share_gib)
        with self._cond:
            self._waiting.append(req)
            self._dispatch()
            while req.granted is None:
                if self._cancelled:
                    self._waiting.remove(req)
                    raise Cancelled(key)
                self._cond.wait(RELEASE_POLL_S if self._released else None)
                if req.granted is None and self._released:
                    self._dispatch()
            return req.granted

    def neighbours(self, key: str) -> list[str]:
        """The holders that shared a GPU with `key` at any time while it held it."""
        with self._cond:
            return sorted(self._neighbours.get(key, set()))

    def release(self, gpus: list[int], key: str | None = None) -> None:
        with self._cond:
            if not gpus:
                self._cpu += 1
            for g in gpus:
                load = self._loads[g]
                if key is not None and key in load.shares:
                    del load.shares[key]
                elif key is None or load.whole == key:  # key None: the whole holder
                    load.whole = None
                self._released[g] = time.monotonic()
            self._dispatch()

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()

    def _ready(self, g: int, gib: float) -> bool:
        """A departed holder's memory is seen released in NVML (or NVML can't say, or too long)."""
        since = self._released.get(g)
        if since is None:
            return True
        free = self._free_gib(g) if self._free_gib else None
        if free is None or time.monotonic() - since > RELEASE_SEEN_TIMEOUT_S:
            del self._released[g]  # nothing to see (no NVML), or NVML is stuck: go on
            return True
        return free >= gib

    def _dispatch(self) -> None:
        for req, gpus in grant_order(self._waiting, self._loads, self._cpu, self._ready):
            self._waiting.remove(req)
            req.granted = gpus
            if not gpus:
                self._cpu -= 1
            for g in gpus:
                load = self._loads[g]
                if req.share_gib is not None and req.num_gpus == 1:
                    for other in load.shares:
                        self._neighbours.setdefault(other, set()).add(req.key)
                        self._neighbours.setdefault(req.key, set()).add(other)
                    load.shares[req.key] = req.share_gib
                else:
                    load.whole = req.key
        self._cond.notify_all()


@dataclass
class SimJob:
    key: str
    num_gpus: int
    duration_s: float
    share_gib: float | None = None  # a learned VRAM estimate that may share a GPU


@dataclass
class Placement:
    """Where and when a job ran in the simulation (and the dry run's plan)."""

    key: str
    gpus: list[int]
    start_s: float
    end_s: float
    neighbours: list[str] = field(default_factory=list)


@dataclass
class Simulation:
    makespan_s: float
    placements: list[Placement]


def simulate(
    jobs: list[SimJob], num_gpus: int, cpu_slots: int = 1, capacity_gib: float = 0.0
) -> Simulation:
    """Event simulation of the pool's policy (est_time = true duration)."""
    seq = itertools.count()
    waiting = [
        Request((-j.duration_s, next(seq)), j.num_gpus, j.key, share_gib=j.share_gib) for j in jobs
    ]
    by_key = {j.key: j for j in jobs}
    loads = {g: GpuLoad(capacity_gib) for g in range(num_gpus)}
    cpu, now = cpu_slots, 0.0
    running: list[tuple[float, int, str, list[int]]] = []
    placed: dict[str, Placement] = {}
    while waiting or running:
        for req, gpus in grant_order(waiting, loads, cpu):
            waiting.remove(req)
            cpu -= 0 if gpus else 1
            p = Placement(req.key, gpus, now, now + by_key[req.key].duration_s)
            for g in gpus:
                if req.share_gib is not None and req.num_gpus == 1:
                    for other in loads[g].shares:
                        placed[other].neighbours.append(req.key)
                        p.neighbours.append(other)
                    loads[g].shares[req.key] = req.share_gib
                else:
                    loads[g].whole = req.key
            placed[req.key] = p
            heapq.heappush(running, (p.end_s, next(seq), req.key, gpus))
        if not running:
            raise ValueError("a job needs more GPUs than the machine has")
        now, _n, key, gpus = heapq.heappop(running)
        if not gpus:
            cpu += 1
        for g in gpus:
            loads[g].shares.pop(key, None)
            if loads[g].whole == key:
                loads[g].whole = None
    return Simulation(now, [placed[j.key] for j in jobs])


def simulate_makespan(
    jobs: list[SimJob], num_gpus: int, cpu_slots: int = 1, capacity_gib: float = 0.0
) -> float:
    """The suite's makespan under the pool's policy."""
    return simulate(jobs, num_gpus, cpu_slots, capacity_gib).makespan_s


def packing_lower_bound(jobs: list[SimJob], num_gpus: int, capacity_gib: float = 0.0) -> float:
    """No schedule beats max(longest job, total GPU-seconds / GPUs); with sharing, a job's
    GPU-seconds are its share of the capacity times its duration."""

    def gpu_seconds(j: SimJob) -> float:
        if j.share_gib is not None and j.num_gpus == 1 and capacity_gib > 0:
            return min(1.0, j.share_gib / capacity_gib) * j.duration_s
        return j.num_gpus * j.duration_s

    total = sum(gpu_seconds(j) for j in jobs)
    longest = max((j.duration_s for j in jobs), default=0.0)
    return max(longest, total / max(1, num_gpus))
