"""The memory table of README.md: `python -m lab.refserver.measure [--presets tiny small]`.

For each preset, memory mode and request (an image at the preset's size, a denoise-heavy video)
it starts a real server, sends the request with a perf dump, and records per rank: the accounted
device peak (the --device-memory-gib ledger), the peak RSS (VmHWM) and, on a GPU, torch's
max_memory_allocated. Rows go to stdout as a Markdown table and to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lab.files import write_json_atomic
from lab.refserver.launch import launch, peak_rss_mib

MODES: dict[str, list[str]] = {
    "resident": [],
    "text-encoder offload": ["--text-encoder-cpu-offload"],
    "dit offload": ["--dit-cpu-offload"],
    "dit layerwise": ["--dit-layerwise-offload"],
    "vae offload": ["--vae-cpu-offload"],
    "cfg-parallel 2": ["--cfg-parallel-size", "2"],
}
VIDEOS = {  # (size, frames): many frames make the denoise stage the peak
    "tiny": ("128x128", 64),
    "small": ("128x128", 64),
    "medium": ("512x512", 17),
    "large": ("1024x1024", 9),
    "xl": ("1024x1024", 9),
}


def requests_for(preset: str) -> dict[str, tuple[str, dict[str, Any]]]:
    from lab.refserver.presets import PRESETS

    size, frames = VIDEOS[preset]
    image = {"prompt": "a red fox in the snow", "size": PRESETS[preset].default_size_text}
    video = {"prompt": "a red fox runs", "size": size, "num_frames": frames}
    return {
        f"image {image['size']}": ("/v1/images/generations", image),
        f"video {size}x{frames}": ("/v1/videos", video),
    }


def _finish(server: Any, path: str, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    response = server.post(path, body)
    response.raise_for_status()
    if path == "/v1/videos":
        video_id = response.json()["id"]
        while True:
            status = server.get_json(f"/v1/videos/{video_id}")
            if status["status"] == "failed":
                raise RuntimeError(f"video failed: {status.get('error')}")
            if status["status"] == "completed":
                break
            time.sleep(0.1)
    return time.perf_counter() - started


class _Server:
    def __init__(self, args: list[str], log: Any) -> None:
        self.launched = launch(args, log=log)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.launched.post(path, body)

    def get_json(self, path: str) -> Any:
        import requests

        return requests.get(self.launched.url + path, timeout=60).json()


def measure_mode(
    preset: str, mode: str, requests: dict[str, tuple[str, dict[str, Any]]], steps: int, log: Any
) -> list[dict[str, Any]]:
    """Run `requests` on one server in `mode`; a row per request (peak RSS is since start)."""
    server = _Server(["--model-path", f"ref://{preset}", *MODES[mode]], log)
    rows = []
    try:
        startup_s = server.launched.wait_healthy()
        pids = server.launched.rank_pids()
        card = server.get_json("/v1/models")["data"][0]
        for name, (path, body) in requests.items():
            with tempfile.TemporaryDirectory() as tmp:
                dump = Path(tmp) / "perf.json"
                body = {**body, "num_inference_steps": steps, "perf_dump_path": str(dump)}
                latency = _finish(server, path, body)
                perf = json.loads(dump.read_text())
            rows.append(
                {
                    "preset": preset,
                    "mode": mode,
                    "request": name,
                    "device": card["device"],
                    "dtype": card["dtype"],
                    "startup_s": round(startup_s, 2),
                    "latency_s": round(latency, 3),
                    "accounted_peak_mib": perf["meta"]["accounted_peak_mib_per_rank"],
                    "device_peak_mib": perf["meta"].get("device_peak_mib_per_rank"),
                    "peak_rss_mib": [round(peak_rss_mib(pid), 1) for pid in pids],
                }
            )
    finally:
        server.launched.stop()
    return rows


def _cells(values: list[float] | None) -> str:
    if not values:
        return "—"
    return " / ".join(f"{v:.1f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.refserver.measure")
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--steps", type=int, default=1, help="memory does not depend on steps")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--server-log", type=Path, default=None)
    parser.add_argument("--reuse", action="store_true", help="one server per preset and mode")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    log = open(args.server_log, "ab") if args.server_log else None  # noqa: SIM115
    print("| preset | mode | request | accounted peak MiB | CPU peak RSS MiB | GPU peak MiB |")
    print("|---|---|---|---|---|---|")
    for preset in args.presets:
        every = requests_for(preset)
        # a fresh server per request, unless --reuse: peak RSS is a lifetime high-water mark
        batches = [every] if args.reuse else [{k: v} for k, v in every.items()]
        for batch in batches:
            for mode in args.modes:
                try:
                    new = measure_mode(preset, mode, batch, args.steps, log)
                except Exception as e:  # one failed cell must not lose the others
                    new = [
                        {
                            "preset": preset,
                            "mode": mode,
                            "request": ", ".join(batch),
                            "error": f"{type(e).__name__}: {e}",
                        }
                    ]
                rows.extend(new)
                if args.out:
                    write_json_atomic(args.out, rows)
                for row in new:
                    print(
                        f"| {preset} | {mode} | {row['request']} | "
                        f"{_cells(row.get('accounted_peak_mib'))} | "
                        f"{_cells(row.get('peak_rss_mib'))} | "
                        f"{_cells(row.get('device_peak_mib'))} |"
                        + (f" {row['error']}" if "error" in row else ""),
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
