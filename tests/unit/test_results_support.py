"""Builders of run results for the results tests (no tests here): real model objects, as the
host assembles them from attempt result files."""

from __future__ import annotations

from lab.contract import AttemptResult, FrameworkResult, Outcome, Phase, Telemetry
from lab.results.model import CaseResult, RunResults

H100 = "NVIDIA H100 80GB HBM3"
T0 = 1_795_000_000.0  # 2026-11-19, epoch seconds


def framework(
    name: str = "sglang",
    latency: float | None = 1.0,
    outcome: Outcome = Outcome.passed,
    *,
    peak_mib: float | None = None,
    speedup: float | None = None,
    reason: str = "",
    phase: Phase | None = None,
    log_path: str = "",
    log_tail: list[str] | None = None,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> FrameworkResult:
    samples = [] if latency is None else [latency * 0.995, latency, latency * 1.005]
    return FrameworkResult(
        framework=name,
        outcome=outcome,
        phase=phase,
        reason=reason,
        latency_s=latency,
        latency_samples_s=samples,
        measurement_count=len(samples),
        telemetry=Telemetry(peak_gpu_memory_mib=peak_mib),
        speedup_vs_baseline=speedup,
        log_path=log_path,
        log_tail=log_tail or [],
        command=command or [],
        env=env or {},
    )


def case(
    case_id: str,
    frameworks: list[FrameworkResult] | None = None,
    outcome: Outcome = Outcome.passed,
    *,
    run_id: str = "run",
    vram_gib: float | None = None,
    rung: str | None = None,
    original_failure: str | None = None,
    reason: str = "",
    phase: Phase | None = None,
    attempt_s: float = 60.0,
) -> CaseResult:
    """A case with one attempt holding `frameworks` (two when degraded: the OOM, then the pass)."""
    frameworks = frameworks if frameworks is not None else [framework()]
    attempts = []
    if outcome is Outcome.degraded:
        attempts.append(
            AttemptResult(
                run_id=run_id,
                case_id=case_id,
                attempt=1,
                rung="as-configured",
                outcome=Outcome.oom,
                phase=Phase.startup,
                reason=original_failure or "torch.OutOfMemoryError: CUDA out of memory.",
                started_at=T0,
                finished_at=T0 + attempt_s,
            )
        )
    if frameworks or outcome is not Outcome.interrupted:
        attempts.append(
            AttemptResult(
                run_id=run_id,
                case_id=case_id,
                attempt=len(attempts) + 1,
                rung=rung or "as-configured",
                outcome=Outcome.passed if outcome is Outcome.degraded else outcome,
                phase=phase,
                reason=reason,
                frameworks=frameworks,
                vram_gib=vram_gib,
                started_at=T0,
                finished_at=T0 + attempt_s,
            )
        )
    return CaseResult(
        case_id=case_id,
        model=f"org/{case_id}",
        task="text-to-image",
        num_gpus=1,
        frameworks=[f.framework for f in frameworks] or ["sglang"],
        outcome=outcome,
        phase=phase,
        reason=reason,
        degraded_rung=rung if outcome is Outcome.degraded else None,
        original_failure=original_failure,
        attempts=attempts,
        vram_gib=vram_gib,
        runtime="docker",
    )


def run_id_for(night: int) -> str:
    return f"202611{night:02d}T010000Z-ab{night:02d}"


def run(
    night: int,
    cases: list[CaseResult],
    *,
    gpu: str | None = H100,
    status: str = "finished",
    warmup: int = 1,
    repeats: int = 3,
    methodology: str = "client-e2e-v1",
) -> RunResults:
    """Night N runs on 2026-11-N at 01:00 UTC; run ids sort like the nights."""
    return RunResults(
        run_id=run_id_for(night),
        timestamp=f"2026-11-{night:02d}T01:00:00Z",
        commit_sha=f"{night:040x}",
        lab_version="0.1.0",
        config_path="/work/configs/nightly.json",
        config_sha256="0" * 64,
        measurement_repeats=repeats,
        warmup_requests=warmup,
        methodology=methodology,
        gpu_model=gpu,
        runtime="docker",
        status=status,
        cases=cases,
    )


def night(
    n: int, latencies: dict[str, float], *, vram_gib: float | None = None, **kw: object
) -> RunResults:
    """A night where every case passed on sglang with the given median latencies."""
    return run(
        n,
        [
            case(cid, [framework("sglang", lat)], vram_gib=vram_gib, run_id=run_id_for(n))
            for cid, lat in latencies.items()
        ],
        **kw,  # type: ignore[arg-type]
    )
