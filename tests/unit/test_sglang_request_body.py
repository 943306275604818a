"""The request body the lab sends sglang's diffusion server is the one sglang's nightly sends
(scripts/ci/utils/diffusion/run_comparison.py, _build_sglang_payload): `response_format`
b64_json on image and video requests alike."""

from __future__ import annotations

from typing import Any

from lab.config import Case
from lab.frameworks import get_framework


def _case(**over: Any) -> Case:
    raw = {
        "id": "c",
        "model": "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        "task": "text-to-video",
        "prompt": "p",
        "width": 1280,
        "height": 704,
        "num_frames": 121,
        "fps": 24,
        "seed": 42,
        "num_gpus": 1,
        "frameworks": {"sglang": {}},
        **over,
    }
    return Case.model_validate(raw)


def test_a_video_request_asks_for_b64_json_as_upstream_does() -> None:
    body = get_framework("sglang").request_body(_case(), "a cat walks", None)
    assert body == {
        "model": "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        "prompt": "a cat walks",
        "size": "1280x704",
        "n": 1,
        "response_format": "b64_json",
        "seed": 42,
        "num_frames": 121,
        "fps": 24,
    }


def test_an_image_request_asks_for_b64_json_too() -> None:
    case = _case(task="text-to-image", num_frames=None, fps=None, width=1024, height=1024)
    body = get_framework("sglang").request_body(case, "a lighthouse", None)
    assert body["response_format"] == "b64_json" and "num_frames" not in body


def test_sglang_request_extra_can_drop_response_format() -> None:
    case = _case(sglang_request_extra={"response_format": None, "target": "720p"})
    body = get_framework("sglang").request_body(case, "p", None)
    assert "response_format" not in body and body["target"] == "720p"
