"""Exit codes that tell the truth: --fail-on-skipped fails the run, says which cases, and
junit.xml marks them failed (--fail-on-degraded: tests/unit/test_junit_gating.py)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest
from nightly_helpers import by_id, run_nightly, write_suite
from nightly_helpers import ref_case as case

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="the netns runtime needs root here"),
]


def test_fail_on_skipped_names_the_cases_and_junit_fails_them(tmp_path) -> None:
    cases = [case("fine"), case("needs_gpus", num_gpus=8)]  # skipped: no 8 GPUs here
    suite = write_suite(tmp_path, cases)
    code, results, run_dir, err = run_nightly(
        suite, tmp_path / "runs", "netns", "--fail-on-skipped"
    )
    outcomes = {cid: c["outcome"] for cid, c in by_id(results).items()}
    assert outcomes == {"fine": "passed", "needs_gpus": "skipped"}, err
    assert code == 1, err
    assert "--fail-on-skipped: 1 skipped: needs_gpus (needs 8 GPUs" in err
    suite_el = ET.parse(run_dir / "junit.xml").getroot().find("testsuite")
    assert suite_el is not None
    assert suite_el.get("failures") == "1" and suite_el.get("skipped") == "0"
    failed = {tc.get("name") for tc in suite_el.iter("testcase") if tc.find("failure") is not None}
    assert failed == {"needs_gpus"}


def test_without_the_flag_a_skipped_case_passes(tmp_path) -> None:
    suite = write_suite(tmp_path, [case("fine"), case("needs_gpus", num_gpus=8)])
    code, _, run_dir, err = run_nightly(suite, tmp_path / "runs", "netns")
    assert code == 0, err
    suite_el = ET.parse(run_dir / "junit.xml").getroot().find("testsuite")
    assert suite_el is not None and suite_el.get("failures") == "0"
    assert suite_el.get("skipped") == "1"
