"""A crashed server's reason is the line that says why, not its last line (the tail is kept)."""

from __future__ import annotations

from lab.sandbox.result import telling_line

SGLANG_TAIL = [
    "[2026-12-02 10:00:01] INFO Loading pipeline LTX2TwoStagePipeline",
    "Traceback (most recent call last):",
    '  File "/sgl-workspace/sglang/python/sglang/multimodal_gen/runtime/launch_server.py", line 88',
    "    raise ValueError(msg)",
    "ValueError: --cfg-parallel-size 2 needs num_gpus >= 2, got 1",
    "[2026-12-02 10:00:02] INFO Shutting down scheduler",
    "exit code 1",
]


def test_the_exception_line_of_the_last_traceback_wins_over_the_last_line() -> None:
    assert telling_line(SGLANG_TAIL) == (
        "ValueError: --cfg-parallel-size 2 needs num_gpus >= 2, got 1"
    )


def test_chained_tracebacks_give_the_last_exception() -> None:
    tail = [*SGLANG_TAIL[1:5], "", "During handling of the above exception, another exception",
            "Traceback (most recent call last):", '  File "x.py", line 1',
            "RuntimeError: scheduler died", "bye"]  # fmt: skip
    assert telling_line(tail) == "RuntimeError: scheduler died"


def test_without_a_traceback_the_last_error_line_then_the_last_line() -> None:
    tail = ["loading", "FATAL: NCCL error in: init.cc:123, unhandled system error", "cleanup", ""]
    assert telling_line(tail) == "FATAL: NCCL error in: init.cc:123, unhandled system error"
    assert telling_line(["starting", "ready?", "  "]) == "ready?"
    assert telling_line([]) == ""
