"""What the LLM servers share: chat-completion requests, and a degrade ladder that steps the
static memory fraction down (sglang's --mem-fraction-static, vLLM's --gpu-memory-utilization)."""

from __future__ import annotations

from typing import ClassVar

from lab.config import Case, FrameworkConfig, Rung
from lab.frameworks.args import flag_value
from lab.frameworks.base import Framework, RequestStyle


class LlmServer(Framework):
    request_style: ClassVar[RequestStyle] = "chat"
    memory_flag: ClassVar[str]
    # the server's default first: rung 1 runs as configured, the rest step down
    fractions: ClassVar[tuple[float, ...]]

    def default_ladder(self, case: Case, cfg: FrameworkConfig) -> list[Rung]:
        steps = list(cfg.mem_fractions or self.fractions)
        configured = flag_value(cfg.serve_arg_list, self.memory_flag)
        start = float(configured) if configured else steps[0]
        rungs = [Rung(name="as-configured")]
        for f in steps:
            if f < start:
                rungs.append(Rung(name=f"mem-fraction-{f:g}", args=f"{self.memory_flag} {f:g}"))
        return rungs
