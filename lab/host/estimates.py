"""Learned estimates for GPU sharing: per case and GPU class, from the comparable history (the
recorded runs on the same GPU model), how much VRAM a case needs and how long it takes.

VRAM: the high quantile of the case's recent peaks (NVML, per GPU) times a margin. A case with
no peak on record for this GPU class, or whose recent peaks vary widely, gets no estimate and so
runs alone. A co-located failure in the window raises the estimate above the share it failed at.
Time: the median of recent attempt durations (pool grant → finish), else the config's
est_time_s. Who may share at all is `exclusive_reason`: kind "test" cases and cases marked
`shareable`, never a measured comparison, never a multi-GPU case or an emulated card size."""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab.config import Case
from lab.contract import AttemptResult, Outcome
from lab.errors import LabError
from lab.host.scheduler import Placement, SimJob, simulate
from lab.results.history import HISTORY_FILE, history_rows
from lab.results.model import CaseResult
from lab.results.store import load_results
from lab.results.timeline import COMPARISON_NEVER_SHARES

LAST_RUNS = 10  # comparable runs looked at
LAST_PEAKS = 5  # peaks of passed attempts an estimate is made from
QUANTILE = 0.9
VRAM_MARGIN = 1.2  # times the quantile
MIN_MARGIN_GIB = 1.0  # at least this much above it (a CUDA context, allocator slack)
WIDE_SPREAD = 0.25  # peaks whose range exceeds this share of their median: no estimate
OOM_RAISE = 1.5  # a co-located failure at share S: the next estimate is at least S x this
CARD_MARGIN_GIB = 2.0  # of each card, never handed out as shares


@dataclass
class Estimate:
    case_id: str
    gpu_class: str | None
    vram_gib: float | None  # None: runs on whole GPUs
    time_s: float
    vram_source: str  # where the VRAM figure (or its absence) came from
    time_source: str
    exclusive_reason: str | None = None  # why it does not share (None: it may)
    peaks_gib: list[float] = field(default_factory=list)

    @property
    def share_gib(self) -> float | None:
        """What the pool places it by: its VRAM estimate when it may share, else None."""
        return self.vram_gib if self.exclusive_reason is None else None

    def describe(self) -> str:
        vram = f"{self.vram_gib:.1f} GiB" if self.vram_gib is not None else "-"
        how = (
            f"shares a GPU by {vram}"
            if self.exclusive_reason is None
            else f"exclusive: {self.exclusive_reason}"
        )
        return (
            f"{how}; VRAM {vram} ({self.vram_source}); "
            f"time {self.time_s:.0f} s ({self.time_source})"
        )


def exclusive_reason(case: Case, vram_override: float | None = None) -> str | None:
    """Why the case never shares a GPU, whatever its history; None when it may."""
    if case.exclusive:
        return "exclusive: true in the suite"
    if case.kind != "test" and not case.shareable:
        return COMPARISON_NEVER_SHARES
    if case.num_gpus != 1:
        return "a multi-GPU case keeps whole GPUs" if case.num_gpus else "runs on the CPU"
    if (vram_override if vram_override is not None else case.vram_gib) is not None:
        return "VRAM emulation (vram_gib) holds the rest of the card"
    return None


@dataclass
class _Seen:
    peaks: list[float] = field(default_factory=list)  # GiB per GPU, passed attempts
    durations: list[float] = field(default_factory=list)
    failed_shares: list[tuple[str, float]] = field(default_factory=list)  # (run, share GiB)


def attempt_peak_gib(a: AttemptResult) -> float | None:
    """The attempt's largest framework peak per GPU, in GiB (NVML's, from the sandbox)."""
    peaks = [
        f.telemetry.peak_gpu_memory_mib
        for f in a.frameworks
        if f.telemetry.peak_gpu_memory_mib is not None
    ]
    return max(peaks) / max(1, len(a.gpus)) / 1024 if peaks else None


def _attempt_seconds(a: AttemptResult) -> float:
    return max(0.0, a.finished_at - (a.granted_at or a.started_at))


def _collect(case: CaseResult, run_id: str, seen: _Seen) -> None:
    for a in case.attempts:
        if a.outcome is Outcome.passed:
            peak = attempt_peak_gib(a)
            if peak is not None:
                seen.peaks.append(peak)
            seen.durations.append(_attempt_seconds(a))
        elif a.colocation_note and a.share_gib is not None:
            seen.failed_shares.append((run_id, a.share_gib))


