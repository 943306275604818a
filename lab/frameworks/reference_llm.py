"""The lab's reference LLM server (`python -m lab.refserver --model-path ref-llm://…`): sglang
srt's flags for the pool, its endpoints, its memory behaviour, runnable anywhere."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from lab.frameworks.reference import DEVICE_MEMORY_FLAG
from lab.frameworks.sglang_srt import SGLangSrt

if TYPE_CHECKING:
    from lab.config import Case, FrameworkConfig


class ReferenceLlm(SGLangSrt):
    name = "reference-llm"
    device_memory_flag = DEVICE_MEMORY_FLAG

    def base_command(
        self, case: Case, cfg: FrameworkConfig, host: str, port: int, num_gpus: int
    ) -> list[str]:
        argv = [sys.executable, "-m", "lab.refserver", "--model-path", case.model]
        return [*argv, "--host", host, "--port", str(port)]
