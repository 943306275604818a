"""The run folders a docker sandbox writes, lent to its user and given back.

The sandbox runs as a non-root user (uid 1000 when the lab runs as root), so before it starts
the attempt's own folder is handed to that user, and the folders attempts share (the run's
logs/) are opened to all, sticky like /tmp: they stay the lab user's, and concurrent attempts
never take them from one another. When the sandbox is torn down, whatever ending, everything
the attempt wrote is given back to the lab's user (the host's euid/egid), so a run folder holds
only the lab user's files."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from lab.contract import load_spec
from lab.host.runtimes.base import SandboxRequest

SHARED_DIR_MODE = 0o1777  # anyone may add files, only their owner may remove them


@dataclass
class LentDirs:
    """What one attempt was lent: its own folders (all they hold is the attempt's) and, in the
    shared folders, the name pattern of its files (`head*tail`: its logs)."""

    run_dir: Path  # nothing outside it is touched
    own: list[Path] = field(default_factory=list)
    shared: list[Path] = field(default_factory=list)
    head: str = ""
    tail: str = ""
    given_back: bool = False


def lend_dirs(req: SandboxRequest, user: str) -> LentDirs:
    """Let the sandbox user (`uid:gid` or a name) write the attempt's folders; folders outside
    the run are created but never touched."""
    uid_s, _, gid_s = user.partition(":")
    uid = int(uid_s) if uid_s.isdigit() else None
    gid = int(gid_s) if gid_s.isdigit() else uid
    lent = _attempt_dirs(req)
    if uid is not None and uid == os.getuid():
        return lent  # the sandbox runs as us: nothing to lend, nothing to give back
    run_dir = lent.run_dir.resolve()
    for d in [*lent.own, *lent.shared]:
        d.mkdir(parents=True, exist_ok=True)
        if not d.resolve().is_relative_to(run_dir):
            continue
        if d in lent.shared:
            d.chmod(SHARED_DIR_MODE)
        elif uid is not None and os.getuid() == 0:
            os.chown(d, uid, gid if gid is not None else uid)
        else:  # a user we can't chown to (named, or we aren't root)
            d.chmod(0o777)
    return lent


def give_back(lent: LentDirs) -> None:
    """Everything the attempt wrote in the run, back to the lab's user (once; root only, as
    only root could lend by chown). Symlinks are chowned themselves, never followed."""
    if lent.given_back:
        return
    lent.given_back = True
    if os.geteuid() != 0:
        return
    root = lent.run_dir.resolve()
    paths: list[Path] = []
    for d in lent.own:
        if d.is_dir() and d.resolve().is_relative_to(root):
            paths.append(d)
            for top, dirs, files in os.walk(d):  # followlinks=False: a link is not entered
                paths += [Path(top, name) for name in [*dirs, *files]]
    for d in lent.shared:
        if d.is_dir() and d.resolve().is_relative_to(root):
            paths += [
                p
                for p in d.iterdir()
                if p.name.startswith(lent.head) and p.name.endswith(lent.tail)
            ]
    me, my_group = os.geteuid(), os.getegid()
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            st = p.lstat()
            if (st.st_uid, st.st_gid) != (me, my_group):
                os.chown(p, me, my_group, follow_symlinks=False)


def _attempt_dirs(req: SandboxRequest) -> LentDirs:
    """The spec's folder and its out_dir (the attempt's own), and its log_dir (shared by the
    run's attempts), as the spec names them (when it can be read)."""
    lent = LentDirs(run_dir=Path(req.run_dir), own=[Path(req.spec_path).parent])
    with contextlib.suppress(OSError, ValueError):
        spec = load_spec(req.spec_path)
        lent.own = list(dict.fromkeys([*lent.own, Path(spec.out_dir)]))
        log_dir = Path(spec.log_dir)
        if log_dir not in lent.own:
            lent.shared = [log_dir]
        # The framework's place in the attempt's log names (spec.log_path), the rest fixed.
        lent.head, _, lent.tail = spec.log_path("\n").name.partition("\n")
    return lent
