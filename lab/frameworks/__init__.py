"""Server frameworks, one module each, picked by the name used in the config.

Adding a framework is one new module with its Framework subclass and one line in REGISTRY: the
command line, readiness, image, request bodies, VRAM flag and ladder all live on the class."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab.frameworks import names
from lab.frameworks.base import Framework
from lab.frameworks.custom import Custom
from lab.frameworks.lightx2v import LightX2V
from lab.frameworks.llm_base import LlmServer
from lab.frameworks.reference import Reference
from lab.frameworks.reference_llm import ReferenceLlm
from lab.frameworks.sglang import SGLang
from lab.frameworks.sglang_srt import SGLangSrt
from lab.frameworks.transformers_serve import TransformersServe
from lab.frameworks.vllm import Vllm
from lab.frameworks.vllm_omni import VllmOmni

if TYPE_CHECKING:
    from lab.contract import AttemptSpec

REGISTRY: dict[str, type[Framework]] = {
    f.name: f
    for f in (
        SGLang,
        VllmOmni,
        LightX2V,
        Reference,
        Custom,
        SGLangSrt,
        Vllm,
        ReferenceLlm,
        TransformersServe,
    )
}


def framework_names() -> tuple[str, ...]:
    """Every framework the lab can run, in the registry's order."""
    return tuple(REGISTRY)


def chat_framework_names() -> tuple[str, ...]:
    """The LLM servers: chat-completion requests and the memory-fraction ladder."""
    return tuple(n for n, f in REGISTRY.items() if issubclass(f, LlmServer))


names.install(lambda: (framework_names(), chat_framework_names()))


def get_framework(name: str) -> Framework:
    try:
        return REGISTRY[name]()
    except KeyError:
        raise KeyError(
            f"framework {name!r} is not supported; supported: {', '.join(REGISTRY)}"
        ) from None


def server_command(spec: AttemptSpec, framework: str) -> list[str]:
    """The server command line of one framework of an attempt: what `lab case` starts, what
    `--dry-run` prints and what `lab repro --shell` offers as `serve`."""
    return get_framework(framework).command(
        spec.case,
        spec.case.frameworks[framework],
        spec.host,
        spec.port,
        spec.num_gpus,
        spec.extra_args.get(framework, []),
        spec.config_dir,
    )
