"""`lab fit CASE`: which emulated card size a case needs.

With sizes (`--vram-gib 24,32,48,80`) it runs the case under each, each with the whole ladder, and
tells size -> first rung that passes (or none) -> peak memory -> latency. Without, it bisects to
`--step` (1 GiB on a GPU) between `--lo` and `--hi` (the card's size) for the configured rung
alone: the smallest size it passes at. On the CPU the sizes are the reference server's device
budget (`--device-memory-gib`, lab/host/vram.py), so the step defaults to 0.01 GiB there.
Every probe is a case of one run directory (`runs/<id>/`, results.json, reports, fit.json); a
fit run is not recorded in the history: it is no night."""

from __future__ import annotations

import math
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict

from lab import __version__
from lab.config import Case, LoadedSuite
from lab.contract import Outcome
from lab.errors import LabError
from lab.files import write_json_atomic
from lab.host.gpus import GpuInfo
from lab.host.plan import CasePlan, plan_cases
from lab.host.progress import Progress
from lab.host.run import RunExecutor, RunOptions, settle_run_commit
from lab.host.runtimes.base import Runtime
from lab.results.model import CaseResult, RunResults
from lab.results.reports import write_reports
from lab.results.store import RunDir, new_run_id, run_commit_fields, write_results
from lab.results.triage import peak_per_gpu_gib, sign_failures

CPU_STEP_GIB = 0.01
CPU_HI_GIB = 1.0


class ProbeRow(TypedDict):
    """One probe as fit.json lists it and the table shows it."""

    vram_gib: float
    case_id: str
    outcome: str
    first_passing_rung: str | None
    peak_gib_per_gpu: float | None
    latency_s: float | None
    attempts: int


@dataclass
class Probe:
    vram_gib: float
    result: CaseResult

    @property
    def passed(self) -> bool:
        return self.result.outcome in (Outcome.passed, Outcome.degraded)

    @property
    def rung(self) -> str | None:
        return self.result.final.rung if self.passed and self.result.final else None

    def row(self) -> ProbeRow:
        frs = self.result.framework_results()
        lat = next((fr.latency_s for fr in frs if fr.latency_s is not None), None)
        return {
            "vram_gib": self.vram_gib,
            "case_id": self.result.case_id,
            "outcome": str(self.result.outcome),
            "first_passing_rung": self.rung,
            "peak_gib_per_gpu": peak_per_gpu_gib(self.result),
            "latency_s": lat,
            "attempts": len(self.result.attempts),
        }


def parse_sizes(text: str) -> list[float]:
    try:
        sizes = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LabError(f"--vram-gib {text!r}: expected sizes in GiB, e.g. 24,32,48,80") from None
    if not sizes or any(s <= 0 or not math.isfinite(s) for s in sizes):
        raise LabError(f"--vram-gib {text!r}: every size must be a number above 0")
    return sorted(set(sizes))


def _probe_id(case: Case, gib: float) -> str:
    return f"{case.id}__fit_{gib:g}gib".replace(".", "p")


class Fitter:
    """Runs probes of one case, each as one case of a RunExecutor, all into one run directory."""

    def __init__(
        self, loaded: LoadedSuite, case: Case, runtime: Runtime, gpus: list[GpuInfo], root: Path
    ) -> None:
        self.loaded, self.case, self.runtime, self.gpus = loaded, case, runtime, gpus
        self.run_dir = RunDir.create(root, new_run_id())
        self.probes: list[Probe] = []

    def run(self, sizes: Sequence[float], whole_ladder: bool) -> list[Probe]:
        copies = [
            self.case.model_copy(update={"id": _probe_id(self.case, s), "vram_gib": s})
            for s in sizes
        ]
        plans: list[CasePlan] = plan_cases(self.loaded, copies, self.gpus, None)
        for p in plans:
            if p.skip_reason:
                raise LabError(f"lab fit {self.case.id}: {p.skip_reason}")
            if not whole_ladder:
                p.ladder.rungs = p.ladder.rungs[:1]  # the configured rung alone
        executor = RunExecutor(
            self.loaded,
            plans,
            self.runtime,
            self.gpus,
            self.run_dir.path,
            self.run_dir.run_id,
            RunOptions(out_root=self.run_dir.root),
            Progress(live=False),
        )
        results = executor.run()
        by_id = {c.case_id: c for c in results.cases}
        new = [Probe(s, by_id[_probe_id(self.case, s)]) for s in sizes]
        self.probes += new
        return new

    def finish(self, boundary: float | None, mode: str) -> RunResults:
        results = RunResults(
            run_id=self.run_dir.run_id,
            timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
            host=socket.gethostname(),
            **run_commit_fields(),
            lab_version=__version__,
            config_path=str(self.loaded.path),
            config_sha256=self.loaded.sha256,
            measurement_repeats=self.loaded.suite.measurement_repeats,
            warmup_requests=self.loaded.suite.warmup_requests,
            gpu_model=self.gpus[0].name if self.gpus else None,
            runtime=self.runtime.name,
            cases=sorted((p.result for p in self.probes), key=lambda c: c.vram_gib or 0),
        )
        settle_run_commit(results, self.runtime)
        sign_failures(results)
        write_reports(self.run_dir, results, None)
        write_results(self.run_dir, results)
        write_json_atomic(
            self.run_dir.path / "fit.json",
            {
                "case_id": self.case.id,
                "mode": mode,
                "device": self.gpus[0].name if self.gpus else "cpu (reference device budget)",
                "boundary_gib": boundary,
                "probes": [p.row() for p in sorted(self.probes, key=lambda p: p.vram_gib)],
            },
        )
        return results


