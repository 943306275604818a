"""One attempt of one case, start to end: server start → readiness → warmup → measurement →
comparison → teardown → result.json. It never retries and never schedules: the host does."""

from __future__ import annotations

import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from lab import __version__, e2e
from lab.config import Case
from lab.contract import (
    DEFAULT_MEASURE_BUDGET_S,
    TEST_KEY,
    AttemptResult,
    AttemptSpec,
    FrameworkResult,
    Outcome,
    Phase,
    summed_phases,
)
from lab.files import write_atomic, write_json_atomic
from lab.frameworks import get_framework, server_command
from lab.frameworks.args import merge_args
from lab.redact import ENV_REF, redact_env
from lab.sandbox import ballast as ballast_mod
from lab.sandbox.client import (
    Client,
    Output,
    psnr_db,
    server_version,
    sized_prompts,
    synthetic_image,
)
from lab.sandbox.result import (
    PerfDumps,
    last_line,
    record_test_failures,
    telling_line,
)
from lab.sandbox.server import GUARD_POLL_S, AttemptEnded, ServerNotStarted, ServerSession
from lab.sandbox.telemetry import Nvml
from lab.sandbox.watch import LineClassifier

# target_mde_pct cases: measuring stops at the target, the budget, or this many samples
MAX_MEASUREMENTS = 1000
# Environment variables worth recording with the command line (beside the case's extra_env).
RECORDED_ENV = (
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "HF_HOME",
    "REFSERVER_FAULT",
)


class Interrupted(BaseException):
    """SIGTERM / SIGINT reached `lab case`."""


@dataclass
class _FrameworkRun:
    result: FrameworkResult
    first_output: Output | None = None