def _history(root: Path, gpu_class: str | None, case_ids: list[str]) -> dict[str, _Seen]:
    """What the comparable runs under `root` (newest first, up to LAST_RUNS) say per case."""
    seen: dict[str, _Seen] = {c: _Seen() for c in case_ids}
    db = root / HISTORY_FILE
    try:
        # Left in place when corrupt: the run's record step moves it aside and reports it.
        rows = history_rows(db, case_ids, repair=False)
    except LabError:
        return seen  # an unreadable history: nothing learned, every case runs alone
    runs: list[str] = []
    for r in sorted(rows, key=lambda r: r.timestamp, reverse=True):
        if r.gpu_model == gpu_class and r.run_id not in runs:
            runs.append(r.run_id)
    for run_id in runs[:LAST_RUNS]:
        results = None
        with contextlib.suppress(OSError, ValueError, LabError):
            results = load_results(root / run_id)
        if results is not None:
            for c in results.cases:
                if c.case_id in seen:
                    _collect(c, run_id, seen[c.case_id])
            continue
        for r in rows:  # results.json gone: history's own peaks (no durations there)
            known = r.run_id == run_id and r.case_id in seen and r.outcome == Outcome.passed
            if known and r.peak_gpu_memory_mib is not None:
                seen[r.case_id].peaks.append(r.peak_gpu_memory_mib / 1024)
    return seen


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (statistics.quantiles needs two values)."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def estimate(
    case: Case, gpu_class: str | None, seen: _Seen, vram_override: float | None
) -> Estimate:
    durations = seen.durations[:LAST_PEAKS]  # newest runs first
    if durations:
        time_s, time_src = statistics.median(durations), f"median of {len(durations)} attempts"
    else:
        time_s, time_src = case.est_time_s, "est_time_s in the suite"
    peaks = seen.peaks[:LAST_PEAKS]  # newest runs first
    est = Estimate(case.id, gpu_class, None, time_s, "", time_src, peaks_gib=peaks)
    where = f"on {gpu_class}" if gpu_class else "without a GPU"
    if not peaks:
        est.vram_source = f"no peak VRAM on record {where}"
        est.exclusive_reason = exclusive_reason(case, vram_override) or est.vram_source
        return est
    high = quantile(peaks, QUANTILE)
    est.vram_gib = round(max(high * VRAM_MARGIN, high + MIN_MARGIN_GIB), 2)
    est.vram_source = (
        f"p{QUANTILE * 100:.0f} of {len(peaks)} peaks {where} ({min(peaks):.1f}–{max(peaks):.1f}"
        f" GiB) x {VRAM_MARGIN:g}"
    )
    failed = [s for _run, s in seen.failed_shares]
    if failed and max(failed) * OOM_RAISE > est.vram_gib:
        est.vram_gib = round(max(failed) * OOM_RAISE, 2)
        est.vram_source += (
            f", raised to {est.vram_gib:g} GiB after a co-location failure at {max(failed):g} GiB"
        )
    est.exclusive_reason = exclusive_reason(case, vram_override)
    spread = max(peaks) - min(peaks)
    if est.exclusive_reason is None and spread > WIDE_SPREAD * statistics.median(peaks):
        est.exclusive_reason = (
            f"its recent peaks vary widely ({min(peaks):.1f}–{max(peaks):.1f} GiB)"
        )
    return est


def learn(
    cases: Sequence[Case],
    gpu_class: str | None,
    root: Path | None,
    card_gib: float | None = None,
    vram_override: float | None = None,
) -> dict[str, Estimate]:
    """Each case's estimate from the history under `root` (the run store, --out)."""
    ids = [c.id for c in cases]
    seen = _history(root, gpu_class, ids) if root is not None else {c: _Seen() for c in ids}
    out = {c.id: estimate(c, gpu_class, seen[c.id], vram_override) for c in cases}
    shareable = shareable_capacity_gib(card_gib)
    for est in out.values():
        if est.exclusive_reason is None and est.vram_gib is not None and est.vram_gib > shareable:
            est.exclusive_reason = f"its estimate fills the card ({shareable:.1f} GiB shareable)"
    return out


def shareable_capacity_gib(card_gib: float | None) -> float:
    """What shares of one card may add up to: the card less CARD_MARGIN_GIB."""
    return max(0.0, (card_gib or 0.0) - CARD_MARGIN_GIB)


def planned_placements(
    jobs: Sequence[tuple[str, int, Estimate | None]], num_gpus: int, card_gib: float | None
) -> dict[str, Placement]:
    """Where the pool would place each (case id, GPUs, estimate) if every case took its
    estimated time: the same grant_order the live pool uses, in its simulation."""
    sim = simulate(
        [
            SimJob(cid, n, est.time_s if est else 1.0, est.share_gib if est and n == 1 else None)
            for cid, n, est in jobs
        ],
        num_gpus,
        capacity_gib=shareable_capacity_gib(card_gib),
    )
    return {p.key: p for p in sim.placements}


def describe_placement(p: Placement) -> str:
    where = f"GPU {','.join(map(str, p.gpus))}" if p.gpus else "a CPU slot"
    beside = f" beside {', '.join(p.neighbours)}" if p.neighbours else " alone"
    return f"{where} at {p.start_s:.0f}–{p.end_s:.0f} s{beside}"
