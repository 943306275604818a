"""Run history in SQLite (`runs/history.sqlite`): one row per run, one per case and framework.

A database SQLite cannot read as one (random bytes, a malformed page) is never replaced or
repaired in place: it is renamed to `history.sqlite.corrupt-<UTC time>` (with its journal files)
and a LabError names both paths. Every run's results.json is untouched, so `rebuild_history`
can make a new history from them. A file that cannot be opened (permissions, a folder) is left
where it is.

Over 450 lines because the schema, its migrations and every query on it belong together: a
column added here is read back in the same file."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import statistics
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Required, TypedDict

from lab.contract import FrameworkResult, Outcome
from lab.errors import LabError
from lab.results import stats
from lab.results.model import CaseResult, RunResults, spread_pct
from lab.results.report_common import fmt_latency, fmt_mib, fmt_pct

SCHEMA_VERSION = 1
HISTORY_FILE = "history.sqlite"
MEASURED = (str(Outcome.passed), str(Outcome.degraded))

_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    timestamp TEXT NOT NULL,
    status TEXT NOT NULL,
    commit_sha TEXT,
    lab_version TEXT,
    gpu_model TEXT,
    methodology TEXT NOT NULL,
    warmup_requests INTEGER NOT NULL,
    measurement_repeats INTEGER NOT NULL,
    runtime TEXT,
    config_path TEXT,
    config_sha256 TEXT,
    recorded_at TEXT NOT NULL
);
CREATE TABLE case_results (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    case_id TEXT NOT NULL,
    framework TEXT NOT NULL,
    outcome TEXT NOT NULL,
    phase TEXT,
    reason TEXT,
    latency_s REAL,
    samples TEXT NOT NULL,
    spread_pct REAL,
    peak_gpu_memory_mib REAL,
    vram_gib REAL,
    degraded_rung TEXT,
    speedup_vs_baseline REAL,
    regression TEXT,
    regression_detail TEXT,
    PRIMARY KEY (run_id, case_id, framework)
);
CREATE INDEX case_results_by_case ON case_results (case_id, framework);
"""

_SELECT = """
SELECT r.run_id, r.timestamp, r.status, r.commit_sha, r.gpu_model, r.methodology,
       r.warmup_requests, r.measurement_repeats, r.runtime,
       c.case_id, c.framework, c.outcome, c.phase, c.reason, c.latency_s, c.samples,
       c.spread_pct, c.peak_gpu_memory_mib, c.vram_gib, c.degraded_rung,
       c.speedup_vs_baseline, c.regression, c.regression_detail, r.kind, r.shared_host,
       r.runner, c.server_version, c.canary
FROM case_results c JOIN runs r ON r.run_id = c.run_id
"""

# SQLite's primary result codes for "this is not a (healthy) database file".
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


@dataclass(frozen=True)
class HistoryRow:
    """One case and framework of one recorded run, with the run's comparability keys."""

    run_id: str
    timestamp: str
    status: str
    commit_sha: str | None
    gpu_model: str | None
    methodology: str
    warmup_requests: int
    measurement_repeats: int
    runtime: str | None
    case_id: str
    framework: str
    outcome: str
    phase: str | None = None
    reason: str | None = None
    latency_s: float | None = None
    samples: list[float] = field(default_factory=list)
    spread_pct: float | None = None
    peak_gpu_memory_mib: float | None = None
    vram_gib: float | None = None
    degraded_rung: str | None = None
    speedup_vs_baseline: float | None = None
    regression: str | None = None
    regression_detail: str | None = None
    kind: str = "nightly"  # nightly | repro | selftest | replay
    shared_host: bool = False  # another lab run was live on the host at the same time
    runner: dict[str, str] = field(default_factory=dict)  # the run's runner fingerprint
    server_version: str | None = None
    canary: bool = False  # the case is one of the suite's canaries (runner-shift detection)

    @property
    def measured(self) -> bool:
        return self.outcome in MEASURED and self.latency_s is not None


class _CaseFields(TypedDict, total=False):
    """A HistoryRow's fields from the case and framework (rows_for_run adds the run's)."""

    case_id: Required[str]
    framework: Required[str]
    outcome: Required[str]
    phase: str | None
    reason: str | None
    latency_s: float | None
    samples: list[float]
    spread_pct: float | None
    peak_gpu_memory_mib: float | None
    vram_gib: float | None
    degraded_rung: str | None
    speedup_vs_baseline: float | None
    regression: str | None
    regression_detail: str | None
    server_version: str | None
    canary: bool


