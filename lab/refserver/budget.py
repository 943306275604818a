"""Device-memory accounting: what would live on the device, component by component.

Each rank keeps a DeviceLedger. Resident weights are charged at start; an offloaded component's
weights only while it runs (a layerwise-offloaded transformer: its non-block weights plus one
block); each stage charges its activations, estimated from the shapes by the fixed formulas below,
so the figure is deterministic. With --device-memory-gib on a CPU machine the ledger enforces the
budget by raising torch's own torch.OutOfMemoryError with torch's CUDA message; on a GPU the real
allocator decides and the ledger only reports. `estimate_peak` replays the same charges without
running anything, for the README's expected-memory table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from lab.refserver.presets import LATENT_CHANNELS, PATCH, VAE_FACTOR, Preset

MIB = 1 << 20
GIB = 1 << 30
# live tensors at the widest point of each stage, in units of (batch x tokens x width):
TEXT_ACTIVATION_FACTOR = 8  # residual, norm, q, k, v, attention out, MLP 4x at its peak
DIT_ACTIVATION_FACTOR = 16  # Flux block: residual, modulated norm, qkv, attention, MLP 4x + GELU
# lab.contract.GPU_SHARE_ENV, spelled here: importing the contract would close an import cycle
GPU_SHARE_ENV = "LAB_GPU_SHARE_GIB"
VAE_ACTIVATION_FACTOR = 10  # full-resolution feature maps alive in a decoder resnet + upsample


def format_size(nbytes: int) -> str:
    """torch's own format_size (c10/util): bytes, KiB, MiB or GiB with two decimals."""
    if nbytes <= 1024:
        return f"{nbytes} bytes"
    if nbytes <= MIB:
        return f"{nbytes / 1024:.2f} KiB"
    if nbytes <= GIB:
        return f"{nbytes / MIB:.2f} MiB"
    return f"{nbytes / GIB:.2f} GiB"


def device_oom(index: int, requested: int, capacity: int, in_use: int) -> BaseException:
    """torch.OutOfMemoryError itself, worded as CUDACachingAllocator words a real one."""
    import torch

    free = max(0, capacity - in_use)
    return torch.OutOfMemoryError(
        f"CUDA out of memory. Tried to allocate {format_size(requested)}. GPU {index} has a total "
        f"capacity of {format_size(capacity)} of which {format_size(free)} is free. Including "
        f"non-PyTorch memory, this process has {format_size(in_use)} memory in use. Of the "
        f"allocated memory {format_size(in_use)} is allocated by PyTorch, and 0 bytes is reserved "
        "by PyTorch but unallocated. If reserved but unallocated memory is large try setting "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See "
        "documentation for Memory Management  (https://docs.pytorch.org/docs/stable/notes/"
        "cuda.html#optimizing-memory-usage-with-pytorch-cuda-alloc-conf)"
    )


class DeviceLedger:
    """Bytes charged to one device; raises torch's OOM when `enforce` and over capacity."""

    def __init__(self, index: int, capacity: int | None, *, enforce: bool) -> None:
        self.index = index
        self.capacity = capacity
        self.enforce = enforce and capacity is not None
        self.live: dict[str, int] = {}
        self.used = 0
        self.peak = 0

    def alloc(self, tag: str, nbytes: int) -> None:
        if self.enforce and self.capacity is not None and self.used + nbytes > self.capacity:
            raise device_oom(self.index, nbytes, self.capacity, self.used)
        self.live[tag] = self.live.get(tag, 0) + nbytes
        self.used += nbytes
        self.peak = max(self.peak, self.used)

    def free(self, tag: str) -> None:
        self.used -= self.live.pop(tag, 0)

    @contextlib.contextmanager
    def hold(self, tag: str, nbytes: int) -> Iterator[None]:
        self.alloc(tag, nbytes)
        try:
            yield
        finally:
            self.free(tag)

    def start_request(self) -> None:
        self.peak = self.used


# ---- activation estimates (bytes); `el` is the element size of the compute dtype


def text_activations(p: Preset, batch: int, el: int) -> int:
    return batch * p.text_len * p.text_dim * TEXT_ACTIVATION_FACTOR * el


