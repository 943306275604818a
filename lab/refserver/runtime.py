"""Process-wide settings of a rank: CPU threads, and which errors are a fatal out-of-memory."""

from __future__ import annotations

import ctypes
import os
from typing import Any

from lab.refserver.args import ServerConfig


def thread_count(config: ServerConfig, ranks: int) -> int:
    """OMP_NUM_THREADS if set; 1 for ref://tiny (two servers side by side on 2 cores);
    otherwise the cores this process may use, shared between the ranks, at most 8."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if config.preset.name == "tiny":
        return 1
    return max(1, min(8, len(os.sched_getaffinity(0)) // ranks))


def set_threads(config: ServerConfig, ranks: int) -> int:
    import torch

    threads = thread_count(config, ranks)
    torch.set_num_threads(threads)
    return threads


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OOM (CUDA or --device-memory-gib), the CPU allocator failing, or Python's own."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc)
    return "DefaultCPUAllocator: can't allocate memory" in text or "out of memory" in text.lower()


_libc: Any = None


def release_cpu_memory() -> None:
    """Give freed heap memory back to the OS between stages (glibc malloc_trim), so a rank's RSS
    follows the stage that is running rather than the largest stage so far."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")
        except OSError:
            _libc = False
    if _libc:
        _libc.malloc_trim(0)
