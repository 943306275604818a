"""What one Slurm submission is: the sbatch line, the job's comment and environment, and the
files written beside the attempt's spec for the node side (slurm_job.py): the batch script and
the sandbox request. Secrets travel in the job's environment; the files name them only."""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from lab.config import SlurmSettings
from lab.files import write_atomic, write_json_atomic
from lab.host.runtimes.base import SandboxRequest, lab_source_dir, sandbox_name
from lab.host.runtimes.slurm_states import COMMENT_TAG, format_time_limit
from lab.redact import is_secret_name

REQUEST_FILE = "slurm-request.json"  # what the job's node side reads (no secret values)
SCRIPT_FILE = "slurm-job.sh"
NODE_RECORD_FILE = "slurm-node.json"  # what the node side saw: node, granted GPUs and from where
OUTPUT_PATTERN = "slurm-%j.out"  # the job's own stdout/stderr, beside its spec
# A job's start-up on its node (a container, imports) on top of the attempt's own bound.
JOB_OVERHEAD_S = 120.0


def job_comment(req: SandboxRequest, host: str | None) -> str:
    """`nightly-lab;run=…;case=…;attempt=…[;host=…]`: no spaces, so Slurm's tools keep it whole."""
    words = [COMMENT_TAG, f"run={req.run_id}", f"case={req.case_id}", f"attempt={req.attempt}"]
    if host:
        words.append(f"host={host}")
    return ";".join(re.sub(r"[\s;]+", "_", w) for w in words)


def sbatch_argv(
    settings: SlurmSettings,
    req: SandboxRequest,
    script: Path,
    comment: str,
) -> list[str]:
    """The sbatch line of one attempt. The suite's sbatch_args come last, so they win."""
    attempt_dir = Path(req.spec_path).parent
    argv = [
        "sbatch",
        "--parsable",
        f"--job-name={sandbox_name(req.run_id, req.case_id, req.attempt)}",
        f"--comment={comment}",
        f"--output={attempt_dir / OUTPUT_PATTERN}",
        f"--chdir={attempt_dir}",
        "--nodes=1",
        "--ntasks=1",
        # Slurm, not the lab, retries nothing: a lost node is the attempt's infra_error.
        "--no-requeue",
        "--export=ALL",  # the secrets the sandbox needs travel here, not in a file
    ]
    if req.time_limit_s:
        argv.append(f"--time={format_time_limit(req.time_limit_s + JOB_OVERHEAD_S)}")
    if settings.partition:
        argv.append(f"--partition={settings.partition}")
    if req.gpu_count > 0:
        kind = f"{settings.gpu_type}:" if settings.gpu_type else ""
        if settings.gpu_option == "gpus":
            argv.append(f"--gpus={kind}{req.gpu_count}")
        else:
            argv.append(f"--gres=gpu:{kind}{req.gpu_count}")
    return [*argv, *settings.sbatch_args, str(script)]


@dataclass
class NodeRequest:
    """slurm-request.json: the host's sandbox request as the job's node side rebuilds it. Its
    env holds no secrets: `secret_env` names them, and their values come from the job's env."""

    sandbox: str  # docker | netns: what runs `lab case` on the node
    request: SandboxRequest
    secret_env: list[str] = field(default_factory=list)
    schema: int = 1


_NODE_REQUEST = TypeAdapter(NodeRequest)


def node_request(req: SandboxRequest, sandbox: str) -> dict[str, Any]:
    """The request file's content (a dump of NodeRequest); secrets by name only."""
    public = {k: v for k, v in req.env.items() if not is_secret_name(k)}
    node = NodeRequest(
        sandbox=sandbox,
        request=replace(req, env=public),
        secret_env=sorted(k for k in req.env if is_secret_name(k)),
    )
    dumped: dict[str, Any] = _NODE_REQUEST.dump_python(node, mode="json")
    return dumped


def load_node_request(data: object) -> NodeRequest:
    """The request file's content back, validated (pydantic's ValidationError is a ValueError)."""
    return _NODE_REQUEST.validate_python(data)


def job_script(python: str, request_path: Path, pythonpath: Path | None) -> str:
    """The batch script: the node side of the lab, nothing else (secrets come in the env)."""
    lines = [
        "#!/bin/sh",
        "# nightly-lab: one case attempt as a Slurm job (lab/host/runtimes/slurm.py). Secrets",
        "# arrive in the job's environment (sbatch --export=ALL), never in this file.",
    ]
    if pythonpath is not None:  # the host's own interpreter: import the very lab the host runs
        path = shlex.quote(str(pythonpath))
        lines.append(f'export PYTHONPATH={path}"${{PYTHONPATH:+:$PYTHONPATH}}"')
    lines.append(f"exec {shlex.join(node_command(python, request_path))}")
    return "\n".join(lines) + "\n"


def node_python(settings: SlurmSettings) -> tuple[str, Path | None]:
    """The nodes' interpreter, and the lab source to put first on its path (the host's own)."""
    if settings.python:
        return settings.python, None
    return sys.executable, lab_source_dir()


def node_command(python: str, request_path: Path) -> list[str]:
    """What a job runs on its node: the node side (slurm_job.py) with the request file."""
    return [python, "-m", "lab.host.runtimes.slurm_job", str(request_path)]


def write_job_files(settings: SlurmSettings, req: SandboxRequest) -> Path:
    """The request and the batch script beside the attempt's spec; the script's path."""
    attempt_dir = Path(req.spec_path).parent
    attempt_dir.mkdir(parents=True, exist_ok=True)
    request_path = attempt_dir / REQUEST_FILE
    write_json_atomic(request_path, node_request(req, settings.sandbox))
    python, path = node_python(settings)
    script = attempt_dir / SCRIPT_FILE
    write_atomic(script, job_script(python, request_path, path))
    script.chmod(0o755)
    return script


def submit_env(req: SandboxRequest) -> dict[str, str]:
    """sbatch's environment, which the job inherits: the host's, plus the request's secrets;
    without the host's GPU selection (Slurm sets the job's own) or an enclosing job's ids."""
    drop = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith(("SLURM_JOB", "SLURM_GPUS", "SBATCH_"))
    }
    env.update({k: v for k, v in req.env.items() if is_secret_name(k)})
    return env
