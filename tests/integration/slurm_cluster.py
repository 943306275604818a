"""A real single-node Slurm cluster for the tests: Debian's munged, slurmctld and slurmd, each
started here in the foreground with a private configuration (SLURM_CONF), a private munge key
and socket, its own ports and state folders under one temporary folder, and stopped again with
nothing left. GPUs are GRES backed by placeholder files, so a job asking --gres=gpu:N gets
SLURM_GPUS_ON_NODE=N (and no device ids) on a machine without GPUs.

By hand: `python tests/integration/slurm_cluster.py` starts one, prints the SLURM_CONF to
export, and stops it at Ctrl-C."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
NODE = "labnode1"
PARTITION = "lab"
KILL_WAIT_S = 10  # SIGTERM → SIGKILL of a cancelled or timed-out job (Slurm's default: 30)
INSTALL_HINT = (
    "as root: apt-get install slurmctld slurmd slurm-client munge (docker/setup.sh does it)"
)


def missing_tools() -> list[str]:
    return [t for t in (*DAEMONS, *CLIENTS) if shutil.which(t) is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SlurmCluster:
    """One controller and one node on this machine; `env` points Slurm's tools at it."""

    def __init__(self, gpus: int = 2, cpus: int = 8) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="lab-slurm-"))
        self.base.chmod(0o755)  # munged wants the socket's folders searchable by all
        self.gpus, self.cpus = gpus, cpus
        self.conf = self.base / "slurm.conf"
        self.munge_socket = self.base / "munge" / "munge.socket"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    # -- configuration ---------------------------------------------------------------------------
    def _write_config(self) -> None:
        b = self.base
        for d in ("munge", "state", "spool", "log", "gres"):
            (b / d).mkdir(mode=0o755)
        key = b / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        for i in range(self.gpus):
            (b / "gres" / f"gpu{i}").touch()
        host = socket.gethostname().split(".")[0]
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=labtest",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    f"SlurmctldPort={free_port()}",
                    f"SlurmdPort={free_port()}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={self.munge_socket}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    f"StateSaveLocation={b / 'state'}",
                    f"SlurmdSpoolDir={b / 'spool'}",
                    f"SlurmctldPidFile={b / 'slurmctld.pid'}",
                    f"SlurmdPidFile={b / 'slurmd.pid'}",
                    f"SlurmctldLogFile={b / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={b / 'log' / 'slurmd.log'}",
                    # No cgroups needed: processes are tracked by parentage, tasks not pinned.
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",  # no sacct: as many sites
                    "JobCompType=jobcomp/none",
                    "MpiDefault=none",
                    "SwitchType=switch/none",
                    "SchedulerType=sched/backfill",
                    "SchedulerParameters=sched_min_interval=100000",  # start jobs within 0.1 s
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    # More CPUs than the machine has: sleeping test jobs must not queue the rest.
                    "SlurmdParameters=config_overrides",
                    "GresTypes=gpu",
                    "ReturnToService=2",
                    f"KillWait={KILL_WAIT_S}",
                    "MinJobAge=300",
                    f"NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 "
                    f"CPUs={self.cpus} Gres=gpu:{self.gpus} State=UNKNOWN",
                    f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        gres = f"NodeName={NODE} Name=gpu File={b / 'gres'}/gpu[0-{self.gpus - 1}]\n"
        (b / "gres.conf").write_text(gres)

    # -- life ------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> SlurmCluster:
        self._write_config()
        m = self.base / "munge"
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",  # root, and a key outside /etc/munge
                f"--socket={self.munge_socket}",
                f"--key-file={m / 'munge.key'}",
                f"--pid-file={m / 'munged.pid'}",
                f"--log-file={m / 'munged.log'}",
                f"--seed-file={m / 'munged.seed'}",
            ],
        )
        self._until(lambda: self.munge_socket.exists(), timeout_s, "munged's socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
        self._until(self._controller_up, timeout_s, "slurmctld answering `scontrol ping`")
        self._spawn("slurmd", ["slurmd", "-D", "-N", NODE])
        self._until(self._node_idle, timeout_s, f"{NODE} idle in sinfo")
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.base / "log" / f"{name}.out", "wb")  # noqa: SIM115 - lives with the process
        self.procs[name] = subprocess.Popen(
            argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()

    def _until(self, cond: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}: {self.logs()}")
            if cond():
                return
            time.sleep(0.2)
        raise RuntimeError(f"no {what} after {timeout_s:g} s: {self.logs()}")

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), env=self.env, capture_output=True, text=True, timeout=60, check=check
        )

    def _controller_up(self) -> bool:
        return "UP" in self.run("scontrol", "ping", check=False).stdout

    def _node_idle(self) -> bool:
        return self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip() == "idle"

    def jobs(self, *fmt: str) -> list[str]:
        """Active jobs (pending, running, completing) as squeue lines."""
        return self.run("squeue", "-h", "-o", "|".join(fmt) or "%i").stdout.split()

    def logs(self) -> str:
        out = []
        for f in sorted((self.base / "log").glob("*")):
            tail = f.read_text(errors="replace").splitlines()[-15:]
            out.append(f"--- {f.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def stop(self) -> None:
        """Cancel whatever is left, stop the daemons, remove every file."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--user=root", check=False)
            deadline = time.monotonic() + KILL_WAIT_S + 20
            while self.jobs() and time.monotonic() < deadline:
                time.sleep(0.5)
        for name in reversed(DAEMONS):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        shutil.rmtree(self.base, ignore_errors=True)


if __name__ == "__main__":
    cluster = SlurmCluster().start()
    print(f"export SLURM_CONF={cluster.conf}   # Ctrl-C stops the cluster", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
