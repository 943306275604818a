"""The contract between host and sandbox: the attempt spec (host -> `lab case`) and the attempt
result (`lab case` -> host). Both are JSON files; nothing else crosses the sandbox boundary."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from lab.config import Case

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
SPEC_FILE = "spec.json"
# extra_args of a `kind: test` case: flags for the server its launcher starts, handed over in
# LAB_SERVER_EXTRA_ARGS (lab/e2e.py)
TEST_KEY = "test"
# A shared GPU (lab/host/scheduler.py): the sandbox's share of the card in GiB, and that share as
# a fraction of the card. The lab's reference servers hold themselves to it with torch's
# per-process memory fraction (lab/refserver/budget.py); other processes get it to read.
GPU_SHARE_ENV = "LAB_GPU_SHARE_GIB"
GPU_FRACTION_ENV = "LAB_CUDA_MEMORY_FRACTION"


# target_mde_pct cases without measure_budget_s: seconds of measuring at most
DEFAULT_MEASURE_BUDGET_S = 300.0


class Outcome(StrEnum):
    passed = "passed"
    degraded = "degraded"  # case level only: passed on a later rung of the ladder
    flaky = "flaky"  # case level only: failed, then passed when re-run as the identical attempt
    oom = "oom"
    crashed = "crashed"
    timeout = "timeout"
    bad_response = "bad_response"
    test_failed = "test_failed"  # kind "test": its own assertions failed (names from its JUnit)
    infra_error = "infra_error"
    skipped = "skipped"
    interrupted = "interrupted"


class Phase(StrEnum):
    setup = "setup"
    startup = "startup"
    warmup = "warmup"
    measure = "measure"
    compare = "compare"
    teardown = "teardown"


# Exit codes of `lab case`.
EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_BAD_SPEC = 2
EXIT_OOM = 3


def exit_code_for(outcome: Outcome) -> int:
    if outcome is Outcome.passed:
        return EXIT_PASSED
    if outcome is Outcome.oom:
        return EXIT_OOM
    return EXIT_FAILED


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Ballast(_Model):
    """Hold all but `keep_gib` of each listed GPU before the server starts (VRAM emulation)."""

    keep_gib: float
    devices: list[int]


class AttemptSpec(_Model):
    """Everything `lab case` needs to run one attempt of one case, written by the host."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    case: Case
    frameworks: list[str]  # run in this order; the first is the baseline of the comparison
    attempt: int = 1
    rung: str = "as-configured"
    # Flags the ladder adds; they replace a value already in serve_args instead of repeating it.
    extra_args: dict[str, list[str]] = Field(default_factory=dict)
    extra_env: dict[str, str] = Field(default_factory=dict)  # the rung's `env`
    num_gpus: int = 0
    gpus: list[int] = Field(default_factory=list)  # host indices, for the record
    gpu_uuids: list[str] = Field(default_factory=list)  # what NVML and CUDA_VISIBLE_DEVICES use
    vram_gib: float | None = None
    ballast: Ballast | None = None
    warmup_requests: int = 1
    measurement_repeats: int = 3
    startup_timeout_s: float = 2400.0
    request_timeout_s: float = 1200.0
    host: str = "127.0.0.1"
    port: int = 30000
    out_dir: str  # result.json, artifacts and perf dumps go here
    log_dir: str
    config_dir: str
    test_image_path: str | None = None

    @property
    def result_path(self) -> Path:
        return Path(self.out_dir) / RESULT_FILE

    def log_path(self, framework: str) -> Path:
        return Path(self.log_dir) / f"{self.case.id}__{framework}__a{self.attempt}.log"


class Telemetry(_Model):
    peak_gpu_memory_mib: float | None = None  # the server's process tree, all devices
    # whole device (all processes), keyed by the position in the attempt's GPU list
    peak_gpu_memory_per_device_mib: dict[str, float] | None = None
    peak_host_rss_mib: float | None = None
    samples: int = 0
    gpu_free_after_s: float | None = None  # kill -> no PID of the server left in NVML


