"""lightx2v: `python3 -m lightx2v.server` (under torchrun for several GPUs), task API."""

from __future__ import annotations

from lab.config import Case, FrameworkConfig
from lab.frameworks.base import Framework

_TASKS = {
    "text-to-image": "t2i",
    "image-edit": "i2i",
    "text-to-video": "t2v",
    "image-to-video": "i2v",
    "text-image-to-video": "ti2v",
}


class LightX2V(Framework):
    name = "lightx2v"
    health_path = "/v1/service/status"
    request_style = "lightx2v"
    lists_models = False
    low_vram_args = "--cpu_offload"

    def base_command(
        self, case: Case, cfg: FrameworkConfig, host: str, port: int, num_gpus: int
    ) -> list[str]:
        launcher = ["python3"] if num_gpus <= 1 else ["torchrun", f"--nproc_per_node={num_gpus}"]
        args = [*launcher, "-m", "lightx2v.server", "--model_path", cfg.model_path or case.model]
        if cfg.model_cls:
            args += ["--model_cls", cfg.model_cls]
        args += ["--task", cfg.lightx2v_task or _TASKS[case.task]]
        if cfg.config_json:
            args += ["--config_json", cfg.config_json]
        return [*args, "--host", host, "--port", str(port)]

    def default_ladder(self, case: Case, cfg: FrameworkConfig) -> list:
        # lightx2v has no cfg-parallel flag of sglang's shape: only its own offload rung.
        return [r for r in super().default_ladder(case, cfg) if "cfg-parallel" not in r.name]
