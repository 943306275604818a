"""What one attempt will be, before anything runs: the cases chosen, each case's plan (frameworks,
image, ladder, skip reason) and each attempt's spec and sandbox request.

Pure: no threads, no runtime, no progress. `lab nightly` (the executor in lab/host/run.py),
`--dry-run`, `lab repro --shell` and `lab render k8s` all build their attempts here, so each shows
exactly what the nightly starts."""

from __future__ import annotations

import fnmatch
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from lab.config import Case, LoadedSuite, load_suite
from lab.contract import (
    DEFAULT_MEASURE_BUDGET_S,
    GPU_FRACTION_ENV,
    GPU_SHARE_ENV,
    AttemptSpec,
)
from lab.errors import LabError
from lab.frameworks import comfyui, get_framework
from lab.host.gpus import GpuInfo, visible_devices
from lab.host.ladder import LadderPlan, PlannedRung, plan_ladder
from lab.host.runtimes.base import SandboxRequest
from lab.host.vram import plan_vram
from lab.redact import ENV_REF, is_secret_name
from lab.results.store import RunDir

DEFAULT_CONFIG = "configs/nightly.json"
REFERENCE_CONFIG = "configs/reference.json"
UNBOUNDED = 1 << 30  # GPUs "here" when the runtime places work: the cluster decides what fits


# --- which cases ----------------------------------------------------------------------------------
def config_path(arg: str | None) -> str:
    return arg or DEFAULT_CONFIG


def select_cases(loaded: LoadedSuite, wanted: list[str] | None) -> list[Case]:
    """`--case ID …`: exact ids, in the suite's order; an unknown one names the suite's cases."""
    cases = loaded.suite.cases
    if not wanted:
        return cases
    known = {c.id for c in cases}
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise LabError(
            f"--case {', '.join(unknown)}: no such case in {loaded.path}; "
            f"cases: {', '.join(sorted(known))}"
        )
    return [c for c in cases if c.id in wanted]


def find_case(loaded: LoadedSuite, target: str) -> Case:
    """A case by id, alias or model id; ambiguous or unknown → LabError listing candidates."""
    t = target.lower()
    exact = [c for c in loaded.suite.cases if t in (n.lower() for n in c.names())]
    if len(exact) == 1:
        return exact[0]
    partial = exact or [c for c in loaded.suite.cases if any(t in n.lower() for n in c.names())]
    if len(partial) == 1:
        return partial[0]
    listing = "\n".join(
        f"  {c.id}  (aliases: {', '.join(c.aliases) or '-'}; model {c.model})"
        for c in (partial or loaded.suite.cases)
    )
    what = "is ambiguous" if partial else "matches no case"
    raise LabError(f"{target!r} {what} in {loaded.path}; candidates:\n{listing}")


def repro_suite(config: str | None, target: str) -> LoadedSuite:
    """The suite named, else the first shipped suite that knows the target."""
    if config:
        return load_suite(config)
    for path in (DEFAULT_CONFIG, REFERENCE_CONFIG):
        if Path(path).exists():
            loaded = load_suite(path)
            try:
                find_case(loaded, target)
                return loaded
            except LabError:
                continue
    return load_suite(DEFAULT_CONFIG)


# --- each case ------------------------------------------------------------------------------------
def default_image(framework: str) -> str:
    """The image `make images` builds for a framework (the framework declares it)."""
    return get_framework(framework).image


@dataclass
class CasePlan:
    case: Case
    frameworks: list[str]
    ladder: LadderPlan
    image: str
    vram_gib: float | None
    skip_reason: str | None = None
    notes: list[str] = field(default_factory=list)


