"""Two lab runs on one machine at the same time: both say the host was shared, and with whom."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nightly_helpers import ref_case, run_nightly, slow_case, start_nightly, write_suite

from lab.host.neighbours import REGISTRY_ENV

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the netns runtime needs root here")


def _latest(out: Path) -> dict:
    return json.loads(((out / "latest").resolve() / "results.json").read_text())


def test_two_nightlies_at_once_both_say_the_host_was_shared(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    env = {REGISTRY_ENV: str(registry)}
    suite = write_suite(tmp_path, [ref_case("ref_a", steps=20, size=128)])
    runs = [start_nightly(suite, tmp_path / f"runs{i}", "netns", env=env) for i in (1, 2)]
    for p in runs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out
    first, second = _latest(tmp_path / "runs1"), _latest(tmp_path / "runs2")
    assert first["shared_host"] is True and second["shared_host"] is True
    assert first["shared_with"] == [second["run_id"]]
    assert second["shared_with"] == [first["run_id"]]
    assert first["host"] == os.uname().nodename
    assert list(registry.iterdir()) == []  # both unregistered at the end


def test_a_lone_nightly_is_unshared_and_ignores_a_dead_registration(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    # A run that was SIGKILLed: its registration stayed, its process is gone.
    whoami = "from lab.host.runtimes.base import host_identity; print(host_identity())"
    dead = subprocess.run(
        [sys.executable, "-c", whoami],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    stale = registry / "20261201T000000Z-dead.json"
    stale.write_text(json.dumps({"run_id": "20261201T000000Z-dead", "host": dead}))

    code, results, _, err = run_nightly(
        write_suite(tmp_path, [ref_case("ref_a")]),
        tmp_path / "runs",
        "netns",
        env={REGISTRY_ENV: str(registry)},
    )
    assert code == 0, err
    assert results["shared_host"] is False and results["shared_with"] == []
    assert list(registry.iterdir()) == []  # the dead one removed, its own gone at the end


def test_a_nightly_stopped_by_ctrl_c_unregisters(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    p = start_nightly(
        write_suite(tmp_path, [slow_case("ref_slow")]),
        tmp_path / "runs",
        "netns",
        env={REGISTRY_ENV: str(registry)},
    )
    deadline = time.monotonic() + 60
    while not list(registry.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(registry.glob("*.json")), "the run never registered"
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 130, out
    assert list(registry.iterdir()) == []
