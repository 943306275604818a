"""The docker runtime: one container per attempt, `network_mode="none"` (only loopback), run as a
non-root user with no capabilities. This is the one module that talks to the Docker SDK.

GPUs: with the engine's nvidia runtime, a DeviceRequest; without it (the GPU machines here have
no container toolkit), raw devices: /dev/nvidia<minor> of each GPU plus the control nodes and
the driver folder. Either way CUDA inside numbers the sandbox's GPUs 0..k-1 in PCI bus order:
with only /dev/nvidia3 present, CUDA can open one GPU and calls it device 0. NVML inside may
still list the others (it reads /proc/driver/nvidia) but cannot open them.

The `host` image: an empty image with the host's /usr /lib /lib64 /bin /etc /opt, its Python and
the lab checkout mounted read-only, so a machine with no images runs the host's own stack."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors  # binds `docker` too (docker.from_env, docker.DockerClient)
import requests
from docker.models.containers import Container
from docker.types import DeviceRequest

import lab
from lab.errors import LabError, RuntimeUnavailable
from lab.host import gpus as host_gpus
from lab.host.runtimes.base import (
    LABEL_ATTEMPT,
    LABEL_CASE,
    LABEL_PREFIX,
    LABEL_RUN,
    SANDBOX_UID,
    SandboxExit,
    SandboxInfraError,
    SandboxRequest,
    lab_case_args,
)
from lab.host.runtimes.local import (
    HOST_GPUS_ENV,
    LOG_TAIL_LINES,
    host_alive,
    host_identity,
    host_lab_case_command,
    lab_source_dir,
    sandbox_name,
    with_pythonpath,
)
from lab.redact import is_secret_name, redact_env

LABEL_OWNER = f"{LABEL_PREFIX}.owner-uid"
LABEL_HOST = f"{LABEL_PREFIX}.host"  # hostname:pid:create_time of the lab process
HOST_IMAGE = "host"
HOST_EMPTY_IMAGE = "nightly-lab/host-empty:latest"
DEFAULT_IMAGE = f"nightly-lab/reference:{lab.__version__}"
# /sbin is left out: with --init Docker mounts its docker-init there (and /sbin -> /usr/sbin).
HOST_DIRS = ("/usr", "/lib", "/lib64", "/bin", "/etc", "/opt")
NVIDIA_CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
NVIDIA_DRIVER_DIR = "/usr/local/nvidia"
TMPFS_OPTIONS = "rw,exec,nosuid,nodev,mode=1777"  # exec: triton and friends dlopen from /tmp
_ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


def _docker_host() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def connect(timeout_s: float = 15.0) -> docker.DockerClient:
    """A client for the engine, or RuntimeUnavailable saying what to do."""
    try:
        client = docker.from_env(timeout=max(1, math.ceil(timeout_s)))
        client.ping()
        return client
    except _ENGINE_ERRORS as e:
        cause = str(e)
        if "Permission denied" in cause or "PermissionError" in cause:
            raise RuntimeUnavailable(
                f"Permission denied on the Docker socket {_docker_host()}: this user may not "
                "talk to the engine. Add the user to the docker group (`sudo usermod -aG docker "
                "$USER`, then log in again), or run without Docker: RUNTIME=netns (as root) or "
                "RUNTIME=local."
            ) from e
        raise RuntimeUnavailable(
            f"The Docker engine is not answering at {_docker_host()} ({cause}). Start it: "
            "`make setup` (installs and starts it), `sudo systemctl start docker`, or "
            "`sudo dockerd &`; or run without Docker: RUNTIME=netns (as root) or RUNTIME=local."
        ) from e


def _image_missing(image: str) -> RuntimeUnavailable:
    return RuntimeUnavailable(
        f"Image {image} is not on this machine's Docker engine, and the lab never pulls. Build "
        "the lab's images with `make images`, or use the host's own environment (image "
        '"host", or RUNTIME=netns).'
    )


def _engine_fault(what: str, e: BaseException) -> SandboxInfraError:
    if isinstance(e, requests.exceptions.ConnectionError):  # stopped, restarting, socket gone
        return SandboxInfraError(
            f"docker: the engine at {_docker_host()} stopped answering ({what}: {e}). Once it "
            "is back, the next lab command (or `lab clean`) removes what this attempt left"
        )
    return SandboxInfraError(f"docker: {what} failed: {e}")


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


class DockerSandbox:
    """One attempt's container."""

    def __init__(self, client: docker.DockerClient, container: Container, spec: ContainerSpec):
        self.client = client
        self.container = container
        self.spec = spec
        self.name = spec.name
        self.id: str = container.id or ""
        self._exit: SandboxExit | None = None
        self._removed = False
        # The interrupt and the attempt's own `finally` may stop it at once: one does the work.
        self._stop_lock = threading.Lock()

    def _state(self) -> dict[str, Any]:
        try:
            return self.client.api.inspect_container(self.id)["State"]
        except docker.errors.NotFound as e:
            raise SandboxInfraError(f"docker: container {self.name} vanished while running") from e
        except _ENGINE_ERRORS as e:
            raise _engine_fault(f"inspecting {self.name}", e) from e

    def wait(self, timeout_s: float | None) -> SandboxExit:
        """Poll the container's state: an exit is noticed even if nobody reads its logs."""
        if self._exit is not None:
            return self._exit
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        delay = 0.02
        while True:
            state = self._state()
            if state.get("Status") in ("exited", "dead"):
                break
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return SandboxExit(
                    exit_code=None,
                    reason=f"{self.name} still running after {timeout_s:g} s",
                    log_tail=self.log_tail(),
                )
            time.sleep(delay if deadline is None else min(delay, max(deadline - now, 0.0)))
            delay = min(delay * 1.5, 0.25)
        oom = bool(state.get("OOMKilled"))
        reason = str(state.get("Error") or "")
        if oom:
            limit = f" (limit {self.spec.mem_limit_mib} MiB)" if self.spec.mem_limit_mib else ""
            reason = f"container killed by the kernel: out of host memory{limit}"
        self._exit = SandboxExit(
            exit_code=int(state.get("ExitCode", -1)),
            oom_killed=oom,
            reason=reason,
            log_tail=self.log_tail(),
        )
        return self._exit

    def logs(self, tail: int | str = "all") -> str:
        try:
            raw = self.client.api.logs(self.id, stdout=True, stderr=True, tail=tail)
        except _ENGINE_ERRORS as e:
            raise _engine_fault(f"reading the logs of {self.name}", e) from e
        return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> list[str]:
        with contextlib.suppress(SandboxInfraError):
            return self.logs(tail=lines).splitlines()[-lines:]
        return []

    def stop(self, grace_s: float = 5.0) -> None:
        """TERM, KILL after the grace period, then remove the container (idempotent)."""
        with self._stop_lock:
            self._stop(grace_s)

    def _stop(self, grace_s: float) -> None:
        if self._removed:
            return
        if self._exit is None:
            with contextlib.suppress(SandboxInfraError):
                if self._state().get("Status") not in ("exited", "dead"):
                    self._exit = SandboxExit(
                        exit_code=None, reason=f"{self.name} stopped by the host before it finished"
                    )
        try:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.stop(self.id, timeout=max(0, math.ceil(grace_s)))
            if self._exit is not None and self._exit.exit_code is None:
                self._exit.log_tail = self.log_tail()
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_container(self.id, v=True, force=True)
        except _ENGINE_ERRORS as e:
            raise _engine_fault(f"stopping {self.name}", e) from e
        self._removed = True

    def describe(self) -> dict[str, object]:
        return {**self.spec.describe(), "container_id": self.id}

    def repro_command(self) -> str:
        return shlex.join(self.spec.docker_run_argv())


