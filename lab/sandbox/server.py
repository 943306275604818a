"""The server process: its own process group, its output teed line by line into a timestamped log
and watched for fatal lines, stopped TERM → grace → KILL with nothing of its group left."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil

from lab.sandbox.watch import FatalMatch, LineClassifier

TAIL_LINES = 80
_READ_SIZE = 1 << 20


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
