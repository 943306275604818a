"""`lab export sglang-dashboard`: a run's results in sglang's comparison-results dialect.

Read at sgl-project/sglang, scripts/ci/utils/diffusion/: generate_diffusion_dashboard.py
(commit 13cf5569b24f55fb08ccdcd34738ca2d4050aa6a), post_diffusion_comparison_to_slack.py
(2f92ff035fa6a8fc41acf5eadd122214146a22fb), publish_comparison_results.py
(3bebcadb0af9b865c0563e040971ea25206b6cfb), and run_comparison.py, which writes the rows
(03635624690c11ff6ea89d288ca1854b521d9b1c). What follows from them:

- The dashboard reads, at the top: `timestamp`, `commit_sha`, `methodology` and
  `warmup_requests` (it keeps only history runs whose two are equal to the night's), `results`;
  per row: `case_id`, `framework`, `model`, `latency_s`, `measurement_count`,
  `first_request_latency_s`, `server_latency_s`, `server_latency_samples_s`,
  `missing_perf_dumps`, `server_stage_medians_ms`, `median_denoise_step_ms`. The lab's rows
  (results/model.row_fields) carry all of them under those names.
- Every case in the file is judged on its "sglang" row: no latency is ❌ "SGLang latency is N/A
  (broken)", a >5 % rise on the median of the 5 newest comparable runs ⚠️, slower than a
  competitor 🔴; any of the three raises "Action Required — Performance Alert" (an issue on
  GitHub in sglang's CI). Slack counts rows whose `latency_s` is null as failed. So the export
  holds only diffusion comparisons in which sglang ran (passed or failed: a failure is a real ❌);
  the rest is named in `methodology_notes`, never exported as broken.
- `methodology` stays one stable name per way of measuring, since the dashboard compares it for
  equality with its history: what a night left out (which changes night to night) goes to
  `methodology_notes` and `left_out`. A stand-in export gets its own `methodology`, so it never
  joins a real sglang history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lab.contract import Outcome
from lab.errors import LabError
from lab.results.model import CaseResult, RunResults

NAME = "sglang-dashboard"
SGLANG = "sglang"
# Lab servers that speak sglang's flags, API and perf dumps: what --stand-in may name.
STAND_INS = ("reference",)

# History as sglang keeps it: publish_comparison_results.py stores each night's export as
# diffusion-comparisons/{YYYY-MM-DD}_{run id}.json; the dashboard's --history-dir DIR reads
# DIR/*.json, newest first by file name (its 29 newest). Lab run ids start with their UTC start
# time, so names sort by time within a day too.
HISTORY_DIR = "diffusion-comparisons"

# Why a case is left out, in the order methodology_notes lists them.
NOT_DIFFUSION = "not a diffusion comparison (an LLM or test case)"
DID_NOT_RUN = "did not run ({outcome})"
NO_SGLANG = "no {name} row"


def history_file_name(results: RunResults) -> str:
    day = datetime.fromisoformat(results.timestamp.replace("Z", "+00:00")).astimezone(UTC)
    return f"{day:%Y-%m-%d}_{results.run_id}.json"


def check_stand_in(stand_in: str | None) -> None:
    if stand_in is not None and stand_in not in STAND_INS:
        raise LabError(
            f"--stand-in {stand_in!r}: only {', '.join(STAND_INS)} can stand in for sglang "
            "(a server that speaks sglang's flags, API and perf dumps)"
        )


def _ran(case: CaseResult) -> list[str]:
    return [fr.framework for fr in case.framework_results()] or case.frameworks


def _left_out_because(case: CaseResult, served_as_sglang: str) -> str | None:
    if case.kind != "comparison" or case.task == "chat":
        return NOT_DIFFUSION
    # skipped and interrupted never measured; infra_error is the lab's own failure, not sglang's
    if case.outcome in (Outcome.skipped, Outcome.interrupted, Outcome.infra_error):
        return DID_NOT_RUN.format(outcome=case.outcome)
    if SGLANG not in _ran(case) and served_as_sglang not in _ran(case):
        return NO_SGLANG.format(name=SGLANG if served_as_sglang == SGLANG else "sglang or stand-in")
    return None


def sglang_dashboard(results: RunResults, stand_in: str | None = None) -> dict[str, Any]:
    """The export: the lab's rows of the cases kept, `framework` as the dashboard reads it. With
    `stand_in` (a name in STAND_INS), that server's rows are exported as "sglang" in cases
    without a real sglang row, and `methodology` and `methodology_notes` say so."""
    check_stand_in(stand_in)
    served_as_sglang = stand_in or SGLANG
    left_out: dict[str, str] = {}
    kept: dict[str, CaseResult] = {}
    for case in results.cases:
        why = _left_out_because(case, served_as_sglang)
        if why:
            left_out[case.case_id] = why
        else:
            kept[case.case_id] = case
    rows = []
    for row in results.result_rows():
        keep = kept.get(row["case_id"])
        if keep is None:
            continue
        if stand_in and row["framework"] == stand_in and SGLANG not in _ran(keep):
            row = {**row, "framework": SGLANG, "served_by": stand_in}
        rows.append(row)
    notes = []
    if stand_in:
        notes.append(
            f"Stand-in: rows named sglang were served by the lab's {stand_in!r} server (it "
            "speaks sglang's flags, API and perf dumps), not by sglang; a demo of the "
            "dashboard, not a measurement of sglang."
        )
    for why in dict.fromkeys(left_out.values()):
        ids = [cid for cid, w in left_out.items() if w == why]
        notes.append(f"Left out {len(ids)} case(s): {why}: {', '.join(ids)}.")
    methodology = results.methodology + (f"+stand-in:{stand_in}" if stand_in else "")
    return {
        "timestamp": results.timestamp,
        "commit_sha": results.commit_sha,
        "commit_source": results.commit_source,
        "run_id": results.run_id,
        "methodology": methodology,
        "methodology_notes": notes,
        "warmup_requests": results.warmup_requests,
        "measurement_repeats": results.measurement_repeats,
        "export": NAME,
        "left_out": left_out,
        "results": rows,
    }
