"""Startup of rank 0, in order: flags -> startup faults -> ports -> HTTP up -> (rank 1) -> import
torch and diffusers -> build -> warmup -> ready. HTTP comes up before the heavy imports, so
/liveness answers within a fraction of a second; /health waits for warmup."""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback

from lab.refserver import faults
from lab.refserver.args import ServerConfig, parse_config
from lab.refserver.log import log
from lab.refserver.ports import PortError, Ports, hold_port, resolve_ports
from lab.refserver.server import RefHTTPServer, ServerState

MASTER_PORT_OFFSET = 5  # the master port when cfg-parallel needs one and none is given


def _startup_faults(config: ServerConfig) -> None:
    fault = config.fault
    if fault is None:
        return
    log(f"fault injected: {fault.kind}")
    if fault.kind == "exit-startup":
        faults.print_fatal_line("fault: exiting during startup")
        faults.exit_now(fault.code or 0, f"exit code {fault.code}")
    if fault.kind == "fail-first-starts":
        folder = os.environ.get(faults.ATTEMPT_DIR_ENV)
        if not folder:
            faults.exit_now(2, f"fail-first-starts needs {faults.ATTEMPT_DIR_ENV} (lab case sets)")
        start = faults.count_start(folder)
        if start <= fault.starts:
            faults.print_fatal_line(f"fault: failing start {start} of the first {fault.starts}")
            faults.exit_now(fault.code or 0, f"exit code {fault.code}")
    if fault.kind == "flood":
        faults.flood_stdout(fault.lines)
    if fault.kind == "fatal-line" and fault.phase == "startup":
        faults.print_fatal_line(fault.text)
        faults.hang_forever()


def _ports(config: ServerConfig) -> Ports:
    ports = resolve_ports(
        config.host,
        config.port,
        config.master_port,
        config.scheduler_port,
        strict=config.strict_ports,
    )
    if config.cfg_parallel_size == 2 and ports.master is None:
        # a derived port is not one the user asked for: settle it even with --strict-ports
        derived = resolve_ports(
            config.host, config.port + MASTER_PORT_OFFSET, None, None, strict=False
        )
        ports.master = derived.http
    return ports


def _load(state: ServerState, ports: Ports) -> None:
    config = state.config
    ranks = config.cfg_parallel_size
    if ranks == 2:
        from lab.refserver.parallel import SecondRank

        assert ports.master is not None
        state.second_rank = SecondRank(config, ports.master)
        state.second_rank.watch(lambda code: _second_rank_died(state, code))
    state.phase = "loading"
    started = time.perf_counter()
    from lab.refserver.budget import MIB
    from lab.refserver.parallel import init_group
    from lab.refserver.pipeline import Pipeline, pick_device
    from lab.refserver.runtime import set_threads

    log(f"imported torch and diffusers in {time.perf_counter() - started:.2f} s")
    state.threads = set_threads(config, ranks)
    device = pick_device(config, 0)
    group = init_group(0, ports.master, device) if ranks == 2 and ports.master else None
    pipeline = Pipeline(config, 0, group)
    if group is not None:
        group.barrier()
    state.peaks_mib = [round(pipeline.lifetime_peak / MIB, 3)] * ranks
    state.pipeline = pipeline
    params = sum(pipeline.parameters.values()) / 1e6
    dtype = str(pipeline.dtype).removeprefix("torch.")
    log(
        f"built {config.model_path} in {pipeline.build_s:.2f} s: {params:.1f}M params, "
        f"{device}, {dtype}, {state.threads} threads, cfg-parallel {ranks}"
    )


def _second_rank_died(state: ServerState, code: int) -> None:
    log(f"cfg-parallel rank 1 exited with code {code}; exiting")
    state.die(1)


def _warmup(state: ServerState) -> None:
    config = state.config
    if config.warmup_mode != "server":
        return
    state.phase = "warming up"
    jobs = [state.warmup_job(w, h, 1) for w, h in config.warmup_resolutions]
    width, height = config.warmup_resolutions[0]
    jobs += [state.warmup_job(width, height, f) for f in config.warmup_num_frames]
    with state.gen_lock:
        for job in jobs:
            state.warm(job)


def _wants_llm(argv: list[str]) -> bool:
    from lab.refserver.presets import LLM_SCHEME

    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == "--model-path" and i + 1 < len(argv) else arg
        if value.removeprefix("--model-path=").startswith(LLM_SCHEME):
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if _wants_llm(argv):  # ref-llm://: the LLM server, sglang srt's memory
        from lab.refserver.llm_server import main as llm_main

        return llm_main(argv)
    started = time.perf_counter()
    config = parse_config(argv)
    log(f"starting {config.model_path} (pid {os.getpid()})")
    _startup_faults(config)
    try:
        ports = _ports(config)
        state = ServerState(config)
        held = [p for p in (ports.scheduler,) if p is not None]
        if ports.master is not None and config.cfg_parallel_size == 1:
            held.append(ports.master)  # cfg-parallel's rendezvous binds it itself
        state.held_sockets = [hold_port(config.host, p) for p in held]
        httpd = RefHTTPServer((config.host, ports.http), state)
    except (PortError, OSError) as e:
        log(f"error: {e}")
        return 1
    threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()
    log(f"HTTP up on http://{config.host}:{ports.http} after {time.perf_counter() - started:.2f} s")
    try:
        _load(state, ports)
        _warmup(state)
    except BaseException:
        traceback.print_exc()
        log("fatal error during startup; exiting")
        state.die(1)
    fault = config.fault
    if fault is not None and fault.kind == "slow-warmup":
        state.phase = "warming up"
        log(f"fault: holding /health at 503 for {fault.seconds:g} s more")
        time.sleep(fault.seconds)
    state.phase = "ready"
    state.ready = True
    if fault is not None and fault.kind == "never-healthy":
        log("fault: never-healthy, /health stays 503")
    else:
        log(f"Server ready after {time.perf_counter() - started:.2f} s")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        state.die(0)
    return 0
