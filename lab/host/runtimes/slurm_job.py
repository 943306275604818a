"""The node side of the slurm runtime: what one Slurm job runs,
`python -m lab.host.runtimes.slurm_job ATTEMPT_DIR/slurm-request.json`.

It finds the GPUs Slurm granted, writes them into the attempt spec together with what needs the
node's GPUs (UUIDs, the VRAM ballast: lab/host/vram.py), starts the sandbox a local run would
(docker or netns, by registry name) around `lab case`, and exits with its exit code. SIGTERM
(scancel, a time limit, a preemption) stops that sandbox TERM → KILL well within Slurm's
KillWait, so nothing of the attempt is left on the node; a container is not in the job's process
tree, so only this stop removes it."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from lab.contract import AttemptSpec, load_spec
from lab.errors import LabError
from lab.files import read_json, write_json_atomic
from lab.host.gpus import GpuInfo, inventory, visible_devices
from lab.host.runtimes.base import Runtime, Sandbox, SandboxExit, SandboxRequest
from lab.host.runtimes.registry import get_runtime
from lab.host.runtimes.slurm_submit import NODE_RECORD_FILE, NodeRequest, load_node_request
from lab.host.vram import plan_vram

STOP_GRACE_S = 5.0  # Slurm's KillWait is 30 s by default: stop well before its SIGKILL
EXIT_NODE_ERROR = 1
SLURM_GPU_VARS = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE")


def say(msg: str) -> None:
    print(f"slurm_job: {msg}", file=sys.stderr, flush=True)


def _unknown_gpu(index: int) -> GpuInfo:
    return GpuInfo(index=index, name="unknown", uuid="", memory_total_mib=0.0)


def granted_gpus(env: Mapping[str, str], found: list[GpuInfo]) -> tuple[list[GpuInfo], str]:
    """The GPUs Slurm gave this job, and the variable that said so.

    CUDA_VISIBLE_DEVICES (set by Slurm's gres plugin, numbered as NVML numbers them inside the
    job, also under ConstrainDevices) or SLURM_JOB_GPUS name the devices; SLURM_GPUS_ON_NODE
    only counts them (GRES without device files Slurm recognizes): the first N NVML lists."""
    by_index = {g.index: g for g in found}
    by_uuid = {g.uuid: g for g in found if g.uuid}
    for var in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS"):
        items = [x.strip() for x in env.get(var, "").split(",") if x.strip()]
        if not items:
            continue
        infos = []
        for x in items:
            if x in by_uuid:
                infos.append(by_uuid[x])
            elif x.isdigit():
                infos.append(by_index.get(int(x)) or _unknown_gpu(int(x)))
            else:  # NoDevFiles, MIG names, …: not something this lab can place
                break
        else:
            return infos, var
    count = env.get("SLURM_GPUS_ON_NODE", "").strip()
    if count.isdigit() and int(count) > 0:
        n = int(count)
        return (found[:n] if len(found) >= n else [_unknown_gpu(i) for i in range(n)]), (
            "SLURM_GPUS_ON_NODE"
        )
    return [], "none"


def fill_spec(spec: AttemptSpec, infos: list[GpuInfo]) -> AttemptSpec:
    """The spec with the granted GPUs, and the VRAM ballast and flags planned for them (the
    host left these out: it does not know which GPUs, or what size, the node has)."""
    if spec.num_gpus == 0:
        return spec
    infos = infos[: spec.num_gpus]
    ballast, vram_args = plan_vram(spec.case.id, spec.vram_gib, infos, spec.frameworks)
    extra = {fw: [*spec.extra_args.get(fw, []), *vram_args.get(fw, [])] for fw in spec.frameworks}
    return spec.model_copy(
        update={
            "gpus": [g.index for g in infos],
            "gpu_uuids": [g.uuid for g in infos if g.uuid],
            "ballast": ballast,
            "extra_args": {k: v for k, v in extra.items() if v},
        }
    )


def build_request(node: NodeRequest, infos: list[GpuInfo]) -> SandboxRequest:
    """The host's request again, with this node's GPUs and the secrets from the job's env."""
    env = dict(node.request.env)
    env.update({k: os.environ[k] for k in node.secret_env if k in os.environ})
    gpus = [g.index for g in infos]
    env["CUDA_VISIBLE_DEVICES"] = visible_devices(infos, gpus)
    return replace(node.request, env=env, gpus=gpus, gpu_count=len(gpus))


