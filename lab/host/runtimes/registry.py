"""Runtimes by name: docker (default where an engine answers), netns, local, slurm."""

from __future__ import annotations

import os

from lab.config import Suite
from lab.errors import RuntimeUnavailable
from lab.host.runtimes.base import Runtime

RUNTIME_NAMES = ("docker", "netns", "local", "slurm")


def get_runtime(name: str | None = None, suite: Suite | None = None) -> Runtime:
    """The runtime called `name`; None or "auto" picks default_runtime_name(). Not yet checked:
    call .check() before starting anything. `suite` carries runtime settings (its `slurm`)."""
    if name in (None, "", "auto"):
        name = default_runtime_name()
    if name == "docker":
        from lab.host.runtimes.docker import DockerRuntime  # the SDK loads only when used

        return DockerRuntime()
    if name == "netns":
        from lab.host.runtimes.netns import NetnsRuntime

        return NetnsRuntime()
    if name == "local":
        from lab.host.runtimes.local import LocalRuntime

        return LocalRuntime()
    if name == "slurm":
        from lab.host.runtimes.slurm import SlurmRuntime

        return SlurmRuntime(suite.slurm if suite is not None else None)
    raise RuntimeUnavailable(
        f"Unknown runtime {name!r}: choose one of {', '.join(RUNTIME_NAMES)} "
        "(RUNTIME=… or --runtime)."
    )


def default_runtime_name() -> str:
    """docker if an engine answers, else netns if we are root and unshare works, else local."""
    try:
        from lab.host.runtimes.docker import connect

        connect(timeout_s=3.0).close()
        return "docker"
    except (RuntimeUnavailable, ImportError):
        pass
    if os.geteuid() == 0:
        from lab.host.runtimes.netns import NetnsRuntime

        try:
            NetnsRuntime().check()
            return "netns"
        except RuntimeUnavailable:
            pass
    return "local"
