"""Hugging Face's `transformers serve` (transformers >= 5, extra `serving`): an OpenAI-style
server nobody here wrote. `transformers serve MODEL` pins the server to MODEL and preloads it:
/health answers only once the model loaded, /v1/models lists it by its path, and a request must
name that exact path. (Without MODEL it loads on demand: /health is 200 with nothing loaded, a
readiness trap, so the command line always names the model.)

The model runs in a spawned "engine" process; `python -m transformers.cli.transformers` has the
`__main__` guard spawn needs. Offline: the hub stays shut and the hub kernels (the `kernels`
package fetching e.g. kernels-community/rotary at load) are switched off by transformers' own
USE_HUB_KERNELS=NO (transformers/integrations/hub_kernels.py)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, ClassVar

from lab.frameworks.args import flag_value, has_flag
from lab.frameworks.base import REFERENCE_IMAGE
from lab.frameworks.llm_base import LlmServer
from lab.frameworks.rung import Rung

if TYPE_CHECKING:
    from lab.config import Case, FrameworkConfig

# The version the lab is tested with (pyproject, the reference image's wheelhouse).
TRANSFORMERS_VERSION = "5.25.0"
SERVE = [sys.executable, "-m", "transformers.cli.transformers", "serve"]
HALF = "bfloat16"


class TransformersServe(LlmServer):
    name = "transformers"
    # --cb-max-memory-percent: the fraction of free device memory (after the weights) that the
    # paged KV cache of continuous batching takes; transformers' default is 0.9 (0.8 with
    # logit processors).
    memory_flag = "--cb-max-memory-percent"
    fractions = (0.9, 0.7, 0.5)
    # transformers serve has no version endpoint: the package installed in the sandbox says it.
    package = "transformers"
    image = REFERENCE_IMAGE  # the reference image carries transformers[serving] (README)
    server_env: ClassVar[dict[str, str]] = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "USE_HUB_KERNELS": "NO",
    }

    def base_command(
        self, case: Case, cfg: FrameworkConfig, host: str, port: int, num_gpus: int
    ) -> list[str]:
        device = "cuda" if num_gpus > 0 else "cpu"
        return [*SERVE, case.model, "--host", host, "--port", str(port), "--device", device]

    def default_ladder(self, case: Case, cfg: FrameworkConfig) -> list[Rung]:
        """As configured → bfloat16 weights → (with continuous batching) a smaller KV cache.

        bfloat16 keeps 2 bytes a weight (and activation) where float32 keeps 4, so the weights
        take half; a smaller --cb-max-memory-percent leaves more of the device to weights and
        activations instead of the preallocated paged cache."""
        args = cfg.serve_arg_list
        rungs = [Rung(name="as-configured")]
        dtype = flag_value(args, "--dtype")
        half = dtype in ("bfloat16", "float16")
        if not half:
            rungs.append(Rung(name=f"dtype-{HALF}", args=f"--dtype {HALF}"))
        if has_flag(args, "--continuous-batching"):
            keep = "" if half else f"--dtype {HALF} "
            configured = flag_value(args, self.memory_flag)
            start = float(configured) if configured else self.fractions[0]
            for f in cfg.mem_fractions or self.fractions:
                if f < start:
                    name = f"{HALF}+cb-mem-{f:g}" if keep else f"cb-mem-{f:g}"
                    rungs.append(Rung(name=name, args=f"{keep}{self.memory_flag} {f:g}"))
        return rungs
