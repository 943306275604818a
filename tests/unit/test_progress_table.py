"""The live table as rich draws it in an 80-column terminal."""

from __future__ import annotations

import io

from rich.console import Console

from lab.contract import AttemptResult, Outcome
from lab.host.progress import Progress
from lab.results.model import CaseResult

OOM = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
    "capacity of 79.19 GiB of which 1.06 GiB is free. Including non-PyTorch memory, this "
    "process has 78.12 GiB memory in use."
)


def _draw(progress: Progress) -> list[str]:
    console = Console(file=io.StringIO(), width=80)
    console.print(progress._table())
    return console.file.getvalue().splitlines()


def _reason_lines(lines: list[str], column: int) -> list[str]:
    return [line[column:].strip() for line in lines if line[column:].strip()]


def test_skipped_row_shows_its_reason_and_no_negative_time():
    progress = Progress(live=False)
    progress.case_done(
        CaseResult(
            case_id="gpu_only",
            frameworks=["sglang"],
            outcome=Outcome.skipped,
            reason="needs 2 GPUs, this host has none",
        )
    )
    progress.attempt_started("ref_t2i_tiny", 1, "as-configured", [])
    text = "\n".join(_draw(progress))
    assert "-0s" not in text
    row = next(line for line in text.splitlines() if line.startswith("gpu_only"))
    assert "skipped" in row and "needs 2 GPUs" in row


def test_oom_reason_wraps_at_words_within_80_columns():
    progress = Progress(live=False)
    progress.attempt_started("ref_t2i_tiny", 1, "as-configured", [])
    attempt = AttemptResult(
        run_id="r",
        case_id="ref_t2i_tiny",
        attempt=1,
        rung="as-configured",
        outcome=Outcome.oom,
        reason=OOM,
        started_at=0.0,
        finished_at=1.0,
    )
    progress.case_done(
        CaseResult(
            case_id="ref_t2i_tiny",
            frameworks=["reference"],
            outcome=Outcome.oom,
            reason=OOM,
            attempts=[attempt],
        )
    )
    lines = _draw(progress)
    assert all(len(line) <= 80 for line in lines)
    header = next(line for line in lines if "reason" in line)
    first = next(i for i, line in enumerate(lines) if line.startswith("ref_t2i_tiny"))
    shown = _reason_lines(lines[first:], header.index("reason"))
    # Every line break falls between words: joined with spaces, the lines are the reason's start.
    joined = " ".join(shown)
    assert joined.startswith("torch.OutOfMemoryError: CUDA out of memory.")
    assert joined.endswith("…")
    assert OOM.startswith(joined.removesuffix("…"))
