"""`lab nightly --dry-run` prints what the sandbox will really run: the paths under --out, and
the interpreter of the sandbox (the image's under docker, the host's under netns)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nightly_helpers import ROOT

from lab.host.dry_run import REFERENCE_IMAGE_PYTHON
from lab.host.gpus import inventory

REFERENCE_SUITE = str(ROOT / "configs" / "reference.json")


def dry_run(runtime: str, out: Path) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "lab.cli", "nightly", "--dry-run", "--config", REFERENCE_SUITE,
         "--runtime", runtime, "--gpus", "none", "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.docker
def test_docker_dry_run_shows_the_images_interpreter_and_paths_under_out(
    tmp_path: Path, docker_client: Any
) -> None:
    out = tmp_path / "x"
    printed = dry_run("docker", out)
    assert f"reference: {REFERENCE_IMAGE_PYTHON} -m lab.refserver" in printed
    assert f"{sys.executable} -m lab.refserver" not in printed
    assert f"{out}/DRY-RUN/attempts/" in printed
    assert f"{ROOT}/runs" not in printed
    assert not out.exists()  # a dry run writes nothing


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="the netns runtime needs root here")
def test_netns_dry_run_shows_the_hosts_interpreter(tmp_path: Path) -> None:
    out = tmp_path / "x"
    printed = dry_run("netns", out)
    assert f"reference: {sys.executable} -m lab.refserver" in printed
    assert REFERENCE_IMAGE_PYTHON not in printed
    assert f"{out}/DRY-RUN/attempts/" in printed and f"{ROOT}/runs" not in printed


NIGHTLY_SUITE = str(ROOT / "configs" / "nightly.json")
needs_no_gpu = pytest.mark.skipif(
    bool(inventory()), reason="plans for GPUs absent here: this machine has GPUs"
)


def nightly(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab.cli", "nightly", "--config", NIGHTLY_SUITE, *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip


def served(printed: str, case: str) -> list[str]:
    """The `framework: argv` lines of one case's block."""
    block = printed.split(f"== {case} ", 1)[1].split("\n== ", 1)[0]
    return [ln.strip() for ln in block.splitlines() if ln.startswith("   sglang: ")]


@needs_no_gpu
@pytest.mark.parametrize(("gpus", "indices"), [("0,1,2,3", "0,1,2,3"), ("8", "0,1,2,3,4,5,6,7")])
def test_a_dry_run_plans_for_a_named_runner_on_a_machine_without_its_gpus(
    tmp_path: Path, gpus: str, indices: str
) -> None:
    r = nightly("--dry-run", "--gpus", gpus, "--out", str(tmp_path / "x"))
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    n = len(indices.split(","))
    assert first.startswith(f"# plan for a runner with {n} GPUs ({indices}), not present here")
    assert "skipped:" not in r.stdout  # every case fits a 4-GPU runner, so none is left out
    (wan,) = served(r.stdout, "wan22_t2v_a14b_720p")
    assert "--model-path Wan-AI/Wan2.2-T2V-A14B-Diffusers" in wan and "--num-gpus 4" in wan
    assert "CUDA_VISIBLE_DEVICES': '0,1,2,3'" in r.stdout  # the runner's first four GPUs
    assert not (tmp_path / "x").exists()


@needs_no_gpu
def test_without_dry_run_absent_gpus_are_still_refused(tmp_path: Path) -> None:
    r = nightly("--gpus", "0,1,2,3", "--out", str(tmp_path / "x"))
    assert r.returncode == 2
    assert "--gpus 0,1,2,3: this machine has no GPU the lab can use" in r.stderr
    assert "plan for a runner" not in r.stdout
