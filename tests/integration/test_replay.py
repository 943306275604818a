"""`lab replay RUN/manifest.json` end to end: a real nightly, then exactly that again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nightly_helpers import ROOT, by_id, run_nightly, write_suite
from nightly_helpers import ref_case as case


def replay(manifest: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab.cli", "replay", str(manifest), "--out", str(out), *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


# netns: every server keeps port 30000 without meeting another test's server on the host.
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="the netns runtime needs root here"),
]


def run_dirs(out: Path) -> set[str]:
    return {p.name for p in out.iterdir() if p.is_dir() and not p.is_symlink()}


def test_replay_reruns_one_case_of_a_real_run(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    suite = write_suite(tmp_path, [case("alpha"), case("beta")])
    code, first, run_dir, err = run_nightly(suite, out, "netns")
    assert code == 0, err
    before = run_dirs(out)

    r = replay(run_dir / "manifest.json", out, "--case", "alpha")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    new = run_dirs(out) - before
    assert len(new) == 1, f"one new run folder, got {new}"
    again = json.loads((out / new.pop() / "results.json").read_text())
    assert list(by_id(again)) == ["alpha"] and by_id(again)["alpha"]["outcome"] == "passed"
    assert again["runtime"] == first["runtime"] == "netns"
    # the same case, the same server command
    cmd = by_id(first)["alpha"]["attempts"][0]["frameworks"][0]["command"]
    assert by_id(again)["alpha"]["attempts"][0]["frameworks"][0]["command"][1:] == cmd[1:]


def test_replay_of_a_changed_case_exits_2_and_leaves_no_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    suite = write_suite(tmp_path, [case("alpha")])
    code, _, run_dir, err = run_nightly(suite, out, "netns")
    assert code == 0, err
    data = json.loads(suite.read_text())
    data["cases"][0]["seed"] = 7
    suite.write_text(json.dumps(data))
    before = run_dirs(out)

    r = replay(run_dir / "manifest.json", out)
    assert r.returncode == 2, r.stderr
    assert "case alpha changed" in r.stderr and "seed" in r.stderr
    assert "Traceback" not in r.stderr
    assert run_dirs(out) == before
