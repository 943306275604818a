"""The docker runtime against the real engine: isolation, hardening, OOM, cleanup, engine faults.

Containers use the `host` image (an empty image + the host's folders, read-only), so these tests
need no built image; one test also runs the reference image when it is there."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from nightly_helpers import PORT_PROBE, ref_case, run_nightly, sandbox_work_dir, write_suite

from lab.config import load_suite
from lab.contract import load_spec
from lab.errors import LabError, RuntimeUnavailable
from lab.files import write_json_atomic
from lab.host.plan import RunContext, attempt_request, plan_cases
from lab.host.runtimes.base import (
    LABEL_ATTEMPT,
    LABEL_CASE,
    LABEL_RUN,
    SandboxInfraError,
    SandboxRequest,
)
from lab.host.runtimes.docker import DockerRuntime
from lab.host.runtimes.docker_spec import LABEL_HOST, LABEL_OWNER
from lab.host.runtimes.registry import default_runtime_name, get_runtime

pytestmark = pytest.mark.docker

REFERENCE_IMAGE = "nightly-lab/reference:0.1.0"


@pytest.fixture(scope="module")
def runtime() -> DockerRuntime:
    rt = DockerRuntime()
    try:
        rt.check()
    except RuntimeUnavailable as e:
        pytest.skip(f"no Docker engine here: {e}")
    return rt


@pytest.fixture
def run_id(runtime: DockerRuntime):
    rid = f"test-{uuid.uuid4().hex[:8]}"
    yield rid
    runtime.cleanup(rid)


def make_request(tmp_path: Path, run_id: str, command: list[str], case: str = "c", **kw):
    run_dir = tmp_path / "run"
    (tmp_path / "configs").mkdir(exist_ok=True)
    kw.setdefault("image", "host")
    return SandboxRequest(
        run_id=run_id,
        case_id=case,
        attempt=1,
        spec_path=run_dir / "attempts" / case / "spec.json",
        run_dir=run_dir,
        config_dir=tmp_path / "configs",
        command=command,
        **kw,
    )


def shared_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run" / "shared"
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o777)  # the sandbox user (uid 1000) writes its marker here
    return d


def run_to_end(runtime: DockerRuntime, req: SandboxRequest, timeout_s: float = 60.0):
    box = runtime.start(req)
    try:
        return box.wait(timeout_s)
    finally:
        box.stop(grace_s=1)


def test_two_containers_bind_port_30000_at_the_same_time(runtime, run_id, tmp_path):
    shared = shared_dir(tmp_path)
    py = [sys.executable, "-c", PORT_PROBE]
    a = runtime.start(make_request(tmp_path, run_id, [*py, "a", "b", str(shared)], case="a"))
    b = runtime.start(make_request(tmp_path, run_id, [*py, "b", "a", str(shared)], case="b"))
    try:
        ex_a, ex_b = a.wait(60), b.wait(60)
    finally:
        a.stop(1)
        b.stop(1)
    assert ex_a.exit_code == 0, ex_a.log_tail
    assert ex_b.exit_code == 0, ex_b.log_tail
    assert any("served a 200" in line for line in ex_a.log_tail)
    assert any("served b 200" in line for line in ex_b.log_tail)


def test_container_has_only_loopback_and_carries_the_lab_labels(runtime, run_id, tmp_path):
    req = make_request(tmp_path, run_id, ["cat", "/proc/net/dev"], case="net")
    box = runtime.start(req)
    try:
        ex = box.wait(30)
        attrs = runtime.client.api.inspect_container(box.id)
    finally:
        box.stop(1)
    interfaces = [line.split(":")[0].strip() for line in ex.log_tail if ":" in line]
    assert ex.exit_code == 0
    assert interfaces == ["lo"]
    assert attrs["HostConfig"]["NetworkMode"] == "none"
    labels = attrs["Config"]["Labels"]
    assert labels[LABEL_RUN] == run_id
    assert labels[LABEL_CASE] == "net"
    assert labels[LABEL_ATTEMPT] == "1"
    assert labels[LABEL_OWNER] == str(os.getuid())
    assert attrs["Name"] == f"/lab-{run_id}-net-a1"
    assert box.describe()["network_mode"] == "none"


def test_sandbox_runs_hardened_non_root_without_capabilities(runtime, run_id, tmp_path):
    script = (
        "id -u; grep -E '^(CapEff|NoNewPrivs):' /proc/self/status; "
        "test -e /var/run/docker.sock && echo SOCKET || echo no-socket; "
        "touch /etc/lab-probe 2>/dev/null && echo ROOT-WRITABLE || echo root-read-only; "
        "touch /tmp/probe && echo tmp-writable; "
        f"touch {tmp_path}/run/attempts/c/probe && echo attempt-dir-writable"
    )
    ex = run_to_end(runtime, make_request(tmp_path, run_id, ["sh", "-c", script]))
    out = "\n".join(ex.log_tail)
    assert ex.exit_code == 0, out
    assert ex.log_tail[0].strip() != "0"  # not root
    assert "CapEff:\t0000000000000000" in out
    assert "NoNewPrivs:\t1" in out
    assert "no-socket" in out
    assert "root-read-only" in out
    assert "tmp-writable" in out
    assert "attempt-dir-writable" in out
    assert (tmp_path / "run" / "attempts" / "c" / "probe").exists()


def test_host_image_runs_the_venv_python_with_lab_and_torch(runtime, run_id, tmp_path):
    code = (
        "import lab, torch, socket; print('imports-ok', torch.__version__, socket.if_nameindex())"
    )
    req = make_request(tmp_path, run_id, [sys.executable, "-c", code])
    ex = run_to_end(runtime, req, timeout_s=120)
    assert ex.exit_code == 0, ex.log_tail
    assert any(line.startswith("imports-ok") and "[(1, 'lo')]" in line for line in ex.log_tail)
    # Without a command override the sandbox runs `lab case SPEC` with the host's python.
    plan = runtime.plan(make_request(tmp_path, run_id, None))  # type: ignore[arg-type]
    assert plan["command"] == [sys.executable, "-m", "lab.cli", "case", str(req.spec_path)]


def test_memory_hog_is_oom_killed_and_reported(runtime, run_id, tmp_path):
    hog = [sys.executable, "-c", "x = b'\\x01' * (600 << 20); print('survived')"]
    req = make_request(tmp_path, run_id, hog, memory_limit_mib=256)
    ex = run_to_end(runtime, req)
    assert ex.oom_killed is True
    assert ex.exit_code == 137
    assert "out of host memory" in ex.reason
    assert not any("survived" in line for line in ex.log_tail)


def test_wait_notices_the_exit_promptly_while_nobody_reads_the_logs(runtime, run_id, tmp_path):
    marker = shared_dir(tmp_path) / "exited-at"
    code = (
        "import sys, time\n"
        "for i in range(200000): print('noise line', i)\n"
        f"open({str(marker)!r}, 'w').write(repr(time.time()))\n"
        "print('last line')\n"
    )
    box = runtime.start(make_request(tmp_path, run_id, [sys.executable, "-c", code]))
    try:
        ex = box.wait(60)
        noticed = time.time()
    finally:
        box.stop(1)
    assert ex.exit_code == 0
    assert noticed - float(marker.read_text()) < 1.5
    assert len(ex.log_tail) == 50
    assert ex.log_tail[-1] == "last line"


def test_wait_timeout_returns_no_exit_code_and_stop_removes_the_container(
    runtime, run_id, tmp_path
):
    box = runtime.start(make_request(tmp_path, run_id, ["sleep", "300"]))
    t0 = time.monotonic()
    ex = box.wait(0.5)
    assert ex.exit_code is None
    assert time.monotonic() - t0 < 2.0
    t0 = time.monotonic()
    box.stop(grace_s=2)
    assert time.monotonic() - t0 < 5.0  # docker-init passes TERM on: no wait for the KILL
    left = runtime.client.api.containers(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})
    assert left == []
    assert box.wait(1).exit_code is None  # stopped before it finished


def test_cleanup_removes_the_runs_containers_but_not_another_users(runtime, run_id, tmp_path):
    names = [
        runtime.start(make_request(tmp_path, run_id, ["sleep", "300"], case=c)).name
        for c in ("x", "y")
    ]
    foreign = runtime.client.containers.create(
        "nightly-lab/host-empty:latest",
        ["sleep", "300"],
        network_mode="none",
        labels={LABEL_RUN: run_id, LABEL_OWNER: "99999"},
    )
    try:
        removed = runtime.cleanup(run_id)
        assert sorted(removed) == sorted(names)
        left = runtime.client.api.containers(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})
        assert [c["Id"] for c in left] == [foreign.id]
    finally:
        foreign.remove(force=True)


def test_cleanup_of_all_runs_spares_containers_of_a_live_lab_process(runtime, run_id, tmp_path):
    live = runtime.start(make_request(tmp_path, run_id, ["sleep", "300"], case="live"))
    orphan = runtime.client.containers.create(
        "nightly-lab/host-empty:latest",
        ["sleep", "300"],
        network_mode="none",
        name=f"lab-{run_id}-orphan-a1",
        labels={
            LABEL_RUN: run_id,
            LABEL_OWNER: str(os.getuid()),
            LABEL_HOST: f"{socket.gethostname()}:{2**22 + 1}:0.000",  # a lab process long gone
        },
    )
    removed = runtime.cleanup()
    assert orphan.name in removed
    assert live.name not in removed
    assert runtime.client.api.inspect_container(live.id)["State"]["Running"]
    live.stop(1)


def test_engine_losing_the_container_is_an_infra_error(runtime, run_id, tmp_path):
    box = runtime.start(make_request(tmp_path, run_id, ["sleep", "300"]))
    runtime.client.api.remove_container(box.id, force=True)
    with pytest.raises(SandboxInfraError, match="vanished"):
        box.wait(10)
    box.stop(1)  # nothing left to stop: no error


def test_repro_command_runs_the_same_sandbox_by_hand(runtime, run_id, tmp_path):
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI")
    code = "import os, socket; print('repro', os.getuid(), socket.if_nameindex())"
    req = make_request(tmp_path, run_id, [sys.executable, "-c", code], case="repro")
    line = runtime.repro_command(req)
    assert line.startswith("docker run --rm --network none")
    done = subprocess.run(line, shell=True, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "repro 1000 [(1, 'lo')]"


def test_raw_gpu_mode_passes_only_the_requested_device_nodes(runtime, tmp_path):
    if runtime.has_nvidia_runtime():
        pytest.skip("this engine has the nvidia runtime: DeviceRequest mode")
    req = make_request(tmp_path, "plan", None, gpus=[3], env={"CUDA_VISIBLE_DEVICES": "3"})  # type: ignore[arg-type]
    plan = runtime.plan(req)
    assert plan["gpu_mode"] == "raw-devices"
    assert plan["devices"][0] == "/dev/nvidia3"
    assert not any(d.startswith("/dev/nvidia") and d[11:].isdigit() and d != "/dev/nvidia3"
                   for d in plan["devices"])  # fmt: skip
    assert plan["env"]["CUDA_VISIBLE_DEVICES"] == "0"  # as CUDA inside numbers it


def test_missing_image_says_to_run_make_images(runtime, run_id, tmp_path):
    req = make_request(tmp_path, run_id, ["true"], image="nightly-lab/not-built:0")
    with pytest.raises(RuntimeUnavailable, match="make images"):
        runtime.start(req)


def test_reference_image_runs_as_its_own_non_root_user(runtime, run_id, tmp_path):
    if runtime.image_id(REFERENCE_IMAGE) is None:
        pytest.skip(f"{REFERENCE_IMAGE} not built (make images)")
    script = f"id -un; touch {tmp_path}/run/attempts/c/ok"
    req = make_request(tmp_path, run_id, ["sh", "-c", script])
    req.image = REFERENCE_IMAGE
    ex = run_to_end(runtime, req)
    assert ex.exit_code == 0, ex.log_tail
    assert ex.log_tail[0] == "lab"
    assert (tmp_path / "run" / "attempts" / "c" / "ok").exists()
    info = runtime.image_info(REFERENCE_IMAGE)
    assert info is not None and str(info["id"]).startswith("sha256:")


def test_engine_that_is_down_says_how_to_start_it(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/nonexistent.sock")
    t0 = time.monotonic()
    with pytest.raises(RuntimeUnavailable) as err:
        DockerRuntime().check()
    assert time.monotonic() - t0 < 5.0
    message = str(err.value)
    assert "unix:///tmp/nonexistent.sock" in message
    assert "dockerd" in message and "make setup" in message and "RUNTIME=netns" in message
    assert err.value.exit_code == 2


def test_permission_denied_on_the_socket_says_docker_group_or_netns(tmp_path):
    if os.getuid() != 0 or shutil.which("setpriv") is None or not Path("/usr/bin/python3").exists():
        pytest.skip("needs root, setpriv and /usr/bin/python3 to act as an unprivileged user")
    if os.stat("/var/run/docker.sock").st_mode & 0o006:
        pytest.skip("the socket is open to everyone here")
    site = next(Path(sys.prefix, "lib").glob("python3*/site-packages"))
    paths = [str(Path(__file__).resolve().parents[2]), str(site)]
    code = (
        f"import sys; sys.path[:0] = {paths!r}\n"
        "from lab.errors import RuntimeUnavailable\n"
        "from lab.host.runtimes.docker import connect\n"
        "try:\n    connect(3)\nexcept RuntimeUnavailable as e:\n    print(e)\n"
    )
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "/usr/bin/python3", "-c", code],
        capture_output=True, text=True, timeout=60, cwd="/", env={"HOME": "/tmp"},
    )  # fmt: skip
    assert "Permission denied on the Docker socket" in done.stdout, done.stderr
    assert "docker group" in done.stdout and "RUNTIME=netns" in done.stdout


def test_default_runtime_is_docker_while_the_engine_answers(runtime, monkeypatch):
    assert default_runtime_name() == "docker"
    assert get_runtime(None).name == "docker"
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/nonexistent.sock")
    assert default_runtime_name() == ("netns" if os.geteuid() == 0 else "local")


def test_unknown_runtime_name_lists_the_choices():
    with pytest.raises(RuntimeUnavailable, match="docker, netns, local"):
        get_runtime("podman")


def not_the_lab_users(run_dir: Path) -> list[str]:
    """Every file and folder under the run (symlinks themselves) not owned by the lab's user."""
    me = (os.geteuid(), os.getegid())
    paths = [run_dir, *run_dir.rglob("*")]
    return [f"{p} {p.lstat().st_uid}" for p in paths if (p.lstat().st_uid, p.lstat().st_gid) != me]


