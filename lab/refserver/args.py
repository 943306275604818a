"""The command line, mirroring `sglang serve` where the lab uses it, and the validated config.

Parsing imports nothing heavy, so a bad flag exits 2 (argparse's message) in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import asdict, dataclass
from typing import Any

from lab.refserver.faults import ENV_VAR, Fault, parse_fault
from lab.refserver.presets import Preset, preset_for

TASK_TYPES = (
    "text-to-image",
    "image-edit",
    "text-to-video",
    "image-to-video",
    "text-image-to-video",
)
SLOWDOWN_ENV = "REFSERVER_STEP_SLOWDOWN"
SIZE_RE = re.compile(r"^\s*(\d+)\s*[x*]\s*(\d+)\s*$")


def _bool_flag(value: str) -> bool:
    # sglang's boolean flags work bare (`--dit-cpu-offload`) or with a value (`... true`)
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _size(value: str) -> tuple[int, int]:
    m = SIZE_RE.match(value)
    if not m:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {value!r}")
    return int(m.group(1)), int(m.group(2))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lab.refserver",
        description="Reference diffusion server (random-weight diffusers components, no download).",
    )
    add = p.add_argument
    add("--model-path", default="ref://tiny", help="ref://tiny|small|medium|large|xl")
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=30000)
    add("--master-port", type=int, default=None, help="torch.distributed port (cfg-parallel)")
    add("--scheduler-port", type=int, default=None, help="held for the server's life")
    add("--strict-ports", action="store_true", help="fail at start if a requested port is taken")
    add("--num-gpus", type=int, default=None)
    add("--cfg-parallel-size", type=int, choices=(1, 2), default=1)
    for flag in (
        "--dit-cpu-offload",
        "--dit-layerwise-offload",
        "--text-encoder-cpu-offload",
        "--vae-cpu-offload",
        "--pin-cpu-memory",
    ):
        add(flag, type=_bool_flag, nargs="?", const=True, default=False)
    add("--warmup-mode", choices=("off", "request", "server"), default="off")
    add("--warmup-resolutions", nargs="+", type=_size, default=None, metavar="WxH")
    add("--warmup-num-frames", nargs="+", type=int, default=None, metavar="N")
    add("--warmup-steps", type=int, default=1, help="denoising steps of each warmup run")
    add("--task-type", choices=TASK_TYPES, default="text-to-image", help="reported in /v1/models")
    add("--pipeline-class-name", default="RefFluxPipeline", help="reported in /v1/models")
    add("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    add(
        "--device-memory-gib",
        type=float,
        default=None,
        help="device budget per rank: accounted on CPU (raises torch.OutOfMemoryError), "
        "a per-process memory fraction on CUDA",
    )
    add("--fault", default=None, help=f"one injected fault (also ${ENV_VAR}); see README")
    add(
        "--step-slowdown",
        default=None,
        metavar="PCT[:JITTER]",
        help=f"sleep PCT %% of each measured denoising step after it (also ${SLOWDOWN_ENV}); "
        "JITTER adds a per-request random 0..JITTER %% more",
    )
    return p


def parse_slowdown(spec: str) -> tuple[float, float]:
    """`PCT[:JITTER]` as two numbers >= 0; ValueError naming the format."""
    pct, _, jitter = spec.partition(":")
    try:
        values = float(pct), float(jitter or 0)
    except ValueError:
        values = (-1.0, -1.0)
    if min(values) < 0:
        raise ValueError(f"expected PCT[:JITTER] with numbers >= 0, got {spec!r}")
    return values


@dataclass(frozen=True)
class ServerConfig:
    """Everything a rank needs to build the same model and act the same; JSON-serializable."""

    model_path: str
    host: str
    port: int
    master_port: int | None
    scheduler_port: int | None
    strict_ports: bool
    num_gpus: int
    cfg_parallel_size: int
    dit_offload: str  # "resident" | "component" | "layerwise"
    text_encoder_offload: bool
    vae_offload: bool
    pin_cpu_memory: bool
    warmup_mode: str
    warmup_resolutions: list[tuple[int, int]]
    warmup_num_frames: list[int]
    warmup_steps: int
    task_type: str
    pipeline_class: str
    device: str
    dtype: str
    device_memory_gib: float | None
    fault: Fault | None = None
    # a real slowdown of real work (benchmarks/regression_power.py): every denoising step is
    # followed by a sleep of this percent of its own measured time, plus 0..jitter % per request
    step_slowdown_pct: float = 0.0
    step_jitter_pct: float = 0.0

    @property
    def preset(self) -> Preset:
        return preset_for(self.model_path)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["fault"] = None  # faults act in rank 0 only
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerConfig:
        data = dict(data)
        data["warmup_resolutions"] = [tuple(r) for r in data["warmup_resolutions"]]
        return cls(**data)


def parse_config(argv: list[str] | None = None) -> ServerConfig:
    """Parse and validate; any problem exits 2 through argparse with its usual message."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        preset = preset_for(ns.model_path)
    except ValueError as e:
        parser.error(str(e))
    fault_spec = ns.fault if ns.fault is not None else os.environ.get(ENV_VAR) or None
    fault = None
    if fault_spec:
        try:
            fault = parse_fault(fault_spec)
        except ValueError as e:
            parser.error(f"bad fault {fault_spec!r}: {e}")
    slow_spec = ns.step_slowdown if ns.step_slowdown is not None else os.environ.get(SLOWDOWN_ENV)
    slowdown = (0.0, 0.0)
    if slow_spec:
        try:
            slowdown = parse_slowdown(slow_spec)
        except ValueError as e:
            parser.error(f"bad --step-slowdown: {e}")
    num_gpus = ns.num_gpus if ns.num_gpus is not None else ns.cfg_parallel_size
    if num_gpus < 1:
        parser.error("--num-gpus must be at least 1")
    if num_gpus < ns.cfg_parallel_size:
        parser.error(f"--cfg-parallel-size {ns.cfg_parallel_size} needs --num-gpus >= it")
    if ns.device_memory_gib is not None and ns.device_memory_gib <= 0:
        parser.error("--device-memory-gib must be > 0")
    if ns.warmup_steps < 1:
        parser.error("--warmup-steps must be at least 1")
    for port in (ns.port, ns.master_port, ns.scheduler_port):
        if port is not None and not 0 < port < 65536:
            parser.error(f"port {port} is out of range")
    dit_offload = "resident"
    if ns.dit_layerwise_offload:
        dit_offload = "layerwise"
    elif ns.dit_cpu_offload:
        dit_offload = "component"
    return ServerConfig(
        model_path=ns.model_path,
        host=ns.host,
        port=ns.port,
        master_port=ns.master_port,
        scheduler_port=ns.scheduler_port,
        strict_ports=ns.strict_ports,
        num_gpus=num_gpus,
        cfg_parallel_size=ns.cfg_parallel_size,
        dit_offload=dit_offload,
        text_encoder_offload=ns.text_encoder_cpu_offload,
        vae_offload=ns.vae_cpu_offload,
        pin_cpu_memory=ns.pin_cpu_memory,
        warmup_mode=ns.warmup_mode,
        warmup_resolutions=list(ns.warmup_resolutions or [preset.default_size]),
        warmup_num_frames=list(ns.warmup_num_frames or []),
        warmup_steps=ns.warmup_steps,
        task_type=ns.task_type,
        pipeline_class=ns.pipeline_class_name,
        device=ns.device,
        dtype=ns.dtype,
        device_memory_gib=ns.device_memory_gib,
        fault=fault,
        step_slowdown_pct=slowdown[0],
        step_jitter_pct=slowdown[1],
    )
