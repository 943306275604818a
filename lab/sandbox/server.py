"""The server process: its own process group, its output teed line by line into a timestamped log
and watched for fatal lines, stopped TERM → grace → KILL with nothing of its group left; and the
session around it (telemetry, readiness, guarded requests, GPU release) that `lab case` uses."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import psutil
import requests

from lab.contract import FrameworkResult, Outcome, Phase, Telemetry
from lab.sandbox.client import BadResponse
from lab.sandbox.result import telling_line
from lab.sandbox.telemetry import Nvml, Sampler, wait_gpu_released
from lab.sandbox.watch import FatalMatch, LineClassifier

TAIL_LINES = 80
_READ_SIZE = 1 << 20
HEALTH_POLL_S = 0.02  # sglang's runner polls every 2 s; we poll 100x faster
GUARD_POLL_S = 0.02
STOP_GRACE_S = 3.0  # sglang waits 30 s before KILL
GPU_RELEASE_TIMEOUT_S = 60.0

T = TypeVar("T")


class AttemptEnded(Exception):
    """The attempt is over: carries the outcome and the one line that says why."""

    def __init__(self, outcome: Outcome, reason: str, exit_code: int | None = None) -> None:
        super().__init__(reason)
        self.outcome, self.reason, self.exit_code = outcome, reason, exit_code


class ServerNotStarted(Exception):
    """The server's command could not be started at all (not found, not executable)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class ServerProcess:
    """A server (or test command) whose every output line is logged and checked."""

    def __init__(
        self,
        argv: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        classifier: LineClassifier | None = None,
        echo: bool = False,
    ) -> None:
        self.argv = argv
        self.log_path = log_path
        self.classifier = classifier or LineClassifier()
        self.fatal: FatalMatch | None = None
        self.fatal_at: float | None = None  # time.time() when the line was read
        self.fatal_event = threading.Event()
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.lines = 0
        self.log_error: str | None = None
        self._echo = echo
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab", buffering=0)  # noqa: SIM115 - closed by the reader
        self._log.write(f"# lab: {' '.join(argv)}\n".encode())
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,  # its own process group: stop() signals all of it
        )
        self.pgid = self.proc.pid
        self.started_at = time.time()
        self._reader = threading.Thread(target=self._read, name="log-reader", daemon=True)
        self._reader.start()

    # --- output -------------------------------------------------------------------------------
    def _read(self) -> None:
        """Read big chunks (never line by line from Python) so a flood never blocks the server."""
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        pending = b""
        try:
            while True:
                chunk = os.read(fd, _READ_SIZE)
                if not chunk:
                    break
                data = pending + chunk
                cut = data.rfind(b"\n") + 1
                pending = data[cut:]
                if cut:
                    self._consume(data[:cut])
            if pending:
                self._consume(pending + b"\n")
        finally:
            self._log.close()

    def _consume(self, lines: bytes) -> None:
        now = time.time()
        if self.fatal is None:
            hit = self.classifier.scan_chunk(lines)
            if hit is not None:
                self.fatal, self.fatal_at = hit, now
                self.fatal_event.set()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)).encode() + b".%03d " % (
            int(now * 1000) % 1000
        )
        parts = lines.split(b"\n")[:-1]
        self.lines += len(parts)
        if self.log_error is None:
            try:
                self._log.write(b"".join(stamp + p + b"\n" for p in parts))
            except OSError as e:  # disk full: keep draining and watching, stop writing
                self.log_error = f"log writing stopped: {e.strerror} ({self.log_path})"
        for p in parts[-TAIL_LINES:]:
            self.tail.append(p.decode("utf-8", "replace"))
        if self._echo:
            os.write(2, lines)

    def tail_lines(self, n: int = TAIL_LINES) -> list[str]:
        return list(self.tail)[-n:]

    def flush_log(self, timeout_s: float = 2.0) -> None:
        """Wait (bounded) until the reader has drained the pipe after the process exited."""
        self._reader.join(timeout_s)

    # --- lifecycle ----------------------------------------------------------------------------
    def poll(self) -> int | None:
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def group_pids(self) -> set[int]:
        """Every live process of the server: its group plus descendants that left the group."""
        pids: set[int] = set()
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.proc.pid)
            pids.add(root.pid)
            pids.update(c.pid for c in root.children(recursive=True))
        for p in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getpgid(p.pid) == self.pgid:
                    pids.add(p.pid)
        return pids

    def stop(self, grace_s: float = 3.0) -> float:
        """TERM the group, KILL whatever is left after `grace_s`; return when none is left."""
        members = self.group_pids()
        self._signal_all(members, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self._alive_members(members):
            time.sleep(0.01)
        left = self._alive_members(members)
        if left:
            self._signal_all(left, signal.SIGKILL)
            end = time.monotonic() + 5.0
            while time.monotonic() < end and self._alive_members(left):
                time.sleep(0.01)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=1.0)
        self.flush_log()
        return time.time()

    def _signal_all(self, pids: set[int], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def _alive_members(self, pids: set[int]) -> set[int]:
        self.proc.poll()  # reap our direct child so it does not linger as a zombie
        alive = set()
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.add(pid)
            except psutil.Error:
                pass
        return alive


class ServerSession:
    """One server (or test command) from start to GPU release, as a context manager:

    enter: the GPU's PIDs before, the process, the telemetry sampler (ServerNotStarted when the
    command cannot start); exit: stop the group, keep its log tail and telemetry, wait until NVML
    lists none of its PIDs. `record` writes what the session saw onto a result."""

    def __init__(
        self,
        argv: list[str],
        log_path: Path,
        env: dict[str, str],
        classifier: LineClassifier,
        nvml: Nvml,
        devices: list[str],
        cwd: str | None = None,
        echo: bool = False,
    ) -> None:
        self._argv, self._log_path, self._env, self._cwd = argv, log_path, env, cwd
        self._classifier, self._echo = classifier, echo
        self._nvml, self._devices = nvml, devices
        self._server: ServerProcess | None = None
        self._sampler: Sampler | None = None
        self._gpu_before: set[int] = set()
        self.stopped_at: float | None = None
        self.telemetry = Telemetry()
        self.gpu_free_after_s: float | None = None
        self.gpu_release_error: str | None = None
        self.teardown_s = 0.0

    @property
    def server(self) -> ServerProcess:
        assert self._server is not None, "the session has not started"
        return self._server

    def __enter__(self) -> ServerSession:
        self._gpu_before = self._nvml.all_pids(self._devices)
        try:
            self._server = ServerProcess(
                self._argv,
                self._log_path,
                env=self._env,
                cwd=self._cwd,
                echo=self._echo,
                classifier=self._classifier,
            )
        except OSError as e:
            raise ServerNotStarted(e) from None
        self._sampler = Sampler(self._server.group_pids, self._nvml, self._devices).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server and wait for its GPU memory to be freed; a second call does nothing."""
        if self._server is None or self.stopped_at is not None:
            return
        t0 = time.monotonic()
        self.stopped_at = self._server.stop(STOP_GRACE_S)
        if self._sampler is not None:
            self.telemetry = self._sampler.stop()
        try:
            self.gpu_free_after_s = wait_gpu_released(
                self._nvml, self._devices, self._gpu_before, GPU_RELEASE_TIMEOUT_S
            )
        except TimeoutError as e:
            self.gpu_release_error = str(e)
        self.teardown_s = round(time.monotonic() - t0, 3)

    def record(self, res: FrameworkResult) -> None:
        """Stop time, fatal line time, log tail, telemetry; a GPU that was not freed makes a
        passed result an infra_error of the teardown."""
        server = self.server
        res.stopped_at = self.stopped_at
        res.fatal_line_at = server.fatal_at
        res.log_tail = server.tail_lines()
        if server.log_error:
            res.log_tail.append(f"[lab] {server.log_error}")
        res.telemetry = self.telemetry
        res.telemetry.gpu_free_after_s = self.gpu_free_after_s
        if self.gpu_release_error and res.outcome is Outcome.passed:
            res.outcome, res.phase = Outcome.infra_error, Phase.teardown
            res.reason = self.gpu_release_error

    # --- watching the server while the attempt waits on it ---------------------------------------
    def ended(self, phase_what: str) -> AttemptEnded | None:
        """An OOM/fatal line or an exited server, as the reason the attempt ends; else None."""
        server = self.server
        if server.fatal is None and server.poll() is not None:
            server.flush_log()  # the last lines may hold the OOM text
        if server.fatal is not None:
            kind = Outcome.oom if server.fatal.kind == "oom" else Outcome.crashed
            return AttemptEnded(kind, server.fatal.line)
        code = server.poll()
        if code is not None:
            last = telling_line(server.tail_lines())  # the log tail is kept on the result
            why = f"server exited with code {code} {phase_what}"
            return AttemptEnded(Outcome.crashed, f"{why}: {last}" if last else why, code)
        return None

    def wait_ready(
        self, base_url: str, health: str, ready: str | None, model: str, timeout_s: float
    ) -> float:
        """Health answers 200, then (when `ready`) the model card lists `model`; the server's
        death or a fatal line ends the wait at once. Returns when (monotonic) health said 200."""
        deadline = time.monotonic() + timeout_s
        http = requests.Session()
        healthy = False
        healthy_at = 0.0
        while True:
            ended = self.ended("during startup")
            if ended:
                raise ended
            try:
                if not healthy:
                    healthy = http.get(base_url + health, timeout=(0.2, 2.0)).status_code == 200
                    healthy_at = time.monotonic()
                if healthy and (ready is None or _lists_model(http, base_url + ready, model)):
                    return healthy_at
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                what = "ready (model listed)" if healthy else f"healthy ({health} 200)"
                raise AttemptEnded(Outcome.timeout, f"server not {what} after {timeout_s:g} s")
            time.sleep(HEALTH_POLL_S)

    def guarded(self, fn: Callable[[], T], timeout_s: float) -> T:
        """Run a request while watching the server: a fatal line or an exit ends it at once."""
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["value"] = fn()
            except BaseException as e:  # handed to the caller's thread below
                box["error"] = e

        t = threading.Thread(target=call, daemon=True)
        t.start()
        deadline = time.monotonic() + timeout_s
        while t.is_alive():
            t.join(GUARD_POLL_S)
            ended = self.ended("during a request")
            if ended:
                raise ended
            if time.monotonic() > deadline:
                raise AttemptEnded(Outcome.timeout, f"request not answered after {timeout_s:g} s")
        if "error" in box:
            err = box["error"]
            ended = self.ended("during a request")
            if ended:
                raise ended
            if isinstance(err, BadResponse):
                # A server that answers an error carrying the OOM text ran out of memory too.
                hit = self.server.classifier.classify_line(str(err))
                if hit is not None and hit.kind == "oom":
                    raise AttemptEnded(Outcome.oom, str(err))
                raise AttemptEnded(Outcome.bad_response, str(err))
            if isinstance(err, TimeoutError | requests.Timeout):
                raise AttemptEnded(Outcome.timeout, str(err))
            if isinstance(err, requests.RequestException):
                raise AttemptEnded(Outcome.bad_response, f"request failed: {err}")
            raise err
        value: T = box["value"]
        return value


def _lists_model(http: requests.Session, url: str, model: str) -> bool:
    r = http.get(url, timeout=(0.2, 2.0))
    if r.status_code != 200:
        return False
    try:
        cards = r.json().get("data", [])
    except (ValueError, AttributeError):
        return False
    return any(isinstance(c, dict) and model in (c.get("id"), c.get("root")) for c in cards)
