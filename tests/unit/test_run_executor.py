"""The executor's reading of an attempt: the host's verdict never erases the sandbox's own."""

from __future__ import annotations

import json
import time
from pathlib import Path

from lab.config import load_suite
from lab.contract import AttemptResult, Outcome, Phase
from lab.files import write_json_atomic
from lab.host.plan import attempt_request, plan_cases
from lab.host.progress import Progress
from lab.host.run import AttemptState, RunExecutor, RunOptions
from lab.host.runtimes.base import SandboxExit
from lab.host.runtimes.registry import get_runtime
from lab.results.store import RunDir

ROOT = Path(__file__).resolve().parents[2]


def _executor_and_attempt(tmp_path: Path) -> tuple[RunExecutor, AttemptState]:
    loaded = load_suite(ROOT / "configs" / "reference.json")
    case = next(c for c in loaded.suite.cases if c.num_gpus == 0)
    plan = plan_cases(loaded, [case], [], None)[0]
    rd = RunDir.create(tmp_path, "run-1")
    executor = RunExecutor(
        loaded,
        [plan],
        get_runtime("local"),
        [],
        rd.path,
        rd.run_id,
        RunOptions(out_root=tmp_path),
        Progress(live=False),
    )
    rung = plan.ladder.rungs[0]
    spec, _ = attempt_request(executor.ctx, plan, rung, 1, [])
    return executor, AttemptState(plan, rung, 1, time.time(), [], spec)


def test_a_kernel_oom_kill_keeps_the_sandboxs_own_outcome_and_reason(tmp_path: Path) -> None:
    executor, st = _executor_and_attempt(tmp_path)
    assert st.spec is not None
    Path(st.spec.out_dir).mkdir(parents=True)
    sandbox_said = AttemptResult(
        run_id=st.spec.run_id,
        case_id=st.plan.case.id,
        attempt=1,
        rung=st.rung.name,
        outcome=Outcome.crashed,
        phase=Phase.measure,
        reason="server exited with code -9 during measure",
        started_at=st.started,
        finished_at=time.time(),
    )
    write_json_atomic(st.spec.result_path, sandbox_said.model_dump(mode="json"))

    result = executor._read_result(st, SandboxExit(exit_code=137, oom_killed=True))

    assert result.outcome is Outcome.oom
    assert "OOM killer" in result.reason
    assert result.sandbox_outcome is Outcome.crashed
    assert result.sandbox_reason == "server exited with code -9 during measure"
    # and both verdicts reach results.json
    executor.case_results[st.plan.case.id] = executor._case_result(st.plan, [result])
    executor._flush()
    data = json.loads(RunDir(executor.run_dir).results.read_text())
    (attempt,) = data["cases"][0]["attempts"]
    assert (attempt["outcome"], attempt["sandbox_outcome"]) == ("oom", "crashed")


def test_the_runtimes_verdict_keeps_the_sandboxs_own_too(tmp_path: Path) -> None:
    executor, st = _executor_and_attempt(tmp_path)
    assert st.spec is not None
    Path(st.spec.out_dir).mkdir(parents=True)
    passed = AttemptResult(
        run_id=st.spec.run_id,
        case_id=st.plan.case.id,
        attempt=1,
        rung=st.rung.name,
        outcome=Outcome.passed,
        started_at=st.started,
        finished_at=time.time(),
    )
    write_json_atomic(st.spec.result_path, passed.model_dump(mode="json"))
    slurm = SandboxExit(exit_code=None, outcome=Outcome.timeout, reason="Slurm: TIMEOUT")

    result = executor._read_result(st, slurm)

    assert (result.outcome, result.reason) == (Outcome.timeout, "Slurm: TIMEOUT")
    assert (result.sandbox_outcome, result.sandbox_reason) == (Outcome.passed, "")


def test_a_result_the_host_does_not_override_has_no_second_verdict(tmp_path: Path) -> None:
    executor, st = _executor_and_attempt(tmp_path)
    assert st.spec is not None
    result = executor._read_result(st, SandboxExit(exit_code=1))  # no result file at all
    assert result.outcome is Outcome.infra_error
    assert result.sandbox_outcome is None and result.sandbox_reason is None
