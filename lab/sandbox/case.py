"""One attempt of one case, start to end: server start → readiness → warmup → measurement →
comparison → teardown → result.json. It never retries and never schedules: the host does."""

from __future__ import annotations

import io
import os
import re
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests

from lab import __version__, e2e, perfdump
from lab.config import Case
from lab.contract import (
    DEFAULT_MEASURE_BUDGET_S,
    TEST_KEY,
    AttemptResult,
    AttemptSpec,
    FrameworkResult,
    Outcome,
    Phase,
)
from lab.files import write_atomic, write_json_atomic
from lab.frameworks import get_framework, server_command
from lab.frameworks.args import merge_args
from lab.redact import ENV_REF, redact_env
from lab.sandbox import ballast as ballast_mod
from lab.sandbox.client import BadResponse, Client, Output, psnr_db, sized_prompts
from lab.sandbox.server import ServerProcess
from lab.sandbox.telemetry import Nvml, Sampler, wait_gpu_released
from lab.sandbox.watch import LineClassifier

HEALTH_POLL_S = 0.02  # sglang's runner polls every 2 s; we poll 100x faster
GUARD_POLL_S = 0.02
STOP_GRACE_S = 3.0  # sglang waits 30 s before KILL
GPU_RELEASE_TIMEOUT_S = 60.0
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

T = TypeVar("T")


