"""vLLM's OpenAI server: `vllm serve MODEL`; /health, /v1/models, /v1/chat/completions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab.frameworks.llm_base import LlmServer

if TYPE_CHECKING:
    from lab.config import Case, FrameworkConfig


class Vllm(LlmServer):
    name = "vllm"
    memory_flag = "--gpu-memory-utilization"
    version_path = "/version"  # vLLM's OpenAI server: {"version": ...}
    fractions = (0.9, 0.8, 0.7)  # vLLM's default is 0.9

    def base_command(
        self, case: Case, cfg: FrameworkConfig, host: str, port: int, num_gpus: int
    ) -> list[str]:
        argv = ["vllm", "serve", case.model, "--host", host, "--port", str(port)]
        return argv + (["--tensor-parallel-size", str(num_gpus)] if num_gpus > 1 else [])
