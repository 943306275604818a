"""The small interface every runtime implements (start an attempt, wait, stop, clean up), and
the toolkit the runtimes share: sandbox names, who started a sandbox (host identity), the
`lab case` command line, GPU and env settings, log tails."""

from __future__ import annotations

import os
import re
import shlex
import socket
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil

import lab
from lab.contract import Outcome
from lab.redact import is_secret_name

LABEL_PREFIX = "nightly-lab"
LABEL_RUN = f"{LABEL_PREFIX}.run-id"
LABEL_CASE = f"{LABEL_PREFIX}.case"
LABEL_ATTEMPT = f"{LABEL_PREFIX}.attempt"
# The reference image's user `lab`: who runs a sandbox when the host is root and the image names
# no user (docker), and the pod's user (render k8s).
SANDBOX_UID = 1000
HOST_GPUS_ENV = "NIGHTLY_LAB_HOST_GPUS"  # host indices of the sandbox's GPUs, for reports
LOG_TAIL_LINES = 50


@dataclass
class SandboxRequest:
    """What the host asks a runtime to run: `lab case <spec_path>` in a fresh sandbox."""

    run_id: str
    case_id: str
    attempt: int
    spec_path: Path  # absolute; the same path inside the sandbox (the run dir is mounted as is)
    run_dir: Path  # mounted read-write
    config_dir: Path  # mounted read-only
    gpus: list[int] = field(default_factory=list)  # host GPU indices
    image: str | None = None  # docker: image tag, or "host" for the host's environment
    env: dict[str, str] = field(default_factory=dict)  # given to `lab case` (and so the server)
    model_cache: Path | None = None  # mounted read-only
    shm_size: str = "2g"
    ipc_mode: str | None = None
    memory_limit_mib: int | None = None
    address_space_limit_mib: int | None = None  # netns/local (process.memory_limit_prefix)
    pids_limit: int = 4096
    # Runs this instead of `lab case <spec_path>` (tests, `lab repro --shell`); None: `lab case`.
    command: list[str] | None = None
    # docker: read-only root filesystem with a tmpfs /tmp; off for images that write elsewhere.
    read_only_root: bool = True
    # Runtimes that place work themselves (Slurm) ask for a count of GPUs, not indices (`gpus`
    # is then empty), and bound the attempt by this time (`attempt_bound_s` of the spec).
    gpu_count: int = 0
    time_limit_s: float | None = None
    # `lab repro --shell`: `lab case --shell`, attached to the terminal (Runtime.attach).
    shell: bool = False


@dataclass
class SandboxExit:
    exit_code: int | None  # None: it did not finish (timeout, stopped)
    oom_killed: bool = False  # the kernel killed it for host memory (docker's State.OOMKilled)
    reason: str = ""  # runtime's own words when something went wrong (infra)
    log_tail: list[str] = field(default_factory=list)  # the sandbox's own stdout/stderr
    # The runtime's own verdict, which wins over the result file: Slurm ended the job (TIMEOUT
    # is `timeout`, NODE_FAIL or a cancel by someone else `infra_error`), `reason` says why.
    outcome: Outcome | None = None