def normalize_timestamp(ts: str) -> str:
    """ISO 8601 in UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, so that text order is time order."""
    try:
        dt = datetime.fromisoformat(ts)
    except ValueError:
        return ts
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rows_for_run(results: RunResults) -> list[HistoryRow]:
    """The rows `record_run` stores for this run (also used to chart a run not yet recorded)."""
    ts = normalize_timestamp(results.timestamp)
    rows = []
    for case in results.cases:
        for values in _case_rows(case):
            rows.append(
                HistoryRow(
                    run_id=results.run_id,
                    timestamp=ts,
                    status=results.status,
                    commit_sha=results.commit_sha,
                    gpu_model=results.gpu_model,
                    methodology=results.methodology,
                    warmup_requests=results.warmup_requests,
                    measurement_repeats=results.measurement_repeats,
                    runtime=results.runtime or case.runtime or None,
                    kind=results.kind,
                    shared_host=results.shared_host,
                    runner=dict(results.runner),
                    **values,
                )
            )
    return rows


def framework_outcome(case: CaseResult, fr: FrameworkResult) -> Outcome:
    """The framework's own outcome, except that a pass on a degraded rung is `degraded`, and a
    pass on the re-run of a failure `flaky`."""
    if case.outcome in (Outcome.degraded, Outcome.flaky) and fr.outcome is Outcome.passed:
        return case.outcome
    return fr.outcome


def _case_rows(case: CaseResult) -> Iterator[_CaseFields]:
    # `framework` (part of every series key) is the lab's name of the server, as it always was
    # here: the old relabelling of reference rows as "sglang" lived only in results.json rows,
    # so databases of older runs need no migration and their series go on unbroken.
    findings = {f.framework: f for f in case.regressions}
    frs = case.framework_results()
    if not frs:  # never started, skipped, interrupted before a result: one row for the case
        frs_names = case.frameworks[:1] or [""]
        for name in frs_names:
            yield {
                "case_id": case.case_id,
                "framework": name,
                "outcome": str(case.outcome),
                "phase": str(case.phase) if case.phase else None,
                "reason": case.reason,
                "vram_gib": case.vram_gib,
                "degraded_rung": case.degraded_rung,
                "canary": case.canary,
            }
        return
    for fr in frs:
        outcome = framework_outcome(case, fr)
        finding = findings.get(fr.framework)
        yield {
            "case_id": case.case_id,
            "framework": fr.framework,
            "outcome": str(outcome),
            "phase": str(fr.phase) if fr.phase else None,
            "reason": fr.reason or (case.reason if outcome is not Outcome.passed else ""),
            "latency_s": fr.latency_s,
            "samples": list(fr.latency_samples_s),
            "spread_pct": spread_pct(fr.latency_samples_s),
            "peak_gpu_memory_mib": fr.telemetry.peak_gpu_memory_mib,
            "vram_gib": case.vram_gib,
            "degraded_rung": case.degraded_rung,
            "speedup_vs_baseline": fr.speedup_vs_baseline,
            "regression": finding.verdict if finding and finding.verdict != "unchanged" else None,
            "regression_detail": finding.detail if finding else None,
            "server_version": fr.server_version,
            "canary": case.canary,
        }


def _is_corrupt(e: sqlite3.DatabaseError) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(e).lower()
    return "not a database" in text or "malformed" in text


