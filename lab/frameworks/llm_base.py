"""What the LLM servers share: chat-completion requests, and a degrade ladder that steps the
static memory fraction down (sglang's --mem-fraction-static, vLLM's --gpu-memory-utilization)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from lab.frameworks.args import flag_value
from lab.frameworks.base import Framework, RequestStyle
from lab.frameworks.rung import Rung

if TYPE_CHECKING:
    from lab.config import Case, FrameworkConfig

DEFAULT_MAX_TOKENS = 32  # chat cases without max_tokens


class LlmServer(Framework):
    request_style: ClassVar[RequestStyle] = "chat"
    memory_flag: ClassVar[str]
    # the server's default first: rung 1 runs as configured, the rest step down
    fractions: ClassVar[tuple[float, ...]]

    def request_body(self, case: Case, prompt: str, image_input: bytes | None) -> dict[str, Any]:
        """A greedy chat completion of the prompt."""
        return {
            "model": case.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": case.max_tokens or DEFAULT_MAX_TOKENS,
            "temperature": 0,
        }

    def default_ladder(self, case: Case, cfg: FrameworkConfig) -> list[Rung]:
        steps = list(cfg.mem_fractions or self.fractions)
        configured = flag_value(cfg.serve_arg_list, self.memory_flag)
        start = float(configured) if configured else steps[0]
        rungs = [Rung(name="as-configured")]
        for f in steps:
            if f < start:
                rungs.append(Rung(name=f"mem-fraction-{f:g}", args=f"{self.memory_flag} {f:g}"))
        return rungs
