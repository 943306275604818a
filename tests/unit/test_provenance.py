"""Which commit a night tested, and where that came from; the lab's own commit only from the
lab's own checkout (not a repository that happens to surround it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lab.contract import AttemptResult, FrameworkResult, Outcome
from lab.host.run import image_labels
from lab.results.model import CaseResult, RunResults
from lab.results.store import (
    lab_commit_and_reason,
    run_commit_and_source,
    run_commit_fields,
    settle_commit,
)


def _git(d: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=d, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def test_a_lab_unpacked_inside_another_repository_has_no_commit_and_says_why(
    tmp_path: Path,
) -> None:
    outer = tmp_path / "other-project"
    (outer / "vendor" / "nightly-lab" / "lab").mkdir(parents=True)
    _git(outer, "init", "-q")
    _git(outer, "commit", "-q", "--allow-empty", "-m", "x")
    sha, why = lab_commit_and_reason(outer / "vendor" / "nightly-lab")
    assert sha is None and "not the top of a git checkout" in why and str(outer) in why
    # its own checkout: its HEAD
    own = tmp_path / "lab-checkout"
    own.mkdir()
    _git(own, "init", "-q")
    _git(own, "commit", "-q", "--allow-empty", "-m", "y")
    assert lab_commit_and_reason(own) == (_git(own, "rev-parse", "HEAD"), "")
    sha, why = lab_commit_and_reason(tmp_path / "nowhere")
    assert sha is None and why


def test_commit_under_test_from_flag_then_ci_never_the_lab_checkout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LAB_COMMIT_SHA", raising=False)
    monkeypatch.setenv("GITHUB_SHA", "a" * 40)
    assert run_commit_and_source("b" * 40) == ("b" * 40, "--commit")
    assert run_commit_and_source(None) == ("a" * 40, "GITHUB_SHA")
    monkeypatch.setenv("LAB_COMMIT_SHA", " " + "d" * 40 + "\n")
    assert run_commit_and_source(None) == ("d" * 40, "LAB_COMMIT_SHA")
    monkeypatch.delenv("LAB_COMMIT_SHA")
    monkeypatch.delenv("GITHUB_SHA")
    # this test runs inside the lab's own git checkout: its HEAD is not the code under test
    assert lab_commit_and_reason()[0] is not None
    assert run_commit_and_source(None) == (None, None)
    fields = run_commit_fields(None)
    assert fields["commit_sha"] is None and "not known yet" in fields["commit_unknown_because"]


def _case(cid: str, image: str | None, *versions: tuple[str, str | None]) -> CaseResult:
    """A finished case whose frameworks reported (framework, server_version)."""
    frs = [
        FrameworkResult(framework=f, outcome=Outcome.passed, server_version=v) for f, v in versions
    ]
    att = AttemptResult(
        run_id="r", case_id=cid, attempt=1, rung="as_configured", outcome=Outcome.passed,
        frameworks=frs, started_at=0.0, finished_at=1.0,
    )  # fmt: skip
    return CaseResult(case_id=cid, outcome=Outcome.passed, image=image, attempts=[att])


LABELS = {
    "nightly-lab/sglang:v0.5.23-lab0.1.0": {
        "nightly-lab.sglang-tag": "v0.5.23",
        "org.opencontainers.image.version": "v0.5.23",
        "org.opencontainers.image.revision": "",  # empty: not known, the version label counts
    },
    "sglang-from-source:dev": {
        "org.opencontainers.image.revision": "e" * 40,
        "org.opencontainers.image.version": "v0.5.24.dev",
    },
    "nightly-lab/reference:0.1.0": {"nightly-lab.version": "0.1.0"},  # no source label
}


def _settled(*cases: CaseResult, commit: str | None = None) -> RunResults:
    r = RunResults(run_id="r", timestamp="t", **run_commit_fields(commit), cases=list(cases))
    settle_commit(r, LABELS.get)
    return r


def test_late_sources_image_label_then_server_version_then_null_with_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LAB_COMMIT_SHA", raising=False)
    monkeypatch.delenv("GITHUB_SHA", raising=False)
    sg = "nightly-lab/sglang:v0.5.23-lab0.1.0"
    ref = "nightly-lab/reference:0.1.0"
    # --commit (or CI) wins over everything known later
    r = _settled(_case("a", sg, ("sglang", "0.5.23")), commit="c" * 40)
    assert (r.commit_sha, r.commit_source, r.commit_unknown_because) == ("c" * 40, "--commit", None)
    # the image's revision label before its version label; an unlabelled image adds nothing
    r = _settled(_case("a", "sglang-from-source:dev", ("sglang", "0.5.24")), _case("b", ref))
    assert (r.commit_sha, r.commit_source) == ("e" * 40, "image-label:sglang-from-source:dev")
    r = _settled(_case("a", sg, ("sglang", "0.5.23")), _case("b", sg))
    assert (r.commit_sha, r.commit_source, r.commit_unknown_because) == (
        "v0.5.23", f"image-label:{sg}", None,
    )  # fmt: skip
    # no labelled image (netns, local: no image at all): the version the server reported
    r = _settled(_case("a", ref, ("reference", None), ("sglang", "0.5.23")), _case("b", None))
    assert (r.commit_sha, r.commit_source) == ("0.5.23", "server-version:sglang")
    # nothing known: null, and why, source by source
    r = _settled(_case("a", ref, ("reference", None)))
    assert (r.commit_sha, r.commit_source) == (None, None)
    assert r.commit_unknown_because == (
        "no --commit, LAB_COMMIT_SHA or GITHUB_SHA; no framework image has a label "
        "org.opencontainers.image.revision or org.opencontainers.image.version; "
        "no server reported its version"
    )
    # sources that disagree name no commit: they say what disagreed
    r = _settled(_case("a", sg), _case("b", "sglang-from-source:dev"))
    assert r.commit_sha is None
    assert f"v0.5.23 ({sg}); {'e' * 40} (sglang-from-source:dev)" in str(r.commit_unknown_because)
    data = r.to_results_json()
    assert data["commit_sha"] is None and "disagree" in data["commit_unknown_because"]
    assert RunResults.from_results_json(data) == r


def test_docker_image_info_carries_the_labels() -> None:
    from lab.host.runtimes.docker import DockerRuntime

    try:
        runtime = DockerRuntime()
        runtime.check()
    except Exception as e:
        pytest.skip(f"no Docker engine here: {e}")
    images = runtime.client.images.list(filters={"label": "nightly-lab.version"})
    if not images:
        pytest.skip("no image with a nightly-lab.version label (make images)")
    info = runtime.image_info(images[0].tags[0])
    assert info is not None and info["labels"]["nightly-lab.version"]
    assert image_labels(runtime, images[0].tags[0]) == info["labels"]
    assert image_labels(runtime, "nightly-lab/no-such-image:0") is None


def test_the_commit_source_lands_in_results_json(tmp_path: Path) -> None:
    from lab.results.model import RunResults

    r = RunResults(run_id="r", timestamp="t", commit_sha="c" * 40, commit_source="--commit")
    data = r.to_results_json()
    assert (data["commit_sha"], data["commit_source"]) == ("c" * 40, "--commit")
    assert RunResults.from_results_json(data) == r
