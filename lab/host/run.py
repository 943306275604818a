"""The run executor: pack planned attempts onto GPUs, run each case's ladder in its own sandbox,
and keep results readable at every moment (results.json rewritten after each case).

Over 450 lines because placing an attempt (the pool, its share of a GPU, the alone re-run of a
co-located failure) and reading its result are one attempt's life and belong together."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
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
from lab.host.estimates import Estimate, learn, shareable_capacity_gib
from lab.host.gpus import GpuInfo, free_gib, runner_fingerprint
from lab.host.ladder import PlannedRung, case_outcome, climb
from lab.host.neighbours import Neighbours
from lab.host.plan import CasePlan, RunContext, attempt_bound_s, attempt_request
from lab.host.progress import Progress
from lab.host.runtimes.base import Runtime, SandboxExit, places_work
from lab.host.scheduler import Cancelled, ResourcePool
from lab.results.model import CaseResult, RunResults
from lab.results.store import (
    RunDir,
    lab_commit_and_reason,
    run_commit_fields,
    settle_commit,
    write_results,
)

STOP_GRACE_S = 10.0
# A co-located attempt that ends so is re-run alone before it counts (sharing never fails a case).
NOT_FAILURES = (Outcome.passed, Outcome.interrupted, Outcome.skipped)


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


def image_labels(runtime: Runtime, image: str) -> dict[str, str] | None:
    """An image's labels where the runtime inspects images (docker), else None."""
    info_of = getattr(runtime, "image_info", None)
    try:
        info = info_of(image) if info_of else None
    except Exception:  # provenance is not worth failing a finished run over
        return None
    return dict(info.get("labels") or {}) if info else None


def settle_run_commit(results: RunResults, runtime: Runtime) -> None:
    """The commit under test once the run is over: its images' labels, its servers' versions."""
    settle_commit(results, lambda image: image_labels(runtime, image))


@dataclass
class AttemptState:
    """What the host knows of one attempt, built once in `_run_attempt` and handed along (as
    tenacity's RetryCallState is) instead of a growing list of arguments."""

    plan: CasePlan
    rung: PlannedRung
    attempt: int
    started: float
    gpus: list[int] = field(default_factory=list)
    spec: AttemptSpec | None = None  # once the attempt has one
    granted: float | None = None  # when the pool granted its GPUs


