"""The HTTP side: sglang's diffusion endpoints on the standard library's ThreadingHTTPServer.

GET  /liveness                       200 as soon as HTTP is up
GET  /health, /health_generate       503 until the server's own warmup is done, then 200
GET  /v1/models (and /models)        the model card
GET  /server_info                    model path and version ("nightly-lab-refserver <version>")
POST /v1/images/generations          JSON -> {created, data: [{b64_json: PNG}]}
POST /v1/images/edits                multipart (file field `image`) -> same
POST /v1/videos                      JSON or multipart (`input_reference`) -> {id, status}
GET  /v1/videos/{id}, /{id}/content  status; the video as an animated GIF

Generation runs one request at a time (a lock), like a single-GPU server. A fatal error (an OOM
above all) logs torch's traceback unchanged and ends the process with exit code 1.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from lab import perfdump
from lab.files import write_json_atomic
from lab.refserver import SERVER_VERSION, api, faults
from lab.refserver.api import GenerationJob, RequestError
from lab.refserver.args import ServerConfig
from lab.refserver.log import flush_all, log
from lab.refserver.media import gif_bytes, png_bytes
from lab.refserver.videos import VideoQueue, VideoRecord

MAX_BODY = 256 << 20
GENERATION_PATHS = {
    "/v1/images/generations": api.image_generation_job,
    "/v1/images/edits": api.image_edit_job,
    "/v1/videos": api.video_job,
}


class FatalError(Exception):
    """A generation error the server does not survive; its traceback is already in the log."""


@dataclass
class Generation:
    result: Any  # pipeline.RunResult
    queue_ms: float
    started: float  # perf_counter when the lock was taken


class ServerState:
    """What the handlers share: the config, the pipeline once built, readiness, the lock."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.preset = config.preset
        self.started_at = time.time()
        self.phase = "starting"
        self.ready = False
        self.pipeline: Any = None  # pipeline.Pipeline, set by cli once built
        self.second_rank: Any = None  # parallel.SecondRank with cfg-parallel 2
        self.threads = 0
        self.held_sockets: list[socket.socket] = []  # scheduler/master ports, held for life
        self.peaks_mib: list[float] = []
        self.gen_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._requests = 0
        self._warmed: set[tuple[str, int, int, int]] = set()
        self.videos = VideoQueue(self._render_video)

    # ---- lifecycle

    def die(self, code: int) -> None:
        if self.second_rank is not None:
            self.second_rank.stop()
        flush_all()
        os._exit(code)

    def next_request_number(self) -> int:
        with self._count_lock:
            self._requests += 1
            return self._requests

    # ---- generation

    def run_job(self, job: GenerationJob) -> Any:
        """Run one job on every rank (the caller holds the lock); keeps the lifetime peaks."""
        if self.second_rank is not None:
            self.second_rank.send(job)
        result = self.pipeline.run(job)
        peaks = result.accounted_peak_mib
        if len(self.peaks_mib) != len(peaks):
            self.peaks_mib = [0.0] * len(peaks)
        self.peaks_mib = [round(max(a, b), 3) for a, b in zip(self.peaks_mib, peaks, strict=True)]
        return result

    def warm(self, job: GenerationJob) -> None:
        started = time.perf_counter()
        self.run_job(job)
        frames = f"x{job.num_frames} frames" if job.kind == "video" else ""
        log(f"warmup {job.size_text}{frames} done in {time.perf_counter() - started:.2f} s")

    def warmup_job(self, width: int, height: int, frames: int) -> GenerationJob:
        return GenerationJob(
            kind="video" if frames > 1 else "image",
            prompt="warmup",
            negative_prompt="",
            width=width,
            height=height,
            num_frames=frames,
            n=1,
            steps=self.config.warmup_steps,
            guidance_scale=api.DEFAULT_GUIDANCE,
            seed=api.DEFAULT_SEED,
        )

    def generate(self, job: GenerationJob) -> Generation:
        asked = time.perf_counter()
        with self.gen_lock:
            started = time.perf_counter()
            try:
                shape = (job.kind, job.width, job.height, job.num_frames)
                if self.config.warmup_mode == "request" and shape not in self._warmed:
                    self.warm(self.warmup_job(job.width, job.height, job.num_frames))
                    self._warmed.add(shape)
                    started = time.perf_counter()
                result = self.run_job(job)
            except Exception as exc:
                from lab.refserver.runtime import is_out_of_memory

                # a broken cfg-parallel group cannot be trusted for the next request either
                if is_out_of_memory(exc) or self.second_rank is not None:
                    traceback.print_exception(exc)
                    log(f"fatal {type(exc).__name__} during generation; exiting with code 1")
                    raise FatalError(f"{type(exc).__name__}: {exc}") from exc
                raise
        return Generation(result, (started - asked) * 1e3, started)

    def write_perf_dump(self, job: GenerationJob, gen: Generation) -> None:
        if not job.perf_dump_path:
            return
        r = gen.result
        # sglang's format; what sglang keeps under "meta" the lab does too
        meta: dict[str, Any] = {
            "queue_ms": round(gen.queue_ms, 3),
            "accounted_peak_mib": max(r.accounted_peak_mib),
            "accounted_peak_mib_per_rank": r.accounted_peak_mib,
            "model": self.config.model_path,
            "size": job.size_text,
            "num_frames": job.num_frames,
            "n": job.n,
            "num_inference_steps": job.steps,
        }
        if r.device_peak_mib is not None:
            meta["device_peak_mib"] = max(r.device_peak_mib)
            meta["device_peak_mib_per_rank"] = r.device_peak_mib
        dump = perfdump.dump_document(
            request_id=f"ref-{uuid.uuid4().hex[:12]}",
            total_ms=(time.perf_counter() - gen.started) * 1e3,
            stages_ms=r.stages_ms,
            denoise_steps_ms=r.denoise_steps_ms,
            meta=meta,
        )
        try:
            write_json_atomic(job.perf_dump_path, dump)
        except OSError as e:
            log(f"perf dump to {job.perf_dump_path} failed: {e}")

    def _render_video(self, record: VideoRecord) -> bytes:
        started = time.perf_counter()
        try:
            gen = self.generate(record.job)
        except FatalError as e:
            record.status, record.error = "failed", str(e)
            self.die(1)
            raise
        content = gif_bytes(gen.result.frames, record.job.fps)
        self.write_perf_dump(record.job, gen)
        job = record.job
        elapsed = (time.perf_counter() - started) * 1e3
        log(f"video {record.id[-8:]} {job.size_text}x{job.num_frames} in {elapsed:.0f} ms")
        return content

    # ---- model card

    def card(self) -> dict[str, Any]:
        c, p = self.config, self.pipeline
        return {
            "id": c.model_path,
            "object": "model",
            "created": int(self.started_at),
            "owned_by": "lab.refserver",
            "root": c.model_path,
            "num_gpus": c.num_gpus,
            "task_type": c.task_type,
            "pipeline_class": c.pipeline_class,
            "preset": self.preset.name,
            "device": str(p.device),
            "dtype": str(p.dtype).removeprefix("torch."),
            "threads": self.threads,
            "cfg_parallel_size": c.cfg_parallel_size,
            "offload": {
                "text_encoder": c.text_encoder_offload,
                "dit": c.dit_offload,
                "vae": c.vae_offload,
                "pin_cpu_memory": c.pin_cpu_memory,
            },
            "device_memory_gib": c.device_memory_gib,
            "parameters": p.parameters,
            "accounted_peak_mib": max(self.peaks_mib),
            "accounted_peak_mib_per_rank": self.peaks_mib,
        }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RefHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # health polls would flood the log; generation requests get their own line

    @property
    def state(self) -> ServerState:
        return self.server.state

    # ---- plumbing

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode())

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": {"message": message}})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise RequestError(f"request body over {MAX_BODY >> 20} MiB")
        return self.rfile.read(length) if length > 0 else b""

    # ---- GET

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        state = self.state
        if path == "/liveness":
            self._json(200, {"status": "ok"})
        elif path in ("/health", "/health_generate"):
            never = state.config.fault is not None and state.config.fault.kind == "never-healthy"
            if state.ready and not never:
                self._json(200, {"status": "ok"})
            else:
                self._json(503, {"status": state.phase})
        elif path in ("/v1/models", "/models"):
            if state.pipeline is None:
                self._error(503, f"model {state.config.model_path} is still loading")
            elif path == "/models":
                card = state.card()
                self._json(200, {"model_path": card["id"], **card})
            else:
                self._json(200, {"object": "list", "data": [state.card()]})
        elif path == "/server_info":  # sglang's answers before warmup too
            self._json(200, {"model_path": state.config.model_path, "version": SERVER_VERSION})
        elif path.startswith("/v1/videos/"):
            self._get_video(path.removeprefix("/v1/videos/"))
        else:
            self._error(404, f"no route GET {path}")

    def _get_video(self, rest: str) -> None:
        video_id, _, tail = rest.partition("/")
        record = self.state.videos.get(video_id)
        if record is None or tail not in ("", "content"):
            self._error(404, f"no video {video_id!r}")
        elif tail == "":
            self._json(200, record.to_json())
        elif record.status != "completed" or record.content is None:
            self._error(409, f"video {video_id} is {record.status}, not completed")
        else:
            self._send(200, record.content, "image/gif")

    # ---- POST

    def do_POST(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        make_job = GENERATION_PATHS.get(path)
        try:
            raw = self._body()
        except (RequestError, ValueError) as e:
            self._error(400, str(e))
            return
        if make_job is None:
            self._error(404, f"no route POST {path}")
            return
        state = self.state
        number = state.next_request_number()
        if self._act_out_fault(number):
            return
        if state.pipeline is None:
            self._error(503, f"model {state.config.model_path} is still loading")
            return
        try:
            body = api.parse_body(self.headers.get("Content-Type", ""), raw)
            job = make_job(body, state.preset, state.config.model_path)
        except RequestError as e:
            log(f"POST {path} 400: {e}")
            self._error(400, str(e))
            return
        if path == "/v1/videos":
            record = state.videos.submit(job, state.config.model_path)
            log(f"POST {path} queued {record.id[-8:]}: {job.size_text}x{job.num_frames}")
            self._json(200, record.to_json())
            return
        self._images(path, job)

    def _images(self, path: str, job: GenerationJob) -> None:
        state = self.state
        try:
            gen = state.generate(job)
        except FatalError as e:
            self._error(500, str(e))
            state.die(1)
            return
        except Exception as e:
            traceback.print_exception(e)
            flush_all()
            self._error(500, f"{type(e).__name__}: {e}")
            return
        created = int(time.time())
        data = [{"b64_json": base64.b64encode(png_bytes(f)).decode()} for f in gen.result.frames]
        state.write_perf_dump(job, gen)
        elapsed = (time.perf_counter() - gen.started) * 1e3
        log(f"POST {path} 200 {job.size_text} n={job.n} steps={job.steps} in {elapsed:.0f} ms")
        self._json(200, {"created": created, "data": data})

    def _act_out_fault(self, number: int) -> bool:
        """Act out a request fault due on this request; True when it answered the request."""
        fault = self.state.config.fault
        if fault is None or not fault.fires_on(number):
            return False
        if fault.kind == "hang-request":
            faults.print_fatal_line(f"fault: hanging generation request {number}")
            faults.hang_forever()
        elif fault.kind == "fatal-line":
            faults.print_fatal_line(fault.text)
            faults.hang_forever()
        elif fault.kind == "exit-request":
            faults.print_fatal_line(f"fault: exiting during generation request {number}")
            self.state.die(fault.code or 0)
        elif fault.kind == "malformed-json":
            faults.print_fatal_line(f"fault: malformed JSON for generation request {number}")
            self._send(200, b'{"created": 0, "data": [{"b64_json": "iVBORw0')
            return True
        return False


class RefHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], state: ServerState) -> None:
        self.state = state
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that went away is not the server's error
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)
