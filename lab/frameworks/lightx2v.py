"""lightx2v: `python3 -m lightx2v.server` (under torchrun for several GPUs), task API."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from lab.frameworks.base import Framework, drop_nulls
from lab.frameworks.rung import Rung

if TYPE_CHECKING:
    from lab.config import Case, FrameworkConfig

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

    def request_body(self, case: Case, prompt: str, image_input: bytes | None) -> dict[str, Any]:
        """A task of lightx2v's API; the input image travels base64-encoded in `image_path`.
        (The client adds `save_result_path`: the file it reads the result from.)"""
        body = drop_nulls(
            {"prompt": prompt, "seed": case.seed, "negative_prompt": case.negative_prompt}
        )
        if case.needs_image_input and image_input:
            body["image_path"] = base64.b64encode(image_input).decode()
        return body

    def default_ladder(self, case: Case, cfg: FrameworkConfig) -> list[Rung]:
        # lightx2v has no cfg-parallel flag of sglang's shape: only its own offload rung.
        return [r for r in super().default_ladder(case, cfg) if "cfg-parallel" not in r.name]
