"""`lab list` as a user reads it: one column per field, lined up whatever the ids' lengths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.cli import main

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
