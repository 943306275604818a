"""summary.md: the run at a glance, for a terminal, a PR comment or $GITHUB_STEP_SUMMARY."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lab.contract import FrameworkResult
from lab.results import report_common as rc
from lab.results.gating import describe_flake_budget, flake_budget_exceeded, quarantined
from lab.results.model import RunResults, spread_pct
from lab.results.timeline import COMPARISON_NEVER_SHARES, PLACEMENT_HEADER, placement_rows
from lab.results.triage import by_status, describe_group, signature_groups, triage_notes


def _cell(text: object) -> str:
    # A pipe or newline inside a cell would break the table.
    return rc.one_line(str(text)).replace("|", "\\|") or "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return [*out, ""]


def _code(text: str) -> str:
    return f"`{text}`" if text else "-"


def render_summary(
    results: RunResults, run_dir: Path | None = None, notes: Sequence[str] = ()
) -> str:
    lines = [f"# Nightly Lab run {results.run_id}", ""]
    if results.status == "interrupted":
        lines += [
            "> **Interrupted**: the run was stopped before every case finished; "
            "unfinished cases are marked `interrupted`.",
            "",
        ]
    lines += [f"**{rc.headline(results)}**", ""]
    meta = [
        *(f"{label} `{value}`" for label, value in rc.commit_facts(results, run_dir)),
        f"GPU {results.gpu_model}" if results.gpu_model else None,
        f"runtime {results.runtime}" if results.runtime else None,
        f"methodology {results.methodology} ({results.warmup_requests} warmup, "
        f"{results.measurement_repeats} measured)",
        results.timestamp,
    ]
    lines += [" · ".join(m for m in meta if m), ""]
    lines += [f"> {n}" for n in notes] + ([""] if notes else [])
    rows: list[tuple[object, ...]]  # of each table below, one cell per column

    failed = by_status(rc.cases_in(results, "failed"))
    if failed:
        lines += [f"## Failed ({len(failed)})", ""]
        rows = [
            (
                f.case_id,
                f.framework,
                f.outcome,
                f.phase,
                f.reason,
                _code(f.log_path),
                "; ".join(triage_notes(case)) or "-",
            )
            for case in failed
            for f in rc.failure_rows(case, run_dir)
        ]
        lines += _table(("Case", "Framework", "Outcome", "Phase", "Reason", "Log", "Status"), rows)
    groups = signature_groups(results)
    if groups:
        lines += ["### Failures by signature", ""]
        for sig_id, sig, cases in groups:
            known = next((c.known_failure for c in cases if c.known_failure), None)
            tag = f" — known: {known.issue}" if known else ""
            names = ", ".join(c.case_id for c in cases)
            lines += [f"- {describe_group(sig, cases)} `{sig_id}`{tag}: {names}"]
        lines += [""]
    fixed = [c for c in results.cases if c.status_change == "fixed"]
    if fixed:
        names = ", ".join(c.case_id for c in fixed)
        lines += [f"**Fixed since the last comparable night:** {names}", ""]

    held = [c for c in results.cases if c.quarantine]
    if held:
        lines += [f"## Quarantined ({len(held)})", ""]
        rows = [
            (
                c.case_id,
                c.outcome,
                c.quarantine.until,
                c.quarantine.issue,
                c.quarantine.reason,
                "no (quarantined)"
                if quarantined(c)
                else f"**yes: quarantine expired on {c.quarantine.until}**",
            )
            for c in held
            if c.quarantine
        ]
        lines += _table(("Case", "Outcome", "Until", "Issue", "Reason", "Fails the run"), rows)
    over = [c for c in results.cases if flake_budget_exceeded(c)]
    if over:
        lines += [f"## Over the flake budget ({len(over)})", ""]
        gate = "flake_budget" in results.fail_on
        rows = [
            (
                c.case_id,
                c.outcome,
                describe_flake_budget(c),
                "no (quarantined)"
                if quarantined(c)
                else ("**yes** (--fail-on-flake-budget)" if gate else "no"),
            )
            for c in over
        ]
        lines += _table(("Case", "Tonight", "Flake budget", "Fails the run"), rows)

    interrupted = rc.cases_in(results, "interrupted")
    if interrupted:
        lines += [f"## Interrupted ({len(interrupted)})", ""]
        rows = [
            (f.case_id, f.framework, f.phase, f.reason, _code(f.log_path))
            for case in interrupted
            for f in rc.failure_rows(case, run_dir)
        ]
        lines += _table(("Case", "Framework", "Phase", "Reason", "Log"), rows)

    degraded = rc.cases_in(results, "degraded")
    if degraded:
        lines += [
            f"## Degraded ({len(degraded)})",
            "",
            "Passed only after the OOM ladder lowered memory use; the numbers are not comparable "
            "with an undegraded run.",
            "",
        ]
        rows = [
            (
                c.case_id,
                _code(rc.passed_rung(c)),
                rc.original_failure(c),
                len(c.attempts),
                ", ".join(
                    f"{fr.framework} {rc.fmt_latency(fr.latency_s)}" for fr in c.framework_results()
                ),
            )
            for c in degraded
        ]
        lines += _table(("Case", "Passed on rung", "Original failure", "Attempts", "Latency"), rows)

    flagged = [(c, f) for c in results.cases for f in c.regressions if rc.flagged_finding(f)]
    grown = [
        (c, f) for c in results.cases for f in c.memory_regressions if f.verdict == "regressed"
    ]
    if results.runner_changed:
        lines += [f"**Runner changed** {results.runner_changed}", ""]
    if flagged or grown:
        lines += ["## Regressions and improvements", ""]
        rows = [
            (
                c.case_id,
                f.framework,
                "**regressed**" if f.verdict == "regressed" else f.verdict,
                rc.fmt_latency(f.latency_s),
                rc.finding_detail(f),
            )
            for c, f in flagged
        ]
        rows += [
            (
                c.case_id,
                f.framework,
                "**memory regressed**",
                rc.fmt_mib(f.peak_gpu_memory_mib),
                f.detail,
            )
            for c, f in grown
        ]
        lines += _table(("Case", "Framework", "Verdict", "Value", "Against history"), rows)

    measured = [c for c in results.cases if rc.bucket(c.outcome) in ("passed", "degraded")]
    if measured:
        lines += [f"## Passed ({len(measured)})", ""]
        rows = []
        for c in measured:
            label = c.case_id + (f" (degraded: {rc.passed_rung(c)})" if c.degraded_rung else "")
            frs: Sequence[FrameworkResult | None] = c.framework_results() or [None]
            for fr in frs:
                rows.append(
                    (
                        label,
                        fr.framework if fr else "-",
                        rc.fmt_latency(fr.latency_s if fr else None),
                        *rc.uncertainty_cells(c, fr),
                        rc.fmt_pct(spread_pct(fr.latency_samples_s) if fr else None),
                        rc.fmt_mib(fr.telemetry.peak_gpu_memory_mib if fr else None),
                        rc.fmt_speedup(fr.speedup_vs_baseline if fr else None),
                    )
                )
        lines += _table(
            (
                "Case",
                "Framework",
                "Latency (median)",
                "95 % CI",
                "CV",
                "MDE",
                "Spread",
                "Peak GPU mem",
                "Speedup",
            ),
            rows,
        )

    fits = [c for c in results.cases if c.fleet_fit]
    if fits:
        classes = [f.gpu_class for f in fits[0].fleet_fit]
        lines += [
            "## Fleet fit",
            "",
            "From the measured peak GPU memory per GPU; tight: under 10 % headroom.",
            "",
        ]
        rows = [(c.case_id, *(str(f).partition(": ")[2] for f in c.fleet_fit)) for c in fits]
        lines += _table(("Case", *classes), rows)

    timed = [(c, rc.time_split(c)) for c in results.cases if c.attempts]
    if any(split for _, split in timed):
        lines += ["## Where the time went", ""]
        rows = [
            (c.case_id, f"{rc.duration_s(c):.2f} s / {len(c.attempts)}", rc.fmt_split(split))
            for c, split in timed
        ]
        lines += _table(("Case", "Time / attempts", "Phases (summed over attempts)"), rows)

    placed = placement_rows(results)
    if placed:  # GPU sharing (lab/host/scheduler.py)
        lines += ["## GPU placements", ""]
        if any(c.kind != "test" and c.attempts for c in results.cases):
            lines += [f"Measured comparisons run alone: {COMPARISON_NEVER_SHARES}.", ""]
        lines += _table(PLACEMENT_HEADER, placed)

    skipped = rc.cases_in(results, "skipped")
    if skipped:
        lines += [f"## Skipped ({len(skipped)})", ""]
        lines += _table(("Case", "Reason"), [(c.case_id, c.reason or "-") for c in skipped])

    return "\n".join(lines).rstrip() + "\n"
