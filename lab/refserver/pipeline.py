"""The diffusion pipeline of one rank: text encode -> (reference encode) -> denoise -> decode.

Flux-style flow matching: the VAE latents are packed into 2x2 tokens; a video's frames are one
token sequence with (frame, row, column) rotary positions, so frames are denoised together and
attend to each other; a reference image (edits, image-to-video) is appended as extra tokens at the
next frame position (as FLUX.1 Kontext conditions on an image). Classifier-free guidance runs the
conditional and unconditional branches as one batch, or with cfg-parallel 2 one branch per rank
with the predictions exchanged every step. Every stage charges the rank's DeviceLedger first.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)

from lab import perfdump
from lab.refserver import budget
from lab.refserver.api import GenerationJob
from lab.refserver.args import ServerConfig
from lab.refserver.budget import GIB, MIB, DeviceLedger
from lab.refserver.model import (
    VAE_SCALING,
    VAE_SHIFT,
    build_on_meta,
    materialize,
    parameter_counts,
    transformer_blocks,
    weight_bytes,
)
from lab.refserver.parallel import CfgGroup
from lab.refserver.presets import LATENT_CHANNELS, PATCH, VAE_FACTOR
from lab.refserver.residency import Residency
from lab.refserver.runtime import release_cpu_memory

SCHEDULER_SHIFT = 3.0
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class RunResult:
    frames: list[np.ndarray]  # RGB uint8 (H, W, 3): n images, or one video's frames
    stages_ms: dict[str, float] = field(default_factory=dict)  # sglang's stage names
    denoise_steps_ms: list[float] = field(default_factory=list)
    accounted_peak_mib: list[float] = field(default_factory=list)  # per rank
    device_peak_mib: list[float] | None = None  # per rank, CUDA only


def pick_device(config: ServerConfig, rank: int) -> torch.device:
    want = config.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if torch.cuda.device_count() <= rank:
            raise RuntimeError(f"rank {rank} needs GPU {rank}; {torch.cuda.device_count()} visible")
        return torch.device("cuda", rank)
    return torch.device("cpu")


def pick_dtype(config: ServerConfig, device: torch.device) -> torch.dtype:
    if config.dtype != "auto":
        return DTYPES[config.dtype]
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(n, frames, C, h, w) -> (n, frames * h/2 * w/2, C * 4)."""
    n, f, c, h, w = latents.shape
    x = latents.reshape(n, f, c, h // PATCH, PATCH, w // PATCH, PATCH)
    return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(n, f * (h // PATCH) * (w // PATCH), c * 4)


def unpack(tokens: torch.Tensor, frames: int, h: int, w: int) -> torch.Tensor:
    """Inverse of pack: -> (n * frames, C, h, w)."""
    n = tokens.shape[0]
    c = tokens.shape[-1] // (PATCH * PATCH)
    x = tokens.reshape(n, frames, h // PATCH, w // PATCH, c, PATCH, PATCH)
    return x.permute(0, 1, 4, 2, 5, 3, 6).reshape(n * frames, c, h, w)


def positions(frames: int, h: int, w: int, first_frame: int, device: torch.device) -> torch.Tensor:
    rows, cols = h // PATCH, w // PATCH
    ids = torch.zeros(frames, rows, cols, 3, device=device)
    ids[..., 0] = torch.arange(first_frame, first_frame + frames, device=device)[:, None, None]
    ids[..., 1] = torch.arange(rows, device=device)[None, :, None]
    ids[..., 2] = torch.arange(cols, device=device)[None, None, :]
    return ids.reshape(-1, 3)


class Pipeline:
    def __init__(self, config: ServerConfig, rank: int, group: CfgGroup | None) -> None:
        started = time.perf_counter()
        self.config = config
        self.preset = config.preset
        self.rank = rank
        self.group = group
        self.device = pick_device(config, rank)
        self.dtype = pick_dtype(config, self.device)
        self.el = torch.empty((), dtype=self.dtype).element_size()
        capacity = None
        budget.hold_to_share(self.device)  # a GPU shared with other sandboxes: our share of it
        if config.device_memory_gib is not None:
            capacity = int(config.device_memory_gib * GIB)
            if self.device.type == "cuda":
                total = torch.cuda.get_device_properties(self.device).total_memory
                torch.cuda.set_per_process_memory_fraction(min(1.0, capacity / total), self.device)
        # on a GPU the real allocator decides; the ledger only reports there
        self.ledger = DeviceLedger(rank, capacity, enforce=self.device.type == "cpu")
        modules = build_on_meta(self.preset)
        self.modules = modules
        self.parameters = parameter_counts(modules)
        self.weights = weight_bytes(modules, self.el)
        modes = {
            "text_encoder": "component" if config.text_encoder_offload else "resident",
            "transformer": config.dit_offload,
            "vae": "component" if config.vae_offload else "resident",
        }
        cpu = torch.device("cpu")
        self.residency: dict[str, Residency] = {}
        for name, module in (
            ("text_encoder", modules.text_encoder),
            ("transformer", modules.transformer),
            ("vae", modules.vae),
        ):
            mode = modes[name]
            if mode == "resident":
                # charged before they are placed, as an allocator would fail before placing them
                self.ledger.alloc(f"{name} weights", self.weights_of(name))
            with torch.no_grad():
                materialize(
                    module,
                    name,
                    compute=self.device,
                    home=self.device if mode == "resident" else cpu,
                    dtype=self.dtype,
                    pin=config.pin_cpu_memory and self.device.type == "cuda",
                )
            blocks = transformer_blocks(modules.transformer) if mode == "layerwise" else None
            self.residency[name] = Residency(
                name,
                module,
                mode,
                device=self.device,
                ledger=self.ledger,
                element_size=self.el,
                blocks=blocks,
            )
        self.scheduler_config = FlowMatchEulerDiscreteScheduler(shift=SCHEDULER_SHIFT).config
        self.lifetime_peak = self.ledger.peak
        self.build_s = time.perf_counter() - started
        self._jitter = random.Random()  # seeded by the OS: noise, unlike the job's seeded work

    def weights_of(self, name: str) -> int:
        w = self.weights
        return {"text_encoder": w.text_encoder, "transformer": w.transformer, "vae": w.vae}[name]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _clock(self) -> float:
        self._sync()
        return time.perf_counter()

    def _stage_done(self) -> float:
        """End of a stage: its freed memory goes back (CPU), and the time is taken."""
        if self.device.type == "cpu":
            release_cpu_memory()
        return self._clock()

    def run(self, job: GenerationJob) -> RunResult:
        """Run one job on this rank; rank 0 gets the frames, every rank the peaks of all ranks."""
        self.ledger.start_request()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        result = RunResult(frames=[])
        active = self.rank == 0 or (job.cfg and self.group is not None)
        if active:
            with torch.inference_mode():
                result.frames = self._generate(job, result)
        self.lifetime_peak = max(self.lifetime_peak, self.ledger.peak)
        mine = [self.ledger.peak / MIB]
        if self.device.type == "cuda":
            mine.append(torch.cuda.max_memory_allocated(self.device) / MIB)
        every = self.group.gather(mine) if self.group is not None else [mine]
        result.accounted_peak_mib = [round(r[0], 3) for r in every]
        if self.device.type == "cuda":
            result.device_peak_mib = [round(r[1], 3) for r in every]
        return result

    def _slowdown_fraction(self) -> float:
        """This request's injected slowdown (--step-slowdown), a fraction of each step's time."""
        c = self.config
        jitter = self._jitter.uniform(0.0, c.step_jitter_pct) if c.step_jitter_pct else 0.0
        return (c.step_slowdown_pct + jitter) / 100.0

    def _prompts(self, job: GenerationJob) -> list[str]:
        if not job.cfg:
            return [job.prompt] * job.n
        if self.group is not None:
            return [job.prompt if self.rank == 0 else job.negative_prompt] * job.n
        return [job.prompt] * job.n + [job.negative_prompt] * job.n

    def _generate(self, job: GenerationJob, result: RunResult) -> list[np.ndarray]:
        p, el, led, dev = self.preset, self.el, self.ledger, self.device
        m = self.modules
        width, height, frames, n = job.width, job.height, job.num_frames, job.n
        h, w = height // VAE_FACTOR, width // VAE_FACTOR
        prompts = self._prompts(job)
        batch = len(prompts)

        started = self._clock()
        with (
            self.residency["text_encoder"].running(),
            led.hold("text activations", budget.text_activations(p, batch, el)),
        ):
            embeds, pooled = m.text_encoder(m.text_encoder.tokenize(prompts, dev))
        led.alloc("text embeddings", budget.text_outputs(p, batch, el))
        result.stages_ms[perfdump.TEXT_ENCODING] = (self._stage_done() - started) * 1e3

        cond = None
        if job.references:
            started = self._clock()
            cond = self._encode_references(job)
            result.stages_ms[perfdump.IMAGE_ENCODING] = (self._stage_done() - started) * 1e3

        started = self._clock()
        generator = torch.Generator(device=dev).manual_seed(job.seed)
        tokens = (frames + len(job.references)) * budget.latent_tokens(width, height) + p.text_len
        img_ids = positions(frames, h, w, 0, dev)
        if cond is not None:
            img_ids = torch.cat([img_ids, positions(len(job.references), h, w, frames, dev)])
        txt_ids = torch.zeros(p.text_len, 3, device=dev)
        with self.residency["transformer"].running():
            led.alloc("latents", budget.latents(n * frames, width, height, el))
            shape = (n, frames, LATENT_CHANNELS, h, w)
            noise = torch.randn(shape, generator=generator, device=dev, dtype=self.dtype)
            x = pack(noise)
            del noise
            scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
            scheduler.set_timesteps(job.steps, device=dev)
            slowdown = self._slowdown_fraction()
            for t in scheduler.timesteps:
                step_started = self._clock()
                act = budget.denoise_activations(p, batch, tokens, el)
                with led.hold("denoise activations", act):
                    x = self._step(job, scheduler, t, x, cond, embeds, pooled, img_ids, txt_ids)
                if slowdown:
                    time.sleep((self._clock() - step_started) * slowdown)
                result.denoise_steps_ms.append((self._clock() - step_started) * 1e3)
        led.free("text embeddings")
        led.free("reference latents")
        del embeds, pooled, cond
        result.stages_ms[perfdump.DENOISING] = (self._stage_done() - started) * 1e3
        if self.rank != 0:
            led.free("latents")
            return []

        started = self._clock()
        latents = unpack(x, frames, h, w) / VAE_SCALING + VAE_SHIFT
        out: list[np.ndarray] = []
        with self.residency["vae"].running():
            for i in range(latents.shape[0]):
                with led.hold("vae activations", budget.vae_activations(p, width, height, el)):
                    image = m.vae.decode(latents[i : i + 1], return_dict=False)[0][0]
                    pixels = ((image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
                    out.append(pixels.permute(1, 2, 0).cpu().numpy())
        led.free("latents")
        result.stages_ms[perfdump.DECODING] = (self._stage_done() - started) * 1e3
        return out

    def _step(
        self,
        job: GenerationJob,
        scheduler: FlowMatchEulerDiscreteScheduler,
        t: torch.Tensor,
        x: torch.Tensor,
        cond: torch.Tensor | None,
        embeds: torch.Tensor,
        pooled: torch.Tensor,
        img_ids: torch.Tensor,
        txt_ids: torch.Tensor,
    ) -> torch.Tensor:
        inputs = x if cond is None else torch.cat([x, cond.expand(x.shape[0], -1, -1)], dim=1)
        if job.cfg and self.group is None:
            inputs = torch.cat([inputs, inputs])
        timestep = (t / 1000).expand(inputs.shape[0]).to(self.dtype)
        out = self.modules.transformer(
            hidden_states=inputs,
            encoder_hidden_states=embeds,
            pooled_projections=pooled,
            timestep=timestep,
            img_ids=img_ids,
            txt_ids=txt_ids,
            return_dict=False,
        )[0][:, : x.shape[1]]
        if job.cfg:
            if self.group is None:
                positive, negative = out.chunk(2)
            else:
                positive, negative = self.group.exchange(out.contiguous())
            out = negative + job.guidance_scale * (positive - negative)
        stepped: torch.Tensor = scheduler.step(out, t, x, return_dict=False)[0]
        return stepped

    def _encode_references(self, job: GenerationJob) -> torch.Tensor:
        p, el, led = self.preset, self.el, self.ledger
        packed = []
        with self.residency["vae"].running():
            for reference in job.references:
                act = budget.vae_activations(p, job.width, job.height, el)
                with led.hold("vae activations", act):
                    pixels = torch.from_numpy(reference).to(self.device).permute(2, 0, 1)[None]
                    image = pixels.to(self.dtype) / 127.5 - 1
                    latent = self.modules.vae.encode(image).latent_dist.mode()
                    latent = (latent - VAE_SHIFT) * VAE_SCALING
                    packed.append(pack(latent[:, None]))
        refs = len(job.references)
        led.alloc("reference latents", budget.reference_latents(refs, job.width, job.height, el))
        return torch.cat(packed, dim=1)
