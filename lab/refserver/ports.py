"""The server's ports: the HTTP port, and the master and scheduler ports sglang also takes.

With --strict-ports a taken port is an error at start, as in sglang; without it the server moves
to the next free port and says so in the log. The scheduler port (and the master port when
cfg-parallel does not use it) is held by a listening socket for the server's life, so two servers
given the same ports collide the way two sglang servers do.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from lab.refserver.log import log


class PortError(Exception):
    """A port the server was told to use cannot be used."""


def port_is_free(host: str, port: int) -> bool:
    # SO_REUSEADDR as the HTTP server sets it: a port in TIME_WAIT counts as free, a listener not
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def hold_port(host: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
        s.listen(1)
    except OSError as e:
        s.close()
        raise PortError(f"port {port} is unavailable on {host}: {e.strerror}") from e
    return s


@dataclass
class Ports:
    http: int
    master: int | None
    scheduler: int | None


def _settle(host: str, port: int, avoid: set[int], what: str) -> int:
    candidate = port
    while candidate in avoid or not port_is_free(host, candidate):
        candidate += 1
        if candidate > 65535:
            raise PortError(f"no free {what} port at or above {port}")
    if candidate != port:
        log(f"{what} port {port} is in use, using {candidate}")
    return candidate


def resolve_ports(
    host: str, http: int, master: int | None, scheduler: int | None, *, strict: bool
) -> Ports:
    """Check (strict) or settle (lenient) each requested port; PortError says which one."""
    named = [("HTTP", http), ("master", master), ("scheduler", scheduler)]
    given = [(what, p) for what, p in named if p is not None]
    if strict:
        seen: dict[int, str] = {}
        for what, p in given:
            if p in seen:
                raise PortError(f"{what} port {p} is also the {seen[p]} port (--strict-ports)")
            seen[p] = what
        for what, p in given:
            if not port_is_free(host, p):
                raise PortError(f"{what} port {p} is already in use on {host} (--strict-ports)")
        return Ports(http, master, scheduler)
    taken: set[int] = set()

    def settle(what: str, p: int) -> int:
        chosen = _settle(host, p, taken, what)
        taken.add(chosen)
        return chosen

    return Ports(
        http=settle("HTTP", http),
        master=None if master is None else settle("master", master),
        scheduler=None if scheduler is None else settle("scheduler", scheduler),
    )