class Attempt:
    def __init__(self, spec: AttemptSpec, echo: bool = False) -> None:
        self.spec = spec
        self.case: Case = spec.case
        self.echo = echo
        self.out_dir = Path(spec.out_dir)
        self.nvml = Nvml()
        self.devices = spec.gpu_uuids if self.nvml.ok else []
        self.session: ServerSession | None = None
        self._ballast: subprocess.Popen[str] | None = None
        self.phase_timings_s: dict[str, float] = {}

    # --- entry --------------------------------------------------------------------------------
    def run(self) -> AttemptResult:
        started = time.time()
        runs: list[FrameworkResult] = []
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._start_ballast()
            if self.case.kind == "test":
                runs.append(self._run_test_command())
            else:
                runs = self._run_frameworks()
        except Interrupted:
            if self.session is not None:
                self.session.close()
            runs.append(
                FrameworkResult(
                    framework=self._current_fw(runs),
                    outcome=Outcome.interrupted,
                    reason="lab case was interrupted (SIGTERM/SIGINT)",
                )
            )
        except AttemptEnded as e:  # set-up failures before any server ran (e.g. ballast)
            runs.append(
                FrameworkResult(
                    framework=self._current_fw(runs),
                    outcome=e.outcome,
                    phase=Phase.setup,
                    reason=e.reason,
                )
            )
        finally:
            self._stop_ballast()
        return self._result(runs, started)

    def _current_fw(self, runs: list[FrameworkResult]) -> str:
        names = self.spec.frameworks or ["test"]
        return names[min(len(runs), len(names) - 1)]

    def _result(self, runs: list[FrameworkResult], started: float) -> AttemptResult:
        failed = next((r for r in runs if r.outcome is not Outcome.passed), None)
        return AttemptResult(
            run_id=self.spec.run_id,
            case_id=self.case.id,
            attempt=self.spec.attempt,
            rung=self.spec.rung,
            outcome=failed.outcome if failed else Outcome.passed,
            phase=failed.phase if failed else None,
            reason=failed.reason if failed else "",
            frameworks=runs,
            gpus=self.spec.gpus,
            vram_gib=self.spec.vram_gib,
            extra_args=self.spec.extra_args,
            phase_timings_s=summed_phases(self.phase_timings_s, runs),
            started_at=started,
            finished_at=time.time(),
            lab_version=__version__,
            hostname=socket.gethostname(),
        )

    # --- frameworks (a comparison runs them one after another on the same port) -------------
    def _run_frameworks(self) -> list[FrameworkResult]:
        results: list[FrameworkResult] = []
        baseline: _FrameworkRun | None = None
        for i, fw in enumerate(self.spec.frameworks):
            run = self._run_framework(fw)
            results.append(run.result)
            if run.result.outcome is not Outcome.passed:
                for rest in self.spec.frameworks[i + 1 :]:
                    results.append(
                        FrameworkResult(
                            framework=rest,
                            outcome=Outcome.skipped,
                            reason=f"not run: {fw} ended {run.result.outcome}",
                        )
                    )
                break
            if baseline is None:
                baseline = run
            else:
                self._compare(baseline, run)
        return results

    def _compare(self, base: _FrameworkRun, other: _FrameworkRun) -> None:
        b, o = base.result, other.result
        if b.latency_s and o.latency_s:
            o.speedup_vs_baseline = round(b.latency_s / o.latency_s, 3)
        if base.first_output and other.first_output:
            o.psnr_vs_baseline_db = psnr_db(base.first_output.data, other.first_output.data)

    def _env(self, extra: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """The server's environment, and what of it the result records (secrets redacted).

        `${VAR}` in a case's extra_env is filled from the sandbox's own environment, so a token
        reaches the server without ever being written into a spec or result file."""
        env = dict(os.environ)
        env.update(
            {k: ENV_REF.sub(lambda m: os.environ.get(m.group(1), ""), v) for k, v in extra.items()}
        )
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["LAB_ATTEMPT_DIR"] = str(self.spec.out_dir)  # where a server may keep attempt state
        recorded = {k: env[k] for k in RECORDED_ENV if k in env}
        recorded.update(extra)  # the ${VAR} template, not its value
        return env, redact_env(recorded)

    def _session(
        self, argv: list[str], log: Path, env: dict[str, str], cwd: str | None = None
    ) -> ServerSession:
        return ServerSession(
            argv,
            log,
            env=env,
            classifier=LineClassifier(self.case.fatal_patterns),
            nvml=self.nvml,
            devices=self.devices,
            cwd=cwd,
            echo=self.echo,
        )

    def _run_framework(self, fw: str) -> _FrameworkRun:
        adapter = get_framework(fw)
        cfg = self.case.frameworks[fw]
        spec = self.spec
        cmd = server_command(spec, fw)
        env, recorded_env = self._env({**adapter.server_env, **cfg.extra_env, **spec.extra_env})
        res = FrameworkResult(
            framework=fw,
            outcome=Outcome.passed,
            command=cmd,
            env=recorded_env,
            log_path=str(spec.log_path(fw)),
        )
        run = _FrameworkRun(res)
        timings = res.phase_timings_s
        phase = Phase.startup
        session = self._session(cmd, spec.log_path(fw), env)
        try:
            t0 = time.monotonic()
            with session:
                self.session = session
                try:
                    base_url = f"http://{spec.host}:{spec.port}"
                    health, ready = adapter.health_url_path(cfg), adapter.ready_path(cfg)
                    healthy_at = session.wait_ready(
                        base_url, health, ready, self.case.model, spec.startup_timeout_s
                    )
                    res.ready_at = time.time()
                    # start → health 200 → model listed (0 without a ready path)
                    timings["healthy"] = round(healthy_at - t0, 3)
                    timings["ready"] = round(time.monotonic() - healthy_at, 3)
                    res.server_version = (
                        server_version(base_url, adapter.version_path)
                        or adapter.installed_version()
                    )
                    if adapter.style(cfg) != "none":
                        client = Client(
                            base_url,
                            self.case,
                            adapter,
                            cfg,
                            spec.request_timeout_s,
                            self._image_input(),
                            self.out_dir,
                        )
                        phase = Phase.warmup
                        t0 = time.monotonic()
                        for _ in range(spec.warmup_requests):
                            out = session.guarded(
                                lambda: client.send(self.case.prompt), spec.request_timeout_s
                            )
                            if res.first_request_latency_s is None:
                                res.first_request_latency_s = round(out.latency_s, 4)
                        timings["warmup"] = round(time.monotonic() - t0, 3)
                        phase = Phase.measure
                        t0 = time.monotonic()
                        self._measure(session, client, fw, run)
                        timings["measure"] = round(time.monotonic() - t0, 3)
                except AttemptEnded as e:
                    res.outcome, res.phase, res.reason = e.outcome, phase, e.reason
                    res.exit_code = e.exit_code
        except ServerNotStarted as e:
            res.outcome, res.phase = Outcome.crashed, Phase.startup
            res.reason = f"cannot start {cmd[0]!r}: {e.error.strerror}"
            return run
        finally:
            self.session = None
            timings["teardown"] = session.teardown_s
        code = session.server.poll()
        if res.exit_code is None and code is not None and res.outcome is not Outcome.passed:
            res.exit_code = code
        session.record(res)
        return run

    def _measure(self, session: ServerSession, client: Client, fw: str, run: _FrameworkRun) -> None:
        res = run.result
        perf_dir = self.out_dir / "perf"
        if client.writes_perf_dumps:
            perf_dir.mkdir(parents=True, exist_ok=True)
        dumps = PerfDumps()
        rates: list[float] = []  # output tokens per second, LLM servers
        target = self.case.target_mde_pct
        if target is not None:
            from lab.results import stats  # numpy/scipy: only when a target needs them
        count = self.spec.measurement_repeats if target is None else MAX_MEASUREMENTS
        budget = self.case.measure_budget_s or DEFAULT_MEASURE_BUDGET_S
        started = time.monotonic()
        res.measurement_stop = "fixed_repeats" if target is None else "max_measurements"
        for i, prompt in enumerate(sized_prompts(self.case.prompt, count)):
            if target is not None and i >= max(self.spec.measurement_repeats, 3):
                mde = stats.sample_mde_pct(res.latency_samples_s)
                res.measurement_mde_pct = None if mde is None else round(mde, 2)
                if mde is not None and mde <= target:
                    res.measurement_stop = "target_mde_reached"
                    break
                # stop before a request the budget cannot fit, at the pace so far (the lab's
                # own work between requests included)
                spent = time.monotonic() - started
                if spent + spent / len(res.latency_samples_s) > budget:
                    res.measurement_stop = "budget_spent"
                    break
            dump = perf_dir / f"{fw}_{i + 1}.json" if client.writes_perf_dumps else None
            out = session.guarded(partial(client.send, prompt, dump), self.spec.request_timeout_s)
            if dump is not None:
                dumps.look(dump)
            res.latency_samples_s.append(round(out.latency_s, 4))
            if out.output_tokens and out.latency_s > 0:
                rates.append(out.output_tokens / out.latency_s)
            res.notes.extend(n for n in out.notes if n not in res.notes)
            if run.first_output is None:
                run.first_output = out
                art = self.out_dir / "artifacts" / f"{self.case.id}__{fw}.{out.fmt}"
                write_atomic(art, out.data)
                res.artifact = str(art)
        res.measurement_count = len(res.latency_samples_s)
        res.latency_s = round(statistics.median(res.latency_samples_s), 4)
        if rates:
            res.output_tokens_per_s = round(statistics.median(rates), 2)
        if client.writes_perf_dumps:
            dumps.record(res)

    def _image_input(self) -> bytes | None:
        if not self.case.needs_image_input:
            return None
        if self.spec.test_image_path:
            return Path(self.spec.test_image_path).read_bytes()
        return synthetic_image(self.case.width, self.case.height)

    # --- kind "test": a command instead of a server ------------------------------------------
    def _run_test_command(self) -> FrameworkResult:
        case, spec = self.case, self.spec
        assert case.command
        cmd_text = case.command.format(
            out_dir=spec.out_dir,
            config_dir=spec.config_dir,
            port=spec.port,
            host=spec.host,
            python=shlex.quote(sys.executable),  # the sandbox's own interpreter
        )
        argv = ["/bin/sh", "-c", cmd_text]
        env, recorded = self._env(test_env(spec))
        log = spec.log_path("test")
        res = FrameworkResult(
            framework="test", outcome=Outcome.passed, command=argv, env=recorded, log_path=str(log)
        )
        cwd = case.workdir.format(config_dir=spec.config_dir) if case.workdir else None
        session = self._session(argv, log, env, cwd=cwd)
        t0 = time.monotonic()
        try:
            with session:
                self.session = session
                self._watch_test_command(session, res)
                res.phase_timings_s["measure"] = round(time.monotonic() - t0, 3)
        except ServerNotStarted as e:
            res.outcome, res.phase = Outcome.crashed, Phase.startup
            res.reason = f"cannot start the command: {e.error}"
            return res
        finally:
            self.session = None
        session.record(res)
        if case.junit_path:
            junit = Path(spec.out_dir) / case.junit_path
            res.inner_junit = str(junit) if junit.exists() else None
            if res.inner_junit and res.outcome in (Outcome.passed, Outcome.crashed):
                record_test_failures(res, junit)
        return res

    def _watch_test_command(self, session: ServerSession, res: FrameworkResult) -> None:
        """Until the command exits, prints a fatal line or outlives startup_timeout_s."""
        server = session.server
        deadline = time.monotonic() + self.spec.startup_timeout_s
        while True:
            ended = session.ended("")
            if ended is not None:
                res.exit_code = ended.exit_code if server.fatal is None else server.poll()
                if server.fatal is not None:
                    res.outcome, res.reason = ended.outcome, ended.reason
                    res.phase = Phase.measure
                elif ended.exit_code != 0:
                    res.outcome, res.phase = Outcome.crashed, Phase.measure
                    res.reason = f"command exited with code {ended.exit_code}"
                    last = telling_line(server.tail_lines())
                    res.reason += f": {last}" if last else ""
                return
            if time.monotonic() > deadline:
                res.outcome, res.phase = Outcome.timeout, Phase.measure
                res.reason = f"command still running after {self.spec.startup_timeout_s:g} s"
                last = last_line(server.tail_lines())
                res.reason += f"; last line: {last}" if last else ""
                return
            time.sleep(GUARD_POLL_S)

    # --- VRAM emulation -------------------------------------------------------------------------
    def _start_ballast(self) -> None:
        b = self.spec.ballast
        if b is None:
            return
        t0 = time.monotonic()
        try:
            self._ballast = ballast_mod.launch(b.keep_gib, b.devices)
        except ballast_mod.BallastFailed as e:
            raise AttemptEnded(Outcome.infra_error, f"VRAM emulation failed: {e}") from None
        self.phase_timings_s["ballast"] = round(time.monotonic() - t0, 3)

    def _stop_ballast(self) -> None:
        if self._ballast is not None:
            ballast_mod.stop(self._ballast)


def test_env(spec: AttemptSpec) -> dict[str, str]:
    """What a `kind: test` command gets from the lab: where to write, its port and model, and
    LAB_SERVER_EXTRA_ARGS for the server it launches: the rung's flags, then the VRAM budget."""
    env = {"LAB_OUT_DIR": spec.out_dir, "LAB_PORT": str(spec.port), "LAB_HOST": spec.host}
    if spec.case.model:
        env[e2e.MODEL_ENV] = spec.case.model
    env.update(spec.extra_env)
    budget = spec.extra_args.get(TEST_KEY, [])
    if budget:
        rung_args = shlex.split(env.get(e2e.EXTRA_ARGS_ENV, ""))
        env[e2e.EXTRA_ARGS_ENV] = shlex.join(merge_args(budget, rung_args))
    return env


def run_attempt(spec: AttemptSpec, echo: bool = False) -> AttemptResult:
    """Run the attempt and write result.json atomically (also when interrupted)."""
    import signal

    def _interrupt(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    old = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        result = Attempt(spec, echo=echo).run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    write_json_atomic(spec.result_path, result.model_dump(mode="json"))
    return result
