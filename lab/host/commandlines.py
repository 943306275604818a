"""Every server command line a suite can start: per case, per ladder rung, per framework.

What `--dry-run` prints for the first rung, widened to the whole ladder (as on a machine with
every GPU the case asks for), for tests that pin them and for `lab compat`."""

from __future__ import annotations

from lab.config import LoadedSuite
from lab.frameworks import get_framework
from lab.host.ladder import plan_ladder

CommandLines = dict[str, dict[str, dict[str, list[str]]]]  # case → rung → framework → argv


def suite_command_lines(
    loaded: LoadedSuite, host: str = "127.0.0.1", port: int = 30000
) -> CommandLines:
    out: CommandLines = {}
    for case in loaded.suite.cases:
        fws = case.runnable_frameworks if case.kind != "test" else []
        if not fws:
            continue
        # rungs that need more GPUs than the case count as available here, as on a big machine
        ladder = plan_ladder(loaded, case, fws, max(case.num_gpus, 1) * 8)
        out[case.id] = {
            rung.name: {
                fw: get_framework(fw).command(
                    case,
                    case.frameworks[fw],
                    host,
                    port,
                    rung.num_gpus,
                    rung.extra_args.get(fw, []),
                    str(loaded.config_dir),
                )
                for fw in fws
            }
            for rung in ladder.rungs
        }
    return out