class SandboxInfraError(Exception):
    """The runtime itself failed (engine error, lost container): the attempt is infra_error."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Sandbox(Protocol):
    """One running attempt."""

    def wait(self, timeout_s: float | None) -> SandboxExit: ...

    def stop(self, grace_s: float = 5.0) -> None: ...

    def describe(self) -> dict[str, object]:
        """Sandbox settings for --dry-run and the manifest (network, devices, mounts, image)."""
        ...

    def repro_command(self) -> str:
        """The equivalent shell command a developer can run by hand."""
        ...


class Runtime(Protocol):
    """A way to run sandboxes. An optional class attribute `places_work` (default True: the lab
    packs attempts onto this machine's GPUs) is False where the runtime places them (Slurm)."""

    name: str

    def check(self) -> None:
        """Raise RuntimeUnavailable with what to do when this runtime cannot run here."""
        ...

    def start(self, req: SandboxRequest) -> Sandbox: ...

    def plan(self, req: SandboxRequest) -> dict[str, object]:
        """What start() would do, without starting anything (for --dry-run)."""
        ...

    def repro_command(self, req: SandboxRequest) -> str:
        """The shell line that starts this attempt's sandbox by hand."""
        ...

    def image_id(self, image: str | None) -> str | None: ...

    def cleanup(self, run_id: str | None = None) -> list[str]:
        """Remove what lab runs left behind (all runs, or one); return what was removed."""
        ...


class ShellRuntime(Runtime, Protocol):
    """A runtime whose sandbox can run on this terminal (docker, netns, local; not Slurm, where
    `lab repro --shell` says so)."""

    def attach(self, req: SandboxRequest) -> int:
        """Run the sandbox in the foreground on this terminal (`lab repro --shell`); its exit
        code. Nothing of it remains afterwards."""
        ...


def places_work(runtime: object) -> bool:
    """Does the lab place attempts on this machine's GPUs (True), or the runtime (Slurm)?"""
    return bool(getattr(runtime, "places_work", True))


# --- the toolkit the runtimes share ---------------------------------------------------------
def lab_case_args(req: SandboxRequest) -> list[str]:
    """What every sandbox runs after `lab`: `case SPEC`, plus `--shell` for a repro shell."""
    return ["case", str(req.spec_path), *(["--shell"] if req.shell else [])]


def sandbox_name(run_id: str, case_id: str, attempt: int) -> str:
    """`lab-<run>-<case>-a<n>`, restricted to what Docker accepts as a container name."""
    name = re.sub(r"[^a-zA-Z0-9_.-]+", "-", f"lab-{run_id}-{case_id}-a{attempt}")
    if len(name) > 120:  # keep it readable and unique: cut the middle, keep the attempt
        name = f"{name[:100]}-{uuid.uuid5(uuid.NAMESPACE_OID, name).hex[:8]}-a{attempt}"
    return name


def lab_source_dir() -> Path:
    """The folder holding the `lab` package, so a sandbox imports the very code the host runs."""
    return Path(lab.__file__).resolve().parent.parent


def host_lab_case_command(req: SandboxRequest) -> list[str]:
    """`lab case SPEC` with the host's own interpreter (netns, local, docker's `host` image)."""
    return [sys.executable, "-m", "lab.cli", *lab_case_args(req)]


def with_pythonpath(env: dict[str, str], first: Path) -> dict[str, str]:
    old = env.get("PYTHONPATH")
    return {**env, "PYTHONPATH": f"{first}{os.pathsep}{old}" if old else str(first)}


def gpu_env(gpus: list[int]) -> dict[str, str]:
    """Host indices as CUDA sees them: PCI bus order is NVML's order, so index 3 is NVML's 3."""
    return {
        "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus),  # "" hides every GPU
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        HOST_GPUS_ENV: ",".join(str(g) for g in gpus),
    }


def env_assignments(env: dict[str, str]) -> list[str]:
    """`NAME=value` words for a shell line; secrets are taken from the caller's environment."""
    words = []
    for k, v in env.items():
        words.append(f'{k}="${k}"' if is_secret_name(k) else shlex.quote(f"{k}={v}"))
    return words


def host_identity() -> str:
    """`hostname:pid:create_time` of this lab process, stamped on every sandbox it starts."""
    me = psutil.Process()
    return f"{socket.gethostname()}:{me.pid}:{me.create_time():.3f}"


def host_alive(identity: str | None) -> bool:
    """Is the lab process that started a sandbox still running? Unknown or another machine's
    counts as alive: cleanup(None) only takes what is certainly orphaned."""
    try:
        hostname, pid, created = (identity or "").rsplit(":", 2)
        if hostname != socket.gethostname():
            return True
        return bool(abs(psutil.Process(int(pid)).create_time() - float(created)) < 0.01)
    except ValueError:
        return True
    except psutil.Error:
        return False


def exit_status(returncode: int) -> int:
    """Popen's -N (killed by signal N) as a shell would say it: 128 + N, like Docker's 137."""
    return 128 - returncode if returncode < 0 else returncode


def read_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))  # the tail only; logs can be large
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return text.splitlines()[-lines:]
