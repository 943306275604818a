"""sglang's and vLLM's own parsers judge every server command line suites can start.

`make parsers` (docker/parsers/build.sh) builds build/parsers/<package>: the package installed
with --no-deps into a folder that this interpreter runs with on PYTHONPATH. Here every line of
every case and rung (lab.host.commandlines) of the frameworks a package serves goes, in one
process per package, to docker/parsers/check_<package>.py, which answers a verdict per line.
The lab never imports sglang or vllm: they are only ever in that subprocess.

The same checkers list every option their parsers have: `python -m lab.host.real_parsers
write-flag-lists` regenerates lab/frameworks/llm_flag_lists.py from them, which config
validation reads when the parser environments are not there (a suite loads in milliseconds)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.config import load_suite
from lab.errors import LabError
from lab.frameworks.sglang import SGLANG_VERSION
from lab.frameworks.vllm import VLLM_VERSION
from lab.host.commandlines import suite_command_lines

REPO = Path(__file__).resolve().parents[2]
CHECKERS = REPO / "docker" / "parsers"
ENVS = REPO / "build" / "parsers"
FLAG_LISTS = REPO / "lab" / "frameworks" / "llm_flag_lists.py"
# the parser environment → the lab frameworks whose command lines it judges. vllm-omni is not
# here: `vllm serve --omni` hands its line to the vllm-omni package, a separate install.
SERVED_BY = {"sglang": ("sglang", "sglang-srt"), "vllm": ("vllm",)}
# what the packages need to import on a machine without CUDA and without the hub
CHECK_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_TARGET_DEVICE": "cpu", "PYTHONNOUSERSITE": "1"}
CHECK_TIMEOUT_S = 900


class ParserEnvError(LabError):
    """The parser environment is missing or its checker did not answer for every line."""


@dataclass(frozen=True)
class Verdict:
    suite: str
    case: str
    rung: str
    framework: str
    argv: list[str]
    verdict: str  # accepted | rejected | unverified | error (parser_check.py says what each means)
    message: str

    def describe(self) -> str:
        """One line for the CI log: where the line comes from, the parser's words, the line."""
        return (
            f"{self.suite}: case {self.case}, rung {self.rung}, {self.framework}: "
            f"{self.verdict}: {self.message}\n    {shlex.join(self.argv)}"
        )


def env_dir(package: str) -> Path:
    """build/parsers/<package>, or ParserEnvError saying how to make it."""
    path = ENVS / package
    if not (path / ".lab-parsers-key").is_file():
        raise ParserEnvError(f"no {package} parser environment at {path}: run `make parsers`")
    return path


def parser_lines(suites: Iterable[Path]) -> dict[str, list[dict[str, Any]]]:
    """package → every command line of the suites' cases and rungs that package serves."""
    package_of = {fw: pkg for pkg, fws in SERVED_BY.items() for fw in fws}
    out: dict[str, list[dict[str, Any]]] = {pkg: [] for pkg in SERVED_BY}
    for path in suites:
        lines = suite_command_lines(load_suite(path))
        for case, rungs in lines.items():
            for rung, frameworks in rungs.items():
                for fw, argv in frameworks.items():
                    if fw in package_of:
                        item = {"suite": path.name, "case": case, "rung": rung, "framework": fw}
                        out[package_of[fw]].append({**item, "argv": argv})
    return out


def _run_checker(package: str, args: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **CHECK_ENV, "PYTHONPATH": str(env_dir(package))}
    return subprocess.run(
        [sys.executable, str(CHECKERS / f"check_{package}.py"), *args],
        input=stdin, capture_output=True, text=True, env=env, timeout=CHECK_TIMEOUT_S,
    )  # fmt: skip


def real_options(package: str) -> dict[str, frozenset[str]]:
    """lab framework → every long option its real parser has, from the package's checker."""
    proc = _run_checker(package, ["--options"], "")
    if proc.returncode != 0:
        raise ParserEnvError(
            f"the {package} checker could not list options:\n{proc.stderr[-2000:]}"
        )
    return {fw: frozenset(opts) for fw, opts in json.loads(proc.stdout).items()}


def check_lines(package: str, items: list[dict[str, Any]]) -> list[Verdict]:
    """The real parser's verdict on each item ({suite, case, rung, framework, argv}), in order,
    from one checker process in the package's environment."""
    if not items:
        return []
    proc = _run_checker(package, [], json.dumps(items))
    answers = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or len(answers) != len(items):
        raise ParserEnvError(
            f"the {package} checker answered {len(answers)} of {len(items)} lines and exited "
            f"{proc.returncode}; its last output:\n{proc.stderr[-2000:]}"
        )
    fields = ("suite", "case", "rung", "framework", "argv", "verdict", "message")
    return [Verdict(**{k: a.get(k, "") for k in fields}) for a in answers]


def flag_lists_source(sglang_srt: frozenset[str], vllm: frozenset[str]) -> str:
    """The text of llm_flag_lists.py for these option sets."""

    def block(name: str, flags: frozenset[str]) -> str:
        body = "".join(f'        "{f}",\n' for f in sorted(flags))
        return f"{name} = frozenset(\n    (\n{body}    )\n)\n"

    return (
        '"""Generated by `python -m lab.host.real_parsers write-flag-lists` from the parsers\n'
        f"of sglang {SGLANG_VERSION} (`python3 -m sglang.launch_server`) and vllm {VLLM_VERSION} "
        "(`vllm serve`):\nevery long option they accept.\n\n"
        "Long because it is data (two frozensets, one flag per line), not logic; regenerate it, "
        'do not\nedit it by hand."""\n\n'
        + block("SGLANG_SRT", sglang_srt)
        + "\n"
        + block("VLLM", vllm)
    )


if __name__ == "__main__":
    if sys.argv[1:] != ["write-flag-lists"]:
        sys.exit("usage: python -m lab.host.real_parsers write-flag-lists   (after make parsers)")
    text = flag_lists_source(real_options("sglang")["sglang-srt"], real_options("vllm")["vllm"])
    FLAG_LISTS.write_text(text, encoding="utf-8")