def bisect(passes: Callable[[float], bool], lo: float, hi: float, step: float) -> float | None:
    """The smallest size on the grid lo, lo+step, … hi at which `passes` (monotone) holds, or
    None when even hi fails. Probes hi first, then lo, then halves."""
    n = max(0, math.ceil(round((hi - lo) / step, 9)))

    def size(i: int) -> float:
        return round(min(hi, lo + i * step), 6)

    if not passes(size(n)):
        return None
    if passes(size(0)):
        return size(0)
    bad, good = 0, n
    while good - bad > 1:
        mid = (bad + good) // 2
        if passes(size(mid)):
            good = mid
        else:
            bad = mid
    return size(good)


def format_table(probes: Sequence[Probe]) -> str:
    lines = [f"{'size':>10}  {'first passing rung':22} {'peak/GPU':>10}  {'latency':>9}  outcome"]
    for p in sorted(probes, key=lambda p: p.vram_gib):
        r = p.row()
        peak = "-" if r["peak_gib_per_gpu"] is None else f"{r['peak_gib_per_gpu']:.2f} GiB"
        lat = "-" if r["latency_s"] is None else f"{r['latency_s']:.3f} s"
        lines.append(
            f"{p.vram_gib:>6g} GiB  {p.rung or 'none':22} {peak:>10}  {lat:>9}  {r['outcome']}"
        )
    return "\n".join(lines)


def run_fit(
    loaded: LoadedSuite,
    case: Case,
    runtime: Runtime,
    gpus: list[GpuInfo],
    root: Path,
    sizes: list[float] | None,
    lo: float | None,
    hi: float | None,
    step: float | None,
) -> int:
    if case.kind == "test":
        raise LabError(f"lab fit {case.id}: a kind 'test' case has no ladder to fit")
    fitter = Fitter(loaded, case, runtime, gpus, root)
    print(f"lab fit: {case.id} → {fitter.run_dir.path}", file=sys.stderr)
    if sizes:
        fitter.run(sizes, whole_ladder=True)
        first = next((p.vram_gib for p in fitter.probes if p.passed), None)
        fitter.finish(first, "sizes")
        print(format_table(fitter.probes))
        return 0
    card = min(g.memory_total_mib for g in gpus) / 1024 if gpus else None
    step = step or (1.0 if gpus else CPU_STEP_GIB)
    hi = hi or (math.floor(card) if card else CPU_HI_GIB)
    lo = lo or step
    if not 0 < lo < hi:
        raise LabError(f"lab fit {case.id}: need 0 < --lo ({lo:g}) < --hi ({hi:g})")
    boundary = bisect(lambda s: fitter.run([s], whole_ladder=False)[0].passed, lo, hi, step)
    fitter.finish(boundary, "bisect")
    print(format_table(fitter.probes))
    rung = fitter.probes[0].result.attempts[0].rung if fitter.probes[0].result.attempts else "-"
    if boundary is None:
        print(f"{case.id} does not pass on rung {rung} even at {hi:g} GiB")
        return 1
    print(f"{case.id} needs {boundary:g} GiB (to {step:g} GiB) on rung {rung}")
    return 0
