"""Import-only stand-ins, made by this project for the parser environments (docker/parsers):
sglang's argument parsers sit in modules that import triton (a GPU compiler, ~1 GB) and
torchvision (PyPI's wheel links CUDA and fails to load beside CPU torch) at the top, yet no parse
runs either. `install(__name__)` in a stub package's __init__ makes every submodule importable
and every attribute a placeholder that can decorate, be called, subscripted or subclassed."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any


class _PlaceholderType(type):
    """Placeholders are classes, so code that checks isinstance against one (torch does, for
    triton's JITFunction) or subclasses one (sglang does) works; attributes are placeholders,
    and calling one hands a decorated function back (@triton.jit, @triton.autotune(...))."""

    def __repr__(cls) -> str:
        return f"<import stub {cls.__qualname__}>"

    def __getattr__(cls, attr: str) -> type:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return placeholder(f"{cls.__qualname__}.{attr}")

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return placeholder(f"{cls.__qualname__}()")

    def __getitem__(cls, key: Any) -> type:
        return cls


def placeholder(name: str) -> type:
    return _PlaceholderType(name, (), {"__qualname__": name})


class _StubModule(types.ModuleType):
    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return placeholder(f"{self.__name__}.{attr}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, package: str) -> None:
        self._prefix = package + "."

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name.startswith(self._prefix):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def install(package: str) -> None:
    """Make the (already imported) package `package` and all its submodules stubs."""
    sys.modules[package].__class__ = _StubModule
    sys.meta_path.append(_Finder(package))