def _record_image(record: Path, runtime: Runtime, image: str | None) -> None:
    """The image ID the node ran, for the host's results (the host cannot see node images)."""
    try:
        image_id = runtime.image_id(image)
    except Exception as e:  # the record is a nicety; the attempt goes on
        say(f"cannot read the image ID of {image}: {e}")
        return
    write_json_atomic(record, {**read_json(record), "image": image, "image_id": image_id})


def run_job(request_path: Path) -> int:
    node_request = load_node_request(read_json(request_path))
    spec_path = node_request.request.spec_path
    spec = load_spec(spec_path)
    infos, source = granted_gpus(os.environ, inventory()) if spec.num_gpus else ([], "none")
    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    say(
        f"job {os.environ.get('SLURM_JOB_ID', '?')} on {node}: {spec.case.id} attempt "
        f"{spec.attempt} ({spec.rung}), {node_request.sandbox} sandbox, GPUs "
        f"{[g.index for g in infos] or 'none'} (from {source})"
    )
    write_json_atomic(
        spec_path.parent / NODE_RECORD_FILE,
        {
            "job_id": os.environ.get("SLURM_JOB_ID"),
            "node": node,
            "hostname": socket.gethostname(),
            "sandbox": node_request.sandbox,
            "gpus": [g.index for g in infos],
            "gpu_uuids": [g.uuid for g in infos if g.uuid],
            "gpus_from": source,
            "slurm_env": {k: os.environ[k] for k in SLURM_GPU_VARS if k in os.environ},
            "started_at": time.time(),
        },
    )
    if len(infos) < spec.num_gpus:
        say(f"Slurm granted {len(infos)} GPU(s) ({source}); the attempt needs {spec.num_gpus}")
        return EXIT_NODE_ERROR
    spec = fill_spec(spec, infos)
    write_json_atomic(spec_path, spec.model_dump(mode="json"))
    req = build_request(node_request, infos[: spec.num_gpus])
    runtime = get_runtime(node_request.sandbox)
    runtime.check()

    # Install the handler before starting: a TERM during start must still stop the sandbox.
    stopping = threading.Event()
    box: list[Sandbox] = []

    def on_signal(signum: int, _frame: object) -> None:
        if stopping.is_set():
            return
        stopping.set()
        say(f"{signal.Signals(signum).name}: stopping the sandbox")
        if box:
            threading.Thread(target=box[0].stop, args=(STOP_GRACE_S,), daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    sandbox = runtime.start(req)
    box.append(sandbox)
    _record_image(spec_path.parent / NODE_RECORD_FILE, runtime, req.image)
    if stopping.is_set():
        sandbox.stop(STOP_GRACE_S)
    try:
        sx: SandboxExit = sandbox.wait(None)  # Slurm's time limit bounds the job
    finally:
        sandbox.stop(STOP_GRACE_S)
    for line in sx.log_tail:
        print(line, flush=True)
    if sx.reason:
        say(sx.reason)
    if sx.exit_code is None:
        return 128 + signal.SIGTERM if stopping.is_set() else EXIT_NODE_ERROR
    say(f"{runtime.name} sandbox exited with code {sx.exit_code}")
    return sx.exit_code


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m lab.host.runtimes.slurm_job REQUEST.json", file=sys.stderr)
        return 2
    try:
        return run_job(Path(argv[0]))
    except (LabError, OSError, ValueError, KeyError) as e:  # said in the job's output
        say(f"cannot run the attempt: {type(e).__name__}: {e}")
        return EXIT_NODE_ERROR


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
