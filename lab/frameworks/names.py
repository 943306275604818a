"""The framework names a suite may use, as the registry of lab/frameworks keeps them.

lab.config validates a suite's framework names against these at call time. This module imports
nothing of the lab, so config depends on it without importing the frameworks' classes (which
type their arguments with config's models): config stays a leaf below the frameworks. Importing
it runs lab/frameworks/__init__.py first, which installs the registry's answer here."""

from __future__ import annotations

from collections.abc import Callable

# what lab/frameworks/__init__.py installs: (runnable names, chat-server names), registry order
_registry: Callable[[], tuple[tuple[str, ...], tuple[str, ...]]] | None = None
# named in sglang's comparison config, loaded and reported, never run (lab/frameworks/comfyui.py)
NOT_RUN = ("comfyui",)


def install(registry: Callable[[], tuple[tuple[str, ...], tuple[str, ...]]]) -> None:
    global _registry
    _registry = registry


def _asked() -> tuple[tuple[str, ...], tuple[str, ...]]:
    if _registry is None:  # only if lab/frameworks/__init__.py failed half-way
        raise RuntimeError("the framework registry is not installed")
    return _registry()


def runnable() -> tuple[str, ...]:
    """The frameworks the lab runs, in the registry's order."""
    return _asked()[0]


def chat() -> tuple[str, ...]:
    """The LLM servers: chat completions, the memory-fraction ladder, their flags checked."""
    return _asked()[1]


def known() -> tuple[str, ...]:
    """What a suite may name: the runnable ones and those it loads and reports (comfyui)."""
    return (*runnable(), *NOT_RUN)
