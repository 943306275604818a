"""The model's components, built from a preset with random weights from a fixed seed.

diffusers' FluxTransformer2DModel and AutoencoderKL, plus ByteTextEncoder (ours: UTF-8 bytes as
tokens, a few pre-norm transformer blocks). Modules are constructed on the meta device and then
materialized one parameter at a time on the compute device, each parameter drawn from a generator
seeded by (WEIGHTS_SEED, its name): a component's weights do not depend on where it lives, and a
large preset never needs all of its weights on the device at once while being built.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel
from torch import nn

from lab.refserver.budget import WeightBytes
from lab.refserver.presets import LATENT_CHANNELS, PATCH, Preset

WEIGHTS_SEED = 0
PAD_ID, EOS_ID = 256, 257  # after the 256 byte values
VAE_SCALING, VAE_SHIFT = 0.3611, 0.1159  # Flux's latent normalization


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp_in = nn.Linear(dim, 4 * dim)
        self.mlp_out = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, length, d)
        x = x + self.out(attended)
        out: torch.Tensor = x + self.mlp_out(F.gelu(self.mlp_in(self.norm2(x))))
        return out


class ByteTextEncoder(nn.Module):
    """Prompt -> (per-token embeddings for joint attention, pooled embedding)."""

    def __init__(self, dim: int, layers: int, heads: int, seq_len: int, pooled_dim: int) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.token_embed = nn.Embedding(258, dim)
        self.pos_embed = nn.Parameter(torch.empty(seq_len, dim))
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.pool = nn.Linear(dim, pooled_dim)

    def tokenize(self, prompts: list[str], device: torch.device) -> torch.Tensor:
        rows = []
        for prompt in prompts:
            ids = [*prompt.encode("utf-8")[: self.seq_len - 1], EOS_ID]
            rows.append(ids + [PAD_ID] * (self.seq_len - len(ids)))
        return torch.tensor(rows, dtype=torch.long, device=device)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.token_embed(ids) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        keep = (ids != PAD_ID).unsqueeze(-1).to(x.dtype)
        pooled = self.pool((x * keep).sum(1) / keep.sum(1))
        return x, pooled


@dataclass
class Modules:
    text_encoder: ByteTextEncoder
    transformer: FluxTransformer2DModel
    vae: AutoencoderKL


def build_on_meta(p: Preset) -> Modules:
    """The three modules with shapes only (no memory); materialize() gives them weights."""
    with torch.device("meta"):
        text_encoder = ByteTextEncoder(
            p.text_dim, p.text_layers, p.text_heads, p.text_len, p.pooled_dim
        )
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=LATENT_CHANNELS * PATCH * PATCH,
            num_layers=p.double_layers,
            num_single_layers=p.single_layers,
            attention_head_dim=p.head_dim,
            num_attention_heads=p.heads,
            joint_attention_dim=p.text_dim,
            pooled_projection_dim=p.pooled_dim,
            guidance_embeds=False,
            axes_dims_rope=p.rope_axes,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=p.vae_channels,
            layers_per_block=p.vae_layers_per_block,
            latent_channels=LATENT_CHANNELS,
            norm_num_groups=p.vae_norm_groups,
            scaling_factor=VAE_SCALING,
            shift_factor=VAE_SHIFT,
        )
    return Modules(text_encoder.eval(), transformer.eval(), vae.eval())


def _param_seed(name: str) -> int:
    return (WEIGHTS_SEED << 32) | zlib.crc32(name.encode())


def materialize(
    module: nn.Module,
    prefix: str,
    *,
    compute: torch.device,
    home: torch.device,
    dtype: torch.dtype,
    pin: bool,
) -> None:
    """Give a meta module real random weights: drawn on `compute`, kept on `home`."""
    for name, meta_param in list(module.named_parameters()):
        tensor = torch.empty(meta_param.shape, dtype=dtype, device=compute)
        generator = torch.Generator(device=compute)
        generator.manual_seed(_param_seed(f"{prefix}.{name}"))
        if tensor.ndim >= 2:
            fan_in = tensor[0].numel()
            tensor.normal_(0.0, fan_in**-0.5, generator=generator)
        elif name.endswith("weight"):
            tensor.fill_(1.0)  # norm scales
        else:
            tensor.zero_()  # biases
        if home != compute:
            tensor = tensor.to(home)
            if pin:
                tensor = tensor.pin_memory()
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        owner._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)


def transformer_blocks(transformer: FluxTransformer2DModel) -> list[nn.Module]:
    return [*transformer.transformer_blocks, *transformer.single_transformer_blocks]


def module_bytes(module: nn.Module, element_size: int) -> int:
    return sum(p.numel() for p in module.parameters()) * element_size


def weight_bytes(m: Modules, element_size: int) -> WeightBytes:
    blocks = [module_bytes(b, element_size) for b in transformer_blocks(m.transformer)]
    transformer = module_bytes(m.transformer, element_size)
    return WeightBytes(
        text_encoder=module_bytes(m.text_encoder, element_size),
        transformer=transformer,
        transformer_blocks=max(blocks),
        transformer_rest=transformer - sum(blocks),
        vae=module_bytes(m.vae, element_size),
    )


def parameter_counts(m: Modules) -> dict[str, int]:
    return {
        "text_encoder": sum(p.numel() for p in m.text_encoder.parameters()),
        "transformer": sum(p.numel() for p in m.transformer.parameters()),
        "vae": sum(p.numel() for p in m.vae.parameters()),
    }
