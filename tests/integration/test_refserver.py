"""The reference diffusion server, run for real: `python -m lab.refserver` on loopback ports.

One warm ref://tiny server is shared by the endpoint tests; the fault, memory and port tests need
servers of their own and start them together, since each start costs a few seconds of imports.
"""

from __future__ import annotations

import base64
import io
import json
import os
import resource
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from PIL import Image, ImageSequence
from refserver_helpers import HOST, RefServer, free_port

TINY_BUDGET_GIB = "0.045"  # README: ref://tiny fails as configured, passes with offload / cfg 2
TINY_BUDGET_MIB = 46.08
DEVICE_OOM = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate"


def start_all(servers: dict[str, RefServer]) -> dict[str, RefServer]:
    for server in servers.values():
        server.start()
    return servers


def png_of(response: requests.Response) -> list[bytes]:
    assert response.status_code == 200, response.text
    return [base64.b64decode(item["b64_json"]) for item in response.json()["data"]]


def wait_video(server: RefServer, video_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = server.get(f"/v1/videos/{video_id}").json()
        if status["status"] in ("completed", "failed"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"video {video_id} not done within {timeout} s")


def make_video(server: RefServer, **body: Any) -> dict[str, Any]:
    response = server.post("/v1/videos", json={"prompt": "a cat walks", **body})
    assert response.status_code == 200, response.text
    assert response.json()["status"] in ("queued", "in_progress")
    return wait_video(server, response.json()["id"])


def png_file(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


# ---------------------------------------------------------------- the shared server


@pytest.fixture(scope="module")
def server() -> Iterator[RefServer]:
    with RefServer("--model-path", "ref://tiny", "--warmup-mode", "server") as s:
        s.wait_ready()
        yield s


def test_liveness_health_and_model_card(server: RefServer) -> None:
    assert server.get("/liveness").status_code == 200
    assert server.get("/health").status_code == 200
    assert server.get("/health_generate").status_code == 200
    listing = server.get("/v1/models").json()
    assert listing["object"] == "list"
    card = listing["data"][0]
    assert card["id"] == "ref://tiny"
    assert card["object"] == "model"
    assert card["num_gpus"] == 1
    assert card["task_type"] == "text-to-image"
    assert card["pipeline_class"]
    assert card["accounted_peak_mib"] > 0
    assert server.get("/models").json()["model_path"] == "ref://tiny"  # sglang's flat card
    assert "Server ready" in server.log()


def test_image_generation_returns_pngs_of_the_requested_size(server: RefServer) -> None:
    body = {"model": "ref://tiny", "prompt": "a red fox", "size": "192x128", "n": 2}
    images = png_of(server.post("/v1/images/generations", json=body))
    assert len(images) == 2
    for data in images:
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.size) == ("PNG", (192, 128))


def test_same_request_and_seed_give_identical_bytes(server: RefServer) -> None:
    body = {"prompt": "a lighthouse at dusk", "seed": 7, "num_inference_steps": 3}
    first = png_of(server.post("/v1/images/generations", json=body))
    again = png_of(server.post("/v1/images/generations", json=body))
    other = png_of(server.post("/v1/images/generations", json={**body, "seed": 8}))
    assert first == again
    assert first != other


def test_perf_dump_is_written_with_stage_timings(server: RefServer, tmp_path: Path) -> None:
    dump = tmp_path / "perf" / "dump.json"
    body = {"prompt": "a boat", "num_inference_steps": 3, "perf_dump_path": str(dump)}
    png_of(server.post("/v1/images/generations", json=body))
    perf = json.loads(dump.read_text())
    # sglang's perf-dump format and stage names (lab/perfdump.py names the upstream file)
    assert perf["total_duration_ms"] > 0
    names = [s["name"] for s in perf["steps"]]
    assert names == ["TextEncodingStage", "DenoisingStage", "DecodingStage"]
    assert all(s["duration_ms"] >= 0 for s in perf["steps"])
    assert [s["step"] for s in perf["denoise_steps_ms"]] == [0, 1, 2]
    assert perf["meta"]["accounted_peak_mib"] > 0
    assert [p.name for p in dump.parent.iterdir()] == ["dump.json"]  # no temp file left


def test_image_edit_takes_a_multipart_image(server: RefServer) -> None:
    response = server.post(
        "/v1/images/edits",
        files={"image": ("in.png", png_file(200, 150), "image/png")},
        data={"prompt": "make it blue", "seed": "3", "num_inference_steps": "2"},
    )
    (data,) = png_of(response)
    assert Image.open(io.BytesIO(data)).size == (192, 144)  # the input's size, to 16 px


def test_video_job_completes_and_its_content_is_a_gif_of_the_frames(server: RefServer) -> None:
    status = make_video(server, num_frames=5, size="128x128", fps=8, num_inference_steps=2)
    assert status["status"] == "completed", status
    content = server.get(f"/v1/videos/{status['id']}/content")
    assert content.status_code == 200
    gif = Image.open(io.BytesIO(content.content))
    assert gif.format == "GIF"
    assert gif.size == (128, 128)
    assert sum(1 for _ in ImageSequence.Iterator(gif)) == 5


def test_video_from_an_input_reference_uses_seconds_and_fps(server: RefServer) -> None:
    response = server.post(
        "/v1/videos",
        files={"input_reference": ("ref.png", png_file(300, 300), "image/png")},
        data={"prompt": "it moves", "seconds": "0.5", "fps": "8", "size": "128x128"},
    )
    assert response.status_code == 200, response.text
    status = wait_video(server, response.json()["id"])
    assert status["status"] == "completed"
    assert status["num_frames"] == 4


def test_video_requests_take_response_format_b64_json_as_sglangs_nightly_sends_it(
    server: RefServer,
) -> None:
    shape = {"num_frames": 3, "size": "64x64", "num_inference_steps": 1}
    status = make_video(server, response_format="b64_json", **shape)
    assert status["status"] == "completed", status
    response = server.post(
        "/v1/videos",
        files={"input_reference": ("ref.png", png_file(64, 64), "image/png")},
        data={"prompt": "it moves", "response_format": "b64_json", "num_frames": "3"},
    )
    assert response.status_code == 200, response.text
    assert wait_video(server, response.json()["id"])["status"] == "completed"
    refused = server.post("/v1/videos", json={"prompt": "x", "response_format": "url", **shape})
    assert refused.status_code == 400 and "response_format" in refused.text


def test_unknown_video_is_404(server: RefServer) -> None:
    assert server.get("/v1/videos/video_nope").status_code == 404
    assert server.get("/v1/videos/video_nope/content").status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": "x", "size": "100x100"}, "multiple of 16"),
        ({"prompt": "x", "size": "large"}, "size"),
        ({"prompt": "x", "num_inference_steps": 0}, "num_inference_steps"),
        ({"prompt": "x", "num_inference_steps": 1000}, "num_inference_steps"),
        ({"size": "256x256"}, "prompt is required"),
        ({"prompt": "x", "model": "black-forest-labs/FLUX.1-dev"}, "not served here"),
        ({"prompt": "x", "n": "two"}, "n must be an integer"),
    ],
)
def test_bad_request_gets_400_and_the_server_stays_up(
    server: RefServer, body: dict[str, Any], message: str
) -> None:
    response = server.post("/v1/images/generations", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert server.get("/health").status_code == 200


def test_malformed_body_and_edit_without_image_get_400(server: RefServer) -> None:
    bad = server.post("/v1/images/generations", data=b"{nope", headers={"Content-Type": "x"})
    assert bad.status_code == 400
    no_image = server.post("/v1/images/edits", files={"mask": ("m.png", png_file(64, 64))})
    assert no_image.status_code == 400
    assert "image" in no_image.json()["error"]["message"]


def test_unknown_request_fields_are_ignored(server: RefServer) -> None:
    body = {"prompt": "x", "num_inference_steps": 1, "enable_teacache": True, "extra": {"a": 1}}
    assert len(png_of(server.post("/v1/images/generations", json=body))) == 1


# ---------------------------------------------------------------- flags and ports


def test_unknown_flag_exits_2_with_argparse_message() -> None:
    with RefServer("--no-such-flag") as s:
        assert s.wait_exit(30) == 2
    assert "unrecognized arguments: --no-such-flag" in s.log()


def test_bad_fault_spec_exits_2() -> None:
    with RefServer("--fault", "explode:now") as s:
        assert s.wait_exit(30) == 2
    assert "unknown fault" in s.log()


@pytest.mark.parametrize("flag", ["--port", "--master-port", "--scheduler-port"])
def test_strict_ports_fail_at_start_when_a_requested_port_is_taken(flag: str) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--strict-ports", flag, str(port)]
        server = RefServer(*args, port=port if flag == "--port" else None)
        with server:
            assert server.wait_exit(30) == 1
    assert f"port {port} is already in use" in server.log()


def test_without_strict_ports_a_taken_port_moves_to_the_next_free_one() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with RefServer(port=port) as s:
            line = s.wait_for_line("is in use, using", 30)
            moved = int(line.rsplit(" ", 1)[1])
            assert moved != port
            assert f"HTTP up on http://{HOST}:{moved}" in s.wait_for_line("HTTP up on", 30)
            assert requests.get(f"http://{HOST}:{moved}/liveness", timeout=5).status_code == 200


@pytest.mark.slow
def test_health_is_503_until_warmup_finished_and_request_mode_warms_each_shape_once() -> None:
    args = ["--warmup-mode", "request", "--task-type", "text-to-video", "--fault", "slow-warmup:3"]
    with RefServer(*args) as s:
        s.wait_live()
        s.wait_for_line("holding /health at 503")
        assert s.get("/health").status_code == 503
        assert s.get("/liveness").status_code == 200
        s.wait_ready(30)
        assert s.card()["task_type"] == "text-to-video"
        body = {"prompt": "x", "size": "128x128", "num_inference_steps": 1}
        for _ in range(2):
            png_of(s.post("/v1/images/generations", json=body))
        assert s.log().count("warmup 128x128 done") == 1


# ---------------------------------------------------------------- faults


QUICK = {"prompt": "x", "size": "64x64", "num_inference_steps": 1}
FATAL_TEXT = "RuntimeError: CUDA error: boom"


@pytest.fixture(scope="module")
def fault_servers() -> Iterator[dict[str, RefServer]]:
    servers = start_all(
        {
            "never-healthy": RefServer(env={"REFSERVER_FAULT": "never-healthy"}),
            "hang-request": RefServer("--fault", "hang-request:2"),
            "fatal-line": RefServer("--fault", f"fatal-line:request2:{FATAL_TEXT}"),
            "malformed-json": RefServer("--fault", "malformed-json:1"),
            "exit-request": RefServer(env={"REFSERVER_FAULT": "exit-request:1:9"}),
            "flood": RefServer("--fault", "flood:20000"),
        }
    )
    yield servers
    for s in servers.values():
        s.stop()


def test_fault_exit_startup_exits_with_the_code_before_http() -> None:
    with RefServer(env={"REFSERVER_FAULT": "exit-startup:7"}) as s:
        assert s.wait_exit(30) == 7
        with pytest.raises(requests.ConnectionError):
            s.get("/liveness", timeout=2)
    assert "fault: exiting during startup" in s.lines


def test_fault_fatal_line_at_startup_prints_the_text_verbatim_then_hangs() -> None:
    text = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB: GPU 0"
    with RefServer("--fault", f"fatal-line:startup:{text}") as s:
        s.wait_for_line(text, 30)
        assert text in s.lines
        time.sleep(1)
        assert not s.exited()
        with pytest.raises(requests.ConnectionError):
            s.get("/liveness", timeout=2)


@pytest.mark.slow  # the first test to use fault_servers waits for their start
def test_fault_never_healthy(fault_servers: dict[str, RefServer]) -> None:
    s = fault_servers["never-healthy"]
    s.wait_for_line("never-healthy, /health stays 503")
    assert s.get("/liveness").status_code == 200
    assert s.get("/v1/models").status_code == 200
    for _ in range(3):
        assert s.get("/health").status_code == 503
        time.sleep(0.3)


def test_fault_hang_request_hangs_only_that_request(fault_servers: dict[str, RefServer]) -> None:
    s = fault_servers["hang-request"].wait_ready()
    png_of(s.post("/v1/images/generations", json=QUICK))
    with pytest.raises(requests.Timeout):
        s.post("/v1/images/generations", json=QUICK, timeout=2)
    assert not s.exited()
    assert s.get("/liveness").status_code == 200


def test_fault_fatal_line_in_a_request_prints_then_hangs(
    fault_servers: dict[str, RefServer],
) -> None:
    s = fault_servers["fatal-line"].wait_ready()
    png_of(s.post("/v1/images/generations", json=QUICK))
    assert FATAL_TEXT not in s.lines
    with pytest.raises(requests.Timeout):
        s.post("/v1/images/generations", json=QUICK, timeout=2)
    s.wait_for_line(FATAL_TEXT, 5)
    assert FATAL_TEXT in s.lines
    assert not s.exited()


def test_fault_malformed_json(fault_servers: dict[str, RefServer]) -> None:
    s = fault_servers["malformed-json"].wait_ready()
    first = s.post("/v1/images/generations", json=QUICK)
    assert first.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(first.text)
    png_of(s.post("/v1/images/generations", json=QUICK))  # only the first is broken


def test_fault_exit_request_exits_with_the_code(fault_servers: dict[str, RefServer]) -> None:
    s = fault_servers["exit-request"].wait_ready()
    with pytest.raises(requests.ConnectionError):
        s.post("/v1/images/generations", json=QUICK)
    assert s.wait_exit(10) == 9


def test_fault_flood_prints_the_lines_then_serves(fault_servers: dict[str, RefServer]) -> None:
    s = fault_servers["flood"].wait_ready()
    flood = [line for line in s.lines if line.startswith("flood line ")]
    assert len(flood) == 20000
    assert all(90 <= len(line) <= 110 for line in flood[:100])
    png_of(s.post("/v1/images/generations", json=QUICK))


# ---------------------------------------------------------------- memory


@pytest.fixture(scope="module")
def memory_servers() -> Iterator[dict[str, RefServer]]:
    budget = ["--device-memory-gib", TINY_BUDGET_GIB]
    servers = start_all(
        {
            "warmup-oom": RefServer(*budget, "--warmup-mode", "server"),
            "video-oom": RefServer(*budget),
            "dit-offload": RefServer(*budget, "--dit-cpu-offload"),
            "cfg-parallel": RefServer(*budget, "--cfg-parallel-size", "2", "--num-gpus", "2"),
            "text-encoder-offload": RefServer("--text-encoder-cpu-offload"),
            "vae-offload": RefServer("--vae-cpu-offload"),
            "layerwise": RefServer("--dit-layerwise-offload", "true", "--pin-cpu-memory"),
        }
    )
    yield servers
    for s in servers.values():
        s.stop()


IMAGE_256 = {"prompt": "x", "size": "256x256", "num_inference_steps": 1}
VIDEO_128x64 = {"size": "128x128", "num_frames": 64, "num_inference_steps": 1}  # denoise-bound


@pytest.mark.slow
def test_device_budget_oom_during_server_warmup_exits_1(
    memory_servers: dict[str, RefServer],
) -> None:
    s = memory_servers["warmup-oom"]
    assert s.wait_exit(90) == 1
    log = s.log()
    assert "Traceback (most recent call last)" in log
    assert DEVICE_OOM in log
    assert f"GPU 0 has a total capacity of {TINY_BUDGET_MIB:.2f} MiB" in log
    assert "Server ready" not in log


@pytest.mark.slow
def test_device_budget_image_passes_with_dit_offload(memory_servers: dict[str, RefServer]) -> None:
    # as configured, the same budget fails at the 256x256 warmup (the test above)
    offload = memory_servers["dit-offload"].wait_ready()
    png_of(offload.post("/v1/images/generations", json=IMAGE_256))
    assert offload.card()["accounted_peak_mib"] <= TINY_BUDGET_MIB


@pytest.mark.slow
def test_device_budget_video_fails_as_configured_and_passes_with_cfg_parallel_2(
    memory_servers: dict[str, RefServer],
) -> None:
    configured = memory_servers["video-oom"].wait_ready()
    configured.post("/v1/videos", json={"prompt": "x", **VIDEO_128x64})
    assert configured.wait_exit(60) == 1
    log = configured.log()
    assert DEVICE_OOM in log
    assert log.index("Traceback (most recent call last)") < log.index(DEVICE_OOM)

    cfg = memory_servers["cfg-parallel"].wait_ready(120)
    status = make_video(cfg, **VIDEO_128x64)
    assert status["status"] == "completed", status
    per_rank = cfg.card()["accounted_peak_mib_per_rank"]
    assert len(per_rank) == 2
    assert max(per_rank) <= TINY_BUDGET_MIB


def accounted_peak(server: RefServer, path: str, body: dict[str, Any], dump: Path) -> float:
    """The accounted peak of one request, read from the perf dump the server writes."""
    body = {"prompt": "x", **body, "perf_dump_path": str(dump)}
    response = server.post(path, json=body)
    if path == "/v1/videos":
        assert wait_video(server, response.json()["id"])["status"] == "completed"
    else:
        png_of(response)
    return float(json.loads(dump.read_text())["meta"]["accounted_peak_mib"])


PLACEMENTS = {  # server name -> (text encoder offloaded, transformer residency, vae offloaded)
    "resident": (False, "resident", False),
    "text-encoder-offload": (True, "resident", False),
    "dit-offload": (False, "component", False),
    "layerwise": (False, "layerwise", False),
    "vae-offload": (False, "resident", True),
}


@pytest.mark.slow
def test_each_offload_flag_lowers_the_accounted_peak_as_the_readme_estimates(
    server: RefServer, memory_servers: dict[str, RefServer], tmp_path: Path
) -> None:
    from lab.refserver.budget import MIB, Placement, estimate_peak
    from lab.refserver.model import build_on_meta, weight_bytes
    from lab.refserver.presets import PRESETS

    # an image peaks in the VAE decode, a many-frame video in the denoise: each flag helps one
    image = {"size": "256x256", "num_inference_steps": 1}
    video = {"size": "128x128", "num_frames": 32, "num_inference_steps": 1}
    tiny = PRESETS["tiny"]
    weights = weight_bytes(build_on_meta(tiny), 4)
    servers = {"resident": server, **memory_servers}
    peaks: dict[str, tuple[float, float]] = {}
    for name, placement in PLACEMENTS.items():
        s = servers[name].wait_ready()
        peaks[name] = (
            accounted_peak(s, "/v1/images/generations", image, tmp_path / f"{name}-i.json"),
            accounted_peak(s, "/v1/videos", video, tmp_path / f"{name}-v.json"),
        )
        place = Placement(*placement)
        expected = (
            estimate_peak(tiny, weights, place, el=4, width=256, height=256),
            estimate_peak(tiny, weights, place, el=4, width=128, height=128, frames=32),
        )
        assert peaks[name] == pytest.approx([e / MIB for e in expected], abs=0.01), name
    base = peaks.pop("resident")
    for name, (image_mib, video_mib) in peaks.items():
        assert image_mib <= base[0] and video_mib <= base[1], (name, peaks, base)
        assert image_mib < base[0] or video_mib < base[1], (name, peaks, base)


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


@pytest.mark.slow
def test_real_cpu_oom_under_an_address_space_limit_logs_torch_and_exits() -> None:
    with RefServer("--warmup-mode", "server", preexec_fn=_limit_address_space) as s:
        s.wait_ready()
        # 1024 frames of 4096x4096: the first latents alone are 16 GiB, over the 3 GiB limit
        huge = {"prompt": "x", "size": "4096x4096", "num_frames": 1024}
        response = s.post("/v1/videos", json=huge)
        assert response.status_code == 200
        assert s.wait_exit(60) == 1
    log = s.log()
    assert "Traceback (most recent call last)" in log
    assert "DefaultCPUAllocator: can't allocate memory" in log


@pytest.mark.slow
def test_cfg_parallel_2_lowers_peak_rss_of_each_rank_and_dies_with_rank_0() -> None:
    servers = start_all({"single": RefServer(), "cfg": RefServer("--cfg-parallel-size", "2")})
    try:
        rise: dict[str, list[float]] = {}
        for name, s in servers.items():
            s.wait_ready(120)
            pids = [s.proc.pid] + [c.pid for c in psutil.Process(s.proc.pid).children()]
            before = [peak_rss_mib(pid) for pid in pids]
            status = make_video(s, size="128x128", num_frames=64, num_inference_steps=1)
            assert status["status"] == "completed"
            rise[name] = [peak_rss_mib(pid) - b for pid, b in zip(pids, before, strict=True)]
        assert len(rise["cfg"]) == 2
        # one branch per rank: each rank's denoise activations are about half
        assert max(rise["cfg"]) < 0.8 * rise["single"][0], rise

        rank0 = servers["cfg"].proc
        rank1 = psutil.Process(rank0.pid).children()[0]
        os.kill(rank0.pid, signal.SIGKILL)
        rank1.wait(10)  # raises if rank 1 outlives rank 0
    finally:
        for s in servers.values():
            s.stop()


def test_free_port_helper_gives_a_bindable_port() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind((HOST, port))
