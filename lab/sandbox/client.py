"""Requests to a server and the checks on what comes back: image, video (submit → poll →
download), image-conditioned multipart, in the API style of each framework. The HTTP mechanics
live here; what a request says (its body) is the framework's (lab/frameworks)."""

from __future__ import annotations

import base64
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from lab.config import Case, FrameworkConfig
from lab.frameworks.base import Framework

POLL_INTERVAL_S = 0.05
IDENTICAL_PSNR_DB = 100.0  # identical outputs; JSON has no infinity


class BadResponse(Exception):
    """The server answered, but not with what the case asked for."""


@dataclass
class Output:
    kind: str  # "image" | "video" | "text"
    data: bytes
    fmt: str  # "png", "gif", "mp4", ...
    latency_s: float
    frames: int | None = None
    notes: list[str] = field(default_factory=list)
    output_tokens: int | None = None  # text: completion tokens the server reported


def server_version(base_url: str, path: str | None) -> str | None:
    """The `version` the server reports at `path`; None when it has no such endpoint or its
    answer holds none (the version is provenance, never a reason to fail an attempt)."""
    if path is None:
        return None
    try:
        r = requests.get(base_url.rstrip("/") + path, timeout=(0.5, 5.0))
        version = r.json().get("version") if r.status_code == 200 else None
    except (requests.RequestException, ValueError, AttributeError):
        return None
    return version if isinstance(version, str) and version else None


def sized_prompts(prompt: str, count: int) -> list[str]:
    """`count` different prompts of the same length (servers cache encodings of seen inputs)."""
    return [f"{prompt} #{i:03d}" for i in range(1, count + 1)]


