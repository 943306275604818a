"""False alarms and detection power of the lab's regression verdicts, against the fixed-5 % rule.

    .venv/bin/python benchmarks/regression_power.py [--aa 40] [--per-level 12] [--levels 3,5,10]

A "night" here is one real server measurement run: a fresh reference server process
(`--warmup-mode server`), then for each short case one discarded warmup request and `--repeats`
measured requests (client wall clock), then the server is stopped. A/A nights run the same
build; slowdown nights start the server with `--step-slowdown PCT` (each denoising step is
followed by a real sleep of PCT % of its own measured time). The nights run interleaved in a
shuffled order, so drift of the shared machine hits both kinds alike.

Each night's median is judged by the lab's detector (lab/results/stats.py `judge`, what
`regression.detect` runs) against a history of `--window` A/A nights (for an A/A night: the ones
before it, cyclically, itself excluded), and by today's fixed rule (more than 5 % from the median
of the last 5). False alarm: an A/A night flagged regressed or improved. Detection: a slowdown
night flagged regressed. The injected percent is of the denoising steps; the measured end-to-end
change is reported beside it.

Then the samples recorded on the GPU (benchmarks/gpu/results/**/results.json) are replayed:
per case and GPU, nights are drawn by resampling the recorded samples (as many as a night has),
A/A and with every sample slowed by 3/5/10 %, through the same detector.
Writes benchmarks/results/regression_power.json."""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import requests

from lab.files import write_json_atomic
from lab.refserver.launch import launch
from lab.results import stats
from lab.results.regression import fixed_rule

REPO = Path(__file__).resolve().parents[1]
# Short cases: denoising dominates, so a step slowdown shows end to end.
CASES = {
    "tiny_64_16steps": {"size": "64x64", "num_inference_steps": 16},
    "tiny_128_8steps": {"size": "128x128", "num_inference_steps": 8},
}


def one_night(slow_pct: float, repeats: int, night: int) -> dict[str, list[float]]:
    args = ["--model-path", "ref://tiny", "--warmup-mode", "server"]
    if slow_pct:
        args += ["--step-slowdown", str(slow_pct)]
    server = launch(args, log=open(os.devnull, "wb"))  # noqa: SIM115 (closed with the process)
    try:
        server.wait_healthy(300)
        out: dict[str, list[float]] = {}
        for name, shape in CASES.items():
            samples = []
            for i in range(repeats + 1):
                body = {"prompt": f"night {night} take {i:04d}", "n": 1, **shape}
                started = time.perf_counter()
                server.post("/v1/images/generations", body, timeout=600).raise_for_status()
                if i:  # the first is the discarded warmup
                    samples.append(time.perf_counter() - started)
            out[name] = samples
        return out
    finally:
        server.stop()


def verdicts(
    nights: list[dict[str, Any]], window: int, fixed_window: int = 5
) -> list[dict[str, Any]]:
    """Judge every case-night (`case`, `slow_pct`, `samples`, `order`) against A/A history by
    both rules."""
    out = []
    for case in sorted({n["case"] for n in nights}):
        mine = sorted((n for n in nights if n["case"] == case), key=lambda n: n["order"])
        aa = [n for n in mine if n["slow_pct"] == 0]
        for night in mine:
            samples = night["samples"]
            value = statistics.median(samples)
            pool = [n for n in aa if n is not night]
            # the A/A nights before this one in time, cyclically: the history a nightly would have
            start = next((i for i, n in enumerate(pool) if n["order"] > night["order"]), 0)
            ring = pool[start:] + pool[:start]
            hist = [statistics.median(n["samples"]) for n in ring[-window:]]
            j = stats.judge(value, hist, samples=samples)
            f = fixed_rule(value, hist[-fixed_window:], 5.0)
            out.append(
                {
                    "case": case,
                    "slow_pct": night["slow_pct"],
                    "verdict": j.verdict,
                    "fixed_verdict": f.verdict,
                    "delta_pct": j.delta_pct,
                    "mde_pct": j.mde_pct,
                    "cv_pct": stats.cv_pct(samples),
                }
            )
    return out


def rates(judged: list[dict[str, Any]], levels: list[float]) -> dict[str, Any]:
    def flagged(rows: list[dict[str, Any]], key: str, which: tuple[str, ...]) -> float | None:
        return round(sum(r[key] in which for r in rows) / len(rows), 4) if rows else None

    aa = [r for r in judged if r["slow_pct"] == 0]
    alarm = ("regressed", "improved")
    out: dict[str, Any] = {
        "case_nights_aa": len(aa),
        "false_alarm_rate": flagged(aa, "verdict", alarm),
        "inconclusive_rate_aa": flagged(aa, "verdict", ("inconclusive",)),
        "detection_rate": {},
        "detection_rate_mde_le_3": {},
        "effect_pct": {},
        "fixed_5pct": {
            "false_alarm_rate": flagged(aa, "fixed_verdict", alarm),
            "detection_rate": {},
        },
        "mde_pct_median": {},
    }
    for case in sorted({r["case"] for r in judged}):
        mdes = [r["mde_pct"] for r in aa if r["case"] == case and r["mde_pct"] is not None]
        out["mde_pct_median"][case] = round(statistics.median(mdes), 2) if mdes else None
    for level in levels:
        rows = [r for r in judged if r["slow_pct"] == level]
        key = f"{level:g}"
        out["detection_rate"][key] = flagged(rows, "verdict", ("regressed",))
        quiet = [r for r in rows if r["mde_pct"] is not None and r["mde_pct"] <= 3.0]
        out["detection_rate_mde_le_3"][key] = flagged(quiet, "verdict", ("regressed",))
        out["fixed_5pct"]["detection_rate"][key] = flagged(rows, "fixed_verdict", ("regressed",))
        deltas = [r["delta_pct"] for r in rows]
        out["effect_pct"][key] = round(statistics.median(deltas), 2) if deltas else None
    return out


