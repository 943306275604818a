"""Regression power on real nights: the lab's noise test, the fixed-5 % rule and the change-point
view, on A/A nights and nights with real injected slowdowns (phase `h100-power` on the GPU).

    python3 benchmarks/regression_power_gpu.py [--aa 30] [--per-level 6] [--cases 10] \\
        [--concurrency 8] [--repeats 5] [--out FILE]

A night: one fresh reference server (`ref://tiny`, `--warmup-mode server`), then each of the
`--cases` short cases (different image sizes and step counts) one discarded warmup and
`--repeats` measured requests (client wall clock), then the server is stopped. Slowdown nights
start it with `--step-slowdown PCT` (3, 5, 10 %: a real sleep after each denoising step). Nights
run in a shuffled order, `--concurrency` servers at once on the one GPU (or CPU): the
neighbours are part of the noise, as a shared runner's are.

Judged with benchmarks/regression_power.py's own evaluation (`verdicts`, `rates`: the noise test
of lab/results/stats.py and the fixed 5 % rule against `--window` A/A nights). The change-point
view (lab/results/changes.py, what the nightly verdict uses): per case, the A/A nights in order
are one series (false alarm: each night a change is found at); a detection is a series of the
`--window` A/A nights before a slow night followed by that night and the next slow night of the
same level and case (a change needs two nights), found at the first slow night.
Writes benchmarks/results/regression_power_gpu.json (or --out)."""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from regression_power import rates, verdicts

from lab.files import write_json_atomic
from lab.refserver.launch import launch
from lab.results import changes

REPO = Path(__file__).resolve().parents[1]
SHAPES = [
    {"size": f"{s}x{s}", "num_inference_steps": k}
    for s, k in ((64, 8), (64, 16), (96, 8), (96, 12), (128, 4), (128, 8), (64, 4), (96, 4),
                 (128, 12), (64, 12), (192, 8), (256, 8))
]  # fmt: skip


def one_night(order: int, slow_pct: float, cases: int, repeats: int) -> dict[str, list[float]]:
    args = ["--model-path", "ref://tiny", "--warmup-mode", "server"]
    if slow_pct:
        args += ["--step-slowdown", str(slow_pct)]
    server = launch(args, log=open(os.devnull, "wb"))  # noqa: SIM115 (closed with the process)
    try:
        server.wait_healthy(300)
        out: dict[str, list[float]] = {}
        for c, shape in enumerate(SHAPES[:cases]):
            samples = []
            for i in range(repeats + 1):
                body = {"prompt": f"night {order} case {c} take {i}", "n": 1, **shape}
                t0 = time.perf_counter()
                server.post("/v1/images/generations", body, timeout=600).raise_for_status()
                if i:
                    samples.append(time.perf_counter() - t0)
            out[f"case{c:02d}_{shape['size']}_{shape['num_inference_steps']}st"] = samples
        return out
    finally:
        server.stop()


