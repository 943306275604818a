"""cfg-parallel 2: the unconditional branch runs in a second process on a second device.

Rank 0 is the HTTP server; before importing torch itself it starts rank 1
(`python -m lab.refserver.worker`), which shares its log. Both join a torch.distributed group
(gloo on CPU, nccl on GPU) over 127.0.0.1:master-port. Jobs go to rank 1 over its stdin
(pickled, length-prefixed): a pipe has no idle timeout, unlike a collective, and its end tells
rank 1 that rank 0 is gone. Inside a job the ranks exchange their noise predictions each step
(all_gather) and their peaks at the end. If either rank dies the other exits too: rank 1 by
PR_SET_PDEATHSIG or a broken group, rank 0 by watching rank 1.
"""

from __future__ import annotations

import ctypes
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import IO, TYPE_CHECKING, Any

from lab.refserver.args import ServerConfig

if TYPE_CHECKING:
    import torch

GROUP_TIMEOUT = timedelta(hours=2)  # one collective may wait this long (a big CPU video step)
_HEADER = struct.Struct("<Q")


class CfgGroup:
    def __init__(self, rank: int, device: torch.device) -> None:
        self.rank = rank
        self.device = device

    def exchange(self, mine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rank 0's prediction, rank 1's): the conditional and the unconditional branch."""
        import torch
        import torch.distributed as dist

        both = [torch.empty_like(mine) for _ in range(2)]
        dist.all_gather(both, mine)
        return both[0], both[1]

    def barrier(self) -> None:
        """Both ranks built: /health must not say ready while rank 1 is still building."""
        import torch.distributed as dist

        dist.barrier()

    def gather(self, values: list[float]) -> list[list[float]]:
        import torch.distributed as dist

        every: list[Any] = [None, None]
        dist.all_gather_object(every, values)
        return every


def init_group(rank: int, master_port: int, device: torch.device) -> CfgGroup:
    import torch
    import torch.distributed as dist

    # keep the group's sockets on loopback: both ranks are on this host
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{master_port}",
        rank=rank,
        world_size=2,
        timeout=GROUP_TIMEOUT,
        device_id=device if device.type == "cuda" else None,
    )
    return CfgGroup(rank, device)


def write_job(stream: IO[bytes], job: object) -> None:
    data = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def read_job(stream: IO[bytes]) -> object | None:
    """The next job, or None when rank 0 has closed the pipe."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    job: object = pickle.loads(data)
    return job


class SecondRank:
    """Rank 0's handle on rank 1: start it, feed it jobs, notice if it dies."""

    def __init__(self, config: ServerConfig, master_port: int) -> None:
        payload = json.dumps(config.to_json())
        command = [sys.executable, "-m", "lab.refserver.worker", payload, str(master_port)]
        command.append(str(os.getpid()))
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE)
        self.stopping = False

    def send(self, job: object) -> None:
        assert self.proc.stdin is not None
        write_job(self.proc.stdin, job)

    def watch(self, on_death: Callable[[int], None]) -> None:
        def wait() -> None:
            code = self.proc.wait()
            if not self.stopping:
                on_death(code)

        threading.Thread(target=wait, name="rank1-watch", daemon=True).start()

    def stop(self) -> None:
        self.stopping = True
        if self.proc.poll() is None:
            self.proc.kill()


def die_with_parent(parent: int) -> None:
    """Ask the kernel to kill this process when rank 0 dies (Linux); exit if it already has."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent:
        os._exit(1)
