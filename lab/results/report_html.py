"""report.html: one self-contained file (inline CSS, charts as base64 PNG data URIs) that opens
from a CI artifact or a mail attachment with no server and no network. Over 450 lines
because the page's sections (summary, findings, timeline, cases, charts) and its inline CSS
are one document; split, a reader would chase one page across files."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path
from urllib.parse import quote

from lab.contract import FrameworkResult
from lab.results import charts
from lab.results import report_common as rc
from lab.results.gating import describe_flake_budget, flake_budget_exceeded, quarantined
from lab.results.history import HistoryRow, framework_outcome
from lab.results.model import CaseResult, RunResults, spread_pct
from lab.results.timeline import COMPARISON_NEVER_SHARES, timeline_svg
from lab.results.triage import by_status, describe_group, signature_groups, triage_notes

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 28px; }
.meta { color: #666; } .note { background: #fff8e1; border-left: 4px solid #f9a825;
  padding: 8px 12px; margin: 12px 0; }
.banner { background: #f3e5f5; border-left: 4px solid #6a1b9a; padding: 8px 12px; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff;
  font-size: 12px; font-weight: 600; }
.counts .badge { font-size: 14px; margin-right: 6px; padding: 3px 10px; }
code, pre { font: 12px ui-monospace, monospace; } pre { background: #fafafa; padding: 6px;
  max-height: 240px; overflow: auto; white-space: pre-wrap; }
img.chart { display: block; max-width: 100%; margin: 8px 0 20px; border: 1px solid #eee; }
.status.new-failure { color: #c62828; font-weight: 700; } .status.fixed { color: #2e7d32; }
.status.still-failing { color: #8e2424; } .fit.does-not-fit { color: #c62828; font-weight: 600; }
.fit.tight { color: #f57f17; font-weight: 600; }
.split { display: flex; width: 240px; height: 12px; background: #eee; }
.split .phase { display: block; height: 100%; }
.quarantine { color: #6d4c41; } .quarantine.expired, .flake-budget { color: #c62828; }
.regressed { color: #c62828; font-weight: 600; } .improved { color: #2e7d32; font-weight: 600; }
"""


_ARTIFACT_KINDS = {
    ".png": "image",
    ".jpg": "image",
    ".webp": "image",
    ".gif": "video",
    ".mp4": "video",
}


def _badge(outcome: str) -> str:
    color = rc.OUTCOME_COLORS[rc.bucket(outcome)]
    return f'<span class="badge" style="background:{color}">{escape(outcome)}</span>'


def _status(case: CaseResult) -> str:
    """Status across nights (a class the page and its tests can find), re-run, known issue,
    flake rate."""
    notes = triage_notes(case)
    if not notes:
        return ""
    cls = escape((case.status_change or "none").replace("_", "-"))
    first, rest = (notes[0], notes[1:]) if case.status_change else ("", notes)
    html = f'<span class="status {cls}">{escape(first)}</span>' if first else ""
    for n in rest:
        if n.startswith("known: ") and case.known_failure:
            url = escape(case.known_failure.issue)
            html += f'<br><span class="known">known: <a href="{url}">{url}</a></span>'
        elif case.quarantine and n == str(case.quarantine):
            cls = "quarantine expired" if case.quarantine.expired else "quarantine"
            html += f'<br><span class="{cls}">{escape(n)}</span>'
        elif n.startswith("flake budget exceeded"):
            html += f'<br><span class="flake-budget">{escape(n)}</span>'
        else:
            html += f'<br><span class="triage">{escape(n)}</span>'
    return html


def _policy(results: RunResults) -> str:
    """Quarantined cases and those over their flake budget: whether each fails the run."""
    e, out = escape, ""
    rows: list[tuple[str, ...]]
    held = [c for c in results.cases if c.quarantine]
    if held:
        rows = [
            (
                e(c.case_id),
                _badge(str(c.outcome)),
                e(c.quarantine.until),
                f'<a href="{e(c.quarantine.issue)}">{e(c.quarantine.issue)}</a>',
                e(c.quarantine.reason),
                "no (quarantined)"
                if quarantined(c)
                else f'<span class="quarantine expired">yes: quarantine expired on '
                f"{e(c.quarantine.until)}</span>",
            )
            for c in held
            if c.quarantine
        ]
        out += f"<h2>Quarantined ({len(held)})</h2>" + _table(
            ("Case", "Outcome", "Until", "Issue", "Reason", "Fails the run"), rows, True
        )
    over = [c for c in results.cases if flake_budget_exceeded(c)]
    if over:
        gate = "flake_budget" in results.fail_on
        rows = [
            (
                e(c.case_id),
                _badge(str(c.outcome)),
                f'<span class="flake-budget">{e(describe_flake_budget(c))}</span>',
                "no (quarantined)"
                if quarantined(c)
                else ("yes (--fail-on-flake-budget)" if gate else "no"),
            )
            for c in over
        ]
        out += f"<h2>Over the flake budget ({len(over)})</h2>" + _table(
            ("Case", "Tonight", "Flake budget", "Fails the run"), rows, True
        )
    return out