class Client:
    def __init__(
        self,
        base_url: str,
        case: Case,
        framework: Framework,
        cfg: FrameworkConfig,
        timeout_s: float,
        image_input: bytes | None,
        out_dir: Path,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.case = case
        self.framework = framework
        self.style = framework.style(cfg)
        self.timeout_s = timeout_s
        self.image_input = image_input
        self.out_dir = out_dir
        self.http = requests.Session()
        # sglang's API (and the reference server's) take `perf_dump_path`; a custom server only
        # when its config says so (lab/sandbox/case.py waits for the file)
        self.writes_perf_dumps = framework.perf_dumps(cfg)

    def _body(self, prompt: str) -> dict[str, Any]:
        return self.framework.request_body(self.case, prompt, self.image_input)

    def send(self, prompt: str, perf_dump_path: Path | None = None) -> Output:
        t0 = time.perf_counter()
        if self.style == "chat":
            out = self._chat(prompt)
        elif self.style == "vllm-chat":
            out = self._vllm_chat(prompt)
        elif self.style == "lightx2v":
            out = self._lightx2v(prompt)
        elif self.case.is_video:
            out = self._openai_video(prompt, perf_dump_path)
        else:
            out = self._openai_image(prompt, perf_dump_path)
        out.latency_s = time.perf_counter() - t0
        check_output(out, self.case)
        return out

    # --- sglang / reference: OpenAI-style endpoints -----------------------------------------
    def _openai_image(self, prompt: str, perf: Path | None) -> Output:
        body = self._body(prompt)
        if perf is not None and self.writes_perf_dumps:
            body["perf_dump_path"] = str(perf)
        if self.case.needs_image_input:
            files = {"image": ("input.png", self.image_input or b"", "image/png")}
            form = {
                k: (json.dumps(v) if isinstance(v, dict | list) else str(v))
                for k, v in body.items()
            }
            r = self.http.post(
                f"{self.base}/v1/images/edits", data=form, files=files, timeout=self.timeout_s
            )
        else:
            r = self.http.post(
                f"{self.base}/v1/images/generations", json=body, timeout=self.timeout_s
            )
        data = _json(r)
        try:
            b64 = data["data"][0]["b64_json"]
        except (KeyError, IndexError, TypeError):
            raise BadResponse(f"no data[0].b64_json in the answer: {_short(data)}") from None
        return Output("image", _b64(b64), "png", 0.0)

    def _openai_video(self, prompt: str, perf: Path | None) -> Output:
        body = self._body(prompt)
        if perf is not None and self.writes_perf_dumps:
            body["perf_dump_path"] = str(perf)
        if self.case.needs_image_input:
            form = {
                k: (json.dumps(v) if isinstance(v, dict | list) else str(v))
                for k, v in body.items()
            }
            files = {"input_reference": ("input.png", self.image_input or b"", "image/png")}
            r = self.http.post(
                f"{self.base}/v1/videos", data=form, files=files, timeout=self.timeout_s
            )
        else:
            r = self.http.post(f"{self.base}/v1/videos", json=body, timeout=self.timeout_s)
        job = _json(r)
        vid = job.get("id") if isinstance(job, dict) else None
        if not vid:
            raise BadResponse(f"no video id in the answer: {_short(job)}")
        deadline = time.monotonic() + self.timeout_s
        while True:
            st = _json(self.http.get(f"{self.base}/v1/videos/{vid}", timeout=self.timeout_s))
            status = st.get("status") if isinstance(st, dict) else None
            if status == "completed":
                break
            if status == "failed":
                raise BadResponse(f"video {vid} failed: {_short(st.get('error'))}")
            if status not in ("queued", "in_progress", "processing", "pending"):
                raise BadResponse(f"video {vid}: unknown status {status!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"video {vid} not completed after {self.timeout_s:.0f} s")
            time.sleep(POLL_INTERVAL_S)
        content = self.http.get(f"{self.base}/v1/videos/{vid}/content", timeout=self.timeout_s)
        if content.status_code != 200:
            raise BadResponse(f"GET /v1/videos/{vid}/content answered {content.status_code}")
        return Output("video", content.content, _video_format(content.content), 0.0)

    # --- LLM servers: OpenAI chat completions, greedy --------------------------------------------
    def _chat(self, prompt: str) -> Output:
        body = self._body(prompt)
        data = _json(
            self.http.post(f"{self.base}/v1/chat/completions", json=body, timeout=self.timeout_s)
        )
        try:
            text = data["choices"][0]["message"]["content"]
            tokens = int(data["usage"]["completion_tokens"])
        except (KeyError, IndexError, TypeError, ValueError):
            raise BadResponse(
                f"no choices[0].message.content and usage.completion_tokens: {_short(data)}"
            ) from None
        if not isinstance(text, str) or not text or tokens < 1:
            raise BadResponse(f"empty completion: {_short(data)}")
        return Output("text", text.encode(), "txt", 0.0, output_tokens=tokens)

    # --- vllm-omni ----------------------------------------------------------------------------
    def _vllm_chat(self, prompt: str) -> Output:
        c = self.case
        body = self._body(prompt)
        data = _json(
            self.http.post(f"{self.base}/v1/chat/completions", json=body, timeout=self.timeout_s)
        )
        try:
            parts = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise BadResponse(f"no choices[0].message.content: {_short(data)}") from None
        for part in parts if isinstance(parts, list) else []:
            url = (part.get("image_url") or part.get("video_url") or {}).get("url", "")
            if url.startswith("data:"):
                raw = _b64(url.split(",", 1)[1])
                kind = "video" if c.is_video else "image"
                return Output(kind, raw, "png" if kind == "image" else _video_format(raw), 0.0)
        raise BadResponse(f"no data: URL in the message content: {_short(parts)}")

    # --- lightx2v -------------------------------------------------------------------------------
    def _lightx2v(self, prompt: str) -> Output:
        c = self.case
        kind = "video" if c.is_video else "image"
        save = self.out_dir / f"lightx2v_{int(time.time() * 1000)}.{'mp4' if c.is_video else 'png'}"
        body = {**self._body(prompt), "save_result_path": str(save)}
        task = _json(
            self.http.post(f"{self.base}/v1/tasks/{kind}", json=body, timeout=self.timeout_s)
        )
        tid = task.get("task_id") if isinstance(task, dict) else None
        if not tid:
            raise BadResponse(f"no task_id in the answer: {_short(task)}")
        deadline = time.monotonic() + self.timeout_s
        while True:
            st = _json(self.http.get(f"{self.base}/v1/tasks/{tid}/status", timeout=self.timeout_s))
            status = str(st.get("status", "")).upper() if isinstance(st, dict) else ""
            if status == "COMPLETED":
                break
            if status in ("FAILED", "CANCELLED"):
                raise BadResponse(f"task {tid} {status.lower()}: {_short(st)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {tid} not completed after {self.timeout_s:.0f} s")
            time.sleep(POLL_INTERVAL_S)
        if not save.exists():
            raise BadResponse(f"task {tid} completed but wrote no file at {save}")
        raw = save.read_bytes()
        return Output(kind, raw, "png" if kind == "image" else _video_format(raw), 0.0)


def _json(r: requests.Response) -> Any:
    if r.status_code >= 400:
        raise BadResponse(f"HTTP {r.status_code} from {r.request.method} {r.url}: {r.text[:300]}")
    try:
        return r.json()
    except ValueError:
        raise BadResponse(
            f"malformed JSON from {r.request.method} {r.url}: {r.text[:120]!r}"
        ) from None


def _b64(s: Any) -> bytes:
    try:
        return base64.b64decode(s, validate=True)
    except Exception:
        raise BadResponse("b64_json is not valid base64") from None


def _short(obj: Any) -> str:
    s = json.dumps(obj) if not isinstance(obj, str) else obj
    return s if len(s) <= 200 else s[:200] + "…"


def _video_format(raw: bytes) -> str:
    if raw[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if raw[4:8] == b"ftyp":
        return "mp4"
    if raw[:4] == b"RIFF":
        return "avi"
    if raw[:8] == b"\x89PNG\r\n\x1a\n":
        return "apng"
    return "unknown"


def check_output(out: Output, case: Case) -> None:
    """Decode the output and check its size and frame count against the case."""
    from PIL import Image, UnidentifiedImageError

    if out.kind == "text":  # checked where it was parsed
        return
    if out.kind == "video" and out.fmt == "mp4":
        if len(out.data) < 64:
            raise BadResponse(f"video of {len(out.data)} bytes is too short to hold frames")
        out.notes.append("mp4: container checked, frames not decoded")
        return
    try:
        img = Image.open(io.BytesIO(out.data))
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise BadResponse(f"{out.kind} does not decode: {e}") from None
    if img.size != (case.width, case.height):
        raise BadResponse(
            f"{out.kind} is {img.size[0]}x{img.size[1]}, "
            f"the case asked for {case.width}x{case.height}"
        )
    if out.kind == "video":
        out.frames = getattr(img, "n_frames", 1)
        if case.num_frames and out.frames != case.num_frames:
            raise BadResponse(
                f"video has {out.frames} frames, the case asked for {case.num_frames}"
            )


def psnr_db(a: bytes, b: bytes) -> float | None:
    """PSNR between two decoded outputs (first frame of videos); None when not comparable."""
    import numpy as np
    from PIL import Image

    try:
        x = np.asarray(Image.open(io.BytesIO(a)).convert("RGB"), dtype=np.float64)
        y = np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.float64)
    except Exception:
        return None
    if x.shape != y.shape:
        return None
    mse = float(np.mean((x - y) ** 2))
    return IDENTICAL_PSNR_DB if mse == 0 else round(10.0 * np.log10(255.0**2 / mse), 2)


def synthetic_image(width: int, height: int) -> bytes:
    """A deterministic PNG for image-conditioned cases when the suite gives no test image."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack(
        [
            (x * 255 // max(1, width - 1)),
            (y * 255 // max(1, height - 1)),
            ((x + y) * 127 // max(1, width + height - 2)),
        ],
        axis=-1,
    ).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
