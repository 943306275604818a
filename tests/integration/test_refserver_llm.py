"""The reference LLM server (`--model-path ref-llm://tiny`) on the CPU: real forward passes, and
sglang srt's memory: a static pool of mem_fraction_static x the device budget, so the weights
checker's CPU->device round trip OOMs at 0.88 with torch's own text and passes at 0.7."""

from __future__ import annotations

from pathlib import Path

import pytest
from nightly_helpers import ROOT, run_nightly
from refserver_helpers import RefServer

import lab

BUDGET = ("--device-memory-gib", "0.4")  # the CPU twin of PR #24559's 32 GB card
PROMPT = [{"role": "user", "content": "Name a colour."}]


def test_chat_and_generate_answer_with_real_forward_passes() -> None:
    with RefServer("--model-path", "ref-llm://tiny", *BUDGET) as srv:
        srv.wait_ready()
        assert srv.card()["id"] == "ref-llm://tiny"
        body = {"model": "ref-llm://tiny", "messages": PROMPT, "max_tokens": 12, "temperature": 0}
        first = srv.post("/v1/chat/completions", json=body).json()
        again = srv.post("/v1/chat/completions", json=body).json()
        text = first["choices"][0]["message"]["content"]
        assert len(text) == 12 and first["usage"]["completion_tokens"] == 12
        assert again["choices"][0]["message"]["content"] == text  # temperature 0: greedy
        gen = srv.post(
            "/generate", json={"text": "Once", "sampling_params": {"max_new_tokens": 5}}
        ).json()
        assert len(gen["text"]) == 5 and gen["meta_info"]["completion_tokens"] == 5
        bad = srv.post("/v1/chat/completions", json={**body, "max_tokens": 0})
        assert bad.status_code == 400 and "max_tokens" in bad.json()["error"]["message"]


def test_pool_is_the_fraction_of_the_budget_with_the_reserve_outside() -> None:
    with RefServer(
        "--model-path", "ref-llm://tiny", *BUDGET, "--mem-fraction-static", "0.7"
    ) as srv:
        info = srv.wait_ready().get("/get_server_info").json()
    assert info["device_bytes"] == int(0.4 * (1 << 30))
    assert info["pool_bytes"] == int(0.7 * info["device_bytes"])
    assert info["kv_bytes"] == info["pool_bytes"] - info["weight_bytes"] > 0
    assert info["left_bytes"] == info["device_bytes"] - info["pool_bytes"] - info["reserve_bytes"]


def test_weights_checker_round_trip_ooms_at_088_with_torchs_text() -> None:
    with RefServer("--model-path", "ref-llm://tiny", *BUDGET) as srv:
        srv.wait_ready()
        assert srv.post("/weights_checker", json={"action": "snapshot"}).json()["success"]
        r = srv.post("/weights_checker", json={"action": "compare"})
        assert r.status_code == 500
        assert srv.wait_exit() == 1
    line = srv.wait_for_line("torch.OutOfMemoryError")
    assert "CUDA out of memory. Tried to allocate" in line


@pytest.mark.parametrize("fraction", ["0.8", "0.7"])
def test_weights_checker_passes_at_a_lower_fraction(fraction: str) -> None:
    args = ("--model-path", "ref-llm://tiny", *BUDGET, "--mem-fraction-static", fraction)
    with RefServer(*args) as srv:
        srv.wait_ready()

        def post(action: str) -> dict[str, object]:
            return srv.post("/weights_checker", json={"action": action}).json()

        assert post("snapshot")["success"]
        assert post("compare")["success"]
        assert post("reset")["success"]
        after = post("compare")
        assert after["success"] is False and "differ from the snapshot" in str(after["message"])
        assert not srv.exited()


def test_mem_fraction_outside_zero_one_is_refused_by_the_parser() -> None:
    with RefServer("--model-path", "ref-llm://tiny", "--mem-fraction-static", "1.2") as srv:
        assert srv.wait_exit() == 2
    assert "must be between 0 and 1" in srv.log()


def test_reference_llm_case_measures_latency_and_output_tokens_per_second(tmp_path: Path) -> None:
    code, results, _run_dir, err = run_nightly(
        ROOT / "configs" / "reference.json", tmp_path, "local", "--case", "ref_llm_chat_tiny"
    )
    case = results["cases"][0]
    assert (code, case["outcome"]) == (0, "passed"), err
    fr = case["attempts"][0]["frameworks"][0]
    assert fr["framework"] == "reference-llm" and fr["measurement_count"] == 3
    assert fr["server_version"] == f"nightly-lab-refserver {lab.__version__}"
    assert fr["latency_s"] > 0 and fr["output_tokens_per_s"] > 0
    # 16 tokens a request, so the rate is 16 over a measured latency
    assert min(16 / s for s in fr["latency_samples_s"]) <= fr["output_tokens_per_s"]
    assert fr["output_tokens_per_s"] <= max(16 / s for s in fr["latency_samples_s"])
    assert len(Path(fr["artifact"]).read_text()) > 0
