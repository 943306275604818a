"""e2e test files in the lab: what a test that launches its own server needs.

- `with_lab_args(other_args)`: the server flags of the test, with the lab's LAB_SERVER_EXTRA_ARGS
  (a ladder rung's, the CPU budget of VRAM emulation) replacing or joining them. The two-line
  change a real sglang test needs is to wrap its `other_args` in it.
- `popen_launch_server` / `kill_process_tree`: the small launcher of the shipped example (the
  shape of sglang's test_utils helpers); the server shares the test's output and process group,
  so the lab watches its lines and stops it with the test.
- `python -m lab.e2e FILE.py --junit OUT.xml`: run a unittest file and write its JUnit
  (the sandbox has no pytest); `failed_tests(OUT.xml)` reads the failures back.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
import time
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

from lab.frameworks.args import merge_args

EXTRA_ARGS_ENV = "LAB_SERVER_EXTRA_ARGS"
LAUNCHER_ENV = "LAB_SERVER_LAUNCHER"  # e.g. "python3 -m sglang.launch_server"
MODEL_ENV = "LAB_MODEL"


def with_lab_args(other_args: list[str]) -> list[str]:
    """`other_args` with the flags of $LAB_SERVER_EXTRA_ARGS replacing theirs (or appended)."""
    return merge_args(list(other_args), shlex.split(os.environ.get(EXTRA_ARGS_ENV, "")))


def default_url() -> str:
    host = os.environ.get("LAB_HOST", "127.0.0.1")
    return f"http://{host}:{os.environ.get('LAB_PORT', '30000')}"


def model_for_test(default: str) -> str:
    return os.environ.get(MODEL_ENV) or default


def popen_launch_server(
    model: str, base_url: str, timeout: float = 600.0, other_args: list[str] | None = None
) -> subprocess.Popen[bytes]:
    """Start the server (the lab's reference server unless $LAB_SERVER_LAUNCHER names another)
    and wait until /health answers 200; a server that exits first raises at once."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    launcher = shlex.split(os.environ.get(LAUNCHER_ENV, "")) or [
        sys.executable,
        "-m",
        "lab.refserver",
    ]
    argv = [*launcher, "--model-path", model, "--host", host, "--port", port]
    argv += with_lab_args(other_args or [])
    print(f"[lab.e2e] launching: {shlex.join(argv)}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(argv)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise RuntimeError(f"the server exited with code {code} before it was healthy")
        try:
            with urlopen(f"{base_url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except (URLError, OSError):
            pass
        time.sleep(0.05)
    kill_process_tree(proc.pid)
    raise TimeoutError(f"the server was not healthy after {timeout:g} s")


def kill_process_tree(pid: int) -> None:
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [*root.children(recursive=True), root]
    for p in procs:
        p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=5)
    for p in alive:
        p.kill()
    psutil.wait_procs(alive, timeout=5)


# ---- running a unittest file with a JUnit report ---------------------------------------------


class _JUnitResult(unittest.TextTestResult):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.records: list[tuple[str, str, float, str, str]] = []  # name, class, s, kind, text
        self._t0 = 0.0

    def startTest(self, test: unittest.TestCase) -> None:
        self._t0 = time.monotonic()
        super().startTest(test)

    def _record(self, test: Any, kind: str, text: str = "") -> None:
        tid = test.id() if hasattr(test, "id") else str(test)
        cls, _, name = tid.rpartition(".")
        self.records.append((name or tid, cls, time.monotonic() - self._t0, kind, text))

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self._record(test, "passed")

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._record(test, "failure", self.failures[-1][1])

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, err)
        self._record(test, "error", self.errors[-1][1])

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        self._record(test, "skipped", reason)


def write_junit(
    path: Path, suite_name: str, records: list[tuple[str, str, float, str, str]]
) -> None:
    count = {k: sum(1 for r in records if r[3] == k) for k in ("failure", "error", "skipped")}
    suite = ET.Element(
        "testsuite",
        name=suite_name,
        tests=str(len(records)),
        failures=str(count["failure"]),
        errors=str(count["error"]),
        skipped=str(count["skipped"]),
        time=f"{sum(r[2] for r in records):.3f}",
    )
    for name, cls, secs, kind, text in records:
        tc = ET.SubElement(suite, "testcase", name=name, classname=cls, time=f"{secs:.3f}")
        if kind != "passed":
            lines = text.strip().splitlines()
            el = ET.SubElement(tc, kind, message=lines[-1][:500] if lines else kind)
            el.text = text
    ET.indent(suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(ET.tostring(suite, encoding="unicode") + "\n", encoding="utf-8")
    tmp.replace(path)


def failed_tests(path: Path) -> list[tuple[str, str]]:
    """(Class.test, first message) of every failure or error in a JUnit file; [] if unreadable."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return []
    out = []
    for tc in root.iter("testcase"):
        bad = tc.find("failure")
        if bad is None:
            bad = tc.find("error")
        if bad is not None:
            cls = (tc.get("classname") or "").rpartition(".")[2]
            name = f"{cls}.{tc.get('name')}" if cls else str(tc.get("name"))
            out.append((name, bad.get("message") or bad.tag))
    return out


def run_file(path: Path, junit: Path | None) -> int:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        print(f"lab.e2e: cannot import {path}", file=sys.stderr)
        return 2
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2, resultclass=_JUnitResult)
    result = runner.run(suite)
    assert isinstance(result, _JUnitResult)
    if junit is not None:
        write_junit(junit, path.stem, result.records)
    return 0 if result.wasSuccessful() else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.e2e", description=__doc__.split("\n")[0])
    ap.add_argument("file", type=Path, help="a unittest file")
    ap.add_argument("--junit", type=Path, default=None, help="write the JUnit report here")
    ns = ap.parse_args(argv)
    return run_file(ns.file, ns.junit)


if __name__ == "__main__":
    sys.exit(main())
