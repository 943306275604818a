"""The run-level results: one CaseResult per case (all its attempts), one RunResults per run.

`RunResults.to_results_json()` is the lab's own record: each row names the server that served
it as the lab names it (`reference`, `sglang`, ...). Other tools' dialects are exports built
from it (lab/results/upstream.py: sglang's dashboard), never the other way round."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lab.config import FlakeBudget
from lab.contract import AttemptResult, FrameworkResult, Outcome, Phase
from lab.results import stats

RESULTS_SCHEMA = "nightly-lab/results/v1"
METHODOLOGY = "client-e2e-v1"
# `status_change` values (lab/results/triage.py), in the order reports list them: what needs a
# human first.
STATUS_ORDER = ("new_failure", "still_failing", "fixed", "first_run", "still_passing")


def may_be_baseline(kind: str, shared_host: bool) -> bool:
    """Whether a run's timings may serve later nights as a baseline (regression detection, the
    dashboard's history): only a nightly that had the host to itself. A repro, selftest or replay
    measures, but is no baseline; another run on the host at the time skews its timings."""
    return kind == "nightly" and not shared_host


def status_rank(status: str | None) -> int:
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)


class RegressionFinding(BaseModel):
    """One framework of one case against its comparable history (set by regression.detect)."""

    model_config = ConfigDict(extra="forbid")

    framework: str
    verdict: str  # "regressed" | "improved" | "unchanged" | "inconclusive"
    latency_s: float
    baseline_median_s: float  # median of the medians of the comparable earlier runs
    baseline_runs: int
    baseline_spread_pct: float | None = None
    delta_pct: float
    mde_pct: float | None = None  # smallest change this case's history lets the test detect
    z_score: float | None = None
    detail: str
    # Both views together (regression.series_view): regressed | improved | unconfirmed |
    # runner_shifted, None when neither flags it; and the words for it.
    series_verdict: str | None = None
    series_note: str | None = None


class MemoryFinding(BaseModel):
    """Peak GPU memory of one framework of one case against its comparable history."""

    model_config = ConfigDict(extra="forbid")

    framework: str
    verdict: str  # as RegressionFinding's; only "regressed" flags the case
    peak_gpu_memory_mib: float
    baseline_median_mib: float
    baseline_runs: int
    delta_pct: float
    mde_pct: float | None = None
    detail: str


class FailingSince(BaseModel):
    """The first night of a case's current failure streak (set by triage.status_changes)."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    timestamp: str
    commit_sha: str | None = None
    streak: int  # nights failing in a row, this one included


class KnownFailure(BaseModel):
    """The known_failures.json entry a case's failure matched."""

    model_config = ConfigDict(extra="forbid")

    issue: str
    note: str = ""
    matched: str  # the signature, id or regex that matched


class Quarantine(BaseModel):
    """The quarantine.json entry that names a case (lab/results/gating.py)."""

    model_config = ConfigDict(extra="forbid")

    issue: str
    reason: str
    until: str  # YYYY-MM-DD, the last day it holds
    matched: str  # "case ID" or "signature SIG"
    expired: bool  # the run's day is past `until`: the case gates again

    def __str__(self) -> str:
        if self.expired:
            return (
                f"quarantine expired on {self.until}: {self.issue} ({self.reason}); "
                "it fails the run again"
            )
        return f"quarantined until {self.until}: {self.issue} ({self.reason})"


class FlakeRate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flaky: int  # nights the case ended flaky, tonight included
    nights: int  # of this many recorded nights (at most triage.FLAKE_WINDOW)

    def __str__(self) -> str:
        return f"flaky in {self.flaky} of the last {self.nights} nights"


class FleetFit(BaseModel):
    """Whether the case's measured peak per GPU fits one GPU class of the suite's fleet."""

    model_config = ConfigDict(extra="forbid")

    gpu_class: str
    vram_gib: float
    needs_gib: float | None  # measured peak per GPU; None when nothing was measured
    verdict: str  # "fits" | "tight" | "does not fit" | "unknown"
    headroom_pct: float | None = None

    def __str__(self) -> str:
        if self.needs_gib is None:
            return f"{self.gpu_class}: unknown (no peak GPU memory measured)"
        return (
            f"{self.gpu_class}: {self.verdict} (needs {self.needs_gib:.1f} GiB of "
            f"{self.vram_gib:g}, {self.headroom_pct:.0f} % headroom)"
        )


class CaseResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case_id: str
    model: str = ""
    task: str = ""
    kind: str = "comparison"
    num_gpus: int = 0
    frameworks: list[str] = Field(default_factory=list)
    outcome: Outcome
    phase: Phase | None = None
    reason: str = ""
    degraded_rung: str | None = None  # set when outcome is degraded
    original_failure: str | None = None  # the first attempt's reason, when a later one passed
    ladder_notes: list[str] = Field(default_factory=list)  # rungs skipped and why, and the like
    attempts: list[AttemptResult] = Field(default_factory=list)
    gpus: list[int] = Field(default_factory=list)
    vram_gib: float | None = None
    image: str | None = None  # tag the sandbox ran
    image_id: str | None = None
    runtime: str = ""
    regression: str | None = None  # "regressed" | "improved" | None: tonight's test (history)
    regression_detail: str | None = None
    regressions: list[RegressionFinding] = Field(default_factory=list)  # per framework
    # Across nights (lab/results/triage.py): new_failure | still_failing | fixed |
    # still_passing | first_run, None for skipped/interrupted cases.
    status_change: str | None = None
    failing_since: FailingSince | None = None
    status_note: str | None = None  # e.g. why there is no history to compare with
    memory_regressed: bool = False  # peak GPU memory grew beyond what its history explains
    memory_regression_detail: str | None = None
    memory_regressions: list[MemoryFinding] = Field(default_factory=list)  # per framework
    failure_signature: str | None = None  # "<outcome> in <phase>: <normalized failure line>"
    failure_signature_id: str | None = None  # its short hash
    confirmation: str | None = None  # what the identical re-run of a failure showed
    known_failure: KnownFailure | None = None
    flake_rate: FlakeRate | None = None
    flake_budget: FlakeBudget | None = None  # the case's, from the suite: see gating.py
    quarantine: Quarantine | None = None
    fleet_fit: list[FleetFit] = Field(default_factory=list)  # per GPU class of the suite's fleet
    canary: bool = False  # a stable workload whose moves tell a runner shift (config `canary`)
    # The nightly verdict from both views (regression.series_view): "regressed" / "improved"
    # (a change of the series confirms it), "unconfirmed" (tonight's test flags it, the series
    # does not yet), "runner_shifted" (it moved with the canaries); None: nothing to say.
    series_verdict: str | None = None
    # The change-point view of the case's series (lab/results/changes.py), set by detect:
    # "unconfirmed" | "regressed since RUN (+X %)" | "drifted since RUN (+X %)" |
    # "runner shifted (canary X +Y %)"; None when the series says nothing new.
    change_note: str | None = None
    # GPU sharing (lab/host/estimates.py): how the case was placed and from what estimate, and
    # a co-located failure that was re-run alone ("co-location OOM … passed alone")
    gpu_sharing: str | None = None
    colocation_note: str | None = None

    @property
    def final(self) -> AttemptResult | None:
        return self.attempts[-1] if self.attempts else None

    def framework_results(self) -> list[FrameworkResult]:
        return self.final.frameworks if self.final else []


