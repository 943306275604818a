"""The OOM degrade-and-retry ladder. Only OOM climbs it. A crash, timeout or bad response is
re-run as the identical attempt (`confirm_failures` times, default once) to tell a flake from a
break: a pass then makes the case `flaky`, never green. An infra error (a Docker hiccup) is
retried once, separately, and says so.

Built on tenacity's `for attempt in Retrying(...)` form: each attempt picks its own rung."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from tenacity import RetryCallState, RetryError, Retrying, retry_if_result, stop_after_attempt

from lab.config import Case, LoadedSuite
from lab.contract import AttemptResult, Outcome
from lab.frameworks import get_framework
from lab.frameworks.args import has_flag
from lab.frameworks.rung import Rung
from lab.results.report_common import one_line

log = logging.getLogger("lab.ladder")


@dataclass
class PlannedRung:
    name: str
    extra_args: dict[str, list[str]]  # per framework
    num_gpus: int
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class LadderPlan:
    rungs: list[PlannedRung]
    skipped: list[str] = field(default_factory=list)  # "rung: why it was skipped"


def _configured_rungs(loaded: LoadedSuite, case: Case, fw: str) -> list[Rung]:
    cfg = case.frameworks[fw]
    if case.ladder is not None:
        return case.ladder
    if cfg.ladder is not None:
        return cfg.ladder
    if loaded.suite.ladders and fw in loaded.suite.ladders:
        return loaded.suite.ladders[fw]
    return get_framework(fw).default_ladder(case, cfg)


def plan_ladder(
    loaded: LoadedSuite, case: Case, frameworks: list[str], gpu_count: int
) -> LadderPlan:
    """The rungs this case will try, in order, given the machine's GPU count."""
    if case.kind == "test" or not frameworks:
        rungs = case.ladder or [Rung(name="as-configured")]
        return LadderPlan(
            [PlannedRung(r.name, {}, max(case.num_gpus, r.num_gpus or 0), r.env) for r in rungs]
        )
    per_fw = {fw: {r.name: r for r in _configured_rungs(loaded, case, fw)} for fw in frameworks}
    plan = LadderPlan([])
    for i, rung in enumerate(_configured_rungs(loaded, case, frameworks[0])):
        need = max(case.num_gpus, rung.num_gpus or 0) if case.num_gpus > 0 else 0
        if rung.skip_if_args and any(
            has_flag(case.frameworks[fw].serve_arg_list, f)
            for fw in frameworks
            for f in Rung(name="x", args=rung.skip_if_args).arg_list
            if f.startswith("--")
        ):
            plan.skipped.append(f"{rung.name}: the case already runs {rung.skip_if_args}")
            continue
        if i > 0 and need > gpu_count:
            plan.skipped.append(f"{rung.name}: needs {need} GPUs, this machine has {gpu_count}")
            continue
        extra = {fw: per_fw[fw][rung.name].arg_list for fw in frameworks if rung.name in per_fw[fw]}
        args = {k: v for k, v in extra.items() if v}
        plan.rungs.append(PlannedRung(rung.name, args, need, rung.env))
    return plan


def _needs_next_rung(result: AttemptResult) -> bool:
    return result.outcome is Outcome.oom


CONFIRMED = (Outcome.crashed, Outcome.timeout, Outcome.bad_response)  # re-run to confirm


def climb(
    plan: LadderPlan,
    run_rung: Callable[[PlannedRung, int], AttemptResult],
    on_retry: Callable[[str], None] | None = None,
    confirm: int = 0,
) -> list[AttemptResult]:
    """Run rungs until one does not OOM or the ladder is exhausted; return every attempt.

    An infra_error is retried once on the same rung (it is the machine, not the model); a
    crash, timeout or bad response is re-run on the same rung up to `confirm` times."""
    attempts: list[AttemptResult] = []
    infra_retried = False
    confirms_left = confirm

    def before_sleep(state: RetryCallState) -> None:
        last = attempts[-1]
        nxt = plan.rungs[min(state.attempt_number, len(plan.rungs) - 1)].name
        why = one_line(last.reason, 120)
        msg = f"{last.case_id}: {last.rung} ended oom ({why}); next rung: {nxt}"
        log.info(msg)
        if on_retry:
            on_retry(msg)

    retrying = Retrying(
        stop=stop_after_attempt(max(1, len(plan.rungs))),
        retry=retry_if_result(_needs_next_rung),
        before_sleep=before_sleep,
        reraise=True,
        sleep=lambda _s: None,
    )
    try:
        for attempt in retrying:
            with attempt:
                rung = plan.rungs[attempt.retry_state.attempt_number - 1]
                result = run_rung(rung, len(attempts) + 1)
                if result.outcome is Outcome.infra_error and not infra_retried:
                    infra_retried = True
                    attempts.append(result)
                    if on_retry:
                        on_retry(
                            f"{result.case_id}: infra_error ({one_line(result.reason, 120)}); "
                            "retrying once"
                        )
                    result = run_rung(rung, len(attempts) + 1)
                while result.outcome in CONFIRMED and confirms_left > 0:
                    confirms_left -= 1
                    attempts.append(result)
                    if on_retry:
                        on_retry(
                            f"{result.case_id}: {result.outcome} ({one_line(result.reason, 120)}); "
                            "re-running the identical attempt to confirm"
                        )
                    result = run_rung(rung, len(attempts) + 1)
                attempts.append(result)
            if attempt.retry_state.outcome is not None and not attempt.retry_state.outcome.failed:
                attempt.retry_state.set_result(result)
    except RetryError:
        pass  # the ladder ran out: every attempt, the first failure included, is in `attempts`
    return attempts


def confirmed_pair(attempts: list[AttemptResult]) -> tuple[AttemptResult, AttemptResult] | None:
    """The failure and its identical re-run that ended the case, if a re-run ended it."""
    if len(attempts) < 2:
        return None
    before, final = attempts[-2], attempts[-1]
    if before.outcome in CONFIRMED and before.rung == final.rung:
        return before, final
    return None


def case_outcome(attempts: list[AttemptResult]) -> tuple[Outcome, str | None]:
    """The case's outcome from its attempts: `degraded` when only a later rung passed, `flaky`
    when the identical re-run of a failure passed."""
    final = attempts[-1]
    if final.outcome is Outcome.passed:
        first_rung = attempts[0].rung
        rung = final.rung if final.rung != first_rung else None
        if confirmed_pair(attempts):
            return Outcome.flaky, rung
        if rung is not None:
            return Outcome.degraded, final.rung
        return Outcome.passed, None
    return final.outcome, None
