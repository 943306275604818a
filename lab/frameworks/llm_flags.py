"""The command-line options of the real LLM servers, read from their PyPI packages without
installing them: sglang's wheel (`python3 -m sglang.launch_server`) and vllm's source
distribution (`vllm serve`). Both build their parsers from dataclass fields as well as literal
add_argument calls, so both are read: literal "--flag" strings and the annotated fields.

`python -m lab.frameworks.llm_flags SGLANG_WHEEL VLLM_SDIST` rewrites llm_flag_lists.py, which
config validation uses (an unknown flag of sglang-srt or vllm is a config error)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from lab.frameworks.sglang import SGLANG_VERSION

VLLM_VERSION = "0.34.0"
_LITERAL = re.compile(r"""["'](--[a-z0-9][a-z0-9-]*)["']""")


def _kebab(name: str) -> str:
    return "--" + name.replace("_", "-")


def _sglang_fields(source: str) -> Iterator[str]:
    """`name: A[T, "help"]` or `A[T, Arg(cli_name=..., aliases=[...])]` class fields."""
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            ann = item.annotation
            if not (isinstance(ann, ast.Subscript) and getattr(ann.value, "id", "") == "A"):
                continue
            parts = ann.slice.elts if isinstance(ann.slice, ast.Tuple) else []
            meta = parts[1] if len(parts) > 1 else None
            if isinstance(meta, ast.Constant) and isinstance(meta.value, str):
                yield _kebab(item.target.id)
            elif isinstance(meta, ast.Call) and getattr(meta.func, "id", "") == "Arg":
                kw = {k.arg: k.value for k in meta.keywords}
                no_cli = kw.get("no_cli")
                if isinstance(no_cli, ast.Constant) and no_cli.value:
                    continue
                cli = kw.get("cli_name")
                yield str(cli.value) if isinstance(cli, ast.Constant) else _kebab(item.target.id)
                aliases = kw.get("aliases")
                if isinstance(aliases, ast.List):
                    yield from (str(a.value) for a in aliases.elts if isinstance(a, ast.Constant))


def sglang_options(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        if "sglang/launch_server.py" not in z.namelist():
            raise ValueError(f"{wheel}: no sglang/launch_server.py")
        flags = set(_LITERAL.findall(z.read("sglang/srt/server_args.py").decode()))
        for name in z.namelist():
            if name.startswith("sglang/srt/arg_groups/fields/") and name.endswith(".py"):
                flags.update(_sglang_fields(z.read(name).decode()))
    return flags


# where `sglang serve` (diffusion) declares its options: ServerArgs.add_cli_args and its CLI
DIFFUSION_PARSER_SOURCES = (
    "sglang/multimodal_gen/runtime/server_args/",
    "sglang/multimodal_gen/runtime/entrypoints/cli/",
)


def sglang_diffusion_options(wheel: Path) -> set[str]:
    """`sglang serve`'s options for a diffusion model: the literal option strings of every
    add_argument call in its parser's code (they are all literal there)."""
    flags: set[str] = set()
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if not (name.endswith(".py") and name.startswith(DIFFUSION_PARSER_SOURCES)):
                continue
            for node in ast.walk(ast.parse(z.read(name))):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
                    flags.update(
                        str(a.value)
                        for a in node.args
                        if isinstance(a, ast.Constant) and str(a.value).startswith("--")
                    )
    if "--model-path" not in flags:
        raise ValueError(f"{wheel}: no `sglang serve` diffusion parser found")
    return flags


def download_sglang_wheel(folder: Path) -> Path:
    """sglang's wheel from PyPI, cached in `folder` (pip download, no install); RuntimeError
    saying why when PyPI cannot give it."""
    found = sorted(folder.glob(f"sglang-{SGLANG_VERSION}-*.whl"))
    if found:
        return found[0]
    r = subprocess.run(
        [sys.executable, "-m", "pip", "download", f"sglang=={SGLANG_VERSION}", "--no-deps",
         "-d", str(folder), "-q"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    found = sorted(folder.glob(f"sglang-{SGLANG_VERSION}-*.whl"))
    if not found:
        raise RuntimeError(f"cannot download sglang {SGLANG_VERSION}: {r.stderr.strip()[-300:]}")
    return found[0]


def vllm_options(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as t:
        root = t.getnames()[0].split("/", 1)[0]

        def read(rel: str) -> str:
            f = t.extractfile(f"{root}/{rel}")
            assert f is not None
            return f.read().decode()

        if "def cmd(" not in read("vllm/entrypoints/cli/serve.py"):
            raise ValueError(f"{sdist}: no `vllm serve` subcommand")
        flags = set(_LITERAL.findall(read("vllm/engine/arg_utils.py")))
        for node in ast.walk(ast.parse(read("vllm/entrypoints/common/cli_args.py"))):
            if isinstance(node, ast.ClassDef) and node.name.endswith("FrontendArgs"):
                flags.update(
                    _kebab(i.target.id)
                    for i in node.body
                    if isinstance(i, ast.AnnAssign) and isinstance(i.target, ast.Name)
                )
    return flags


def write_lists(sglang: set[str], vllm: set[str], path: Path) -> None:
    def block(name: str, flags: set[str]) -> str:
        body = "".join(f'        "{f}",\n' for f in sorted(flags))
        return f"{name} = frozenset(\n    (\n{body}    )\n)\n"

    path.write_text(
        '"""Generated by `python -m lab.frameworks.llm_flags` from sglang '
        f'{SGLANG_VERSION} and vllm {VLLM_VERSION}:\nevery option their servers accept."""\n\n'
        + block("SGLANG_SRT", sglang)
        + "\n"
        + block("VLLM", vllm),
        encoding="utf-8",
    )


if __name__ == "__main__":
    write_lists(
        sglang_options(Path(sys.argv[1])),
        vllm_options(Path(sys.argv[2])),
        Path(__file__).with_name("llm_flag_lists.py"),
    )