class DockerRuntime:
    name = "docker"

    def __init__(self, client: docker.DockerClient | None = None, timeout_s: float = 15.0):
        self._client = client
        self.timeout_s = timeout_s
        self._nvidia_runtime: bool | None = None
        self._image_users: dict[str, tuple[str, int | None, int | None]] = {}

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect(self.timeout_s)
        return self._client

    def check(self) -> None:
        self.client  # noqa: B018 - connecting and pinging is the check

    # -- settings --------------------------------------------------------------------------------
    def has_nvidia_runtime(self) -> bool:
        if self._nvidia_runtime is None:
            try:
                self._nvidia_runtime = "nvidia" in (self.client.info().get("Runtimes") or {})
            except _ENGINE_ERRORS as e:
                raise _engine_fault("reading the engine's info", e) from e
        return self._nvidia_runtime

    def _image_user(self, image: str) -> tuple[str, int | None, int | None]:
        """The image's own non-root user as (user, uid, gid); uid None when it can't be read."""
        if image in self._image_users:
            return self._image_users[image]
        try:
            configured = (self.client.images.get(image).attrs.get("Config") or {}).get("User") or ""
        except docker.errors.ImageNotFound as e:
            raise _image_missing(image) from e
        except _ENGINE_ERRORS as e:
            raise _engine_fault(f"inspecting image {image}", e) from e
        name, _, group = configured.partition(":")
        if name in ("", "0", "root"):
            found = _default_user()
        elif name.isdigit() and (not group or group.isdigit()):
            found = (configured, int(name), int(group) if group else int(name))
        else:
            uid, gid = self._passwd_lookup(image, name)
            found = (f"{uid}:{gid}", uid, gid) if uid is not None else (configured, None, None)
        self._image_users[image] = found
        return found

    def _passwd_lookup(self, image: str, user: str) -> tuple[int | None, int | None]:
        """Read /etc/passwd out of the image (a created, never started, container)."""
        box = None
        try:
            box = self.client.containers.create(image, command=["true"], network_mode="none")
            stream, _ = box.get_archive("/etc/passwd")
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                member = tar.extractfile(tar.getmembers()[0])
                text = member.read().decode() if member else ""
        except (*_ENGINE_ERRORS, tarfile.TarError, IndexError):
            return None, None
        finally:
            if box is not None:
                with contextlib.suppress(*_ENGINE_ERRORS):
                    box.remove(force=True)
        for line in text.splitlines():
            parts = line.split(":")
            if len(parts) >= 4 and parts[0] == user:
                return int(parts[2]), int(parts[3])
        return None, None

    def container_spec(self, req: SandboxRequest, engine: bool = True) -> ContainerSpec:
        """The container for `req`; engine=False (dry runs) fills in what needs the engine."""
        host_mode = req.image == HOST_IMAGE
        image = HOST_EMPTY_IMAGE if host_mode else (req.image or DEFAULT_IMAGE)
        notes: list[str] = []
        env = dict(req.env)
        mounts: list[tuple[str, str, bool]] = []

        if host_mode:
            command = list(req.command) if req.command else host_lab_case_command(req)
            user, *_ = _default_user()
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
            if engine:
                user, *_ = self._image_user(image)
            else:
                user = ""  # the image's own; needs the engine to resolve
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
        elif engine and self.has_nvidia_runtime():
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

    # -- Runtime ---------------------------------------------------------------------------------
    def plan(self, req: SandboxRequest) -> dict[str, object]:
        try:
            self.check()
            return self.container_spec(req).describe()
        except RuntimeUnavailable as e:
            spec = self.container_spec(req, engine=False)
            spec.notes.append(f"settings that need the engine (GPU mode, user) are guesses: {e}")
            return spec.describe()

    def repro_command(self, req: SandboxRequest) -> str:
        """The `docker run` line of this attempt (run it from any folder)."""
        try:
            self.check()
            if req.image == HOST_IMAGE:
                self.ensure_host_image()  # so that the printed line runs as is
            spec = self.container_spec(req)
        except RuntimeUnavailable:
            spec = self.container_spec(req, engine=False)
        return shlex.join(spec.docker_run_argv())

    def start(self, req: SandboxRequest) -> DockerSandbox:
        client = self.client
        if req.image == HOST_IMAGE:
            self.ensure_host_image()
        spec = self.container_spec(req)
        self._make_writable(req, spec)
        for src, _, _ in spec.mounts:
            if not os.path.exists(src):  # a bind would create it, empty and root-owned
                raise LabError(f"{src} does not exist; the sandbox of {spec.name} mounts it")
        container = self._create(spec)
        try:
            container.start()
        except _ENGINE_ERRORS as e:
            with contextlib.suppress(*_ENGINE_ERRORS):
                container.remove(force=True, v=True)
            raise _engine_fault(f"starting {spec.name}", e) from e
        return DockerSandbox(client, container, spec)

    def attach(self, req: SandboxRequest) -> int:
        """`docker run -it` of the very container start() would create: the CLI owns the
        terminal (the SDK has no TTY), and `--rm` removes the container when the shell ends."""
        self.check()
        if shutil.which("docker") is None:
            raise RuntimeUnavailable(
                "`lab repro --shell` attaches with the docker command-line tool, which is not on "
                "PATH (Debian: apt-get install docker.io). Without it, `lab repro` prints the "
                "`docker run` line to adapt by hand."
            )
        if req.image == HOST_IMAGE:
            self.ensure_host_image()
        spec = self.container_spec(req)
        self._make_writable(req, spec)
        argv = spec.docker_run_argv()
        tty = ["-t"] if sys.stdin.isatty() and sys.stdout.isatty() else []
        argv[2:2] = ["-i", *tty]  # after `docker run`
        try:
            return subprocess.run(argv, check=False).returncode  # secrets come from our env
        except OSError as e:
            raise SandboxInfraError(f"docker: cannot run the docker command: {e}") from e

    def _create(self, spec: ContainerSpec) -> Container:
        for retry in (True, False):
            try:
                return self.client.containers.create(**spec.create_kwargs())
            except docker.errors.ImageNotFound as e:
                raise _image_missing(spec.image) from e
            except docker.errors.APIError as e:
                # A leftover of ours with the same name (a killed host re-running the attempt).
                if retry and e.status_code == 409 and self._remove_own(spec.name):
                    continue
                raise _engine_fault(f"creating {spec.name}", e) from e
            except _ENGINE_ERRORS as e:
                raise _engine_fault(f"creating {spec.name}", e) from e
        raise AssertionError("unreachable")

    def _remove_own(self, name: str) -> bool:
        try:
            old = self.client.api.inspect_container(name)
        except _ENGINE_ERRORS:
            return False
        labels = (old.get("Config") or {}).get("Labels") or {}
        if labels.get(LABEL_OWNER) != str(os.getuid()) or LABEL_RUN not in labels:
            return False
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_container(old["Id"], v=True, force=True)
        return True

    def _make_writable(self, req: SandboxRequest, spec: ContainerSpec) -> None:
        """Let the sandbox user write the attempt's folders (the host usually runs as root)."""
        uid_s, _, gid_s = spec.user.partition(":")
        uid = int(uid_s) if uid_s.isdigit() else None
        gid = int(gid_s) if gid_s.isdigit() else uid
        if uid is not None and uid == os.getuid():
            return
        run_dir = Path(req.run_dir).resolve()
        for d in _attempt_dirs(req):
            d.mkdir(parents=True, exist_ok=True)
            if not d.resolve().is_relative_to(run_dir):
                continue  # never touch folders outside the run
            if uid is not None and os.getuid() == 0:
                os.chown(d, uid, gid if gid is not None else uid)
            else:  # a user we can't chown to (named, or we aren't root)
                d.chmod(0o777)

    def ensure_host_image(self) -> str:
        """The empty image behind image "host"; imported from an empty tar when missing."""
        try:
            return str(self.client.images.get(HOST_EMPTY_IMAGE).id)
        except docker.errors.ImageNotFound:
            pass
        except _ENGINE_ERRORS as e:
            raise _engine_fault(f"inspecting {HOST_EMPTY_IMAGE}", e) from e
        empty = io.BytesIO()
        tarfile.open(fileobj=empty, mode="w").close()
        repo, _, tag = HOST_EMPTY_IMAGE.rpartition(":")
        try:
            self.client.api.import_image_from_data(empty.getvalue(), repository=repo, tag=tag)
            return str(self.client.images.get(HOST_EMPTY_IMAGE).id)
        except _ENGINE_ERRORS as e:
            raise _engine_fault(f"creating {HOST_EMPTY_IMAGE}", e) from e

    def image_info(self, image: str | None) -> dict[str, object] | None:
        """ID, tags, RepoDigests and labels of an image (None when it is not here)."""
        tag = HOST_EMPTY_IMAGE if image == HOST_IMAGE else (image or DEFAULT_IMAGE)
        try:
            img = self.client.images.get(tag)
        except docker.errors.ImageNotFound:
            return None
        except _ENGINE_ERRORS as e:
            raise _engine_fault(f"inspecting image {tag}", e) from e
        return {
            "image": tag,
            "id": img.id,
            "tags": list(img.tags),
            "repo_digests": list(img.attrs.get("RepoDigests") or []),
            "labels": dict(img.labels or {}),  # the framework's source (store.settle_commit)
        }

    def image_id(self, image: str | None) -> str | None:
        info = self.image_info(image)
        return str(info["id"]) if info else None

    def cleanup(self, run_id: str | None = None) -> list[str]:
        """Remove this user's lab containers: all of one run, or (None) those of every run whose
        lab process is gone, so a concurrent run keeps its containers."""
        run_filter = LABEL_RUN if run_id is None else f"{LABEL_RUN}={run_id}"
        filters = {"label": [run_filter, f"{LABEL_OWNER}={os.getuid()}"]}
        removed = []
        try:
            for c in self.client.api.containers(all=True, filters=filters):
                if run_id is None and host_alive((c.get("Labels") or {}).get(LABEL_HOST)):
                    continue
                with contextlib.suppress(docker.errors.NotFound):
                    self.client.api.remove_container(c["Id"], v=True, force=True)
                    removed.append(str((c.get("Names") or [c["Id"]])[0]).lstrip("/"))
        except _ENGINE_ERRORS as e:
            raise _engine_fault("removing leftover containers", e) from e
        return removed


def _default_user() -> tuple[str, int, int]:
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


def _attempt_dirs(req: SandboxRequest) -> list[Path]:
    """The spec's folder and the out/log folders the spec names (when it can be read)."""
    dirs = [Path(req.spec_path).parent]
    with contextlib.suppress(OSError, ValueError, AttributeError):
        spec = json.loads(Path(req.spec_path).read_text(encoding="utf-8"))
        dirs += [Path(spec[k]) for k in ("out_dir", "log_dir") if spec.get(k)]
    return list(dict.fromkeys(dirs))
