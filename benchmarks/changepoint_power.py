"""Which change-point library for the lab's series: power on the lab's own night-to-night noise.

    .venv/bin/python benchmarks/changepoint_power.py [--series 200] \\
        [--spa-path DIR] [--otava-path DIR]

Series of 12 nights are drawn with the night-to-night CV of the medians measured on real
reference-server nights (benchmarks/results/regression_power_nights.json): flat (any change is
a false alarm), one slow night (+30 % at night 7: a change is a false alarm), and a step of
5 / 10 / 30 % from night 7 (detected: a change named at night 7 exactly). Compared: the lab's
method (lab/results/changes.py: ruptures Binseg + t-test confirmation), MongoDB's E-divisive
(signal-processing-algorithms, pvalue 0.05, 100 permutations) and Apache Otava's
compute_change_points (max_pvalue 0.001). The last two pin numpy<2 / python<3.12 (spa) or
pull BigQuery, gRPC and Slack clients (otava), so they run in a subprocess from a folder
installed with `pip install --target DIR` (absent: reported as not run).
Writes benchmarks/results/changepoint_power.json."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STEP_AT = 6  # index of night 7
KINDS = {"flat": 0.0, "blip_30": 30.0, "step_5": 5.0, "step_10": 10.0, "step_30": 30.0}


def night_cv() -> float:
    """The median over cases of the CV of one night's median across A/A nights."""
    nights = json.loads((REPO / "benchmarks/results/regression_power_nights.json").read_text())
    per_case: dict[str, list[float]] = {}
    for n in nights:
        if n["slow_pct"] == 0:
            for case, samples in n["samples"].items():
                per_case.setdefault(case, []).append(statistics.median(samples))
    return statistics.median(statistics.stdev(v) / statistics.mean(v) for v in per_case.values())


def make_series(n_series: int, cv: float, seed: int) -> dict[str, list[list[float]]]:
    rng = np.random.default_rng(seed)
    out = {}
    for kind, pct in KINDS.items():
        rows = []
        for _ in range(n_series):
            s = np.exp(rng.normal(0.0, cv, 12))
            if kind.startswith("step"):
                s[STEP_AT:] *= 1 + pct / 100
            elif kind.startswith("blip"):
                s[STEP_AT] *= 1 + pct / 100
            rows.append([float(v) for v in s])
        out[kind] = rows
    return out


def detect(method: str, series: list[list[float]]) -> list[list[int]]:
    if method == "lab":
        from lab.results.changes import change_points

        return [[i for i, _, _ in change_points(s)] for s in series]
    if method == "e_divisive":
        from signal_processing_algorithms.energy_statistics.energy_statistics import e_divisive

        return [
            sorted(int(i) for i in e_divisive(s, pvalue=0.05, permutations=100)) for s in series
        ]
    from otava.analysis import compute_change_points

    return [
        sorted(int(c.index) for c in compute_change_points(s, max_pvalue=0.001)[0]) for s in series
    ]


def run_method(method: str, sets: dict[str, list[list[float]]], path: str | None) -> dict[str, Any]:
    if method != "lab":
        if not path:
            return {"run": False, "why": f"no --{method.replace('_', '-')}-path given"}
        env = dict(os.environ, PYTHONPATH=f"{path}:{REPO}")
        done = subprocess.run(
            [sys.executable, __file__, "--worker", method], input=json.dumps(sets), env=env,
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        if done.returncode:
            return {"run": False, "why": done.stderr.strip().splitlines()[-1:]}
        found, secs = json.loads(done.stdout)
    else:
        found, secs = worker(method, sets)
    out: dict[str, Any] = {
        "run": True,
        "ms_per_series": round(1000 * secs / sum(map(len, sets.values())), 2),
    }
    for kind, rows in found.items():
        if kind.startswith("step"):
            out[f"detected_{kind}"] = round(sum(r == [STEP_AT] for r in rows) / len(rows), 3)
        else:
            out[f"false_alarm_{kind}"] = round(sum(bool(r) for r in rows) / len(rows), 3)
    return out


def worker(
    method: str, sets: dict[str, list[list[float]]]
) -> tuple[dict[str, list[list[int]]], float]:
    t0 = time.perf_counter()
    found = {kind: detect(method, rows) for kind, rows in sets.items()}
    return found, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=200, help="series of each kind")
    ap.add_argument("--seed", type=int, default=29)
    ap.add_argument("--spa-path", help="a pip --target folder with signal-processing-algorithms")
    ap.add_argument("--otava-path", help="a pip --target folder with apache-otava")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/changepoint_power.json")
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, json.loads(sys.stdin.read()))))
        return 0
    measured = night_cv()
    # GPU-like quiet nights (1 %, 3 %) and the CPU reference-server nights as measured here
    levels = {
        "cv_1pct": 0.01,
        "cv_3pct": 0.03,
        f"cv_measured_cpu_{100 * measured:.0f}pct": measured,
    }
    result: dict[str, Any] = {
        "benchmark": "changepoint_power",
        "nights": 12,
        "step_at_night": STEP_AT + 1,
        "series_per_kind": args.series,
        "measured_cpu_night_cv_pct": round(100 * measured, 2),
    }
    for name, cv in levels.items():
        sets = make_series(args.series, cv, args.seed)
        result[name] = {
            "lab (ruptures Binseg + t-test)": run_method("lab", sets, None),
            "e_divisive (signal-processing-algorithms 2.1.6)": run_method(
                "e_divisive", sets, args.spa_path
            ),
            "otava 0.8.0": run_method("otava", sets, args.otava_path),
        }
    from lab.files import write_json_atomic

    write_json_atomic(args.out, result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
