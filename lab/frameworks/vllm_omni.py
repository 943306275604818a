"""vllm-omni: `vllm serve <model> --omni`, requests through /v1/chat/completions."""

from __future__ import annotations

from lab.config import Case, FrameworkConfig
from lab.frameworks.base import Framework


class VllmOmni(Framework):
    name = "vllm-omni"
    health_path = "/health"
    request_style = "vllm-chat"
    low_vram_args = "--enable-cpu-offload"

    def base_command(
        self, case: Case, cfg: FrameworkConfig, host: str, port: int, num_gpus: int
    ) -> list[str]:
        return ["vllm", "serve", case.model, "--omni", "--port", str(port), "--host", host]
