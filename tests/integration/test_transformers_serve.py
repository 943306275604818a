"""A real server nobody here wrote under the lab: `lab nightly --config configs/transformers.json
--gpus none` in docker and netns (the chat case measured beside the reference LLM server, the
float32 case OOMing on the server's own line and passing degraded on bfloat16), and a suite
written by someone else (its own prompt, its own model from the maker, its own limit)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nightly_helpers import (
    ROOT,
    by_id,
    run_nightly,
    sandbox_work_dir,
    write_suite,
)

pytestmark = pytest.mark.slow
SUITE = ROOT / "configs" / "transformers.json"
MODELS = ROOT / "build" / "models"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the netns runtime needs root here")


@pytest.fixture(scope="module")
def made_models() -> None:
    """`make setup`'s models step (kept when present)."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    env = {**os.environ, "VENV": sys.prefix}
    subprocess.run(
        ["bash", "docker/setup.sh", "models"],
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
    )
    if not (MODELS / "llama-200m-bf16" / "config.json").is_file():
        pytest.skip("build/models not made (docker/setup.sh models)")


def _check_suite_run(code: int, results: dict, stderr: str) -> None:
    cases = by_id(results)
    assert code == 0, stderr
    chat = cases["tf_chat_tiny"]
    assert chat["outcome"] == "passed"
    fr = chat["attempts"][-1]["frameworks"][0]
    assert fr["framework"] == "transformers" and fr["server_version"] == "5.25.0"
    assert fr["latency_s"] > 0 and len(fr["latency_samples_s"]) == 5
    assert fr["env"]["USE_HUB_KERNELS"] == "NO"
    ref = cases["ref_llm_chat_beside_tf"]["attempts"][-1]["frameworks"][0]
    assert ref["framework"] == "reference-llm" and ref["latency_s"] > 0
    oom = cases["tf_oom_float32"]
    assert oom["outcome"] == "degraded"
    first, last = oom["attempts"][0], oom["attempts"][-1]
    assert first["rung"] == "as-configured" and first["outcome"] == "oom"
    assert last["rung"] == "dtype-bfloat16" and last["outcome"] == "passed"
    # netns: the server's own allocator line (ENOMEM under the address-space limit); docker: the
    # kernel kills the engine (transformers says only "The model's process stopped while loading
    # the model.") and docker's OOMKilled says why
    assert any(
        t in first["reason"]
        for t in (
            "Cannot allocate memory",
            "unable to mmap",
            "crashed (exit code -9)",
            "OOM killer",
        )
    ), first["reason"]


@pytest.mark.docker
def test_transformers_suite_in_docker(
    request: pytest.FixtureRequest, reference_image: str, made_models: None
) -> None:
    out = sandbox_work_dir(request, "tf-docker-")
    code, results, _, stderr = run_nightly(SUITE, out, "docker", timeout_s=900)
    _check_suite_run(code, results, stderr)


@pytest.mark.netns
@needs_root
def test_transformers_suite_in_netns(tmp_path: Path, made_models: None) -> None:
    code, results, _, stderr = run_nightly(SUITE, tmp_path / "out", "netns", timeout_s=900)
    _check_suite_run(code, results, stderr)


@pytest.mark.netns
@needs_root
def test_someone_elses_suite_runs_unchanged(tmp_path: Path, made_models: None) -> None:
    """Another prompt, another model made by `lab models make` into tmp, another memory limit:
    no change to the lab."""
    model = tmp_path / "models" / "my-llama"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "lab.cli",
            "models",
            "make",
            "tiny-llama",
            "--out",
            str(model),
            "--hidden",
            "32",
            "--layers",
            "1",
            "--heads",
            "2",
            "--seed",
            "7",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    big = str(MODELS / "llama-200m-bf16")
    cases = [
        {
            "id": "mine_chat",
            "model": str(model),
            "task": "chat",
            "prompt": "Say hi to the sea.",
            "max_tokens": 4,
            "num_gpus": 0,
            "frameworks": {"transformers": {"serve_args": "--dtype float32"}},
        },
        {
            "id": "mine_oom",
            "model": big,
            "task": "chat",
            "prompt": "Count to three.",
            "max_tokens": 2,
            "num_gpus": 0,
            "memory_limit_mib": 2000,
            "frameworks": {"transformers": {"serve_args": "--dtype float32"}},
        },
    ]
    suite = write_suite(
        tmp_path, cases, model_cache=str(tmp_path / "models"), startup_timeout_s=180
    )
    code, results, _, stderr = run_nightly(suite, tmp_path / "out", "netns", timeout_s=600)
    got = by_id(results)
    assert code == 0, stderr
    assert got["mine_chat"]["outcome"] == "passed"
    fr = got["mine_chat"]["attempts"][-1]["frameworks"][0]
    assert fr["command"][fr["command"].index("serve") + 1] == str(model)
    assert got["mine_oom"]["outcome"] == "degraded"
    assert got["mine_oom"]["attempts"][0]["outcome"] == "oom"
