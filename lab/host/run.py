"""A nightly run: plan the suite, pack attempts onto GPUs, run each case's ladder in its own
sandbox, and keep results readable at every moment (results.json rewritten after each case)."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lab import __version__
from lab.config import LoadedSuite
from lab.contract import (
    EXIT_BAD_SPEC,
    AttemptResult,
    AttemptSpec,
    FrameworkResult,
    Outcome,
    Phase,
    load_result,
)
from lab.errors import LabError
from lab.files import write_json_atomic
from lab.host.gpus import GpuInfo, visible_devices  # noqa: F401 - re-export, see below
from lab.host.ladder import PlannedRung, case_outcome, climb
from lab.host.neighbours import Neighbours
from lab.host.plan import (  # noqa: F401 - re-exports, see below
    SGLANG_TAG,
    UNBOUNDED,
    CasePlan,
    RunContext,
    attempt_bound_s,
    attempt_request,
    default_image,
    plan_cases,
    sandbox_env,
)
from lab.host.progress import Progress
from lab.host.runtimes.base import Runtime, SandboxExit, places_work
from lab.host.scheduler import Cancelled, ResourcePool
from lab.results.model import CaseResult, RunResults
from lab.results.store import run_commit_and_source

# SGLANG_TAG, UNBOUNDED, default_image, plan_cases, sandbox_env and visible_devices moved to
# lab/host/plan.py and lab/host/gpus.py (#14); re-exported above for one session, so branches
# landing alongside keep importing them from here. Import them from their new home.

STOP_GRACE_S = 10.0


@dataclass
class RunOptions:
    out_root: Path
    vram_gib: float | None = None  # overrides every case's vram_gib (repro)
    fail_on_degraded: bool = False
    verbose: bool = False
    commit: str | None = None  # --commit: the commit of the code under test


M_ARENA_MAX = -8  # glibc's mallopt parameter


def cap_malloc_arenas(n: int = 2) -> None:
    """Each case runs in a new thread, and glibc gives new threads malloc arenas it keeps: over a
    long suite the host's RSS would creep up (0.2 MiB a case, benchmarks/load_30.py) although
    its Python heap stays flat. Capping the arenas keeps it flat. No-op off glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, n)


