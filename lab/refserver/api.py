"""Request bodies of the HTTP API: parsing (JSON and multipart) and validation into a job.

Everything a client can get wrong ends here as a RequestError, which the server answers with
400 {"error": {"message": ...}}. Fields the server does not know are ignored, as sglang does.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import numpy as np

from lab.refserver.args import SIZE_RE
from lab.refserver.presets import MAX_FRAMES, MAX_IMAGES, MAX_SIDE, MAX_STEPS, Preset

DEFAULT_SEED = 1024
DEFAULT_GUIDANCE = 4.0
DEFAULT_FPS = 16
MIN_SIDE = 64
SIDE_MULTIPLE = 16  # VAE factor 8 x 2x2 patches


class RequestError(Exception):
    """A bad request: answered 400 with this message; the server stays up."""


@dataclass(frozen=True)
class GenerationJob:
    """One generation, as validated; picklable, so rank 0 can hand it to the cfg-parallel rank."""

    kind: str  # "image" | "video"
    prompt: str
    negative_prompt: str
    width: int
    height: int
    num_frames: int  # 1 for images; a video's frames are denoised together
    n: int
    steps: int
    guidance_scale: float
    seed: int
    fps: int = DEFAULT_FPS
    references: tuple[np.ndarray, ...] = ()  # RGB uint8, already at width x height
    perf_dump_path: str | None = None

    @property
    def cfg(self) -> bool:
        return self.guidance_scale > 1.0

    @property
    def size_text(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass
class Body:
    fields: dict[str, Any]
    files: dict[str, bytes]


def parse_body(content_type: str, raw: bytes) -> Body:
    """JSON or multipart/form-data; form fields arrive as strings and are coerced later."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "multipart/form-data":
        return _parse_multipart(content_type, raw)
    try:
        data = json.loads(raw or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(f"request body is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise RequestError("request body must be a JSON object")
    return Body(fields=data, files={})


def _parse_multipart(content_type: str, raw: bytes) -> Body:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + raw)
    if not message.is_multipart():
        raise RequestError("multipart body could not be parsed (boundary missing?)")
    fields: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)  # bytes, or None for a nested multipart
        if not isinstance(payload, bytes):
            payload = b""
        if part.get_filename() is not None:
            files[name.removesuffix("[]")] = payload
        else:
            fields[name] = payload.decode("utf-8", errors="replace")
    return Body(fields=fields, files=files)


def _int(fields: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = fields.get(key)
    if value is None or value == "":
        return default
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and value.strip().lstrip("-").isdigit()
    ):
        number = int(value)
    if number is None:
        raise RequestError(f"{key} must be an integer, got {value!r}")
    if not lo <= number <= hi:
        raise RequestError(f"{key} must be between {lo} and {hi}, got {number}")
    return number


