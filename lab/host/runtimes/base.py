"""The small interface every runtime implements: start an attempt, wait, stop, clean up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from lab.contract import Outcome

LABEL_PREFIX = "nightly-lab"
LABEL_RUN = f"{LABEL_PREFIX}.run-id"
LABEL_CASE = f"{LABEL_PREFIX}.case"
LABEL_ATTEMPT = f"{LABEL_PREFIX}.attempt"
# The reference image's user `lab`: who runs a sandbox when the host is root and the image names
# no user (docker), and the pod's user (render k8s).
SANDBOX_UID = 1000


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


def lab_case_args(req: SandboxRequest) -> list[str]:
    """What every sandbox runs after `lab`: `case SPEC`, plus `--shell` for a repro shell."""
    return ["case", str(req.spec_path), *(["--shell"] if req.shell else [])]


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

    def attach(self, req: SandboxRequest) -> int:
        """Run the sandbox in the foreground on this terminal (`lab repro --shell`); its exit
        code. Nothing of it remains afterwards."""
        ...

    def plan(self, req: SandboxRequest) -> dict[str, object]:
        """What start() would do, without starting anything (for --dry-run)."""
        ...

    def image_id(self, image: str | None) -> str | None: ...

    def cleanup(self, run_id: str | None = None) -> list[str]:
        """Remove what lab runs left behind (all runs, or one); return what was removed."""
        ...


def places_work(runtime: object) -> bool:
    """Does the lab place attempts on this machine's GPUs (True), or the runtime (Slurm)?"""
    return bool(getattr(runtime, "places_work", True))