class AttemptEnded(Exception):
    """The attempt is over: carries the outcome and the one line that says why."""

    def __init__(self, outcome: Outcome, reason: str, exit_code: int | None = None) -> None:
        super().__init__(reason)
        self.outcome, self.reason, self.exit_code = outcome, reason, exit_code


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
        self.server: ServerProcess | None = None
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
            if self.server is not None:
                self.server.stop(STOP_GRACE_S)
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
            phase_timings_s=self.phase_timings_s,
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

    def _run_framework(self, fw: str) -> _FrameworkRun:
        adapter = get_framework(fw)
        cfg = self.case.frameworks[fw]
        spec = self.spec
        cmd = server_command(spec, fw)
        env, recorded_env = self._env({**cfg.extra_env, **spec.extra_env})
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
        gpu_before = self.nvml.all_pids(self.devices)
        sampler: Sampler | None = None
        try:
            t0 = time.monotonic()
            try:
                self.server = ServerProcess(
                    cmd,
                    spec.log_path(fw),
                    env=env,
                    echo=self.echo,
                    classifier=LineClassifier(self.case.fatal_patterns),
                )
            except OSError as e:
                raise AttemptEnded(
                    Outcome.crashed, f"cannot start {cmd[0]!r}: {e.strerror}"
                ) from None
            server = self.server
            sampler = Sampler(server.group_pids, self.nvml, self.devices).start()
            base_url = f"http://{spec.host}:{spec.port}"
            self._wait_ready(adapter.health_url_path(cfg), adapter.ready_path(cfg), base_url)
            res.ready_at = time.time()
            timings["startup"] = round(time.monotonic() - t0, 3)
            style = adapter.style(cfg)
            if style != "none":
                client = Client(
                    base_url,
                    self.case,
                    style,
                    spec.request_timeout_s,
                    self._image_input(),
                    self.out_dir,
                )
                phase = Phase.warmup
                t0 = time.monotonic()
                for _ in range(spec.warmup_requests):
                    out = self._guarded(
                        lambda: client.send(self.case.prompt), spec.request_timeout_s
                    )
                    if res.first_request_latency_s is None:
                        res.first_request_latency_s = round(out.latency_s, 4)
                timings["warmup"] = round(time.monotonic() - t0, 3)
                phase = Phase.measure
                t0 = time.monotonic()
                self._measure(client, fw, run)
                timings["measure"] = round(time.monotonic() - t0, 3)
        except AttemptEnded as e:
            res.outcome, res.phase, res.reason, res.exit_code = (
                e.outcome,
                phase,
                e.reason,
                e.exit_code,
            )
        finally:
            t0 = time.monotonic()
            if self.server is not None:
                res.stopped_at = self.server.stop(STOP_GRACE_S)
                res.fatal_line_at = self.server.fatal_at
                res.log_tail = self.server.tail_lines()
                if self.server.log_error:
                    res.log_tail.append(f"[lab] {self.server.log_error}")
                if (
                    res.exit_code is None
                    and self.server.proc.returncode is not None
                    and (res.outcome is not Outcome.passed)
                ):
                    res.exit_code = self.server.proc.returncode
            if sampler is not None:
                res.telemetry = sampler.stop()
            self.server = None
            self._teardown_gpu(res, gpu_before)
            timings["teardown"] = round(time.monotonic() - t0, 3)
        return run

    def _teardown_gpu(self, res: FrameworkResult, before: set[int]) -> None:
        try:
            res.telemetry.gpu_free_after_s = wait_gpu_released(
                self.nvml, self.devices, before, GPU_RELEASE_TIMEOUT_S
            )
        except TimeoutError as e:
            if res.outcome is Outcome.passed:
                res.outcome, res.phase, res.reason = Outcome.infra_error, Phase.teardown, str(e)

    # --- phases ---------------------------------------------------------------------------------
    def _ended_by_server(self, phase_what: str) -> AttemptEnded | None:
        """An OOM/fatal line or an exited server, as the reason the attempt ends; else None."""
        server = self.server
        assert server is not None
        if server.fatal is None and server.poll() is not None:
            server.flush_log()  # the last lines may hold the OOM text
        if server.fatal is not None:
            kind = Outcome.oom if server.fatal.kind == "oom" else Outcome.crashed
            return AttemptEnded(kind, server.fatal.line)
        code = server.poll()
        if code is not None:
            last = telling_line(server.tail_lines())  # the log tail is kept on the result
            why = f"server exited with code {code} {phase_what}"
            return AttemptEnded(Outcome.crashed, f"{why}: {last}" if last else why, code)
        return None

    def _wait_ready(self, health: str, ready: str | None, base_url: str) -> None:
        deadline = time.monotonic() + self.spec.startup_timeout_s
        http = requests.Session()
        healthy = False
        while True:
            ended = self._ended_by_server("during startup")
            if ended:
                raise ended
            try:
                if not healthy:
                    healthy = http.get(base_url + health, timeout=(0.2, 2.0)).status_code == 200
                if healthy and (ready is None or self._lists_model(http, base_url + ready)):
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                what = "ready (model listed)" if healthy else f"healthy ({health} 200)"
                raise AttemptEnded(
                    Outcome.timeout, f"server not {what} after {self.spec.startup_timeout_s:g} s"
                )
            time.sleep(HEALTH_POLL_S)

    def _lists_model(self, http: requests.Session, url: str) -> bool:
        r = http.get(url, timeout=(0.2, 2.0))
        if r.status_code != 200:
            return False
        try:
            cards = r.json().get("data", [])
        except (ValueError, AttributeError):
            return False
        model = self.case.model
        return any(isinstance(c, dict) and model in (c.get("id"), c.get("root")) for c in cards)

    def _guarded(self, fn: Callable[[], T], timeout_s: float) -> T:
        """Run a request while watching the server: a fatal line or an exit ends it at once."""
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["value"] = fn()
            except BaseException as e:  # handed to the caller's thread below
                box["error"] = e

        t = threading.Thread(target=call, daemon=True)
        t.start()
        deadline = time.monotonic() + timeout_s
        while t.is_alive():
            t.join(GUARD_POLL_S)
            ended = self._ended_by_server("during a request")
            if ended:
                raise ended
            if time.monotonic() > deadline:
                raise AttemptEnded(Outcome.timeout, f"request not answered after {timeout_s:g} s")
        if "error" in box:
            err = box["error"]
            ended = self._ended_by_server("during a request")
            if ended:
                raise ended
            if isinstance(err, BadResponse):
                # A server that answers an error carrying the OOM text ran out of memory too.
                hit = self.server.classifier.classify_line(str(err)) if self.server else None
                if hit is not None and hit.kind == "oom":
                    raise AttemptEnded(Outcome.oom, str(err))
                raise AttemptEnded(Outcome.bad_response, str(err))
            if isinstance(err, TimeoutError | requests.Timeout):
                raise AttemptEnded(Outcome.timeout, str(err))
            if isinstance(err, requests.RequestException):
                raise AttemptEnded(Outcome.bad_response, f"request failed: {err}")
            raise err
        return box["value"]

    def _measure(self, client: Client, fw: str, run: _FrameworkRun) -> None:
        res = run.result
        perf_dir = self.out_dir / "perf"
        perf_dir.mkdir(parents=True, exist_ok=True)
        perfs: list[dict[str, Any]] = []
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
            dump = perf_dir / f"{fw}_{i + 1}.json"
            out = self._guarded(
                lambda p=prompt, d=dump: client.send(p, d), self.spec.request_timeout_s
            )
            res.latency_samples_s.append(round(out.latency_s, 4))
            if out.output_tokens and out.latency_s > 0:
                rates.append(out.output_tokens / out.latency_s)
            if out.perf:
                perfs.append(out.perf)
            elif client.writes_perf_dumps:
                res.missing_perf_dumps += 1
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
            _server_timings(res, perfs)

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
        gpu_before = self.nvml.all_pids(self.devices)
        t0 = time.monotonic()
        try:
            self.server = ServerProcess(
                argv,
                log,
                env=env,
                cwd=cwd,
                echo=self.echo,
                classifier=LineClassifier(case.fatal_patterns),
            )
        except OSError as e:
            return res.model_copy(
                update={
                    "outcome": Outcome.crashed,
                    "phase": Phase.startup,
                    "reason": f"cannot start the command: {e}",
                }
            )
        server = self.server
        sampler = Sampler(server.group_pids, self.nvml, self.devices).start()
        deadline = time.monotonic() + spec.startup_timeout_s
        while True:
            ended = self._ended_by_server("")
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
                break
            if time.monotonic() > deadline:
                res.outcome, res.phase = Outcome.timeout, Phase.measure
                res.reason = f"command still running after {spec.startup_timeout_s:g} s"
                last = _last_line(server.tail_lines())
                res.reason += f"; last line: {last}" if last else ""
                break
            time.sleep(GUARD_POLL_S)
        res.phase_timings_s["measure"] = round(time.monotonic() - t0, 3)
        res.stopped_at = server.stop(STOP_GRACE_S)
        res.fatal_line_at = server.fatal_at
        res.log_tail = server.tail_lines()
        res.telemetry = sampler.stop()
        self.server = None
        self._teardown_gpu(res, gpu_before)
        if case.junit_path:
            junit = Path(spec.out_dir) / case.junit_path
            res.inner_junit = str(junit) if junit.exists() else None
            if res.inner_junit and res.outcome in (Outcome.passed, Outcome.crashed):
                _test_failures(res, junit)
        return res

    # --- VRAM emulation -------------------------------------------------------------------------
    def _start_ballast(self) -> None:
        b = self.spec.ballast
        if b is None:
            return
        argv = [
            sys.executable,
            "-m",
            "lab.sandbox.ballast",
            "--keep-gib",
            str(b.keep_gib),
            "--devices",
            ",".join(map(str, b.devices)),
        ]
        t0 = time.monotonic()
        self._ballast = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert self._ballast.stdout is not None
        lines = []
        for line in self._ballast.stdout:
            lines.append(line.strip())
            if line.startswith(ballast_mod.READY):
                self.phase_timings_s["ballast"] = round(time.monotonic() - t0, 3)
                return
        self._ballast.wait()
        raise AttemptEnded(
            Outcome.infra_error, f"VRAM emulation failed: {lines[-1] if lines else 'no output'}"
        )

    def _stop_ballast(self) -> None:
        if self._ballast is not None and self._ballast.poll() is None:
            self._ballast.terminate()
            try:
                self._ballast.wait(10)
            except subprocess.TimeoutExpired:
                self._ballast.kill()
                self._ballast.wait()


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


