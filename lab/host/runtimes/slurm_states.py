"""What Slurm's tools say, in the lab's terms: a job's state (from squeue, scontrol or sacct
lines), Slurm's durations, the lab's job comment, and what an ended job means for the attempt
(verdict). No commands run here: slurm.py asks, this module reads the answers."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from lab.contract import Outcome
from lab.host.runtimes.base import SandboxExit

COMMENT_TAG = "nightly-lab"
# Where a job still is. COMPLETING counts: its processes may still be on the node.
# fmt: off
ACTIVE_STATES = frozenset({
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING",
    "STAGE_OUT", "RESIZING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
})
# fmt: on
TIME_STATES = frozenset({"TIMEOUT", "DEADLINE"})
# A normal end: the exit code and the result file decide.
EXIT_REASONS = frozenset({"None", "NonZeroExitCode", ""})
_SCONTROL_KEY = re.compile(r"\s(?=[A-Za-z][\w/:]*=)")


# squeue's and sacct's output formats, here beside the code that reads them.
SQUEUE_FORMAT = "%i|%T|%r|%N|%l"
SACCT_FIELDS = "JobID,State,ExitCode,NodeList,Timelimit,Reason"


@dataclass
class JobState:
    """One job as Slurm describes it (squeue, scontrol or sacct)."""

    job_id: str
    state: str  # PENDING, RUNNING, COMPLETED, TIMEOUT, … ("CANCELLED by 0" → CANCELLED)
    reason: str = ""
    nodes: str = ""
    time_limit_s: float | None = None  # None: UNLIMITED or unknown
    exit_code: int | None = None  # ExitCode's first half
    signal: int | None = None  # ExitCode's second half
    source: str = "squeue"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


def parse_duration(text: str) -> float | None:
    """Slurm's `[D-]HH:MM:SS`, `MM:SS` or minutes, in seconds; None for UNLIMITED and the like."""
    text = text.strip()
    days = 0
    if "-" in text:
        d, _, text = text.partition("-")
        if not d.isdigit():
            return None
        days = int(d)
    parts = text.split(":")
    if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
        return None
    nums = [int(p) for p in parts]
    if len(nums) == 1:  # minutes
        return days * 86400 + nums[0] * 60.0
    while len(nums) < 3:
        nums.insert(0, 0)
    h, m, s = nums
    return days * 86400 + h * 3600 + m * 60 + s + 0.0


def format_time_limit(seconds: float) -> str:
    """sbatch --time for at least `seconds`: whole minutes (Slurm's unit), `D-HH:MM:00`."""
    minutes = max(1, math.ceil(seconds / 60.0))
    d, rest = divmod(minutes, 24 * 60)
    h, m = divmod(rest, 60)
    return f"{d}-{h:02d}:{m:02d}:00"


def parse_scontrol(line: str) -> dict[str, str]:
    """`scontrol show job -o` → {key: value}. Values may hold spaces (Command=script args)."""
    out: dict[str, str] = {}
    for item in _SCONTROL_KEY.split(line.strip()):
        key, sep, value = item.partition("=")
        if sep:
            out[key] = value
    return out


def exit_pair(text: str) -> tuple[int | None, int | None]:
    code, _, sig = text.partition(":")
    return (int(code) if code.isdigit() else None, int(sig) if sig.isdigit() else None)


def job_from_scontrol(fields: dict[str, str]) -> JobState:
    code, sig = exit_pair(fields.get("ExitCode", ""))
    return JobState(
        job_id=fields.get("JobId", ""),
        state=fields.get("JobState", "UNKNOWN").split()[0],
        reason=fields.get("Reason", ""),
        nodes=fields.get("NodeList", "") if fields.get("NodeList") != "(null)" else "",
        time_limit_s=parse_duration(fields.get("TimeLimit", "")),
        exit_code=code,
        signal=sig,
        source="scontrol",
    )


def parse_comment(comment: str) -> dict[str, str] | None:
    """The fields of a lab job's comment; None for any other job's."""
    parts = comment.strip().split(";")
    if not parts or parts[0] != COMMENT_TAG:
        return None
    return dict(p.partition("=")[::2] for p in parts[1:] if "=" in p)


def jobs_from_squeue(text: str) -> dict[str, JobState]:
    """squeue's SQUEUE_FORMAT lines → {job id: state}."""
    states: dict[str, JobState] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 5:
            continue
        job_id, state, reason, nodes, limit = (p.strip() for p in parts[:5])
        states[job_id] = JobState(job_id, state.split()[0], reason, nodes, parse_duration(limit))
    return states


def job_from_sacct(text: str, job_id: str) -> JobState | None:
    """sacct's SACCT_FIELDS lines (-P) → the state of `job_id`, if listed."""
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) >= 6 and parts[0] == job_id:
            code, sig = exit_pair(parts[2])
            return JobState(
                job_id,
                parts[1].split()[0],
                parts[5],
                parts[3],
                parse_duration(parts[4]),
                code,
                sig,
                source="sacct",
            )
    return None


def verdict(job: JobState, cancelled_by_us: bool) -> SandboxExit:
    """What an ended job means for the attempt (the result file, if any, is read afterwards).

    COMPLETED/FAILED: the exit code decides. TIMEOUT: `timeout`, with Slurm's reason. A node that
    failed, a preemption, a cancel by someone else: `infra_error` with Slurm's reason (the ladder
    retries an infra_error once). Cancelled by us: the run is stopping."""
    where = f" on {job.nodes}" if job.nodes else ""
    why = f" (reason: {job.reason})" if job.reason and job.reason != "None" else ""
    said = f"Slurm: job {job.job_id} {job.state}{where}{why}"
    code = job.exit_code
    if job.signal:  # killed by a signal: as a shell says it, 128 + N
        code = 128 + job.signal
    if job.state in ("COMPLETED", "FAILED"):  # the result file, if any, decides
        return SandboxExit(exit_code=code, reason="" if job.reason in EXIT_REASONS else said)
    if job.state == "OUT_OF_MEMORY":
        return SandboxExit(exit_code=code, oom_killed=True, reason=f"{said}: host memory limit")
    if job.state in TIME_STATES:
        limit = f", time limit {format_time_limit(job.time_limit_s)}" if job.time_limit_s else ""
        return SandboxExit(
            exit_code=None, reason=f"{said}{limit}: Slurm ended the job", outcome=Outcome.timeout
        )
    if job.state == "CANCELLED" and cancelled_by_us:
        return SandboxExit(exit_code=None, reason=f"{said}: cancelled by the lab")
    if job.state == "CANCELLED":
        said += ": cancelled by someone else (scancel or an admin), not by the lab"
    return SandboxExit(exit_code=None, reason=said, outcome=Outcome.infra_error)
