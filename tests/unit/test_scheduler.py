"""Packing: longest first, never share a GPU, backfill small cases, CPU cases bounded."""

import threading
import time

import pytest

from lab.host.scheduler import (
    Cancelled,
    Request,
    ResourcePool,
    SimJob,
    grant_order,
    packing_lower_bound,
    simulate_makespan,
)


def test_grant_order_serves_longest_first_and_backfills() -> None:
    waiting = [
        Request((-100, 0), 4, "big"),
        Request((-300, 1), 2, "long2"),
        Request((-50, 2), 1, "small"),
    ]
    grants = grant_order(waiting, [0, 1, 2], free_cpu_slots=0)
    assert [(r.key, g) for r, g in grants] == [("long2", [0, 1]), ("small", [2])]


def test_pool_never_shares_a_gpu_between_concurrent_holders() -> None:
    pool = ResourcePool([0, 1, 2, 3], cpu_slots=1)
    held: list[list[int]] = []
    overlap = []
    lock = threading.Lock()

    def worker(n: int, i: int) -> None:
        g = pool.acquire(n, est_time_s=i, key=f"w{i}")
        with lock:
            for other in held:
                if set(other) & set(g):
                    overlap.append((other, g))
            held.append(g)
        time.sleep(0.02)
        with lock:
            held.remove(g)
        pool.release(g)

    threads = [threading.Thread(target=worker, args=(1 + i % 3, i)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not overlap and sorted(pool._free) == [0, 1, 2, 3]


def test_cancel_wakes_waiters() -> None:
    pool = ResourcePool([0], cpu_slots=1)
    pool.acquire(1, 1, "holder")
    errors = []

    def waiter() -> None:
        try:
            pool.acquire(1, 1, "waiter")
        except Cancelled:
            errors.append("cancelled")

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.05)
    pool.cancel()
    t.join(2)
    assert errors == ["cancelled"]


def test_too_many_gpus_is_refused() -> None:
    with pytest.raises(ValueError, match="needs 3 GPUs"):
        ResourcePool([0, 1], 1).acquire(3, 1, "x")


def test_simulated_packing_beats_sequential_and_respects_bound() -> None:
    jobs = [SimJob("a", 2, 10), SimJob("b", 2, 10), SimJob("c", 1, 5), SimJob("d", 1, 5)]
    makespan = simulate_makespan(jobs, 4)
    assert makespan == 15  # a and b side by side on all four GPUs, then c and d together
    assert packing_lower_bound(jobs, 4) <= makespan < sum(j.duration_s for j in jobs)
