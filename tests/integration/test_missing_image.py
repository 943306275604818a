"""A Docker image the engine lacks skips only the cases that need it, saying how to get it; the
other cases run. `lab repro` of such a case says so and starts nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from nightly_helpers import ROOT, by_id, run_nightly, sandbox_work_dir, write_suite
from nightly_helpers import ref_case as case

pytestmark = pytest.mark.docker

MISSING = "nightly-lab/does-not-exist:1"


@pytest.fixture
def suite(request: pytest.FixtureRequest, reference_image: str) -> Path:
    work = sandbox_work_dir(request, "missing-image-")
    return write_suite(work, [case("fine"), case("needs_missing", image=MISSING)])


def test_a_missing_image_skips_only_its_case(suite: Path) -> None:
    code, results, _, err = run_nightly(suite, suite.parent / "runs", "docker")
    cases = by_id(results)
    assert code == 0, err
    assert cases["fine"]["outcome"] == "passed", err
    skipped = cases["needs_missing"]
    assert skipped["outcome"] == "skipped"
    assert MISSING in skipped["reason"] and "docker load -i" in skipped["reason"]


def test_fail_on_skipped_fails_the_run_naming_the_missing_image(suite: Path) -> None:
    code, results, _, err = run_nightly(suite, suite.parent / "runs", "docker", "--fail-on-skipped")
    assert by_id(results)["fine"]["outcome"] == "passed", err
    assert code == 1, err
    assert f"--fail-on-skipped: 1 skipped: needs_missing (image {MISSING}" in err


@pytest.mark.parametrize("shell", [False, True], ids=["repro", "repro-shell"])
def test_repro_of_a_case_whose_image_is_missing_exits_2_before_anything_starts(
    suite: Path, shell: bool
) -> None:
    out = suite.parent / "repro-runs"
    argv = [sys.executable, "-m", "lab.cli", "repro", "needs_missing", "--config", str(suite)]
    argv += ["--runtime", "docker", "--gpus", "none", "--out", str(out)]
    r = subprocess.run(
        argv + (["--shell"] if shell else []),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 2, r.stderr
    assert f"case needs_missing cannot run here: image {MISSING} is not in the" in r.stderr
    assert not out.exists() or [p for p in out.iterdir() if p.is_dir()] == []
