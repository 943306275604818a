"""Every OOM text family of the wild is caught; other fatal lines are crashes, not OOMs."""

import pytest

from lab.sandbox.watch import LineClassifier

OOM_LINES = [
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total "
    "capacity of 79.19 GiB of which 3.06 MiB is free.",
    "RuntimeError: CUDA error: out of memory",
    "RuntimeError: CUDA driver error: out of memory",
    "[W CUDACachingAllocator.cpp:1234] Warning: memory allocation failed with OOM on device 0",
    "RuntimeError: [enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
    "memory: you tried to allocate 1073741824 bytes.",
    "torch.OutOfMemoryError: HIP out of memory. Tried to allocate 2.00 GiB",
    "node1:123:456 [0] include/alloc.h:48 NCCL WARN Cuda failure 'out of memory'",
    "Worker failed with error 'CUDA out of memory. Tried to allocate 1 GiB'",
    "Orchestrator initialization failed: CUDA out of memory",
    "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
]


@pytest.mark.parametrize("line", OOM_LINES)
def test_oom_families_are_oom(line: str) -> None:
    c = LineClassifier()
    assert c.classify_line(line).kind == "oom"  # type: ignore[union-attr]
    hit = c.scan_chunk(b"INFO start\n" + line.encode() + b"\nINFO after\n")
    assert hit is not None and hit.kind == "oom" and hit.line == line.strip()


def test_case_patterns_are_crashes_unless_marked_oom() -> None:
    c = LineClassifier(["Segmentation fault", "oom:unhandled cuda error"])
    assert c.scan_chunk(b"a\nSegmentation fault (core dumped)\n").kind == "fatal"  # type: ignore[union-attr]
    assert c.scan_chunk(b"NCCL error: unhandled cuda error\n").kind == "oom"  # type: ignore[union-attr]
    assert c.scan_chunk(b"INFO all good\nloading weights\n") is None
