"""The reference LLM behind `ref-llm://<preset>`: a small decoder-only transformer (RMSNorm,
grouped-query attention, SwiGLU MLP, tied embeddings) with random weights, and a byte tokenizer.

The weights are drawn from a generator seeded by (seed, parameter name), so they do not depend on
the device. Output is noise, but real noise: every token is a real forward pass and argmax (or a
seeded sample), so the same request gives the same text."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lab.refserver.presets import LLM_SCHEME

MIB = 1 << 20
GIB = 1 << 30
PRINTABLE = 95  # token ids map onto printable ASCII, so the text is always valid JSON


@dataclass(frozen=True)
class LlmPreset:
    name: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    # Device memory outside the static pool (sglang's CUDA graphs, activations, the context):
    # taken at start as one real tensor, as sglang's graphs and workspaces are.
    reserve_bytes: int


LLM_PRESETS: dict[str, LlmPreset] = {
    p.name: p
    for p in (
        # 3.7M parameters, 14 MiB in fp32: runs anywhere in milliseconds a token
        LlmPreset("tiny", 2048, 256, 4, 4, 2, 64, 768, reserve_bytes=40 * MIB),
        # Qwen3-0.6B's shape (the model of sglang's test_weight_checker_e2e): 596M parameters
        LlmPreset("qwen3-0.6b", 151936, 1024, 28, 16, 8, 128, 3072, reserve_bytes=3 * GIB),
    )
}


def is_llm_model_path(model_path: str) -> bool:
    return model_path.startswith(LLM_SCHEME)


def llm_preset_for(model_path: str) -> LlmPreset:
    name = model_path.removeprefix(LLM_SCHEME) if is_llm_model_path(model_path) else None
    if name not in LLM_PRESETS:
        choices = ", ".join(LLM_SCHEME + n for n in LLM_PRESETS)
        raise ValueError(f"unknown model path {model_path!r}; this server serves {choices}")
    return LLM_PRESETS[name]


def encode(text: str, vocab: int) -> list[int]:
    return [b % vocab for b in text.encode("utf-8")] or [0]


def decode(ids: list[int]) -> str:
    return "".join(chr(32 + i % PRINTABLE) for i in ids)


class _Layer(nn.Module):
    def __init__(self, p: LlmPreset) -> None:
        super().__init__()
        q, kv = p.heads * p.head_dim, p.kv_heads * p.head_dim
        self.attn_norm = nn.RMSNorm(p.hidden)
        self.q_proj = nn.Linear(p.hidden, q, bias=False)
        self.k_proj = nn.Linear(p.hidden, kv, bias=False)
        self.v_proj = nn.Linear(p.hidden, kv, bias=False)
        self.o_proj = nn.Linear(q, p.hidden, bias=False)
        self.mlp_norm = nn.RMSNorm(p.hidden)
        self.gate_proj = nn.Linear(p.hidden, p.intermediate, bias=False)
        self.up_proj = nn.Linear(p.hidden, p.intermediate, bias=False)
        self.down_proj = nn.Linear(p.intermediate, p.hidden, bias=False)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p
        b, n, _ = x.shape
        h = self.attn_norm(x)
        q = self.q_proj(h).view(b, n, p.heads, p.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(b, n, p.kv_heads, p.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, n, p.kv_heads, p.head_dim).transpose(1, 2)
        rep = p.heads // p.kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o_proj(a.transpose(1, 2).reshape(b, n, -1))
        h = self.mlp_norm(x)
        out: torch.Tensor = x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))
        return out


class RefLlm(nn.Module):
    def __init__(self, p: LlmPreset) -> None:
        super().__init__()
        self.preset = p
        self.embed_tokens = nn.Embedding(p.vocab, p.hidden)
        self.layers = nn.ModuleList(_Layer(p) for _ in range(p.layers))
        self.norm = nn.RMSNorm(p.hidden)
        self.positions = nn.Embedding(4096, p.hidden)  # learned positions: no rotary code

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device) % self.positions.num_embeddings
        x = self.embed_tokens(ids) + self.positions(pos)[None]
        for layer in self.layers:
            x = layer(x)
        # tied head, last token only
        logits: torch.Tensor = self.norm(x[:, -1]) @ self.embed_tokens.weight.T
        return logits


def build(p: LlmPreset, device: torch.device, dtype: torch.dtype, seed: int = 0) -> RefLlm:
    """The model on `device` with seeded random weights, one parameter at a time."""
    with torch.device("meta"):
        model = RefLlm(p).to(dtype)
    model = model.to_empty(device=device)  # allocated once, in the serving dtype
    with torch.no_grad():
        for name, param in model.named_parameters():
            randomize(param, seed, name)
    return model.eval()


def randomize(param: torch.Tensor, seed: int, name: str) -> None:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    if name.endswith("norm.weight"):
        param.fill_(1.0)
        return
    std = 1.0 if "embed" in name or "positions" in name else 0.02
    param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float32).mul_(std))


def weight_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.parameters())


@torch.no_grad()
def generate(
    model: RefLlm, prompt_ids: list[int], max_new_tokens: int, temperature: float, seed: int
) -> list[int]:
    """Greedy (temperature 0) or seeded sampling; the whole sequence is recomputed each step
    (requests are short; the KV part of the pool is held as sglang holds it)."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    out: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(ids[:, -model.positions.num_embeddings :]).float()
        if temperature <= 0:
            nxt = int(logits.argmax(dim=-1))
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            nxt = int(torch.multinomial(probs, 1, generator=gen))
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]], device=device)], dim=1)
    return out
