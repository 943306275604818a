"""LLM server adapters (sglang-srt, vllm, reference-llm): their command lines, the mem-fraction
ladder, and the config errors for an unknown flag or a fraction outside (0, 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab.config import load_suite
from lab.contract import AttemptSpec
from lab.errors import ConfigError
from lab.frameworks import server_command
from lab.host.ladder import plan_ladder

ROOT = Path(__file__).resolve().parents[2]


def _suite(tmp_path: Path, **case: Any) -> Path:
    base = {"id": "llm", "model": "Qwen/Qwen3-0.6B", "task": "chat", "num_gpus": 1}
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"cases": [{**base, **case}]}))
    return p


def _rungs(tmp_path: Path, fw: str, **cfg: Any) -> list[tuple[str, dict[str, list[str]]]]:
    loaded = load_suite(_suite(tmp_path, frameworks={fw: cfg}))
    plan = plan_ladder(loaded, loaded.suite.cases[0], [fw], gpu_count=1)
    return [(r.name, r.extra_args) for r in plan.rungs]


def test_sglang_srt_command_is_launch_server_with_the_lab_port(tmp_path: Path) -> None:
    loaded = load_suite(_suite(tmp_path, num_gpus=2, frameworks={"sglang-srt": {}, "vllm": {}}))
    spec = AttemptSpec(
        run_id="r",
        case=loaded.suite.cases[0],
        frameworks=["sglang-srt", "vllm"],
        num_gpus=2,
        extra_args={"sglang-srt": ["--mem-fraction-static", "0.7"]},
        out_dir="/o",
        log_dir="/l",
        config_dir="/c",
    )
    assert server_command(spec, "sglang-srt") == [
        *("python3", "-m", "sglang.launch_server", "--model-path", "Qwen/Qwen3-0.6B"),
        *("--host", "127.0.0.1", "--port", "30000", "--tp-size", "2"),
        *("--mem-fraction-static", "0.7"),
    ]
    assert server_command(spec, "vllm")[:3] == ["vllm", "serve", "Qwen/Qwen3-0.6B"]
    assert server_command(spec, "vllm")[-2:] == ["--tensor-parallel-size", "2"]


def test_ladders_step_the_memory_fraction_down(tmp_path: Path) -> None:
    assert _rungs(tmp_path, "sglang-srt") == [
        ("as-configured", {}),
        ("mem-fraction-0.8", {"sglang-srt": ["--mem-fraction-static", "0.8"]}),
        ("mem-fraction-0.7", {"sglang-srt": ["--mem-fraction-static", "0.7"]}),
    ]
    assert [n for n, _ in _rungs(tmp_path, "vllm")] == [
        "as-configured",
        "mem-fraction-0.8",
        "mem-fraction-0.7",
    ]
    assert _rungs(tmp_path, "vllm")[1][1] == {"vllm": ["--gpu-memory-utilization", "0.8"]}
    # configurable, and only fractions below what serve_args already asks for
    custom = _rungs(tmp_path, "sglang-srt", mem_fractions=[0.88, 0.6, 0.5])
    assert [n for n, _ in custom] == ["as-configured", "mem-fraction-0.6", "mem-fraction-0.5"]
    lowered = _rungs(tmp_path, "reference-llm", serve_args="--mem-fraction-static 0.8")
    assert [n for n, _ in lowered] == ["as-configured", "mem-fraction-0.7"]


@pytest.mark.parametrize(
    ("case", "field", "words"),
    [
        (
            {"frameworks": {"sglang-srt": {"serve_args": "--mem-fraction 0.7"}}},
            "frameworks",
            "sglang-srt.serve_args: sglang-srt has no option --mem-fraction",
        ),
        (
            {"frameworks": {"vllm": {"serve_args": "--gpu-memory-utilization 1.2"}}},
            "frameworks",
            "--gpu-memory-utilization must be between 0 and 1",
        ),
        (
            {"model": "ref-llm://tiny", "frameworks": {"reference": {}}},
            None,
            "served by framework 'reference-llm'",
        ),
        (
            {"frameworks": {"sglang-srt": {"mem_fractions": [0.88, 0]}}},
            "frameworks.sglang-srt.mem_fractions",
            "between 0 and 1",
        ),
        (
            {
                "kind": "test",
                "command": "true",
                "ladder": [
                    {"name": "low", "env": {"LAB_SERVER_EXTRA_ARGS": "--mem-fraction-static 0"}}
                ],
            },
            "ladder",
            "rung 'low' LAB_SERVER_EXTRA_ARGS: --mem-fraction-static must be between 0 and 1",
        ),
    ],
)
def test_bad_llm_flags_name_file_case_and_field(
    tmp_path: Path, case: dict[str, Any], field: str | None, words: str
) -> None:
    path = _suite(tmp_path, **case)
    with pytest.raises(ConfigError) as e:
        load_suite(path)
    assert (e.value.path, e.value.case_id, e.value.field) == (str(path), "llm", field)
    assert words in e.value.problem
    r = subprocess.run(
        [sys.executable, "-m", "lab.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 2 and words in r.stderr + r.stdout
