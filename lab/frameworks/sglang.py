"""sglang's diffusion server, launched exactly as sglang's nightly comparison launches it
(scripts/ci/utils/diffusion/run_comparison.py of sgl-project/sglang, read at commit
03635624690c11ff6ea89d288ca1854b521d9b1c)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab import __version__
from lab.frameworks.args import has_flag
from lab.frameworks.base import Framework

if TYPE_CHECKING:
    from lab.config import Case, FrameworkConfig

# The one setting for sglang's version: the PyPI release whose wheel the tests read the `serve`
# options from, and (as v<version>) the lmsysorg/sglang image docker/build-images.sh builds on.
SGLANG_VERSION = "0.5.23"
SGLANG_TAG = f"v{SGLANG_VERSION}"
# sglang's servers (diffusion and srt) answer their version here, as {"version": ...}.
SERVER_INFO_PATH = "/server_info"
MASTER_PORT_OFFSET = 5
SCHEDULER_PORT_OFFSET = 55


def sglang_style_ports(host: str, port: int, num_gpus: int) -> list[str]:
    args = ["--port", str(port), "--host", host, "--strict-ports"]
    args += ["--master-port", str(port + MASTER_PORT_OFFSET)]
    args += ["--scheduler-port", str(port + SCHEDULER_PORT_OFFSET)]
    if num_gpus > 1:
        args += ["--num-gpus", str(num_gpus)]
    return args


def with_server_warmup_shape(case: Case, serve_args: list[str]) -> list[str]:
    """sglang's nightly warms the measured shape up on the server: when serve_args ask for
    `--warmup-mode server`, it appends `--warmup-resolutions WxH` and, for a case with frames,
    `--warmup-num-frames N`, each unless serve_args already set it."""
    if not has_flag(serve_args, "--warmup-mode", "server"):
        return serve_args
    extra: list[str] = []
    if not has_flag(serve_args, "--warmup-resolutions"):
        extra += ["--warmup-resolutions", f"{case.width}x{case.height}"]
    if case.num_frames is not None and not has_flag(serve_args, "--warmup-num-frames"):
        extra += ["--warmup-num-frames", str(case.num_frames)]
    return serve_args + extra


class SGLang(Framework):
    name = "sglang"
    health_path = "/health"
    low_vram_args = "--dit-cpu-offload --text-encoder-cpu-offload --vae-cpu-offload"
    image = f"nightly-lab/sglang:{SGLANG_TAG}-lab{__version__}"
    version_path = SERVER_INFO_PATH
    writes_perf_dumps = True

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

    def serve_args(self, case: Case, cfg: FrameworkConfig) -> list[str]:
        return with_server_warmup_shape(case, cfg.serve_arg_list)
