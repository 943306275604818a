"""Encoding outputs: PNG for images, animated GIF (Pillow) for videos; both deterministic."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png_bytes(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def gif_bytes(frames: list[np.ndarray], fps: int) -> bytes:
    """An animated GIF that Pillow (PIL.Image.open + ImageSequence) decodes frame by frame."""
    # a fast octree palette per frame, no dithering: quick and deterministic
    images = [
        Image.fromarray(f).quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        for f in frames
    ]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(1, round(1000 / fps)),
        loop=0,
        optimize=False,
        disposal=1,
    )
    return buffer.getvalue()
