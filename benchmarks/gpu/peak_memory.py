"""Peak GPU memory of reference presets per memory mode, from NVML, on a real GPU.

Starts `python -m lab.refserver` per (preset, mode), sends one 1024² request, and samples NVML
(the lab's own telemetry sampler, every 50 ms). Run on the GPU machine:
  python3 benchmarks/gpu/peak_memory.py OUT.json [preset ...]"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import requests

from lab.sandbox.server import ServerProcess
from lab.sandbox.telemetry import Nvml, Sampler

MODES = {
    "plain": [],
    "offload": ["--dit-cpu-offload", "--text-encoder-cpu-offload", "--vae-cpu-offload"],
    "layerwise": ["--dit-layerwise-offload", "--text-encoder-cpu-offload", "--vae-cpu-offload"],
    "cfg-parallel-2": ["--cfg-parallel-size", "2", "--num-gpus", "2"],
}


def uuids(nvml: Nvml) -> list[str]:
    nv = nvml._nv
    return [nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetHandleByIndex(i))
            for i in range(nv.nvmlDeviceGetCount())]  # fmt: skip


def measure(preset: str, mode: str, devices: list[str], port: int = 30000) -> dict:
    nvml = Nvml()
    cmd = [sys.executable, "-m", "lab.refserver", "--model-path", f"ref://{preset}",
           "--port", str(port), "--warmup-mode", "off", *MODES[mode]]  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        t0 = time.monotonic()
        server = ServerProcess(cmd, Path(d) / "server.log")
        sampler = Sampler(server.group_pids, nvml, devices).start()
        try:
            while True:
                if server.poll() is not None:
                    raise RuntimeError("server exited: " + " | ".join(server.tail_lines(5)))
                try:
                    if (
                        requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code
                        == 200
                    ):
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.05)
            startup = time.monotonic() - t0
            t1 = time.monotonic()
            r = requests.post(f"http://127.0.0.1:{port}/v1/images/generations", timeout=600,
                              json={"prompt": "a lighthouse at dusk", "size": "1024x1024",
                                    "num_inference_steps": 2, "seed": 1})  # fmt: skip
            latency = time.monotonic() - t1
            ok = r.status_code == 200
        finally:
            server.stop()
            tel = sampler.stop()
    return {"preset": preset, "mode": mode, "ok": ok, "startup_s": round(startup, 1),
            "latency_s": round(latency, 2), "peak_tree_mib": tel.peak_gpu_memory_mib,
            "peak_per_device_mib": tel.peak_gpu_memory_per_device_mib}  # fmt: skip


def main() -> None:
    out = Path(sys.argv[1])
    presets = sys.argv[2:] or ["medium", "large", "xl"]
    devices = uuids(Nvml())
    modes = [m for m in MODES if m != "cfg-parallel-2" or len(devices) >= 2]
    rows = []
    for preset in presets:
        for mode in modes:
            try:
                rows.append(measure(preset, mode, devices[: 2 if mode == "cfg-parallel-2" else 1]))
            except Exception as e:
                rows.append({"preset": preset, "mode": mode, "ok": False, "error": str(e)[:300]})
            print(json.dumps(rows[-1]), flush=True)
            out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
