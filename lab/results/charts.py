"""The report's charts as PNG bytes (matplotlib's Agg canvas, no pyplot state, no display).

Each function returns None when there is nothing to draw, so the report can say so instead."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from lab.results.changes import series_changes
from lab.results.history import HistoryRow
from lab.results.model import RunResults
from lab.results.regression import comparable_series
from lab.results.report_common import BUCKETS, OUTCOME_COLORS, bucket

MAX_CASES = 24  # small multiples beyond this are unreadable; the tables still list every case
_SEVERITY = {"passed": 0, "skipped": 1, "degraded": 2, "interrupted": 3, "failed": 4}
_NO_DATA = "#eeeeee"


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _runs(rows: Sequence[HistoryRow]) -> list[tuple[str, str]]:
    """(run_id, timestamp) of every run in the rows, oldest first."""
    seen = {r.run_id: r.timestamp for r in rows}
    return sorted(seen.items(), key=lambda kv: (kv[1], kv[0]))


def _short_date(ts: str) -> str:
    return ts[5:10] + " " + ts[11:16] if len(ts) >= 16 else ts


def outcome_grid(rows: Sequence[HistoryRow], case_ids: Sequence[str]) -> bytes | None:
    """Runs × cases, coloured by the case's worst framework outcome of that night."""
    runs = _runs(rows)
    if not runs or not case_ids:
        return None
    col = {run_id: i for i, (run_id, _) in enumerate(runs)}
    line = {c: i for i, c in enumerate(case_ids)}
    grid = [[-1] * len(runs) for _ in case_ids]
    for r in rows:
        if r.case_id in line and r.run_id in col:
            i, j = line[r.case_id], col[r.run_id]
            grid[i][j] = max(grid[i][j], _SEVERITY[bucket(r.outcome)])
    colors = {-1: _NO_DATA} | {_SEVERITY[b]: OUTCOME_COLORS[b] for b in BUCKETS}
    fig = Figure(figsize=(max(6.0, 0.45 * len(runs) + 3), max(2.0, 0.35 * len(case_ids) + 1.2)))
    ax = fig.add_subplot()
    # Colours as RGB pixels: exact, no colormap normalisation to get wrong.
    ax.imshow(
        [[to_rgb(colors[v]) for v in line_] for line_ in grid],
        aspect="auto",
        interpolation="nearest",
    )
    ax.set_yticks(range(len(case_ids)), labels=list(case_ids), fontsize=8)
    ax.set_xticks(
        range(len(runs)),
        labels=[_short_date(ts) for _, ts in runs],
        fontsize=7,
        rotation=60,
        ha="right",
    )
    ax.set_xticks([x - 0.5 for x in range(1, len(runs))], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, len(case_ids))], minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    ax.set_title("Outcome per night")
    handles = [Patch(color=OUTCOME_COLORS[b], label=b) for b in BUCKETS]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _png(fig)


def latency_history(
    rows: Sequence[HistoryRow], case_ids: Sequence[str], current_run: str
) -> bytes | None:
    """One panel per case: median latency per framework over the recorded runs."""
    runs = _runs(rows)
    col = {run_id: i for i, (run_id, _) in enumerate(runs)}
    cases = [c for c in case_ids if any(r.case_id == c and r.measured for r in rows)][:MAX_CASES]
    if not cases:
        return None
    ncols = min(3, len(cases))
    nrows = math.ceil(len(cases) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 2.8 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, case_id in enumerate(cases):
        ax = axes[k // ncols][k % ncols]
        mine = [r for r in rows if r.case_id == case_id and r.measured]
        for fw in dict.fromkeys(r.framework for r in mine):
            pts = sorted(
                (col[r.run_id], r.latency_s, r.regression)
                for r in mine
                if r.framework == fw and r.latency_s is not None  # always: the rows are measured
            )
            # NaN for nights without a measurement: the line breaks there instead of bridging.
            ys = [math.nan] * len(runs)
            for x, y, _ in pts:
                ys[x] = y
            ax.plot(range(len(runs)), ys, marker="o", markersize=4, label=fw or "-")
            bad = [(x, y) for x, y, reg in pts if reg == "regressed"]
            if bad:
                ax.scatter(
                    *zip(*bad, strict=True),
                    s=90,
                    facecolors="none",
                    edgecolors="#c62828",
                    linewidths=2,
                    zorder=3,
                )
            # the confirmed change points of the series `lab history --changes` prints
            for change in series_changes(comparable_series(mine, fw)):
                x = col[change.first_run_id]
                ax.axvline(x, color="#ef6c00", linestyle=":", linewidth=1.4)
                ax.annotate(
                    f"{change.change_pct:+.0f} %",
                    (x, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(2, -10),
                    textcoords="offset points",
                    fontsize=7,
                    color="#ef6c00",
                )
        if current_run in col:
            ax.axvline(col[current_run], color="#888888", linestyle="--", linewidth=0.8)
        ax.set_title(case_id, fontsize=9)
        ax.set_ylabel("median latency (s)", fontsize=8)
        ax.set_xlim(-0.5, max(len(runs) - 0.5, 0.5))
        ax.set_xticks(
            range(len(runs)),
            labels=[_short_date(ts) for _, ts in runs],  # the time too: two runs a day
            fontsize=6,
            rotation=60,
        )
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylim(0, 1.15 * max(r.latency_s or 0.0 for r in mine) or 1.0)  # room for rings
        ax.legend(fontsize=7, loc="lower left")
    for k in range(len(cases), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    fig.suptitle(
        "Latency per case over the history (red ring: regressed; orange dotted: change point)",
        fontsize=11,
    )
    return _png(fig)


def _bars(
    labels: list[str],
    values: list[float],
    title: str,
    xlabel: str,
    ref: float | None = None,
    colors: list[str] | None = None,
) -> bytes:
    fig = Figure(figsize=(8.0, max(1.8, 0.32 * len(labels) + 1.0)), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(range(len(labels)), values, color=colors or "#1f77b4")
    ax.set_yticks(range(len(labels)), labels=labels, fontsize=8)
    ax.invert_yaxis()
    for i, v in enumerate(values):
        ax.annotate(
            f"{v:.2f}", (v, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7
        )
    if ref is not None:
        ax.axvline(ref, color="#555555", linestyle="--", linewidth=1)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.margins(x=0.12)
    return _png(fig)


def peak_memory(results: RunResults) -> bytes | None:
    """This run's peak GPU memory of each server, against its emulated VRAM when set."""
    labels, values, colors = [], [], []
    for case in results.cases[: MAX_CASES * 2]:
        for fr in case.framework_results():
            mib = fr.telemetry.peak_gpu_memory_mib
            if mib is None:
                continue
            labels.append(f"{case.case_id} / {fr.framework}")
            values.append(mib / 1024)
            over = case.vram_gib is not None and mib / 1024 > case.vram_gib
            colors.append("#c62828" if over else "#1f77b4")
    if not labels:
        return None
    return _bars(labels, values, "Peak GPU memory (this run)", "GiB", colors=colors)


def speedups(results: RunResults) -> bytes | None:
    """Speed of each compared framework relative to the case's baseline (>1: faster)."""
    labels, values = [], []
    for case in results.cases:
        for fr in case.framework_results():
            if fr.speedup_vs_baseline is not None:
                labels.append(f"{case.case_id} / {fr.framework}")
                values.append(fr.speedup_vs_baseline)
    if not labels:
        return None
    colors = ["#2e7d32" if v >= 1.0 else "#ef6c00" for v in values]
    return _bars(
        labels, values, "Speedup vs the case's baseline framework", "×", ref=1.0, colors=colors
    )
