"""The Docker engine dies under a running nightly: the attempts it was running end `infra_error`
saying so, the run ends with every result written, and once the engine is back the next lab
command leaves nothing of that run behind.

The test starts an engine of its own (its own socket, data and exec roots, vfs storage) so that
killing it cannot disturb the machine's engine or another test. It runs in a network namespace
of its own too: a dockerd started with `--bridge=none` deletes the host's docker0 bridge."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from nightly_helpers import (
    by_id,
    lab_clean,
    processes_mentioning,
    ref_case,
    run_nightly,
    sandbox_work_dir,
    slow_case,
    start_nightly,
    wait_for_attempts,
    write_suite,
)

import docker

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="starting a Docker engine needs root"),
    pytest.mark.skipif(shutil.which("dockerd") is None, reason="dockerd is not installed"),
]


class PrivateEngine:
    """A second dockerd with everything under `base`; kill() is a crash, start() a restart."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.url = f"unix://{base}/docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            "unshare",
            "--net",
            "--fork",
            "--",
            "dockerd",
            f"--host={self.url}",
            f"--data-root={self.base}/data",
            f"--exec-root={self.base}/exec",
            f"--pidfile={self.base}/docker.pid",
            "--storage-driver=vfs",
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
        ]
        with (self.base / "dockerd.log").open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 120  # a restart first ends what the crash left running
        while time.monotonic() < deadline:
            try:
                self.client().ping()
                return
            except docker.errors.DockerException:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        log = (self.base / "dockerd.log").read_text(errors="replace").splitlines()
        raise AssertionError("private dockerd did not start:\n" + "\n".join(log[-30:]))

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=10)

    def kill(self) -> None:
        """SIGKILL dockerd (a crash: containers keep running under its containerd)."""
        assert self.proc is not None
        for child in psutil.Process(self.proc.pid).children():
            if child.name() == "dockerd":
                child.kill()
        self.proc.wait(10)  # unshare ends with its child
        # Its containerd dies with it, but where PID 1 reaps no orphans (a container) it stays a
        # zombie, and a restarted dockerd would wait for that "running" containerd forever.
        pid_file = self.base / "exec" / "containerd" / "containerd.pid"
        deadline = time.monotonic() + 10
        while pid_file.exists() and time.monotonic() < deadline:
            try:
                if psutil.Process(int(pid_file.read_text())).status() != psutil.STATUS_ZOMBIE:
                    time.sleep(0.1)
                    continue
            except (psutil.NoSuchProcess, ValueError):
                pass
            pid_file.unlink(missing_ok=True)

    def destroy(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for child in psutil.Process(self.proc.pid).children():
                child.terminate()  # dockerd: a clean shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for p in psutil.process_iter(["cmdline"]):  # its containerd and shims
            try:
                if str(self.base) in " ".join(p.info["cmdline"] or []):
                    p.kill()
            except psutil.Error:
                pass
        mounts = [ln.split()[1] for ln in Path("/proc/mounts").read_text().splitlines()]
        for m in sorted((m for m in mounts if m.startswith(str(self.base))), reverse=True):
            subprocess.run(["umount", "-l", m], check=False)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def private_engine() -> Iterator[PrivateEngine]:
    # under /tmp: a unix socket path must stay short
    engine = PrivateEngine(Path(tempfile.mkdtemp(prefix="lab-engine-", dir="/tmp")))
    try:
        engine.start()
        yield engine
    finally:
        engine.destroy()


def test_engine_killed_mid_run_ends_attempts_infra_error_and_leaves_nothing(
    private_engine: PrivateEngine, request: pytest.FixtureRequest
) -> None:
    work = sandbox_work_dir(request, "engine-fault-")
    env = {"DOCKER_HOST": private_engine.url}
    cases = [slow_case("victim", est_time_s=60), ref_case("after")]
    suite = write_suite(work, cases, image="host", cpu_concurrency=1, measurement_repeats=5)
    out = work / "runs"

    proc = start_nightly(suite, out, "docker", env=env)
    run_dir = wait_for_attempts(out, 1, timeout_s=120)
    private_engine.kill()
    output, _ = proc.communicate(timeout=180)

    assert proc.returncode == 1, output
    assert "Traceback" not in output
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "finished"
    cases_by_id = by_id(results)
    victim, after = cases_by_id["victim"], cases_by_id["after"]
    assert victim["outcome"] == "infra_error"
    assert "engine" in victim["attempts"][0]["reason"]
    assert "stopped answering" in victim["attempts"][0]["reason"]
    # infra errors are retried once; with the engine still gone the retry cannot start
    assert [a["outcome"] for a in victim["attempts"]] == ["infra_error", "infra_error"]
    assert after["outcome"] == "infra_error" and "engine" in after["reason"]

    # The engine comes back (it kills what it ran before the crash); `lab clean` removes the rest.
    private_engine.start()
    clean = lab_clean(out, env)
    assert clean.returncode == 0, clean.stderr
    label = f"nightly-lab.run-id={results['run_id']}"
    assert private_engine.client().containers.list(all=True, filters={"label": label}) == []
    assert processes_mentioning(run_dir) == []

    # and the next night runs on it as if nothing happened
    code, again, _, err = run_nightly(
        write_suite(work, [ref_case("next_night")], image="host"), out, "docker", env=env
    )
    assert code == 0, err
    assert [c["outcome"] for c in again["cases"]] == ["passed"]
