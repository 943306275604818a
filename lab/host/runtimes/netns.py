"""The netns runtime: `lab case` in a fresh network namespace that has only loopback, so every
server binds 127.0.0.1:30000 without colliding. Files, GPUs and processes are the host's.

`unshare --net --fork --kill-child` (root; otherwise a user namespace maps us to root) runs this
module as a tiny init: `python -m lab.host.runtimes.netns --lo-up -- CMD…` brings `lo` up with an
ioctl (GPU machines have no `ip`) and execs CMD. Process handling is process.py's."""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

from lab.errors import RuntimeUnavailable
from lab.host.runtimes.process import ProcessRuntime

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def loopback_up() -> None:
    """Set IFF_UP on `lo` in the current network namespace (what `ip link set lo up` does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq)[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


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
        return [*unshare, "--", sys.executable, "-m", "lab.host.runtimes.netns", "--lo-up", "--"]

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


def main(argv: list[str]) -> int:
    """`--lo-up -- CMD…`: inside the fresh namespace, bring loopback up and become CMD."""
    if len(argv) < 3 or argv[0] != "--lo-up" or argv[1] != "--":
        print("usage: python -m lab.host.runtimes.netns --lo-up -- CMD [ARG...]", file=sys.stderr)
        return 2
    try:
        loopback_up()
    except OSError as e:
        print(f"netns: cannot bring loopback up: {e}", file=sys.stderr)
        return 1
    try:
        os.execvp(argv[2], argv[2:])
    except OSError as e:
        print(f"netns: cannot run {argv[2]}: {e}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
