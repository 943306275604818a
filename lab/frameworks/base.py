"""What every framework adapter knows: its command line, health and readiness, its requests,
and the flags of its degrade ladder."""

from __future__ import annotations

from typing import ClassVar, Literal

from lab.config import Case, FrameworkConfig, Rung
from lab.frameworks.args import has_flag, merge_args

RequestStyle = Literal["openai", "vllm-chat", "lightx2v", "chat", "none"]  # chat: LLM servers

# Default ladder for diffusion servers: as configured → cfg-parallel 2 → low-VRAM → both.
CFG_PARALLEL = "--cfg-parallel-size 2"


class Framework:
    name: ClassVar[str]
    health_path: ClassVar[str] = "/health"
    request_style: ClassVar[RequestStyle] = "openai"
    # Offload flags of the low-VRAM rung; an adapter with none has no low-VRAM rung.
    low_vram_args: ClassVar[str] = ""
    # True when the server lists the model at /v1/models once routes exist.
    lists_models: ClassVar[bool] = True

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

    def health_url_path(self, cfg: FrameworkConfig) -> str:
        return self.health_path

    def ready_path(self, cfg: FrameworkConfig) -> str | None:
        """Checked after health: the model card must list the model (routes exist)."""
        return "/v1/models" if self.lists_models else None

    def style(self, cfg: FrameworkConfig) -> RequestStyle:
        return self.request_style

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
