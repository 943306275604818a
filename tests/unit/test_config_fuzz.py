"""Property: a suite `lab validate` accepts never crashes a later command.

Hypothesis mutates the shipped suites (types, quotes, placeholders, missing and extra keys,
unicode, huge numbers, duplicate cases) and runs the commands in-process, as `lab` would: each
mutation either exits 2 from `lab validate` with a message, or `lab list`, `lab nightly --dry-run`
and `lab render k8s` all exit 0. A fixed seed (derandomize) keeps every run the same."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lab.cli import main

ROOT = Path(__file__).resolve().parents[2]
SUITES = ("reference.json", "nightly.json", "gpu.json")
# gpu.json runs on the host's own environment (image "host"): by design no cluster manifest.
RENDERS = ("reference.json", "nightly.json")

# Values that have broken a command before: quotes, braces, flags the lab owns, odd numbers.
NASTY_TEXT = st.sampled_from(
    [
        "'",
        '"',
        "{",
        "}",
        "{nope}",
        "{port}",
        "{0}",
        "{python.x}",
        "--port 1",
        "--host=0.0.0.0",
        "a\\",
        "",
        " ",
        "ünïcödé ✓",
        "\x00",
        "../../etc",
        "-",
    ]
)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    NASTY_TEXT,
    st.lists(st.text(max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
)


def paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON tree, the root excluded."""
    out: list[tuple[Any, ...]] = []
    if not isinstance(obj, dict | list):
        return []
    for k, v in obj.items() if isinstance(obj, dict) else enumerate(obj):
        out.append((*prefix, k))
        out += paths(v, (*prefix, k))
    return out


# Strings a later command splits like a shell or fills: edited more often than the rest.
SENSITIVE = {"serve_args", "command", "args", "skip_if_args", "workdir"}
# What breaks a shell split or a placeholder fill.
SHELL_TEXT = st.sampled_from(["'", '"', "a\\", "{nope}", "{", "}", "{0}", " --port 8000"])


def parent_of(tree: Any, path: tuple[Any, ...]) -> Any:
    for k in path[:-1]:
        tree = tree[k]
    return tree


def mutate(data: st.DataObject, tree: Any) -> None:
    """One to three edits in place."""
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        op = data.draw(st.sampled_from(["value", "insert", "insert", "delete", "extra", "dup"]))
        every = paths(tree)
        strings = [p for p in every if isinstance(parent_of(tree, p)[p[-1]], str)]
        hot = [p for p in strings if p[-1] in SENSITIVE]
        pool = every
        if op == "insert" and strings:
            pool = hot if hot and data.draw(st.booleans(), label="hot") else strings
        where = data.draw(st.sampled_from(pool), label="path")
        parent, key = parent_of(tree, where), where[-1]
        if op == "value":
            parent[key] = data.draw(VALUES, label="value")
        elif op == "insert" and isinstance(parent[key], str):
            s = parent[key]
            i = data.draw(st.integers(0, len(s)), label="at")
            text = data.draw(SHELL_TEXT if where in hot else NASTY_TEXT, label="text")
            parent[key] = s[:i] + text + s[i:]
        elif op == "delete":
            del parent[key]
        elif op == "extra" and isinstance(parent[key], dict):
            parent[key][data.draw(st.text(min_size=1, max_size=8), label="key")] = data.draw(
                VALUES, label="extra value"
            )
        elif op == "dup" and isinstance(parent, list):
            parent.append(json.loads(json.dumps(parent[key])))


def lab(*argv: str) -> tuple[int, str]:
    """`lab ARGV` in this process: its exit code and what it printed. An exception escaping
    `main` is the traceback a user would see, and fails the test."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse
            code = int(e.code or 0)
    return code, buf.getvalue()


@settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the draws printed say enough
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_validated_suites_never_crash_a_later_command(data: st.DataObject) -> None:
    work = Path(tempfile.mkdtemp(prefix="lab-fuzz-"))
    try:
        for name in SUITES:
            shutil.copy(ROOT / "configs" / name, work / name)
        name = data.draw(st.sampled_from(SUITES), label="suite")
        tree = json.loads((work / name).read_text())
        mutate(data, tree)
        path = work / name
        path.write_text(json.dumps(tree, ensure_ascii=data.draw(st.booleans(), label="ascii")))

        code, said = lab("validate", str(path))
        if code == 2:
            assert "FAIL file" in said, said
            return
        assert code == 0, said
        commands = [
            ["list", "--config", str(path), "--gpus", "none"],
            ["nightly", "--config", str(path), "--dry-run", "--gpus", "none", "--runtime", "local"],
        ]
        if name in RENDERS:
            k8s = ["--out", str(work / "k8s"), "--run-id", "f"]
            commands.append(["render", "k8s", "--config", str(path), *k8s])
        for argv in commands:
            code, said = lab(*argv)
            assert code == 0, f"lab {' '.join(argv[:2])} after validate said ok:\n{said}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