class RunResults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_name: str = RESULTS_SCHEMA
    run_id: str
    timestamp: str  # ISO 8601, UTC
    commit_sha: str | None = None
    # "--commit", "GITHUB_SHA", "image-label:<image>", "server-version:<framework>" (store.py)
    commit_source: str | None = None
    commit_unknown_because: str | None = None  # why commit_sha is null
    lab_version: str = ""
    config_path: str = ""
    config_sha256: str = ""
    measurement_repeats: int = 3
    warmup_requests: int = 1
    methodology: str = METHODOLOGY
    gpu_model: str | None = None  # for comparability of history
    runtime: str = ""
    status: str = "finished"  # "finished" | "interrupted"
    kind: str = "nightly"  # nightly | repro | selftest | replay: only nightlies are baselines
    shared_host: bool = False  # another lab run was live on this host at the same time
    shared_with: list[str] = Field(default_factory=list)  # those runs' ids (lab/host/neighbours)
    host: str = ""  # the machine's hostname
    # What the numbers were measured on (lab/host/gpus.py runner_fingerprint): GPU name, driver,
    # NVML max clocks, CPU model, kernel, lab commit. A change between nights is shown.
    runner: dict[str, str] = Field(default_factory=dict)
    runner_changed: str | None = None  # set by detect: what differs from the last comparable run
    # what fails this run beyond failures (--fail-on-*): outcomes, and "flake_budget"
    fail_on: list[str] = Field(default_factory=list)
    cases: list[CaseResult] = Field(default_factory=list)

    def result_rows(self) -> list[dict[str, Any]]:
        """One row per case and framework: results.json's `results`."""
        rows: list[dict[str, Any]] = []
        for case in sorted(self.cases, key=lambda c: status_rank(c.status_change)):
            fresults: Sequence[FrameworkResult | None] = case.framework_results() or [None]
            for fr in fresults:
                samples = fr.latency_samples_s if fr else []
                rows.append(
                    {
                        "case_id": case.case_id,
                        **row_fields(case, fr),
                        "speedup_vs_baseline": fr.speedup_vs_baseline if fr else None,
                        "psnr_vs_baseline_db": fr.psnr_vs_baseline_db if fr else None,
                        "peak_gpu_memory_mib": fr.telemetry.peak_gpu_memory_mib if fr else None,
                        "outcome": str(case.outcome),
                        "phase": str(case.phase) if case.phase else None,
                        "reason": case.reason,
                        "degraded_rung": case.degraded_rung,
                        "regression": next(
                            (
                                f.verdict
                                for f in case.regressions
                                if fr and f.framework == fr.framework
                            ),
                            None,
                        ),
                        "spread_pct": spread_pct(samples),
                        "status_change": case.status_change,
                        "failure_signature": case.failure_signature,
                        "failure_signature_id": case.failure_signature_id,
                        "known_issue": case.known_failure.issue if case.known_failure else None,
                        "flaky_nights": case.flake_rate.flaky if case.flake_rate else None,
                        "quarantined_until": case.quarantine.until if case.quarantine else None,
                        "failing_since": case.failing_since.model_dump()
                        if case.failing_since
                        else None,
                        **uncertainty_fields(samples, case, fr.framework if fr else None),
                    }
                )
        return rows

    def to_results_json(self) -> dict[str, Any]:
        """The keys sglang's comparison-results.json also has first, then the lab's."""
        return {
            "timestamp": self.timestamp,
            "commit_sha": self.commit_sha,
            "run_id": self.run_id,
            "measurement_repeats": self.measurement_repeats,
            "results": self.result_rows(),
            **self.model_dump(
                mode="json", exclude={"run_id", "timestamp", "commit_sha", "measurement_repeats"}
            ),
        }

    @classmethod
    def from_results_json(cls, data: dict[str, Any]) -> RunResults:
        return cls.model_validate({k: v for k, v in data.items() if k != "results"})

    @property
    def failed(self) -> list[CaseResult]:
        ok = (Outcome.passed, Outcome.degraded, Outcome.skipped)
        return [c for c in self.cases if c.outcome not in ok]


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
    """framework (the lab's name of the server that served the row) and the version it
    reported, then the measurement. A degraded case (passed only on a lower ladder rung) is no
    like-for-like figure: `latency_s` null, an `error` saying so, its figures kept in
    `degraded_measurement`. Field names are those sglang's comparison-results.json uses for the
    same things, so an export (lab/results/upstream.py) picks rows, never renames fields."""
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
    if fr and fr.missing_perf_dumps:  # as sglang writes it: only when some are missing
        server["missing_perf_dumps"] = fr.missing_perf_dumps
    first = fr.first_request_latency_s if fr else None
    out: dict[str, Any] = {
        "framework": name,
        "server_version": fr.server_version if fr else None,
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
    out["notes"] = list(fr.notes) if fr else []
    return out


def spread_pct(samples: list[float]) -> float | None:
    """(max - min) / median of the samples, in percent: how noisy this measurement was."""
    if len(samples) < 2:
        return None
    med = statistics.median(samples)
    return round(100.0 * (max(samples) - min(samples)) / med, 2) if med > 0 else None


def uncertainty_fields(
    samples: list[float], case: CaseResult, framework: str | None
) -> dict[str, Any]:
    """`latency_ci95_s`, `latency_cv_pct` and `mde_pct` of one row: the MDE against the case's
    history where regression detection had one, else from this night's samples alone."""
    u = stats.uncertainty(samples)  # too_few at the default policy's min_effect_pct
    finding = next((f for f in case.regressions if f.framework == framework), None)
    mde = finding.mde_pct if finding and finding.mde_pct is not None else (u.mde_pct if u else None)
    return {
        "latency_ci95_s": [round(v, 6) for v in u.ci95] if u and u.ci95 else None,
        "latency_ci95_coverage": round(u.ci_coverage, 4) if u and u.ci_coverage else None,
        "too_few": u.too_few if u else None,
        "latency_cv_pct": round(u.cv_pct, 2) if u and u.cv_pct is not None else None,
        "mde_pct": round(mde, 2) if mde is not None else None,
        "memory_regression": next(
            (f.verdict for f in case.memory_regressions if f.framework == framework), None
        ),
    }
