"""The slurm runtime: each case attempt is one Slurm batch job. The host stays where it is: it
submits, follows the job's state, and reads the result `lab case` wrote in the run directory,
which lies on a filesystem the nodes share. On its node the job runs slurm_job.py, which starts
the same sandbox as a local run (docker or netns, `slurm.sandbox` in the suite) around
`lab case`, with the GPUs Slurm granted. Placement is Slurm's: the lab packs nothing here, it
only bounds how many jobs it has in flight (`slurm.max_jobs`). A ladder climbs across jobs:
each rung is a new submission.

Why the command-line tools (sbatch, squeue, scontrol, scancel, sacct) and not slurmrestd: every
Slurm site has them on its login nodes, with the user's own munge credentials, while the REST
API needs slurmrestd running plus a JWT set-up that few sites enable. The tools are polled, not
waited on: one `squeue` for all of a run's jobs every `slurm.poll_s`; when a job has ended,
`scontrol show job` gives its exit code and Slurm's reason (it needs no accounting database,
and knows a job for MinJobAge, 300 s by default, after it ends); `sacct` is asked only when
scontrol has forgotten the job, and only where accounting exists.

Finding a run's jobs again: the job name is the sandbox name (`lab-<run>-<case>-a<n>`) and the
comment holds `nightly-lab;run=…;case=…;attempt=…;host=<hostname:pid:start>`. Ctrl-C cancels
the run's jobs by name; `lab clean` cancels this user's lab jobs whose host process is gone.
Never all jobs of the user. Secrets reach a job only through its environment (sbatch
--export=ALL); the files written to the shared directory name them, never hold them.

Just over 450 lines: job states and submission already live in slurm_states.py and
slurm_submit.py; what is left is the runtime's one object, its poll loop and its clean-up."""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.config import SlurmSettings
from lab.contract import RESULT_FILE, Outcome
from lab.errors import LabError, RuntimeUnavailable
from lab.files import read_json
from lab.host.runtimes.base import (
    LOG_TAIL_LINES,
    SandboxExit,
    SandboxInfraError,
    SandboxRequest,
    host_alive,
    host_identity,
    read_tail,
    sandbox_name,
)
from lab.host.runtimes.slurm_states import (
    SACCT_FIELDS,
    SQUEUE_FORMAT,
    JobState,
    job_from_sacct,
    job_from_scontrol,
    jobs_from_squeue,
    parse_comment,
    parse_scontrol,
    verdict,
)
from lab.host.runtimes.slurm_submit import (
    JOB_OVERHEAD_S,
    NODE_RECORD_FILE,
    OUTPUT_PATTERN,
    REQUEST_FILE,
    SCRIPT_FILE,
    job_comment,
    node_command,
    node_python,
    sbatch_argv,
    submit_env,
    write_job_files,
)

# Slurm checks time limits about every 30 s and then waits KillWait: give it the first word.
ENFORCE_SLACK_S = 180.0
CANCEL_WAIT_S = 90.0  # after scancel: until the job has left the node (KillWait, epilog)
SLURM_CMD_TIMEOUT_S = 60.0
POLL_FAILURE_LIMIT_S = 300.0  # squeue failing this long: the attempt is an infra_error


