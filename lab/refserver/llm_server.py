"""`python -m lab.refserver --model-path ref-llm://<preset>`: the reference LLM server, whose
device memory behaves like sglang srt's.

At start it measures the device's memory D (on CUDA: the free memory the device reports, so under
the lab's VRAM ballast what the ballast left; on the CPU: `--device-memory-gib`, accounted by the
same ledger as the diffusion server, raising torch's own OutOfMemoryError). It then takes a static
pool of `--mem-fraction-static` x D (the weights, the rest the KV cache) and the preset's reserve
outside the pool (sglang's CUDA graphs and activation workspace): real tensors on CUDA, ledger
charges on the CPU. What is left is all a
request may add. `POST /weights_checker` compare moves the CPU snapshot of every weight to the
device at once, as sglang's checker does: at 0.88 of a 32 GiB card that is more than is left.

GET  /health                 503 while loading, then 200
GET  /v1/models              the model card
GET  /server_info            the memory plan (bytes) and the version (also /get_server_info)
POST /v1/chat/completions    OpenAI chat: messages, max_tokens, temperature, seed
POST /generate               sglang: text, sampling_params {max_new_tokens, temperature}
POST /weights_checker        {"action": "snapshot" | "compare" | "reset"} -> {success, message}

A fatal error (an OOM above all) prints torch's traceback unchanged and exits with code 1."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from lab.refserver import SERVER_VERSION
from lab.refserver.log import flush_all, log

DEFAULT_MEM_FRACTION = 0.88  # sglang's default for a single GPU
MAX_NEW_TOKENS = 512
CPU_DEFAULT_GIB = 1.0  # the CPU "device" without --device-memory-gib
DTYPES = ("auto", "float32", "bfloat16", "float16")


def _fraction(value: str) -> float:
    f = float(value)
    if not 0.0 < f < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return f


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lab.refserver",
        description="Reference LLM server (random weights, no download), sglang srt's memory.",
    )
    add = p.add_argument
    add("--model-path", required=True, help="ref-llm://tiny | ref-llm://qwen3-0.6b")
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=30000)
    add("--mem-fraction-static", type=_fraction, default=DEFAULT_MEM_FRACTION)
    add("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add("--dtype", choices=DTYPES, default="auto")
    add(
        "--device-memory-gib",
        type=float,
        default=None,
        help=f"the device's memory on the CPU (default {CPU_DEFAULT_GIB:g}); on CUDA at most this",
    )
    add("--random-seed", type=int, default=0)
    return p


@dataclass
class MemoryPlan:
    device_bytes: int  # D: what the device offered at start
    pool_bytes: int  # mem_fraction_static x D
    weight_bytes: int
    kv_bytes: int  # the pool less the weights
    reserve_bytes: int  # outside the pool

    @property
    def left_bytes(self) -> int:
        return self.device_bytes - self.pool_bytes - self.reserve_bytes


class LlmState:
    def __init__(self, ns: argparse.Namespace) -> None:
        self.ns = ns
        self.ready = False
        self.phase = "starting"
        self.lock = threading.Lock()
        self.model: Any = None
        self.plan: MemoryPlan | None = None
        self.snapshot: dict[str, Any] | None = None
        self.started_at = time.time()

    def load(self) -> None:
        import torch

        from lab.refserver import llm_model
        from lab.refserver.budget import GIB, DeviceLedger, hold_to_share

        ns = self.ns
        preset = llm_model.llm_preset_for(ns.model_path)
        want = ns.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device("cuda", 0) if want == "cuda" else torch.device("cpu")
        dtype_name = ns.dtype if ns.dtype != "auto" else "bfloat16" if want == "cuda" else "float32"
        dtype = getattr(torch, dtype_name)
        if device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(device)  # after our own CUDA context
            capacity = free
            share = hold_to_share(device)  # a GPU shared with other sandboxes: our share of it
            if share is not None:
                capacity = min(capacity, share)
            if ns.device_memory_gib is not None:
                capacity = min(capacity, int(ns.device_memory_gib * GIB))
        elif ns.device_memory_gib is not None:
            capacity = int(ns.device_memory_gib * GIB)
        else:
            capacity = int(CPU_DEFAULT_GIB * GIB)
        # On the CPU the ledger is the device; on a GPU the real allocator decides.
        self.ledger = DeviceLedger(0, capacity, enforce=device.type == "cpu")
        self.device, self.dtype = device, dtype
        pool = int(ns.mem_fraction_static * capacity)
        self.phase = "loading weights"
        el = torch.empty((), dtype=dtype).element_size()
        with torch.device("meta"):
            shape_only = llm_model.RefLlm(preset)
        weights = sum(t.numel() for t in shape_only.parameters()) * el
        self.ledger.alloc("weights", weights)
        self.model = llm_model.build(preset, device, dtype, ns.random_seed)
        kv = pool - weights
        if kv <= 0:
            raise RuntimeError(
                "Not enough memory. Please try to increase --mem-fraction-static. "
                f"(pool {pool} bytes, weights {weights} bytes)"
            )
        self.ledger.alloc("kv cache", kv)
        self.ledger.alloc("reserve", preset.reserve_bytes)
        if device.type == "cuda":  # real memory, as sglang's pool and graphs are
            self.kv_cache = torch.empty(kv, dtype=torch.uint8, device=device)
            self.reserve = torch.empty(preset.reserve_bytes, dtype=torch.uint8, device=device)
        # on the CPU the ledger holds them: pages never touched need not be asked of the host
        self.plan = MemoryPlan(capacity, pool, weights, kv, preset.reserve_bytes)
        self.preset = preset
        log(
            f"memory: device {capacity / GIB:.2f} GiB, static pool {pool / GIB:.2f} GiB "
            f"(mem_fraction_static={ns.mem_fraction_static}: weights {weights / GIB:.3f} GiB, "
            f"KV cache {kv / GIB:.2f} GiB), reserve {preset.reserve_bytes / GIB:.2f} GiB, "
            f"left {self.plan.left_bytes / GIB:.3f} GiB"
        )

    # ---- requests

    def generate(self, text: str, max_new: int, temperature: float, seed: int) -> dict[str, Any]:
        from lab.refserver import llm_model

        ids = llm_model.encode(text, self.preset.vocab)
        t0 = time.perf_counter()
        with self.lock:
            out = llm_model.generate(self.model, ids, max_new, temperature, seed)
        return {
            "text": llm_model.decode(out),
            "prompt_tokens": len(ids),
            "completion_tokens": len(out),
            "e2e_latency": time.perf_counter() - t0,
        }

    def weights_checker(self, action: str) -> str:
        import torch

        from lab.refserver import llm_model

        with self.lock, torch.no_grad():
            params = dict(self.model.named_parameters())
            if action == "snapshot":
                self.snapshot = {n: p.detach().to("cpu", copy=True) for n, p in params.items()}
                return f"snapshot of {len(params)} tensors"
            if action == "reset":
                for name, p in params.items():
                    llm_model.randomize(p, self.ns.random_seed + 1, name)
                return f"reset {len(params)} tensors to new random values"
            if self.snapshot is None:
                raise ValueError("no snapshot to compare with: post action 'snapshot' first")
            nbytes = sum(t.numel() * t.element_size() for t in self.snapshot.values())
            # the whole snapshot goes back to the device at once (sglang's _check_tensors)
            with self.ledger.hold("weights_checker compare", nbytes):
                back = {n: t.to(self.device) for n, t in self.snapshot.items()}
                differ = [n for n, t in back.items() if not torch.equal(t, params[n])]
                del back
            if differ:
                raise AssertionError(
                    f"{len(differ)} tensors differ from the snapshot: {differ[:3]}"
                )
            return f"{len(params)} tensors equal the snapshot"

    def card(self) -> dict[str, Any]:
        return {
            "id": self.ns.model_path,
            "object": "model",
            "created": int(self.started_at),
            "owned_by": "lab.refserver",
            "root": self.ns.model_path,
            "max_model_len": 4096,
        }


class LlmHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LlmHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, obj: Any) -> None:
        body = json.dumps(obj).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:
        state = self.server.state
        path = urlsplit(self.path).path.rstrip("/")
        if path in ("/health", "/health_generate"):
            self._json(
                200 if state.ready else 503, {"status": "ok" if state.ready else state.phase}
            )
        elif path == "/v1/models":
            if not state.ready:
                self._json(503, {"error": {"message": "still loading"}})
            else:
                self._json(200, {"object": "list", "data": [state.card()]})
        elif path in ("/server_info", "/get_server_info") and state.plan is not None:
            self._json(
                200,
                {
                    "model_path": state.ns.model_path,
                    "mem_fraction_static": state.ns.mem_fraction_static,
                    "device": str(state.device),
                    **vars(state.plan),
                    "left_bytes": state.plan.left_bytes,
                    "version": SERVER_VERSION,
                },
            )
        else:
            self._json(404, {"error": {"message": f"no route GET {path}"}})

    def do_POST(self) -> None:
        state = self.server.state
        path = urlsplit(self.path).path.rstrip("/")
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as e:
            self._json(400, {"error": {"message": f"bad JSON body: {e}"}})
            return
        if not state.ready:
            self._json(503, {"error": {"message": "still loading"}})
            return
        try:
            if path == "/v1/chat/completions":
                self._json(200, self._chat(body))
            elif path == "/generate":
                self._json(200, self._generate(body))
            elif path == "/weights_checker":
                self._weights_checker(body)
            else:
                self._json(404, {"error": {"message": f"no route POST {path}"}})
        except (ValueError, TypeError) as e:
            self._json(400, {"error": {"message": str(e)}})
        except Exception as e:
            _fatal(e)
            self._json(500, {"error": {"message": f"{type(e).__name__}: {e}"}})
            os._exit(1)

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        state = self.server.state
        model = body.get("model")
        if model not in (None, "", state.ns.model_path, "default"):
            raise ValueError(f"model {model!r} is not served here ({state.ns.model_path})")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list")
        text = "".join(f"{m.get('role', 'user')}: {m.get('content', '')}\n" for m in messages)
        max_new = _int(body.get("max_tokens", body.get("max_completion_tokens", 16)), "max_tokens")
        out = state.generate(
            text + "assistant: ", max_new, float(body.get("temperature", 1.0)), body.get("seed", 0)
        )
        usage = {
            "prompt_tokens": out["prompt_tokens"],
            "completion_tokens": out["completion_tokens"],
            "total_tokens": out["prompt_tokens"] + out["completion_tokens"],
        }
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": state.ns.model_path,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": out["text"]},
                    "finish_reason": "length",
                }
            ],
            "usage": usage,
        }

    def _generate(self, body: dict[str, Any]) -> dict[str, Any]:
        text = body.get("text")
        if not isinstance(text, str):
            raise ValueError("text must be a string")
        sp = body.get("sampling_params") or {}
        max_new = _int(sp.get("max_new_tokens", 16), "max_new_tokens")
        out = self.server.state.generate(
            text, max_new, float(sp.get("temperature", 1.0)), sp.get("seed", 0)
        )
        meta = {k: out[k] for k in ("prompt_tokens", "completion_tokens", "e2e_latency")}
        return {"text": out["text"], "meta_info": {**meta, "finish_reason": {"type": "length"}}}

    def _weights_checker(self, body: dict[str, Any]) -> None:
        action = body.get("action")
        if action not in ("snapshot", "compare", "reset"):
            raise ValueError(f"unsupported action {action!r}: snapshot, compare or reset")
        try:
            message = self.server.state.weights_checker(action)
        except AssertionError as e:
            self._json(200, {"success": False, "message": str(e)})
            return
        log(f"weights_checker {action}: {message}")
        self._json(200, {"success": True, "message": message})


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NEW_TOKENS:
        raise ValueError(f"{what} must be an integer between 1 and {MAX_NEW_TOKENS}")
    return value


def _fatal(exc: BaseException) -> None:
    traceback.print_exception(exc)
    log(f"fatal {type(exc).__name__}; exiting with code 1")
    flush_all()


class LlmHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: LlmState) -> None:
        self.state = state
        super().__init__(address, LlmHandler)


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    ns = build_parser().parse_args(argv)
    from lab.refserver.llm_model import llm_preset_for

    try:
        llm_preset_for(ns.model_path)
    except ValueError as e:
        build_parser().error(str(e))
    log(f"starting {ns.model_path} (pid {os.getpid()})")
    state = LlmState(ns)
    try:
        httpd = LlmHTTPServer((ns.host, ns.port), state)
    except OSError as e:
        log(f"error: port {ns.port} is unavailable on {ns.host}: {e.strerror}")
        return 1
    threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()
    try:
        state.load()
    except BaseException as e:
        _fatal(e)
        os._exit(1)
    state.phase, state.ready = "ready", True
    log(f"The server is fired up and ready to roll! ({time.perf_counter() - started:.2f} s)")
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    return 0
