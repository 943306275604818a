"""The netns and local runtimes with real namespaces and real processes: port isolation, group
stop, and cleanup by recorded ids after the host was SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
from nightly_helpers import PORT_PROBE

from lab.errors import RuntimeUnavailable
from lab.host.runtimes.base import SandboxRequest
from lab.host.runtimes.local import LocalRuntime
from lab.host.runtimes.netns import NetnsRuntime
from lab.host.runtimes.process import SANDBOX_TOKEN_ENV

pytestmark = pytest.mark.netns


@pytest.fixture
def netns(tmp_path: Path) -> NetnsRuntime:
    rt = NetnsRuntime(state_dir=tmp_path / "state")
    try:
        rt.check()
    except RuntimeUnavailable as e:
        pytest.skip(f"no network namespaces here: {e}")
    return rt


def make_request(tmp_path: Path, command: list[str], case: str = "c", **kw) -> SandboxRequest:
    run_dir = tmp_path / "run"
    (tmp_path / "configs").mkdir(exist_ok=True)
    return SandboxRequest(
        run_id=kw.pop("run_id", "netns-test"),
        case_id=case,
        attempt=1,
        spec_path=run_dir / "attempts" / case / "spec.json",
        run_dir=run_dir,
        config_dir=tmp_path / "configs",
        command=command,
        **kw,
    )


def wait_for_file(path: Path, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_two_netns_sandboxes_bind_port_30000_at_the_same_time(netns, tmp_path):
    shared = tmp_path / "run" / "shared"
    shared.mkdir(parents=True)
    py = [sys.executable, "-c", PORT_PROBE]
    a = netns.start(make_request(tmp_path, [*py, "a", "b", str(shared)], case="a"))
    b = netns.start(make_request(tmp_path, [*py, "b", "a", str(shared)], case="b"))
    try:
        ex_a, ex_b = a.wait(30), b.wait(30)
    finally:
        a.stop(1)
        b.stop(1)
    assert ex_a.exit_code == 0, ex_a.log_tail
    assert ex_b.exit_code == 0, ex_b.log_tail
    assert any("served a 200" in line for line in ex_a.log_tail)
    assert any("served b 200" in line for line in ex_b.log_tail)


def test_netns_sandbox_sees_only_loopback_and_its_gpus(netns, tmp_path):
    code = (
        "import os; print([l.split(':')[0].strip() for l in open('/proc/net/dev') if ':' in l]);"
        "print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ['CUDA_DEVICE_ORDER'])"
    )
    box = netns.start(make_request(tmp_path, [sys.executable, "-c", code], gpus=[2, 3]))
    ex = box.wait(20)
    box.stop(1)
    assert ex.exit_code == 0, ex.log_tail
    assert ex.log_tail == ["['lo']", "2,3 PCI_BUS_ID"]
    assert box.describe()["gpus"] == [2, 3]


def test_host_given_gpu_uuids_win_over_indices(netns, tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "GPU-1111"}
    code = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"
    box = netns.start(make_request(tmp_path, [sys.executable, "-c", code], gpus=[1], env=env))
    ex = box.wait(20)
    box.stop(1)
    assert ex.log_tail == ["GPU-1111"]


def test_stop_kills_the_whole_group_even_escaped_and_stubborn_processes(netns, tmp_path):
    pids = tmp_path / "run" / "pids"
    pids.mkdir(parents=True)
    script = (
        "trap '' TERM; "  # the leader ignores TERM: only KILL ends it
        f"sleep 300 & echo $! > {pids}/child; "
        # its own session, not in our group; the pid is written once setsid has made it
        f"setsid sh -c 'echo $$ > {pids}/escaped; exec sleep 300' & "
        "wait"
    )
    box = netns.start(make_request(tmp_path, ["sh", "-c", script]))
    child = int(wait_for_file(pids / "child"))
    escaped = int(wait_for_file(pids / "escaped"))
    assert os.getpgid(escaped) != os.getpgid(child)
    t0 = time.monotonic()
    box.stop(grace_s=1)
    took = time.monotonic() - t0
    assert all(gone(p) for p in (box.pid, child, escaped))
    assert took < 4.0
    assert box.wait(1).exit_code is None  # stopped, it did not finish


def test_wait_timeout_leaves_it_running_until_stop(netns, tmp_path):
    box = netns.start(make_request(tmp_path, ["sleep", "300"]))
    t0 = time.monotonic()
    ex = box.wait(0.3)
    assert ex.exit_code is None and time.monotonic() - t0 < 1.5
    assert not gone(box.pid)
    box.stop(1)
    assert gone(box.pid)


HOST_SCRIPT = """
import sys, time
from pathlib import Path
from lab.host.runtimes.base import SandboxRequest
from lab.host.runtimes.netns import NetnsRuntime
tmp = Path(sys.argv[1])
rt = NetnsRuntime(state_dir=tmp / "state")
req = SandboxRequest(run_id=sys.argv[2], case_id="left", attempt=1,
                     spec_path=tmp / "run" / "attempts" / "left" / "spec.json",
                     run_dir=tmp / "run", config_dir=tmp, command=["sleep", "300"])
