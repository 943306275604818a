"""Fixtures shared by the test tree: the Docker engine and the tags of the images set-up builds."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import docker
import lab
from lab.host.neighbours import REGISTRY_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def private_runs_registry(tmp_path_factory: pytest.TempPathFactory) -> None:
    """This session's lab runs register apart from other sessions' and real nightlies': a test's
    baseline night must not count as shared because someone else ran a nightly meanwhile."""
    os.environ[REGISTRY_ENV] = str(tmp_path_factory.mktemp("runs-registry"))


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The engine `make setup` started; the test skips, saying why, when none answers."""
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as e:
        pytest.skip(f"no Docker engine answers ({e}); `make setup` as root installs and starts one")
    yield client
    client.close()


@pytest.fixture(scope="session")
def reference_image(docker_client: docker.DockerClient) -> str:
    """Tag of the reference image for this checkout's lab version."""
    tag = f"nightly-lab/reference:{lab.__version__}"
    try:
        docker_client.images.get(tag)
    except docker.errors.ImageNotFound:
        pytest.skip(f"{tag} is not built: run `make images`")
    return tag
