"""Where the host process's memory goes over a long suite: the Python heap (tracemalloc) and the
RSS, sampled as cases finish, with `lab nightly` run in this process. Tells a leak (the heap
grows with every case) from the C allocator keeping freed pages (only the RSS grows).

Run: .venv/bin/python benchmarks/host_heap.py [CASES]   (default 24; netns runtime, needs root)"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from load_30 import finished_cases  # noqa: E402
from nightly_helpers import ref_case, write_suite  # noqa: E402

from lab.cli import main as lab_main  # noqa: E402


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 24
    tracemalloc.start()
    with tempfile.TemporaryDirectory(dir=ROOT / "build") as d:
        runs = Path(d) / "runs"
        suite = write_suite(Path(d), [ref_case(f"c{i:02d}") for i in range(n)], cpu_concurrency=2)
        by_done: dict[int, tuple[float, float]] = {}  # cases finished -> (heap MiB, RSS MiB)
        running = True

        def sample() -> None:
            me = psutil.Process()
            while running:
                heap = tracemalloc.get_traced_memory()[0] / 2**20
                by_done[finished_cases(runs)] = (
                    round(heap, 2),
                    round(me.memory_info().rss / 2**20, 1),
                )
                time.sleep(0.2)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        argv = ["nightly", "--config", str(suite), "--runtime", "netns", "--gpus", "none"]
        code = lab_main([*argv, "--out", str(runs)])
        running = False
        t.join()
    done = sorted(k for k in by_done if 0 < k < n)  # k = n includes the reports (matplotlib)
    out = {
        "cases": n,
        "exit_code": code,
        "heap_mib_after_first_case": by_done[done[0]][0],
        "heap_mib_after_case_before_last": by_done[done[-1]][0],
        "rss_mib_after_first_case": by_done[done[0]][1],
        "rss_mib_after_case_before_last": by_done[done[-1]][1],
        "rss_mib_with_reports": by_done.get(n, (None, None))[1],
        "by_cases_finished": {k: by_done[k] for k in sorted(by_done)},
    }
    print(json.dumps(out, indent=2))
    (ROOT / "benchmarks" / "results" / f"host_heap_{n}.json").write_text(
        json.dumps(out, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