box = rt.start(req)
print(box.name, box.pid, flush=True)
time.sleep(300)
"""


def test_cleanup_after_the_host_was_killed_finds_the_sandbox_by_its_record(netns, tmp_path):
    run_id = f"killed-{uuid.uuid4().hex[:6]}"
    host = subprocess.Popen(
        [sys.executable, "-c", HOST_SCRIPT, str(tmp_path), run_id],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    name, pid = host.stdout.readline().split()  # type: ignore[union-attr]
    host.send_signal(signal.SIGKILL)
    host.wait(10)
    leftover = psutil.Process(int(pid))
    assert leftover.is_running()  # the host died, its sandbox did not
    record = json.loads((tmp_path / "run" / "sandboxes" / f"{name}.json").read_text())
    assert record["pid"] == int(pid) and record["run_id"] == run_id
    members = list(leftover.children(recursive=True))
    mine = netns.start(make_request(tmp_path, ["sleep", "300"], case="mine"))  # our host lives

    removed = netns.cleanup()  # every run: only sandboxes whose lab process is gone

    assert removed == [name]
    assert not gone(mine.pid)
    mine.stop(1)
    assert gone(int(pid)) and all(gone(p.pid) for p in members)
    assert not (tmp_path / "state" / f"{name}.json").exists()
    assert netns.cleanup(run_id) == []


def test_cleanup_never_kills_a_process_that_only_reuses_a_recorded_pid(netns, tmp_path):
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        record = {
            "runtime": "netns",
            "name": "lab-old-run-c-a1",
            "run_id": "old-run",
            "pid": stranger.pid,
            "pgid": stranger.pid,
            "create_time": psutil.Process(stranger.pid).create_time() - 3600,  # another process
            "token": uuid.uuid4().hex,
        }
        (tmp_path / "state").mkdir(parents=True, exist_ok=True)
        (tmp_path / "state" / "lab-old-run-c-a1.json").write_text(json.dumps(record))
        assert netns.cleanup("old-run") == ["lab-old-run-c-a1"]
        assert stranger.poll() is None  # still alive: not ours
    finally:
        stranger.kill()
        stranger.wait()


def test_every_sandbox_process_carries_the_sandbox_token(netns, tmp_path):
    code = f"import os; print(os.environ['{SANDBOX_TOKEN_ENV}'])"
    box = netns.start(make_request(tmp_path, [sys.executable, "-c", code]))
    ex = box.wait(20)
    box.stop(1)
    assert ex.log_tail == [box.record.token]


def test_repro_command_runs_the_same_sandbox_by_hand(netns, tmp_path):
    code = "import socket; print('repro', socket.if_nameindex())"
    line = netns.repro_command(make_request(tmp_path, [sys.executable, "-c", code]))
    (tmp_path / "run" / "attempts" / "c").mkdir(parents=True)
    done = subprocess.run(line, shell=True, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "repro [(1, 'lo')]"


def test_a_package_on_the_hosts_pythonpath_imports_in_the_sandbox(netns, tmp_path, monkeypatch):
    """The GPU machine's way: newer wheels installed with --target, first on PYTHONPATH."""
    site = tmp_path / "target-site"
    (site / "carried_pkg").mkdir(parents=True)
    (site / "carried_pkg" / "__init__.py").write_text("VERSION = '9.9'\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    code = "import carried_pkg, lab; print(carried_pkg.VERSION)"
    box = netns.start(make_request(tmp_path, [sys.executable, "-c", code]))
    ex = box.wait(20)
    box.stop(1)
    assert ex.log_tail == ["9.9"], ex.log_tail


def test_local_runtime_runs_on_the_host_network_and_stops_its_group(tmp_path):
    local = LocalRuntime(state_dir=tmp_path / "state")
    code = "import socket; print(len(socket.if_nameindex()) > 0)"
    box = local.start(make_request(tmp_path, [sys.executable, "-c", code], case="l1"))
    ex = box.wait(20)
    box.stop(1)
    assert ex.exit_code == 0 and ex.log_tail == ["True"]
    pids = tmp_path / "run" / "pids"
    pids.mkdir(parents=True)
    box = local.start(make_request(tmp_path, ["sh", "-c", f"sleep 300 & echo $! > {pids}/c; wait"]))
    child = int(wait_for_file(pids / "c"))
    box.stop(grace_s=1)
    assert gone(child) and gone(box.pid)
    assert local.cleanup() == []
