"""The process-sandbox machinery that the local and netns runtimes share: `lab case` as a process
tree in its own session and process group, a PID record so a later lab process can clean up
after a killed host, TERM then KILL. A sandbox's processes are found by recorded ids only: the
leader's pid + create time, and a random token every process of the sandbox inherits in its
environment. Never by name."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

from lab.files import read_json, write_json_atomic
from lab.host.runtimes.base import (
    SandboxExit,
    SandboxInfraError,
    SandboxRequest,
    env_assignments,
    exit_status,
    gpu_env,
    host_alive,
    host_identity,
    host_lab_case_command,
    lab_source_dir,
    read_tail,
    sandbox_name,
    with_pythonpath,
)
from lab.redact import redact_env

SANDBOX_TOKEN_ENV = "NIGHTLY_LAB_SANDBOX"  # inherited by every process of one sandbox


def default_state_dir() -> Path:
    """Where PID records live while sandboxes run; gone at reboot, as their processes are."""
    return Path(tempfile.gettempdir()) / f"nightly-lab-{os.getuid()}" / "sandboxes"


class ProcessRecord:
    """What a later lab process needs to find a sandbox's processes again: ids, never names."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def run_id(self) -> str:
        return str(self.data["run_id"])

    @property
    def pid(self) -> int:
        return int(self.data["pid"])

    @property
    def token(self) -> str:
        return str(self.data["token"])

    @property
    def create_time(self) -> float:
        return float(self.data["create_time"])

    def leader(self) -> psutil.Process | None:
        """The recorded leader, if that pid is still the very process we started."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) < 0.05:
                return proc
        except psutil.Error:
            pass
        return None

    def members(self) -> list[psutil.Process]:
        """Every live process of the sandbox: the leader's group and all token holders."""
        found: dict[int, psutil.Process] = {}
        leader = self.leader()
        if leader is not None:
            found[leader.pid] = leader
        mine = os.getuid()
        for proc in psutil.process_iter(["uids"]):
            try:
                if mine != 0 and proc.info["uids"] and proc.info["uids"].real != mine:
                    continue
                in_group = leader is not None and os.getpgid(proc.pid) == self.pid
                if in_group or proc.environ().get(SANDBOX_TOKEN_ENV) == self.token:
                    found[proc.pid] = proc
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue
        found.pop(os.getpid(), None)
        return list(found.values())