class Nightly:
    def __init__(
        self,
        loaded: LoadedSuite,
        plans: list[CasePlan],
        runtime: Runtime,
        gpus: list[GpuInfo],
        run_dir: Path,
        run_id: str,
        opts: RunOptions,
        progress: Progress,
    ) -> None:
        self.loaded, self.plans, self.runtime, self.gpus = loaded, plans, runtime, gpus
        self.run_dir, self.run_id, self.opts, self.progress = run_dir, run_id, opts, progress
        self.ctx = RunContext(loaded, gpus, run_dir, run_id, places_work(runtime))
        cap_malloc_arenas()
        # `local` has no network isolation: servers share the host's ports, so one at a time.
        self._exclusive = runtime.name == "local"
        # Slurm places attempts itself: no local GPU pool, only a bound on jobs in flight.
        self._lab_places = self.ctx.lab_places
        if self._lab_places:
            self.pool = ResourcePool(
                [g.index for g in gpus], 1 if self._exclusive else loaded.suite.cpu_concurrency
            )
        else:
            self.pool = ResourcePool([], loaded.suite.slurm.max_jobs)
        self._local_lock = threading.Lock()
        self.stopping = threading.Event()
        self._running: dict[str, object] = {}  # key -> Sandbox
        self._lock = threading.Lock()
        self.case_results: dict[str, CaseResult] = {}
        commit_sha, commit_source = run_commit_and_source(opts.commit)
        self.results = RunResults(
            run_id=run_id,
            timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
            commit_sha=commit_sha,
            commit_source=commit_source,
            lab_version=__version__,
            config_path=str(loaded.path),
            config_sha256=loaded.sha256,
            measurement_repeats=loaded.suite.measurement_repeats,
            warmup_requests=loaded.suite.warmup_requests,
            gpu_model=gpus[0].name if gpus else None,
            runtime=runtime.name,
            status="running",
        )
        self._image_ids: dict[str, str | None] = {}
        self.write_error: OSError | None = None

    # --- the whole run ---------------------------------------------------------------------------
    def run(self) -> RunResults:
        neighbours = Neighbours.register(self.run_id)  # other lab runs sharing this machine
        for p in self.plans:
            self.case_results[p.case.id] = self._pending_result(p)
        self._flush()
        threads = []
        for p in sorted(self.plans, key=lambda p: -p.case.est_time_s):
            if p.skip_reason:
                self._finish(p, self._skipped_result(p))
                continue
            t = threading.Thread(target=self._run_case, args=(p,), name=p.case.id, daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            while t.is_alive():
                t.join(0.2)
        self.results.status = "interrupted" if self.stopping.is_set() else "finished"
        neighbours.finish(self.results)
        self._flush()
        if self.write_error is not None:
            raise self.write_error
        return self.results

    def interrupt(self) -> None:
        """Stop every running attempt (TERM → KILL) and let nothing new start."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.pool.cancel()
        with self._lock:
            running = list(self._running.values())
        stoppers = [threading.Thread(target=s.stop, args=(STOP_GRACE_S,)) for s in running]  # type: ignore[attr-defined]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(STOP_GRACE_S + 15)

    # --- one case ---------------------------------------------------------------------------------
    def _run_case(self, plan: CasePlan) -> None:
        try:
            attempts = climb(
                plan.ladder,
                lambda rung, n: self._run_attempt(plan, rung, n),
                on_retry=lambda msg: self.progress.note(plan.case.id, msg),
                confirm=self.loaded.suite.confirm_failures,
            )
            result = self._case_result(plan, attempts)
        except Exception as e:  # a bug of ours must not take the other cases down
            result = self._pending_result(plan)
            result.outcome, result.phase = Outcome.infra_error, Phase.setup
            result.reason = f"lab error: {type(e).__name__}: {e}"
        self._finish(plan, result)

    def _finish(self, plan: CasePlan, result: CaseResult) -> None:
        with self._lock:
            self.case_results[plan.case.id] = result
        self.progress.case_done(result)
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            self.results.cases = [
                self.case_results[p.case.id] for p in self.plans if p.case.id in self.case_results
            ]
            data = self.results.to_results_json()
        try:
            write_json_atomic(self.run_dir / "results.json", data)
        except OSError as e:  # keep running the cases; the run ends with this error
            self.write_error = self.write_error or e

    def _pending_result(self, plan: CasePlan) -> CaseResult:
        c = plan.case
        return CaseResult(
            case_id=c.id,
            model=c.model,
            task=c.task,
            kind=c.kind,
            num_gpus=c.num_gpus,
            frameworks=plan.frameworks,
            outcome=Outcome.interrupted,
            reason="not finished",
            image=plan.image,
            vram_gib=plan.vram_gib,
            runtime=self.runtime.name,
            ladder_notes=plan.notes,
        )

    def _skipped_result(self, plan: CasePlan) -> CaseResult:
        r = self._pending_result(plan)
        r.outcome, r.reason = Outcome.skipped, plan.skip_reason or ""
        return r

    def _case_result(self, plan: CasePlan, attempts: list[AttemptResult]) -> CaseResult:
        r = self._pending_result(plan)
        r.attempts = attempts
        if not attempts:
            r.outcome = Outcome.interrupted if self.stopping.is_set() else Outcome.skipped
            r.reason = "stopped before it started" if self.stopping.is_set() else "no rung to run"
            return r
        outcome, rung = case_outcome(attempts)
        final = attempts[-1]
        r.outcome, r.phase, r.reason, r.degraded_rung = outcome, final.phase, final.reason, rung
        r.gpus = final.gpus
        if outcome is Outcome.degraded:
            r.original_failure = (
                f"{attempts[0].outcome} on {attempts[0].rung}: {attempts[0].reason}"
            )
            r.reason = f"passed only on rung {rung!r} after: {attempts[0].reason}"
        if outcome is Outcome.flaky:
            first = attempts[-2]
            r.original_failure = f"{first.outcome} on {first.rung}: {first.reason}"
            r.phase = first.phase
            r.reason = f"failed, then passed when re-run identically: {first.reason}"
        r.image_id = self._image_id(plan.image)
        return r

    def _image_id(self, image: str) -> str | None:
        if image not in self._image_ids:
            try:
                self._image_ids[image] = self.runtime.image_id(image)
            except Exception:
                self._image_ids[image] = None
        return self._image_ids[image]

    # --- one attempt ------------------------------------------------------------------------------
    def _run_attempt(self, plan: CasePlan, rung: PlannedRung, attempt: int) -> AttemptResult:
        case = plan.case
        key = f"{case.id}#a{attempt}"
        started = time.time()
        if self.stopping.is_set():
            return self._interrupted(plan, rung, attempt, started, "before")
        try:
            if self._exclusive:
                self._local_lock.acquire()
            gpus = self.pool.acquire(rung.num_gpus if self._lab_places else 0, case.est_time_s, key)
        except Cancelled:
            if self._exclusive:
                self._local_lock.release()
            return self._interrupted(plan, rung, attempt, started, "before")
        sandbox = None
        try:
            spec, req = attempt_request(self.ctx, plan, rung, attempt, gpus)
            Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
            write_json_atomic(req.spec_path, spec.model_dump(mode="json"))
            self.progress.attempt_started(case.id, attempt, rung.name, gpus)
            try:
                sandbox = self.runtime.start(req)
            except LabError:
                raise
            except Exception as e:
                return self._host_result(
                    plan,
                    rung,
                    attempt,
                    started,
                    Outcome.infra_error,
                    f"sandbox did not start: {e}",
                    gpus,
                )
            with self._lock:
                self._running[key] = sandbox
            write_json_atomic(Path(spec.out_dir) / "sandbox.json", sandbox.describe())
            if self.stopping.is_set():
                sandbox.stop(STOP_GRACE_S)
            sx = sandbox.wait(attempt_bound_s(spec))
            return self._read_result(plan, rung, attempt, started, spec, sx, gpus)
        except LabError as e:
            return self._host_result(
                plan, rung, attempt, started, Outcome.infra_error, str(e), gpus
            )
        except Exception as e:  # the engine went away mid-attempt, and the like
            if self.stopping.is_set():  # we removed the sandbox ourselves
                return self._interrupted(plan, rung, attempt, started, "during", gpus)
            return self._host_result(
                plan, rung, attempt, started, Outcome.infra_error, f"{type(e).__name__}: {e}", gpus
            )
        finally:
            if sandbox is not None:
                try:
                    sandbox.stop(STOP_GRACE_S)
                except Exception as e:
                    self.progress.note(case.id, f"could not remove the sandbox: {e}")
                with self._lock:
                    self._running.pop(key, None)
            self.pool.release(gpus)
            if self._exclusive:
                self._local_lock.release()

    def _read_result(
        self,
        plan: CasePlan,
        rung: PlannedRung,
        attempt: int,
        started: float,
        spec: AttemptSpec,
        sx: SandboxExit,
        gpus: list[int],
    ) -> AttemptResult:
        """The host decides from the exit code and the result file, never from server logs."""
        try:
            result = load_result(spec.result_path)
        except (OSError, ValueError):
            result = None
        if sx.oom_killed:
            reason = "the sandbox was killed by the kernel's OOM killer (host memory)"
            if plan.case.memory_limit_mib:
                reason += f", limit {plan.case.memory_limit_mib} MiB"
            if result is None:
                return self._host_result(plan, rung, attempt, started, Outcome.oom, reason, gpus)
            result.outcome, result.reason = Outcome.oom, reason
            return result
        if sx.outcome is not None and not self.stopping.is_set():  # the runtime's verdict
            if result is None:
                return self._host_result(
                    plan, rung, attempt, started, sx.outcome, sx.reason, gpus, sx.log_tail
                )
            result.outcome, result.reason = sx.outcome, sx.reason
            return result
        if result is not None:
            if self.stopping.is_set() and result.outcome is not Outcome.passed:
                result.outcome = Outcome.interrupted
            return result
        if self.stopping.is_set():
            return self._interrupted(plan, rung, attempt, started, "during", gpus)
        if sx.exit_code is None:
            why = sx.reason or f"the sandbox did not finish within {attempt_bound_s(spec):.0f} s"
            return self._host_result(
                plan, rung, attempt, started, Outcome.timeout, why, gpus, sx.log_tail
            )
        last = next((ln for ln in reversed(sx.log_tail) if ln.strip()), "")
        why = sx.reason or f"the sandbox exited with code {sx.exit_code} and wrote no result"
        if sx.exit_code == EXIT_BAD_SPEC:
            why = (
                "lab case in the sandbox rejected the attempt spec: is the image older than this "
                f"lab? (`make images`) — {last}"
            )
        elif last:
            why = f"{why}: {last}"
        return self._host_result(
            plan, rung, attempt, started, Outcome.infra_error, why, gpus, sx.log_tail
        )

    def _interrupted(
        self,
        plan: CasePlan,
        rung: PlannedRung,
        attempt: int,
        started: float,
        when: str,
        gpus: list[int] | None = None,
    ) -> AttemptResult:
        """The attempt the host ends because the run is stopping ("before" / "during" it)."""
        reason = f"the run was interrupted {when} this attempt"
        return self._host_result(plan, rung, attempt, started, Outcome.interrupted, reason, gpus)

    def _host_result(
        self,
        plan: CasePlan,
        rung: PlannedRung,
        attempt: int,
        started: float,
        outcome: Outcome,
        reason: str,
        gpus: list[int] | None = None,
        tail: list[str] | None = None,
    ) -> AttemptResult:
        fw = plan.frameworks[0] if plan.frameworks else "test"
        return AttemptResult(
            run_id=self.run_id,
            case_id=plan.case.id,
            attempt=attempt,
            rung=rung.name,
            outcome=outcome,
            phase=Phase.setup,
            reason=reason,
            frameworks=[
                FrameworkResult(
                    framework=fw,
                    outcome=outcome,
                    phase=Phase.setup,
                    reason=reason,
                    log_tail=tail or [],
                )
            ],
            gpus=gpus or [],
            vram_gib=plan.vram_gib,
            extra_args=rung.extra_args,
            started_at=started,
            finished_at=time.time(),
            lab_version=__version__,
        )


def install_signal_handlers(nightly: Nightly) -> dict[str, int]:
    """Ctrl-C / SIGTERM: stop the attempts, keep the results; returns the signal seen (or 0)."""
    seen = {"signal": 0}

    def handler(signum: int, _frame: object) -> None:
        if seen["signal"]:
            return
        seen["signal"] = signum
        print(
            f"\nlab: {signal.Signals(signum).name}: stopping every running attempt…",
            file=sys.stderr,
        )
        threading.Thread(target=nightly.interrupt, daemon=True).start()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return seen
