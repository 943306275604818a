"""The docker runtime's container settings, in one place (ContainerSpec): what docker.py creates,
what --dry-run and the manifest describe, and the `docker run` line a developer can repeat. No
engine calls: what needs the engine (the image's user, the nvidia runtime) comes as arguments."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docker.types import DeviceRequest

from lab.host import gpus as host_gpus
from lab.host.runtimes.base import (
    HOST_GPUS_ENV,
    LABEL_ATTEMPT,
    LABEL_CASE,
    LABEL_PREFIX,
    LABEL_RUN,
    SANDBOX_UID,
    SandboxRequest,
    host_identity,
    host_lab_case_command,
    lab_case_args,
    lab_source_dir,
    sandbox_name,
    with_pythonpath,
)
from lab.redact import is_secret_name, redact_env

LABEL_OWNER = f"{LABEL_PREFIX}.owner-uid"
LABEL_HOST = f"{LABEL_PREFIX}.host"  # hostname:pid:create_time of the lab process
HOST_IMAGE = "host"
HOST_EMPTY_IMAGE = "nightly-lab/host-empty:latest"
# /sbin is left out: with --init Docker mounts its docker-init there (and /sbin -> /usr/sbin).
HOST_DIRS = ("/usr", "/lib", "/lib64", "/bin", "/etc", "/opt")
NVIDIA_CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
NVIDIA_DRIVER_DIR = "/usr/local/nvidia"
TMPFS_OPTIONS = "rw,exec,nosuid,nodev,mode=1777"  # exec: triton and friends dlopen from /tmp


@dataclass
class ContainerSpec:
    """Every setting of one attempt's container, in one place: create, describe and repro."""

    name: str
    image: str
    command: list[str]
    user: str
    working_dir: str | None  # None: the image's own
    labels: dict[str, str]
    env: dict[str, str]
    mounts: list[tuple[str, str, bool]] = field(default_factory=list)  # source, target, ro
    devices: list[str] = field(default_factory=list)
    gpu_mode: str = "none"  # none | device-request | raw-devices
    gpu_ids: list[str] = field(default_factory=list)  # host indices, for a DeviceRequest
    read_only: bool = True
    shm_size: str | None = "2g"
    ipc_mode: str | None = None
    mem_limit_mib: int | None = None
    pids_limit: int = 4096
    notes: list[str] = field(default_factory=list)

    def create_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "image": self.image,
            "command": self.command,
            "name": self.name,
            "detach": True,
            "labels": self.labels,
            "environment": self.env,
            "user": self.user or None,
            "network_mode": "none",
            "init": True,  # forwards TERM to `lab case` and reaps orphaned server processes
            "privileged": False,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "pids_limit": self.pids_limit,
            # Binds, not the Mounts API: there a tmpfs /tmp loses mode 1777 or exec.
            "volumes": {
                src: {"bind": dst, "mode": "ro" if ro else "rw"} for src, dst, ro in self.mounts
            },
            "devices": [f"{d}:{d}:rwm" for d in self.devices],
        }
        if self.working_dir:
            kw["working_dir"] = self.working_dir
        if self.gpu_ids:
            kw["device_requests"] = [DeviceRequest(device_ids=self.gpu_ids, capabilities=[["gpu"]])]
        if self.read_only:
            kw["read_only"] = True
            kw["tmpfs"] = {"/tmp": TMPFS_OPTIONS}
        if self.ipc_mode:
            kw["ipc_mode"] = self.ipc_mode
        if self.shm_size and self.ipc_mode in (None, "private", "shareable"):
            kw["shm_size"] = self.shm_size
        if self.mem_limit_mib:
            kw["mem_limit"] = f"{self.mem_limit_mib}m"
            kw["memswap_limit"] = f"{self.mem_limit_mib}m"  # no swap: over the limit is an OOM
        return kw

    def describe(self) -> dict[str, object]:
        return {
            "runtime": "docker",
            "name": self.name,
            "image": self.image,
            "command": self.command,
            "network_mode": "none",
            "user": self.user or "the image's user",
            "working_dir": self.working_dir,
            "cap_drop": ["ALL"],
            "cap_add": [],
            "security_opt": ["no-new-privileges"],
            "privileged": False,
            "init": True,
            "read_only_root": self.read_only,
            "tmpfs": {"/tmp": TMPFS_OPTIONS} if self.read_only else {},
            "gpu_mode": self.gpu_mode,
            "gpus": self.gpu_ids or self.env.get(HOST_GPUS_ENV, ""),
            "devices": self.devices,
            "mounts": [{"source": s, "target": t, "read_only": ro} for s, t, ro in self.mounts],
            "shm_size": self.shm_size,
            "ipc_mode": self.ipc_mode,
            "mem_limit_mib": self.mem_limit_mib,
            "pids_limit": self.pids_limit,
            "labels": self.labels,
            "env": redact_env(self.env),
            "notes": self.notes,
        }

    def docker_run_argv(self) -> list[str]:
        """`docker run` with the same settings (no name: a repro must not clash with a run)."""
        argv = ["docker", "run", "--rm", "--network", "none", "--init"]
        argv += ["--user", self.user] if self.user else []
        argv += ["--workdir", self.working_dir] if self.working_dir else []
        argv += ["--cap-drop", "ALL"]
        argv += ["--security-opt", "no-new-privileges", "--pids-limit", str(self.pids_limit)]
        if self.ipc_mode:
            argv += ["--ipc", self.ipc_mode]
        if self.shm_size and self.ipc_mode in (None, "private", "shareable"):
            argv += ["--shm-size", self.shm_size]
        if self.mem_limit_mib:
            mem = f"{self.mem_limit_mib}m"
            argv += ["--memory", mem, "--memory-swap", mem]
        if self.read_only:
            argv += ["--read-only", "--tmpfs", f"/tmp:{TMPFS_OPTIONS}"]
        for src, dst, ro in self.mounts:
            argv += ["-v", f"{src}:{dst}:{'ro' if ro else 'rw'}"]
        for dev in self.devices:
            argv += ["--device", dev]
        if self.gpu_ids:
            argv += ["--gpus", f'"device={",".join(self.gpu_ids)}"']
        for k, v in self.env.items():
            argv += ["-e", k if is_secret_name(k) else f"{k}={v}"]  # secrets: from the caller
        for k, v in self.labels.items():
            argv += ["--label", f"{k}={v}"]
        return [*argv, self.image, *self.command]


