"""ServerSession: the server's lifecycle around an attempt, whatever ends the attempt."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pytest

from lab.contract import FrameworkResult, Outcome
from lab.sandbox.server import ServerNotStarted, ServerSession
from lab.sandbox.telemetry import Nvml
from lab.sandbox.watch import LineClassifier


def _session(argv: list[str], tmp_path: Path) -> ServerSession:
    return ServerSession(
        argv, tmp_path / "server.log", env={}, classifier=LineClassifier(), nvml=Nvml(), devices=[]
    )


def test_an_error_inside_the_session_still_stops_the_server_and_keeps_its_log(
    tmp_path: Path,
) -> None:
    code = "import time; print('serving', flush=True); time.sleep(60)"
    session = _session([sys.executable, "-c", code], tmp_path)
    with pytest.raises(RuntimeError), session:
        pid = session.server.proc.pid
        while session.server.lines == 0:
            session.server.flush_log(0.05)
        raise RuntimeError("the attempt failed")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    res = FrameworkResult(framework="x", outcome=Outcome.passed)
    session.record(res)
    assert res.log_tail == ["serving"] and res.stopped_at is not None
    assert res.outcome is Outcome.passed and res.telemetry.samples >= 0


def test_a_command_that_cannot_start_is_said_so_before_the_session_begins(
    tmp_path: Path,
) -> None:
    with pytest.raises(ServerNotStarted) as e, _session(["/nonexistent/server"], tmp_path):
        pass
    assert e.value.error.strerror
