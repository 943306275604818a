"""The flags the lab gives sglang-srt and vllm are real: read from the packages on PyPI (sglang's
wheel, vllm's source distribution; cached under build/upstream, opened as zip/tar, never
installed). Every flag of every command line and ladder rung is in the real option list, and
the list config validation uses is the real one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests

from lab.config import Case, FrameworkConfig
from lab.frameworks import get_framework, llm_flag_lists
from lab.frameworks.args import flag_name
from lab.frameworks.llm_flags import (
    VLLM_VERSION,
    download_sglang_wheel,
    sglang_options,
    vllm_options,
)

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "build" / "upstream"
pytestmark = pytest.mark.slow


def _sglang_wheel() -> Path:
    try:
        return download_sglang_wheel(CACHE / "sglang")
    except RuntimeError as e:
        pytest.skip(str(e))


def _vllm_sdist() -> Path:
    # pip download would build the sdist's metadata (torch, CUDA); PyPI's JSON simple index
    # gives the file and its SHA-256
    path = CACHE / "vllm" / f"vllm-{VLLM_VERSION}.tar.gz"
    if path.exists():
        return path
    try:
        index = requests.get(
            "https://pypi.org/simple/vllm/",
            headers={"Accept": "application/vnd.pypi.simple.v1+json"},
            timeout=30,
        ).json()
        entry = next(f for f in index["files"] if f["filename"] == path.name)
        data = requests.get(entry["url"], timeout=300).content
    except (requests.RequestException, ValueError, StopIteration) as e:
        pytest.skip(f"cannot download vllm {VLLM_VERSION}: {e}")
    assert hashlib.sha256(data).hexdigest() == entry["hashes"]["sha256"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def real_options() -> dict[str, set[str]]:
    return {"sglang-srt": sglang_options(_sglang_wheel()), "vllm": vllm_options(_vllm_sdist())}


def _flags_used(fw: str) -> set[str]:
    """Every flag the lab puts on this framework's command line, on 1 or 2 GPUs, every rung."""
    adapter = get_framework(fw)
    case = Case(id="c", model="m", task="chat", frameworks={fw: FrameworkConfig()})
    cfg = case.frameworks[fw]
    used = set()
    for gpus in (1, 2):
        used |= {flag_name(t) for t in adapter.base_command(case, cfg, "h", 1, gpus)[1:]}
    for rung in adapter.default_ladder(case, cfg):
        used |= {flag_name(t) for t in rung.arg_list}
    return {f for f in used if f.startswith("--")}


@pytest.mark.parametrize("fw", ["sglang-srt", "vllm"])
def test_every_flag_of_every_rung_is_in_the_real_package(
    fw: str, real_options: dict[str, set[str]]
) -> None:
    used = _flags_used(fw)
    assert {"--host", "--port"} <= used and len(used) >= 4
    assert used <= real_options[fw], used - real_options[fw]


def test_reference_llm_speaks_sglangs_pool_flag(real_options: dict[str, set[str]]) -> None:
    assert _flags_used("reference-llm") <= real_options["sglang-srt"]


def test_shipped_flag_lists_are_the_real_packages(real_options: dict[str, set[str]]) -> None:
    assert set(llm_flag_lists.SGLANG_SRT) == real_options["sglang-srt"]
    assert set(llm_flag_lists.VLLM) == real_options["vllm"]
    assert "--mem-fraction-static" in llm_flag_lists.SGLANG_SRT
    assert "--gpu-memory-utilization" in llm_flag_lists.VLLM
