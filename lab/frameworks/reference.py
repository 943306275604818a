"""The lab's own reference diffusion server (lab.refserver): sglang's flags and HTTP API."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from lab.frameworks.base import Framework
from lab.frameworks.sglang import SERVER_INFO_PATH, sglang_style_ports, with_server_warmup_shape

if TYPE_CHECKING:
    from lab.config import Case, FrameworkConfig

# The reference servers account device memory themselves: on the CPU this flag is the card.
DEVICE_MEMORY_FLAG = "--device-memory-gib"


class Reference(Framework):
    name = "reference"
    health_path = "/health"
    # Layer by layer: a DiT bigger than the emulated card still runs (sglang's layerwise offload).
    low_vram_args = "--dit-layerwise-offload --text-encoder-cpu-offload --vae-cpu-offload"
    device_memory_flag = DEVICE_MEMORY_FLAG
    version_path = SERVER_INFO_PATH
    writes_perf_dumps = True

    def base_command(
        self, case: Case, cfg: FrameworkConfig, host: str, port: int, num_gpus: int
    ) -> list[str]:
        return [
            sys.executable,
            "-m",
            "lab.refserver",
            "--model-path",
            case.model,
            *sglang_style_ports(host, port, num_gpus),
            "--task-type",
            case.task,
        ]

    def serve_args(self, case: Case, cfg: FrameworkConfig) -> list[str]:
        return with_server_warmup_shape(case, cfg.serve_arg_list)