def _move_aside(db_path: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = db_path.with_name(f"{db_path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = db_path.with_name(f"{db_path.name}.corrupt-{stamp}-{n}")
    # Journals go along: a hot journal left behind would be replayed into the next new database.
    for suffix in ("-journal", "-wal", "-shm"):
        side = db_path.with_name(db_path.name + suffix)
        if side.exists():
            os.replace(side, aside.with_name(aside.name + suffix))
    os.replace(db_path, aside)
    return aside


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another lab process may have created it while we waited for the lock.
        if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


# Added after schema 1 shipped; a history without them reads its runs as unshared nightlies.
_RUN_COLUMNS = {
    "kind": "TEXT NOT NULL DEFAULT 'nightly'",
    "shared_host": "INTEGER NOT NULL DEFAULT 0",
    "runner": "TEXT NOT NULL DEFAULT '{}'",  # JSON: the runner fingerprint (RunResults.runner)
}
_CASE_COLUMNS = {
    "server_version": "TEXT",
    "canary": "INTEGER NOT NULL DEFAULT 0",
}


def _add_run_columns(conn: sqlite3.Connection) -> None:
    for table, columns in (("runs", _RUN_COLUMNS), ("case_results", _CASE_COLUMNS)):
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, decl in columns.items():
            if have and name not in have:
                with contextlib.suppress(sqlite3.OperationalError):  # another run added it first
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")


@contextlib.contextmanager
def _connect(
    db_path: Path, *, create: bool, check: bool = False, repair: bool = True
) -> Iterator[sqlite3.Connection]:
    """An open, schema-checked connection; corrupt files are reported, and moved aside when
    `repair` (a reader that only peeks leaves that to the run that records and reports)."""
    conn: sqlite3.Connection | None = None
    try:
        if create:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level None: transactions are explicit (BEGIN IMMEDIATE in record_run).
        conn = sqlite3.connect(db_path, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if check:
            problem = conn.execute("PRAGMA quick_check").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed: {problem}")
        if version > SCHEMA_VERSION:
            raise LabError(
                f"{db_path}: history schema version {version} was written by a newer lab "
                f"(this one knows {SCHEMA_VERSION}); upgrade the lab or use another --out"
            )
        if version == 0 and create:
            _create_schema(conn)
        if version or create:
            _add_run_columns(conn)
        yield conn
    except sqlite3.DatabaseError as e:
        if conn is not None:
            conn.close()
            conn = None
        if repair and _is_corrupt(e) and db_path.is_file():
            aside = _move_aside(db_path)
            raise LabError(
                f"{db_path}: the run history is not a readable SQLite database ({e}). "
                f"It was moved to {aside} and kept there; a new history starts with the next "
                f"recorded run. Every run's results.json is intact, so the history can be "
                f"rebuilt from them."
            ) from None
        raise LabError(f"{db_path}: cannot use the run history: {e}") from None
    finally:
        if conn is not None:
            conn.close()


def record_run(db_path: str | os.PathLike[str], results: RunResults) -> None:
    """Add the whole run in one transaction; recording the same run_id again replaces it."""
    db_path = Path(db_path)
    rows = rows_for_run(results)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with _connect(db_path, create=True, check=True) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM runs WHERE run_id = ?", (results.run_id,))
            conn.execute(
                "INSERT INTO runs (run_id, timestamp, status, commit_sha, lab_version, gpu_model,"
                " methodology, warmup_requests, measurement_repeats, runtime, config_path,"
                " config_sha256, recorded_at, kind, shared_host, runner)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    results.run_id,
                    normalize_timestamp(results.timestamp),
                    results.status,
                    results.commit_sha,
                    results.lab_version,
                    results.gpu_model,
                    results.methodology,
                    results.warmup_requests,
                    results.measurement_repeats,
                    results.runtime,
                    results.config_path,
                    results.config_sha256,
                    now,
                    results.kind,
                    int(results.shared_host),
                    json.dumps(results.runner, sort_keys=True),
                ),
            )
            conn.executemany(
                "INSERT INTO case_results (run_id, case_id, framework, outcome, phase, reason,"
                " latency_s, samples, spread_pct, peak_gpu_memory_mib, vram_gib, degraded_rung,"
                " speedup_vs_baseline, regression, regression_detail, server_version, canary)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        r.run_id,
                        r.case_id,
                        r.framework,
                        r.outcome,
                        r.phase,
                        r.reason,
                        r.latency_s,
                        json.dumps(r.samples),
                        r.spread_pct,
                        r.peak_gpu_memory_mib,
                        r.vram_gib,
                        r.degraded_rung,
                        r.speedup_vs_baseline,
                        r.regression,
                        r.regression_detail,
                        r.server_version,
                        int(r.canary),
                    )
                    for r in rows
                ],
            )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # keep the error that stopped the insert
                conn.execute("ROLLBACK")
            raise


def _row(values: sqlite3.Row | tuple[Any, ...]) -> HistoryRow:
    v = list(values)
    v[15] = json.loads(v[15]) if v[15] else []
    v[24] = bool(v[24])  # shared_host, an INTEGER in SQLite
    v[25] = json.loads(v[25]) if v[25] else {}
    v[27] = bool(v[27])
    return HistoryRow(*v)


def _query(
    db_path: Path, where: str, params: Sequence[object], repair: bool = True
) -> list[HistoryRow]:
    if not db_path.exists():
        return []
    with _connect(db_path, create=False, repair=repair) as conn:
        if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
            return []  # an empty file: no history yet
        sql = f"{_SELECT} {where} ORDER BY r.timestamp, r.run_id, c.case_id, c.framework"
        return [_row(v) for v in conn.execute(sql, params)]


def case_history(
    db_path: str | os.PathLike[str], case_id: str, limit: int = 20, framework: str | None = None
) -> list[HistoryRow]:
    """The case's rows of its last `limit` recorded runs, oldest first."""
    where = "WHERE c.case_id = ?"
    params: list[object] = [case_id]
    if framework is not None:
        where += " AND c.framework = ?"
        params.append(framework)
    where += (
        " AND r.run_id IN (SELECT run_id FROM runs WHERE run_id IN"
        " (SELECT run_id FROM case_results WHERE case_id = ?) ORDER BY timestamp DESC LIMIT ?)"
    )
    params += [case_id, limit]
    return _query(Path(db_path), where, params)