def signal_all(procs: Iterable[psutil.Process], sig: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def wait_gone(procs: Iterable[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until every process is gone (zombies count as gone); return those still alive."""
    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if _alive(p)]
    return alive


def terminate(record: ProcessRecord, grace_s: float) -> list[psutil.Process]:
    """TERM the leader's group (so `lab case` stops its server itself), KILL what is left."""
    members = record.members()
    if record.leader() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, signal.SIGTERM)
    else:
        signal_all(members, signal.SIGTERM)
    alive = wait_gone(members, max(grace_s, 0.0))
    # Processes started during the grace period carry the token too.
    leftovers = list({p.pid: p for p in [*alive, *record.members()]}.values())
    signal_all(leftovers, signal.SIGKILL)
    wait_gone(leftovers, 5.0)
    return members


class ProcessSandbox:
    """One attempt running as a process tree of its own session."""

    def __init__(
        self,
        runtime_name: str,
        popen: subprocess.Popen[bytes],
        record: ProcessRecord,
        record_paths: list[Path],
        log_path: Path,
        description: dict[str, object],
        repro: str,
    ) -> None:
        self.runtime_name = runtime_name
        self.name = record.name
        self.popen = popen
        self.record = record
        self.record_paths = record_paths
        self.log_path = log_path
        self._description = description
        self._repro = repro
        self._exit: SandboxExit | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait(self, timeout_s: float | None) -> SandboxExit:
        if self._exit is not None:
            return self._exit
        try:
            code = self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return SandboxExit(
                exit_code=None,
                reason=f"{self.name} still running after {timeout_s:g} s",
                log_tail=read_tail(self.log_path),
            )
        self._exit = SandboxExit(exit_code=exit_status(code), log_tail=read_tail(self.log_path))
        return self._exit

    def logs(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, grace_s: float = 5.0) -> None:
        if self._exit is None and self.popen.poll() is None:
            self._exit = SandboxExit(
                exit_code=None, reason=f"{self.name} stopped by the host before it finished"
            )
        terminate(self.record, grace_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5.0)
        if self._exit is not None and self._exit.exit_code is None:
            self._exit.log_tail = read_tail(self.log_path)
        # Only the state copy goes: the run dir keeps its record as part of the run's history.
        self.record_paths[0].unlink(missing_ok=True)

    def describe(self) -> dict[str, object]:
        return dict(self._description)

    def repro_command(self) -> str:
        return self._repro


def memory_limit_prefix(req: SandboxRequest) -> list[str]:
    """A case's memory_limit_mib without a cgroup: an address-space limit (RLIMIT_AS, set by
    util-linux's prlimit) that every process of the sandbox inherits, each on its own. It needs
    no root and no cgroup delegation, and an allocation past it fails in the process that asked
    (ENOMEM: the server prints its own error) where a cgroup would SIGKILL it. It counts virtual
    memory (mapped files, reserved arenas), which docker's mem_limit does not: a case may give
    it apart (address_space_limit_mib)."""
    mib = req.address_space_limit_mib or req.memory_limit_mib
    if not mib:
        return []
    return ["prlimit", f"--as={mib * 1024 * 1024}", "--"]


class ProcessRuntime:
    """Runs the sandbox command as a subprocess; subclasses put a prefix in front (unshare)."""

    name = "local"
    isolation = "none: the host's network, files and processes"

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = state_dir or default_state_dir()

    # -- what to run ---------------------------------------------------------------------------
    def prefix(self) -> list[str]:
        return []

    def inner_command(self, req: SandboxRequest) -> list[str]:
        return list(req.command) if req.command else host_lab_case_command(req)

    def argv(self, req: SandboxRequest) -> list[str]:
        return [*self.prefix(), *memory_limit_prefix(req), *self.inner_command(req)]

    def sandbox_env(self, req: SandboxRequest) -> dict[str, str]:
        """What the sandbox adds to the host's environment (shown in plans and repro lines)."""
        # The host's own CUDA_VISIBLE_DEVICES (GPU UUIDs) wins over the indices.
        env = {**gpu_env(req.gpus), **req.env}
        # The sandbox runs the host's interpreter: it keeps the host's import path (packages
        # installed with --target) behind the lab's own source, unless the case sets one.
        if "PYTHONPATH" not in env and os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return with_pythonpath(env, lab_source_dir())

    # -- Runtime -------------------------------------------------------------------------------
    def check(self) -> None:
        return None

    def plan(self, req: SandboxRequest) -> dict[str, object]:
        name = sandbox_name(req.run_id, req.case_id, req.attempt)
        return {
            "runtime": self.name,
            "name": name,
            "isolation": self.isolation,
            "command": self.argv(req),
            "cwd": str(Path(req.spec_path).parent),
            "user": f"{os.getuid()}:{os.getgid()}",
            "gpus": list(req.gpus),
            "env": redact_env(self.sandbox_env(req)),
            "record": str(Path(req.run_dir) / "sandboxes" / f"{name}.json"),
            "log": str(Path(req.run_dir) / "sandboxes" / f"{name}.log"),
        }

    def repro_command(self, req: SandboxRequest) -> str:
        # Exactly what the lab runs, as the user it runs as (netns: root, or a user namespace).
        words = ["env", *env_assignments(self.sandbox_env(req)), *map(shlex.quote, self.argv(req))]
        return f"cd {shlex.quote(str(Path(req.spec_path).parent))} && {' '.join(words)}"

    def start(self, req: SandboxRequest) -> ProcessSandbox:
        self.check()
        name = sandbox_name(req.run_id, req.case_id, req.attempt)
        box_dir = Path(req.run_dir) / "sandboxes"
        box_dir.mkdir(parents=True, exist_ok=True)
        attempt_dir = Path(req.spec_path).parent
        attempt_dir.mkdir(parents=True, exist_ok=True)
        log_path = box_dir / f"{name}.log"
        token = uuid.uuid4().hex
        env = {**os.environ, **self.sandbox_env(req), SANDBOX_TOKEN_ENV: token}
        argv = self.argv(req)
        try:
            with open(log_path, "ab") as log:
                popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=attempt_dir,  # files a server writes to its cwd stay with the attempt
                    env=env,
                    start_new_session=True,  # own session and group: stop() signals all of it
                )
        except OSError as e:
            raise SandboxInfraError(f"{self.name}: cannot start {argv[0]}: {e}") from e
        try:
            create_time = psutil.Process(popen.pid).create_time()
        except psutil.NoSuchProcess:
            create_time = 0.0  # already gone: nothing for a later cleanup to find
        record = ProcessRecord(
            {
                "runtime": self.name,
                "name": name,
                "run_id": req.run_id,
                "case_id": req.case_id,
                "attempt": req.attempt,
                "pid": popen.pid,
                "pgid": popen.pid,
                "create_time": create_time,
                "token": token,
                "command": argv,
                "run_dir": str(req.run_dir),
                "log": str(log_path),
                "started_at": time.time(),
                "host": host_identity(),
            }
        )
        paths = [self.state_dir / f"{name}.json", box_dir / f"{name}.json"]
        self._ensure_state_dir()
        for path in paths:
            write_json_atomic(path, record.data)
        plan = self.plan(req)
        return ProcessSandbox(
            self.name, popen, record, paths, log_path, plan, self.repro_command(req)
        )

    def attach(self, req: SandboxRequest) -> int:
        self.check()
        attempt_dir = Path(req.spec_path).parent
        attempt_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.sandbox_env(req)}
        try:  # in the foreground: the terminal's Ctrl-C reaches the shell, not us
            return subprocess.run(self.argv(req), cwd=attempt_dir, env=env, check=False).returncode
        except OSError as e:
            raise SandboxInfraError(f"{self.name}: cannot start {self.argv(req)[0]}: {e}") from e

    def image_id(self, image: str | None) -> str | None:
        return None  # the host's own environment: there is no image

    def records(self) -> list[ProcessRecord]:
        out = []
        for path in sorted(self.state_dir.glob("*.json")):
            try:
                data = read_json(path)
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("runtime") == self.name:
                out.append(ProcessRecord(data))
        return out

    def cleanup(self, run_id: str | None = None, grace_s: float = 2.0) -> list[str]:
        """Kill the processes of sandboxes lab runs left behind: all of one run, or (None) those
        of every run whose lab process is gone, so a concurrent run keeps its sandboxes."""
        removed = []
        for record in self.records():
            if run_id is not None and record.run_id != run_id:
                continue
            if run_id is None and host_alive(record.data.get("host")):
                continue
            terminate(record, grace_s)
            (self.state_dir / f"{record.name}.json").unlink(missing_ok=True)
            removed.append(record.name)
        return removed

    def _ensure_state_dir(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.state_dir.stat().st_uid != os.getuid():  # someone else's folder in /tmp
            raise SandboxInfraError(f"{self.state_dir} belongs to another user; remove it")
