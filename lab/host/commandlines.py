"""Every server command line a suite can start: per case, per ladder rung, per framework.

What `--dry-run` prints for the first rung, widened to the whole ladder (as on a machine with
every GPU the case asks for), for tests that pin them and for `lab compat`. Built by the
nightly's own planning (lab/host/plan.py), so a pinned line is the line an attempt starts."""

from __future__ import annotations

import math
from pathlib import Path

from lab.config import LoadedSuite
from lab.frameworks import server_command
from lab.host.gpus import GpuInfo
from lab.host.plan import RunContext, attempt_request, plan_cases

CommandLines = dict[str, dict[str, dict[str, list[str]]]]  # case → rung → framework → argv


def suite_command_lines(
    loaded: LoadedSuite, host: str = "127.0.0.1", port: int = 30000
) -> CommandLines:
    out: CommandLines = {}
    for case in loaded.suite.cases:
        # rungs that need more GPUs than the case count as available here, as on a big machine
        gpus = [GpuInfo(i, "any", "", math.inf) for i in range(max(case.num_gpus, 1) * 8)]
        (plan,) = plan_cases(loaded, [case], gpus, None)
        if not plan.frameworks or plan.skip_reason:
            continue
        ctx = RunContext(loaded, gpus, Path("/command-lines"), "command-lines")
        out[case.id] = {}
        for rung in plan.ladder.rungs:
            spec, _ = attempt_request(ctx, plan, rung, 1, list(range(rung.num_gpus)))
            spec = spec.model_copy(update={"host": host, "port": port})
            out[case.id][rung.name] = {fw: server_command(spec, fw) for fw in plan.frameworks}
    return out