def history_rows(
    db_path: str | os.PathLike[str],
    case_ids: Iterable[str] | None = None,
    last_runs: int | None = None,
    repair: bool = True,
) -> list[HistoryRow]:
    """Rows of the given cases (all when None) of the last `last_runs` runs, oldest first.
    `repair=False`: a corrupt file raises and stays where it is (see _connect)."""
    where = "WHERE 1"
    params: list[object] = []
    if case_ids is not None:
        ids = list(case_ids)
        if not ids:
            return []
        where += f" AND c.case_id IN ({','.join('?' * len(ids))})"
        params += ids
    if last_runs is not None:
        where += " AND r.run_id IN (SELECT run_id FROM runs ORDER BY timestamp DESC LIMIT ?)"
        params.append(last_runs)
    return _query(Path(db_path), where, params, repair)


def rebuild_history(db_path: str | os.PathLike[str], run_dirs: Iterable[Path]) -> int:
    """Record every readable results.json again (after a corrupt history was moved aside)."""
    from lab.results.store import load_results

    n = 0
    for run_dir in run_dirs:
        if (Path(run_dir) / "results.json").is_file():
            record_run(db_path, load_results(run_dir))
            n += 1
    return n


# ---- `lab history CASE_ID` ------------------------------------------------------------------


def trend_arrow(previous: float | None, current: float | None, threshold_pct: float) -> str:
    """↑ slower, ↓ faster, → within the threshold, blank when either side has no latency."""
    if previous is None or current is None or previous <= 0:
        return ""
    delta = 100.0 * (current - previous) / previous
    if delta > threshold_pct:
        return "↑"
    if delta < -threshold_pct:
        return "↓"
    return "→"


def format_history(rows: Sequence[HistoryRow], threshold_pct: float = 5.0) -> str:
    """A text table for `lab history CASE_ID`: one line per run and framework, oldest first.

    The trend arrow compares with the previous measured run of the same framework (↑ slower)."""
    if not rows:
        return "no recorded runs for this case"
    header = (
        "date",
        "run",
        "framework",
        "outcome",
        "median",
        "95% ci",
        "cv",
        "mde",
        "spread",
        "peak mem",
        "regr",
        "",
    )
    lines: list[tuple[str, ...]] = [header]
    last: dict[str, float] = {}
    for r in rows:
        arrow = trend_arrow(last.get(r.framework), r.latency_s, threshold_pct) if r.measured else ""
        if r.measured and r.latency_s is not None:
            last[r.framework] = r.latency_s
        outcome = r.outcome + (f" ({r.degraded_rung})" if r.degraded_rung else "")
        lines.append(
            (
                r.timestamp[:16].replace("T", " "),
                r.run_id,
                r.framework or "-",
                outcome,
                fmt_latency(r.latency_s),
                *_uncertainty(r),
                fmt_pct(r.spread_pct),
                fmt_mib(r.peak_gpu_memory_mib),
                r.regression or "",
                arrow,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]
    out.insert(1, "  ".join("-" * w for w in widths).rstrip())
    out.append(_overall_trend(rows))
    nights = {r.run_id: r.outcome for r in rows if r.outcome != str(Outcome.skipped)}
    flaky = sum(o == str(Outcome.flaky) for o in nights.values())
    if flaky:
        out.append(f"flaky in {flaky} of the last {len(nights)} nights")
    return "\n".join(out)


_MDE_RE = re.compile(r"MDE ([0-9.]+) %")


def _uncertainty(r: HistoryRow) -> tuple[str, str, str]:
    """CI and CV from the row's samples; the MDE its night's verdict had (in the stored detail,
    written by regression.detect), else the samples' own."""
    u = stats.uncertainty(r.samples)
    if u is None:
        return "-", "-", "-"
    m = _MDE_RE.search(r.regression_detail or "")
    mde = float(m.group(1)) if m else u.mde_pct
    ci = "-" if u.ci95 is None else f"{u.ci95[0]:.3f}–{u.ci95[1]:.3f}"
    return ci, fmt_pct(u.cv_pct), fmt_pct(mde)


def _overall_trend(rows: Sequence[HistoryRow]) -> str:
    parts = []
    for fw in dict.fromkeys(r.framework for r in rows):
        lat = [r.latency_s for r in rows if r.framework == fw and r.measured and r.latency_s]
        if len(lat) < 2:
            continue
        delta = 100.0 * (lat[-1] - statistics.median(lat[:-1])) / statistics.median(lat[:-1])
        parts.append(f"{fw or '-'} {delta:+.1f} % vs median of {len(lat) - 1} earlier")
    return "latest: " + "; ".join(parts) if parts else ""
