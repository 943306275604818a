"""What the three reports (markdown, JUnit, HTML) say alike: outcome buckets, failure rows,
number formats. One place, so the reports never disagree about a case."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lab.contract import PHASES, FrameworkResult, Outcome, Phase, summed_phases
from lab.results.model import CaseResult, RegressionFinding, RunResults, uncertainty_fields

BUCKETS = ("passed", "degraded", "failed", "skipped", "interrupted")
OUTCOME_COLORS = {
    "passed": "#2e7d32",
    "degraded": "#f9a825",
    "failed": "#c62828",
    "skipped": "#9e9e9e",
    "interrupted": "#6a1b9a",
}


def bucket(outcome: Outcome | str) -> str:
    """Every failure class (oom, crashed, timeout, ...) counts as `failed`."""
    value = str(outcome)
    return value if value in BUCKETS else "failed"


def counts(results: RunResults) -> dict[str, int]:
    out = dict.fromkeys(BUCKETS, 0)
    for case in results.cases:
        out[bucket(case.outcome)] += 1
    return out


def headline(results: RunResults) -> str:
    c = counts(results)
    return " · ".join(f"{c[b]} {b}" for b in BUCKETS) + f" ({len(results.cases)} cases)"


def cases_in(results: RunResults, name: str) -> list[CaseResult]:
    return [c for c in results.cases if bucket(c.outcome) == name]


@dataclass
class FailureRow:
    """One failing framework of a failed or interrupted case (or the case itself)."""

    case_id: str
    framework: str
    outcome: str
    phase: str
    reason: str
    log_path: str
    log_tail: list[str] = field(default_factory=list)


def failure_rows(case: CaseResult, run_dir: Path | None = None) -> list[FailureRow]:
    bad = [fr for fr in case.framework_results() if fr.outcome is not Outcome.passed]
    if not bad:
        return [
            FailureRow(
                case.case_id, "-", str(case.outcome), _phase(case.phase), case.reason or "-", ""
            )
        ]
    return [
        FailureRow(
            case.case_id,
            fr.framework,
            str(fr.outcome),
            _phase(fr.phase or case.phase),
            fr.reason or case.reason or "-",
            relative_log(fr.log_path, run_dir),
            list(fr.log_tail),
        )
        for fr in bad
    ]


def _phase(phase: Phase | None) -> str:
    return str(phase) if phase else "-"


def relative_log(path: str, run_dir: Path | None) -> str:
    """Paths (logs, artifacts) relative to the run folder when inside it: they stay valid when it
    is copied. A folder moved since the run is recognised by its name (the run id)."""
    if not path or run_dir is None or not Path(path).is_absolute():
        return path
    try:
        return str(Path(path).resolve().relative_to(run_dir.resolve()))
    except ValueError:
        parts = Path(path).parts
        if run_dir.name in parts:
            at = len(parts) - 1 - parts[::-1].index(run_dir.name)
            return str(Path(*parts[at + 1 :])) if at + 1 < len(parts) else path
        return path


def original_failure(case: CaseResult) -> str:
    if case.original_failure:
        return case.original_failure
    if case.attempts:
        first = case.attempts[0]
        return f"{first.outcome}: {first.reason}" if first.reason else str(first.outcome)
    return "-"


def passed_rung(case: CaseResult) -> str:
    return case.degraded_rung or (case.final.rung if case.final else "-")


def wall_s(results: RunResults) -> float:
    """From the first attempt's start to the last one's end: the run's wall time, not the sum of
    its cases' (cases run side by side)."""
    attempts = [a for c in results.cases for a in c.attempts]
    if not attempts:
        return 0.0
    return max(0.0, max(a.finished_at for a in attempts) - min(a.started_at for a in attempts))


def fmt_duration(seconds: float) -> str:
    """`42 s`, `3 min 12 s`, `1 h 02 min`."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def duration_s(case: CaseResult) -> float:
    """Wall time of all the case's attempts (what CI shows as the test's time)."""
    return sum(max(0.0, a.finished_at - a.started_at) for a in case.attempts)


def time_split(case: CaseResult) -> list[tuple[str, float]]:
    """Where the case's time went: each phase summed over its attempts, in the order they
    happen, then "other" (what no phase covers: the sandbox's set-up, comparison, result)."""
    totals: dict[str, float] = {}
    for a in case.attempts:
        timings = a.phase_timings_s
        if not set(timings) - {"ballast"}:  # written before attempts summed their frameworks'
            timings = summed_phases(timings, a.frameworks)
        for k, v in timings.items():
            totals[k] = totals.get(k, 0.0) + v
    order = [p for p in PHASES if p in totals] + sorted(set(totals) - set(PHASES))
    split = [(k, totals[k]) for k in order]
    other = duration_s(case) - sum(totals.values())
    return [*split, ("other", other)] if split and other >= 0.0005 else split


def fmt_split(split: list[tuple[str, float]]) -> str:
    """`healthy 0.20 · warmup 0.27 · measure 1.04 · other 0.03 s`."""
    return " · ".join(f"{k} {v:.2f}" for k, v in split) + " s" if split else "-"


def one_line(text: str, limit: int = 300) -> str:
    """The text on one line, shortened at a word boundary (where one is near) with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut) + "…"


def fmt_latency(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f} s"


def fmt_pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} %"


def fmt_mib(v: float | None) -> str:
    return "-" if v is None else f"{v / 1024:.2f} GiB"


def fmt_speedup(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}×"


def uncertainty_cells(case: CaseResult, fr: FrameworkResult | None) -> tuple[str, str, str]:
    """The 95 % CI of the median, the CV and the MDE of one framework's latency, as text."""
    if fr is None:
        return "-", "-", "-"
    u = uncertainty_fields(fr.latency_samples_s, case, fr.framework)
    ci = u["latency_ci95_s"]
    if u["too_few"]:  # an interval and MDE no verdict can rest on: the sentence instead
        return u["too_few"], fmt_pct(u["latency_cv_pct"]), "-"
    return (
        "-" if ci is None else f"{ci[0]:.3f}–{ci[1]:.3f} s",
        fmt_pct(u["latency_cv_pct"]),
        fmt_pct(u["mde_pct"]),
    )


def commit_facts(results: RunResults, run_dir: Path | None) -> list[tuple[str, str]]:
    """The two commits a reader asks about, each whole and labelled: the lab's own (manifest.json
    lab.commit) and the served framework's version/commit (results.json commit_sha, with where
    it came from)."""
    lab_commit = "unknown (no manifest.json)"
    try:
        lab = json.loads((run_dir / "manifest.json").read_text()).get("lab", {}) if run_dir else {}
        if isinstance(lab, dict):
            why = lab.get("commit_unknown_because") or "not recorded"
            lab_commit = lab.get("commit") or f"unknown ({why})"
    except (OSError, ValueError):
        pass
    served = results.commit_sha or f"unknown ({results.commit_unknown_because or 'not recorded'})"
    if results.commit_sha and results.commit_source:
        served += f" (from {results.commit_source})"
    return [("lab commit", lab_commit), ("served framework version/commit", served)]


def flagged_finding(f: RegressionFinding) -> bool:
    """A latency finding the reports list: tonight's test or the change-point view says so."""
    return f.verdict != "unchanged" or f.series_note is not None


def finding_detail(f: RegressionFinding) -> str:
    """The test's detail, then what the series says (regressed since RUN, unconfirmed, ...)."""
    return f"{f.detail}; {f.series_note}" if f.series_note else f.detail
