"""sglang's diffusion server, launched exactly as sglang's nightly comparison launches it."""

from __future__ import annotations

from lab.config import Case, FrameworkConfig
from lab.frameworks.base import Framework

MASTER_PORT_OFFSET = 5
SCHEDULER_PORT_OFFSET = 55


def sglang_style_ports(host: str, port: int, num_gpus: int) -> list[str]:
    args = ["--port", str(port), "--host", host, "--strict-ports"]
    args += ["--master-port", str(port + MASTER_PORT_OFFSET)]
    args += ["--scheduler-port", str(port + SCHEDULER_PORT_OFFSET)]
    if num_gpus > 1:
        args += ["--num-gpus", str(num_gpus)]
    return args


class SGLang(Framework):
    name = "sglang"
    health_path = "/health"
    low_vram_args = "--dit-cpu-offload --text-encoder-cpu-offload --vae-cpu-offload"

    def base_command(
        self, case: Case, cfg: FrameworkConfig, host: str, port: int, num_gpus: int
    ) -> list[str]:
        return [
            "sglang",
            "serve",
            "--model-path",
            case.model,
            *sglang_style_ports(host, port, num_gpus),
        ]
