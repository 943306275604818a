"""The netns runtime's tiny init, run inside the fresh namespace before `lab case`: bring `lo` up
with an ioctl (GPU machines have no `ip`) and exec the command.

Standard library only, run by path with `python -I -S`: it starts once per attempt, and importing
the lab (pydantic, psutil, ...) here would cost ~0.2 s of every attempt."""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import sys

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def loopback_up() -> None:
    """Set IFF_UP on `lo` in the current network namespace (what `ip link set lo up` does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq)[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def main(argv: list[str]) -> int:
    """`--lo-up -- CMD…`: bring loopback up and become CMD."""
    if len(argv) < 3 or argv[0] != "--lo-up" or argv[1] != "--":
        print("usage: python netns_init.py --lo-up -- CMD [ARG...]", file=sys.stderr)
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