def build_container_spec(
    req: SandboxRequest, image: str, image_user: str, nvidia_runtime: bool
) -> ContainerSpec:
    """The container for `req`, given what only the engine knows: the user the image runs as
    ("" for the image's own) and whether the engine has the nvidia runtime."""
    host_mode = req.image == HOST_IMAGE
    notes: list[str] = []
    env = dict(req.env)
    mounts: list[tuple[str, str, bool]] = []

    if host_mode:
        command = list(req.command) if req.command else host_lab_case_command(req)
        user, *_ = default_user()
        for d in HOST_DIRS:
            if os.path.exists(d):
                _add_mount(mounts, d, read_only=True)
        for d in (sys.base_prefix, str(lab_source_dir()), sys.prefix):
            if not _covered(mounts, d):
                _add_mount(mounts, d, read_only=True)
        env = with_pythonpath(env, lab_source_dir())
        env.setdefault("HOME", "/tmp")  # the sandbox user has no home in the host's files
        notes.append(f"image 'host': {HOST_EMPTY_IMAGE} + the host's folders, read-only")
    else:
        command = list(req.command) if req.command else ["lab", *lab_case_args(req)]
        user = image_user
        if req.read_only_root:
            env.setdefault("HOME", "/tmp")  # caches go to the tmpfs, not the read-only root

    _add_mount(mounts, str(req.run_dir), read_only=False)
    _add_mount(mounts, str(req.config_dir), read_only=True)
    if req.model_cache is not None:
        _add_mount(mounts, str(req.model_cache), read_only=True)

    devices: list[str] = []
    gpu_ids: list[str] = []
    gpu_mode = "none"
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    env[HOST_GPUS_ENV] = ",".join(str(g) for g in req.gpus)
    visible = env.get("CUDA_VISIBLE_DEVICES", "")
    if req.gpus and visible and all(v.strip().isdigit() for v in visible.split(",")):
        # Host indices mean nothing inside, where CUDA numbers the GPUs 0..k-1 (UUIDs pass).
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(req.gpus)))
    if not req.gpus:
        env["NVIDIA_VISIBLE_DEVICES"] = "void"  # an nvidia default runtime adds none
    elif nvidia_runtime:
        gpu_mode, gpu_ids = "device-request", [str(g) for g in req.gpus]
    else:
        gpu_mode = "raw-devices"
        minors = host_gpus.minor_numbers(req.gpus)
        devices = [f"/dev/nvidia{minors[g]}" for g in req.gpus]
        devices += [d for d in NVIDIA_CONTROL_DEVICES if os.path.exists(d)]
        if os.path.isdir(NVIDIA_DRIVER_DIR) and not _covered(mounts, NVIDIA_DRIVER_DIR):
            _add_mount(mounts, NVIDIA_DRIVER_DIR, read_only=True)
        notes.append("raw GPU devices: CUDA inside numbers them 0..k-1 in PCI bus order")

    labels = {
        LABEL_RUN: req.run_id,
        LABEL_CASE: req.case_id,
        LABEL_ATTEMPT: str(req.attempt),
        LABEL_OWNER: str(os.getuid()),
        LABEL_HOST: host_identity(),
    }
    return ContainerSpec(
        name=sandbox_name(req.run_id, req.case_id, req.attempt),
        image=image,
        command=command,
        user=user,
        working_dir=_working_dir(req),
        labels=labels,
        env=env,
        mounts=mounts,
        devices=devices,
        gpu_mode=gpu_mode,
        gpu_ids=gpu_ids,
        read_only=req.read_only_root,
        shm_size=req.shm_size,
        ipc_mode=req.ipc_mode,
        mem_limit_mib=req.memory_limit_mib,
        pids_limit=req.pids_limit,
        notes=notes,
    )


def default_user() -> tuple[str, int, int]:
    """A non-root user: the host's own when it isn't root, else uid/gid 1000."""
    if os.getuid() != 0:
        return f"{os.getuid()}:{os.getgid()}", os.getuid(), os.getgid()
    return f"{SANDBOX_UID}:{SANDBOX_UID}", SANDBOX_UID, SANDBOX_UID


def _working_dir(req: SandboxRequest) -> str | None:
    """The attempt's folder, so files a server writes to its cwd are kept with the attempt.
    Not under the tmpfs /tmp: a working dir there makes Docker drop the tmpfs's mode 1777."""
    cwd = Path(req.spec_path).parent
    if req.read_only_root and cwd.is_relative_to("/tmp"):
        return None
    return str(cwd)


def _covered(mounts: list[tuple[str, str, bool]], path: str) -> bool:
    return any(Path(path).is_relative_to(target) for _, target, _ in mounts)


def _add_mount(mounts: list[tuple[str, str, bool]], path: str, read_only: bool) -> None:
    """Bind `path` at the same path; one mount per target, read-write wins over read-only."""
    path = os.path.abspath(path)
    for i, (_, target, ro) in enumerate(mounts):
        if target == path:
            mounts[i] = (path, path, ro and read_only)
            return
    mounts.append((path, path, read_only))
