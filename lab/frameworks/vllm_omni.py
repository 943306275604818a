"""vllm-omni: `vllm serve <model> --omni`, requests through /v1/chat/completions."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from lab.frameworks.base import Framework, drop_nulls

if TYPE_CHECKING:
    from lab.config import Case, FrameworkConfig


class VllmOmni(Framework):
    name = "vllm-omni"
    health_path = "/health"
    request_style = "vllm-chat"
    low_vram_args = "--enable-cpu-offload"
    version_path = "/version"  # `vllm serve`'s own endpoint

    def base_command(
        self, case: Case, cfg: FrameworkConfig, host: str, port: int, num_gpus: int
    ) -> list[str]:
        return ["vllm", "serve", case.model, "--omni", "--port", str(port), "--host", host]

    def request_body(self, case: Case, prompt: str, image_input: bytes | None) -> dict[str, Any]:
        """A chat completion whose message carries the input image; the generation settings
        sit beside the messages."""
        content: Any = prompt
        if case.needs_image_input and image_input:
            url = "data:image/png;base64," + base64.b64encode(image_input).decode()
            content = [
                {"type": "text", "text": prompt},
                {"type": "image_url", "image_url": {"url": url}},
            ]
        settings = {
            "height": case.height,
            "width": case.width,
            "num_inference_steps": case.num_inference_steps,
            "guidance_scale": case.guidance_scale,
            "seed": case.seed,
            "num_frames": case.num_frames,
            "fps": case.fps,
            "negative_prompt": case.negative_prompt,
        }
        messages = [{"role": "user", "content": content}]
        return {"model": case.model, "messages": messages, **drop_nulls(settings)}