def text_outputs(p: Preset, batch: int, el: int) -> int:
    return batch * (p.text_len * p.text_dim + p.pooled_dim) * el


def latent_tokens(width: int, height: int) -> int:
    return (height // (VAE_FACTOR * PATCH)) * (width // (VAE_FACTOR * PATCH))


def latents(count: int, width: int, height: int, el: int) -> int:
    # the latents and the guided prediction of one step
    pixels = (height // VAE_FACTOR) * (width // VAE_FACTOR)
    return 2 * count * LATENT_CHANNELS * pixels * el


def reference_latents(count: int, width: int, height: int, el: int) -> int:
    return count * LATENT_CHANNELS * (height // VAE_FACTOR) * (width // VAE_FACTOR) * el


def denoise_activations(p: Preset, batch: int, tokens: int, el: int) -> int:
    return batch * tokens * p.dim * DIT_ACTIVATION_FACTOR * el


def vae_activations(p: Preset, width: int, height: int, el: int) -> int:
    # one image or frame at a time (slicing), at full resolution, plus its pixels
    return width * height * (p.vae_channels[0] * VAE_ACTIVATION_FACTOR + 3) * el


@dataclass(frozen=True)
class WeightBytes:
    text_encoder: int
    transformer: int
    transformer_blocks: int  # the largest single block (layerwise offload keeps one at a time)
    transformer_rest: int  # what is not in a block
    vae: int


@dataclass(frozen=True)
class Placement:
    text_encoder_offload: bool
    dit_offload: str  # "resident" | "component" | "layerwise"
    vae_offload: bool

    def resident_bytes(self, w: WeightBytes) -> int:
        total = 0 if self.text_encoder_offload else w.text_encoder
        total += 0 if self.dit_offload != "resident" else w.transformer
        total += 0 if self.vae_offload else w.vae
        return total

    def dit_running_bytes(self, w: WeightBytes) -> int:
        if self.dit_offload == "component":
            return w.transformer
        if self.dit_offload == "layerwise":
            return w.transformer_rest + w.transformer_blocks
        return 0


def estimate_peak(
    p: Preset,
    w: WeightBytes,
    place: Placement,
    *,
    el: int,
    width: int,
    height: int,
    frames: int = 1,
    n: int = 1,
    cfg: bool = True,
    cfg_parallel: int = 1,
    references: int = 0,
    rank: int = 0,
) -> int:
    """The peak a rank's ledger reaches for one request, without running it (same charges)."""
    resident = place.resident_bytes(w)
    if rank == 1 and not (cfg and cfg_parallel == 2):
        return resident  # the second rank idles when there is no unconditional branch
    batch = 2 * n if (cfg and cfg_parallel == 1) else n
    te = w.text_encoder if place.text_encoder_offload else 0
    vae = w.vae if place.vae_offload else 0
    vae_act = vae_activations(p, width, height, el)
    embeds = text_outputs(p, batch, el)
    peaks = [resident + te + text_activations(p, batch, el)]
    if references:
        peaks.append(resident + embeds + vae + vae_act)
    refs = reference_latents(references, width, height, el)
    lat = latents(n * frames, width, height, el)
    tokens = (frames + references) * latent_tokens(width, height) + p.text_len
    act = denoise_activations(p, batch, tokens, el)
    peaks.append(resident + embeds + refs + lat + place.dit_running_bytes(w) + act)
    if rank == 0:
        peaks.append(resident + lat + vae + vae_act)
    return max(peaks)


def hold_to_share(device: object) -> int | None:
    """On a GPU the lab shares between sandboxes: cap this process at its share of the card
    ($LAB_GPU_SHARE_GIB) with torch's per-process memory fraction, so going over raises torch's
    own OutOfMemoryError instead of starving a neighbour. Returns the share in bytes (None: the
    GPU is not shared, or this is not CUDA)."""
    import os

    import torch

    text = os.environ.get(GPU_SHARE_ENV)
    if not text or not isinstance(device, torch.device) or device.type != "cuda":
        return None
    share = int(float(text) * GIB)
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, share / total), device)
    return share
