"""The `transformers` framework: its command line (pinned to the model, checked by the installed
`transformers serve`'s own parser), its ladder, its OOM texts (real log lines), and the model
maker (deterministic, loads with transformers, renders its chat template)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from lab.config import load_suite
from lab.contract import AttemptSpec
from lab.frameworks import get_framework, server_command
from lab.frameworks.args import merge_args
from lab.frameworks.transformers_serve import SERVE, TRANSFORMERS_VERSION
from lab.host.ladder import plan_ladder
from lab.host.models import ModelSpec, folder_hash, make_tiny_llama
from lab.sandbox.watch import LineClassifier

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.json"))

# Real lines of transformers 5.25 serve (issue #27): preload under an address-space limit, the
# engine SIGKILLed by the OOM killer, and a CUDA preload on an H100 under the lab's ballast.
REAL_OOM_LINES = (
    "RuntimeError: MemoryError: Cannot allocate memory (os error 12)",
    "RuntimeError: unable to mmap 1635778560 bytes from file </m/model.safetensors>: "
    "Cannot allocate memory (12)",
    "The engine of /m/llama died: The model's process crashed (exit code -9)",
    "RuntimeError: OutOfMemoryError: CUDA out of memory. Tried to allocate 1.27 GiB. GPU 0 has a "
    "total capacity of 79.18 GiB of which 498.62 MiB is free. Including non-PyTorch memory, "
    "this process has 78.69 GiB memory in use.",
)
NOT_OOM = (
    "[transformers] Loading the model failed",
    "The engine of /m/llama died: The model's process crashed (exit code 1)",
    "RuntimeError: An engine died ... stopping the server",
)


@pytest.mark.parametrize("line", REAL_OOM_LINES)
def test_real_oom_lines_are_oom(line: str) -> None:
    m = LineClassifier().classify_line(line)
    assert m is not None and m.kind == "oom"
    assert LineClassifier().scan_chunk(f"INFO: x\n{line}\nmore\n".encode()) == m


@pytest.mark.parametrize("line", NOT_OOM)
def test_other_engine_failures_are_not_oom(line: str) -> None:
    assert LineClassifier().classify_line(line) is None


def _specs() -> list[AttemptSpec]:
    """An attempt spec for every transformers case and every rung of its ladder, in configs/."""
    specs = []
    for path in CONFIGS:
        loaded = load_suite(path)
        for case in loaded.suite.cases:
            if "transformers" not in case.frameworks:
                continue
            for rung in plan_ladder(loaded, case, ["transformers"], 8).rungs:
                specs.append(
                    AttemptSpec(
                        run_id="t",
                        case=case,
                        frameworks=["transformers"],
                        attempt=1,
                        rung=rung.name,
                        extra_args=rung.extra_args,
                        num_gpus=rung.num_gpus,
                        out_dir="/tmp/o",
                        log_dir="/tmp/l",
                        config_dir=str(loaded.config_dir),
                    )
                )
    return specs


def test_configs_hold_transformers_cases() -> None:
    specs = _specs()
    assert {s.rung for s in specs} >= {"as-configured", "dtype-bfloat16"}


def test_every_command_line_passes_the_real_parser() -> None:
    """Each case and rung's command line, parsed by the installed `transformers serve` (its click
    command, nothing started): an unknown flag or bad value fails here, not in a run."""
    click = pytest.importorskip("click")
    from transformers.cli.transformers import app

    serve = app.get_command(click.Context(app), "serve")
    assert serve is not None
    for spec in _specs():
        argv = server_command(spec, "transformers")
        assert argv[: len(SERVE)] == SERVE
        params = serve.make_context("serve", argv[len(SERVE) :]).params
        assert params["force_model"] == spec.case.model  # pinned: never on-demand
        assert params["device"] == ("cuda" if spec.num_gpus else "cpu")
    with pytest.raises(click.UsageError, match="--no-such-flag"):
        serve.make_context("serve", ["/m", "--no-such-flag", "1"])


def test_ladder_and_command() -> None:
    fw = get_framework("transformers")
    case = load_suite(ROOT / "configs" / "transformers.json").case("tf_oom_float32")
    cfg = case.frameworks["transformers"]
    rungs = fw.default_ladder(case, cfg)
    assert [r.name for r in rungs] == ["as-configured", "dtype-bfloat16"]
    cmd = fw.command(case, cfg, "127.0.0.1", 30000, 0, rungs[1].arg_list, "/c")
    assert shlex.join(cmd).endswith(
        f"serve {case.model} --host 127.0.0.1 --port 30000 --device cpu --dtype bfloat16"
    )
    assert Path(case.model).is_absolute()  # ../build/models/… from the suite's folder
    cb = cfg.model_copy(update={"serve_args": "--continuous-batching --cb-max-memory-percent 0.7"})
    names = [r.name for r in fw.default_ladder(case, cb)]
    assert names == ["as-configured", "dtype-bfloat16", "bfloat16+cb-mem-0.5"]
    assert fw.server_env["USE_HUB_KERNELS"] == "NO" and fw.server_env["HF_HUB_OFFLINE"] == "1"
    assert merge_args(cmd, ["--dtype", "float16"])[-1] == "float16"


def test_installed_version_is_the_package_in_this_environment() -> None:
    assert get_framework("transformers").installed_version() == TRANSFORMERS_VERSION
    assert get_framework("vllm").installed_version() is None


@pytest.mark.slow
def test_model_maker_is_deterministic_and_loads(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a = make_tiny_llama(tmp_path / "a", ModelSpec())
    b = make_tiny_llama(tmp_path / "b", ModelSpec())
    assert a == b == folder_hash(tmp_path / "a")
    assert make_tiny_llama(tmp_path / "c", ModelSpec(seed=1)) != a
    tok = AutoTokenizer.from_pretrained(tmp_path / "a")
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Hi there"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|bos|><|user|>Hi there<|eos|><|assistant|>"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    ids = tok("A lighthouse on a cliff", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 4


def test_model_maker_rejects_bad_sizes(tmp_path: Path) -> None:
    from lab.errors import LabError

    with pytest.raises(LabError, match="multiple of --heads"):
        make_tiny_llama(tmp_path / "x", ModelSpec(hidden=66, heads=4))
