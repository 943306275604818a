"""Packing cases onto GPUs. A GPU is never shared; waiting requests are served longest
estimated time first, and a smaller request that fits is served before a bigger one that does
not (backfill). CPU-only requests (0 GPUs) share a bounded number of CPU slots.

The same policy (`grant_order`) drives the live pool and the makespan simulation."""

from __future__ import annotations

import heapq
import itertools
import threading
from dataclasses import dataclass, field


class Cancelled(Exception):
    """The run is stopping: no more resources are granted."""


@dataclass(order=True)
class Request:
    sort_key: tuple[float, int]
    num_gpus: int = field(compare=False)
    key: str = field(compare=False)
    granted: list[int] | None = field(default=None, compare=False)


def grant_order(
    waiting: list[Request], free_gpus: list[int], free_cpu_slots: int
) -> list[tuple[Request, list[int]]]:
    """Which waiting requests get what now, in priority order with backfill."""
    grants: list[tuple[Request, list[int]]] = []
    free = sorted(free_gpus)
    cpu = free_cpu_slots
    for req in sorted(waiting):
        if req.num_gpus == 0:
            if cpu > 0:
                cpu -= 1
                grants.append((req, []))
        elif req.num_gpus <= len(free):
            grants.append((req, free[: req.num_gpus]))
            free = free[req.num_gpus :]
    return grants


class ResourcePool:
    """GPUs and CPU slots for attempts; `acquire` blocks until granted or cancelled."""

    def __init__(self, gpus: list[int], cpu_slots: int) -> None:
        self.all_gpus = list(gpus)
        self._free = list(gpus)
        self._cpu = cpu_slots
        self._waiting: list[Request] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._cancelled = False

    def acquire(self, num_gpus: int, est_time_s: float, key: str) -> list[int]:
        if num_gpus > len(self.all_gpus):
            raise ValueError(f"{key}: needs {num_gpus} GPUs, the pool has {len(self.all_gpus)}")
        req = Request((-est_time_s, next(self._seq)), num_gpus, key)
        with self._cond:
            self._waiting.append(req)
            self._dispatch()
            while req.granted is None:
                if self._cancelled:
                    self._waiting.remove(req)
                    raise Cancelled(key)
                self._cond.wait()
            return req.granted

    def release(self, gpus: list[int]) -> None:
        with self._cond:
            if gpus:
                self._free.extend(gpus)
            else:
                self._cpu += 1
            self._dispatch()

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()

    def _dispatch(self) -> None:
        for req, gpus in grant_order(self._waiting, self._free, self._cpu):
            self._waiting.remove(req)
            req.granted = gpus
            if gpus:
                self._free = [g for g in self._free if g not in gpus]
            else:
                self._cpu -= 1
        self._cond.notify_all()


@dataclass
class SimJob:
    key: str
    num_gpus: int
    duration_s: float


def simulate_makespan(jobs: list[SimJob], num_gpus: int, cpu_slots: int = 1) -> float:
    """Event simulation of the pool's policy (est_time = true duration): the suite's makespan."""
    seq = itertools.count()
    waiting = [Request((-j.duration_s, next(seq)), j.num_gpus, j.key) for j in jobs]
    by_key = {j.key: j for j in jobs}
    free, cpu, now = list(range(num_gpus)), cpu_slots, 0.0
    running: list[tuple[float, str, list[int]]] = []
    while waiting or running:
        for req, gpus in grant_order(waiting, free, cpu):
            waiting.remove(req)
            free = [g for g in free if g not in gpus]
            cpu -= 0 if gpus else 1
            heapq.heappush(running, (now + by_key[req.key].duration_s, req.key, gpus))
        if not running:
            raise ValueError("a job needs more GPUs than the machine has")
        now, _key, gpus = heapq.heappop(running)
        if gpus:
            free.extend(gpus)
        else:
            cpu += 1
    return now


def packing_lower_bound(jobs: list[SimJob], num_gpus: int) -> float:
    """No schedule beats max(longest job, total GPU-seconds / GPUs)."""
    gpu_seconds = sum(j.num_gpus * j.duration_s for j in jobs)
    return max(max((j.duration_s for j in jobs), default=0.0), gpu_seconds / max(1, num_gpus))
