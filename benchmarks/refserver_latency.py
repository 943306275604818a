"""Latency of the reference server per image on this machine (ref://tiny, 256x256, 4 steps).

    .venv/bin/python benchmarks/refserver_latency.py [--runs 10] [--model-path ref://tiny]

Starts a real server (`--warmup-mode server`), discards one warmup request, then times N requests
(each a different prompt of the same length, as the nightly's methodology does), client wall
clock and the server's own perf dump. Prints the medians and writes them, with the samples, to
benchmarks/results/refserver_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lab.files import write_json_atomic
from lab.refserver.launch import launch

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default="ref://tiny")
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks/results/refserver_latency.json"
    )
    parser.add_argument("--server-log", type=Path, default=Path(os.devnull))
    args = parser.parse_args(argv)

    log = args.server_log.open("ab")
    server = launch(["--model-path", args.model_path, "--warmup-mode", "server"], log=log)
    try:
        startup_s = server.wait_healthy(300)
        card = json.loads(_get(server.url + "/v1/models"))["data"][0]
        client_s: list[float] = []
        server_ms: list[float] = []
        stages: dict[str, list[float]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.runs + 1):
                dump = Path(tmp) / f"perf{i}.json"
                body = {
                    "model": args.model_path,
                    "prompt": f"a lighthouse on a cliff, take {i:04d}",
                    "size": args.size,
                    "n": 1,
                    "num_inference_steps": args.steps,
                    "response_format": "b64_json",
                    "perf_dump_path": str(dump),
                }
                started = time.perf_counter()
                response = server.post("/v1/images/generations", body, timeout=600)
                elapsed = time.perf_counter() - started
                response.raise_for_status()
                if i == 0:
                    continue  # the warmup request is discarded
                perf = json.loads(dump.read_text())
                client_s.append(elapsed)
                server_ms.append(perf["total_duration_ms"])
                for stage in perf["steps"]:
                    stages.setdefault(stage["name"], []).append(stage["duration_ms"])
    finally:
        server.stop()
        log.close()

    result: dict[str, Any] = {
        "benchmark": "refserver_latency",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": args.model_path,
        "size": args.size,
        "num_inference_steps": args.steps,
        "runs": args.runs,
        "median_latency_s": round(statistics.median(client_s), 4),
        "median_server_total_ms": round(statistics.median(server_ms), 2),
        "median_stage_ms": {k: round(statistics.median(v), 2) for k, v in stages.items()},
        "latency_samples_s": [round(s, 4) for s in client_s],
        "startup_to_healthy_s": round(startup_s, 2),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": card["threads"],
            "device": card["device"],
            "python": platform.python_version(),
        },
    }
    write_json_atomic(args.out, result)
    median = result["median_latency_s"]
    print(
        f"{args.model_path} {args.size} {args.steps} steps: median {median:.3f} s per image"
        f" (server {result['median_server_total_ms']:.1f} ms) over {args.runs} runs;"
        f" startup to healthy {startup_s:.2f} s -> {args.out}"
    )
    return 0


def _get(url: str) -> str:
    import requests

    return requests.get(url, timeout=30).text


if __name__ == "__main__":
    sys.exit(main())