def plan_cases(
    loaded: LoadedSuite,
    cases: list[Case],
    gpus: list[GpuInfo],
    vram_override: float | None,
    lab_places: bool = True,
) -> list[CasePlan]:
    """What will run, and what is skipped with which reason, without starting anything.

    lab_places=False (Slurm places the jobs): this machine's GPU count limits nothing."""
    plans = []
    for case in cases:
        fws = case.runnable_frameworks if case.kind != "test" else []
        unsupported = [f for f in case.frameworks if f not in fws]
        first = fws[0] if fws else "reference"
        cfg_image = case.frameworks[first].image if fws else None
        image = cfg_image or case.image or loaded.suite.image or default_image(first)
        vram = vram_override if vram_override is not None else case.vram_gib
        plan = CasePlan(case, fws, LadderPlan([]), image, vram)
        if unsupported:
            plan.notes.append(f"framework(s) {', '.join(unsupported)} not supported by the lab")
        if comfyui.NAME in unsupported:
            plan.notes.append(comfyui.statement(case))
        if case.kind != "test" and not fws:
            plan.skip_reason = f"no framework the lab can run ({', '.join(unsupported)})"
        elif lab_places and case.num_gpus > len(gpus):
            need, have = (f"{n} GPU" + ("" if n == 1 else "s") for n in (case.num_gpus, len(gpus)))
            plan.skip_reason = f"needs {need}, this machine has {have}"
        else:
            plan.ladder = plan_ladder(loaded, case, fws, len(gpus) if lab_places else UNBOUNDED)
            plan.notes.extend(f"ladder rung skipped: {s}" for s in plan.ladder.skipped)
        plans.append(plan)
    return plans


# --- each attempt ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunContext:
    """What every attempt of one run shares: the suite, the GPUs here, where the run writes.

    lab_places=False: the runtime places work (Slurm), so GPU-dependent parts of the spec are
    filled in on the node (runtimes/slurm_job.py)."""

    loaded: LoadedSuite
    gpus: list[GpuInfo]
    run_dir: Path
    run_id: str
    lab_places: bool = True


def attempt_request(
    ctx: RunContext,
    plan: CasePlan,
    rung: PlannedRung,
    attempt: int,
    gpus: list[int],
    share_gib: float | None = None,
) -> tuple[AttemptSpec, SandboxRequest]:
    """The spec `lab case` reads and the sandbox the runtime starts for one attempt;
    `share_gib`: the attempt shares its GPU and is held to that much of it (share_caps)."""
    case = plan.case
    suite = ctx.loaded.suite
    infos = [g for g in ctx.gpus if g.index in gpus]
    if ctx.lab_places or rung.num_gpus == 0:
        ballast, vram_args = plan_vram(case.id, plan.vram_gib, infos, plan.frameworks)
    else:  # the node fills these in from the GPUs Slurm grants (runtimes/slurm_job.py)
        ballast, vram_args = None, {}
    share_env: dict[str, str] = {}
    if share_gib is not None and infos:
        share_env, share_args = share_caps(share_gib, infos[0], plan.frameworks)
        for fw, args in share_args.items():
            vram_args[fw] = vram_args.get(fw, []) + args
    extra = {
        fw: list(rung.extra_args.get(fw, [])) + vram_args.get(fw, [])
        for fw in [*plan.frameworks, *(k for k in vram_args if k not in plan.frameworks)]
    }
    run_dir = RunDir(ctx.run_dir)
    out_dir = run_dir.attempt_dir(case.id, attempt)
    test_image = None
    if case.needs_image_input and suite.test_image_path:
        test_image = str((ctx.loaded.config_dir / suite.test_image_path).resolve())
    spec = AttemptSpec(
        run_id=ctx.run_id,
        case=case,
        frameworks=plan.frameworks,
        attempt=attempt,
        rung=rung.name,
        extra_args={k: v for k, v in extra.items() if v},
        extra_env=rung.env,
        num_gpus=len(gpus) if ctx.lab_places else rung.num_gpus,
        gpus=gpus,
        gpu_uuids=[g.uuid for g in infos if g.uuid],
        vram_gib=plan.vram_gib,
        ballast=ballast,
        warmup_requests=case.warmup_requests
        if case.warmup_requests is not None
        else suite.warmup_requests,
        measurement_repeats=case.measurement_repeats or suite.measurement_repeats,
        startup_timeout_s=case.startup_timeout_s or suite.startup_timeout_s,
        request_timeout_s=case.request_timeout_s or suite.request_timeout_s,
        out_dir=str(out_dir),
        log_dir=str(run_dir.logs),
        config_dir=str(ctx.loaded.config_dir),
        test_image_path=test_image,
    )
    env = sandbox_env(case, infos, gpus, suite.pass_env) | share_env
    req = SandboxRequest(
        run_id=ctx.run_id,
        case_id=case.id,
        attempt=attempt,
        spec_path=out_dir / "spec.json",
        run_dir=ctx.run_dir,
        config_dir=ctx.loaded.config_dir,
        gpus=gpus,
        image=plan.image,
        env=env,
        model_cache=Path(suite.model_cache) if suite.model_cache else None,
        shm_size=suite.shm_size,
        ipc_mode=suite.ipc_mode,
        memory_limit_mib=case.memory_limit_mib,
        address_space_limit_mib=case.address_space_limit_mib,
        gpu_count=spec.num_gpus,
        time_limit_s=attempt_bound_s(spec),
    )
    return spec, req


