"""The local runtime: `lab case` as a plain subprocess with no isolation (for debugging).
Process handling is process.py's."""

from __future__ import annotations

from lab.host.runtimes.process import ProcessRuntime


class LocalRuntime(ProcessRuntime):
    """No isolation: the server shares the host's network (ports can collide)."""

    name = "local"
