"""The docker runtime: one container per attempt, `network_mode="none"` (only loopback), run as a
non-root user with no capabilities. This is the one module that talks to the Docker engine
(docker_spec.py holds the container's settings).

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
import math
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from typing import Any

import docker.errors
import requests
from docker.client import DockerClient
from docker.models.containers import Container

from lab.errors import LabError, RuntimeUnavailable
from lab.frameworks.base import REFERENCE_IMAGE
from lab.host.runtimes.base import (
    LABEL_RUN,
    LOG_TAIL_LINES,
    SandboxExit,
    SandboxInfraError,
    SandboxRequest,
    host_alive,
)
from lab.host.runtimes.docker_dirs import LentDirs, give_back, lend_dirs
from lab.host.runtimes.docker_spec import (
    HOST_EMPTY_IMAGE,
    HOST_IMAGE,
    LABEL_HOST,
    LABEL_OWNER,
    ContainerSpec,
    build_container_spec,
    default_user,
)

DEFAULT_IMAGE = REFERENCE_IMAGE  # the reference image, as lab/frameworks/base.py declares it
_ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


def _docker_host() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def connect(timeout_s: float = 15.0) -> DockerClient:
    """A client for the engine, or RuntimeUnavailable saying what to do."""
    try:
        client = DockerClient.from_env(timeout=max(1, math.ceil(timeout_s)))
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


class DockerSandbox:
    """One attempt's container."""

    def __init__(
        self,
        client: DockerClient,
        container: Container,
        spec: ContainerSpec,
        lent: LentDirs,
    ):
        self.client = client
        self.container = container
        self.spec = spec
        self.lent = lent  # the run folders lent to the sandbox user, given back on stop
        self.name = spec.name
        self.id: str = container.id or ""
        self._exit: SandboxExit | None = None
        self._removed = False
        # The interrupt and the attempt's own `finally` may stop it at once: one does the work.
        self._stop_lock = threading.Lock()

    def _state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = self.client.api.inspect_container(self.id)["State"]
            return state
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
        finally:  # also when the engine failed: the attempt is over either way
            give_back(self.lent)
        self._removed = True

    def describe(self) -> dict[str, object]:
        return {**self.spec.describe(), "container_id": self.id}

    def repro_command(self) -> str:
        return shlex.join(self.spec.docker_run_argv())


class DockerRuntime:
    name = "docker"

    def __init__(self, client: DockerClient | None = None, timeout_s: float = 15.0):
        self._client = client
        self.timeout_s = timeout_s
        self._nvidia_runtime: bool | None = None
        self._image_users: dict[str, tuple[str, int | None, int | None]] = {}

    @property
    def client(self) -> DockerClient:
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
        found: tuple[str, int | None, int | None]
        if name in ("", "0", "root"):
            found = default_user()
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
        # "": the image's own user, which needs the engine to resolve.
        user = self._image_user(image)[0] if engine and not host_mode else ""
        nvidia = engine and bool(req.gpus) and self.has_nvidia_runtime()
        return build_container_spec(req, image, user, nvidia)

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
        lent = lend_dirs(req, spec.user)
        try:
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
        except BaseException:
            give_back(lent)
            raise
        return DockerSandbox(client, container, spec, lent)

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
        lent = lend_dirs(req, spec.user)
        argv = spec.docker_run_argv()
        tty = ["-t"] if sys.stdin.isatty() and sys.stdout.isatty() else []
        argv[2:2] = ["-i", *tty]  # after `docker run`
        try:
            return subprocess.run(argv, check=False).returncode  # secrets come from our env
        except OSError as e:
            raise SandboxInfraError(f"docker: cannot run the docker command: {e}") from e
        finally:  # `--rm` has removed the container
            give_back(lent)

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
