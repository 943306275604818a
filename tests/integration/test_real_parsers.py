"""sglang's and vLLM's own parsers accept every server command line the lab generates: every
case and ladder rung of every suite under configs/, plus the LLM server cases of
tests/data/llm_servers.json (no suite under configs/ names sglang-srt or vllm yet). One checker
process per package, in the environments `make parsers` builds (docker/parsers/build.sh). The
option lists config validation reads (llm_flag_lists.py) are those parsers' own.

Without those environments the tests skip, saying so; with REQUIRE_PARSERS=1 (CI) they fail."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest

from lab.config import load_suite
from lab.frameworks import llm_flag_lists
from lab.frameworks.args import flag_name
from lab.frameworks.reference import DEVICE_MEMORY_FLAG
from lab.frameworks.sglang import SGLANG_VERSION
from lab.frameworks.vllm import VLLM_VERSION
from lab.host.commandlines import suite_command_lines
from lab.host.real_parsers import (
    CHECKERS,
    SERVED_BY,
    ParserEnvError,
    Verdict,
    check_lines,
    env_dir,
    parser_lines,
    real_options,
)

REPO = Path(__file__).resolve().parents[2]
SUITES = [*sorted((REPO / "configs").glob("*.json")), REPO / "tests" / "data" / "llm_servers.json"]
pytestmark = pytest.mark.slow

# Lines the parsers must refuse, made from a line the lab generates: (framework, what is added,
# the parser's words). A checker that accepted anything would fail here.
BAD = [
    ("sglang", ["--lab-no-such-flag"], "unrecognized arguments: --lab-no-such-flag"),
    ("sglang", ["--num-gpus", "two"], "argument --num-gpus: invalid int value: 'two'"),
    ("sglang", ["--warmup-mode", "often"], "argument --warmup-mode: invalid choice: 'often'"),
    ("sglang-srt", ["--lab-no-such-flag"], "unrecognized arguments: --lab-no-such-flag"),
    ("sglang-srt", ["--tp-size", "two"], "invalid int value: 'two'"),
    ("vllm", ["--lab-no-such-flag"], "unrecognized arguments: --lab-no-such-flag"),
    ("vllm", ["--tensor-parallel-size", "two"], "invalid int value: 'two'"),
    ("vllm", ["--dtype", "float7"], "argument --dtype: invalid choice: 'float7'"),
]


def _bad_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    first = {}
    for item in lines:
        first.setdefault(item["framework"], item)
    return [
        {**first[fw], "case": f"bad:{' '.join(extra)}", "argv": first[fw]["argv"] + extra}
        for fw, extra, _ in BAD
        if fw in first
    ]


def _need_env(package: str) -> None:
    try:
        env_dir(package)
    except ParserEnvError as e:
        if os.environ.get("REQUIRE_PARSERS") == "1":
            pytest.fail(f"{e} (REQUIRE_PARSERS=1)")
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def verdicts() -> dict[str, tuple[list[Verdict], list[Verdict]]]:
    """package → (verdicts on the lab's lines, verdicts on the BAD lines), one process each."""
    for package in SERVED_BY:  # before either checker spends its seconds
        _need_env(package)
    out = {}
    for package, lines in parser_lines(SUITES).items():
        bad = _bad_lines(lines)
        got = check_lines(package, lines + bad)
        out[package] = (got[: len(lines)], got[len(lines) :])
    return out


@pytest.mark.parametrize("package", sorted(SERVED_BY))
def test_every_generated_line_is_accepted_by_the_real_parser(
    package: str, verdicts: dict[str, tuple[list[Verdict], list[Verdict]]]
) -> None:
    good, _ = verdicts[package]
    # every framework the package serves had lines to check, on more than one rung
    assert {v.framework for v in good} == set(SERVED_BY[package])
    assert len({(v.case, v.rung) for v in good}) > len({v.case for v in good})
    refused = [v.describe() for v in good if v.verdict not in ("accepted", "unverified")]
    assert not refused, f"{len(refused)} of {len(good)} lines refused:\n" + "\n".join(refused)
    unverified = [v.describe() for v in good if v.verdict == "unverified"]
    if unverified:  # parsed; a later step needs the model's files (check_<package>.py says why)
        warnings.warn("parsed, not fully checked offline:\n" + "\n".join(unverified), stacklevel=1)


@pytest.mark.parametrize("package", sorted(SERVED_BY))
def test_the_real_parser_rejects_an_unknown_flag_and_a_bad_value(
    package: str, verdicts: dict[str, tuple[list[Verdict], list[Verdict]]]
) -> None:
    _, bad = verdicts[package]
    expected = [(fw, words) for fw, _, words in BAD if fw in SERVED_BY[package]]
    assert len(bad) == len(expected)
    for v, (fw, words) in zip(bad, expected, strict=True):
        assert (v.framework, v.verdict) == (fw, "rejected"), v.describe()
        assert words in v.message, v.describe()


@pytest.fixture(scope="module")
def options() -> dict[str, frozenset[str]]:
    """lab framework → its real parser's options (one more process per package)."""
    for package in SERVED_BY:
        _need_env(package)
    return {**real_options("sglang"), **real_options("vllm")}


def test_config_validation_knows_exactly_the_real_parsers_options(
    options: dict[str, frozenset[str]],
) -> None:
    """An option the list lacks would fail a valid suite; an extra one would pass a bad one
    (regenerate: `python -m lab.host.real_parsers write-flag-lists`)."""
    assert options["sglang-srt"] == llm_flag_lists.SGLANG_SRT
    assert options["vllm"] == llm_flag_lists.VLLM
    # negations the parsers add (BooleanOptionalAction) count too
    assert "--no-enable-tf32-matmul" in llm_flag_lists.SGLANG_SRT
    assert "--gpu-memory-utilization" in llm_flag_lists.VLLM


def test_reference_llm_speaks_sglangs_options(options: dict[str, frozenset[str]]) -> None:
    """The lab's reference LLM server stands in for sglang-srt: every flag on its lines is one
    sglang's launch_server has (e.g. --mem-fraction-static on its ladder), but the flag by which
    the lab gives it an emulated card's size, which is the lab's own."""
    used = {
        flag_name(a)
        for path in SUITES
        for rungs in suite_command_lines(load_suite(path)).values()
        for frameworks in rungs.values()
        for a in frameworks.get("reference-llm", [])
        if a.startswith("--")
    }
    assert "--mem-fraction-static" in used
    assert used - {DEVICE_MEMORY_FLAG} <= options["sglang-srt"]


def test_parser_environments_pin_the_versions_the_lab_speaks() -> None:
    for package, version in (("sglang", SGLANG_VERSION), ("vllm", VLLM_VERSION)):
        pins = (CHECKERS / f"{package}-requirements.txt").read_text().split()
        assert f"{package}=={version}" in pins
