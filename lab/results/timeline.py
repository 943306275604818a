"""Where and when each attempt ran (GPU sharing, lab/host/scheduler.py): for report.html, GPU
lanes over time with one bar per attempt (attempts that shared a GPU stacked in its lane); for
summary.md, a table of placements. Drawn from the attempts' own record (gpus, granted_at,
finished_at, share_gib, neighbours), so a results.json alone redraws it."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from lab.results.model import RunResults

COMPARISON_NEVER_SHARES = (
    "a measured comparison never shares a GPU (its latency must not be contended)"
)
LANE_H = 18  # px per stacked bar
WIDTH = 900


@dataclass
class Bar:
    case_id: str
    attempt: int
    gpu: int
    start: float
    end: float
    outcome: str
    share_gib: float | None
    neighbours: list[str]
    note: str | None


def bars(results: RunResults) -> list[Bar]:
    out = []
    for c in results.cases:
        for a in c.attempts:
            for g in a.gpus:
                out.append(
                    Bar(c.case_id, a.attempt, g, a.granted_at or a.started_at, a.finished_at,
                        str(a.outcome), a.share_gib, a.neighbours, a.colocation_note)
                )  # fmt: skip
    return sorted(out, key=lambda b: (b.gpu, b.start))


def _rows(lane: list[Bar]) -> list[int]:
    """Each bar's row in its lane: the first row free at its start (overlapping bars stack)."""
    ends: list[float] = []
    rows = []
    for b in lane:
        row = next((i for i, e in enumerate(ends) if e <= b.start), len(ends))
        if row == len(ends):
            ends.append(b.end)
        else:
            ends[row] = b.end
        rows.append(row)
    return rows


def timeline_svg(results: RunResults) -> str:
    """GPU lanes over time; empty without any attempt on a GPU."""
    all_bars = bars(results)
    if not all_bars:
        return ""
    t0 = min(b.start for b in all_bars)
    span = max(max(b.end for b in all_bars) - t0, 1e-6)
    scale = (WIDTH - 80) / span
    parts, y = [], 0
    for gpu in sorted({b.gpu for b in all_bars}):
        lane = [b for b in all_bars if b.gpu == gpu]
        rows = _rows(lane)
        height = (max(rows) + 1) * LANE_H + 6
        parts.append(f'<text x="0" y="{y + 14}" font-size="12">GPU {gpu}</text>')
        for b, row in zip(lane, rows, strict=True):
            x = 70 + (b.start - t0) * scale
            w = max(2.0, (b.end - b.start) * scale)
            color = "#4caf50" if b.outcome == "passed" else "#e53935"
            share = f", share {b.share_gib:g} GiB" if b.share_gib is not None else ", whole GPU"
            tip = f"{b.case_id} a{b.attempt}: {b.outcome}, {b.end - b.start:.1f} s{share}"
            if b.neighbours:
                tip += f", beside {', '.join(b.neighbours)}"
            parts.append(
                f'<g><title>{escape(tip)}</title><rect x="{x:.1f}" y="{y + row * LANE_H}" '
                f'width="{w:.1f}" height="{LANE_H - 2}" fill="{color}" opacity="0.8"/>'
                f'<text x="{x + 2:.1f}" y="{y + row * LANE_H + 12}" font-size="10">'
                f"{escape(b.case_id)}</text></g>"
            )
        y += height
    axis = f'<text x="70" y="{y + 12}" font-size="10">0 s</text>'
    axis += f'<text x="{WIDTH - 60}" y="{y + 12}" font-size="10">{span:.0f} s</text>'
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y + 16}">'
        + "".join(parts)
        + axis
        + "</svg>"
    )


def placement_rows(results: RunResults) -> list[tuple[str, ...]]:
    """(case, attempt, GPU, start s, duration s, share, neighbours, outcome/note) per bar."""
    all_bars = bars(results)
    if not all_bars:
        return []
    t0 = min(b.start for b in all_bars)
    return [
        (
            b.case_id,
            str(b.attempt),
            str(b.gpu),
            f"{b.start - t0:.1f}",
            f"{b.end - b.start:.1f}",
            f"{b.share_gib:g} GiB" if b.share_gib is not None else "whole",
            ", ".join(b.neighbours) or "-",
            b.outcome + (f" ({b.note})" if b.note else ""),
        )
        for b in all_bars
    ]


PLACEMENT_HEADER = ("Case", "Attempt", "GPU", "Start s", "Took s", "Share", "Beside", "Outcome")
