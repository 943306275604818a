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
