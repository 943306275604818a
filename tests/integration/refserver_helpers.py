"""Running the real reference server in tests: a process on a free loopback port, its merged
stdout/stderr collected line by line, and waits that fail as soon as the process has exited."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class ServerExited(AssertionError):
    """The server process ended while a test was waiting for something else."""


class RefServer:
    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.args = ["--host", HOST, "--port", str(self.port), *args]
        self.env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        if "REFSERVER_FAULT" not in (env or {}):
            self.env.pop("REFSERVER_FAULT", None)  # only the faults a test asks for
        self.preexec_fn = preexec_fn
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> RefServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lab.refserver", *self.args],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=self.preexec_fn,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def _fail_exited(self, expected: str) -> None:
        raise ServerExited(
            f"expected {expected}, but the server exited with {self.proc and self.proc.returncode}"
            f"; last log lines:\n" + "\n".join(self.lines[-25:])
        )

    def wait_for_line(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if text in line:
                        return line
                seen = len(self.lines)
                if self.exited() and seen == len(self.lines):
                    # the reader may still hold buffered lines: give it a moment
                    if not self._changed.wait(0.5):
                        self._fail_exited(f"a log line with {text!r}")
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no log line with {text!r} within {timeout} s; log:\n"
                        + "\n".join(self.lines[-25:])
                    )
                self._changed.wait(min(left, 0.2))

    def _wait_status(self, path: str, status: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.exited():
                self._fail_exited(f"GET {path} -> {status}")
            try:
                last = requests.get(self.url + path, timeout=2).status_code
                if last == status:
                    return
            except requests.ConnectionError as e:
                last = e
            time.sleep(0.05)
        raise AssertionError(
            f"GET {path} gave {last}, not {status}, within {timeout} s:\n{self.log()}"
        )

    def wait_live(self, timeout: float = 30) -> RefServer:
        self._wait_status("/liveness", 200, timeout)
        return self

    def wait_ready(self, timeout: float = 90) -> RefServer:
        self._wait_status("/health", 200, timeout)
        return self

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server still running after {timeout} s:\n{self.log()}") from None
        if self._reader is not None:
            self._reader.join(5)  # the last lines (a traceback) are read after the exit
        return code

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=kw.pop("timeout", 60), **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=kw.pop("timeout", 120), **kw)

    def card(self) -> dict[str, Any]:
        return self.get("/v1/models").json()["data"][0]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> RefServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
