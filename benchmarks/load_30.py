"""Load: a suite of 30 CPU reference cases with bounded concurrency. Checks that every result is
present and nothing is left running, and follows the RSS of the host's `lab` process as cases
finish: flat means the RSS after the last case is within a few MiB of the RSS after the first few.

Run: .venv/bin/python benchmarks/load_30.py [RUNTIME] [CASES]   (default: netns 30)"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from nightly_helpers import (  # noqa: E402  (the tests' own way to build and run a suite)
    processes_mentioning,
    ref_case,
    start_nightly,
    write_suite,
)


def finished_cases(runs: Path) -> int:
    try:  # the one run under `runs` (`latest` appears only when it ends)
        res = json.loads(next(runs.glob("*/results.json")).read_text())
    except (OSError, ValueError, StopIteration):
        return 0
    return sum(c["outcome"] != "interrupted" for c in res["cases"])


def main() -> None:
    runtime = sys.argv[1] if len(sys.argv) > 1 else "netns"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    cases = [ref_case(f"load_{i:02d}") for i in range(n)]
    with tempfile.TemporaryDirectory(dir=ROOT / "build") as d:
        Path(d).chmod(0o755)  # the docker sandbox's user reaches the run folder
        runs = Path(d) / "runs"
        t0 = time.monotonic()
        proc = start_nightly(write_suite(Path(d), cases, cpu_concurrency=2), runs, runtime)
        samples: list[tuple[int, float]] = []  # (cases finished, RSS MiB)

        def sample() -> None:
            p = psutil.Process(proc.pid)
            while proc.poll() is None:
                try:
                    samples.append((finished_cases(runs), p.memory_info().rss / 2**20))
                except psutil.Error:
                    break
                time.sleep(0.2)

        t = threading.Thread(target=sample)
        t.start()
        proc.communicate()
        t.join()
        wall = time.monotonic() - t0
        res = json.loads((runs / "latest" / "results.json").read_text())
        outcomes = [c["outcome"] for c in res["cases"]]
        time.sleep(0.5)
        left = processes_mentioning(Path(d))
    # RSS once k cases had finished (the largest sample at that count), for k = 1…n
    by_done: dict[int, float] = {}
    for done, rss in samples:
        by_done[done] = max(rss, by_done.get(done, 0.0))
    done_counts = sorted(k for k in by_done if k > 0)
    early = [by_done[k] for k in done_counts[:5]]
    late = [by_done[k] for k in done_counts[-5:]]
    out = {
        "runtime": runtime,
        "cases": n,
        "exit_code": proc.returncode,
        "wall_s": round(wall, 1),
        "passed": outcomes.count("passed"),
        "results": len(outcomes),
        "leftover_processes": len(left),
        "host_rss_peak_mib": round(max(r for _, r in samples), 1),
        "host_rss_after_first_5_cases_median_mib": round(statistics.median(early), 1),
        "host_rss_after_last_5_cases_median_mib": round(statistics.median(late), 1),
        "host_rss_by_cases_finished_mib": {k: round(by_done[k], 1) for k in done_counts},
    }
    print(json.dumps(out, indent=2))
    (ROOT / "benchmarks" / "results" / f"load_{n}_{runtime}.json").write_text(
        json.dumps(out, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