def gpu_replay(levels: list[float], nights: int, window: int, seed: int) -> dict[str, Any]:
    """Resampled nights from the samples the GPU runs recorded, per (GPU run folder, case)."""
    rng = np.random.default_rng(seed)
    pooled: dict[str, list[float]] = defaultdict(list)
    for path in sorted((REPO / "benchmarks/gpu/results").rglob("results.json")):
        data = json.loads(path.read_text())
        gpu = data.get("gpu_model") or "gpu"
        for row in data.get("results", []):
            if row.get("latency_samples_s") and row.get("outcome") in ("passed", "degraded"):
                key = f"{gpu}/{row['case_id']}/{row['framework']}/{row.get('degraded_rung')}"
                pooled[key] += row["latency_samples_s"]
    judged: list[dict[str, Any]] = []
    per_case: dict[str, Any] = {}
    for key, pool in pooled.items():
        n = 5 if len(pool) >= 5 else len(pool)
        plan = [0.0] * nights + [lv for lv in levels for _ in range(nights // 2)]
        made = [
            {
                "case": key,
                "slow_pct": level,
                "samples": list(rng.choice(pool, n) * (1 + level / 100)),
                "order": order,
            }
            for order, level in enumerate(plan)
        ]
        rows = verdicts(made, window)
        judged += rows
        per_case[key] = {"pooled_samples": len(pool), **rates(rows, levels)}
    return {"per_case": per_case, **rates(judged, levels)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--aa", type=int, default=40, help="A/A nights")
    ap.add_argument("--per-level", type=int, default=12, help="nights per slowdown level")
    ap.add_argument("--levels", default="3,5,10")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--resume", action="store_true", help="continue the nights already written")
    ap.add_argument("--nights-file", type=Path, help="reuse measured nights (JSON) instead")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/regression_power.json")
    args = ap.parse_args(argv)
    levels = [float(x) for x in args.levels.split(",")]

    if args.nights_file:
        nights = json.loads(args.nights_file.read_text())
    else:
        plan = [0.0] * args.aa + [lv for lv in levels for _ in range(args.per_level)]
        random.Random(args.seed).shuffle(plan)
        raw = args.out.with_name("regression_power_nights.json")
        # the plan is fixed by the seed: --resume goes on after the nights already measured
        nights = json.loads(raw.read_text()) if args.resume and raw.exists() else []
        t0 = time.monotonic()
        for order, slow in enumerate(plan):
            if order < len(nights):
                continue
            for tries in range(3):  # a night the loaded machine timed out is measured again
                try:
                    samples = one_night(slow, args.repeats, order)
                    break
                except (OSError, RuntimeError, requests.RequestException) as e:
                    print(f"night {order + 1}: {e!r}; again", flush=True)
                    if tries == 2:
                        raise
            nights.append({"order": order, "slow_pct": slow, "samples": samples})
            write_json_atomic(raw, nights)  # kept as it goes: a long run can be resumed/replayed
            print(
                f"night {order + 1}/{len(plan)} slow {slow:g} %: "
                + ", ".join(f"{k} {statistics.median(v):.3f} s" for k, v in samples.items())
                + f" ({time.monotonic() - t0:.0f} s)",
                flush=True,
            )
    flat = [
        {"case": case, "slow_pct": n["slow_pct"], "samples": v, "order": n["order"]}
        for n in nights
        for case, v in n["samples"].items()
    ]
    cpu = rates(verdicts(flat, args.window), levels)
    gpu = gpu_replay(levels, args.aa, args.window, args.seed)
    result = {
        "benchmark": "regression_power",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "night": "one fresh reference-server process: warmup + repeats per case (not lab nightly)",
        "cases": CASES,
        "repeats": args.repeats,
        "window": args.window,
        "detector": {"alpha": stats.ALPHA, "min_effect_pct": stats.MIN_EFFECT_PCT},
        **cpu,
        "gpu_replay": gpu,
    }
    write_json_atomic(args.out, result)
    for name, r in (("cpu", cpu), ("gpu replay", gpu)):
        print(
            f"{name}: false alarms {r['false_alarm_rate']} (fixed 5 %: "
            f"{r['fixed_5pct']['false_alarm_rate']}) over {r['case_nights_aa']} A/A case-nights; "
            f"detection {r['detection_rate']} (fixed 5 %: {r['fixed_5pct']['detection_rate']}); "
            f"MDE<=3 % cases: {r['detection_rate_mde_le_3']}; MDE {r['mde_pct_median']}"
        )
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
