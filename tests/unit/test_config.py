"""Suite loading: sglang's own file loads unchanged; bad input names file, case and field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab.config import load_suite
from lab.errors import ConfigError

DATA = Path(__file__).parent.parent / "data"
ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, obj: object, name: str = "suite.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


def test_sglang_comparison_config_loads_unchanged() -> None:
    loaded = load_suite(DATA / "sglang_comparison_configs.json")
    ids = [c.id for c in loaded.suite.cases]
    assert "ltx2.3_twostage_ti2v_2gpus" in ids and len(ids) == 13
    ltx = loaded.case("ltx2.3_twostage_ti2v_2gpus")
    assert ltx.num_gpus == 2 and ltx.frameworks["sglang"].serve_arg_list[-2:] == [
        "--cfg-parallel-size",
        "2",
    ]
    # comfyui loads but is not run by the lab
    assert loaded.case("minimax_h3_i2va_5090_consumer").runnable_frameworks == ["sglang"]


def test_shipped_suites_validate() -> None:
    nightly = load_suite(ROOT / "configs" / "nightly.json")
    ref = load_suite(ROOT / "configs" / "reference.json")
    ids = {c.id for c in nightly.suite.cases}
    assert {c.id for c in ref.suite.cases} <= ids  # nightly includes the reference cases
    assert "ltx-2.3" in nightly.case("ltx2.3_twostage_ti2v_2gpus").aliases


def test_unknown_key_names_file_case_and_field(tmp_path: Path) -> None:
    p = write(
        tmp_path, {"cases": [{"id": "a", "model": "m", "frameworks": {"sglang": {}}, "num_gpu": 2}]}
    )
    with pytest.raises(ConfigError) as e:
        load_suite(p)
    msg = str(e.value)
    assert str(p) in msg and "case 'a'" in msg and "num_gpu" in msg and "typo" in msg


def test_wrong_type_in_framework_names_the_nested_field(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        {"cases": [{"id": "b", "model": "m", "frameworks": {"sglang": {"serve_args": 3}}}]},
    )
    with pytest.raises(ConfigError) as e:
        load_suite(p)
    assert "case 'b'" in str(e.value) and "frameworks.sglang.serve_args" in str(e.value)


def test_unknown_framework_and_duplicate_ids_are_rejected(tmp_path: Path) -> None:
    p = write(tmp_path, {"cases": [{"id": "c", "model": "m", "frameworks": {"sglng": {}}}]})
    with pytest.raises(ConfigError, match="unknown framework 'sglng'"):
        load_suite(p)
    case = {"id": "d", "model": "m", "frameworks": {"sglang": {}}}
    with pytest.raises(ConfigError, match="appears twice"):
        load_suite(write(tmp_path, {"cases": [case, case]}, "dup.json"))


def test_not_json_is_a_config_error(tmp_path: Path) -> None:
    p = tmp_path / "broken.json"
    p.write_text("{ nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_suite(p)


def test_lab_validate_exits_2_with_the_message(tmp_path: Path) -> None:
    p = write(tmp_path, {"cases": [{"id": "e", "frameworks": {"sglang": {}}}]})
    r = subprocess.run(
        [sys.executable, "-m", "lab.cli", "validate", str(p)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 2
    assert "case 'e'" in r.stderr and "model" in r.stderr and "Traceback" not in r.stderr
