"""A real docker nightly names the commit under test from its framework image's OCI source label
when neither --commit nor CI names one (lab/results/store.py settle_commit)."""

from __future__ import annotations

import io
import secrets
from typing import Any

import pytest
from nightly_helpers import ref_case, run_nightly, sandbox_work_dir, write_suite

pytestmark = pytest.mark.slow


def test_a_docker_nightly_takes_the_commit_from_the_images_revision_label(
    request: pytest.FixtureRequest, reference_image: str, docker_client: Any
) -> None:
    sha = secrets.token_hex(20)
    tag = f"nightly-lab/provenance-test:{sha[:12]}"
    # The reference image with what a framework image built from a known commit carries.
    dockerfile = f"FROM {reference_image}\nLABEL org.opencontainers.image.revision={sha}\n"
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    request.addfinalizer(lambda: docker_client.images.remove(tag, force=True))
    work = sandbox_work_dir(request, "docker-provenance-")
    suite = write_suite(work, [ref_case("labelled", image=tag)])
    no_ci = {"LAB_COMMIT_SHA": "", "GITHUB_SHA": ""}
    code, run, _, err = run_nightly(suite, work / "runs", "docker", env=no_ci)
    assert code == 0, err
    assert (run["commit_sha"], run["commit_source"]) == (sha, f"image-label:{tag}")
    assert run["commit_unknown_because"] is None
    # --commit still wins over the label
    code, run, _, err = run_nightly(suite, work / "runs", "docker", "--commit", "c" * 40, env=no_ci)
    assert code == 0, err
    assert (run["commit_sha"], run["commit_source"]) == ("c" * 40, "--commit")