# --- talking to Slurm ----------------------------------------------------------------------------
def slurm_cmd(
    argv: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a Slurm tool. Its own session: a Ctrl-C at the terminal reaches the lab, which then
    cancels its jobs, and never kills an sbatch half-way through."""
    try:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=SLURM_CMD_TIMEOUT_S,
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except FileNotFoundError as e:
        raise RuntimeUnavailable(
            f"{argv[0]} is not on PATH: the slurm runtime needs Slurm's client tools "
            "(Debian: apt-get install slurm-client) and the cluster's slurm.conf (SLURM_CONF)."
        ) from e
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SandboxInfraError(f"slurm: `{shlex.join(argv)}` failed: {e}") from e


def _said(done: subprocess.CompletedProcess[str]) -> str:
    return (done.stderr or done.stdout or "").strip() or f"exit code {done.returncode}"


def _uid() -> str:
    return str(os.getuid())


# --- the sandbox ---------------------------------------------------------------------------------
@dataclass
class SubmittedJob:
    job_id: str
    name: str
    argv: list[str]
    attempt_dir: Path
    submitted_at: float = field(default_factory=time.monotonic)

    @property
    def output(self) -> Path:
        return self.attempt_dir / OUTPUT_PATTERN.replace("%j", self.job_id)


class SlurmSandbox:
    """One attempt's Slurm job, as seen from the host."""

    def __init__(self, runtime: SlurmRuntime, job: SubmittedJob, description: dict[str, object]):
        self.runtime = runtime
        self.job = job
        self.name = job.name
        self._description = description
        self._exit: SandboxExit | None = None
        self._final: JobState | None = None
        self._cancelled = False
        self._stopped = threading.Event()

    def log_tail(self) -> list[str]:
        return read_tail(self.job.output, LOG_TAIL_LINES)

    def wait(self, timeout_s: float | None) -> SandboxExit:
        """Until the job has ended. The clock runs from when the job runs (queueing is Slurm's
        business); the job's own time limit, enforced by Slurm, comes first."""
        if self._exit is not None:
            return self._exit
        rt = self.runtime
        running_since: float | None = None
        failing_since: float | None = None
        while True:
            try:
                job = rt.job_state(self.job.job_id)
                failing_since = None
            except SandboxInfraError as e:  # slurmctld busy or restarting: keep asking a while
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > POLL_FAILURE_LIMIT_S:
                    return self._remember(
                        SandboxExit(
                            exit_code=None,
                            reason=f"cannot follow job {self.job.job_id}: {e}",
                            outcome=Outcome.infra_error,
                            log_tail=self.log_tail(),
                        )
                    )
                job = JobState(self.job.job_id, "PENDING" if running_since is None else "RUNNING")
            if job is None or not job.active:
                ended = self._ended()
                if ended is not None:
                    return self._remember(ended)
                job = JobState(self.job.job_id, "RUNNING")  # squeue lagged behind scontrol
            now = time.monotonic()
            if job.state == "PENDING":
                waited = now - self.job.submitted_at
                limit = rt.settings.pending_timeout_s
                if limit is not None and waited > limit:
                    return SandboxExit(
                        exit_code=None,
                        reason=f"Slurm: job {job.job_id} still PENDING after {waited:.0f} s "
                        f"(reason: {job.reason or 'none given'})",
                        outcome=Outcome.infra_error,
                    )
            elif running_since is None:
                running_since = now
            if running_since is not None and timeout_s is not None:
                allowed = max(timeout_s + JOB_OVERHEAD_S, job.time_limit_s or 0.0)
                if now - running_since > allowed + ENFORCE_SLACK_S:
                    return SandboxExit(
                        exit_code=None,
                        reason=f"Slurm job {job.job_id} still running after "
                        f"{now - running_since:.0f} s (its limit was not enforced)",
                        log_tail=self.log_tail(),
                    )
            if self._stopped.wait(rt.settings.poll_s):
                self._stopped.clear()  # stop() cancelled it: look again at once

    def _ended(self) -> SandboxExit | None:
        """How the job ended (None: scontrol says it is still active after all)."""
        job = self.runtime.final_state(self.job.job_id)
        if job is not None and job.active:
            return None
        self._final = job
        self.runtime.note_node_record(self.job.attempt_dir)
        if job is None:  # Slurm forgot it (no accounting): the result file is all there is
            if (self.job.attempt_dir / RESULT_FILE).exists():
                sx = SandboxExit(exit_code=None)  # the host reads the result
            else:
                sx = SandboxExit(
                    exit_code=None,
                    reason=f"Slurm no longer knows job {self.job.job_id} and it left no result",
                    outcome=Outcome.infra_error,
                )
        else:
            sx = verdict(job, self._cancelled)
        sx.log_tail = self.log_tail()
        return sx

    def _remember(self, sx: SandboxExit) -> SandboxExit:
        self._exit = sx
        return sx

    def stop(self, grace_s: float = 5.0) -> None:
        """Cancel the job by its name (this run's, this attempt's), and wait until it has left
        its node, so that nothing of it is left when this returns."""
        if self._final is not None and not self._final.active:
            return
        self._cancelled = True
        if self._exit is None:
            self._exit = SandboxExit(
                exit_code=None, reason=f"job {self.job.job_id} cancelled by the lab"
            )
        try:
            self.runtime.cancel_names([self.name])
        except SandboxInfraError as e:  # said, not raised: stop() also runs in interrupt threads
            self._exit.reason += f"; {e.reason}"
            return
        self._stopped.set()
        deadline = time.monotonic() + max(grace_s, 0.0) + CANCEL_WAIT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(SandboxInfraError):
                job = self.runtime.job_state(self.job.job_id, fresh=True)
                if job is None or not job.active:
                    self._final = self.runtime.final_state(self.job.job_id) or job
                    break
            time.sleep(0.25)
        else:  # said, not raised: stop() also runs in the interrupt's threads
            self._exit.reason += f"; still active {CANCEL_WAIT_S:g} s after scancel"
        if self._exit.exit_code is None and not self._exit.log_tail:
            self._exit.log_tail = self.log_tail()

    def describe(self) -> dict[str, object]:
        return {**self._description, "job_id": self.job.job_id}

    def repro_command(self) -> str:
        return shlex.join(self.job.argv)


# --- the runtime ---------------------------------------------------------------------------------
class SlurmRuntime:
    name = "slurm"
    places_work = False  # Slurm places the jobs; the lab only bounds how many are in flight

    def __init__(self, settings: SlurmSettings | None = None) -> None:
        self.settings = settings or SlurmSettings.model_validate({})
        self._checked = False
        self._lock = threading.Lock()
        self._watched: set[str] = set()
        self._states: dict[str, JobState] = {}
        self._polled: set[str] = set()  # the ids the latest squeue asked about
        self._polled_at = -math.inf
        self._image_ids: dict[str, str] = {}  # image → ID, as the nodes reported them

    # -- checks --------------------------------------------------------------------------------
    def check(self) -> None:
        if self._checked:
            return
        for tool in ("sbatch", "squeue", "scontrol", "scancel"):
            if shutil.which(tool) is None:
                raise RuntimeUnavailable(
                    f"The slurm runtime needs Slurm's client tools; {tool} is not on PATH. "
                    "Install them (Debian: apt-get install slurm-client munge) with the "
                    "cluster's slurm.conf (/etc/slurm, or SLURM_CONF) and munge key, or use "
                    "RUNTIME=docker / netns."
                )
        try:
            done = slurm_cmd(["scontrol", "ping"])
        except SandboxInfraError as e:  # a hung controller: this runtime cannot be used now
            raise RuntimeUnavailable(f"No Slurm controller answers: {e.reason}") from e
        if done.returncode != 0 or "UP" not in done.stdout:
            raise RuntimeUnavailable(
                f"No Slurm controller answers (`scontrol ping`: {_said(done)}). Check "
                f"SLURM_CONF ({os.environ.get('SLURM_CONF', '/etc/slurm/slurm.conf')}) and "
                "that munged runs here."
            )
        self._checked = True

    def check_out_root(self, root: Path) -> None:
        """Run directories must be where the nodes can read specs and write results."""
        shared = self.settings.shared_dir
        if shared is None:
            return
        shared_path = Path(shared).resolve()
        if not shared_path.is_dir():
            raise LabError(f"slurm.shared_dir {shared} is not a folder on this host")
        if not Path(root).resolve().is_relative_to(shared_path):
            raise LabError(
                f"--out {root} is not under slurm.shared_dir {shared_path}: the nodes would not "
                f"see the run. Use --out {shared_path}/runs (or another folder under it)."
            )

    # -- what a job is -------------------------------------------------------------------------
    def plan(self, req: SandboxRequest) -> dict[str, object]:
        attempt_dir = Path(req.spec_path).parent
        script = attempt_dir / SCRIPT_FILE
        python, path = node_python(self.settings)
        return {
            "runtime": self.name,
            "name": sandbox_name(req.run_id, req.case_id, req.attempt),
            "sbatch": sbatch_argv(self.settings, req, script, job_comment(req, None)),
            "script": str(script),
            "node_command": node_command(python, attempt_dir / REQUEST_FILE),
            "node_sandbox": self.settings.sandbox,
            "pythonpath": str(path) if path else None,
            "gpus": f"{req.gpu_count} granted by Slurm" if req.gpu_count else "none",
            "output": str(attempt_dir / OUTPUT_PATTERN),
            "env_names": sorted(req.env),
        }

    def repro_command(self, req: SandboxRequest) -> str:
        """The sbatch line (the request and script it names are written next to the spec)."""
        script = write_job_files(self.settings, req)
        return shlex.join(sbatch_argv(self.settings, req, script, job_comment(req, None)))

    # -- Runtime -------------------------------------------------------------------------------
    def start(self, req: SandboxRequest) -> SlurmSandbox:
        self.check()
        name = sandbox_name(req.run_id, req.case_id, req.attempt)
        script = write_job_files(self.settings, req)
        argv = sbatch_argv(self.settings, req, script, job_comment(req, host_identity()))
        try:
            done = slurm_cmd(argv, env=submit_env(req))
        except SandboxInfraError:
            self.cancel_names([name])  # it may have gone through before the error
            raise
        job_id = done.stdout.strip().split(";")[0]  # --parsable: "id" or "id;cluster"
        if done.returncode != 0 or not job_id.isdigit():
            raise SandboxInfraError(f"sbatch refused the job: {_said(done)}")
        job = SubmittedJob(job_id, name, argv, Path(req.spec_path).parent)
        with self._lock:
            self._watched.add(job_id)
        return SlurmSandbox(self, job, {**self.plan(req), "sbatch": argv})

    def image_id(self, image: str | None) -> str | None:
        """The ID a node reported for this image (images live on the nodes, not here)."""
        return self._image_ids.get(image or "")

    def note_node_record(self, attempt_dir: Path) -> None:
        with contextlib.suppress(OSError, ValueError):
            record = read_json(attempt_dir / NODE_RECORD_FILE)
            if record.get("image") and record.get("image_id"):
                self._image_ids[str(record["image"])] = str(record["image_id"])

    # -- following jobs ------------------------------------------------------------------------
    def job_state(self, job_id: str, fresh: bool = False) -> JobState | None:
        """The job as the latest squeue saw it (None: squeue no longer lists it). One squeue
        serves every job of the run: a caller refreshes it when it is older than poll_s."""
        with self._lock:
            self._watched.add(job_id)
            stale = time.monotonic() - self._polled_at >= self.settings.poll_s * 0.9
            if fresh or stale or job_id not in self._polled:  # a new job: ask about it now
                self._poll()
            return self._states.get(job_id)

    def _poll(self) -> None:
        ids = sorted(self._watched, key=int)
        done = slurm_cmd(
            ["squeue", f"--jobs={','.join(ids)}", "--states=all", "-h", "-o", SQUEUE_FORMAT]
        )
        if done.returncode != 0 and "Invalid job id" not in done.stderr:
            raise SandboxInfraError(f"squeue failed: {_said(done)}")
        states = jobs_from_squeue(done.stdout)
        self._states, self._polled = states, set(ids)
        self._polled_at = time.monotonic()
        # Ended (or forgotten) jobs stop costing a query; final_state() says how they ended.
        self._watched = {i for i, job in states.items() if job.active}

    def final_state(self, job_id: str) -> JobState | None:
        """The ended job's exit code and reason: scontrol, else sacct where accounting exists."""
        done = slurm_cmd(["scontrol", "show", "job", "-o", job_id])
        if done.returncode == 0 and done.stdout.strip():
            return job_from_scontrol(parse_scontrol(done.stdout.splitlines()[0]))
        done = slurm_cmd(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", SACCT_FIELDS])
        return job_from_sacct(done.stdout, job_id) if done.returncode == 0 else None

    # -- cancelling ----------------------------------------------------------------------------
    def cancel_names(self, names: list[str]) -> None:
        """scancel this user's jobs of these names: never all jobs of the user."""
        for name in names:
            done = slurm_cmd(["scancel", f"--user={_uid()}", f"--name={name}"])
            if done.returncode != 0:
                raise SandboxInfraError(f"scancel --name={name} failed: {_said(done)}")

    def lab_jobs(self) -> list[tuple[str, str, dict[str, str]]]:
        """(id, name, comment fields) of this user's active lab jobs."""
        done = slurm_cmd(["squeue", f"--user={_uid()}", "-h", "-o", "%i|%j|%k"])
        if done.returncode != 0:
            raise SandboxInfraError(f"squeue failed: {_said(done)}")
        jobs = []
        for line in done.stdout.splitlines():
            job_id, _, rest = line.partition("|")
            name, _, comment = rest.partition("|")
            fields = parse_comment(comment)
            if fields is not None:
                jobs.append((job_id.strip(), name.strip(), fields))
        return jobs

    def cleanup(self, run_id: str | None = None) -> list[str]:
        """Cancel the lab jobs runs left behind: all of one run, or (None) those of every run
        whose lab process is gone (`host=` in the comment), so a live run keeps its jobs."""
        try:
            self.check()
        except RuntimeUnavailable:
            return []
        try:
            doomed = [
                (job_id, name)
                for job_id, name, fields in self.lab_jobs()
                if (
                    fields.get("run") == run_id
                    if run_id is not None
                    else not host_alive(fields.get("host"))
                )
            ]
            if doomed:
                self.cancel_names(sorted({name for _, name in doomed}))
        except SandboxInfraError as e:
            raise LabError(f"cannot clean up Slurm jobs: {e.reason}") from None
        if not doomed:
            return []
        deadline = time.monotonic() + CANCEL_WAIT_S
        ids = {job_id for job_id, _ in doomed}
        while time.monotonic() < deadline:  # gone from the nodes, not only asked to go
            left = sorted(ids)  # unless squeue says otherwise
            with self._lock, contextlib.suppress(SandboxInfraError):
                self._watched |= ids
                self._poll()
                left = [i for i in ids if i in self._states and self._states[i].active]
            if not left:
                break
            time.sleep(0.5)
        return [f"slurm job {job_id} ({name})" for job_id, name in doomed]
