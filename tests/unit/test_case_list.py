"""`lab list` as a user reads it: one column per field, lined up whatever the ids' lengths."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.cli import build_parser, main

LONG_ALIAS = "a-very-long-alias-that-users-type-for-this-case"


def _case(cid: str, aliases: list[str], num_gpus: int = 0) -> dict:
    return {
        "id": cid,
        "model": "ref://tiny",
        "task": "text-to-image",
        "prompt": "p",
        "num_gpus": num_gpus,
        "aliases": aliases,
        "frameworks": {"reference": {}},
    }


def test_lab_list_lines_up_long_ids_and_aliases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "suite.json"
    cases = [
        _case("t", ["x"]),
        _case("ref_a_case_with_an_id_longer_than_the_old_thirty_four", [LONG_ALIAS]),
        _case("gpu_case", [], num_gpus=2),
    ]
    suite.write_text(json.dumps({"cases": cases}))
    assert main(["list", "--config", str(suite), "--gpus", "none"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0]
    assert header.split() == ["case", "gpus", "frameworks", "aliases", "here"]
    for column in ("frameworks", "aliases", "here"):
        at = header.index(column)
        for line in lines[1:]:
            assert line[at - 2 : at] == "  " and line[at] != " ", (column, line)
    gpus_end = header.index("gpus") + len("gpus")
    assert [line[gpus_end - 1] for line in lines[1:]] == ["0", "0", "2"]  # right-aligned
    assert lines[2].split()[3] == LONG_ALIAS
    assert lines[3].split()[4] == "no:"


def _parsers(parser: argparse.ArgumentParser, path: str = "lab") -> Iterator[tuple[str, Any]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_of_every_command_says_what_it_is_for() -> None:
    missing = [
        f"{path} {a.option_strings or a.dest}"
        for path, parser in _parsers(build_parser())
        for a in parser._actions
        if not isinstance(a, argparse._SubParsersAction) and not a.help
    ]
    assert missing == []
