"""Which commit a night tested, and where that came from; the lab's own commit only from the
lab's own checkout (not a repository that happens to surround it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lab.results.store import lab_commit_and_reason, run_commit_and_source


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


def test_commit_under_test_from_flag_then_ci_then_lab_checkout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LAB_COMMIT_SHA", raising=False)
    monkeypatch.setenv("GITHUB_SHA", "a" * 40)
    assert run_commit_and_source("b" * 40) == ("b" * 40, "--commit")
    assert run_commit_and_source(None) == ("a" * 40, "GITHUB_SHA")
    monkeypatch.delenv("GITHUB_SHA")
    sha, source = run_commit_and_source(None)
    assert (sha is None and source is None) or source == "lab checkout HEAD"


def test_the_commit_source_lands_in_results_json(tmp_path: Path) -> None:
    from lab.results.model import RunResults

    r = RunResults(run_id="r", timestamp="t", commit_sha="c" * 40, commit_source="--commit")
    data = r.to_results_json()
    assert (data["commit_sha"], data["commit_source"]) == ("c" * 40, "--commit")
    assert RunResults.from_results_json(data) == r
