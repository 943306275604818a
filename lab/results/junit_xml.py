"""junit.xml: one <testcase> per case, in the Ant/Jenkins JUnit shape CI systems read.

Failure classes map to <failure>, an attempt that could not run (infra_error) or a run that was
stopped (interrupted) to <error>, skipped to <skipped>; a degraded case passes, with a note in
<system-out> and a property, so CI stays green but the rung is visible."""

from __future__ import annotations

import re
import socket
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

from lab.contract import Outcome
from lab.results import report_common as rc
from lab.results.gating import describe_flake_budget, flake_budget_exceeded, quarantined
from lab.results.model import STATUS_ORDER, CaseResult, RunResults
from lab.results.triage import by_status, describe_status

SUITE = "nightly-lab"
_ERRORS = (Outcome.infra_error, Outcome.interrupted)
# XML 1.0 forbids most control characters; server logs are full of them (ANSI colours).
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def xml_text(text: str) -> str:
    return _NOT_XML.sub("?", _ANSI.sub("", text))


def _secs(v: float) -> str:
    return f"{v:.3f}"


def _timestamp(ts: str) -> str:
    """JUnit wants `YYYY-MM-DDTHH:MM:SS` without a zone; ours are UTC."""
    try:
        dt = datetime.fromisoformat(ts)
    except ValueError:
        dt = datetime.now(UTC)
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S")


def suite_name(results: RunResults) -> str:
    return f"{SUITE}.{Path(results.config_path).stem}" if results.config_path else SUITE


def _testcase(
    parent: ET.Element, case: CaseResult, classname: str, run_dir: Path | None, fail_on: list[str]
) -> None:
    tc = ET.SubElement(
        parent, "testcase", name=case.case_id, classname=classname, time=_secs(rc.duration_s(case))
    )
    kind = rc.bucket(case.outcome)
    if quarantined(case) and (kind in fail_on or kind in ("failed", "interrupted")):
        # Runs and is reported, but does not fail the run: CI shows it skipped, with why.
        assert case.quarantine is not None
        why = f"{case.outcome}: {case.reason}" if case.reason else str(case.outcome)
        message = f"{case.quarantine}: {why}"
        ET.SubElement(
            tc, "skipped", message=xml_text(rc.one_line(message, 1000)), type="quarantined"
        )
        body = [f"{f.framework}: {f.outcome} in {f.phase}: {f.reason}" for f in _bad_rows(case)]
        ET.SubElement(tc, "system-out").text = xml_text("\n".join(body))
        return
    if kind in fail_on:  # --fail-on-degraded / --fail-on-skipped: CI shows it failed, and why
        why = case.reason or "skipped"
        if kind == "degraded":
            why = f"passed on rung {rc.passed_rung(case)} after {rc.original_failure(case)}"
        message = f"{kind}, and the run fails on {kind} (--fail-on-{kind}): {why}"
        ET.SubElement(tc, "failure", message=xml_text(rc.one_line(message, 1000)), type=kind)
        return
    if kind == "skipped":
        ET.SubElement(tc, "skipped", message=xml_text(rc.one_line(case.reason or "skipped")))
        return
    if kind in ("failed", "interrupted"):
        tag = "error" if case.outcome in _ERRORS else "failure"
        for f in rc.failure_rows(case, run_dir):
            body = [f"framework: {f.framework}", f"phase: {f.phase}", f"log: {f.log_path or '-'}"]
            if case.status_change:
                body.insert(0, f"status: {describe_status(case)}")
            if case.quarantine is not None:  # expired: it gates again
                body.insert(0, str(case.quarantine))
            if f.log_tail:
                body += ["", "--- last lines of the log ---", *f.log_tail]
            el = ET.SubElement(
                tc,
                tag,
                message=xml_text(rc.one_line(f"{f.framework}: {f.reason}", 1000)),
                type=f.outcome,
            )
            el.text = xml_text("\n".join(body))
        return
    if "flake_budget" in fail_on and flake_budget_exceeded(case):
        message = f"{describe_flake_budget(case)}, and the run fails on it (--fail-on-flake-budget)"
        ET.SubElement(tc, "failure", message=xml_text(message), type="flake_budget")
        return
    out = []
    if kind == "degraded":
        out.append(
            f"degraded: passed on rung {rc.passed_rung(case)} after {rc.original_failure(case)}"
        )
    for fr in case.framework_results():
        out.append(f"{fr.framework}: median {rc.fmt_latency(fr.latency_s)}")
    if case.regression_detail:
        out.append(f"{case.regression}: {case.regression_detail}")
    if out:
        ET.SubElement(tc, "system-out").text = xml_text("\n".join(out))


