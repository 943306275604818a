"""`--dry-run`'s listing: for each case and framework, the server command line and the sandbox
settings exactly as the sandbox will run them, without starting anything."""

from __future__ import annotations

import shlex
import sys

from lab.contract import AttemptSpec
from lab.host.plan import CasePlan, RunContext, attempt_request
from lab.host.runtimes.base import Runtime

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


def print_dry_run(ctx: RunContext, plans: list[CasePlan], runtime: Runtime) -> int:
    from lab.host.ladder import plan_ladder

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
        for n in p.notes:
            print(f"   note: {n}")
    return 0
