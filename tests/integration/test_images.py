"""The images `make setup` builds, as the lab and its users meet them: what is inside the reference
image, who it runs as, its labels, and that re-running the set-up rebuilds only what changed."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import docker
import lab

pytestmark = pytest.mark.docker

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_in(client: docker.DockerClient, image: str, *command: str) -> str:
    """Run a command in a fresh container with no network at all; its stdout."""
    out = client.containers.run(image, list(command), network_mode="none", remove=True)
    return out.decode().strip()


def build_images(*args: str, cwd: Path = REPO_ROOT, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(cwd / "docker" / "build-images.sh"), *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def current_reference_image(reference_image: str) -> str:
    """The reference image brought up to date with the checkout as it is now (a no-op in CI, where
    nothing edits the sources between set-up and tests)."""
    build_images("reference")
    return reference_image


def test_reference_image_is_labelled_with_the_lab_version_and_the_checkouts_source_hash(
    docker_client: docker.DockerClient, current_reference_image: str
) -> None:
    labels = docker_client.images.get(current_reference_image).labels
    assert labels["nightly-lab.version"] == lab.__version__
    assert labels["nightly-lab.source-hash"] == build_images("hash").stdout.strip()


def test_reference_image_runs_as_the_unprivileged_lab_user(
    docker_client: docker.DockerClient, reference_image: str
) -> None:
    assert run_in(docker_client, reference_image, "id", "-u", "-n") == "lab"
    assert run_in(docker_client, reference_image, "id", "-u") == "1000"
    assert run_in(docker_client, reference_image, "id", "-g") == "1000"


def test_lab_and_its_heavy_dependencies_import_with_no_network(
    docker_client: docker.DockerClient, reference_image: str
) -> None:
    script = "import diffusers, lab, torch; print(lab.__version__, torch.__version__)"
    version, torch_version = run_in(docker_client, reference_image, "python", "-c", script).split()
    assert version == lab.__version__
    assert torch_version.startswith("2.13.0")
    lab_script = run_in(docker_client, reference_image, "sh", "-c", "command -v lab")
    assert lab_script == "/opt/lab/bin/lab"


def test_lab_install_in_the_image_cannot_be_changed_by_the_case(
    docker_client: docker.DockerClient, reference_image: str
) -> None:
    # The user `lab` runs cases; the installed lab and its dependencies belong to root.
    out = run_in(
        docker_client, reference_image, "sh", "-c", "touch /opt/lab/bin/x 2>&1 || echo refused"
    )
    assert out.endswith("refused")


def test_base_image_has_debians_python_3_11(docker_client: docker.DockerClient) -> None:
    out = run_in(
        docker_client,
        "nightly-lab/base:bookworm",
        "python3",
        "-c",
        "import sys; print(*sys.version_info[:2])",
    )
    assert out == "3 11"


def test_host_empty_image_holds_no_files(docker_client: docker.DockerClient) -> None:
    # The `host` image mode mounts the host's system folders into it; it must bring nothing.
    assert docker_client.images.get("nightly-lab/host-empty:latest").attrs["Size"] == 0


def test_building_again_without_a_source_change_keeps_the_image(
    docker_client: docker.DockerClient, current_reference_image: str
) -> None:
    before = docker_client.images.get(current_reference_image).id
    started = time.monotonic()
    out = build_images("reference").stdout
    assert f"{current_reference_image}: up to date" in out
    assert docker_client.images.get(current_reference_image).id == before
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_a_change_to_the_lab_rebuilds_only_the_lab_layers(
    docker_client: docker.DockerClient, reference_image: str, tmp_path: Path
) -> None:
    # A copy of the checkout with one line added to the lab, built under a throw-away name.
    copy = tmp_path / "checkout"
    copy.mkdir()
    for name in ("pyproject.toml", ".dockerignore"):
        shutil.copy2(REPO_ROOT / name, copy / name)
    for name in ("lab", "docker"):
        shutil.copytree(REPO_ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    build_images("wheelhouse")  # absent when the image came from another checkout's set-up
    wheelhouse = REPO_ROOT / "build" / "wheelhouse"
    (copy / "build").mkdir()
    shutil.copytree(wheelhouse, copy / "build" / "wheelhouse", copy_function=os.link)
    with (copy / "lab" / "__init__.py").open("a") as f:
        f.write("# a change\n")

    repo = f"nightly-lab/reference-test-{uuid.uuid4().hex[:8]}"
    try:
        started = time.monotonic()
        build_images("reference", cwd=copy, REFERENCE_IMAGE=repo, VENV=str(REPO_ROOT / ".venv"))
        took = time.monotonic() - started
        ref = docker_client.images.get(reference_image)
        new = docker_client.images.get(f"{repo}:{lab.__version__}")
        assert new.labels["nightly-lab.source-hash"] != ref.labels["nightly-lab.source-hash"]
        ref_layers, new_layers = ref.attrs["RootFS"]["Layers"], new.attrs["RootFS"]["Layers"]
        # base, user, dependencies: shared; the lab's wheel and its install: new.
        assert new_layers[:-2] == ref_layers[:-2]
        assert new_layers[-2:] != ref_layers[-2:]
        assert took < 120, f"a lab-only rebuild took {took:.0f} s"
    finally:
        for tag in (f"{repo}:{lab.__version__}", f"{repo}:latest"):
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client.images.remove(tag)


def setup(*steps: str) -> str:
    proc = subprocess.run(
        [str(REPO_ROOT / "docker" / "setup.sh"), *steps],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_setup_run_again_finds_nothing_to_do(docker_client: docker.DockerClient) -> None:
    setup("venv", "engine")  # catches up with edits made since `make test` ran the set-up
    started = time.monotonic()
    out = setup("venv", "engine")
    assert "venv: up to date" in out
    assert "Docker engine: up" in out
    assert time.monotonic() - started < 10
