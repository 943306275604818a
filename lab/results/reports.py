"""Writing a run's reports: summary.md, junit.xml and report.html in the run folder.

`record_and_report` is the end of `lab nightly`: results, regressions, history, reports, in that
order.
`regenerate` is `lab report RUN_DIR`: the same reports again from results.json."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab.config import RegressionPolicy
from lab.errors import LabError
from lab.files import write_atomic
from lab.results.history import HistoryRow, history_rows, record_run, rows_for_run
from lab.results.junit_xml import render_junit
from lab.results.model import RunResults
from lab.results.regression import detect
from lab.results.report_html import render_html
from lab.results.store import (
    RunDir,
    as_run_dir,
    load_results,
    write_exports,
    write_results,
)
from lab.results.summary_md import render_summary
from lab.results.triage import read_history, status_changes

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
            note = f"History unavailable: {e}"
            if note not in notes:
                notes.append(note)
    # This run as its results say, whether or not it was recorded (regenerate, a failed record).
    rows = [r for r in rows if r.run_id != results.run_id] + rows_for_run(results)
    runs = sorted({(r.timestamp, r.run_id) for r in rows})[-HISTORY_RUNS:]
    keep = {run_id for _, run_id in runs}
    return sorted((r for r in rows if r.run_id in keep), key=lambda r: (r.timestamp, r.run_id))


def write_reports(
    run_dir: RunDir | str | os.PathLike[str],
    results: RunResults,
    db_path: str | os.PathLike[str] | None,
    notes: Sequence[str] = (),
) -> Reports:
    """Write the three reports; append summary.md to $GITHUB_STEP_SUMMARY when it is set.

    A history that cannot be read does not stop the reports: they say so (`notes`)."""
    rd = as_run_dir(run_dir)
    notes = list(notes)
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


def record_and_report(
    run_dir: RunDir | str | os.PathLike[str],
    results: RunResults,
    db_path: str | os.PathLike[str],
    policy: RegressionPolicy | None = None,
    exports: Sequence[str] = (),
) -> Reports:
    """Write results.json, judge regressions against history, record the run, write the
    exports the suite asks for (store.write_exports), write reports.

    results.json is written first, so it stands whatever happens to the history. A history
    error (corrupt, unreadable) still lets everything else be written, and is raised last."""
    rd = as_run_dir(run_dir)
    write_results(rd, results)
    rows, problem = read_history(db_path, results)
    status_changes(rows, results, problem)  # a history it cannot read: first_run, with a note
    try:
        if problem is None:  # else not recorded: a new history starts with the next run
            detect(rows, results, policy)
        write_results(rd, results)  # again, with the verdicts, so `lab report` shows them too
        if problem is None:
            record_run(db_path, results)
    except LabError as e:
        problem = e
    write_exports(rd, results, exports)
    notes = [f"History unavailable: {problem}"] if problem else []
    reports = write_reports(rd, results, db_path, notes)
    if problem is not None:
        raise problem
    return reports
