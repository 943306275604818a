"""The fields of a results.json row that sglang's own tools read, as they read them.

Read at sgl-project/sglang, scripts/ci/utils/diffusion/: generate_diffusion_dashboard.py
(commit 13cf5569b24f55fb08ccdcd34738ca2d4050aa6a), post_diffusion_comparison_to_slack.py
(2f92ff035fa6a8fc41acf5eadd122214146a22fb), publish_comparison_results.py
(3bebcadb0af9b865c0563e040971ea25206b6cfb), and run_comparison.py, which writes the rows
(03635624690c11ff6ea89d288ca1854b521d9b1c). What follows from them:

- A row with `latency_s` is a clean, like-for-like measurement: the dashboard shows it green and
  takes it into the 5-run baseline; Slack counts only rows whose `latency_s` is null as failed.
  So a degraded case (passed only on a lower ladder rung) exports `latency_s` null and an
  `error` that says so; its figures stay in the lab's own `degraded_measurement`.
- The dashboard judges, charts and breaks down only framework "sglang". The reference server
  speaks sglang's flags, API and perf dumps, so its rows export as "sglang" (the lab's name in
  `lab_framework`) unless the case also runs real sglang.
- Server timings: `server_latency_samples_s` (one per readable perf dump) and
  `missing_perf_dumps` give the dashboard's "Server samples" column; the stage medians use
  sglang's stage names (TextEncodingStage, DenoisingStage, DecodingStage)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lab.contract import FrameworkResult, Outcome

if TYPE_CHECKING:
    from lab.results.model import CaseResult, RunResults

# History as sglang keeps it: publish_comparison_results.py (7e7b2dfd…, 3bebcadb…) stores each
# night's results as diffusion-comparisons/{YYYY-MM-DD}_{run id}.json; generate_diffusion_
# dashboard.py --history-dir DIR (13cf5569…) reads DIR/*.json, newest first by file name (its 29
# newest), and keeps those with the current run's methodology and warmup_requests. Lab run ids
# start with their UTC start time, so names sort by time within a day too.
HISTORY_DIR = "diffusion-comparisons"


def history_file_name(results: RunResults) -> str:
    day = datetime.fromisoformat(results.timestamp.replace("Z", "+00:00")).astimezone(UTC)
    return f"{day:%Y-%m-%d}_{results.run_id}.json"


SPEAKS_SGLANG = ("reference",)  # lab frameworks that stand in for sglang on upstream's tools


def exported_framework(name: str, case_frameworks: list[str]) -> str:
    if name in SPEAKS_SGLANG and "sglang" not in case_frameworks:
        return "sglang"
    return name


def _error(case: CaseResult) -> str | None:
    if case.outcome is Outcome.passed:
        return None
    if case.outcome is Outcome.degraded:
        return (
            f"degraded: passed only on ladder rung {case.degraded_rung!r}, not as configured "
            f"(not like-for-like; figures in degraded_measurement): {case.original_failure or ''}"
        ).rstrip(": ")
    return f"{case.outcome}: {case.reason}" if case.reason else str(case.outcome)


def row_fields(case: CaseResult, fr: FrameworkResult | None) -> dict[str, Any]:
    """framework … first_request_latency_s as sglang's tools read them, then the lab's
    additions that explain them (lab_framework, degraded_measurement, notes)."""
    name = fr.framework if fr else (case.frameworks[0] if case.frameworks else None)
    measured: dict[str, Any] = {
        "latency_s": fr.latency_s if fr else None,
        "latency_samples_s": fr.latency_samples_s if fr else [],
        "measurement_count": fr.measurement_count if fr else 0,
    }
    server: dict[str, Any] = {}
    if fr and fr.server_latency_samples_s:
        server["server_latency_samples_s"] = fr.server_latency_samples_s
    server["server_latency_s"] = fr.server_latency_s if fr else None
    server["server_stage_medians_ms"] = fr.server_stage_medians_ms if fr else None
    server["median_denoise_step_ms"] = fr.median_denoise_step_ms if fr else None
    if fr and fr.missing_perf_dumps:
        server["missing_perf_dumps"] = fr.missing_perf_dumps
    first = fr.first_request_latency_s if fr else None
    out: dict[str, Any] = {
        "framework": exported_framework(name, case.frameworks) if name else name,
        "model": case.model,
        "task": case.task,
    }
    if case.outcome is Outcome.degraded:
        out |= {"latency_s": None, "latency_samples_s": [], "measurement_count": 0}
        out["error"] = _error(case)
        out |= {
            "server_latency_s": None,
            "server_stage_medians_ms": None,
            "median_denoise_step_ms": None,
            "first_request_latency_s": None,
        }
        out["degraded_measurement"] = {**measured, **server, "first_request_latency_s": first}
    else:
        out |= measured
        out["error"] = _error(case)
        out |= server
        out["first_request_latency_s"] = first
    if name and out["framework"] != name:
        out["lab_framework"] = name
    out["notes"] = list(fr.notes) if fr else []
    return out
