"""What every framework adapter knows: its command line, health and readiness, its image, its
request bodies, how it emulates a smaller card, and the flags of its degrade ladder."""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from lab import __version__
from lab.frameworks.args import has_flag, merge_args
from lab.frameworks.rung import Rung

if TYPE_CHECKING:
    from lab.config import Case, FrameworkConfig

RequestStyle = Literal["openai", "vllm-chat", "lightx2v", "chat", "none"]  # chat: LLM servers

# Default ladder for diffusion servers: as configured → cfg-parallel 2 → low-VRAM → both.
CFG_PARALLEL = "--cfg-parallel-size 2"
# The image `make images` builds with the lab and the reference servers; tags carry the version.
REFERENCE_IMAGE = f"nightly-lab/reference:{__version__}"


def drop_nulls(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


class Framework:
    name: ClassVar[str]
    health_path: ClassVar[str] = "/health"
    request_style: ClassVar[RequestStyle] = "openai"
    # Offload flags of the low-VRAM rung; an adapter with none has no low-VRAM rung.
    low_vram_args: ClassVar[str] = ""
    # True when the server lists the model at /v1/models once routes exist.
    lists_models: ClassVar[bool] = True
    # GET path whose JSON `version` names the running server's version; None: it has none.
    version_path: ClassVar[str | None] = None
    # A server with no version endpoint: the Python package (in the sandbox) that is the server.
    package: ClassVar[str | None] = None
    # Environment the server always gets (below the case's extra_env, which may override it).
    server_env: ClassVar[dict[str, str]] = {}
    # The image the nightly runs the server in when the suite names none.
    image: ClassVar[str] = REFERENCE_IMAGE
    # A server that accounts device memory itself takes the emulated card's size by this flag
    # (on a machine without GPUs); None: only the GPU ballast can emulate a card for it.
    device_memory_flag: ClassVar[str | None] = None
    # True when the server writes sglang's perf dump to a request's `perf_dump_path`: the lab
    # then asks for one per measured request and waits (briefly) for it.
    writes_perf_dumps: ClassVar[bool] = False

    def base_command(
        self, case: Case, cfg: FrameworkConfig, host: str, port: int, num_gpus: int
    ) -> list[str]:
        raise NotImplementedError

    def command(
        self,
        case: Case,
        cfg: FrameworkConfig,
        host: str,
        port: int,
        num_gpus: int,
        extra_args: list[str],
        config_dir: str,
    ) -> list[str]:
        """The server command line: the nightly's own, then serve_args, then the ladder's flags
        (which replace a value serve_args already set)."""
        base = self.base_command(case, cfg, host, port, num_gpus)
        return merge_args(base + self.serve_args(case, cfg), extra_args)

    def serve_args(self, case: Case, cfg: FrameworkConfig) -> list[str]:
        """The case's serve_args as they reach the command line."""
        return cfg.serve_arg_list

    def installed_version(self) -> str | None:
        """The version of `package` installed where this runs (the sandbox), or None."""
        if self.package is None:
            return None
        try:
            return metadata.version(self.package)
        except metadata.PackageNotFoundError:
            return None

    def health_url_path(self, cfg: FrameworkConfig) -> str:
        return self.health_path

    def ready_path(self, cfg: FrameworkConfig) -> str | None:
        """Checked after health: the model card must list the model (routes exist)."""
        return "/v1/models" if self.lists_models else None

    def style(self, cfg: FrameworkConfig) -> RequestStyle:
        return self.request_style

    def perf_dumps(self, cfg: FrameworkConfig) -> bool:
        """Whether this server, so configured, writes a perf dump per request."""
        return self.writes_perf_dumps

    def request_body(self, case: Case, prompt: str, image_input: bytes | None) -> dict[str, Any]:
        """The JSON (or form) fields of one request to sglang's OpenAI-style endpoints, as
        sglang's nightly sends them (run_comparison.py's _build_sglang_payload): images and
        videos alike carry `response_format` b64_json; the case's `sglang_request_extra` is
        merged in, a null deleting the key. (The client adds `perf_dump_path`: its own file.)"""
        body: dict[str, Any] = {
            "model": case.model,
            "prompt": prompt,
            "size": f"{case.width}x{case.height}",
            "n": 1,
            "response_format": "b64_json",
            "seed": case.seed,
            "num_inference_steps": case.num_inference_steps,
            "guidance_scale": case.guidance_scale,
            "negative_prompt": case.negative_prompt,
        }
        if case.is_video:
            body.update(num_frames=case.num_frames, fps=case.fps)
        body = drop_nulls(body)
        for k, v in (case.sglang_request_extra or {}).items():
            if v is None:
                body.pop(k, None)
            else:
                body[k] = v
        return body

    def default_ladder(self, case: Case, cfg: FrameworkConfig) -> list[Rung]:
        rungs = [Rung(name="as-configured")]
        cfg_parallel_done = has_flag(cfg.serve_arg_list, "--cfg-parallel-size", "2") or has_flag(
            cfg.serve_arg_list, "--enable-cfg-parallel"
        )
        if not cfg_parallel_done:
            rungs.append(
                Rung(name="cfg-parallel-2", args=CFG_PARALLEL, num_gpus=max(2, case.num_gpus))
            )
        if self.low_vram_args:
            rungs.append(Rung(name="low-vram", args=self.low_vram_args))
            if not cfg_parallel_done:
                rungs.append(
                    Rung(
                        name="cfg-parallel-2+low-vram",
                        args=f"{CFG_PARALLEL} {self.low_vram_args}",
                        num_gpus=max(2, case.num_gpus),
                    )
                )
        return rungs
