"""Fatal log lines: the OOM texts seen in the wild, a case's own patterns, and the classifier."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

FatalKind = Literal["oom", "fatal"]

# Every OOM text family of shared/REFERENCE.md; wording after the stem drifts between versions.
OOM_PATTERNS: tuple[str, ...] = (
    r"torch\.OutOfMemoryError",
    r"torch\.cuda\.OutOfMemoryError",
    r"CUDA out of memory",
    r"CUDA error: out of memory",
    r"CUDA driver error: out of memory",
    r"CUDACachingAllocator\.cpp:\d+\].*memory allocation failed with OOM",
    r"DefaultCPUAllocator: can't allocate memory",
    r"HIP out of memory",
    # cuBLAS failing to allocate its workspace: seen on an H200 under a 3 GiB ballast (lab fit)
    r"CUBLAS_STATUS_ALLOC_FAILED",
    r"NCCL WARN Cuda failure 'out of memory'",
    r"Orchestrator initialization failed: CUDA out of memory",
    r"Worker failed with error 'CUDA out of memory",
    # transformers serve on the CPU: the engine's preload under an address-space limit (safetensors
    # or torch asking the kernel for the weights' memory) ...
    r"MemoryError: Cannot allocate memory \(os error 12\)",
    r"RuntimeError: unable to mmap \d+ bytes",
    # ... and its engine SIGKILLed under a cgroup limit (docker mem_limit): the kernel OOM killer
    # is what kills a process inside a memory-limited sandbox; the lab's own stop comes later.
    r"The model's process crashed \(exit code -9\)",
)

OOM_PREFIX = "oom:"  # a case pattern starting with this counts as OOM, not as a crash


@dataclass(frozen=True)
class FatalMatch:
    kind: FatalKind
    line: str


class LineClassifier:
    """Classifies log text. Chunks are searched with one compiled alternation (C speed), so the
    watch keeps up with a flooding server; only a hit is narrowed down to its line."""

    def __init__(self, extra_patterns: list[str] | None = None) -> None:
        oom = list(OOM_PATTERNS)
        fatal: list[str] = []
        for p in extra_patterns or []:
            if p.startswith(OOM_PREFIX):
                oom.append(p[len(OOM_PREFIX) :])
            else:
                fatal.append(p)
        self._oom = re.compile("|".join(f"(?:{p})" for p in oom))
        self._fatal = re.compile("|".join(f"(?:{p})" for p in fatal)) if fatal else None
        both = oom + fatal
        self._any = re.compile("|".join(f"(?:{p})" for p in both).encode())

    def classify_line(self, line: str) -> FatalMatch | None:
        if self._oom.search(line):
            return FatalMatch("oom", line.strip())
        if self._fatal is not None and self._fatal.search(line):
            return FatalMatch("fatal", line.strip())
        return None

    def scan_chunk(self, chunk: bytes) -> FatalMatch | None:
        """The first fatal line in a chunk of whole lines, or None."""
        m = self._any.search(chunk)
        if m is None:
            return None
        start = chunk.rfind(b"\n", 0, m.start()) + 1
        end = chunk.find(b"\n", m.end())
        line = chunk[start : end if end >= 0 else len(chunk)].decode("utf-8", "replace")
        return self.classify_line(line)
