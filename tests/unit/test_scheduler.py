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


# --- GPU sharing: shares packed by VRAM, whole GPUs for the rest ----------------------------------
def test_shares_pack_first_fit_and_whole_requests_take_idle_gpus() -> None:
    from lab.host.scheduler import GpuLoad

    waiting = [
        Request((-90, 0), 1, "big-share", share_gib=50),
        Request((-80, 1), 1, "mid-share", share_gib=20),
        Request((-70, 2), 1, "whole"),
        Request((-60, 3), 1, "small-share", share_gib=10),
    ]
    loads = {0: GpuLoad(78), 1: GpuLoad(78)}
    grants = {r.key: g for r, g in grant_order(waiting, loads, 0)}
    # big takes GPU 0; mid joins it (a shared GPU before an idle one); whole gets the idle GPU 1;
    # small no longer fits beside 50 + 20 on a 78 GiB capacity and waits
    assert grants == {"big-share": [0], "mid-share": [0], "whole": [1]}


def test_the_pool_never_holds_more_than_a_gpus_capacity_and_waits_for_nvml() -> None:
    free = {"gib": 0.0}  # NVML: what the departed holder's process still holds
    pool = ResourcePool([0], cpu_slots=1, capacity_gib={0: 30.0}, free_gib=lambda _g: free["gib"])
    assert pool.acquire(1, 10, "a", share_gib=20) == [0]
    assert pool.acquire(1, 10, "b", share_gib=10) == [0]  # 30 of 30
    got: list[str] = []
    t = threading.Thread(target=lambda: got.append(str(pool.acquire(1, 5, "c", share_gib=10))))
    t.start()
    time.sleep(0.1)
    assert not got  # 40 > 30: waits
    pool.release([0], "a")
    time.sleep(0.6)
    assert not got  # fits by the book, but NVML does not yet show the memory free
    free["gib"] = 60.0
    t.join(2)
    assert got == ["[0]"] and pool.neighbours("c") == ["b"]
    assert sorted(pool.neighbours("b")) == ["a", "c"]


def test_simulated_sharing_over_recorded_estimates_is_at_least_twice_as_fast() -> None:
    """The gpu-colocate suite's shape: 6 x 5, 4 x 20, 2 x 40 GiB servers of ~25 s on one card,
    with the estimates their NVML peaks would give (0.88 of the device + a 0.5 GiB context)."""
    from lab.host.estimates import VRAM_MARGIN, shareable_capacity_gib
    from lab.host.scheduler import simulate

    sizes = [5] * 6 + [20] * 4 + [40] * 2
    jobs = [
        SimJob(f"c{i}", 1, 25.0 + i % 3, (0.88 * g + 0.5) * VRAM_MARGIN)
        for i, g in enumerate(sizes)
    ]
    capacity = shareable_capacity_gib(79.6)
    sim = simulate(jobs, 1, capacity_gib=capacity)
    alone = simulate([SimJob(j.key, 1, j.duration_s) for j in jobs], 1).makespan_s
    assert alone / sim.makespan_s >= 2.0
    for p in sim.placements:  # at no start does the sum of shares exceed the capacity
        live = [q for q in sim.placements if q.start_s <= p.start_s < q.end_s]
        assert sum(next(j.share_gib or 0 for j in jobs if j.key == q.key) for q in live) <= capacity
    assert packing_lower_bound(jobs, 1, capacity) <= sim.makespan_s
