"""`lab repro CASE --shell`: a shell in the very sandbox the nightly gives the case (docker
container with network none, or a fresh network namespace), with the server command ready.
The shell reads its commands from a pipe here, as a user's terminal would send them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nightly_helpers import ROOT, processes_mentioning, ref_case, sandbox_work_dir, write_suite

SESSION = """\
type serve
echo "interfaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' ')"
echo "uid: $(id -u)"
lab_case
echo "lab_case exit: $?"
exit 7
"""


def repro_shell(suite: Path, out: Path, runtime: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "lab.cli", "repro", "shelled", "--config", str(suite)]
    argv += ["--runtime", runtime, "--gpus", "none", "--out", str(out), "--shell"]
    return subprocess.run(
        argv, input=SESSION, capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def check_session(r: subprocess.CompletedProcess[str], out: Path) -> dict[str, Any]:
    said = r.stdout + r.stderr
    assert r.returncode == 7, said  # the shell's own exit code comes back
    assert "serve is a function" in said and "--model-path ref://tiny" in said
    assert "--port 30000" in said  # the default port: nothing else can be on it in there
    assert "interfaces: lo \n" in said, said  # loopback only
    assert "lab_case exit: 0" in said
    (attempt,) = out.glob("*/attempts/shelled__a1")
    result = json.loads((attempt / "result.json").read_text())
    assert result["outcome"] == "passed"
    assert processes_mentioning(attempt) == []
    return {"said": said, "attempt": attempt}


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the netns runtime needs root here")
def test_repro_shell_in_a_network_namespace(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, [ref_case("shelled")])
    got = check_session(repro_shell(suite, tmp_path / "runs", "netns"), tmp_path / "runs")
    assert f"uid: {os.getuid()}" in got["said"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker command is not installed")
def test_repro_shell_in_the_docker_sandbox(
    request: pytest.FixtureRequest, reference_image: str, docker_client: Any
) -> None:
    work = sandbox_work_dir(request, "repro-shell-")
    suite = write_suite(work, [ref_case("shelled")])
    got = check_session(repro_shell(suite, work / "runs", "docker"), work / "runs")
    assert "uid: 1000" in got["said"]  # the image's unprivileged user, as in the nightly
    run_id = got["attempt"].parents[1].name
    label = f"nightly-lab.run-id={run_id}"
    assert docker_client.containers.list(all=True, filters={"label": label}) == []