def share_caps(
    share_gib: float, gpu: GpuInfo, frameworks: list[str]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """How a shared attempt is held to its share of the card: (sandbox env, server flags).

    Every sandbox gets $LAB_GPU_SHARE_GIB and $LAB_CUDA_MEMORY_FRACTION; the lab's reference
    servers (diffusion and LLM) cap themselves there with torch's per-process memory fraction
    (lab/refserver/budget.py), the reference LLM server's pool included, and so do the servers
    a kind "test" case launches through lab.e2e. sglang and vLLM get their static memory
    fraction (--mem-fraction-static, --gpu-memory-utilization) set to the share of the card.
    Any other process has no cap the lab can set: its share rests on its learned estimate, and
    a failure while shared is re-run alone (lab/host/run.py)."""
    from lab.frameworks.llm_base import LlmServer

    card_gib = gpu.memory_total_mib / 1024
    fraction = min(0.99, share_gib / card_gib) if card_gib > 0 else 0.99
    env = {GPU_SHARE_ENV: f"{share_gib:g}", GPU_FRACTION_ENV: f"{fraction:.4f}"}
    args: dict[str, list[str]] = {}
    for fw in frameworks:
        f = get_framework(fw)
        if isinstance(f, LlmServer) and f.device_memory_flag is None:  # not the reference one
            args[fw] = [f.memory_flag, f"{math.floor(fraction * 100) / 100:g}"]
    return env, args


def attempt_bound_s(spec: AttemptSpec) -> float:
    """The longest an attempt may take before the host stops it: every phase at its limit."""
    per_fw = spec.startup_timeout_s + (spec.warmup_requests + spec.measurement_repeats) * (
        spec.request_timeout_s
    )
    if spec.case.target_mde_pct is not None:  # measuring goes on up to its budget, then one more
        per_fw += (spec.case.measure_budget_s or DEFAULT_MEASURE_BUDGET_S) + spec.request_timeout_s
    return per_fw * max(1, len(spec.frameworks)) + 60.0


def sandbox_env(
    case: Case, infos: list[GpuInfo], gpus: list[int], pass_env: list[str]
) -> dict[str, str]:
    """What the sandbox's `lab case` gets: the GPUs, and the secrets the server needs.

    Secrets travel only in the sandbox's environment, never in a file the lab writes."""
    env: dict[str, str] = {"CUDA_VISIBLE_DEVICES": visible_devices(infos, gpus)}
    wanted = {
        name
        for fw in case.frameworks.values()
        for v in fw.extra_env.values()
        for name in ENV_REF.findall(v)
    }
    for k, v in os.environ.items():
        if k in wanted or is_secret_name(k) or any(fnmatch.fnmatchcase(k, p) for p in pass_env):
            env[k] = v
    return env
