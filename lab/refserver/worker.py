"""Rank 1 of cfg-parallel 2: `python -m lab.refserver.worker CONFIG_JSON MASTER_PORT PARENT_PID`.

Started by rank 0 only. Builds the same model, then runs the unconditional branch of every job
rank 0 sends. Any error (an OOM above all) prints its traceback to the shared log and exits 1,
which makes rank 0 exit too.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

from lab.refserver.args import ServerConfig
from lab.refserver.log import flush_all, log, set_rank


def main(argv: list[str]) -> int:
    set_rank(1)
    config = ServerConfig.from_json(json.loads(argv[0]))
    master_port, parent = int(argv[1]), int(argv[2])
    try:
        from lab.refserver.parallel import die_with_parent, init_group, read_job
        from lab.refserver.pipeline import Pipeline, pick_device
        from lab.refserver.runtime import set_threads

        die_with_parent(parent)
        set_threads(config, ranks=2)
        device = pick_device(config, 1)
        group = init_group(1, master_port, device)
        pipeline = Pipeline(config, 1, group)
        group.barrier()
        log(f"rank 1 built on {device} in {pipeline.build_s:.2f} s")
        while True:
            job = read_job(sys.stdin.buffer)
            if job is None:
                return 0  # rank 0 closed the pipe: it is shutting down
            pipeline.run(job)  # type: ignore[arg-type]
    except BaseException:
        traceback.print_exc()
        flush_all()
        os._exit(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