class RunExecutor:
    """Runs the planned cases of one run directory: each case's ladder, attempts onto GPUs."""

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
        # What each case is placed by (lab/host/estimates.py); the local runtime never shares.
        card_gib = min(g.memory_total_mib for g in gpus) / 1024 if gpus else None
        self.estimates: dict[str, Estimate] = learn(
            [p.case for p in plans],
            gpus[0].name if gpus else None,
            opts.out_root,
            card_gib,
            opts.vram_gib,
        )
        if self._exclusive:
            for est in self.estimates.values():
                est.exclusive_reason = (
                    est.exclusive_reason or "the local runtime runs one at a time"
                )
        if self._lab_places:
            self.pool = ResourcePool(
                [g.index for g in gpus],
                1 if self._exclusive else loaded.suite.cpu_concurrency,
                {g.index: shareable_capacity_gib(g.memory_total_mib / 1024) for g in gpus},
                free_gib,
            )
        else:
            self.pool = ResourcePool([], loaded.suite.slurm.max_jobs)
        self._local_lock = threading.Lock()
        self.stopping = threading.Event()
        self._running: dict[str, object] = {}  # key -> Sandbox
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.layout = RunDir(run_dir)
        self.case_results: dict[str, CaseResult] = {}
        self.results = RunResults(
            run_id=run_id,
            timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
            host=socket.gethostname(),
            **run_commit_fields(opts.commit),
            lab_version=__version__,
            config_path=str(loaded.path),
            config_sha256=loaded.sha256,
            measurement_repeats=loaded.suite.measurement_repeats,
            warmup_requests=loaded.suite.warmup_requests,
            gpu_model=gpus[0].name if gpus else None,
            runtime=runtime.name,
            status="running",
            runner=runner_fingerprint(lab_commit_and_reason()[0]),
        )
        self._image_ids: dict[str, str | None] = {}
        self._attempt_no: dict[str, int] = {}
        self._colocated: dict[str, list[AttemptResult]] = {}  # failed beside others, re-run alone
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
        settle_run_commit(self.results, self.runtime)
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
                lambda rung, _n: self._run_sharing(plan, rung),
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
        # One flush at a time, so an older snapshot never lands after a newer one.
        with self._flush_lock:
            with self._lock:
                self.results.cases = [
                    self.case_results[p.case.id]
                    for p in self.plans
                    if p.case.id in self.case_results
                ]
            try:
                write_results(self.layout, self.results)
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
            canary=c.canary,
            gpu_sharing=self.estimates[c.id].describe() if c.id in self.estimates else None,
        )

    def _skipped_result(self, plan: CasePlan) -> CaseResult:
        r = self._pending_result(plan)
        r.outcome, r.reason = Outcome.skipped, plan.skip_reason or ""
        return r

    def _case_result(self, plan: CasePlan, attempts: list[AttemptResult]) -> CaseResult:
        r = self._pending_result(plan)
        with self._lock:
            colocated = self._colocated.get(plan.case.id, [])
        # every attempt in the record, in order; the outcome is the ladder's, alone re-runs'
        r.attempts = sorted([*attempts, *colocated], key=lambda a: a.attempt)
        r.colocation_note = next(
            (a.colocation_note for a in reversed(attempts) if a.colocation_note), None
        )
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
    def _next_attempt(self, case_id: str) -> int:
        with self._lock:
            self._attempt_no[case_id] = n = self._attempt_no.get(case_id, 0) + 1
            return n

    def _run_sharing(self, plan: CasePlan, rung: PlannedRung) -> AttemptResult:
        """One attempt of the ladder, placed by the case's estimate; one that fails while it
        shared its GPU is re-run alone, and only that attempt's outcome is the ladder's."""
        case = plan.case
        est = self.estimates.get(case.id)
        share = est.share_gib if est is not None and rung.num_gpus == 1 else None
        result = self._run_attempt(plan, rung, self._next_attempt(case.id), share)
        if not result.neighbours or result.outcome in NOT_FAILURES or self.stopping.is_set():
            return result
        what = "co-location OOM" if result.outcome is Outcome.oom else "co-location failure"
        where = f"GPU {','.join(map(str, result.gpus))} shared with {', '.join(result.neighbours)}"
        alone_no = self._next_attempt(case.id)
        result.colocation_note = (
            f"{what} ({result.outcome}) on {where}; re-run alone as attempt {alone_no}"
        )
        with self._lock:
            self._colocated.setdefault(case.id, []).append(result)
        self.progress.note(case.id, result.colocation_note)
        alone = self._run_attempt(plan, rung, alone_no, None)
        verdict = (
            "passed alone" if alone.outcome is Outcome.passed else f"{alone.outcome} alone too"
        )
        alone.colocation_note = (
            f"{what} in attempt {result.attempt} ({result.outcome} on {where}, share "
            f"{result.share_gib:g} GiB); {verdict}"
        )
        return alone

    def _run_attempt(
        self, plan: CasePlan, rung: PlannedRung, attempt: int, share_gib: float | None = None
    ) -> AttemptResult:
        result = self._run_attempt_placed(plan, rung, attempt, share_gib)
        key = f"{plan.case.id}#a{attempt}"
        result.share_gib = share_gib if result.gpus else None
        result.neighbours = self.pool.neighbours(key)
        return result

    def _run_attempt_placed(
        self, plan: CasePlan, rung: PlannedRung, attempt: int, share_gib: float | None
    ) -> AttemptResult:
        case = plan.case
        key = f"{case.id}#a{attempt}"
        st = AttemptState(plan, rung, attempt, time.time())
        if self.stopping.is_set():
            return self._interrupted(st, "before")
        est = self.estimates.get(case.id)
        est_time = est.time_s if est is not None else case.est_time_s
        try:
            if self._exclusive:
                self._local_lock.acquire()
            gpus = self.pool.acquire(
                rung.num_gpus if self._lab_places else 0, est_time, key, share_gib
            )
        except Cancelled:
            if self._exclusive:
                self._local_lock.release()
            return self._interrupted(st, "before")
        st.gpus = gpus
        st.granted = time.time()
        sandbox = None
        try:
            spec, req = attempt_request(self.ctx, plan, rung, attempt, gpus, share_gib)
            st.spec = spec
            Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
            write_json_atomic(req.spec_path, spec.model_dump(mode="json"))
            self.progress.attempt_started(case.id, attempt, rung.name, gpus)
            try:
                sandbox = self.runtime.start(req)
            except LabError:
                raise
            except Exception as e:
                return self._host_result(st, Outcome.infra_error, f"sandbox did not start: {e}")
            with self._lock:
                self._running[key] = sandbox
            write_json_atomic(Path(spec.out_dir) / "sandbox.json", sandbox.describe())
            if self.stopping.is_set():
                sandbox.stop(STOP_GRACE_S)
            sx = sandbox.wait(attempt_bound_s(spec))
            result = self._read_result(st, sx)
            result.granted_at = st.granted
            if self._lab_places:  # host indices; where Slurm places, the node side's record holds
                result.gpus = gpus
            return result
        except LabError as e:
            return self._host_result(st, Outcome.infra_error, str(e))
        except Exception as e:  # the engine went away mid-attempt, and the like
            if self.stopping.is_set():  # we removed the sandbox ourselves
                return self._interrupted(st, "during")
            return self._host_result(st, Outcome.infra_error, f"{type(e).__name__}: {e}")
        finally:
            if sandbox is not None:
                try:
                    sandbox.stop(STOP_GRACE_S)
                except Exception as e:
                    self.progress.note(case.id, f"could not remove the sandbox: {e}")
                with self._lock:
                    self._running.pop(key, None)
            self.pool.release(gpus, key)
            if self._exclusive:
                self._local_lock.release()

    def _read_result(self, st: AttemptState, sx: SandboxExit) -> AttemptResult:
        """The host decides from the exit code and the result file, never from server logs."""
        assert st.spec is not None, "an attempt that ran has a spec"
        try:
            result: AttemptResult | None = with_log_paths(load_result(st.spec.result_path), st.spec)
        except (OSError, ValueError):
            result = None
        if sx.oom_killed:
            reason = "the sandbox was killed by the kernel's OOM killer (host memory)"
            if st.plan.case.memory_limit_mib:
                reason += f", limit {st.plan.case.memory_limit_mib} MiB"
            if result is None:
                return self._host_result(st, Outcome.oom, reason)
            return host_verdict(result, Outcome.oom, reason)
        if sx.outcome is not None and not self.stopping.is_set():  # the runtime's verdict
            if result is None:
                return self._host_result(st, sx.outcome, sx.reason, sx.log_tail)
            return host_verdict(result, sx.outcome, sx.reason)
        if result is not None:
            if self.stopping.is_set() and result.outcome not in (
                Outcome.passed,
                Outcome.interrupted,
            ):
                return host_verdict(result, Outcome.interrupted, result.reason)
            return result
        if self.stopping.is_set():
            return self._interrupted(st, "during")
        if sx.exit_code is None:
            why = sx.reason or f"the sandbox did not finish within {attempt_bound_s(st.spec):.0f} s"
            return self._host_result(st, Outcome.timeout, why, sx.log_tail)
        last = next((ln for ln in reversed(sx.log_tail) if ln.strip()), "")
        why = sx.reason or f"the sandbox exited with code {sx.exit_code} and wrote no result"
        if sx.exit_code == EXIT_BAD_SPEC:
            why = (
                "lab case in the sandbox rejected the attempt spec: is the image older than this "
                f"lab? (`make images`) — {last}"
            )
        elif last:
            why = f"{why}: {last}"
        return self._host_result(st, Outcome.infra_error, why, sx.log_tail)

    def _interrupted(self, st: AttemptState, when: str) -> AttemptResult:
        """The attempt the host ends because the run is stopping ("before" / "during" it)."""
        reason = f"the run was interrupted {when} this attempt"
        return self._host_result(st, Outcome.interrupted, reason)

    def _host_result(
        self, st: AttemptState, outcome: Outcome, reason: str, tail: list[str] | None = None
    ) -> AttemptResult:
        """An attempt's result written by the host: the sandbox wrote none."""
        fw = st.plan.frameworks[0] if st.plan.frameworks else "test"
        result = AttemptResult(
            run_id=self.run_id,
            case_id=st.plan.case.id,
            attempt=st.attempt,
            rung=st.rung.name,
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
            gpus=st.gpus,
            granted_at=st.granted,
            vram_gib=st.plan.vram_gib,
            extra_args=st.rung.extra_args,
            started_at=st.started,
            finished_at=time.time(),
            lab_version=__version__,
        )
        return result if st.spec is None else with_log_paths(result, st.spec)


def with_log_paths(result: AttemptResult, spec: AttemptSpec) -> AttemptResult:
    """Name each framework's log that is on disk but not in the result (the sandbox was stopped
    before it said, or never wrote a result), so results.json still leads to it."""
    for f in result.frameworks:
        log = spec.log_path(f.framework)
        if not f.log_path and log.exists():
            f.log_path = str(log)
    return result


def host_verdict(result: AttemptResult, outcome: Outcome, reason: str) -> AttemptResult:
    """The host's verdict on an attempt whose sandbox wrote a result: the sandbox's own verdict
    stays beside it (sandbox_outcome, sandbox_reason)."""
    result.sandbox_outcome, result.sandbox_reason = result.outcome, result.reason
    result.outcome, result.reason = outcome, reason
    return result


def install_signal_handlers(executor: RunExecutor) -> dict[str, int]:
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
        threading.Thread(target=executor.interrupt, daemon=True).start()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return seen