def _float(fields: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = fields.get(key)
    if value is None or value == "":
        return default
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{key} must be a number, got {value!r}") from None
    if not lo <= number <= hi:
        raise RequestError(f"{key} must be between {lo} and {hi}, got {number}")
    return number


def _text(fields: dict[str, Any], key: str, *, required: bool) -> str:
    value = fields.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise RequestError(f"{key} is required")
        return ""
    if not isinstance(value, str):
        raise RequestError(f"{key} must be a string")
    return value


def _check_side(value: int, what: str) -> int:
    if not MIN_SIDE <= value <= MAX_SIDE or value % SIDE_MULTIPLE:
        raise RequestError(
            f"{what} must be a multiple of {SIDE_MULTIPLE} between {MIN_SIDE} and {MAX_SIDE}, "
            f"got {value}"
        )
    return value


def _size(fields: dict[str, Any], default: tuple[int, int]) -> tuple[int, int]:
    size = fields.get("size")
    if size is None or size == "":
        if fields.get("width") is not None or fields.get("height") is not None:
            width = _int(fields, "width", default[0], 1, 1 << 20)
            height = _int(fields, "height", default[1], 1, 1 << 20)
            return _check_side(width, "width"), _check_side(height, "height")
        return default
    m = SIZE_RE.match(size) if isinstance(size, str) else None
    if not m:
        raise RequestError(f"size must look like 1024x1024, got {size!r}")
    return _check_side(int(m.group(1)), "width"), _check_side(int(m.group(2)), "height")


def _check_common(fields: dict[str, Any], model_path: str) -> None:
    model = fields.get("model")
    if model not in (None, "", model_path):
        raise RequestError(f"model {model!r} is not served here; this server serves {model_path}")
    fmt = fields.get("response_format")
    if fmt not in (None, "", "b64_json"):
        raise RequestError(f"response_format {fmt!r} is not supported; use b64_json")
    path = fields.get("perf_dump_path")
    if path is not None and not isinstance(path, str):
        raise RequestError("perf_dump_path must be a string")


def _decode_image(data: bytes, what: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise RequestError(f"{what} is not a readable image file") from e
    return image.convert("RGB")


def _fit(image: Any, width: int, height: int) -> np.ndarray:
    from PIL import Image

    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8).copy()


def _side_from(pixels: int) -> int:
    return max(MIN_SIDE, min(MAX_SIDE, pixels // SIDE_MULTIPLE * SIDE_MULTIPLE))


def _common_job(fields: dict[str, Any], preset: Preset) -> dict[str, Any]:
    return {
        "prompt": _text(fields, "prompt", required=True),
        "negative_prompt": _text(fields, "negative_prompt", required=False),
        "steps": _int(fields, "num_inference_steps", preset.default_steps, 1, MAX_STEPS),
        "guidance_scale": _float(fields, "guidance_scale", DEFAULT_GUIDANCE, 0.0, 100.0),
        "seed": _int(fields, "seed", DEFAULT_SEED, 0, 2**63 - 1),
        "perf_dump_path": fields.get("perf_dump_path") or None,
    }


def image_generation_job(body: Body, preset: Preset, model_path: str) -> GenerationJob:
    fields = body.fields
    _check_common(fields, model_path)
    common = _common_job(fields, preset)
    width, height = _size(fields, preset.default_size)
    n = _int(fields, "n", 1, 1, MAX_IMAGES)
    return GenerationJob(kind="image", width=width, height=height, num_frames=1, n=n, **common)


def image_edit_job(body: Body, preset: Preset, model_path: str) -> GenerationJob:
    fields = body.fields
    _check_common(fields, model_path)
    data = body.files.get("image")
    if data is None:
        raise RequestError("image edits need a multipart file field named 'image'")
    common = _common_job(fields, preset)
    image = _decode_image(data, "image")
    width, height = _size(fields, (_side_from(image.size[0]), _side_from(image.size[1])))
    n = _int(fields, "n", 1, 1, MAX_IMAGES)
    reference = _fit(image, width, height)
    return GenerationJob(
        kind="image",
        width=width,
        height=height,
        num_frames=1,
        n=n,
        references=(reference,),
        **common,
    )


def video_job(body: Body, preset: Preset, model_path: str) -> GenerationJob:
    fields = body.fields
    _check_common(fields, model_path)
    common = _common_job(fields, preset)
    fps = _int(fields, "fps", DEFAULT_FPS, 1, 120)
    frames_default = preset.default_frames
    if fields.get("num_frames") in (None, "") and fields.get("seconds") not in (None, ""):
        seconds = _float(fields, "seconds", 0.0, 0.0, 3600.0)
        frames_default = max(1, round(seconds * fps))
        if frames_default > MAX_FRAMES:
            raise RequestError(f"seconds x fps gives {frames_default} frames, over {MAX_FRAMES}")
    num_frames = _int(fields, "num_frames", frames_default, 1, MAX_FRAMES)
    width, height = _size(fields, preset.default_size)
    references: tuple[np.ndarray, ...] = ()
    data = body.files.get("input_reference")
    if data is not None:
        references = (_fit(_decode_image(data, "input_reference"), width, height),)
    return GenerationJob(
        kind="video",
        width=width,
        height=height,
        num_frames=num_frames,
        n=1,
        fps=fps,
        references=references,
        **common,
    )
