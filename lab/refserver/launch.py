"""Running a reference server as a child process, for the latency benchmark and the memory table:
start it on a free loopback port, wait for /health, read each rank's peak RSS, stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import IO, Any

import psutil
import requests

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def peak_rss_mib(pid: int) -> float:
    """The kernel's high-water mark of the process's resident memory (VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


@dataclass
class Launched:
    proc: subprocess.Popen[bytes]
    port: int
    started: float

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def rank_pids(self) -> list[int]:
        """Rank 0, then the cfg-parallel rank if there is one."""
        return [self.proc.pid, *(c.pid for c in psutil.Process(self.proc.pid).children())]

    def wait_healthy(self, timeout: float = 600) -> float:
        """Seconds from the start until /health answered 200; RuntimeError if it died first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with code {self.proc.returncode}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return time.perf_counter() - self.started
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or too busy warming up to answer in 2 s
            time.sleep(0.05)
        raise RuntimeError(f"server not healthy within {timeout} s")

    def post(self, path: str, body: dict[str, Any], timeout: float = 3600) -> requests.Response:
        return requests.post(self.url + path, json=body, timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def launch(args: list[str], *, log: IO[bytes] | None = None) -> Launched:
    port = free_port()
    command = [sys.executable, "-m", "lab.refserver", "--host", HOST, "--port", str(port), *args]
    env = {k: v for k, v in os.environ.items() if k != "REFSERVER_FAULT"}
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT if log else None)
    return Launched(proc, port, started)
