"""The lab waits only for what a server produces: a `custom` server that writes no perf dumps
pays no wait and gets no note (the reference server's dumps and a server that stops writing
them: tests/integration/test_lab_case.py). Attempts carry their phase timings."""

from __future__ import annotations

import json
from pathlib import Path

from nightly_helpers import custom_image_case, run_nightly, write_suite


def test_two_custom_cases_without_perf_dumps_pay_no_wait_and_carry_their_phases(
    tmp_path: Path,
) -> None:
    suite = write_suite(
        tmp_path,
        [custom_image_case("c1"), custom_image_case("c2")],
        measurement_repeats=5,
        warmup_requests=1,
    )
    code, results, run_dir, err = run_nightly(suite, tmp_path / "out", "local")
    assert code == 0, err
    for case in results["cases"]:
        (attempt,) = case["attempts"]
        (fr,) = attempt["frameworks"]
        assert fr["measurement_count"] == 5
        assert not [n for n in fr["notes"] if "perf dump" in n], fr["notes"]
        assert fr["missing_perf_dumps"] == 0 and fr["server_latency_samples_s"] is None
        # the same numbers as the sandbox's own record of the attempt
        own = json.loads(
            (run_dir / "attempts" / f"{case['case_id']}__a1" / "result.json").read_text()
        )
        assert attempt["phase_timings_s"] == own["phase_timings_s"] == fr["phase_timings_s"]
        assert {"healthy", "ready", "warmup", "measure", "teardown"} <= set(fr["phase_timings_s"])
        # 6 requests of 0.2 s: far from the 25 s of a 5 s wait per measured request
        assert fr["phase_timings_s"]["measure"] < 10
        assert attempt["finished_at"] - attempt["started_at"] < 15
    summary = (run_dir / "summary.md").read_text()
    assert "## Where the time went" in summary and "measure 1." in summary
    assert (run_dir / "report.html").read_text().count('<div class="split">') == 2
