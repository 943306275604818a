"""`lab case SPEC --shell` (what `lab repro --shell` runs in the sandbox): an interactive bash
in the attempt's own sandbox, with the server command of each framework ready to run.

The command is computed here, inside the sandbox, by the same adapter call `lab case` makes, so
it names the sandbox's python and paths. The rc file holds no secret: a case's `${VAR}`
references stay references, and bash fills them from the sandbox's environment."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from lab.contract import AttemptSpec
from lab.files import write_atomic
from lab.frameworks import server_command


def shell_rc(spec: AttemptSpec, spec_path: Path) -> str:
    """The bash rc file: banner, the case's environment, `serve[_FW]`, `lab_case`, history."""
    case = spec.case
    lines = [
        f"# lab repro --shell: case {case.id}, attempt {spec.attempt}, rung {spec.rung}",
        "[ -f /etc/bash.bashrc ] && . /etc/bash.bashrc",
        f"cd {shlex.quote(str(spec_path.parent))}",
        f"PS1='[lab {case.id}] \\w\\$ '",
        "export PYTHONUNBUFFERED=1",
    ]
    cmds = {fw: server_command(spec, fw) for fw in spec.frameworks}
    # the first framework's server is `serve`, the others `serve_<framework>`
    names = {fw: f"serve_{fw.replace('-', '_')}" for fw in cmds}
    if cmds:  # a `test` case has no server
        names[next(iter(cmds))] = "serve"
    for fw, cmd in cmds.items():
        for k, v in case.frameworks[fw].extra_env.items():
            lines.append(f"export {k}={_double_quoted(v)}")  # ${VAR} expands in the sandbox
        lines.append(f'{names[fw]}() {{ {shlex.join(cmd)} "$@"; }}')
        lines.append(f"history -s {shlex.quote(shlex.join(cmd))}")
    python = shlex.quote(sys.executable)
    lines.append(f"lab_case() {{ {python} -m lab.cli case {shlex.quote(str(spec_path))} -v; }}")
    banner = [f"lab repro --shell: the sandbox of {case.id} ({spec.rung}), as the nightly runs it."]
    for fw, cmd in cmds.items():
        banner.append(f"  {names[fw]:<12} {fw} server: {shlex.join(cmd)}")
    banner.append("  lab_case     the whole attempt (server, warm-up, timed requests, result.json)")
    if spec.ballast:
        banner.append(
            "  (VRAM emulation: lab_case holds the ballast; serve alone sees the whole GPU)"
        )
    banner.append("  The server command is also in the history: press Up, then Enter.")
    lines += [f"echo {shlex.quote(b)}" for b in banner]
    return "\n".join(lines) + "\n"


def _double_quoted(value: str) -> str:
    """A bash double-quoted word that expands `${VAR}` and nothing else."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`")
    escaped = escaped.replace("$", "\\$").replace("\\${", "${")
    return f'"{escaped}"'


def open_shell(spec: AttemptSpec, spec_path: Path) -> int:
    """Write the rc file next to the spec and become `bash -i` with it (returns only on error)."""
    rc = spec_path.parent / "shell.rc"
    write_atomic(rc, shell_rc(spec, spec_path))
    try:
        os.execvp("bash", ["bash", "--rcfile", str(rc), "-i"])
    except OSError as e:
        print(f"lab case --shell: cannot start bash in the sandbox: {e}", file=sys.stderr)
    return 127