class FrameworkResult(_Model):
    framework: str
    outcome: Outcome
    phase: Phase | None = None
    reason: str = ""
    exit_code: int | None = None  # the server's, when it exited
    command: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)  # secrets redacted
    log_path: str = ""
    log_tail: list[str] = Field(default_factory=list)
    latency_s: float | None = None
    latency_samples_s: list[float] = Field(default_factory=list)
    measurement_count: int = 0
    # why measuring stopped: "fixed_repeats" | "target_mde_reached" | "budget_spent" |
    # "max_measurements" (target_mde_pct cases); the MDE the samples allowed when it did
    measurement_stop: str | None = None
    measurement_mde_pct: float | None = None
    first_request_latency_s: float | None = None
    server_latency_s: float | None = None
    server_stage_medians_ms: dict[str, float] | None = None
    median_denoise_step_ms: float | None = None
    # perf dumps (sglang's API): one sample per readable dump; None where the API has none
    server_latency_samples_s: list[float] | None = None
    missing_perf_dumps: int = 0
    notes: list[str] = Field(default_factory=list)  # e.g. a perf dump missing, and why
    phase_timings_s: dict[str, float] = Field(default_factory=dict)
    telemetry: Telemetry = Field(default_factory=Telemetry)
    artifact: str | None = None
    speedup_vs_baseline: float | None = None
    psnr_vs_baseline_db: float | None = None
    ready_at: float | None = None  # epoch seconds the lab saw the server ready
    fatal_line_at: float | None = None  # epoch seconds the fatal line was read
    stopped_at: float | None = None  # epoch seconds the process group was gone
    inner_junit: str | None = None  # test cases: the JUnit file the command wrote
    failed_tests: list[str] = Field(default_factory=list)  # test_failed: from that JUnit
    output_tokens_per_s: float | None = None  # LLM servers: median of the measured requests
    server_version: str | None = None


class AttemptResult(_Model):
    schema_version: int = SCHEMA_VERSION
    run_id: str
    case_id: str
    attempt: int
    rung: str
    outcome: Outcome
    phase: Phase | None = None
    reason: str = ""
    frameworks: list[FrameworkResult] = Field(default_factory=list)
    gpus: list[int] = Field(default_factory=list)
    vram_gib: float | None = None
    extra_args: dict[str, list[str]] = Field(default_factory=dict)
    # where the attempt's time went: "ballast" (VRAM emulation held), then each framework phase
    # ("healthy", "ready", "warmup", "measure", "teardown") summed over the frameworks
    phase_timings_s: dict[str, float] = Field(default_factory=dict)
    started_at: float
    finished_at: float
    lab_version: str = ""
    hostname: str = ""
    # The sandbox's own verdict, kept when the host overrides it with its own (the kernel's
    # OOM kill, the runtime's verdict such as Slurm's TIMEOUT, an interrupted run).
    sandbox_outcome: Outcome | None = None
    sandbox_reason: str | None = None
    # Set by the host after the run (lab/results/triage.py), on failed attempts only.
    failure_signature: str | None = None
    failure_signature_id: str | None = None
    # Set by the host: GPU sharing (lab/host/scheduler.py). When the pool granted the GPUs,
    # the share of the card it was held to (None: whole GPUs), the attempts that shared a GPU
    # with it, and for a co-located failure, that it was re-run alone (and what that gave).
    granted_at: float | None = None
    share_gib: float | None = None
    neighbours: list[str] = Field(default_factory=list)
    colocation_note: str | None = None

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.outcome)


# An attempt's phases in the order they happen: the attempt's own (ballast), then a framework's.
PHASES = ("ballast", "healthy", "ready", "warmup", "measure", "teardown")


def summed_phases(own: dict[str, float], frameworks: list[FrameworkResult]) -> dict[str, float]:
    """The attempt's own phase timings, then each framework phase summed over the frameworks."""
    timings = dict(own)
    for f in frameworks:
        for k, v in f.phase_timings_s.items():
            timings[k] = round(timings.get(k, 0.0) + v, 3)
    return timings


def load_spec(path: str | os.PathLike[str]) -> AttemptSpec:
    return AttemptSpec.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))


def load_result(path: str | os.PathLike[str]) -> AttemptResult:
    return AttemptResult.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