def planned_request(tmp_path: Path, run_id: str, command: list[str]) -> SandboxRequest:
    """A real attempt's spec (its log folder is the run's logs/), running `command` instead."""
    (tmp_path / "configs").mkdir(exist_ok=True)
    suite = tmp_path / "configs" / "suite.json"
    suite.write_text(json.dumps({"cases": [ref_case("own")]}))
    loaded = load_suite(suite)
    plan = plan_cases(loaded, loaded.suite.cases, [], None)[0]
    ctx = RunContext(loaded, [], tmp_path / "run", run_id)
    spec, req = attempt_request(ctx, plan, plan.ladder.rungs[0], 1, [])
    write_json_atomic(req.spec_path, spec.model_dump(mode="json"))
    return replace(req, image="host", command=command)


# Writes as the sandbox user: a folder and a file in the attempt, its log in the shared logs/,
# a symlink to a file it must not get (chowned itself, never followed); then it stays.
WRITER = (
    'mkdir -p "$1/sub" && echo x > "$1/sub/file" && ln -s /etc/hostname "$1/link" '
    '&& echo log > "$2" && echo written && exec sleep 60'
)


def test_files_the_sandbox_wrote_go_back_to_the_lab_user_when_it_is_stopped(
    request, runtime, run_id
):
    req = planned_request(sandbox_work_dir(request, "docker-owner-"), run_id, [])
    spec = load_spec(req.spec_path)
    log = spec.log_path("reference")
    req.command = ["sh", "-c", WRITER, "writer", spec.out_dir, str(log)]
    hostname_owner = Path("/etc/hostname").stat().st_uid
    box = runtime.start(req)
    try:
        deadline = time.monotonic() + 30
        while "written" not in box.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "written" in box.logs(), box.logs()
        if os.geteuid() == 0:  # the sandbox user is uid 1000 only when the lab runs as root
            assert log.stat().st_uid == 1000
    finally:
        box.stop(grace_s=1)  # stopped while running, as an interrupt or a timeout does
    assert not_the_lab_users(req.run_dir) == []
    assert (Path(spec.out_dir) / "sub" / "file").read_text() == "x\n"
    assert Path("/etc/hostname").stat().st_uid == hostname_owner


def test_folders_lent_to_a_sandbox_that_never_started_are_given_back(runtime, run_id, tmp_path):
    req = planned_request(tmp_path, run_id, ["true"])
    req.model_cache = tmp_path / "no-such-cache"
    with pytest.raises(LabError, match="does not exist"):
        runtime.start(req)
    assert not_the_lab_users(req.run_dir) == []


@pytest.mark.slow
def test_a_docker_nightly_leaves_its_run_folder_to_the_lab_user(request, reference_image):
    work = sandbox_work_dir(request, "docker-owner-")
    broken = ref_case("broken", frameworks={"reference": {"serve_args": "--no-such-flag"}})
    suite = write_suite(work, [ref_case("fine"), broken])
    _, results, run_dir, err = run_nightly(suite, work / "runs", "docker")
    outcomes = {c["case_id"]: c["outcome"] for c in results["cases"]}
    assert outcomes == {"fine": "passed", "broken": "crashed"}, err
    assert (run_dir / "logs").is_dir() and list((run_dir / "attempts").iterdir())
    assert not_the_lab_users(run_dir) == []
