"""Command-line values are input too: a bad one exits 2 with a clear message, nothing started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.cli import main
from lab.host import gpus

ROOT = Path(__file__).resolve().parents[2]
REF = str(ROOT / "configs" / "reference.json")


@pytest.mark.parametrize("value", ["-3", "0", "nan", "inf", "lots"])
def test_vram_gib_must_be_a_number_above_0(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["repro", "tiny", "--config", REF, f"--vram-gib={value}", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "--vram-gib" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(bool(gpus.inventory()), reason="this machine has GPUs")
def test_gpus_that_nvml_does_not_list_exit_2_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["nightly", "--config", REF, "--gpus", "0", "--runtime", "local", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--gpus 0" in err and "--gpus none" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["0,0", ",", "a,b"])
def test_gpus_list_must_name_each_gpu_once(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["list", "--config", REF, "--gpus", value]
    assert main(argv) == 2
    assert "--gpus" in capsys.readouterr().err


def test_unknown_case_exits_2_naming_the_cases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["nightly", "--config", REF, "--case", "nope", "--gpus", "none", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "ref_t2i_tiny" in err
    assert list(tmp_path.iterdir()) == []


def test_a_repro_that_cannot_run_here_exits_2_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "suite.json"
    gpu_case = {"id": "big", "model": "ref://tiny", "num_gpus": 4, "frameworks": {"reference": {}}}
    suite.write_text(json.dumps({"cases": [gpu_case]}))
    out = tmp_path / "runs"
    argv = ["repro", "big", "--config", str(suite), "--gpus", "none", "--runtime", "local"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "big cannot run here" in err and "GPU" in err
    assert not out.exists() or list(out.iterdir()) == []


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for code in ("0 ", "1 ", "2 ", "130"):
        assert f"\n  {code}" in out
    assert "--fail-on-skipped" in out and "--fail-on-degraded" in out
    readme = (ROOT / "README.md").read_text()
    assert "--fail-on-skipped" in readme and "| 130 / 143 |" in readme
