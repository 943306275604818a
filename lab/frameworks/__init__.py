"""Server frameworks, one module each, picked by the name used in the config."""

from __future__ import annotations

from lab.frameworks.base import Framework
from lab.frameworks.custom import Custom
from lab.frameworks.lightx2v import LightX2V
from lab.frameworks.reference import Reference
from lab.frameworks.sglang import SGLang
from lab.frameworks.vllm_omni import VllmOmni

_ALL: dict[str, type[Framework]] = {
    f.name: f for f in (SGLang, VllmOmni, LightX2V, Reference, Custom)
}


def get_framework(name: str) -> Framework:
    try:
        return _ALL[name]()
    except KeyError:
        raise KeyError(
            f"framework {name!r} is not supported; supported: {', '.join(_ALL)}"
        ) from None
