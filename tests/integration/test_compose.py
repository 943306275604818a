"""compose.yaml as a user runs it with Debian's docker-compose (v1): it validates, and its `case`
service runs a case in a sandbox with no network that writes into ./runs on the host."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

import docker
import lab
from lab.config import load_suite
from lab.contract import Outcome, load_result
from lab.files import write_json_atomic
from lab.host.plan import RunContext, attempt_request, plan_cases
from lab.results.store import RunDir, new_run_id

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE = shutil.which("docker-compose")
pytestmark = pytest.mark.skipif(
    COMPOSE is None, reason="needs Debian's docker-compose (apt-get install -y docker-compose)"
)


def compose(*args: str, project_dir: Path = REPO_ROOT, **env: str) -> str:
    assert COMPOSE is not None
    proc = subprocess.run(
        [
            COMPOSE,
            "--project-directory",
            str(project_dir),
            "-f",
            str(REPO_ROOT / "compose.yaml"),
            *args,
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_compose_file_is_valid_with_and_without_the_gpu_and_sglang_profiles() -> None:
    compose("config", "--quiet")
    services = compose("--profile", "gpu", "--profile", "sglang", "config", "--services").split()
    assert sorted(services) == ["case", "case-gpu", "reference", "sglang"]


def test_case_services_run_lab_case_without_network_and_with_the_runs_folder() -> None:
    yaml = pytest.importorskip("yaml")
    services = yaml.safe_load(compose("--profile", "gpu", "config"))["services"]
    for name in ("case", "case-gpu"):
        case = services[name]
        assert case["entrypoint"] == ["lab", "case"]
        assert case["network_mode"] == "none"
        assert f"{REPO_ROOT / 'runs'}:/runs:rw" in case["volumes"]
    (device,) = services["case-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]


@pytest.mark.docker
def test_case_service_sees_only_loopback_and_writes_into_runs_on_the_host(
    docker_client: docker.DockerClient, reference_image: str, tmp_path: Path
) -> None:
    (tmp_path / "runs").mkdir()
    project = f"labtest{uuid.uuid4().hex[:8]}"
    probe = (
        "import os, pathlib; "
        "pathlib.Path('/runs/probe.txt').write_text(' '.join(sorted(os.listdir('/sys/class/net'))))"
    )
    env = {"LAB_VERSION": lab.__version__, "LAB_USER": f"{os.getuid()}:{os.getgid()}"}
    try:
        compose(
            "-p", project, "run", "--rm", "--entrypoint", "python3", "case", "-c", probe,
            project_dir=tmp_path, **env,
        )  # fmt: skip
    finally:
        compose("-p", project, "down", project_dir=tmp_path, **env)
    assert (tmp_path / "runs" / "probe.txt").read_text() == "lo"


@pytest.mark.docker
def test_readme_recipe_reruns_a_nightly_spec_and_its_result_lands_on_the_host(
    docker_client: docker.DockerClient, reference_image: str, tmp_path: Path
) -> None:
    """`docker-compose run --rm case /runs/<run-id>/attempts/<case>__a1/spec.json`, from a
    checkout holding ./runs and ./configs, on the spec the nightly writes (host paths in it)."""
    shutil.copytree(REPO_ROOT / "configs", tmp_path / "configs")
    loaded = load_suite(tmp_path / "configs" / "reference.json")
    (case,) = [c for c in loaded.suite.cases if c.id == "ref_t2i_tiny"]
    run_dir = RunDir.create(tmp_path / "runs", new_run_id())
    (plan,) = plan_cases(loaded, [case], [], None)
    spec, _ = attempt_request(
        RunContext(loaded, [], run_dir.path, run_dir.run_id), plan, plan.ladder.rungs[0], 1, []
    )
    attempt_dir = Path(spec.out_dir)
    attempt_dir.mkdir(parents=True)
    write_json_atomic(attempt_dir / "spec.json", spec.model_dump(mode="json"))

    project = f"labtest{uuid.uuid4().hex[:8]}"
    # What a shell in the checkout gives docker-compose: $PWD.
    env = {"PWD": str(tmp_path), "LAB_VERSION": lab.__version__}
    env["LAB_USER"] = f"{os.getuid()}:{os.getgid()}"
    spec_in_container = f"/runs/{run_dir.run_id}/attempts/{attempt_dir.name}/spec.json"
    try:
        compose(
            "-p", project, "run", "--rm", "case", spec_in_container, project_dir=tmp_path, **env
        )
    finally:
        compose("-p", project, "down", project_dir=tmp_path, **env)
    result = load_result(attempt_dir / "result.json")
    assert result.outcome is Outcome.passed, result.reason
    (fr,) = result.frameworks
    assert Path(fr.log_path).is_file() and Path(fr.log_path).parent == run_dir.logs
