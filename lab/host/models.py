"""`lab models make tiny-llama --out DIR`: a random-weight Llama chat model built offline, for
real servers (transformers serve) to load where no model can be downloaded.

Seeded and deterministic: the same options give the same bytes (torch's generator seeds the
weights, `tokenizers` trains the byte-level BPE on fixed sentences, safetensors holds no time).
The folder holds config.json, generation_config.json, model.safetensors and the tokenizer files
with a chat template, so `AutoModelForCausalLM` / `AutoTokenizer` load it as any hub model."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError

# What the tokenizer learns from: a few sentences, so the model's vocabulary is tiny but covers
# the byte alphabet (any prompt tokenizes).
CORPUS = (
    "Write one sentence about lighthouses.",
    "A lighthouse stands on a cliff and guides ships home at night.",
    "The quick brown fox jumps over the lazy dog.",
    "Tell me a short story about a paper boat on a pond.",
    "Servers answer requests; the lab measures how long they take.",
    "user assistant system",
)
SPECIAL_TOKENS = ("<|pad|>", "<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|system|>")
# One turn per message, then the assistant's prompt: the shape every chat template renders.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
DTYPES = ("float32", "bfloat16", "float16")
KINDS = ("tiny-llama",)


@dataclass(frozen=True)
class ModelSpec:
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    vocab: int = 512  # BPE merges stop here (the corpus is small)
    intermediate: int | None = None  # None: 4 × hidden (rounded as Llama's are not: exact)
    dtype: str = "float32"
    seed: int = 0
    max_positions: int = 2048

    def check(self) -> None:
        if self.hidden <= 0 or self.layers <= 0 or self.heads <= 0 or self.vocab < 300:
            raise LabError("lab models make: --hidden, --layers, --heads > 0, --vocab >= 300")
        if self.hidden % self.heads:
            raise LabError(f"lab models make: --hidden {self.hidden} is not a multiple of --heads")
        if self.dtype not in DTYPES:
            raise LabError(f"lab models make: --dtype must be one of {', '.join(DTYPES)}")


def _train_tokenizer(out: Path, spec: ModelSpec) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=spec.max_positions,
    )
    fast.save_pretrained(str(out))


def _build_model(out: Path, spec: ModelSpec, vocab: int, ids: dict[str, int]) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate or 4 * spec.hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions,
        bos_token_id=ids["<|bos|>"],
        eos_token_id=ids["<|eos|>"],
        pad_token_id=ids["<|pad|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(spec.seed)
    with torch.device("cpu"):
        model = LlamaForCausalLM(config)
    model = model.to(getattr(torch, spec.dtype))
    model.config.dtype = spec.dtype
    model.generation_config.do_sample = False
    model.save_pretrained(str(out))


def make_tiny_llama(out: Path, spec: ModelSpec) -> str:
    """Build the model into `out` (replaced when present); return its content hash."""
    spec.check()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        work = Path(tmp) / "model"
        _train_tokenizer(work, spec)
        vocab_file = json.loads((work / "tokenizer.json").read_text())
        vocab = vocab_file["model"]["vocab"]
        ids = {t["content"]: t["id"] for t in vocab_file["added_tokens"]}
        _build_model(work, spec, max(len(vocab), *ids.values()) + 1, ids)
        # readable by a sandbox's own user (docker's uid 1000): safetensors writes 0600, and
        # the temporary folder is 0700
        for f in work.iterdir():
            f.chmod(0o644)
        work.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    return folder_hash(out)


def folder_hash(folder: Path) -> str:
    """SHA-256 over every file's name and bytes, in name order."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def add_models_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("models", help="make the random-weight models real servers load offline")
    msub = s.add_subparsers(dest="models_command", required=True)
    m = msub.add_parser("make", help="build a model folder (seeded: same options, same bytes)")
    m.add_argument("kind", choices=KINDS, help="which model family to build")
    m.add_argument("--out", required=True, type=Path, help="the model folder to write")
    d = ModelSpec()
    m.add_argument("--hidden", type=int, default=d.hidden, help=f"hidden size ({d.hidden})")
    m.add_argument("--layers", type=int, default=d.layers, help=f"decoder layers ({d.layers})")
    m.add_argument("--heads", type=int, default=d.heads, help=f"attention heads ({d.heads})")
    m.add_argument("--intermediate", type=int, default=None, help="MLP size (4 × hidden)")
    m.add_argument("--dtype", choices=DTYPES, default=d.dtype, help="of the saved weights")
    m.add_argument(
        "--seed", type=int, default=d.seed, help=f"of the random weights and tokenizer ({d.seed})"
    )
    m.add_argument(
        "--if-missing", action="store_true", help="do nothing when OUT already holds a model"
    )
    m.set_defaults(func=cmd_models_make)


def cmd_models_make(args: argparse.Namespace) -> int:
    out: Path = args.out
    if args.if_missing and (out / "config.json").is_file():
        print(f"lab models make: {out} exists, kept")
        return 0
    spec = ModelSpec(
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        intermediate=args.intermediate,
        dtype=args.dtype,
        seed=args.seed,
    )
    digest = make_tiny_llama(out, spec)
    print(f"lab models make: {args.kind} → {out} (sha256 {digest[:16]})")
    return 0
