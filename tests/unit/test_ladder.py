"""The ladder's decisions: only OOM climbs, a later pass is `degraded`, rungs are planned from
the machine, every attempt is kept. (End-to-end climbs against the reference server live in
tests/integration/test_nightly_ladder.py.)"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lab.config import load_suite
from lab.contract import AttemptResult, Outcome
from lab.host.ladder import LadderPlan, PlannedRung, case_outcome, climb, plan_ladder


def _suite(tmp_path: Path, serve_args: str = "", num_gpus: int = 1):
    p = tmp_path / "s.json"
    p.write_text(
        json.dumps(
            {
                "cases": [
                    {
                        "id": "c",
                        "model": "m",
                        "num_gpus": num_gpus,
                        "frameworks": {"sglang": {"serve_args": serve_args}},
                    }
                ]
            }
        )
    )
    return load_suite(p)


def _result(rung: str, n: int, outcome: Outcome) -> AttemptResult:
    now = time.time()
    return AttemptResult(
        run_id="r",
        case_id="c",
        attempt=n,
        rung=rung,
        outcome=outcome,
        reason=f"{outcome} on {rung}",
        started_at=now,
        finished_at=now,
    )


def test_default_ladder_on_one_gpu_skips_cfg_parallel_with_reason(tmp_path: Path) -> None:
    loaded = _suite(tmp_path)
    plan = plan_ladder(loaded, loaded.case("c"), ["sglang"], gpu_count=1)
    assert [r.name for r in plan.rungs] == ["as-configured", "low-vram"]
    assert any("cfg-parallel-2: needs 2 GPUs" in s for s in plan.skipped)
    assert plan.rungs[1].extra_args["sglang"] == [
        "--dit-cpu-offload",
        "--text-encoder-cpu-offload",
        "--vae-cpu-offload",
    ]


def test_case_already_cfg_parallel_gets_no_cfg_rung(tmp_path: Path) -> None:
    loaded = _suite(tmp_path, serve_args="--cfg-parallel-size 2", num_gpus=2)
    plan = plan_ladder(loaded, loaded.case("c"), ["sglang"], gpu_count=4)
    assert [r.name for r in plan.rungs] == ["as-configured", "low-vram"]


def test_two_gpus_give_cfg_parallel_rung_with_two_gpus(tmp_path: Path) -> None:
    loaded = _suite(tmp_path)
    plan = plan_ladder(loaded, loaded.case("c"), ["sglang"], gpu_count=2)
    names = [r.name for r in plan.rungs]
    assert names == ["as-configured", "cfg-parallel-2", "low-vram", "cfg-parallel-2+low-vram"]
    assert plan.rungs[1].num_gpus == 2 and plan.rungs[0].num_gpus == 1


def _plan(*names: str) -> LadderPlan:
    return LadderPlan([PlannedRung(n, {}, 0) for n in names])


def test_oom_climbs_until_a_rung_passes_and_the_case_is_degraded() -> None:
    seen: list[str] = []

    def run(rung: PlannedRung, n: int) -> AttemptResult:
        seen.append(rung.name)
        return _result(rung.name, n, Outcome.passed if rung.name == "low-vram" else Outcome.oom)

    attempts = climb(_plan("as-configured", "cfg-parallel-2", "low-vram", "both"), run)
    assert seen == ["as-configured", "cfg-parallel-2", "low-vram"]
    assert case_outcome(attempts) == (Outcome.degraded, "low-vram")
    assert attempts[0].reason == "oom on as-configured"  # the original failure is kept


def test_crash_and_timeout_are_never_retried() -> None:
    for bad in (Outcome.crashed, Outcome.timeout, Outcome.bad_response):
        attempts = climb(_plan("a", "b"), lambda r, n, bad=bad: _result(r.name, n, bad))
        assert len(attempts) == 1 and case_outcome(attempts) == (bad, None)


def test_exhausted_ladder_ends_oom_with_every_attempt() -> None:
    attempts = climb(_plan("a", "b", "c"), lambda r, n: _result(r.name, n, Outcome.oom))
    assert [a.rung for a in attempts] == ["a", "b", "c"]
    assert case_outcome(attempts) == (Outcome.oom, None)


def test_infra_error_is_retried_once_on_the_same_rung() -> None:
    outcomes = iter([Outcome.infra_error, Outcome.passed])
    attempts = climb(_plan("a", "b"), lambda r, n: _result(r.name, n, next(outcomes)))
    assert [(a.rung, a.outcome) for a in attempts] == [
        ("a", Outcome.infra_error),
        ("a", Outcome.passed),
    ]
    assert case_outcome(attempts) == (Outcome.passed, None)


def test_the_retry_note_shortens_a_long_oom_line_at_a_word() -> None:
    oom = (
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 323.00 MiB. GPU 0 has a "
        "total capacity of 368.64 MiB of which 12.00 MiB is free. Including non-PyTorch memory"
    )
    notes: list[str] = []

    def run(rung: PlannedRung, n: int) -> AttemptResult:
        r = _result(rung.name, n, Outcome.oom if n == 1 else Outcome.passed)
        return r.model_copy(update={"reason": oom}) if n == 1 else r

    climb(_plan("as-configured", "low-vram"), run, on_retry=notes.append)
    (note,) = notes
    shown = note.split("ended oom (", 1)[1].rsplit("); next rung", 1)[0]
    assert shown.endswith("…") and oom.startswith(shown.removesuffix("…"))
    assert oom[len(shown) - 1] == " "  # cut between words