def _last_line(lines: list[str]) -> str:
    return next((ln for ln in reversed(lines) if ln.strip()), "")


_TELLING = re.compile(r"\b(error|exception|fatal|panic|killed|abort(ed)?)\b", re.IGNORECASE)


def telling_line(lines: list[str]) -> str:
    """The line that says why a process died: the exception line of the last traceback, else
    the last line naming an error, exception or fatal condition, else the last line."""
    start = max((i for i, ln in enumerate(lines) if ln.startswith("Traceback (")), default=None)
    if start is not None:
        for ln in lines[start + 1 :]:
            if ln.strip() and not ln[0].isspace() and not ln.startswith("Traceback ("):
                return ln.strip()
    hit = next((ln for ln in reversed(lines) if _TELLING.search(ln)), None)
    return hit.strip() if hit else _last_line(lines).strip()


def _test_failures(res: FrameworkResult, junit: Path) -> None:
    """A test whose own assertions failed is `test_failed`, naming them (not `crashed`)."""
    failed = e2e.failed_tests(junit)
    if not failed:
        return
    res.failed_tests = [name for name, _ in failed]
    res.outcome, res.phase = Outcome.test_failed, Phase.measure
    names = ", ".join(res.failed_tests[:5]) + (" …" if len(failed) > 5 else "")
    res.reason = f"{len(failed)} test(s) failed: {names}: {failed[0][1]}"


def _server_timings(res: FrameworkResult, perfs: list[dict[str, Any]]) -> None:
    """Server-side latency and stage medians from the perf dumps the server wrote, as sglang's
    nightly summarizes them."""
    summary = perfdump.summarize(perfs)
    res.server_latency_samples_s = summary.get("server_latency_samples_s", [])
    res.server_latency_s = summary.get("server_latency_s")
    res.server_stage_medians_ms = summary.get("server_stage_medians_ms")
    res.median_denoise_step_ms = summary.get("median_denoise_step_ms")
    if res.missing_perf_dumps:
        res.notes.append(
            f"{res.missing_perf_dumps}/{res.measurement_count} server perf dump(s) missing or "
            "unreadable: server timings cover the rest"
        )


def synthetic_image(width: int, height: int) -> bytes:
    """A deterministic PNG for image-conditioned cases when the suite gives no test image."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack(
        [
            (x * 255 // max(1, width - 1)),
            (y * 255 // max(1, height - 1)),
            ((x + y) * 127 // max(1, width + height - 2)),
        ],
        axis=-1,
    ).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


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
