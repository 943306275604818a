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


def _one(**over: object) -> dict:
    c = {"id": "a", "model": "m", "frameworks": {"sglang": {}}}
    c.update(over)
    return c


@pytest.mark.parametrize(
    ("case", "field", "words"),
    [
        (_one(num_gpus=True), "num_gpus", "valid integer"),
        (_one(width="256"), "width", "valid integer"),
        (_one(reference_image=1), "reference_image", "valid boolean"),
        (_one(est_time_s=float("inf")), "est_time_s", "finite"),
        (
            _one(frameworks={"sglang": {"serve_args": "--model-variant 'a b"}}),
            "frameworks.sglang.serve_args",
            "No closing quotation",
        ),
        (
            _one(frameworks={"sglang": {"serve_args": "--warmup-mode off --port 8000"}}),
            "frameworks.sglang.serve_args",
            "--port is set by the lab",
        ),
        (
            _one(frameworks={"sglang": {"serve_args": "--host=0.0.0.0"}}),
            "frameworks.sglang.serve_args",
            "--host is set by the lab",
        ),
        (
            _one(ladder=[{"name": "x", "args": "--scheduler-port 1"}]),
            "ladder.0.args",
            "--scheduler-port is set by the lab",
        ),
        (
            _one(frameworks={"custom": {"command": "{python} -m x --port {prot}"}}),
            "frameworks.custom.command",
            "unknown placeholder {prot}",
        ),
        (
            _one(frameworks={"custom": {"command": "{python} -m x --name 'open"}}),
            "frameworks.custom.command",
            "No closing quotation",
        ),
        (
            {"id": "t", "kind": "test", "command": "pytest {outdir}"},
            "command",
            "unknown placeholder {outdir}",
        ),
    ],
)
def test_what_a_later_command_needs_is_checked_at_load(
    tmp_path: Path, case: dict, field: str, words: str
) -> None:
    p = write(tmp_path, {"cases": [case]})
    with pytest.raises(ConfigError) as e:
        load_suite(p)
    assert e.value.field == field and e.value.case_id == case["id"]
    assert words in str(e.value) and str(p) in str(e.value)


def test_names_are_unique_and_a_suite_has_cases(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one case"):
        load_suite(write(tmp_path, {"cases": []}))
    a, b = _one(aliases=["x"]), _one(id="b", aliases=["X"])
    with pytest.raises(ConfigError) as e:
        load_suite(write(tmp_path, {"cases": [a, b]}))
    assert e.value.case_id == "b" and e.value.field == "aliases" and "case 'a'" in str(e.value)
    with pytest.raises(ConfigError, match="is an alias of 'a'"):
        load_suite(write(tmp_path, {"cases": [a, _one(id="x")]}))
    with pytest.raises(ConfigError, match="model id of case 'b'"):
        cases = [_one(aliases=["other/m"]), _one(id="b", model="other/m")]
        load_suite(write(tmp_path, {"cases": cases}))


def test_a_custom_command_keeps_odd_model_ids_one_word(tmp_path: Path) -> None:
    from lab.frameworks.custom import Custom

    cmd = "{python} -m srv --model-path {model} --port {port} --dir {config_dir}"
    odd = _one(model="it's a model", frameworks={"custom": {"command": cmd}})
    loaded = load_suite(write(tmp_path, {"cases": [odd]}))
    case = loaded.case("a")
    argv = Custom().command(case, case.frameworks["custom"], "127.0.0.1", 30000, 1, [], "/my dir")
    assert argv[argv.index("--model-path") + 1] == "it's a model"
    assert argv[argv.index("--dir") + 1] == "/my dir"


def test_suite_target_and_budget_reach_its_cases_and_included_ones(tmp_path: Path) -> None:
    # README: a suite-level target_mde_pct / measure_budget_s applies to every case (a case's
    # own value wins); the included file's cases are the top file's cases too.
    write(tmp_path, {"cases": [_one(id="inc")]}, "other.json")
    top = {
        "include": ["other.json"],
        "target_mde_pct": 4.0,
        "measure_budget_s": 60.0,
        "cases": [_one(id="plain"), _one(id="own", target_mde_pct=2.0)],
    }
    loaded = load_suite(write(tmp_path, top))
    got = {c.id: (c.target_mde_pct, c.measure_budget_s) for c in loaded.suite.cases}
    assert got == {"plain": (4.0, 60.0), "own": (2.0, 60.0), "inc": (4.0, 60.0)}


def test_shareable_and_exclusive_together_is_refused_naming_the_case(tmp_path: Path) -> None:
    from lab.errors import LabError

    path = tmp_path / "s.json"
    case = {"id": "t1", "kind": "test", "command": "true", "shareable": True, "exclusive": True}
    path.write_text(json.dumps({"suite": "s", "cases": [case]}))
    with pytest.raises(LabError) as e:
        load_suite(path)
    assert "t1" in str(e.value) and "exclusive" in str(e.value) and str(path) in str(e.value)
