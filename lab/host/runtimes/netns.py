"""The netns runtime: `lab case` in a fresh network namespace that has only loopback, so every
server binds 127.0.0.1:30000 without colliding. Files, GPUs and processes are the host's.

`unshare --net --fork --kill-child` (root; otherwise a user namespace maps us to root) runs
netns_init.py, which brings `lo` up and execs `lab case`. Process handling is process.py's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from lab.errors import RuntimeUnavailable
from lab.host.runtimes.process import ProcessRuntime

INIT = Path(__file__).with_name("netns_init.py")


class NetnsRuntime(ProcessRuntime):
    name = "netns"
    isolation = "own network namespace (loopback only); host files, GPUs and processes"

    def __init__(self, state_dir: Path | None = None) -> None:
        super().__init__(state_dir)
        self._checked = False

    def prefix(self) -> list[str]:
        if os.geteuid() == 0:
            unshare = ["unshare", "--net", "--fork", "--kill-child"]
        else:  # a user namespace grants the CAP_NET_ADMIN that bringing lo up needs
            unshare = ["unshare", "--user", "--map-root-user", "--net", "--fork", "--kill-child"]
        return [*unshare, "--", sys.executable, "-I", "-S", str(INIT), "--lo-up", "--"]

    def check(self) -> None:
        if self._checked:
            return
        if shutil.which("unshare") is None:
            raise RuntimeUnavailable(
                "The netns runtime needs `unshare` (util-linux), which is not on PATH. Install "
                "util-linux, or use RUNTIME=docker or RUNTIME=local."
            )
        probe = [*self.prefix()[: self.prefix().index("--")], "true"]
        try:
            done = subprocess.run(probe, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as e:
            done = subprocess.CompletedProcess(probe, 1, "", str(e))
        if done.returncode != 0:
            raise RuntimeUnavailable(
                f"Cannot create a network namespace here (`{' '.join(probe)}` said: "
                f"{done.stderr.strip() or done.returncode}). Run the lab as root (sudo), or allow "
                "unprivileged user namespaces (sysctl user.max_user_namespaces > 0, "
                "kernel.unprivileged_userns_clone=1 where it exists), or use RUNTIME=docker or "
                "RUNTIME=local."
            )
        self._checked = True
