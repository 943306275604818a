"""Any other server: a command template and its endpoints, all from the config."""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING

from lab.frameworks.args import fill_placeholders, merge_args, split_args
from lab.frameworks.base import Framework, RequestStyle
from lab.frameworks.rung import Rung

if TYPE_CHECKING:
    from lab.config import Case, FrameworkConfig


class Custom(Framework):
    name = "custom"

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
        assert cfg.command  # config validation guarantees it
        # Words are quoted so that a model id or folder with spaces or quotes stays one word.
        filled = fill_placeholders(
            cfg.command,
            {
                "port": port,
                "host": shlex.quote(host),
                "model": shlex.quote(case.model),
                "num_gpus": num_gpus,
                "config_dir": shlex.quote(config_dir),
                "python": shlex.quote(sys.executable),  # the sandbox's own interpreter
            },
        )
        return merge_args(split_args(filled) + cfg.serve_arg_list, extra_args)

    def health_url_path(self, cfg: FrameworkConfig) -> str:
        return cfg.health_path

    def ready_path(self, cfg: FrameworkConfig) -> str | None:
        return cfg.ready_path

    def style(self, cfg: FrameworkConfig) -> RequestStyle:
        return "none" if cfg.request in (None, "none") else "openai"

    def perf_dumps(self, cfg: FrameworkConfig) -> bool:
        return bool(cfg.perf_dumps) and self.style(cfg) == "openai"

    def default_ladder(self, case: Case, cfg: FrameworkConfig) -> list[Rung]:
        return [Rung(name="as-configured")]  # a custom server declares its own rungs