def _bad_rows(case: CaseResult) -> list[rc.FailureRow]:
    return rc.failure_rows(case) if rc.bucket(case.outcome) != "degraded" else []


def _inner_suites(case: CaseResult, name: str) -> list[ET.Element]:
    """The JUnit a `kind: test` case's own command wrote (its last attempt), as suites of ours:
    CI shows the test file's own test names beside the case."""
    final = case.final
    paths = [fr.inner_junit for fr in (final.frameworks if final else []) if fr.inner_junit]
    out = []
    for path in paths:
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError):
            continue
        for suite in [root] if root.tag == "testsuite" else root.findall("testsuite"):
            suite.set("name", f"{name}.{case.case_id}.{suite.get('name', 'tests')}")
            for key in ("tests", "failures", "errors", "skipped"):
                suite.set(key, str(sum(1 for _ in _count(suite, key))))
            out.append(suite)
    return out


def _count(suite: ET.Element, key: str) -> list[ET.Element]:
    cases = suite.findall("testcase")
    if key == "tests":
        return cases
    tag = {"failures": "failure", "errors": "error", "skipped": "skipped"}[key]
    return [tc for tc in cases if tc.find(tag) is not None]


def _status_properties(results: RunResults) -> list[tuple[str, str | None]]:
    """Triage facts as <testsuite> properties (the Ant schema has none on <testcase>): the cases
    of each status change, then each case's own line with failing_since."""
    out: list[tuple[str, str | None]] = []
    for status in STATUS_ORDER:
        ids = [c.case_id for c in results.cases if c.status_change == status]
        out.append((status, ",".join(ids)))
    for c in by_status(results.cases):
        if c.status_change:
            out.append((f"status_change.{c.case_id}", describe_status(c)))
        fs = c.failing_since
        if fs is not None:
            out.append(
                (
                    f"failing_since.{c.case_id}",
                    f"{fs.run_id} {fs.timestamp} {fs.commit_sha or '-'} streak={fs.streak}",
                )
            )
    return out


def render_junit(results: RunResults, run_dir: Path | None = None) -> str:
    name = suite_name(results)
    total = _secs(rc.wall_s(results))
    # Counted from the testcases once written (quarantine and the gates move cases between them).
    stats = dict.fromkeys(("tests", "failures", "errors", "skipped"), "0") | {"time": total}
    # The Jenkins/Ant schema has no `skipped` on <testsuites>, only on <testsuite>.
    root = ET.Element(
        "testsuites", {"name": SUITE, **{k: v for k, v in stats.items() if k != "skipped"}}
    )
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": name,
            "timestamp": _timestamp(results.timestamp),
            "hostname": xml_text(socket.gethostname()) or "localhost",
            **stats,
        },
    )
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("run_id", results.run_id),
        ("status", results.status),
        ("commit_sha", results.commit_sha),
        ("gpu_model", results.gpu_model),
        ("runtime", results.runtime),
        ("methodology", results.methodology),
        ("degraded", ",".join(x.case_id for x in rc.cases_in(results, "degraded"))),
        *_status_properties(results),
    ):
        if value:
            ET.SubElement(props, "property", name=key, value=xml_text(str(value)))
    for case in by_status(results.cases):
        _testcase(suite, case, name, run_dir, results.fail_on)
    for key in ("tests", "failures", "errors", "skipped"):
        suite.set(key, str(len(_count(suite, key))))
        if key != "skipped":
            root.set(key, suite.get(key, "0"))
    for case in results.cases:
        for inner in _inner_suites(case, name):
            root.append(inner)
            for key in ("tests", "failures", "errors"):
                root.set(key, str(int(root.get(key, "0")) + int(inner.get(key, "0"))))
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'
