"""sglang's LLM server (srt): `python3 -m sglang.launch_server`, as sglang's own e2e tests
launch it; readiness /health then /v1/models; chat completions (and /generate)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab.frameworks.llm_base import LlmServer
from lab.frameworks.sglang import SERVER_INFO_PATH

if TYPE_CHECKING:
    from lab.config import Case, FrameworkConfig


class SGLangSrt(LlmServer):
    name = "sglang-srt"
    memory_flag = "--mem-fraction-static"
    version_path = SERVER_INFO_PATH
    fractions = (0.88, 0.8, 0.7)

    def base_command(
        self, case: Case, cfg: FrameworkConfig, host: str, port: int, num_gpus: int
    ) -> list[str]:
        argv = ["python3", "-m", "sglang.launch_server", "--model-path", case.model]
        argv += ["--host", host, "--port", str(port)]
        return argv + (["--tp-size", str(num_gpus)] if num_gpus > 1 else [])
