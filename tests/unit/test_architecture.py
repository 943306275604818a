"""The layering rules of lab/, read from the source (benchmarks/module_graph.py: every import, at
any depth, except under `if TYPE_CHECKING:`): the sandbox never imports the host, results never
import the runtimes or the sandbox, frameworks know only config and contract, and no two lab
modules import each other, even lazily or for types only (`if TYPE_CHECKING:`): a type-only
import never runs, so the layering rules leave it out, but a cycle through one is still two
modules sharing one idea, and the cycle rule counts it."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from lab.contract import EXIT_BAD_SPEC

ROOT = Path(__file__).resolve().parents[2]


def _load_module_graph() -> ModuleType:
    path = ROOT / "benchmarks" / "module_graph.py"
    spec = importlib.util.spec_from_file_location("module_graph", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["module_graph"] = mod
    spec.loader.exec_module(mod)
    return mod


mg = _load_module_graph()
GRAPH: dict[str, set[str]] = mg.import_graph(ROOT)
TYPED_GRAPH: dict[str, set[str]] = mg.import_graph(ROOT, typed=True)


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def offenders(source: str, forbidden: list[str]) -> dict[str, list[str]]:
    return {
        m: sorted(i for i in deps if any(within(i, f) for f in forbidden))
        for m, deps in GRAPH.items()
        if within(m, source) and any(within(i, f) for i in deps for f in forbidden)
    }


def test_the_sandbox_never_imports_the_host() -> None:
    assert offenders("lab.sandbox", ["lab.host"]) == {}


def test_results_never_import_the_runtimes_or_the_sandbox() -> None:
    assert offenders("lab.results", ["lab.host.runtimes", "lab.sandbox"]) == {}


def test_frameworks_import_only_config_contract_errors_and_frameworks() -> None:
    allowed = ["lab.config", "lab.contract", "lab.errors", "lab.frameworks"]
    bad = {
        # `lab` itself: only its __version__, which the framework's image tag carries
        m: sorted(i for i in deps if i != "lab" and not any(within(i, a) for a in allowed))
        for m, deps in GRAPH.items()
        if within(m, "lab.frameworks")
    }
    assert {m: d for m, d in bad.items() if d} == {}


def test_no_import_cycles_among_lab_modules() -> None:
    assert mg.cycles(GRAPH) == []
    assert mg.cycles(TYPED_GRAPH) == []


def test_config_is_a_leaf_below_the_frameworks() -> None:
    """config asks lab/frameworks/names.py (no lab imports) for the names; the frameworks' classes,
    which type their arguments with config's models, are never imported by config."""
    below = {m for m in TYPED_GRAPH["lab.config"] if within(m, "lab.frameworks")}
    assert below == {
        "lab.frameworks.args",
        "lab.frameworks.llm_flag_lists",
        "lab.frameworks.names",
        "lab.frameworks.rung",
    }
    assert all(not TYPED_GRAPH[m] - {"lab.frameworks.args"} for m in below)


def test_the_graph_sees_lazy_imports_and_finds_a_cycle_through_them(tmp_path: Path) -> None:
    """The checks above would pass on an empty graph; this one proves the reader finds edges."""
    pkg = tmp_path / "lab"
    (pkg / "host").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "host" / "__init__.py").write_text("")
    (pkg / "host" / "a.py").write_text("def f():\n    from lab.host.b import g\n    return g\n")
    (pkg / "host" / "b.py").write_text("from lab.host import a\n\ng = a\n")
    (pkg / "host" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lab.host import a\n"
    )
    (pkg / "host" / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lab.host import c\n"
    )
    graph = mg.import_graph(tmp_path)
    assert graph["lab.host.a"] == {"lab.host.b"} and graph["lab.host.c"] == set()
    assert mg.cycles(graph) == [["lab.host.a", "lab.host.b"]]
    (pkg / "host" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lab.host import d\n"
    )
    typed = mg.import_graph(tmp_path, typed=True)
    assert (
        typed["lab.host.c"] == {"lab.host.d"} and mg.import_graph(tmp_path)["lab.host.c"] == set()
    )
    assert mg.cycles(typed) == [["lab.host.a", "lab.host.b"], ["lab.host.c", "lab.host.d"]]


def test_the_real_tree_has_the_edges_we_know() -> None:
    assert "lab.host.plan" in GRAPH["lab.host.run"]  # top-level import
    assert "lab.host.render_k8s" in GRAPH["lab.host.commands"]  # imported inside a function
    assert "lab.frameworks" in GRAPH["lab.sandbox.case"]


def test_lab_case_loads_no_host_module(tmp_path: Path) -> None:
    """The sandbox side of the command line (`lab case`) never builds the host's parser."""
    code = (
        "import sys; from lab.cli import main; rc = main(['case', sys.argv[1]]); "
        "import lab.sandbox.case; "
        "print(rc, sorted(m for m in sys.modules if m.startswith('lab.host')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert out.stdout.split(maxsplit=1) == [str(EXIT_BAD_SPEC), "[]\n"]


def test_runtimes_are_peers_that_share_only_base_and_process() -> None:
    """docker, netns, local and slurm share base.py (and process.py); none imports another
    runtime's module (registry.py alone picks one by name), and none reaches into the run."""
    peers = [f"lab.host.runtimes.{name}" for name in ("local", "netns", "docker", "slurm")]
    assert GRAPH["lab.host.runtimes.docker"] & {*peers, "lab.host.runtimes.process"} == set()
    for module, deps in GRAPH.items():
        if within(module, "lab.host.runtimes") and module != "lab.host.runtimes.registry":
            assert deps & {*peers, "lab.host.run"} - {module} == set(), module


def test_every_module_over_the_size_limit_says_why_in_its_docstring() -> None:
    sizes = mg.module_lines(ROOT)
    unexplained = []
    for name, path in mg.lab_modules(ROOT).items():
        lines = sizes[name]
        if lines <= mg.LARGE_LINES:
            continue
        # "450 lines" is the phrase each long module's docstring uses for its reason
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if "450 lines" not in doc and "it is data" not in doc:
            unexplained.append(f"{name} ({lines} lines)")
    assert not unexplained, "long modules, no reason in the docstring: " + ", ".join(unexplained)


def test_test_files_have_unique_names() -> None:
    """pytest imports test modules by basename (no packages under tests/): two files of one
    name stop the whole collection, so CI runs nothing."""
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
