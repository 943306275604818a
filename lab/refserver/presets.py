"""Model presets behind `ref://<name>`: the shape of each component and the request defaults."""

from __future__ import annotations

from dataclasses import dataclass

SCHEME = "ref://"
LLM_SCHEME = "ref-llm://"  # the LLM server (llm_server.py)
LATENT_CHANNELS = 16  # Flux's VAE latent width; 2x2 patches make 64 transformer input channels
VAE_FACTOR = 8  # four VAE levels: 8x spatial compression, as in SD3/Flux
PATCH = 2  # latent pixels per token side (Flux packs 2x2 latent patches)
MAX_SIDE = 4096
MAX_FRAMES = 1024
MAX_STEPS = 100
MAX_IMAGES = 4


@dataclass(frozen=True)
class Preset:
    name: str
    # transformer: diffusers FluxTransformer2DModel
    heads: int
    head_dim: int
    double_layers: int
    single_layers: int
    rope_axes: tuple[int, int, int]  # (frame, row, column); sums to head_dim
    # text encoder: ours (ByteTextEncoder), its width is the transformer's joint_attention_dim
    text_dim: int
    text_layers: int
    text_heads: int
    text_len: int
    pooled_dim: int
    # VAE: diffusers AutoencoderKL, four levels
    vae_channels: tuple[int, int, int, int]
    vae_layers_per_block: int
    vae_norm_groups: int
    # request defaults
    default_size: tuple[int, int]
    default_steps: int
    default_frames: int

    @property
    def dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def default_size_text(self) -> str:
        return f"{self.default_size[0]}x{self.default_size[1]}"


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="tiny",
            heads=4,
            head_dim=32,
            double_layers=2,
            single_layers=2,
            rope_axes=(8, 12, 12),
            text_dim=64,
            text_layers=2,
            text_heads=2,
            text_len=32,
            pooled_dim=64,
            vae_channels=(16, 32, 32, 32),
            vae_layers_per_block=1,
            vae_norm_groups=8,
            default_size=(256, 256),
            default_steps=4,
            default_frames=8,
        ),
        Preset(
            name="small",
            heads=4,
            head_dim=64,
            double_layers=3,
            single_layers=6,
            rope_axes=(16, 24, 24),
            text_dim=256,
            text_layers=2,
            text_heads=4,
            text_len=64,
            pooled_dim=256,
            vae_channels=(32, 64, 128, 128),
            vae_layers_per_block=1,
            vae_norm_groups=16,
            default_size=(512, 512),
            default_steps=8,
            default_frames=8,
        ),
        Preset(
            name="medium",
            heads=12,
            head_dim=64,
            double_layers=6,
            single_layers=12,
            rope_axes=(16, 24, 24),
            text_dim=512,
            text_layers=4,
            text_heads=8,
            text_len=128,
            pooled_dim=512,
            vae_channels=(64, 128, 256, 256),
            vae_layers_per_block=2,
            vae_norm_groups=32,
            default_size=(1024, 1024),
            default_steps=20,
            default_frames=17,
        ),
        Preset(
            name="large",
            heads=16,
            head_dim=128,
            double_layers=10,
            single_layers=20,
            rope_axes=(16, 56, 56),
            text_dim=1024,
            text_layers=6,
            text_heads=16,
            text_len=256,
            pooled_dim=768,
            vae_channels=(128, 256, 512, 512),
            vae_layers_per_block=2,
            vae_norm_groups=32,
            default_size=(1024, 1024),
            default_steps=28,
            default_frames=33,
        ),
        Preset(
            # the shape of FLUX.1-dev's transformer (about 12B parameters) and VAE
            name="xl",
            heads=24,
            head_dim=128,
            double_layers=19,
            single_layers=38,
            rope_axes=(16, 56, 56),
            text_dim=2048,
            text_layers=8,
            text_heads=16,
            text_len=512,
            pooled_dim=768,
            vae_channels=(128, 256, 512, 512),
            vae_layers_per_block=2,
            vae_norm_groups=32,
            default_size=(1024, 1024),
            default_steps=28,
            default_frames=33,
        ),
    )
}


def preset_for(model_path: str) -> Preset:
    """The preset a `--model-path` names; ValueError with the choices otherwise."""
    name = model_path[len(SCHEME) :] if model_path.startswith(SCHEME) else None
    if name not in PRESETS:
        choices = ", ".join(SCHEME + n for n in PRESETS)
        raise ValueError(f"unknown model path {model_path!r}; this server serves {choices}")
    return PRESETS[name]
