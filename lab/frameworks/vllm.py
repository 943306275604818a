"""vLLM's OpenAI server: `vllm serve MODEL`; /health, /v1/models, /v1/chat/completions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab.frameworks.llm_base import LlmServer

if TYPE_CHECKING:
    from lab.config import Case, FrameworkConfig

# The release whose parser checks the lab's lines (docker/parsers/vllm-requirements.txt pins it)
# and whose options config validation knows (llm_flag_lists.py).
VLLM_VERSION = "0.34.0"


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
