"""Other lab runs on this machine. Each run registers itself in a machine-wide folder while it
runs; a run that shared the host with another (any --out, any kind) says so in results.json, and
history takes only unshared nightlies as baselines.

A run registers before it looks, so of two overlapping runs the later one always sees the earlier;
it leaves a mark for it (`<earlier>.seen-by.<later>`), so the earlier one knows even when the later
one has finished before it looks again."""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
from pathlib import Path

from lab.files import read_json, write_json_atomic
from lab.host.runtimes.base import host_alive, host_identity
from lab.results.model import RunResults

# Tests point this at a folder of their own, so concurrent test sessions do not mark each other.
REGISTRY_ENV = "LAB_RUNS_REGISTRY"


def registry_dir() -> Path:
    return Path(os.environ.get(REGISTRY_ENV) or Path(tempfile.gettempdir()) / "nightly-lab-runs")


class Neighbours:
    """This run's registration, and the other live runs it has met."""

    def __init__(self, run_id: str, folder: Path | None = None) -> None:
        self.run_id = run_id
        self.folder = folder or registry_dir()
        self.me = self.folder / f"{run_id}.json"
        self.seen: set[str] = set()

    @classmethod
    def register(cls, run_id: str) -> Neighbours:
        n = cls(run_id)
        try:
            if not n.folder.is_dir():
                n.folder.mkdir(parents=True, exist_ok=True)
                # Every user's runs register here; the sticky bit keeps each one's files its own.
                n.folder.chmod(0o1777)
            write_json_atomic(n.me, {"run_id": run_id, "host": host_identity()})
        except OSError:
            return n  # no registry (read-only /tmp): the run goes on, unshared as far as it knows
        atexit.register(n.close)  # also when the run ends by an exception
        n.look()
        return n

    def look(self) -> None:
        """Note every other live registered run, and tell it we are here; drop dead ones."""
        for path in self.folder.glob("*.json"):
            if path == self.me:
                continue
            try:
                other = read_json(path)
                run_id, identity = str(other["run_id"]), str(other["host"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # half-written or removed meanwhile
            if not host_alive(identity):
                for dead in (path, *self.folder.glob(f"{run_id}.seen-by.*")):
                    with contextlib.suppress(OSError):  # another user's: theirs to remove
                        dead.unlink()
                continue
            self.seen.add(run_id)
            with contextlib.suppress(OSError):
                (self.folder / f"{run_id}.seen-by.{self.run_id}").touch()
        for mark in self.folder.glob(f"{self.run_id}.seen-by.*"):
            self.seen.add(mark.name.split(".seen-by.", 1)[1])

    def finish(self, results: RunResults) -> None:
        """Look a last time, unregister, and record on the results whom the host was shared with."""
        if self.me.exists():
            self.look()
        self.close()
        results.shared_with = sorted(self.seen)
        results.shared_host = bool(self.seen)

    def close(self) -> None:
        for path in (self.me, *self.folder.glob(f"{self.run_id}.seen-by.*")):
            with contextlib.suppress(OSError):
                path.unlink()