def _signature_groups(results: RunResults) -> str:
    groups = signature_groups(results)
    if not groups:
        return ""
    items = "".join(
        f'<li class="signature"><code>{escape(describe_group(sig, cases))}</code> '
        f"<small>{escape(sig_id)}</small>: {escape(', '.join(c.case_id for c in cases))}</li>"
        for sig_id, sig, cases in groups
    )
    return f"<h3>Failures by signature</h3><ul>{items}</ul>"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], raw: bool = False) -> str:
    """Cells are escaped unless `raw` (then the caller escaped them and may use markup)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if raw else escape(str(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_PHASE_COLORS = {
    "ballast": "#8d6e63",
    "healthy": "#1e88e5",
    "ready": "#90caf9",
    "warmup": "#fb8c00",
    "measure": "#43a047",
    "teardown": "#8e24aa",
    "other": "#bdbdbd",
}


def _time_split(results: RunResults) -> str:
    """Per case, a stacked bar of where its time went (widths: shares of the case's time)."""
    rows = []
    for cs in results.cases:
        split = rc.time_split(cs)
        total = sum(v for _, v in split)
        if not split or total <= 0:
            continue
        bar = "".join(
            f'<span class="phase {escape(k)}" title="{escape(k)} {v:.2f} s" style="width:'
            f'{100 * v / total:.1f}%;background:{_PHASE_COLORS.get(k, "#757575")}"></span>'
            for k, v in split
        )
        rows.append(
            (
                escape(cs.case_id),
                escape(f"{rc.duration_s(cs):.2f} s / {len(cs.attempts)}"),
                f'<div class="split">{bar}</div>',
                escape(rc.fmt_split(split)),
            )
        )
    if not rows:
        return ""
    head = ("Case", "Time / attempts", "Where the time went", "Phases (summed over attempts)")
    return "<h2>Where the time went</h2>" + _table(head, rows, True)


def _img(png: bytes | None, alt: str, missing: str) -> str:
    if png is None:
        return f'<p class="meta">{escape(missing)}</p>'
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="chart" alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _run_facts(results: RunResults, run_dir: Path | None) -> str:
    """What ran where and when: the header a reader checks before trusting any number."""
    e = escape
    wall = rc.wall_s(results)
    if results.shared_host:
        others = ", ".join(results.shared_with) or "another lab run"
        shared = f"yes: {others} ran on this host at the same time (not a baseline)"
    else:
        shared = "no"
    facts = [
        ("started", results.timestamp),
        ("duration", rc.fmt_duration(wall) + " (first attempt's start to last one's end)"),
        *rc.commit_facts(results, run_dir),
        ("host", results.host or "-"),
        ("runtime", results.runtime or "-"),
        ("GPU", results.gpu_model or "none"),
        ("host shared", shared),
        ("kind", results.kind),
        (
            "method",
            f"{results.methodology}: {results.warmup_requests} warmup, "
            f"{results.measurement_repeats} measured",
        ),
    ]
    rows = "".join(
        f'<tr class="fact" data-fact="{e(k)}"><th>{e(k)}</th><td>{e(v)}</td></tr>' for k, v in facts
    )
    return f'<table class="run-facts meta">{rows}</table>'


def _link(path: str, run_dir: Path | None, label: str) -> str:
    """A relative link when the file is inside the run folder (it survives a move or an
    archive), else the path as text."""
    rel = rc.relative_log(path, run_dir)
    if Path(rel).is_absolute():
        return f'<code title="{escape(rel)}">{escape(label)}</code>'
    return f'<a class="file" href="{escape(quote(rel))}">{escape(label)}</a>'


def _files(case: CaseResult, fr: FrameworkResult | None, run_dir: Path | None) -> str:
    """This framework's log of every attempt, and what it generated (image, video)."""
    if fr is None:
        return "-"
    links = []
    for a in case.attempts:
        for f in a.frameworks:
            if f.framework != fr.framework:
                continue
            if f.log_path:
                links.append(_link(f.log_path, run_dir, f"log a{a.attempt}"))
            if f.artifact:
                label = _ARTIFACT_KINDS.get(Path(f.artifact).suffix.lower(), "artifact")
                links.append(_link(f.artifact, run_dir, f"{label} a{a.attempt}"))
    return " · ".join(links) or "-"


def _failure_table(cases: Sequence[CaseResult], run_dir: Path | None) -> str:
    e = escape
    rows = []
    for case in cases:
        for f in rc.failure_rows(case, run_dir):
            tail = (
                f"<details><summary>last {len(f.log_tail)} lines</summary>"
                f"<pre>{e(chr(10).join(f.log_tail))}</pre></details>"
                if f.log_tail
                else ""
            )
            rows.append(
                (
                    e(f.case_id),
                    _status(case),
                    e(f.framework),
                    _badge(f.outcome),
                    e(f.phase),
                    f"<code>{e(rc.one_line(f.reason, 500))}</code>{tail}",
                    _link(f.log_path, run_dir, f.log_path) if f.log_path else "-",
                )
            )
    return _table(("Case", "Status", "Framework", "Outcome", "Phase", "Reason", "Log"), rows, True)


def render_html(
    results: RunResults,
    history: Sequence[HistoryRow],
    run_dir: Path | None = None,
    notes: Sequence[str] = (),
) -> str:
    """`history` holds the recorded rows of this run's cases, this run included."""
    e = escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Nightly Lab {e(results.run_id)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Nightly Lab run {e(results.run_id)}</h1>",
    ]
    parts.append(_run_facts(results, run_dir))
    if results.status == "interrupted":
        parts.append(
            '<p class="banner"><b>Interrupted</b>: the run was stopped before every case '
            "finished; unfinished cases are marked interrupted.</p>"
        )
    parts += [f'<p class="note">{e(n)}</p>' for n in notes]
    c = rc.counts(results)
    parts.append(
        '<p class="counts">'
        + "".join(
            f'<span class="badge" style="background:{rc.OUTCOME_COLORS[b]}">{c[b]} {b}</span>'
            for b in rc.BUCKETS
        )
        + "</p>"
    )
    rows: list[tuple[str, ...]]  # of each table below, one cell per column

    failed = by_status(rc.cases_in(results, "failed"))
    if failed:
        parts.append(f"<h2>Failures ({len(failed)})</h2>")
        parts.append(_failure_table(failed, run_dir))
        parts.append(_signature_groups(results))
    parts.append(_policy(results))
    # Stopped by Ctrl-C / SIGTERM, not failed: their own heading.
    stopped = rc.cases_in(results, "interrupted")
    if stopped:
        parts.append(f"<h2>Interrupted ({len(stopped)})</h2>")
        parts.append(_failure_table(stopped, run_dir))

    degraded = rc.cases_in(results, "degraded")
    if degraded:
        parts.append(f"<h2>Degraded ({len(degraded)})</h2>")
        rows = [
            (case.case_id, rc.passed_rung(case), rc.original_failure(case), str(len(case.attempts)))
            for case in degraded
        ]
        parts.append(_table(("Case", "Passed on rung", "Original failure", "Attempts"), rows))

    flagged = [(cs, f) for cs in results.cases for f in cs.regressions if rc.flagged_finding(f)]
    grown = [
        (cs, f) for cs in results.cases for f in cs.memory_regressions if f.verdict == "regressed"
    ]
    if results.runner_changed:
        parts.append(f"<p><b>Runner changed</b> {e(results.runner_changed)}</p>")
    if flagged or grown:
        parts.append("<h2>Regressions and improvements</h2>")
        rows = [
            (
                e(cs.case_id),
                e(f.framework),
                f'<span class="{e(f.verdict)}">{e(f.verdict)}</span>',
                e(rc.fmt_latency(f.latency_s)),
                e(rc.finding_detail(f)),
            )
            for cs, f in flagged
        ]
        rows += [
            (
                e(cs.case_id),
                e(f.framework),
                '<span class="regressed">memory regressed</span>',
                e(rc.fmt_mib(f.peak_gpu_memory_mib)),
                e(f.detail),
            )
            for cs, f in grown
        ]
        parts.append(
            _table(("Case", "Framework", "Verdict", "Value", "Against history"), rows, True)
        )

    case_ids = [cs.case_id for cs in results.cases]
    parts.append("<h2>Charts</h2>")
    parts.append(_img(charts.outcome_grid(history, case_ids), "Outcome per night", "no runs"))
    parts.append(
        _img(
            charts.latency_history(history, case_ids, results.run_id),
            "Latency per case over the history",
            "no measured latency yet",
        )
    )
    parts.append(
        _img(
            charts.peak_memory(results),
            "Peak GPU memory",
            "no peak GPU memory was measured in this run",
        )
    )
    parts.append(
        _img(
            charts.speedups(results),
            "Speedup vs baseline",
            "no case compared two frameworks in this run",
        )
    )

    ran = [cs for cs in results.cases if rc.bucket(cs.outcome) != "skipped"]
    parts.append(f"<h2>Cases run ({len(ran)})</h2>")
    rows = []
    for cs in by_status(ran):  # skipped cases are listed once, under Skipped
        frs: Sequence[FrameworkResult | None] = cs.framework_results() or [None]
        for fr in frs:
            reg = next((f for f in cs.regressions if fr and f.framework == fr.framework), None)
            reg_cell = (
                f'<span class="{e(reg.verdict)}" title="{e(reg.detail)}">{e(reg.verdict)}</span>'
                if reg and reg.verdict != "unchanged"
                else ""
            )
            rows.append(
                (
                    e(cs.case_id),
                    _status(cs),
                    _badge(str(framework_outcome(cs, fr) if fr else cs.outcome)),
                    e(fr.framework if fr else "-"),
                    e(rc.fmt_latency(fr.latency_s if fr else None)),
                    *(e(cell) for cell in rc.uncertainty_cells(cs, fr)),
                    e(rc.fmt_pct(spread_pct(fr.latency_samples_s) if fr else None)),
                    e(rc.fmt_mib(fr.telemetry.peak_gpu_memory_mib if fr else None)),
                    e(rc.fmt_speedup(fr.speedup_vs_baseline if fr else None)),
                    reg_cell,
                    e(f"{rc.duration_s(cs):.0f} s / {len(cs.attempts)}"),
                    _files(cs, fr, run_dir),
                )
            )
    parts.append(
        _table(
            (
                "Case",
                "Status",
                "Outcome",
                "Framework",
                "Latency",
                "95 % CI",
                "CV",
                "MDE",
                "Spread",
                "Peak mem",
                "Speedup",
                "History",
                "Time / attempts",
                "Logs and artifacts",
            ),
            rows,
            True,
        )
    )
    parts.append(_time_split(results))
    fits = [cs for cs in results.cases if cs.fleet_fit]
    if fits:
        parts.append("<h2>Fleet fit</h2>")
        classes = [f"{f.gpu_class} ({f.vram_gib:g} GiB)" for f in fits[0].fleet_fit]
        rows = [
            (
                e(cs.case_id),
                *(
                    f'<span class="fit {e(f.verdict.replace(" ", "-"))}">'
                    f"{e(str(f).partition(': ')[2])}</span>"
                    for f in cs.fleet_fit
                ),
            )
            for cs in fits
        ]
        parts.append(_table(("Case", *classes), rows, True))
    svg = timeline_svg(results)
    if svg:  # GPU sharing: lanes over time, attempts that shared a GPU stacked
        parts.append("<h2>GPU timeline</h2>")
        parts.append(svg)
        notes = sorted({cs.gpu_sharing for cs in results.cases if cs.gpu_sharing})
        if any(COMPARISON_NEVER_SHARES in n for n in notes):
            parts.append(f"<p>Measured comparisons run alone: {e(COMPARISON_NEVER_SHARES)}.</p>")
    skipped = rc.cases_in(results, "skipped")
    if skipped:
        parts.append(f"<h2>Skipped ({len(skipped)})</h2>")
        parts.append(_table(("Case", "Reason"), [(cs.case_id, cs.reason or "-") for cs in skipped]))
    parts.append("</body></html>\n")
    return "\n".join(parts)
