"""What a team has accepted about its failures, from files beside the suite and suite keys:
known failures (`known_failures.json`: a failure with an issue, gating unless
--fail-on-new-only), quarantine with expiry (`quarantine.json`: a case that runs and is reported
but does not fail the run until its date passes) and the flake budget (how many flaky nights a
case may have among its last N).

Quarantine has a file of its own, not entries in known_failures.json: a known failure only
annotates (it changes the exit code only under --fail-on-new-only), a quarantine always does,
must carry an end date, and is keyed by case id; a reviewer should see a change to what gates
the nightly as a change to that file alone."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Collection, Sequence
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lab.errors import LabError
from lab.redact import redact_text
from lab.results.model import CaseResult, KnownFailure, Quarantine, RunResults

KNOWN_FILE = "known_failures.json"
QUARANTINE_FILE = "quarantine.json"


# ---- the files' common shape: a list of objects, errors naming file and line --------------------


def read_entries(path: Path, key: str) -> tuple[list[Any], list[int]] | None:
    """The entries of `{KEY: [...]}` (or the list alone) and the line each starts on; None when
    the file is absent. LabError naming the file and line."""
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LabError(f"{path}: cannot read: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LabError(f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
    entries = data.get(key) if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise LabError(f'{path}:1: expected a list under "{key}"')
    return entries, _entry_lines(text, key if isinstance(data, dict) else None)


_WS = re.compile(r"\s*")


def _entry_lines(text: str, key: str | None) -> list[int]:
    """The line each element of the list starts on (the text is valid JSON: walk it with the
    decoder, so brackets inside strings, e.g. of a regex, do not count)."""
    dec = json.JSONDecoder()

    def skip(pos: int) -> int:
        m = _WS.match(text, pos)
        return m.end() if m else pos

    pos = skip(0)
    if key is not None:  # the top object: find the (last, as json.loads keeps) KEY's value
        pos, at = skip(pos + 1), -1
        while text[pos] != "}":
            name, pos = dec.raw_decode(text, pos)
            pos = skip(skip(pos) + 1)  # past the ':'
            if name == key:
                at = pos
            _, pos = dec.raw_decode(text, pos)
            pos = skip(pos)
            pos = skip(pos + 1) if text[pos] == "," else pos
        pos = at
    lines, pos = [], skip(pos + 1)
    while text[pos] != "]":
        lines.append(text.count("\n", 0, pos) + 1)
        _, pos = dec.raw_decode(text, pos)
        pos = skip(pos)
        pos = skip(pos + 1) if text[pos] == "," else pos
    return lines


def _where(path: Path, key: str, lines: list[int], i: int) -> str:
    return f"{path}:{lines[i]}: {key}[{i}]"


def _issue_url(entry: dict[str, Any], where: str) -> str:
    url = entry.get("issue")
    parsed = urlparse(url.strip()) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise LabError(f"{where}.issue: an issue URL (https://…) is required, got {url!r}")
    return str(url).strip()


# ---- known_failures.json -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KnownEntry:
    issue: str
    note: str = ""
    signature: str | None = None  # the signature text or its id
    regex: re.Pattern[str] | None = None


def load_known_failures(config_dir: str | os.PathLike[str]) -> list[KnownEntry]:
    """The suite's `known_failures.json` (none when absent). LabError naming the file and line.

    Shape: `{"known_failures": [{"signature": SIG_OR_ID | "regex": RE, "issue": URL,
    "note": TEXT}, ...]}` (or the list alone)."""
    path = Path(config_dir) / KNOWN_FILE
    found = read_entries(path, "known_failures")
    if found is None:
        return []
    entries, lines = found
    out = []
    for i, entry in enumerate(entries):
        where = _where(path, "known_failures", lines, i)
        if not isinstance(entry, dict):
            raise LabError(f"{where}: expected an object")
        unknown = set(entry) - {"signature", "regex", "issue", "note"}
        if unknown:
            raise LabError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        if not isinstance(entry.get("issue"), str) or not entry["issue"].strip():
            raise LabError(f"{where}.issue: an issue URL is required")
        sig, rx = entry.get("signature"), entry.get("regex")
        if (sig is None) == (rx is None):
            raise LabError(f"{where}: give exactly one of signature, regex")
        if not isinstance(sig or rx, str):
            raise LabError(f"{where}: signature / regex must be a string")
        try:
            pattern = re.compile(rx) if rx is not None else None
        except re.error as e:
            raise LabError(f"{where}.regex: not a regular expression: {e}") from None
        out.append(KnownEntry(entry["issue"], str(entry.get("note", "")), sig, pattern))
    return out


def match_known(case: CaseResult, known: Sequence[KnownEntry]) -> KnownFailure | None:
    sig, sig_id = case.failure_signature, case.failure_signature_id
    if not sig:
        return None
    raw = redact_text(case.reason)
    for k in known:
        if k.signature is not None and k.signature in (sig, sig_id):
            return KnownFailure(issue=k.issue, note=k.note, matched=k.signature)
        if k.regex is not None and (k.regex.search(sig) or k.regex.search(raw)):
            return KnownFailure(issue=k.issue, note=k.note, matched=k.regex.pattern)
    return None


# ---- quarantine.json ---------------------------------------------------------------------------

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclasses.dataclass(frozen=True)
class QuarantineEntry:
    issue: str
    reason: str
    until: date  # the last day the quarantine holds
    case: str | None = None  # a case id of the suite
    signature: str | None = None  # a failure signature's text or id


def load_quarantine(
    config_dir: str | os.PathLike[str], case_ids: Collection[str]
) -> list[QuarantineEntry]:
    """The suite's `quarantine.json` (none when absent). LabError naming the file and line.

    Shape: `{"quarantine": [{"case": ID | "signature": SIG_OR_ID, "issue": URL,
    "reason": TEXT, "until": "YYYY-MM-DD"}, ...]}` (or the list alone). `case` must be one of
    `case_ids` (the suite's)."""
    path = Path(config_dir) / QUARANTINE_FILE
    found = read_entries(path, "quarantine")
    if found is None:
        return []
    entries, lines = found
    out: list[QuarantineEntry] = []
    seen: dict[str, int] = {}  # case id or signature → the line that quarantined it
    for i, entry in enumerate(entries):
        where = _where(path, "quarantine", lines, i)
        if not isinstance(entry, dict):
            raise LabError(f"{where}: expected an object")
        unknown = set(entry) - {"case", "signature", "issue", "reason", "until"}
        if unknown:
            raise LabError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        cid, sig = entry.get("case"), entry.get("signature")
        if (cid is None) == (sig is None):
            raise LabError(f"{where}: give exactly one of case, signature")
        if not isinstance(cid or sig, str) or not str(cid or sig).strip():
            raise LabError(f"{where}: case / signature must be a non-empty string")
        if cid is not None and cid not in case_ids:
            raise LabError(f"{where}.case: unknown case id {cid!r} (not in the suite)")
        issue = _issue_url(entry, where)
        reason = entry.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise LabError(f"{where}.reason: say why the case is quarantined")
        until = entry.get("until")
        try:
            if not isinstance(until, str) or not _DATE.fullmatch(until):
                raise ValueError
            day = date.fromisoformat(until)
        except ValueError:
            raise LabError(
                f"{where}.until: expected a date YYYY-MM-DD (the last day it holds), got {until!r}"
            ) from None
        key = str(cid or sig)
        if key in seen:
            raise LabError(f"{where}: {key!r} is already quarantined on line {seen[key]}")
        seen[key] = lines[i]
        out.append(QuarantineEntry(issue, reason.strip(), day, cid, sig))
    return out


def run_date(results: RunResults) -> date:
    """The day a run counts as (UTC, from its start): what a quarantine's `until` is held to, so
    `lab report` of an old run says what that night said."""
    return date.fromisoformat(results.timestamp[:10])


def apply_quarantine(results: RunResults, entries: Sequence[QuarantineEntry]) -> None:
    """`quarantine` on every case an entry names (by id, or by its failure's signature: call it
    after the signatures are set); expired when the run's day is past `until`."""
    today = run_date(results)
    for case in results.cases:
        case.quarantine = None
        for q in entries:
            if q.case is not None:
                hit = q.case == case.case_id
                matched = f"case {q.case}"
            else:
                ids = (case.failure_signature, case.failure_signature_id)
                hit = bool(case.failure_signature) and q.signature in ids
                matched = f"signature {q.signature}"
            if hit:
                case.quarantine = Quarantine(
                    issue=q.issue,
                    reason=q.reason,
                    until=q.until.isoformat(),
                    matched=matched,
                    expired=today > q.until,
                )
                break


def quarantined(case: CaseResult) -> bool:
    """Whether a quarantine holds for the case tonight (it runs, is reported, does not gate)."""
    return case.quarantine is not None and not case.quarantine.expired


# ---- flake budget ------------------------------------------------------------------------------


def flake_budget_exceeded(case: CaseResult) -> bool:
    fr, budget = case.flake_rate, case.flake_budget
    return fr is not None and budget is not None and fr.flaky > budget.max_flaky


def describe_flake_budget(case: CaseResult) -> str:
    """`flake budget exceeded (3 of 10; 2 allowed)`: flaky nights of the nights counted."""
    fr, budget = case.flake_rate, case.flake_budget
    assert fr is not None and budget is not None
    return f"flake budget exceeded ({fr.flaky} of {fr.nights}; {budget.max_flaky} allowed)"


def over_flake_budget(results: RunResults) -> list[CaseResult]:
    """The cases over their flake budget that a quarantine does not hold."""
    return [c for c in results.cases if flake_budget_exceeded(c) and not quarantined(c)]
