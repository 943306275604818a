"""`lab list`'s table: columns as wide as their longest value, so long ids and aliases line up."""

from __future__ import annotations

from collections.abc import Sequence

from lab.host.plan import CasePlan

HEADER = ("case", "gpus", "frameworks", "aliases", "here")
RIGHT = {"gpus"}  # numbers align right


def align(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> list[str]:
    """Each row as a line, every column padded to its widest cell (the last one is not)."""
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    lines = []
    for row in (header, *rows):
        cells = [
            (str(v).rjust(w) if name in RIGHT else str(v).ljust(w))
            for name, v, w in zip(header, row, widths, strict=True)
        ]
        cells[-1] = str(row[-1])
        lines.append("  ".join(cells).rstrip())
    return lines


def case_list(plans: Sequence[CasePlan]) -> str:
    rows = [
        (
            p.case.id,
            str(p.case.num_gpus),
            ",".join(p.case.frameworks),
            ",".join(p.case.aliases) or "-",
            "yes" if not p.skip_reason else f"no: {p.skip_reason}",
        )
        for p in plans
    ]
    lines = align(rows)
    out = [lines[0]]
    indent = " " * (lines[0].index("frameworks"))
    for p, line in zip(plans, lines[1:], strict=True):
        out.append(line)
        out += [f"{indent}{note}" for note in p.notes if note.startswith("comfyui:")]
    return "\n".join(out)
