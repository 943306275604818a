"""`--dry-run`'s listing: for each case and framework, the server command line and the sandbox
settings exactly as the sandbox will run them, without starting anything."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from lab.contract import AttemptSpec
from lab.host.estimates import Estimate, describe_placement, learn, planned_placements
from lab.host.plan import CasePlan, RunContext, attempt_request
from lab.host.runtimes.base import Runtime
from lab.host.scheduler import Placement

REFERENCE_IMAGE_PYTHON = "/opt/lab/bin/python3"  # the venv docker/reference.Dockerfile makes


def sandbox_python(runtime: Runtime, image: str) -> str:
    """The interpreter `lab case` (and so a reference server) runs under in the sandbox."""
    if runtime.name != "docker" or image == "host":
        return sys.executable  # the host's own: netns, local, slurm; docker's `host` mounts it
    if image.startswith("nightly-lab/reference:"):
        return REFERENCE_IMAGE_PYTHON
    return "python3"  # another image (sglang's): the lab is installed into its own python3


def sandbox_command(spec: AttemptSpec, framework: str, python: str) -> str:
    """The server command line as the sandbox runs it: server_command fills in this process's
    interpreter, the sandbox has its own."""
    from lab.frameworks import server_command

    argv = server_command(spec, framework)
    return shlex.join(python if a == sys.executable else a for a in argv)


def sharing_plan(
    ctx: RunContext, plans: list[CasePlan], runtime_name: str, root: Path | None
) -> tuple[dict[str, Estimate], dict[str, Placement]]:
    """Each runnable case's learned estimate (history under `root`) and where the pool would
    place it: what the executor will do, as lab/host/run.py builds it."""
    gpus = ctx.gpus if ctx.lab_places else []
    card = min(g.memory_total_mib for g in gpus) / 1024 if gpus else None
    runnable = [p for p in plans if not p.skip_reason]
    ests = learn([p.case for p in runnable], gpus[0].name if gpus else None, root, card)
    if runtime_name == "local":
        for e in ests.values():
            e.exclusive_reason = e.exclusive_reason or "the local runtime runs one at a time"
    jobs = [(p.case.id, p.ladder.rungs[0].num_gpus, ests[p.case.id]) for p in runnable]
    return ests, planned_placements(jobs, len(gpus), card) if gpus else {}


def print_dry_run(
    ctx: RunContext, plans: list[CasePlan], runtime: Runtime, root: Path | None = None
) -> int:
    from lab.host.ladder import plan_ladder

    ests, placed = sharing_plan(ctx, plans, runtime.name, root)
    for p in plans:
        python = sandbox_python(runtime, p.image)
        print(f"== {p.case.id} ({p.case.num_gpus} GPU(s), image {p.image})")
        rung = p.ladder.rungs[0] if p.ladder.rungs else None
        if p.skip_reason:
            print(f"   skipped: {p.skip_reason}")
            if p.frameworks:
                # what the nightly would start on a machine with the GPUs (indexes invented)
                rung = plan_ladder(ctx.loaded, p.case, p.frameworks, p.case.num_gpus).rungs[0]
                spec, _ = attempt_request(ctx, p, rung, 1, list(range(rung.num_gpus)))
                for fw in p.frameworks:
                    print(f"   {fw} (not started): {sandbox_command(spec, fw, python)}")
            for n in p.notes:
                print(f"   note: {n}")
            continue
        assert rung is not None
        spec, req = attempt_request(ctx, p, rung, 1, [g.index for g in ctx.gpus[: rung.num_gpus]])
        for fw in p.frameworks:
            print(f"   {fw}: {sandbox_command(spec, fw, python)}")
        if p.case.kind == "test":
            print(f"   test: {p.case.command}")
        for k, v in runtime.plan(req).items():
            print(f"   sandbox.{k}: {v}")
        print(f"   ladder: {' → '.join(r.name for r in p.ladder.rungs)}")
        print(f"   gpu sharing: {ests[p.case.id].describe()}")
        if p.case.id in placed:
            print(f"   placed (by the estimates): {describe_placement(placed[p.case.id])}")
        for n in p.notes:
            print(f"   note: {n}")
    return 0
