"""Writing a run's reports: summary.md, junit.xml and report.html in the run folder.

`write_reports` comes last in a run (after `regression.detect` and `history.record_run`);
`regenerate` is `lab report RUN_DIR`: the same files again from results.json."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lab.errors import LabError
from lab.files import write_atomic
from lab.results.history import HistoryRow, history_rows, rows_for_run
from lab.results.junit_xml import render_junit
from lab.results.model import RunResults
from lab.results.report_html import render_html
from lab.results.store import RunDir, as_run_dir, load_results
from lab.results.summary_md import render_summary

HISTORY_RUNS = 30  # nights shown in the history charts


@dataclass
class Reports:
    summary: Path
    junit: Path
    html: Path
    notes: list[str] = field(default_factory=list)  # e.g. history unavailable; also in the files


def _history(
    db_path: str | os.PathLike[str] | None, results: RunResults, notes: list[str]
) -> list[HistoryRow]:
    rows: list[HistoryRow] = []
    if db_path is not None:
        try:
            rows = history_rows(db_path, [c.case_id for c in results.cases], HISTORY_RUNS)
        except LabError as e:
            # The reports matter more than the charts: write them, and say why history is missing.
            notes.append(f"History unavailable: {e}")
    # This run as its results say, whether or not it was recorded (regenerate, a failed record).
    rows = [r for r in rows if r.run_id != results.run_id] + rows_for_run(results)
    runs = sorted({(r.timestamp, r.run_id) for r in rows})[-HISTORY_RUNS:]
    keep = {run_id for _, run_id in runs}
    return sorted((r for r in rows if r.run_id in keep), key=lambda r: (r.timestamp, r.run_id))


def write_reports(
    run_dir: RunDir | str | os.PathLike[str],
    results: RunResults,
    db_path: str | os.PathLike[str] | None,
) -> Reports:
    """Write the three reports; append summary.md to $GITHUB_STEP_SUMMARY when it is set."""
    rd = as_run_dir(run_dir)
    notes: list[str] = []
    history = _history(db_path, results, notes)
    summary = render_summary(results, rd.path, notes)
    out = Reports(
        summary=write_atomic(rd.summary, summary),
        junit=write_atomic(rd.junit, render_junit(results, rd.path)),
        html=write_atomic(rd.report, render_html(results, history, rd.path, notes)),
        notes=notes,
    )
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        # Appended, not replaced: earlier steps of the job wrote their own parts of this file.
        with open(step_summary, "a", encoding="utf-8") as f:
            f.write(summary + "\n")
    return out


def regenerate(
    run_dir: RunDir | str | os.PathLike[str], db_path: str | os.PathLike[str] | None
) -> Reports:
    """`lab report RUN_DIR`: rewrite the reports from the run's results.json."""
    rd = as_run_dir(run_dir)
    return write_reports(rd, load_results(rd), db_path)
