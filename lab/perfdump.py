"""sglang's diffusion perf dump (the file a request's `perf_dump_path` names): written by the
reference server, read by the lab's client, the same way sglang's own nightly reads it.

Format as sgl-project/sglang writes it (PerformanceLogger.dump_benchmark_report in
python/sglang/multimodal_gen/runtime/utils/perf_logger.py, commit
0017ffd3911e583595194690fe0653a659d7a3cc):
`total_duration_ms`, `steps` [{name, duration_ms}] (one per pipeline stage, sglang's stage class
names), `denoise_steps_ms` [{step, duration_ms}], `timestamp`, `request_id`, `commit_hash`,
`tag`, `meta` (anything else). Read as scripts/ci/utils/diffusion/run_comparison.py reads it
(_read_perf_dump, _summarize_perf_dumps, commit 03635624690c11ff6ea89d288ca1854b521d9b1c)."""

from __future__ import annotations

import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# sglang's stage class names; its dashboard groups stages by these suffixes
TEXT_ENCODING = "TextEncodingStage"
IMAGE_ENCODING = "ImageVAEEncodingStage"
DENOISING = "DenoisingStage"
DECODING = "DecodingStage"


def dump_document(
    request_id: str,
    total_ms: float,
    stages_ms: dict[str, float],
    denoise_steps_ms: list[float],
    meta: dict[str, Any],
    commit_hash: str = "N/A",
) -> dict[str, Any]:
    return {
        "timestamp": datetime.now(UTC).isoformat(),
        "request_id": request_id,
        "commit_hash": commit_hash,
        "tag": "benchmark_dump",
        "total_duration_ms": round(total_ms, 3),
        "steps": [{"name": k, "duration_ms": round(v, 3)} for k, v in stages_ms.items()],
        "denoise_steps_ms": [
            {"step": i, "duration_ms": round(v, 3)} for i, v in enumerate(denoise_steps_ms)
        ],
        "meta": meta,
    }


def parse_dump(path: Path) -> tuple[dict[str, Any] | None, str]:
    """The dump, or None and why not, in run_comparison.py's three words for it."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None, "file never appeared"
    except (OSError, ValueError) as e:
        return None, f"never parsed as JSON ({e})"
    if not isinstance(data, dict) or not isinstance(data.get("total_duration_ms"), int | float):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        return None, f"parsed but has no total_duration_ms (keys: {keys})"
    return data, ""


# A server that writes dumps has written this one by the time it answers, or within a few ms
# (the reference server: before answering). The bound is paid once per attempt at most: after a
# miss the next requests only look (benchmarks/attempt_overhead.py measures both).
DUMP_WAIT_S = 1.0
DUMP_POLL_S = 0.01


def wait_for_dump(path: Path, bound_s: float) -> tuple[dict[str, Any] | None, str]:
    """The dump at `path`, polled for up to `bound_s` (0: one look), or None and why not."""
    deadline = time.monotonic() + bound_s
    while True:
        dump, why = parse_dump(path)
        if dump is not None:
            return dump, ""
        if time.monotonic() >= deadline:
            return None, f"{why} after {bound_s:g} s" if bound_s else why
        time.sleep(DUMP_POLL_S)


def summarize(dumps: list[dict[str, Any]]) -> dict[str, Any]:
    """server_latency_samples_s, server_latency_s, server_stage_medians_ms and
    median_denoise_step_ms, as sglang's nightly computes them (medians, rounded to 3)."""
    if not dumps:
        return {}
    samples = [round(d["total_duration_ms"] / 1000.0, 3) for d in dumps]
    stages: dict[str, list[float]] = {}
    steps: list[float] = []
    for d in dumps:
        for stage in d.get("steps") or []:
            if (
                isinstance(stage, dict)
                and stage.get("name")
                and stage.get("duration_ms") is not None
            ):
                stages.setdefault(stage["name"], []).append(float(stage["duration_ms"]))
        steps.extend(
            float(s["duration_ms"])
            for s in d.get("denoise_steps_ms") or []
            if isinstance(s, dict) and s.get("duration_ms") is not None
        )
    out: dict[str, Any] = {
        "server_latency_samples_s": samples,
        "server_latency_s": round(statistics.median(samples), 3),
        "server_stage_medians_ms": {
            k: round(statistics.median(v), 3) for k, v in sorted(stages.items())
        },
    }
    if steps:
        out["median_denoise_step_ms"] = round(statistics.median(steps), 3)
    return out
