"""e2e test files as `kind: test` cases: the shipped PR #24559 twin (a unittest file launching the
reference LLM server) OOMs at sglang's default mem fraction and climbs to `degraded` through the
rung's LAB_SERVER_EXTRA_ARGS; a failing assertion is `test_failed` with the test names from its
JUnit; a missing command is `crashed` with the shell's words; a test that never ends, `timeout`."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from nightly_helpers import ROOT, by_id, run_nightly, sandbox_work_dir, write_suite

from lab.errors import RuntimeUnavailable
from lab.host.runtimes.netns import NetnsRuntime

TWIN = "ref_llm_weight_checker_pr24559"
FAILING_TEST = """
import unittest

class TestArithmetic(unittest.TestCase):
    def test_one_is_one(self):
        self.assertEqual(1, 1)

    def test_two_is_three(self):
        print("about to fail", flush=True)
        self.assertEqual(2, 3, "two is not three")
"""


def _netns_or_skip(tmp: Path) -> None:
    try:
        NetnsRuntime(state_dir=tmp / "state").check()
    except RuntimeUnavailable as e:
        pytest.skip(f"no network namespaces here: {e}")


def _run_twin(out: Path, runtime: str) -> tuple[dict[str, Any], Path]:
    code, results, run_dir, err = run_nightly(
        ROOT / "configs" / "reference.json", out, runtime, "--case", TWIN
    )
    case = by_id(results)[TWIN]
    assert (code, case["outcome"]) == (0, "degraded"), err
    return case, run_dir


def _assert_twin_story(case: dict[str, Any], run_dir: Path) -> None:
    first, last = case["attempts"][0], case["attempts"][-1]
    assert (first["rung"], first["outcome"]) == ("mem-fraction-0.88", "oom")
    assert first["reason"].startswith("torch.OutOfMemoryError: CUDA out of memory. Tried to")
    fr = first["frameworks"][0]
    assert fr["stopped_at"] - fr["fatal_line_at"] < 1.0  # caught from the test's output
    assert last["rung"] == "mem-fraction-0.8" and last["outcome"] == "passed"
    extra = last["frameworks"][0]["env"]["LAB_SERVER_EXTRA_ARGS"]
    assert extra == "--device-memory-gib 0.4 --mem-fraction-static 0.8"
    junit = ET.parse(run_dir / "junit.xml").getroot()
    names = {tc.get("name") for tc in junit.iter("testcase")}
    assert {"test_b_snapshot_then_compare_unchanged_succeeds", TWIN} <= names
    assert junit.get("tests") == "4"


@pytest.mark.netns
def test_pr24559_cpu_twin_ooms_at_088_then_passes_degraded_in_netns(tmp_path: Path) -> None:
    _netns_or_skip(tmp_path)
    _assert_twin_story(*_run_twin(tmp_path / "runs", "netns"))


@pytest.mark.docker
@pytest.mark.slow
def test_pr24559_cpu_twin_ooms_at_088_then_passes_degraded_in_docker(
    request: pytest.FixtureRequest, reference_image: str, docker_client: Any
) -> None:
    work = sandbox_work_dir(request, "docker-e2e-")
    case, run_dir = _run_twin(work / "runs", "docker")
    _assert_twin_story(case, run_dir)
    assert case["image_id"].startswith("sha256:")
    label = f"nightly-lab.run-id={run_dir.name}"
    assert docker_client.containers.list(all=True, filters={"label": label}) == []


def test_failing_assertion_missing_command_and_endless_test(tmp_path: Path) -> None:
    (tmp_path / "test_fails.py").write_text(FAILING_TEST)
    cases = [
        {
            "id": "asserts",
            "kind": "test",
            "num_gpus": 0,
            "command": "{python} -m lab.e2e {config_dir}/test_fails.py --junit {out_dir}/j.xml",
            "junit_path": "j.xml",
        },
        {"id": "missing", "kind": "test", "num_gpus": 0, "command": "no-such-tool-xyz --run"},
        {
            "id": "endless",
            "kind": "test",
            "num_gpus": 0,
            "command": "echo still going; sleep 600",
            "startup_timeout_s": 2,
        },
    ]
    code, results, run_dir, err = run_nightly(write_suite(tmp_path, cases), tmp_path / "r", "local")
    got = by_id(results)
    assert code == 1, err
    asserts = got["asserts"]
    assert asserts["outcome"] == "test_failed" and len(asserts["attempts"]) == 1  # never climbs
    fr = asserts["attempts"][0]["frameworks"][0]
    assert fr["failed_tests"] == ["TestArithmetic.test_two_is_three"]
    assert "two is not three" in asserts["reason"]
    assert (
        got["missing"]["outcome"],
        got["missing"]["attempts"][0]["frameworks"][0]["exit_code"],
    ) == (
        "crashed",
        127,
    )
    assert "no-such-tool-xyz: not found" in got["missing"]["reason"]
    assert got["endless"]["outcome"] == "timeout"
    assert "still going" in got["endless"]["reason"]
    junit = ET.parse(run_dir / "junit.xml").getroot()
    failed = [tc for tc in junit.iter("testcase") if tc.find("failure") is not None]
    assert {"test_two_is_three", "asserts", "missing", "endless"} <= {
        tc.get("name") for tc in failed
    }