def change_point_rates(
    flat: list[dict[str, Any]], judged: list[dict[str, Any]], levels: list[float], window: int
) -> dict[str, Any]:
    """The change-point view's false alarms (A/A series) and detections (two slow nights)."""
    med = statistics.median
    alarms = aa_nights = 0
    found: dict[str, list[bool]] = {f"{lv:g}": [] for lv in levels}
    quiet: dict[str, list[bool]] = {f"{lv:g}": [] for lv in levels}
    mde = {(r["case"], r["order"]): r["mde_pct"] for r in judged}
    for case in sorted({n["case"] for n in flat}):
        mine = sorted((n for n in flat if n["case"] == case), key=lambda n: n["order"])
        aa = [n for n in mine if n["slow_pct"] == 0]
        aa_nights += len(aa)
        alarms += len(changes.change_points([med(n["samples"]) for n in aa]))
        for lv in levels:
            slow = [n for n in mine if n["slow_pct"] == lv]
            for a, b in zip(slow[::2], slow[1::2], strict=False):
                before = [n for n in aa if n["order"] < a["order"]][-window:]
                if len(before) < 3:
                    before = aa[:window]
                values = [med(n["samples"]) for n in (*before, a, b)]
                hit = [i for i, _, e in changes.change_points(values) if e > 0] == [len(before)]
                found[f"{lv:g}"].append(hit)
                m = mde.get((case, a["order"]))
                if m is not None and m <= 3.0:
                    quiet[f"{lv:g}"].append(hit)

    def rate(xs: list[bool]) -> float | None:
        return round(sum(xs) / len(xs), 4) if xs else None

    return {
        "false_alarm_rate": round(alarms / aa_nights, 4) if aa_nights else None,
        "detection_rate": {k: rate(v) for k, v in found.items()},
        "detection_rate_mde_le_3": {k: rate(v) for k, v in quiet.items()},
        "series_tested": {k: len(v) for k, v in found.items()},
    }


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except ImportError:
        pass
    return f"cpu ({os.cpu_count()} cores)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--aa", type=int, default=30, help="A/A nights")
    ap.add_argument("--per-level", type=int, default=6, help="nights per slowdown level (even)")
    ap.add_argument("--levels", default="3,5,10")
    ap.add_argument("--cases", type=int, default=10, choices=range(1, len(SHAPES) + 1))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=8, help="servers running at once")
    ap.add_argument("--seed", type=int, default=29)
    ap.add_argument("--budget-s", type=float, default=480, help="start no night after this")
    ap.add_argument(
        "--out", type=Path, default=REPO / "benchmarks/results/regression_power_gpu.json"
    )
    args = ap.parse_args(argv)
    levels = [float(x) for x in args.levels.split(",")]
    plan = [0.0] * args.aa + [lv for lv in levels for _ in range(args.per_level)]
    random.Random(args.seed).shuffle(plan)
    t0 = time.monotonic()
    nights: list[dict[str, Any]] = []
    lock = threading.Lock()

    def night(order: int) -> None:
        if time.monotonic() - t0 > args.budget_s:
            return
        for tries in range(2):
            try:
                samples = one_night(order, plan[order], args.cases, args.repeats)
                break
            except (OSError, RuntimeError, requests.RequestException) as e:
                print(f"night {order}: {e!r}", flush=True)
                if tries:
                    return
        with lock:
            nights.append({"order": order, "slow_pct": plan[order], "samples": samples})
            print(f"night {len(nights)}/{len(plan)} ({time.monotonic() - t0:.0f} s)", flush=True)

    with ThreadPoolExecutor(args.concurrency) as pool:
        list(pool.map(night, range(len(plan))))
    flat = [
        {"case": c, "slow_pct": n["slow_pct"], "samples": v, "order": n["order"]}
        for n in nights
        for c, v in n["samples"].items()
    ]
    judged = verdicts(flat, args.window)
    for r, f in zip(judged, sorted(flat, key=lambda n: (n["case"], n["order"])), strict=True):
        r["order"] = f["order"]  # verdicts keeps each case's nights in order
    test = rates(judged, levels)
    test["fixed_5pct"]["detection_rate_mde_le_3"] = {
        f"{lv:g}": (
            round(sum(r["fixed_verdict"] == "regressed" for r in q) / len(q), 4) if q else None
        )
        for lv in levels
        for q in [[r for r in judged if r["slow_pct"] == lv and (r["mde_pct"] or 99) <= 3.0]]
    }
    result = {
        "benchmark": "regression_power_gpu",
        "device": device_name(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "night": "one fresh reference server (ref://tiny) serving every case in turn",
        "concurrency": f"{args.concurrency} nights' servers at once on the one device (noise)",
        "nights_planned": len(plan),
        "nights_measured": len(nights),
        "cases": args.cases,
        "repeats": args.repeats,
        "window": args.window,
        "wall_s": round(time.monotonic() - t0, 1),
        **{k: v for k, v in test.items() if k != "fixed_5pct"},
        "fixed_5pct": test["fixed_5pct"],
        "change_point": change_point_rates(flat, judged, levels, args.window),
        # what a case's latency is, to read the MDEs by: the median of its A/A nights' medians
        "median_latency_s": {
            case: round(statistics.median(statistics.median(f["samples"]) for f in aa), 4)
            for case in sorted({f["case"] for f in flat})
            for aa in [[f for f in flat if f["case"] == case and not f["slow_pct"]]]
            if aa
        },
    }
    write_json_atomic(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "mde_pct_median"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
